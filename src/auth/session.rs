//! When a stored session still vouches for its user.

use std::sync::Arc;

use super::identity::{AuthMethod, Identity};
use crate::clock::UnixTime;
use crate::store::{Organization, Session, User};

/// The identity a session carries and until when, or `None` if it no longer counts: ended,
/// past the organization's duration, user gone, or user no longer a member of the organization.
pub fn verify(
    session: &Session,
    org: &Organization,
    user: Option<&User>,
    now: UnixTime,
) -> Option<(Identity, UnixTime)> {
    if session.org_id != org.id || !session.is_active(org, now) {
        return None;
    }
    let user = user?;
    if user.id != session.user_id || user.membership(&org.id).is_none() {
        return None;
    }
    let identity = Identity {
        method: AuthMethod::Session,
        user_id: Arc::from(user.id.as_str()),
        email: Arc::from(user.email.as_str()),
        org_id: Arc::from(org.id.as_str()),
        credential_id: Arc::from(session.id.as_str()),
        second_factor: session.second_factor,
        federated: session.federated.is_some(),
    };
    Some((identity, session.expires_at(org)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EndReason, Membership, Role};

    fn fixtures() -> (Session, Organization, User) {
        let org = Organization {
            id: "org_1".into(),
            name: "Acme".into(),
            session_duration_days: 1,
            created_at: 0,
            two_factor: Default::default(),
        };
        let user = User {
            id: "usr_1".into(),
            email: "a@b.c".into(),
            first_name: "A".into(),
            last_name: "B".into(),
            job_title: None,
            mobile_phone: None,
            business_phone: None,
            timezone: None,
            password_hash: None,
            memberships: vec![Membership {
                org_id: "org_1".into(),
                role: Role::Member,
                permissions: vec![],
            }],
            created_at: 0,
            updated_at: 0,
            version: 0,
        };
        let session = Session {
            id: "ses_1".into(),
            token_hash: "h".into(),
            user_id: "usr_1".into(),
            org_id: "org_1".into(),
            ip: "127.0.0.1".into(),
            user_agent: "t".into(),
            created_at: 1_000,
            last_activity_at: 1_000,
            csrf_token: "c".into(),
            ended_at: None,
            ended_reason: None,
            second_factor: None,
            federated: None,
        };
        (session, org, user)
    }

    #[test]
    fn a_live_session_of_a_member_verifies_until_the_org_duration() {
        let (s, o, u) = fixtures();
        let (id, until) = verify(&s, &o, Some(&u), 1_001).unwrap();
        assert_eq!(&*id.user_id, "usr_1");
        assert_eq!(until, 1_000 + 86_400);
        assert!(verify(&s, &o, Some(&u), 1_000 + 86_400).is_none());
    }

    #[test]
    fn ended_sessions_missing_users_and_former_members_fail() {
        let (mut s, o, mut u) = fixtures();
        assert!(verify(&s, &o, None, 1_001).is_none());
        u.memberships.clear();
        assert!(verify(&s, &o, Some(&u), 1_001).is_none());
        let (_, _, u) = fixtures();
        s.ended_reason = Some(EndReason::LoggedOut);
        s.ended_at = Some(1_001);
        assert!(verify(&s, &o, Some(&u), 1_002).is_none());
    }
}
