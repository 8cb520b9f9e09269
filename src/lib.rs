//! xelon-gateway: a reverse-proxy authentication gateway for the Xelon HQ platform API.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod clock;
pub mod metrics;
pub mod store;
