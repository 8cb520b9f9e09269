//! Work off the request path: hearing revocations from other replicas, and sweeping expired
//! sessions out of the store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::store::cache::AuthCache;
use crate::store::{InvalidationEvent, SharedStore, SECONDS_PER_DAY};

/// Applies every invalidation published by any replica to this replica's cache.
pub struct InvalidationListener {
    pub store: SharedStore,
    pub cache: Arc<AuthCache>,
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl BackgroundService for InvalidationListener {
    async fn start(&self, shutdown: ShutdownWatch) {
        let cache = self.cache.clone();
        let metrics = self.metrics.clone();
        if self.store.backend_name() == "embedded" {
            metrics.invalidation_feed_up.set(1);
        }
        let on_event = move |event: InvalidationEvent| match event {
            InvalidationEvent::Invalidate(what) => {
                metrics.invalidations_received.inc();
                cache.invalidate(&what);
            }
            InvalidationEvent::Resync => cache.clear(),
        };
        self.store.watch_invalidations(&on_event, shutdown).await;
    }
}

/// Deletes sessions past their retention, once a minute.
pub struct Sweeper {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub retention_days: u32,
}

const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let cutoff = self.clock.now() - i64::from(self.retention_days) * SECONDS_PER_DAY;
            match self.store.purge_sessions(cutoff).await {
                Ok(n) => self.metrics.sessions_purged.inc_by(n as u64),
                Err(e) => tracing::warn!(error = %e, "session sweep failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
