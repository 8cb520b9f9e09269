//! The Twilio backend: the Messages API, form-encoded, HTTP basic auth.

use std::fmt;

use async_trait::async_trait;
use reqwest::Url;

use super::settings::{is_twilio_sid, parse_base_url};
use super::{http_client, is_e164, SmsError, SmsSender, Timeouts, REDACTED};

/// How much of Twilio's error answer is read to find its error code; the rest is dropped.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Who the Twilio message is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioFrom {
    /// `From`: an E.164 number or alphanumeric sender ID.
    Number(String),
    /// `MessagingServiceSid`: Twilio picks the sender from the service's pool.
    MessagingService(String),
}

/// Twilio's Messages API: `POST {base}/2010-04-01/Accounts/{sid}/Messages.json`, form-encoded,
/// HTTP basic auth with the account SID and auth token.
pub struct TwilioSender {
    client: reqwest::Client,
    messages_url: Url,
    account_sid: String,
    auth_token: String,
    from: TwilioFrom,
}

impl fmt::Debug for TwilioSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioSender")
            .field("messages_url", &self.messages_url.as_str())
            .field("account_sid", &self.account_sid)
            .field("auth_token", &REDACTED)
            .field("from", &self.from)
            .finish()
    }
}

impl TwilioSender {
    pub fn new(
        base_url: &str,
        account_sid: &str,
        auth_token: &str,
        from: TwilioFrom,
        timeouts: Timeouts,
    ) -> Result<Self, SmsError> {
        let base = parse_base_url(base_url)
            .map_err(|e| SmsError::Config(format!("sms.twilio_base_url: {e}")))?;
        if !is_twilio_sid(account_sid, "AC") {
            return Err(SmsError::Config(
                "sms.twilio_account_sid: expected AC followed by 32 hex digits".into(),
            ));
        }
        let messages_url = base
            .join(&format!("2010-04-01/Accounts/{account_sid}/Messages.json"))
            .map_err(|_| {
                SmsError::Config("sms.twilio_base_url: cannot append the API path".into())
            })?;
        Ok(Self {
            client: http_client(timeouts)?,
            messages_url,
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            from,
        })
    }
}

#[async_trait]
impl SmsSender for TwilioSender {
    async fn send(&self, to: &str, message: &str) -> Result<(), SmsError> {
        if !is_e164(to) {
            return Err(SmsError::InvalidRecipient);
        }
        let from = match &self.from {
            TwilioFrom::Number(n) => ("From", n.as_str()),
            TwilioFrom::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
        };
        let response = self
            .client
            .post(self.messages_url.clone())
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&[("To", to), from, ("Body", message)])
            .send()
            .await
            .map_err(SmsError::from_reqwest)?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(SmsError::Rejected {
            status: status.as_u16(),
            code: twilio_error_code(response).await,
        })
    }

    fn name(&self) -> &'static str {
        "twilio"
    }
}

/// Twilio's error answer is `{"code": 21211, "message": "...", "more_info": ..., "status": 400}`.
/// Only the code is kept (the message can quote the phone number). Best effort: a body that
/// does not arrive, is too large or is not that JSON gives `None`.
async fn twilio_error_code(mut response: reqwest::Response) -> Option<i64> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > MAX_ERROR_BODY {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()?
        .get("code")?
        .as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms::TWILIO_DEFAULT_BASE_URL;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    #[test]
    fn messages_url_and_debug_without_the_auth_token() {
        let sender = TwilioSender::new(
            TWILIO_DEFAULT_BASE_URL,
            SID,
            "s3cr3t-twilio",
            TwilioFrom::Number("+15005550006".into()),
            Timeouts::default(),
        )
        .unwrap();
        assert_eq!(
            sender.messages_url.as_str(),
            format!("https://api.twilio.com/2010-04-01/Accounts/{SID}/Messages.json")
        );
        let shown = format!("{sender:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn an_account_sid_that_could_change_the_path_is_refused() {
        for sid in ["AC../../x", "SK0123456789abcdef0123456789abcdef", ""] {
            assert!(TwilioSender::new(
                TWILIO_DEFAULT_BASE_URL,
                sid,
                "t",
                TwilioFrom::Number("+15005550006".into()),
                Timeouts::default(),
            )
            .is_err());
        }
    }
}
