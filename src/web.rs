//! HTTP bits shared by the proxy's own responses and the account app: the security headers
//! every locally written response carries, and the shape of a JSON error.

/// Sent on every response the gateway writes itself.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// A CSP for JSON and redirects: nothing may load.
pub const CSP_NONE: &str = "default-src 'none'; frame-ancestors 'none'";

/// Largest request body accepted under `/auth/`, unless `AUTH_BODY_LIMITS` names the route.
pub const DEFAULT_AUTH_BODY_BYTES: usize = 64 * 1024;

/// The avatar upload route (`PUT`): images up to 2 MiB.
pub const AVATAR_PATH: &str = "/auth/api/v1/me/avatar";
pub const AVATAR_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Routes under `/auth/` that take a larger body than the default: one table, read by the
/// proxy (refuses a larger `Content-Length` before forwarding) and by the account app (stops
/// reading a chunked body at the same size), so the two limits cannot drift apart.
pub const AUTH_BODY_LIMITS: &[(&str, usize)] = &[(AVATAR_PATH, AVATAR_BODY_BYTES)];

/// The body limit for a path under `/auth/` (exact match; anything else gets the default).
pub fn auth_body_limit(path: &str) -> usize {
    AUTH_BODY_LIMITS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(DEFAULT_AUTH_BODY_BYTES, |(_, limit)| *limit)
}

/// The message of a 413: "Request bodies are limited to 64 KiB." (or MiB).
pub fn body_limit_message(limit: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if limit >= MIB && limit.is_multiple_of(MIB) {
        format!("Request bodies are limited to {} MiB.", limit / MIB)
    } else {
        format!("Request bodies are limited to {} KiB.", limit / 1024)
    }
}

/// `{"error": code, "message": message}` — `code` is stable, `message` is for humans.
pub fn json_error(code: &str, message: &str) -> String {
    serde_json::json!({ "error": code, "message": message }).to_string()
}

/// Percent-encodes a value for a query string (RFC 3986 unreserved characters pass).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// https anywhere; plain http only to a loopback host, where nothing crosses a network (a local
/// relay, a test receiver). Credentials in the URL are refused: they would travel unredacted
/// into places that print URLs; the bearer token setting exists for that.
pub fn parse_http_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
    let Some(host) = url.host_str() else {
        return Err("the URL has no host".into());
    };
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(host) => {}
        "http" => {
            return Err(
                "plain http is allowed only to a loopback host (localhost, 127.0.0.0/8, [::1]); \
                 use https"
                    .into(),
            )
        }
        _ => return Err("the scheme must be https (or http to a loopback host)".into()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not supported".into());
    }
    Ok(url)
}

pub fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_limits_are_per_route_with_a_default() {
        assert_eq!(auth_body_limit("/auth/login"), 64 * 1024);
        assert_eq!(auth_body_limit(AVATAR_PATH), 2 * 1024 * 1024);
        assert_eq!(auth_body_limit("/auth/api/v1/me/avatar/x"), 64 * 1024);
        assert_eq!(
            body_limit_message(DEFAULT_AUTH_BODY_BYTES),
            "Request bodies are limited to 64 KiB."
        );
        assert_eq!(
            body_limit_message(AVATAR_BODY_BYTES),
            "Request bodies are limited to 2 MiB."
        );
    }

    #[test]
    fn query_escape_keeps_paths_readable_and_escapes_the_rest() {
        assert_eq!(super::query_escape("/a/b?x=1&y=2"), "/a/b%3Fx%3D1%26y%3D2");
    }
}
