//! Typed configuration: defaults, then a TOML file, then `XGW_SECTION_KEY` environment variables.
//!
//! Any key `k` may instead be given as `k_file` (TOML) or `XGW_SECTION_K_FILE` (env): the value
//! is then read from that file, so secrets need not sit in the config or the environment.
//! Unknown keys are errors. Every problem is collected and reported at once, each with the key
//! it concerns, so an operator fixes a config in one round instead of one error per start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use crate::oauth::{GithubConfig, GoogleConfig, OAuthConfig};
pub use crate::sms::{SmsConfig, SmsProvider};

pub const DEFAULT_CONFIG_PATH: &str = "config/gateway.toml";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub store: StoreConfig,
    pub session: SessionConfig,
    pub login: LoginConfig,
    pub jwt: JwtConfig,
    pub sms: SmsConfig,
    pub audit: AuditConfig,
    pub secrets: SecretsConfig,
    /// `[oauth.google]`, `[oauth.github]`: Quick Login providers; absent = not offered.
    pub oauth: OAuthConfig,
}

/// Keys for secrets the gateway must store (TOTP seeds).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsConfig {
    /// 32 bytes (raw, base64 or hex) sealing TOTP seeds. Unset: generated beside an embedded
    /// store; on Redis every replica needs the same key, so it must be set to offer TOTP.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// The public proxy listener.
    pub listen: String,
    /// `/metrics`, `/healthz`, `/readyz`; keep it off the public network.
    pub internal_listen: String,
    /// CIDRs (or single addresses) of proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Seconds to keep serving after a shutdown signal before closing listeners.
    pub grace_period_seconds: u64,
    /// Seconds in-flight requests get to finish during shutdown.
    pub graceful_shutdown_timeout_seconds: u64,
    /// The external origin (`https://hq.example.com`); OAuth redirect URIs are built from it.
    /// Required when a Quick Login provider is configured.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The platform API, `http://host:port` or `https://host:port`.
    pub url: String,
    /// Path prefixes forwarded without a credential (e.g. `/status`).
    pub public_paths: Vec<String>,
    /// Forward `X-Auth-Method`, `-User-Id`, `-User-Email`, `-Org-Id` and `-Session-Id` /
    /// `-Token-Id` beside `X-Auth-Jwt`. `false`: the platform reads the identity from the JWT
    /// only (which carries the same claims), and each request costs five header inserts less.
    pub identity_headers: bool,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `embedded:PATH` (a redb file, one node) or `redis://[:password@]host:port/db`.
    pub url: String,
}

impl std::fmt::Debug for StoreConfig {
    // The Redis URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = match self.url.split_once('@') {
            Some((_, host)) => format!("redis://<redacted>@{host}"),
            None => self.url.clone(),
        };
        f.debug_struct("StoreConfig").field("url", &shown).finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    pub cookie_name: String,
    /// `false` only for plain-http local development.
    pub cookie_secure: bool,
    /// How long ended sessions stay listed as "expired", in days.
    pub expired_retention_days: u32,
    /// How long a replica trusts a cached credential without asking the store, in seconds.
    /// Revocations arrive sooner through invalidations; this bounds a lost invalidation.
    pub cache_ttl_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// Failed logins per account inside the window before backoff starts.
    pub max_failures_per_account: u32,
    /// Failed logins per client IP inside the window before backoff starts.
    pub max_failures_per_ip: u32,
    pub failure_window_seconds: i64,
    /// First backoff once over the limit; doubles with every further failure.
    pub backoff_base_seconds: i64,
    /// argon2id memory in KiB (OWASP minimum 19456).
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// PKCS#8 (DER or PEM) Ed25519 key. Unset: generated next to an embedded store, or per
    /// process with a warning on Redis (then replicas publish different keys).
    pub private_key_file: Option<PathBuf>,
    pub issuer: String,
    /// Lifetime of the upstream JWT; at most 300 seconds.
    pub lifetime_seconds: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How long audit log entries are kept, in days; the sweeper deletes older ones.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { retention_days: 90 }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            internal_listen: "127.0.0.1:9100".into(),
            trusted_proxies: vec![],
            threads: 2,
            grace_period_seconds: 0,
            graceful_shutdown_timeout_seconds: 5,
            public_url: None,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8000".into(),
            public_paths: vec![],
            identity_headers: true,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "embedded:data/gateway.redb".into(),
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "xgw_session".into(),
            cookie_secure: true,
            expired_retention_days: 7,
            cache_ttl_seconds: 30,
        }
    }
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            max_failures_per_account: 5,
            max_failures_per_ip: 50,
            failure_window_seconds: 900,
            backoff_base_seconds: 30,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
        }
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            private_key_file: None,
            issuer: "xelon-gateway".into(),
            lifetime_seconds: 300,
        }
    }
}

