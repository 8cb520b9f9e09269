//! The `[sms]` config section: which provider, its keys, and the checks config validation runs
//! (each problem names its key, none quotes a value, since URLs and tokens may be secret).

use std::fmt;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::webhook::MIN_HMAC_SECRET_LEN;
use super::{is_e164, REDACTED};
use crate::web::parse_http_url;

/// Default Twilio API origin; `twilio_base_url` overrides it.
pub const TWILIO_DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Which backend carries SMS one-time codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum SmsProvider {
    /// SMS is not offered.
    #[default]
    None,
    Webhook,
    Twilio,
    /// Development only: the message goes to the log.
    Log,
}

// Through a string so that a bad value's error names the key (serde's own names only the variant).
impl TryFrom<String> for SmsProvider {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        [
            SmsProvider::None,
            SmsProvider::Webhook,
            SmsProvider::Twilio,
            SmsProvider::Log,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| format!("provider = {s:?}: expected none, webhook, twilio or log"))
    }
}

impl SmsProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            SmsProvider::None => "none",
            SmsProvider::Webhook => "webhook",
            SmsProvider::Twilio => "twilio",
            SmsProvider::Log => "log",
        }
    }
}

/// The `[sms]` config section. An empty string counts as unset, so an environment variable can
/// clear a value the file sets.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    pub provider: SmsProvider,
    /// `webhook`: where `{"to","message"}` is POSTed; https, or plain http to a loopback host.
    pub webhook_url: Option<String>,
    /// `webhook`: sent as `Authorization: Bearer <token>` when set.
    pub webhook_bearer_token: Option<String>,
    /// `webhook`: key of the `X-Xgw-Signature` header when set (at least 32 characters).
    pub webhook_hmac_secret: Option<String>,
    /// `twilio`: `AC` + 32 hex digits.
    pub twilio_account_sid: Option<String>,
    pub twilio_auth_token: Option<String>,
    /// `twilio`: the sender number (E.164) or alphanumeric sender ID; or use the messaging service.
    pub twilio_from: Option<String>,
    /// `twilio`: `MG` + 32 hex digits; Twilio then picks the sender from the service's pool.
    pub twilio_messaging_service_sid: Option<String>,
    /// `twilio`: the API origin; a stand-in's for tests.
    pub twilio_base_url: String,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            provider: SmsProvider::None,
            webhook_url: None,
            webhook_bearer_token: None,
            webhook_hmac_secret: None,
            twilio_account_sid: None,
            twilio_auth_token: None,
            twilio_from: None,
            twilio_messaging_service_sid: None,
            twilio_base_url: TWILIO_DEFAULT_BASE_URL.into(),
        }
    }
}

impl fmt::Debug for SmsConfig {
    // Tokens and secrets are hidden; the webhook URL may carry one in its path or query.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |v: &Option<String>| value(v).map(|_| REDACTED);
        f.debug_struct("SmsConfig")
            .field("provider", &self.provider)
            .field("webhook_url", &value(&self.webhook_url).map(redact_url))
            .field("webhook_bearer_token", &secret(&self.webhook_bearer_token))
            .field("webhook_hmac_secret", &secret(&self.webhook_hmac_secret))
            .field("twilio_account_sid", &self.twilio_account_sid)
            .field("twilio_auth_token", &secret(&self.twilio_auth_token))
            .field("twilio_from", &self.twilio_from)
            .field(
                "twilio_messaging_service_sid",
                &self.twilio_messaging_service_sid,
            )
            .field("twilio_base_url", &self.twilio_base_url)
            .finish()
    }
}

/// A set, non-empty value.
pub(super) fn value(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

pub(super) fn missing(key: &str, provider: SmsProvider) -> String {
    format!(
        "sms.{key}: required with provider = \"{}\"",
        provider.as_str()
    )
}

impl SmsConfig {
    /// Every problem with this section, each naming its key; empty when it is usable. Keys of
    /// another provider are ignored, so switching providers needs no clean-up. Values are never
    /// quoted: a URL or token may be secret.
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let p = self.provider;
        match p {
            SmsProvider::None | SmsProvider::Log => {}
            SmsProvider::Webhook => {
                match value(&self.webhook_url) {
                    None => errors.push(missing("webhook_url", p)),
                    Some(u) => {
                        if let Err(e) = parse_http_url(u) {
                            errors.push(format!("sms.webhook_url: {e}"));
                        }
                    }
                }
                if let Some(t) = value(&self.webhook_bearer_token) {
                    if !t.bytes().all(|b| b.is_ascii_graphic()) {
                        errors.push(
                            "sms.webhook_bearer_token: only visible ASCII characters, no spaces"
                                .into(),
                        );
                    }
                }
                if let Some(s) = value(&self.webhook_hmac_secret) {
                    if s.len() < MIN_HMAC_SECRET_LEN {
                        errors.push(format!(
                            "sms.webhook_hmac_secret: at least {MIN_HMAC_SECRET_LEN} characters \
                             (e.g. `openssl rand -hex 32`)"
                        ));
                    }
                }
            }
            SmsProvider::Twilio => {
                match value(&self.twilio_account_sid) {
                    None => errors.push(missing("twilio_account_sid", p)),
                    Some(sid) if !is_twilio_sid(sid, "AC") => errors.push(
                        "sms.twilio_account_sid: expected AC followed by 32 hex digits".into(),
                    ),
                    Some(_) => {}
                }
                if value(&self.twilio_auth_token).is_none() {
                    errors.push(missing("twilio_auth_token", p));
                }
                match (
                    value(&self.twilio_from),
                    value(&self.twilio_messaging_service_sid),
                ) {
                    (None, None) => errors.push(
                        "sms.twilio_from: required with provider = \"twilio\" \
                         unless sms.twilio_messaging_service_sid is set"
                            .into(),
                    ),
                    (Some(_), Some(_)) => errors.push(
                        "sms.twilio_from: set either it or sms.twilio_messaging_service_sid, \
                         not both"
                            .into(),
                    ),
                    (Some(from), None) if !is_twilio_from(from) => errors.push(
                        "sms.twilio_from: expected an E.164 number (+41...) or an alphanumeric \
                         sender ID of at most 11 characters"
                            .into(),
                    ),
                    (None, Some(sid)) if !is_twilio_sid(sid, "MG") => errors.push(
                        "sms.twilio_messaging_service_sid: expected MG followed by 32 hex digits"
                            .into(),
                    ),
                    _ => {}
                }
                if let Err(e) = parse_base_url(&self.twilio_base_url) {
                    errors.push(format!("sms.twilio_base_url: {e}"));
                }
            }
        }
        errors
    }
}

