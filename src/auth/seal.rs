//! Sealing small secrets (TOTP seeds) before they are stored: ChaCha20-Poly1305 with a random
//! nonce, under a 256-bit key from `[secrets] key_file`. A stolen store alone does not reveal
//! any authenticator seed. The sealed form is `v1.` + base64url(nonce || ciphertext || tag).

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

const VERSION: &str = "v1.";
pub const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("secrets key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("sealing failed")]
    Seal,
    /// Wrong key, or the stored value was altered.
    #[error("the sealed value cannot be opened (wrong secrets key, or it was altered)")]
    Open,
}

pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { key: <redacted> }")
    }
}

fn key_err(path: &Path, reason: impl ToString) -> SealError {
    SealError::Key {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl Sealer {
    pub fn from_key(key: &[u8]) -> Result<Sealer, SealError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| SealError::Key {
            path: "<key>".into(),
            reason: format!("must be {KEY_BYTES} bytes"),
        })?;
        Ok(Sealer {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Loads a key file: 32 raw bytes, or their base64 / hex text. With `create`, a missing
    /// file is generated (mode 0600).
    pub fn load(path: &Path, create: bool) -> Result<Sealer, SealError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut key = [0u8; KEY_BYTES];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| key_err(path, "no randomness"))?;
                crate::auth::secret::write_private_file(
                    path,
                    URL_SAFE_NO_PAD.encode(key).as_bytes(),
                )
                .map_err(|e| key_err(path, e))?;
                return Sealer::from_key(&key);
            }
            Err(e) => return Err(key_err(path, e)),
        };
        let key = decode_key(&bytes)
            .ok_or_else(|| key_err(path, "expected 32 bytes, raw or as base64 or hex text"))?;
        Sealer::from_key(&key)
    }

    pub fn seal(&self, plaintext: &[u8]) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SealError::Seal)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let raw = sealed
            .strip_prefix(VERSION)
            .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
            .ok_or(SealError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

fn decode_key(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() == KEY_BYTES {
        return Some(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    [
        URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok(),
        base64::engine::general_purpose::STANDARD.decode(text).ok(),
        hex::decode(text).ok(),
    ]
    .into_iter()
    .flatten()
    .find(|k| k.len() == KEY_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_open_only_with_the_same_key_and_unaltered() {
        let a = Sealer::from_key(&[7u8; 32]).unwrap();
        let b = Sealer::from_key(&[8u8; 32]).unwrap();
        let sealed = a.seal(b"totp seed").unwrap();
        assert_ne!(sealed, a.seal(b"totp seed").unwrap(), "random nonce");
        assert_eq!(a.open(&sealed).unwrap(), b"totp seed");
        assert!(b.open(&sealed).is_err());
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(a.open(&String::from_utf8(tampered).unwrap()).is_err());
        assert!(a.open("garbage").is_err());
        assert!(!format!("{a:?}").contains('7'));
    }

    #[test]
    fn key_files_are_generated_private_and_read_back_in_any_encoding() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let a = Sealer::load(&path, true).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = Sealer::load(&path, false).unwrap();
        assert_eq!(b.open(&a.seal(b"x").unwrap()).unwrap(), b"x");
        let hex_path = dir.path().join("hex.key");
        std::fs::write(&hex_path, hex::encode([9u8; 32])).unwrap();
        assert!(Sealer::load(&hex_path, false).is_ok());
        let short = dir.path().join("short.key");
        std::fs::write(&short, "abc").unwrap();
        assert!(Sealer::load(&short, false).is_err());
        assert!(Sealer::load(&dir.path().join("missing"), false).is_err());
    }
}
