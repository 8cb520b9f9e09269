//! Pulls the caller's credential out of the request headers, checking its shape before anything
//! is looked up: garbage, oversized or duplicated credentials never reach the store.

use http::HeaderMap;

use crate::auth::secret::{is_well_formed_session_secret, SecretHash};
use crate::auth::token;

/// Cookie headers longer than this are refused outright (browsers cap a cookie at 4 KiB).
pub const MAX_COOKIE_HEADER_BYTES: usize = 8 * 1024;
pub const MAX_AUTHORIZATION_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// Nothing that looks like a credential.
    None,
    /// A well-formed session cookie; carries the SHA-256 of its value (the store key).
    Session { token_hash: SecretHash },
    /// `Authorization: Bearer` with a well-formed service token; carries its SHA-256.
    Bearer { token_hash: SecretHash },
    /// `Authorization: Bearer` with something that is not a service token (a typo, garbage, a
    /// token of another system): refused as an invalid token without a lookup.
    BadBearer,
    /// Present but unusable: wrong shape, too long, repeated. Rejected without a lookup.
    Malformed,
}

pub fn extract(headers: &HeaderMap, cookie_name: &str) -> Credential {
    let authorization = headers.get_all(http::header::AUTHORIZATION);
    let mut auth_iter = authorization.iter();
    if let Some(value) = auth_iter.next() {
        if auth_iter.next().is_some() || value.len() > MAX_AUTHORIZATION_BYTES {
            return Credential::Malformed;
        }
        let Ok(text) = value.to_str() else {
            return Credential::Malformed;
        };
        return match text.split_once(' ') {
            Some((scheme, value)) if scheme.eq_ignore_ascii_case("bearer") && !value.is_empty() => {
                let value = value.trim();
                if token::is_well_formed(value) {
                    Credential::Bearer {
                        token_hash: SecretHash::of(value),
                    }
                } else {
                    Credential::BadBearer
                }
            }
            _ => Credential::Malformed,
        };
    }
    let mut found: Option<&str> = None;
    let mut total = 0usize;
    for header in headers.get_all(http::header::COOKIE) {
        total += header.len();
        if total > MAX_COOKIE_HEADER_BYTES {
            return Credential::Malformed;
        }
        let Ok(text) = header.to_str() else {
            // Not our business unless our cookie is in there; be strict anyway.
            return Credential::Malformed;
        };
        for pair in text.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if name == cookie_name {
                if found.is_some() {
                    // Two cookies of our name: a cookie-tossing attempt or a broken client.
                    return Credential::Malformed;
                }
                found = Some(value.trim_matches('"'));
            }
        }
    }
    match found {
        None => Credential::None,
        Some(v) if is_well_formed_session_secret(v) => Credential::Session {
            token_hash: SecretHash::of(v),
        },
        Some(_) => Credential::Malformed,
    }
}

/// The `Cookie` header without the gateway's own cookie (upstreams never see the session secret).
/// `None` when nothing is left.
pub fn cookie_header_without(value: &str, cookie_name: &str) -> Option<String> {
    // Built in one string (no intermediate list): this runs on every request with a cookie, and
    // a header holding only our cookie costs no allocation at all.
    let mut kept = String::new();
    for pair in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        if pair.split_once('=').is_some_and(|(n, _)| n == cookie_name) {
            continue;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(pair);
    }
    (!kept.is_empty()).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::secret::new_session_secret;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn finds_a_well_formed_session_cookie_among_others() {
        let s = new_session_secret();
        let h = headers(&[("cookie", &format!("a=1; xgw_session={s}; b=2"))]);
        assert_eq!(
            extract(&h, "xgw_session"),
            Credential::Session {
                token_hash: SecretHash::of(&s)
            }
        );
        assert_eq!(
            extract(&headers(&[("cookie", "a=1")]), "xgw_session"),
            Credential::None
        );
        assert_eq!(extract(&HeaderMap::new(), "xgw_session"), Credential::None);
    }

    #[test]
    fn garbage_duplicate_and_oversized_credentials_are_malformed() {
        let s = new_session_secret();
        for h in [
            headers(&[("cookie", "xgw_session=garbage")]),
            headers(&[("cookie", &format!("xgw_session={s}; xgw_session={s}"))]),
            headers(&[(
                "cookie",
                &format!("x={}; xgw_session={s}", "a".repeat(9000)),
            )]),
            headers(&[("authorization", "Basic abc")]),
            headers(&[("authorization", "Bearer")]),
            headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
        ] {
            assert_eq!(extract(&h, "xgw_session"), Credential::Malformed, "{h:?}");
        }
    }

    #[test]
    fn a_bearer_value_is_a_service_token_or_bad() {
        let t = token::new_token();
        for value in [format!("Bearer {t}"), format!("bearer  {t} ")] {
            assert_eq!(
                extract(&headers(&[("authorization", &value)]), "xgw_session"),
                Credential::Bearer {
                    token_hash: SecretHash::of(&t)
                },
                "{value}"
            );
        }
        let other_last = if t.ends_with('x') { "y" } else { "x" };
        let typo = format!("Bearer {}{other_last}", &t[..t.len() - 1]);
        for value in ["Bearer xgs_abc", "Bearer not-a-token", typo.as_str()] {
            assert_eq!(
                extract(&headers(&[("authorization", value)]), "xgw_session"),
                Credential::BadBearer,
                "{value}"
            );
        }
    }

    #[test]
    fn strips_only_our_cookie() {
        assert_eq!(
            cookie_header_without("a=1; xgw_session=x; b=2", "xgw_session").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(cookie_header_without("xgw_session=x", "xgw_session"), None);
    }
}
