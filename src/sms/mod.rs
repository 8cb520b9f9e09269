//! SMS delivery for one-time codes: one small trait, [`SmsSender`], and the backends an operator
//! picks with `[sms] provider` in the config.
//!
//! The 2FA flows see only the trait; which provider carries the message is a deployment choice.
//!
//! - `webhook` ([`WebhookSender`]): POSTs `{"to","message"}` as JSON to a URL the operator runs
//!   (their own SMS gateway, a queue bridge, ...), optionally with a bearer token and an
//!   HMAC-SHA256 signature header (scheme below).
//! - `twilio` ([`TwilioSender`]): Twilio's Messages API, with the base URL configurable so tests
//!   and staging can point it at a stand-in.
//! - `log` ([`LogSender`]): writes the message, code included, to the log with a loud warning. For
//!   local development only; the config refuses it together with `session.cookie_secure = true`.
//!
//! # Delivery contract
//!
//! `send` returns `Ok` only once the provider answered 2xx. Everything else is an [`SmsError`]
//! that the caller turns into 502 `sms_delivery_failed` — never a silent success, since the user
//! would wait for a code that does not come. There are no retries here: a retry after a timeout
//! could deliver the code twice, and the user can ask for a resend within the send limits.
//!
//! - Timeouts: 5 s to connect, 10 s for the whole exchange ([`Timeouts::default`]), so a hung
//!   provider holds a login request at most that long.
//! - Redirects are not followed; a 3xx is an error. A POST redirected into a GET would look like
//!   a success without delivering anything, and credentials go only to the configured host.
//! - [`SmsError`]'s text never holds a secret, the recipient or the message: transport errors
//!   are stripped of their URL (a webhook URL may embed a token in its path or query), and a
//!   provider's refusal keeps only its HTTP status (and Twilio's numeric error `code`, whose
//!   `message` may quote the phone number). It is safe to log as is.
//! - Types that hold secrets (config, senders) redact them in `Debug`.
//!
//! # Webhook signature (`webhook_hmac_secret`)
//!
//! Each request carries
//!
//! ```text
//! X-Xgw-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>
//! ```
//!
//! where `v1` is the lowercase hex HMAC-SHA256, keyed with the UTF-8 bytes of the secret, of the
//! string `"<t>.<body>"`: the decimal timestamp, a dot, and the raw request body exactly as
//! received (before any JSON parsing). A receiver recomputes it, compares in constant time, and
//! rejects a request whose `t` is more than 5 minutes from its own clock. The timestamp is part
//! of the signed string, so an intercepted request cannot be replayed later with a fresh `t`.
//! `v1` names the scheme so it can change without breaking receivers.
//!
//! # Layout
//!
//! This file holds the trait, the error, [`sender_from_config`] and the log backend;
//! `settings.rs` the `[sms]` config section and its checks; `webhook.rs` and `twilio.rs` one
//! backend each.

mod settings;
mod twilio;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::SharedClock;
use settings::{missing, value};

pub use settings::{SmsConfig, SmsProvider, TWILIO_DEFAULT_BASE_URL};
pub use twilio::{TwilioFrom, TwilioSender};
pub use webhook::{WebhookSender, MIN_HMAC_SECRET_LEN, SIGNATURE_HEADER};

/// What `Debug` shows in place of a secret.
const REDACTED: &str = "<redacted>";

