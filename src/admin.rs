//! Admin operations behind the CLI (`org create`, `user create`), in domain terms, so the CLI
//! stays a thin shell and tests can call the same code.

use serde_json::{json, Value};

use crate::auth::password::{complexity_violations, Passwords, MAX_PASSWORD_BYTES};
use crate::auth::secret::new_id;
use crate::clock::UnixTime;
use crate::store::{
    Membership, Organization, Permission, Role, SharedStore, StoreError, User, DEFAULT_SESSION_DAYS,
};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("no organization with id {0}")]
    UnknownOrg(String),
    #[error("a user with email {0} already exists")]
    EmailTaken(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}

pub fn org_json(org: &Organization) -> Value {
    json!({
        "id": org.id,
        "name": org.name,
        "session_duration_days": org.session_duration_days,
        "created_at": crate::clock::rfc3339(org.created_at),
    })
}

pub fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "memberships": user.memberships,
        "created_at": crate::clock::rfc3339(user.created_at),
    })
}

fn check_name(field: &str, value: &str) -> Result<(), AdminError> {
    let n = value.chars().count();
    if n == 0 || n > 100 || value.chars().any(char::is_control) {
        return Err(AdminError::Invalid(format!(
            "{field}: 1-100 characters without control characters"
        )));
    }
    Ok(())
}

/// A deliberately small check: one `@`, something on each side, no spaces. The account API
/// does the full validation.
pub fn check_email(email: &str) -> Result<(), AdminError> {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "email: {email:?} is not a valid address"
        )))
    }
}

pub async fn create_org(
    store: &SharedStore,
    name: &str,
    now: UnixTime,
) -> Result<Organization, AdminError> {
    check_name("name", name)?;
    let org = Organization {
        id: new_id("org"),
        name: name.to_string(),
        session_duration_days: DEFAULT_SESSION_DAYS,
        created_at: now,
        two_factor: Default::default(),
    };
    store.create_org(&org).await?;
    Ok(org)
}

pub struct NewUser<'a> {
    pub org_id: &'a str,
    pub email: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub admin: bool,
    pub permissions: &'a [String],
    pub password: &'a str,
}

pub async fn create_user(
    store: &SharedStore,
    passwords: &Passwords,
    new: NewUser<'_>,
    now: UnixTime,
) -> Result<User, AdminError> {
    check_email(new.email)?;
    check_name("first_name", new.first_name)?;
    check_name("last_name", new.last_name)?;
    let permissions = new
        .permissions
        .iter()
        .map(|p| {
            Permission::parse(p).ok_or_else(|| {
                AdminError::Invalid(format!(
                    "permission: unknown {p:?}; known: {}",
                    Permission::ALL.map(|p| p.as_str()).join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if new.password.len() > MAX_PASSWORD_BYTES {
        return Err(AdminError::Invalid("password: at most 1024 bytes".into()));
    }
    let broken = complexity_violations(new.password, new.email);
    if !broken.is_empty() {
        return Err(AdminError::Invalid(format!(
            "password must have: {}",
            broken.join(", ")
        )));
    }
    if store.get_org(new.org_id).await?.is_none() {
        return Err(AdminError::UnknownOrg(new.org_id.to_string()));
    }
    let hash = passwords
        .hash(new.password)
        .map_err(|e| AdminError::Hash(e.to_string()))?;
    let user = User {
        id: new_id("usr"),
        email: new.email.to_string(),
        first_name: new.first_name.to_string(),
        last_name: new.last_name.to_string(),
        job_title: None,
        mobile_phone: None,
        business_phone: None,
        timezone: None,
        password_hash: Some(hash),
        memberships: vec![Membership {
            org_id: new.org_id.to_string(),
            role: if new.admin { Role::Admin } else { Role::Member },
            permissions,
        }],
        created_at: now,
        updated_at: now,
        version: 0,
    };
    match store.create_user(&user).await {
        Err(StoreError::Conflict(_)) => Err(AdminError::EmailTaken(new.email.to_string())),
        other => other.map_err(AdminError::from),
    }?;
    Ok(user)
}
