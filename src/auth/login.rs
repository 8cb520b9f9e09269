//! The login state machine. A login moves from `Start` through checks to a session; each
//! step's outcome is one of the variants below, so a second factor (TOTP, SMS) is inserted as a
//! new step between "password verified" and "session issued" without touching the others.

use crate::store::{Membership, User};

/// What the password step concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    /// Credentials wrong (or account unknown; indistinguishable by design).
    Rejected,
    /// The password is right but the account cannot sign in (no organization).
    NoOrganization,
    /// Ready: issue a session in this organization.
    IssueSession { user_id: String, org_id: String },
}

/// Decides the next step after the password was checked. The session's organization is the
/// user's first membership (the one they were created in).
pub fn after_password(user: Option<&User>, password_ok: bool) -> LoginStep {
    match user {
        Some(user) if password_ok => match user.memberships.first() {
            Some(Membership { org_id, .. }) => LoginStep::IssueSession {
                user_id: user.id.clone(),
                org_id: org_id.clone(),
            },
            None => LoginStep::NoOrganization,
        },
        _ => LoginStep::Rejected,
    }
}

/// Longest `next` we redirect to.
const MAX_NEXT_LEN: usize = 2048;

/// Where to send the browser after login: only a same-origin relative path, else `/`.
/// `//evil.example` and `/\evil.example` are protocol-relative in browsers, so they are refused.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() <= MAX_NEXT_LEN
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_only_allows_same_origin_relative_paths() {
        assert_eq!(safe_next(Some("/projects?id=1")), "/projects?id=1");
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "evil",
            "/a\nb",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
