//! The webhook backend: POST `{"to","message"}` as JSON, optionally with a bearer token and the
//! `X-Xgw-Signature` HMAC header (the scheme is in the parent module's doc).

use std::fmt;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Url;
use sha2::Sha256;

use super::settings::redact_url;
use super::{http_client, is_e164, SmsError, SmsSender, Timeouts, REDACTED};
use crate::clock::SharedClock;
use crate::web::parse_http_url;

/// The webhook signature header (the scheme is in the `sms` module doc).
pub const SIGNATURE_HEADER: &str = "X-Xgw-Signature";
/// Minimum length of `webhook_hmac_secret`: short secrets can be brute-forced offline from one
/// signed request.
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// POSTs `{"to","message"}` to an operator's URL. See the module doc for the signature scheme.
pub struct WebhookSender {
    client: reqwest::Client,
    url: Url,
    authorization: Option<HeaderValue>,
    /// Keyed once here; cloned per request.
    mac: Option<Hmac<Sha256>>,
    clock: SharedClock,
}

impl fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSender")
            .field("url", &redact_url(self.url.as_str()))
            .field(
                "bearer_token",
                &self.authorization.as_ref().map(|_| REDACTED),
            )
            .field("hmac_secret", &self.mac.as_ref().map(|_| REDACTED))
            .finish()
    }
}

impl WebhookSender {
    pub fn new(
        url: &str,
        bearer_token: Option<&str>,
        hmac_secret: Option<&str>,
        clock: SharedClock,
        timeouts: Timeouts,
    ) -> Result<Self, SmsError> {
        let url =
            parse_http_url(url).map_err(|e| SmsError::Config(format!("sms.webhook_url: {e}")))?;
        let authorization = match bearer_token {
            None => None,
            Some(token) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    SmsError::Config(
                        "sms.webhook_bearer_token: only visible ASCII characters, no spaces".into(),
                    )
                })?;
                // Keeps it out of HTTP-layer debug output.
                v.set_sensitive(true);
                Some(v)
            }
        };
        let mac = match hmac_secret {
            None => None,
            Some(secret) => Some(Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(
                |_| SmsError::Config("sms.webhook_hmac_secret: unusable as an HMAC key".into()),
            )?),
        };
        Ok(Self {
            client: http_client(timeouts)?,
            url,
            authorization,
            mac,
            clock,
        })
    }
}

/// The `X-Xgw-Signature` value for `body` sent at `t`.
fn signature(mac: &Hmac<Sha256>, t: i64, body: &[u8]) -> String {
    let mut mac = mac.clone();
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl SmsSender for WebhookSender {
    async fn send(&self, to: &str, message: &str) -> Result<(), SmsError> {
        if !is_e164(to) {
            return Err(SmsError::InvalidRecipient);
        }
        // Serialized once so the signature covers exactly the bytes on the wire.
        let body = serde_json::json!({ "to": to, "message": message }).to_string();
        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.authorization {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        if let Some(mac) = &self.mac {
            request = request.header(
                SIGNATURE_HEADER,
                signature(mac, self.clock.now(), body.as_bytes()),
            );
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(SmsError::from_reqwest)?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(SmsError::Rejected {
                status: status.as_u16(),
                code: None,
            })
        }
    }

    fn name(&self) -> &'static str {
        "webhook"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn signature_matches_an_independent_hmac_sha256() {
        // Expected value from Python's hmac module over the same key and "<t>.<body>"; the
        // same example is in docs/operations.md.
        let mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        let body = br#"{"message":"Your code is 123456","to":"+41791234567"}"#;
        assert_eq!(
            signature(&mac, 1_767_225_600, body),
            "t=1767225600,v1=1793d779d7ed05844fbc23b437adbcfe1502fff6e457c27fe40286d6b25909b3"
        );
        // The timestamp is signed: another t gives another v1.
        assert_ne!(
            signature(&mac, 1_767_225_601, body)[14..],
            signature(&mac, 1_767_225_600, body)[14..]
        );
    }

    #[test]
    fn debug_output_redacts_token_secret_and_url_path() {
        let sender = WebhookSender::new(
            "https://sms.example.com/hook/s3cr3t-path",
            Some("s3cr3t-bearer"),
            Some("s3cr3t-hmac-0123456789abcdef0123456789"),
            ManualClock::new(),
            Timeouts::default(),
        )
        .unwrap();
        let shown = format!("{sender:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn a_bearer_token_that_is_no_header_value_is_refused() {
        let err = WebhookSender::new(
            "https://sms.example.com/hook",
            Some("line\nbreak"),
            None,
            ManualClock::new(),
            Timeouts::default(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("sms.webhook_bearer_token"),
            "{err}"
        );
        assert!(!err.to_string().contains("break"), "{err}");
    }
}
