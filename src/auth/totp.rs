//! TOTP (RFC 6238) as authenticator apps do it: SHA-1, 6 digits, 30-second steps, one step of
//! clock drift either way. Verification returns the time step that matched, so the caller can
//! record it atomically and refuse a replay of that code — or of any older one.

use rand::RngCore;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};

use crate::clock::UnixTime;

pub const ISSUER: &str = "Xelon HQ";
pub const STEP_SECS: i64 = 30;
const DIGITS: usize = 6;
/// 160 bits, the size RFC 4226 recommends and authenticator apps expect.
const SECRET_BYTES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("cannot build the TOTP: {0}")]
    Build(String),
    #[error("cannot draw the QR code: {0}")]
    Qr(String),
}

/// What the user needs to set up an authenticator app.
#[derive(Debug, Clone)]
pub struct Enrolment {
    /// Base32, shown as the setup key for manual entry.
    pub secret_base32: String,
    pub otpauth_uri: String,
    pub qr_png_base64: String,
}

pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

fn totp(secret: &[u8], account: &str) -> Result<TOTP, TotpError> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECS as u64,
        secret.to_vec(),
        Some(ISSUER.to_string()),
        account.to_string(),
    )
    .map_err(|e| TotpError::Build(e.to_string()))
}

/// The setup key, otpauth URI (issuer "Xelon HQ", the user's email) and its QR code.
pub fn enrolment(secret: &[u8], email: &str) -> Result<Enrolment, TotpError> {
    let t = totp(secret, email)?;
    Ok(Enrolment {
        secret_base32: t.get_secret_base32(),
        otpauth_uri: t.get_url(),
        qr_png_base64: t.get_qr_base64().map_err(TotpError::Qr)?,
    })
}

/// True if `code` has the shape of a TOTP code (6 ASCII digits, spaces ignored).
pub fn normalize_code(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// The time step `code` is valid for at `now` (current, previous or next), if any.
pub fn matching_step(secret: &[u8], code: &str, now: UnixTime) -> Option<i64> {
    let code = normalize_code(code)?;
    // Account name and issuer do not enter the computation.
    let t = TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECS as u64,
        secret.to_vec(),
        None,
        String::new(),
    );
    let current = now.div_euclid(STEP_SECS);
    // Check all three steps so the time taken does not tell which one matched.
    let mut found = None;
    for step in [current - 1, current, current + 1] {
        if step < 0 {
            continue;
        }
        let expected = t.generate((step * STEP_SECS) as u64);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_sha1_vectors() {
        // Appendix B: secret "12345678901234567890", 8 digits.
        let t = TOTP::new_unchecked(
            Algorithm::SHA1,
            8,
            0,
            30,
            b"12345678901234567890".to_vec(),
            None,
            String::new(),
        );
        for (time, code) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(t.generate(time), code, "t={time}");
        }
    }

    #[test]
    fn accepts_one_step_of_drift_and_reports_the_step() {
        let secret = new_secret();
        let t = TOTP::new_unchecked(
            Algorithm::SHA1,
            6,
            0,
            30,
            secret.clone(),
            None,
            String::new(),
        );
        let now = 1_800_000_015;
        let step = now / 30;
        for (offset, ok) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
            let code = t.generate(((step + offset) * 30) as u64);
            let got = matching_step(&secret, &code, now);
            assert_eq!(got.is_some(), ok, "offset {offset}");
            if ok {
                assert_eq!(got, Some(step + offset));
            }
        }
        assert_eq!(matching_step(&secret, "12345", now), None);
        assert_eq!(matching_step(&secret, "abcdef", now), None);
    }

    #[test]
    fn enrolment_has_issuer_account_and_a_png() {
        let secret = new_secret();
        let e = enrolment(&secret, "ada@example.com").unwrap();
        assert!(e
            .otpauth_uri
            .starts_with("otpauth://totp/Xelon%20HQ:ada%40example.com?"));
        assert!(e
            .otpauth_uri
            .contains(&format!("secret={}", e.secret_base32)));
        assert!(e.otpauth_uri.contains("issuer=Xelon%20HQ"));
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(&e.qr_png_base64)
            .unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
}
