//! Who a request comes from, as the gateway vouches for it to upstreams.

use std::sync::Arc;

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
}
