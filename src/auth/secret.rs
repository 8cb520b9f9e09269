//! Random secrets and ids. Session cookies are 256-bit random values with a recognizable prefix;
//! only their SHA-256 is stored (they are random, so a slow hash adds nothing).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of a session cookie value: `xgs_` + 43 base64url characters.
pub const SESSION_PREFIX: &str = "xgs_";
const SECRET_BYTES: usize = 32;
const ENCODED_LEN: usize = 43;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// A fresh session cookie value.
pub fn new_session_secret() -> String {
    format!(
        "{SESSION_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>())
    )
}

/// Checks the shape of a cookie value before anything is looked up; garbage never reaches the
/// store.
pub fn is_well_formed_session_secret(value: &str) -> bool {
    value
        .strip_prefix(SESSION_PREFIX)
        .is_some_and(is_well_formed_token)
}

/// The shape of `new_csrf_token` (and of the random part of a session secret): 43 base64url
/// characters.
pub fn is_well_formed_token(value: &str) -> bool {
    value.len() == ENCODED_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 of a secret, hex: the key under which its record is stored.
pub fn hash_secret(secret: &str) -> String {
    SecretHash::of(secret).hex()
}

/// SHA-256 of a secret, in binary: how the proxy carries a credential from the request to the
/// credential cache. The store's key is its `hex()`; the hot path needs that text only on a
/// cache miss, so a cache hit costs no hex encoding and no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    pub fn of(secret: &str) -> SecretHash {
        SecretHash(Sha256::digest(secret.as_bytes()).into())
    }

    /// The store's key (what `hash_secret` returns).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The binary form of a store key, as named by an invalidation; `None` if it is not one.
    pub fn from_hex(key: &str) -> Option<SecretHash> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(key, &mut bytes).ok()?;
        Some(SecretHash(bytes))
    }
}

/// Only the first 8 bytes: the value is a SHA-256 output, so they are as uniform as all 32, and
/// a map keyed by it can use them as the hash as they are (see `store::cache`).
impl std::hash::Hash for SecretHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Shows the store key: a hash of the secret, never the secret.
impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretHash({})", self.hex())
    }
}

/// A CSRF token bound to a session.
pub fn new_csrf_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>())
}

/// A public identifier such as `ses_3f9a...` (128 random bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(random_bytes::<16>()))
}

/// Writes a new secret file readable by its owner only (0600), creating its directory; never
/// overwrites an existing file (a key that exists is loaded, not replaced).
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Constant-time equality for secrets compared in the open (CSRF tokens).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_secrets_are_well_formed_and_distinct() {
        let a = new_session_secret();
        let b = new_session_secret();
        assert_ne!(a, b);
        assert!(is_well_formed_session_secret(&a));
        assert!(!is_well_formed_session_secret(&a[..a.len() - 1]));
        assert!(!is_well_formed_session_secret(&a.replace("xgs_", "xgt_")));
        assert!(!is_well_formed_session_secret(
            "xgs_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        ));
        assert_eq!(hash_secret(&a).len(), 64);
    }

    #[test]
    fn a_secret_hash_is_the_store_key_in_binary() {
        let s = new_session_secret();
        let h = SecretHash::of(&s);
        assert_eq!(h.hex(), hash_secret(&s));
        assert_eq!(SecretHash::from_hex(&h.hex()), Some(h));
        assert_ne!(SecretHash::of("other"), h);
        for bad in [
            "",
            "abc",
            &"g".repeat(64),
            &h.hex()[..62],
            &format!("{}00", h.hex()),
        ] {
            assert_eq!(SecretHash::from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