/// Keys whose default is `None` and so do not appear in the serialized defaults.
const OPTIONAL_KEYS: &[(&str, &str)] = &[
    ("server", "public_url"),
    ("jwt", "private_key_file"),
    ("secrets", "key_file"),
    ("sms", "webhook_url"),
    ("sms", "webhook_bearer_token"),
    ("sms", "webhook_hmac_secret"),
    ("sms", "twilio_account_sid"),
    ("sms", "twilio_auth_token"),
    ("sms", "twilio_from"),
    ("sms", "twilio_messaging_service_sid"),
];

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

/// The parsed form of the pieces other modules need, checked once at start.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Config {
    /// Loads `path` (a missing file is an error only when `required`), then applies the
    /// environment. Every problem is reported in one error.
    pub fn load(
        path: &Path,
        required: bool,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut errors = Vec::new();
        let mut table = match std::fs::read_to_string(path) {
            Ok(text) => match text.parse::<toml::Table>() {
                Ok(t) => t,
                Err(e) => return Err(ConfigError(vec![format!("{}: {e}", path.display())])),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => toml::Table::new(),
            Err(e) => return Err(ConfigError(vec![format!("{}: {e}", path.display())])),
        };
        let known = known_keys();
        flatten_oauth(&mut table, &mut errors);
        apply_env(&mut table, env, &known, &mut errors);
        resolve_file_keys(&mut table, &known, &mut errors);
        check_unknown_keys(&table, &known, &mut errors);
        let config = if errors.is_empty() {
            deserialize_sections(table, &mut errors)
        } else {
            Config::default()
        };
        config.validate(&mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(errors))
        }
    }

    /// Loads from the process environment.
    pub fn load_from_env(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::load(path, required, &env)
    }

    fn validate(&self, errors: &mut Vec<String>) {
        for (key, value) in [
            ("server.listen", &self.server.listen),
            ("server.internal_listen", &self.server.internal_listen),
        ] {
            if value.parse::<SocketAddr>().is_err() {
                errors.push(format!(
                    "{key}: {value:?} is not an address like 127.0.0.1:8080"
                ));
            }
        }
        if self.server.threads == 0 || self.server.threads > 256 {
            errors.push("server.threads: must be between 1 and 256".into());
        }
        for p in &self.server.trusted_proxies {
            if parse_net(p).is_none() {
                errors.push(format!(
                    "server.trusted_proxies: {p:?} is not an IP address or CIDR range"
                ));
            }
        }
        if let Err(e) = self.upstream() {
            errors.push(format!("upstream.url: {e}"));
        }
        for p in &self.upstream.public_paths {
            if !p.starts_with('/') || p.starts_with("/auth") {
                errors.push(format!(
                    "upstream.public_paths: {p:?} must start with / and not be under /auth"
                ));
            }
        }
        let url = &self.store.url;
        if !(url.starts_with("embedded:")
            || url.starts_with("redis://")
            || url.starts_with("rediss://"))
        {
            errors.push("store.url: expected embedded:PATH or redis://host:port/db".into());
        } else if url == "embedded:" {
            errors.push("store.url: embedded: needs a file path".into());
        }
        let name = &self.session.cookie_name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            errors.push("session.cookie_name: 1-64 characters of A-Z a-z 0-9 _ -".into());
        }
        if self.session.expired_retention_days == 0 || self.session.expired_retention_days > 90 {
            errors.push("session.expired_retention_days: must be between 1 and 90".into());
        }
        if self.session.cache_ttl_seconds == 0 || self.session.cache_ttl_seconds > 300 {
            errors.push("session.cache_ttl_seconds: must be between 1 and 300".into());
        }
        let l = &self.login;
        if l.max_failures_per_account == 0 || l.max_failures_per_ip == 0 {
            errors.push("login.max_failures_per_*: must be at least 1".into());
        }
        if l.failure_window_seconds < 60 {
            errors.push("login.failure_window_seconds: must be at least 60".into());
        }
        if l.backoff_base_seconds < 1 {
            errors.push("login.backoff_base_seconds: must be at least 1".into());
        }
        if l.argon2_memory_kib < 19_456 || l.argon2_iterations < 2 || l.argon2_parallelism < 1 {
            errors.push(
                "login.argon2_*: below the OWASP minimum (memory 19456 KiB, 2 iterations, parallelism 1)"
                    .into(),
            );
        }
        if self.jwt.lifetime_seconds < 30 || self.jwt.lifetime_seconds > 300 {
            errors.push("jwt.lifetime_seconds: must be between 30 and 300".into());
        }
        if self.jwt.issuer.is_empty() {
            errors.push("jwt.issuer: must not be empty".into());
        }
        errors.extend(self.sms.problems());
        errors.extend(self.oauth.problems(self.server.public_url.as_deref()));
        // Secure cookies mean a real deployment, where codes in the log would be a way in.
        if self.sms.provider == SmsProvider::Log && self.session.cookie_secure {
            errors.push(
                "sms.provider: \"log\" is for development only and is refused with \
                 session.cookie_secure = true"
                    .into(),
            );
        }
        if self.audit.retention_days == 0 || self.audit.retention_days > 3650 {
            errors.push("audit.retention_days: must be between 1 and 3650".into());
        }
    }

    pub fn upstream(&self) -> Result<Upstream, String> {
        let uri: http::Uri = self
            .upstream
            .url
            .parse()
            .map_err(|e| format!("{:?} is not a URL: {e}", self.upstream.url))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("the scheme must be http or https".into()),
        };
        let host = uri.host().ok_or("the URL has no host")?.to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if !matches!(uri.path(), "" | "/") {
            return Err("a path prefix is not supported; give scheme://host:port".into());
        }
        Ok(Upstream { tls, host, port })
    }

    pub fn trusted_proxies(&self) -> Vec<IpNet> {
        self.server
            .trusted_proxies
            .iter()
            .filter_map(|p| parse_net(p))
            .collect()
    }
}

