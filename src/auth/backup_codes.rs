//! Backup codes: ten single-use codes shown once at enrolment. Each is 12 characters from an
//! alphabet without look-alikes (no 0/O, 1/I/L, 5/S, 2/Z, 8/B), shown as `XXXX-XXXX-XXXX`;
//! input is forgiving about case, dashes and spaces. Stored as SHA-256 bound to the user, so a
//! leaked hash list is useless for anyone else's account and identical codes never collide.

use rand::Rng;
use sha2::{Digest, Sha256};

pub const COUNT: usize = 10;
const LEN: usize = 12;
const ALPHABET: &[u8] = b"34679ACDEFGHJKMNPQRTUVWXY";

pub fn generate() -> Vec<String> {
    let mut rng = rand::rngs::OsRng;
    (0..COUNT)
        .map(|_| {
            let raw: String = (0..LEN)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect();
            format!("{}-{}-{}", &raw[..4], &raw[4..8], &raw[8..])
        })
        .collect()
}

/// The canonical form of what a user typed, if it can be a backup code at all.
pub fn normalize(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

/// The stored form of a code for `user_id`; `None` if the input cannot be a code.
pub fn hash(user_id: &str, input: &str) -> Option<String> {
    let code = normalize(input)?;
    Some(hex::encode(Sha256::digest(
        format!("xgw-backup-code:{user_id}:{code}").as_bytes(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_distinct_readable_codes() {
        let codes = generate();
        assert_eq!(codes.len(), 10);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);
        for c in &codes {
            assert_eq!(c.len(), 14);
            assert!(normalize(c).is_some(), "{c}");
        }
    }

    #[test]
    fn input_is_forgiving_but_hashes_are_per_user() {
        let code = &generate()[0];
        let typed = code.to_lowercase().replace('-', " ");
        assert_eq!(hash("u1", code), hash("u1", &typed));
        assert_ne!(hash("u1", code), hash("u2", code));
        assert_eq!(hash("u1", "too-short"), None);
        assert_eq!(hash("u1", "0000-0000-0000"), None);
    }
}
