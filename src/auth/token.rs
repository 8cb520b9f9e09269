//! Service tokens: their shape, and the IP / client id rules checked on every use.
//!
//! A token is `xgw_` + 44 random base62 characters (262 bits) + a 6-character base62 CRC-32 of
//! everything before it. The prefix lets secret scanners find leaked tokens; the checksum
//! rejects typos and garbage before any store lookup. Only the SHA-256 of a token is stored.
//!
//! Binding: a token may be bound to one address (the client IP must equal it) or to a CIDR
//! range (the client IP must be inside it *and* the request must carry `X-User-Id` with the
//! token's client id). A request that sends `X-User-Id` must send the right one, bound or not.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use rand::distributions::{Alphanumeric, DistString};

use super::identity::{AuthMethod, Identity};
use super::secret::constant_time_eq;
use crate::store::{ServiceToken, User};

pub const TOKEN_PREFIX: &str = "xgw_";
const RANDOM_CHARS: usize = 44;
const CHECKSUM_CHARS: usize = 6;
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + RANDOM_CHARS + CHECKSUM_CHARS;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// CRC-32 (IEEE 802.3), bitwise: a few dozen bytes per token, no table needed.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn checksum(body: &str) -> String {
    let mut n = crc32(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fresh token value.
pub fn new_token() -> String {
    let body = format!(
        "{TOKEN_PREFIX}{}",
        Alphanumeric.sample_string(&mut rand::rngs::OsRng, RANDOM_CHARS)
    );
    let sum = checksum(&body);
    body + &sum
}

/// True if `token` has our prefix, length, alphabet and a matching checksum.
pub fn is_well_formed(token: &str) -> bool {
    if token.len() != TOKEN_LEN
        || !token.starts_with(TOKEN_PREFIX)
        || !token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
    {
        return false;
    }
    let (body, sum) = token.split_at(TOKEN_LEN - CHECKSUM_CHARS);
    checksum(body) == sum
}

/// Where a token may be used from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpBinding {
    Single(IpAddr),
    Range(IpNet),
}

impl IpBinding {
    /// Parses what a user typed in the "IP" field: one address or a CIDR range. The error
    /// says what is wrong, for a 400 response.
    pub fn parse(input: &str) -> Result<IpBinding, String> {
        let s = input.trim();
        if s.is_empty() || s.len() > 64 {
            return Err(
                "ip: give one address (203.0.113.7) or a CIDR range (203.0.113.0/24)".into(),
            );
        }
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| {
                format!("ip: {s:?} is not a CIDR range like 203.0.113.0/24 or 2001:db8::/32")
            })?;
            if net.trunc() != net {
                return Err(format!(
                    "ip: {s:?} has bits set past the prefix; did you mean {}?",
                    net.trunc()
                ));
            }
            Ok(IpBinding::Range(net))
        } else {
            s.parse::<IpAddr>()
                .map(|ip| IpBinding::Single(ip.to_canonical()))
                .map_err(|_| format!("ip: {s:?} is not an IPv4 or IPv6 address"))
        }
    }

    /// The normalized text stored and shown.
    pub fn to_text(self) -> String {
        match self {
            IpBinding::Single(ip) => ip.to_string(),
            IpBinding::Range(net) => net.to_string(),
        }
    }
}

/// Why a well-formed, known token may not be used for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseRefusal {
    IpNotAllowed,
    ClientIdMismatch,
}

/// Checks one use of a token. `x_user_id` is `Some` when the request carried the header
/// (exactly once; a repeated header should be passed as a wrong value).
pub fn check_use(
    binding: Option<IpBinding>,
    client_id: &str,
    client_ip: Option<IpAddr>,
    x_user_id: Option<&str>,
) -> Result<(), UseRefusal> {
    if let Some(sent) = x_user_id {
        if !constant_time_eq(sent, client_id) {
            return Err(UseRefusal::ClientIdMismatch);
        }
    }
    let ip = client_ip.map(|ip| ip.to_canonical());
    match binding {
        None => Ok(()),
        Some(IpBinding::Single(allowed)) => match ip {
            Some(ip) if ip == allowed => Ok(()),
            _ => Err(UseRefusal::IpNotAllowed),
        },
        Some(IpBinding::Range(net)) => match ip {
            Some(ip) if net.contains(&ip) => {
                if x_user_id.is_some() {
                    Ok(())
                } else {
                    Err(UseRefusal::ClientIdMismatch)
                }
            }
            _ => Err(UseRefusal::IpNotAllowed),
        },
    }
}

