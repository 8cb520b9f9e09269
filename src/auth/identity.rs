//! Who a request comes from, as the gateway vouches for it to upstreams.

use std::sync::Arc;

pub use crate::store::SecondFactor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Session,
    ServiceToken,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Session => "session",
            AuthMethod::ServiceToken => "service_token",
        }
    }

    /// The JWT `amr` value (RFC 8176 where one fits).
    pub fn amr(self) -> &'static str {
        match self {
            AuthMethod::Session => "pwd",
            AuthMethod::ServiceToken => "svc",
        }
    }
}

/// A verified caller. Cheap to clone (shared strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub method: AuthMethod,
    pub user_id: Arc<str>,
    pub email: Arc<str>,
    pub org_id: Arc<str>,
    /// Public id of the session (or token) that carried the request.
    pub credential_id: Arc<str>,
    /// The second factor of the login behind a session.
    pub second_factor: Option<SecondFactor>,
    /// The login's first step went through a Quick Login provider rather than a password.
    pub federated: bool,
}

impl Identity {
    /// The JWT `amr` claim: how the caller authenticated (RFC 8176 values where one fits).
    pub fn amr(&self) -> Vec<String> {
        // `fed`: a federated assertion (the provider's), as Microsoft's identity platform uses it.
        let first = if self.federated {
            "fed"
        } else {
            self.method.amr()
        };
        let mut amr = vec![first.to_string()];
        if let Some(f) = self.second_factor {
            amr.push(f.amr().to_string());
        }
        amr
    }
}
