//! The Redis backend (being written).
use std::sync::Arc;

use super::{SharedStore, StoreError, StoreResult};
use crate::metrics::Metrics;

pub struct RedisStore;

impl RedisStore {
    pub fn open_shared(_url: &str, _metrics: Arc<Metrics>) -> StoreResult<SharedStore> {
        Err(StoreError::Unavailable(
            "redis backend not built yet".into(),
        ))
    }
}