/// An address or CIDR range; a bare address is a single-host range.
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// section -> key -> the default value (its type decides how an env string is read).
type KnownKeys = BTreeMap<String, BTreeMap<String, Option<toml::Value>>>;

fn known_keys() -> KnownKeys {
    let mut known = KnownKeys::new();
    if let Ok(toml::Value::Table(sections)) = toml::Value::try_from(Config::default()) {
        for (section, keys) in sections {
            if let toml::Value::Table(keys) = keys {
                let entry = known.entry(section).or_default();
                for (k, v) in keys {
                    entry.insert(k, Some(v));
                }
            }
        }
    }
    // `[oauth.google]` and `[oauth.github]` are sections of their own (see `flatten_oauth`).
    known.remove("oauth");
    for (section, defaults) in [
        (
            "oauth.google",
            toml::Value::try_from(GoogleConfig::default()),
        ),
        (
            "oauth.github",
            toml::Value::try_from(GithubConfig::default()),
        ),
    ] {
        if let Ok(toml::Value::Table(keys)) = defaults {
            known.insert(
                section.to_string(),
                keys.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            );
        }
    }
    for (section, key) in OPTIONAL_KEYS {
        known
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), None);
    }
    known
}

/// The providers under `[oauth]` become sections `oauth.google` and `oauth.github`, so env
/// overrides (`XGW_OAUTH_GOOGLE_CLIENT_ID`), `_file` keys and unknown-key checks work on them
/// like on any other section. A section that is present turns its provider on.
fn flatten_oauth(table: &mut toml::Table, errors: &mut Vec<String>) {
    let Some(oauth) = table.remove("oauth") else {
        return;
    };
    let toml::Value::Table(providers) = oauth else {
        errors.push("oauth: must be a table of providers ([oauth.google], [oauth.github])".into());
        return;
    };
    for (name, value) in providers {
        if matches!(name.as_str(), "google" | "github") {
            table.insert(format!("oauth.{name}"), value);
        } else {
            errors.push(format!(
                "[oauth.{name}]: unknown provider (supported: google, github)"
            ));
        }
    }
}

/// `XGW_SERVER_LISTEN=...` sets `server.listen`. A `_FILE` suffix is handled later like `k_file`.
fn apply_env(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
    known: &KnownKeys,
    errors: &mut Vec<String>,
) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("XGW_") else {
            continue;
        };
        if rest == "CONFIG" {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = known.keys().find_map(|s| {
            rest.strip_prefix(&format!("{}_", s.replace('.', "_")))
                .map(|k| (s.clone(), k.to_string()))
        }) else {
            errors.push(format!("{name}: no such configuration section"));
            continue;
        };
        let default = known.get(&section).and_then(|keys| {
            keys.get(&key).or_else(|| {
                key.strip_suffix("_file")
                    .and_then(|base| keys.get(base))
                    .map(|_| &None)
            })
        });
        let Some(default) = default else {
            errors.push(format!("{name}: unknown key {section}.{key}"));
            continue;
        };
        let value = match env_value(raw, default.as_ref()) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        let entry = table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = entry {
            t.insert(key, value);
        }
    }
}