/// The identity a stored token carries, or `None` if its owner is gone or no longer a member
/// of the token's organization (a token has its owner's rights at the time of use).
pub fn verify(token: &ServiceToken, user: Option<&User>) -> Option<Identity> {
    let user = user?;
    if user.id != token.user_id || user.membership(&token.org_id).is_none() {
        return None;
    }
    Some(Identity {
        method: AuthMethod::ServiceToken,
        user_id: Arc::from(user.id.as_str()),
        email: Arc::from(user.email.as_str()),
        org_id: Arc::from(token.org_id.as_str()),
        credential_id: Arc::from(token.id.as_str()),
        second_factor: None,
        federated: false,
    })
}

/// What the proxy checks on each use of a cached token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseRules {
    pub binding: Option<IpBinding>,
    pub client_id: Arc<str>,
}

impl UseRules {
    /// A stored binding that no longer parses binds to nothing usable: refuse every IP.
    pub fn of(token: &ServiceToken) -> UseRules {
        let binding = token.ip.as_deref().map(|ip| {
            IpBinding::parse(ip).unwrap_or(IpBinding::Range(IpNet::from(IpAddr::from([255u8; 4]))))
        });
        UseRules {
            binding,
            client_id: Arc::from(token.client_id.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn tokens_are_well_formed_and_typos_are_caught() {
        let t = new_token();
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(is_well_formed(&t));
        assert_ne!(t, new_token());
        // Any single-character change breaks the checksum.
        let mut chars: Vec<char> = t.chars().collect();
        chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
        assert!(!is_well_formed(&chars.iter().collect::<String>()));
        assert!(!is_well_formed(&t[..TOKEN_LEN - 1]));
        assert!(!is_well_formed(&t.replacen("xgw_", "ghp_", 1)));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&format!("{}!", &t[..TOKEN_LEN - 1])));
    }

    #[test]
    fn ip_bindings_parse_and_explain_errors() {
        assert_eq!(
            IpBinding::parse(" 203.0.113.7 ").unwrap().to_text(),
            "203.0.113.7"
        );
        assert_eq!(
            IpBinding::parse("2001:db8::/32").unwrap().to_text(),
            "2001:db8::/32"
        );
        assert!(IpBinding::parse("203.0.113.7/24")
            .unwrap_err()
            .contains("203.0.113.0/24"));
        assert!(IpBinding::parse("300.1.1.1")
            .unwrap_err()
            .contains("not an IPv4"));
        assert!(IpBinding::parse("10.0.0.0/33")
            .unwrap_err()
            .contains("CIDR"));
        assert!(IpBinding::parse("").is_err());
        assert_eq!(
            IpBinding::parse("::ffff:192.0.2.1").unwrap().to_text(),
            "192.0.2.1"
        );
    }

    #[test]
    fn use_rules_for_single_range_and_client_id() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let single = Some(IpBinding::Single("203.0.113.7".parse().unwrap()));
        let range = Some(IpBinding::Range("203.0.113.0/24".parse().unwrap()));
        assert_eq!(check_use(None, "c", ip("1.2.3.4"), None), Ok(()));
        assert_eq!(
            check_use(None, "c", ip("1.2.3.4"), Some("x")),
            Err(UseRefusal::ClientIdMismatch)
        );
        assert_eq!(check_use(single, "c", ip("203.0.113.7"), None), Ok(()));
        assert_eq!(
            check_use(single, "c", ip("::ffff:203.0.113.7"), None),
            Ok(())
        );
        assert_eq!(
            check_use(single, "c", ip("203.0.113.8"), None),
            Err(UseRefusal::IpNotAllowed)
        );
        assert_eq!(check_use(range, "c", ip("203.0.113.9"), Some("c")), Ok(()));
        assert_eq!(
            check_use(range, "c", ip("203.0.113.9"), None),
            Err(UseRefusal::ClientIdMismatch)
        );
        assert_eq!(
            check_use(range, "c", ip("203.0.113.9"), Some("d")),
            Err(UseRefusal::ClientIdMismatch)
        );
        assert_eq!(
            check_use(range, "c", ip("198.51.100.1"), Some("c")),
            Err(UseRefusal::IpNotAllowed)
        );
        assert_eq!(
            check_use(single, "c", None, None),
            Err(UseRefusal::IpNotAllowed)
        );
    }
}
