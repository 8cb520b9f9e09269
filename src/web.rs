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

#[cfg(test)]
mod tests {
    #[test]
    fn query_escape_keeps_paths_readable_and_escapes_the_rest() {
        assert_eq!(super::query_escape("/a/b?x=1&y=2"), "/a/b%3Fx%3D1%26y%3D2");
    }
}