fn env_value(raw: &str, default: Option<&toml::Value>) -> Result<toml::Value, String> {
    match default {
        Some(toml::Value::Boolean(_)) => match raw {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("{raw:?} is not true or false")),
        },
        Some(toml::Value::Integer(_)) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{raw:?} is not an integer")),
        Some(toml::Value::Array(_)) => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        )),
        _ => Ok(toml::Value::String(raw.to_string())),
    }
}

/// Replaces every `k_file = PATH` (where `k` is a known key) with `k = <file contents>`.
fn resolve_file_keys(table: &mut toml::Table, known: &KnownKeys, errors: &mut Vec<String>) {
    for (section, value) in table.iter_mut() {
        let (toml::Value::Table(keys), Some(known_keys)) = (value, known.get(section)) else {
            continue;
        };
        let file_keys: Vec<String> = keys
            .keys()
            .filter(|k| {
                !known_keys.contains_key(*k)
                    && k.strip_suffix("_file")
                        .is_some_and(|base| known_keys.contains_key(base))
            })
            .cloned()
            .collect();
        for file_key in file_keys {
            let base = file_key.trim_end_matches("_file").to_string();
            let Some(toml::Value::String(path)) = keys.remove(&file_key) else {
                errors.push(format!("{section}.{file_key}: must be a file path"));
                continue;
            };
            match std::fs::read_to_string(&path) {
                Ok(content) => {
                    keys.insert(base, toml::Value::String(content.trim_end().to_string()));
                }
                Err(e) => errors.push(format!("{section}.{file_key}: cannot read {path}: {e}")),
            }
        }
    }
}

fn check_unknown_keys(table: &toml::Table, known: &KnownKeys, errors: &mut Vec<String>) {
    for (section, value) in table {
        let Some(known_keys) = known.get(section) else {
            errors.push(format!("[{section}]: unknown section"));
            continue;
        };
        let toml::Value::Table(keys) = value else {
            errors.push(format!("{section}: must be a table"));
            continue;
        };
        for key in keys.keys() {
            if !known_keys.contains_key(key) {
                errors.push(format!("{section}.{key}: unknown key"));
            }
        }
    }
}

