//! Work off the request path: hearing revocations from other replicas, and sweeping expired
//! sessions and old audit log entries out of the store.

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

/// Deletes sessions and audit log entries past their retention, once a minute.
pub struct Sweeper {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    /// `session.expired_retention_days`
    pub retention_days: u32,
    /// `audit.retention_days`
    pub audit_retention_days: u32,
}

const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Sweeper {
    /// Walks every organization's sessions: O(sessions), once a minute, off the request path.
    async fn count_active(&self) -> Result<i64, crate::store::StoreError> {
        let now = self.clock.now();
        let mut active = 0i64;
        for org_id in self.store.list_org_ids().await? {
            let Some(org) = self.store.get_org(&org_id).await? else {
                continue;
            };
            let sessions = self.store.list_org_sessions(&org_id).await?;
            active += sessions.iter().filter(|s| s.is_active(&org, now)).count() as i64;
        }
        Ok(active)
    }
}

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let cutoff = self.clock.now() - i64::from(self.retention_days) * SECONDS_PER_DAY;
            match self.store.purge_sessions(cutoff).await {
                Ok(n) => self.metrics.sessions_purged.inc_by(n as u64),
                Err(e) => tracing::warn!(error = %e, "session sweep failed"),
            }
            let audit_cutoff =
                self.clock.now() - i64::from(self.audit_retention_days) * SECONDS_PER_DAY;
            match self.store.purge_audit(audit_cutoff).await {
                Ok(n) => self.metrics.audit_purged.inc_by(n as u64),
                Err(e) => tracing::warn!(error = %e, "audit log sweep failed"),
            }
            match self.count_active().await {
                Ok(n) => self.metrics.active_sessions.set(n),
                Err(e) => tracing::warn!(error = %e, "cannot count active sessions"),
            }
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
