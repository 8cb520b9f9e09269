//! The rules, free of HTTP and storage types: passwords, session secrets, login steps,
//! brute-force backoff, the identity the gateway vouches for, and the upstream JWT.

pub mod backup_codes;
pub mod identity;
pub mod jwt;
pub mod login;
pub mod password;
pub mod profile;
pub mod ratelimit;
pub mod seal;
pub mod secret;
pub mod session;
pub mod token;
pub mod totp;
