//! The signed identity the upstream can verify: an EdDSA (Ed25519) JWT in `X-Auth-Jwt`, with
//! the public key published at `/auth/.well-known/jwks.json`.
//!
//! The key comes from `jwt.private_key_file` (PKCS#8, DER or PEM). Without one, a key is
//! generated: beside an embedded store it is written to disk (mode 0600) so restarts keep it;
//! on Redis it lives only in this process, which is wrong for several replicas — hence a warning.

use std::path::Path;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identity::Identity;
use crate::clock::UnixTime;

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("cannot read JWT key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("cannot sign JWT: {0}")]
    Sign(String),
}

/// Claims of the upstream JWT.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    /// The user id.
    pub sub: String,
    pub email: String,
    /// The organization the request acts in.
    pub org: String,
    /// How the caller authenticated (`pwd` for a session, `svc` for a service token).
    pub amr: Vec<String>,
    /// The session or service token id.
    pub sid: String,
    pub iat: UnixTime,
    pub exp: UnixTime,
}

pub struct JwtSigner {
    kid: String,
    /// Held parsed: `jsonwebtoken::encode` would re-derive the key pair from PKCS#8 on every
    /// signature (~85 µs, half the CPU of a request that misses the cache).
    pair: Ed25519KeyPair,
    /// `{"typ":"JWT","alg":"EdDSA","kid":...}`, base64url, the same for every token.
    header_b64: String,
    decoding: DecodingKey,
    public_key: Vec<u8>,
    issuer: String,
    lifetime_secs: i64,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner").field("kid", &self.kid).finish()
    }
}

fn key_err(path: &Path, reason: impl ToString) -> JwtError {
    JwtError::Key {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// PEM (`-----BEGIN PRIVATE KEY-----`) or raw DER bytes to DER.
fn pkcs8_der(bytes: &[u8], path: &Path) -> Result<Vec<u8>, JwtError> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(bytes.to_vec());
    };
    if !text.contains("-----BEGIN") {
        return Ok(bytes.to_vec());
    }
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).map_err(|e| key_err(path, e))
}

impl JwtSigner {
    pub fn from_pkcs8(der: &[u8], issuer: &str, lifetime_secs: i64) -> Result<Self, JwtError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| key_err(Path::new("<pkcs8>"), e))?;
        let public_key = pair.public_key().as_ref().to_vec();
        let kid = hex::encode(&Sha256::digest(&public_key)[..8]);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let header_json = serde_json::to_vec(&header).map_err(|e| JwtError::Sign(e.to_string()))?;
        Ok(Self {
            kid,
            pair,
            header_b64: URL_SAFE_NO_PAD.encode(header_json),
            decoding: DecodingKey::from_ed_der(&public_key),
            public_key,
            issuer: issuer.to_string(),
            lifetime_secs,
        })
    }

    /// Loads `path`; with `create`, a missing file is generated (0600) first.
    pub fn load(path: &Path, create: bool, issuer: &str, lifetime: i64) -> Result<Self, JwtError> {
        match std::fs::read(path) {
            Ok(bytes) => Self::from_pkcs8(&pkcs8_der(&bytes, path)?, issuer, lifetime)
                .map_err(|e| key_err(path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let der = generate_pkcs8()?;
                crate::auth::secret::write_private_file(path, &der)
                    .map_err(|e| key_err(path, e))?;
                Self::from_pkcs8(&der, issuer, lifetime)
            }
            Err(e) => Err(key_err(path, e)),
        }
    }

    /// A key that lives only as long as this process.
    pub fn ephemeral(issuer: &str, lifetime: i64) -> Result<Self, JwtError> {
        Self::from_pkcs8(&generate_pkcs8()?, issuer, lifetime)
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn lifetime_secs(&self) -> i64 {
        self.lifetime_secs
    }

    /// Signs a fresh token for `identity`; returns it with its expiry.
    pub fn mint(&self, identity: &Identity, now: UnixTime) -> Result<(String, UnixTime), JwtError> {
        let exp = now + self.lifetime_secs;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: identity.user_id.to_string(),
            email: identity.email.to_string(),
            org: identity.org_id.to_string(),
            amr: identity.amr(),
            sid: identity.credential_id.to_string(),
            iat: now,
            exp,
        };
        // RFC 7515 compact form: header.payload.signature, each base64url without padding.
        let payload = serde_json::to_vec(&claims).map_err(|e| JwtError::Sign(e.to_string()))?;
        let signing_input = format!("{}.{}", self.header_b64, URL_SAFE_NO_PAD.encode(payload));
        let signature = self.pair.sign(signing_input.as_bytes());
        let token = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        );
        Ok((token, exp))
    }

    /// Verifies a token of ours (used by tests and tools; upstreams use the JWKS).
    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[&self.issuer]);
        v.validate_aud = false;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map(|d| d.claims)
    }

    /// The JSON Web Key Set upstreams fetch to verify `X-Auth-Jwt`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "alg": "EdDSA",
                "use": "sig",
                "kid": self.kid,
                "x": URL_SAFE_NO_PAD.encode(&self.public_key),
            }]
        })
    }
}

fn generate_pkcs8() -> Result<Vec<u8>, JwtError> {
    let rng = ring::rand::SystemRandom::new();
    Ed25519KeyPair::generate_pkcs8(&rng)
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| JwtError::Sign(format!("key generation failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::AuthMethod;

    #[test]
    fn minted_tokens_verify_against_the_published_key_and_expire() {
        let s = JwtSigner::ephemeral("xgw", 300).unwrap();
        let id = Identity {
            method: AuthMethod::Session,
            user_id: "usr_1".into(),
            email: "a@b.c".into(),
            org_id: "org_1".into(),
            credential_id: "ses_1".into(),
            second_factor: None,
            federated: false,
        };
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let (token, exp) = s.mint(&id, now).unwrap();
        assert_eq!(exp, now + 300);
        let claims = s.verify(&token).unwrap();
        assert_eq!(claims.sub, "usr_1");
        assert_eq!(claims.amr, vec!["pwd"]);
        // The JWKS key alone verifies it.
        let jwks = s.jwks();
        let x = jwks["keys"][0]["x"].as_str().unwrap();
        let key = DecodingKey::from_ed_components(x).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.validate_aud = false;
        assert!(jsonwebtoken::decode::<Claims>(&token, &key, &v).is_ok());
        let (old, _) = s.mint(&id, now - 1000).unwrap();
        assert!(s.verify(&old).is_err());
    }

    #[test]
    fn generated_key_files_are_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt.key");
        let a = JwtSigner::load(&path, true, "xgw", 300).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = JwtSigner::load(&path, false, "xgw", 300).unwrap();
        assert_eq!(a.kid(), b.kid());
        std::fs::write(dir.path().join("bad"), b"garbage").unwrap();
        assert!(JwtSigner::load(&dir.path().join("bad"), false, "xgw", 300).is_err());
    }
}