/// Why a message was not delivered. The text is safe to log: no secret, recipient or message.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// The configuration cannot work; each problem names its config key.
    #[error("SMS is misconfigured: {0}")]
    Config(String),
    #[error("the HTTP client for SMS delivery could not be built")]
    Client(#[source] reqwest::Error),
    #[error("the recipient is not an E.164 phone number")]
    InvalidRecipient,
    #[error("the SMS provider did not answer in time")]
    Timeout,
    /// Connection refused, DNS, TLS, broken connection... The source has no URL.
    #[error("the SMS provider could not be reached")]
    Transport(#[source] reqwest::Error),
    /// The provider answered, but not 2xx. `code` is Twilio's error code when it sent one.
    #[error("the SMS provider refused the message: HTTP {status}{}", code_suffix(.code))]
    Rejected { status: u16, code: Option<i64> },
}

fn code_suffix(code: &Option<i64>) -> String {
    code.map(|c| format!(", provider error code {c}"))
        .unwrap_or_default()
}

impl SmsError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            SmsError::Timeout
        } else {
            SmsError::Transport(e.without_url())
        }
    }
}

/// Delivers one text message. Implementations are cheap to share (`Arc<dyn SmsSender>`).
#[async_trait]
pub trait SmsSender: Send + Sync {
    /// Sends `message` to `to` (E.164, e.g. `+41791234567`). `Ok` means the provider accepted
    /// it, not that the phone received it.
    async fn send(&self, to: &str, message: &str) -> Result<(), SmsError>;
    /// The provider's config name (`webhook`, `twilio`, `log`): for logs and metric labels.
    fn name(&self) -> &'static str;
}

/// `+` then 7 to 15 digits, the first not 0 (ITU-T E.164: at most 15 digits with the country
/// code). Senders refuse anything else rather than hand a provider a malformed number.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (7..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Connect and whole-request limits of the HTTP backends.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            total: Duration::from_secs(10),
        }
    }
}

fn http_client(timeouts: Timeouts) -> Result<reqwest::Client, SmsError> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.total)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("xelon-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(SmsError::Client)
}

/// Builds the configured sender; `None` when `provider = "none"`. Fails on the same problems
/// config validation reports (the cookie_secure rule for `log` is the config's, which knows the
/// session settings). `clock` stamps webhook signatures.
pub fn sender_from_config(
    cfg: &SmsConfig,
    clock: SharedClock,
) -> Result<Option<Arc<dyn SmsSender>>, SmsError> {
    let problems = cfg.problems();
    if !problems.is_empty() {
        return Err(SmsError::Config(problems.join("; ")));
    }
    let p = cfg.provider;
    let required = |v: &Option<String>, key: &str| {
        value(v)
            .map(str::to_string)
            .ok_or_else(|| SmsError::Config(missing(key, p)))
    };
    let sender: Arc<dyn SmsSender> = match p {
        SmsProvider::None => return Ok(None),
        SmsProvider::Webhook => Arc::new(WebhookSender::new(
            &required(&cfg.webhook_url, "webhook_url")?,
            value(&cfg.webhook_bearer_token),
            value(&cfg.webhook_hmac_secret),
            clock,
            Timeouts::default(),
        )?),
        SmsProvider::Twilio => {
            let from = match (
                value(&cfg.twilio_from),
                value(&cfg.twilio_messaging_service_sid),
            ) {
                (Some(number), _) => TwilioFrom::Number(number.to_string()),
                (None, Some(sid)) => TwilioFrom::MessagingService(sid.to_string()),
                (None, None) => return Err(SmsError::Config(missing("twilio_from", p))),
            };
            Arc::new(TwilioSender::new(
                &cfg.twilio_base_url,
                &required(&cfg.twilio_account_sid, "twilio_account_sid")?,
                &required(&cfg.twilio_auth_token, "twilio_auth_token")?,
                from,
                Timeouts::default(),
            )?)
        }
        SmsProvider::Log => {
            tracing::warn!(
                "sms.provider = \"log\": SMS codes are written to the log and NOT sent; \
                 development only"
            );
            Arc::new(LogSender)
        }
    };
    Ok(Some(sender))
}

/// Development only: logs the message instead of sending it, so a local setup can complete an
/// SMS flow without a provider. Config validation refuses it when cookies are `Secure`, i.e.
/// anything that looks like production.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSender;