fn deserialize_sections(table: toml::Table, errors: &mut Vec<String>) -> Config {
    fn section<T: serde::de::DeserializeOwned + Default>(
        table: &toml::Table,
        name: &str,
        errors: &mut Vec<String>,
    ) -> T {
        match table.get(name) {
            None => T::default(),
            Some(v) => v.clone().try_into().unwrap_or_else(|e: toml::de::Error| {
                errors.push(format!("[{name}] {}", e.message()));
                T::default()
            }),
        }
    }
    Config {
        server: section(&table, "server", errors),
        upstream: section(&table, "upstream", errors),
        store: section(&table, "store", errors),
        session: section(&table, "session", errors),
        login: section(&table, "login", errors),
        jwt: section(&table, "jwt", errors),
        sms: section(&table, "sms", errors),
        audit: section(&table, "audit", errors),
        secrets: section(&table, "secrets", errors),
        oauth: OAuthConfig {
            google: table
                .contains_key("oauth.google")
                .then(|| section(&table, "oauth.google", errors)),
            github: table
                .contains_key("oauth.github")
                .then(|| section(&table, "oauth.github", errors)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&path, true, &env)
    }

    #[test]
    fn defaults_are_valid() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.store.url, "embedded:data/gateway.redb");
        assert!(c.session.cookie_secure);
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_key() {
        let err = load(
            "[server]\nlisten = \"nope\"\nbogus = 1\n[session]\ncookie_name = \"a b\"\n[weird]\n",
            &[("XGW_UPSTREAM_URL", "ftp://x")],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("server.bogus: unknown key"), "{text}");
        assert!(text.contains("[weird]: unknown section"), "{text}");
        // Unknown keys stop deserialization, so fix those first: then the rest shows up together.
        let err = load(
            "[server]\nlisten = \"nope\"\n[session]\ncookie_name = \"a b\"\n",
            &[("XGW_UPSTREAM_URL", "ftp://x")],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("server.listen"), "{text}");
        assert!(text.contains("session.cookie_name"), "{text}");
        assert!(text.contains("upstream.url"), "{text}");
    }

    #[test]
    fn env_overrides_file_with_typed_values() {
        let c = load(
            "[session]\ncookie_secure = true\n",
            &[
                ("XGW_SESSION_COOKIE_SECURE", "false"),
                ("XGW_SERVER_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1"),
                ("XGW_LOGIN_MAX_FAILURES_PER_ACCOUNT", "3"),
            ],
        )
        .unwrap();
        assert!(!c.session.cookie_secure);
        assert_eq!(c.trusted_proxies().len(), 2);
        assert_eq!(c.login.max_failures_per_account, 3);
        let err = load("", &[("XGW_LOGIN_MAX_FAILURES_PER_ACCOUNT", "many")]).unwrap_err();
        assert!(err.to_string().contains("not an integer"));
        let err = load("", &[("XGW_NOPE_X", "1")]).unwrap_err();
        assert!(err.to_string().contains("XGW_NOPE_X"));
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("url");
        std::fs::write(&secret, "redis://:hunter2@127.0.0.1:6379/0\n").unwrap();
        let c = load("", &[("XGW_STORE_URL_FILE", secret.to_str().unwrap())]).unwrap();
        assert_eq!(c.store.url, "redis://:hunter2@127.0.0.1:6379/0");
        assert!(!format!("{:?}", c.store).contains("hunter2"));
        let c = load(
            &format!("[store]\nurl_file = {:?}\n", secret.to_str().unwrap()),
            &[],
        )
        .unwrap();
        assert!(c.store.url.starts_with("redis://"));
        let err = load("[store]\nurl_file = \"/nonexistent/x\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("store.url_file"));
    }

    #[test]
    fn shipped_example_config_is_valid_and_documents_the_defaults() {
        let loaded = load(include_str!("../config/gateway.toml"), &[]).unwrap();
        assert_eq!(format!("{loaded:?}"), format!("{:?}", Config::default()));
    }

    #[test]
    fn audit_retention_is_bounded() {
        assert_eq!(load("", &[]).unwrap().audit.retention_days, 90);
        let c = load("[audit]\nretention_days = 365\n", &[]).unwrap();
        assert_eq!(c.audit.retention_days, 365);
        let c = load("", &[("XGW_AUDIT_RETENTION_DAYS", "30")]).unwrap();
        assert_eq!(c.audit.retention_days, 30);
        for bad in ["0", "3651"] {
            let err = load(&format!("[audit]\nretention_days = {bad}\n"), &[]).unwrap_err();
            assert!(err.to_string().contains("audit.retention_days"), "{err}");
        }
    }

    #[test]
    fn oauth_providers_are_on_only_when_their_section_is_present() {
        let c = load("", &[]).unwrap();
        assert!(c.oauth.google.is_none() && c.oauth.github.is_none());
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("gh-secret");
        std::fs::write(&secret, "gh-s3cr3t\n").unwrap();
        let c = load(
            &format!(
                "[server]\npublic_url = \"https://hq.example.com\"\n\
                 [oauth.github]\nclient_id = \"Iv1.abc\"\nclient_secret_file = {:?}\n",
                secret.to_str().unwrap()
            ),
            &[
                ("XGW_OAUTH_GOOGLE_CLIENT_ID", "g-id"),
                ("XGW_OAUTH_GOOGLE_CLIENT_SECRET", "g-s"),
            ],
        )
        .unwrap();
        let gh = c.oauth.github.as_ref().unwrap();
        assert_eq!(gh.client_secret, "gh-s3cr3t");
        assert_eq!(gh.api_url, "https://api.github.com");
        let g = c.oauth.google.as_ref().unwrap();
        assert_eq!(
            (g.client_id.as_str(), g.issuer.as_str()),
            ("g-id", "https://accounts.google.com")
        );
        assert!(!format!("{c:?}").contains("gh-s3cr3t"));
    }

    #[test]
    fn oauth_mistakes_are_named() {
        let err = load(
            "[oauth.google]\nclient_id = \"x\"\nbogus = 1\n[oauth.myspace]\nclient_id = \"y\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("oauth.google.bogus: unknown key"), "{err}");
        assert!(err.contains("[oauth.myspace]: unknown provider"), "{err}");
        let err = load("[oauth.google]\nclient_id = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.public_url: required"), "{err}");
        assert!(
            err.contains("oauth.google.client_secret: required"),
            "{err}"
        );
        let err = load(
            "[server]\npublic_url = \"https://hq.example.com\"\n\
             [oauth.google]\nclient_id = \"x\"\nclient_secret = \"s\"\nissuer = \"http://idp.example.com\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("oauth.google.issuer: plain http"), "{err}");
    }

    #[test]
    fn sms_is_off_by_default_and_each_provider_needs_its_keys() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.sms.provider, SmsProvider::None);
        assert_eq!(c.sms.twilio_base_url, "https://api.twilio.com");
        let err = load("[sms]\nprovider = \"webhook\"\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("sms.webhook_url: required"),
            "{err}"
        );
        // Every missing Twilio key is reported in the same round.
        let err = load("[sms]\nprovider = \"twilio\"\n", &[]).unwrap_err();
        let text = err.to_string();
        for key in ["twilio_account_sid", "twilio_auth_token", "twilio_from"] {
            assert!(text.contains(&format!("sms.{key}: required")), "{text}");
        }
        let c = load(
            "[sms]\nprovider = \"twilio\"\n\
             twilio_account_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
             twilio_auth_token = \"tw-token\"\n\
             twilio_messaging_service_sid = \"MG0123456789abcdef0123456789abcdef\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.sms.provider, SmsProvider::Twilio);
        let err = load("[sms]\nprovider = \"carrier-pigeon\"\n", &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("[sms] provider = \"carrier-pigeon\""),
            "{err}"
        );
        // An empty value counts as unset, so the environment can clear a file's value.
        let err = load(
            "[sms]\nprovider = \"webhook\"\nwebhook_url = \"https://sms.example.com/\"\n",
            &[("XGW_SMS_WEBHOOK_URL", "")],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("sms.webhook_url: required"),
            "{err}"
        );
    }

    #[test]
    fn sms_urls_must_be_https_except_to_loopback() {
        for (url, ok) in [
            ("https://sms.example.com/hook", true),
            ("http://127.0.0.1:9000/hook", true),
            ("http://localhost:9000/hook", true),
            ("http://sms.example.com/hook", false),
            ("ftp://127.0.0.1/hook", false),
            ("not a url", false),
        ] {
            let r = load(
                &format!("[sms]\nprovider = \"webhook\"\nwebhook_url = {url:?}\n"),
                &[],
            );
            match r {
                Ok(_) => assert!(ok, "{url} was accepted"),
                Err(e) => {
                    assert!(!ok, "{url}: {e}");
                    assert!(e.to_string().contains("sms.webhook_url: "), "{e}");
                }
            }
        }
        let err = load(
            "[sms]\nprovider = \"twilio\"\n\
             twilio_account_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
             twilio_auth_token = \"t\"\ntwilio_from = \"+15005550006\"\n\
             twilio_base_url = \"http://twilio.example.com\"\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("sms.twilio_base_url: "), "{err}");
    }

    #[test]
    fn sms_log_provider_is_refused_with_secure_cookies() {
        let err = load("[sms]\nprovider = \"log\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("sms.provider"), "{err}");
        let c = load(
            "[sms]\nprovider = \"log\"\n[session]\ncookie_secure = false\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.sms.provider, SmsProvider::Log);
    }

    #[test]
    fn sms_secrets_come_from_files_and_stay_out_of_debug() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tw-s3cr3t\n").unwrap();
        let hmac = dir.path().join("hmac");
        std::fs::write(&hmac, "0123456789abcdef0123456789abcdef-s3cr3t\n").unwrap();
        let c = load(
            &format!(
                "[sms]\nprovider = \"twilio\"\n\
                 twilio_account_sid = \"AC0123456789abcdef0123456789abcdef\"\n\
                 twilio_auth_token_file = {:?}\ntwilio_from = \"+15005550006\"\n",
                token.to_str().unwrap()
            ),
            &[("XGW_SMS_WEBHOOK_HMAC_SECRET_FILE", hmac.to_str().unwrap())],
        )
        .unwrap();
        assert_eq!(c.sms.twilio_auth_token.as_deref(), Some("tw-s3cr3t"));
        assert!(c.sms.webhook_hmac_secret.is_some());
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn weak_argon2_parameters_are_refused() {
        let err = load("[login]\nargon2_memory_kib = 1024\n", &[]).unwrap_err();
        assert!(err.to_string().contains("OWASP"));
    }
}