/// `AC...`/`MG...` SIDs. Checked strictly because the account SID becomes part of a URL path.
pub(super) fn is_twilio_sid(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_twilio_from(s: &str) -> bool {
    is_e164(s)
        || ((1..=11).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
            && s.bytes().any(|b| b.is_ascii_alphabetic()))
}

/// An origin (`scheme://host[:port]`) that API paths are appended to.
pub(super) fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = parse_http_url(raw)?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("give only scheme://host[:port], without a path".into());
    }
    Ok(url)
}

/// `scheme://host[:port]` and a marker if there was more: paths and queries may hold tokens.
pub(super) fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(url) => {
            let origin = url.origin().ascii_serialization();
            if url.path() == "/" && url.query().is_none() {
                origin
            } else {
                format!("{origin}/{REDACTED}")
            }
        }
        Err(_) => "<not a URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";
    const MG: &str = "MG0123456789abcdef0123456789abcdef";

    fn webhook(url: &str) -> SmsConfig {
        SmsConfig {
            provider: SmsProvider::Webhook,
            webhook_url: Some(url.into()),
            ..SmsConfig::default()
        }
    }

    fn twilio() -> SmsConfig {
        SmsConfig {
            provider: SmsProvider::Twilio,
            twilio_account_sid: Some(SID.into()),
            twilio_auth_token: Some("tw-secret-token".into()),
            twilio_from: Some("+15005550006".into()),
            ..SmsConfig::default()
        }
    }

    #[test]
    fn plain_http_is_only_for_loopback_hosts() {
        for ok in [
            "https://sms.example.com/hook",
            "http://127.0.0.1:9000/hook",
            "http://127.1.2.3/",
            "http://localhost:8080",
            "http://[::1]:8080/x",
        ] {
            assert!(parse_http_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://sms.example.com/hook",
            "http://10.0.0.1/hook",
            "http://localhost.example.com/hook",
            "ftp://127.0.0.1/",
            "sms.example.com/hook",
            "https://user:pw@sms.example.com/",
            "",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
        assert!(parse_base_url("https://api.twilio.com").is_ok());
        assert!(parse_base_url("http://127.0.0.1:1234/").is_ok());
        assert!(parse_base_url("https://api.twilio.com/2010-04-01").is_err());
        assert!(parse_base_url("https://api.twilio.com/?x=1").is_err());
    }

    #[test]
    fn problems_name_their_keys_and_never_quote_values() {
        assert!(SmsConfig::default().problems().is_empty());
        assert!(twilio().problems().is_empty());
        let p = webhook("http://sms.example.com/hook?token=s3cr3t").problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("sms.webhook_url: "), "{p:?}");
        assert!(!p[0].contains("s3cr3t"), "{p:?}");
        let mut c = webhook("https://sms.example.com/hook");
        c.webhook_hmac_secret = Some("short".into());
        c.webhook_bearer_token = Some("has space".into());
        let p = c.problems();
        assert!(
            p.iter().any(|e| e.starts_with("sms.webhook_hmac_secret:")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|e| e.starts_with("sms.webhook_bearer_token:")),
            "{p:?}"
        );
        assert!(!p
            .iter()
            .any(|e| e.contains("short") || e.contains("has space")));

        // A wrong kind of SID, both sender settings, a base URL with a path: three problems.
        let mut c = twilio();
        c.twilio_account_sid = Some("SK0123456789abcdef0123456789abcdef".into());
        c.twilio_messaging_service_sid = Some(MG.into());
        c.twilio_base_url = "https://api.twilio.com/v1".into();
        let p = c.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        let mut c = twilio();
        c.twilio_from = None;
        c.twilio_messaging_service_sid = Some(MG.into());
        assert!(c.problems().is_empty());
        c.twilio_messaging_service_sid = Some("MGnope".into());
        assert!(c.problems()[0].starts_with("sms.twilio_messaging_service_sid:"));
        c.twilio_messaging_service_sid = Some(String::new());
        assert!(c.problems()[0].contains("twilio_from: required"));
        c.twilio_from = Some("Xelon HQ".into());
        assert!(c.problems().is_empty(), "an alphanumeric sender ID");
        c.twilio_from = Some("Xelon HQ Platform".into());
        assert!(c.problems()[0].starts_with("sms.twilio_from:"));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let mut c = webhook("https://sms.example.com/hook/s3cr3t-path?k=s3cr3t-query");
        c.webhook_bearer_token = Some("s3cr3t-bearer".into());
        c.webhook_hmac_secret = Some("s3cr3t-hmac-0123456789abcdef0123456789".into());
        c.twilio_auth_token = Some("s3cr3t-twilio".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(
            shown.contains("https://sms.example.com/<redacted>"),
            "{shown}"
        );
    }
}