#[async_trait]
impl SmsSender for LogSender {
    async fn send(&self, to: &str, message: &str) -> Result<(), SmsError> {
        if !is_e164(to) {
            return Err(SmsError::InvalidRecipient);
        }
        tracing::warn!(
            to,
            message,
            "SMS NOT SENT, only logged (sms.provider = \"log\", development only)"
        );
        Ok(())
    }

    fn name(&self) -> &'static str {
        "log"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn e164_numbers_are_plus_and_7_to_15_digits() {
        for ok in [
            "+41791234567",
            "+15005550006",
            "+6834002",
            "+123456789012345",
        ] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "41791234567",
            "+0791234567",
            "+4179 123 4567",
            "+12345",
            "+1234567890123456",
            "+",
            "",
            "+4179123456a",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }

    #[test]
    fn sender_from_config_builds_the_chosen_backend() {
        let clock: SharedClock = ManualClock::new();
        assert!(sender_from_config(&SmsConfig::default(), clock.clone())
            .unwrap()
            .is_none());
        let names: Vec<_> = [
            SmsConfig {
                provider: SmsProvider::Webhook,
                webhook_url: Some("https://sms.example.com/hook".into()),
                ..SmsConfig::default()
            },
            SmsConfig {
                provider: SmsProvider::Twilio,
                twilio_account_sid: Some("AC0123456789abcdef0123456789abcdef".into()),
                twilio_auth_token: Some("tw-token".into()),
                twilio_from: Some("+15005550006".into()),
                ..SmsConfig::default()
            },
            SmsConfig {
                provider: SmsProvider::Log,
                ..SmsConfig::default()
            },
        ]
        .iter()
        .map(|c| {
            sender_from_config(c, clock.clone())
                .unwrap()
                .unwrap()
                .name()
        })
        .collect();
        assert_eq!(names, ["webhook", "twilio", "log"]);
        // Every problem at once, by key, as config validation reports them.
        let err = sender_from_config(
            &SmsConfig {
                provider: SmsProvider::Twilio,
                ..SmsConfig::default()
            },
            clock,
        )
        .err()
        .unwrap();
        let text = err.to_string();
        assert!(text.contains("sms.twilio_account_sid"), "{text}");
        assert!(text.contains("sms.twilio_auth_token"), "{text}");
    }

    #[tokio::test]
    async fn senders_refuse_a_recipient_that_is_not_e164_before_any_network() {
        // A documentation address that nothing answers on: reaching the network would be a
        // Transport error or a Timeout, not InvalidRecipient.
        let sender = WebhookSender::new(
            "https://192.0.2.1:9/hook",
            None,
            None,
            ManualClock::new(),
            Timeouts::default(),
        )
        .unwrap();
        assert!(matches!(
            sender.send("0791234567", "x").await,
            Err(SmsError::InvalidRecipient)
        ));
        let sender = TwilioSender::new(
            "https://192.0.2.1:9",
            "AC0123456789abcdef0123456789abcdef",
            "tw-token",
            TwilioFrom::Number("+15005550006".into()),
            Timeouts::default(),
        )
        .unwrap();
        assert!(matches!(
            sender.send("+41-79", "x").await,
            Err(SmsError::InvalidRecipient)
        ));
        assert!(matches!(
            LogSender.send("+41 79", "x").await,
            Err(SmsError::InvalidRecipient)
        ));
        assert!(LogSender
            .send("+41791234567", "Your code is 123456")
            .await
            .is_ok());
    }

    #[test]
    fn error_text_shows_status_and_twilio_code_only() {
        let e = SmsError::Rejected {
            status: 400,
            code: Some(21211),
        };
        assert_eq!(
            e.to_string(),
            "the SMS provider refused the message: HTTP 400, provider error code 21211"
        );
        let e = SmsError::Rejected {
            status: 503,
            code: None,
        };
        assert_eq!(
            e.to_string(),
            "the SMS provider refused the message: HTTP 503"
        );
    }
}
