//! The invalidation feed: publishing revocations on `xgw:invalidate` and waiting for every
//! replica's ack, and the subscriber loop that reconnects, resubscribes and asks for a resync.

use std::time::Duration;

use futures_util::StreamExt;

use super::{within, RedisStore, PREFIX};
use crate::store::{observed, Invalidation, InvalidationEvent, StoreResult};

const CHANNEL: &str = "xgw:invalidate";

/// Reconnect backoff of the invalidation feed.
const FEED_BACKOFF_START: Duration = Duration::from_millis(100);
const FEED_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A subscribed connection is silent when nobody publishes; a periodic PING notices a peer
/// that vanished without closing the socket (a half-open TCP connection never ends the stream).
const FEED_HEARTBEAT: Duration = Duration::from_secs(5);

/// How long a revocation waits for every replica to acknowledge it.
const ACK_TIMEOUT: Duration = Duration::from_millis(500);
/// Acks of a revocation nobody waits for any more disappear on their own.
const ACK_KEY_TTL_SECS: i64 = 10;

fn ack_key(nonce: &str) -> String {
    format!("{PREFIX}ack:{nonce}")
}

/// Our nonces are 32 hex digits; anything else on the channel gets no ack key.
fn is_nonce(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl RedisStore {
    /// Publishes the invalidation and waits (at most `ACK_TIMEOUT`) until every replica that
    /// received it has applied it. PUBLISH answers how many subscribers got the message; each
    /// of them pushes an ack onto `xgw:ack:{nonce}` after evicting. So when this returns, the
    /// revoked credential is refused on every replica that is listening — "Expire now" and
    /// token deletion take effect at once, not "soon". A replica that does not ack in time
    /// (hung, or its feed is down, in which case it trusts no cache anyway) is counted in
    /// `xgw_invalidation_ack_timeouts_total`.
    pub(super) async fn publish_invalidation(
        &self,
        invalidation: &Invalidation,
    ) -> StoreResult<()> {
        observed(&self.metrics, "publish", async {
            let nonce = hex::encode(rand::random::<[u8; 16]>());
            let receivers: u64 = self
                .query(
                    redis::cmd("PUBLISH")
                        .arg(CHANNEL)
                        .arg(format!("{nonce} {}", invalidation.encode())),
                )
                .await?;
            let key = ack_key(&nonce);
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            let mut pause = Duration::from_millis(1);
            loop {
                let acks: u64 = self.query(redis::cmd("LLEN").arg(&key)).await?;
                if acks >= receivers {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    self.metrics.invalidation_ack_timeouts.inc();
                    tracing::warn!(
                        receivers,
                        acks,
                        "not every replica acknowledged an invalidation in time"
                    );
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            let _: StoreResult<i64> = self.query(redis::cmd("DEL").arg(&key)).await;
            Ok(())
        })
        .await
    }

    /// Runs the subscriber loop of `Store::watch_invalidations` (see the module doc).
    pub(super) async fn watch_invalidation_feed(
        &self,
        on_event: &(dyn Fn(InvalidationEvent) + Send + Sync),
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut backoff = FEED_BACKOFF_START;
        loop {
            let reason = tokio::select! {
                _ = shutdown_requested(&mut shutdown) => break,
                reason = self.follow_feed(on_event, &mut backoff) => reason,
            };
            // While we are not subscribed, revocations from other replicas are not heard:
            // the caller drops its cache (and keeps dropping it on every failed attempt).
            self.metrics.invalidation_feed_up.set(0);
            on_event(InvalidationEvent::Resync);
            tracing::warn!(
                %reason,
                retry_in_ms = backoff.as_millis() as u64,
                "invalidation feed lost"
            );
            tokio::select! {
                _ = shutdown_requested(&mut shutdown) => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(FEED_BACKOFF_MAX);
        }
        self.metrics.invalidation_feed_up.set(0);
    }

    /// Follows the invalidation channel until the connection fails; returns why it stopped.
    /// Resets `backoff` once subscribed, so only consecutive failures slow the loop down.
    async fn follow_feed(
        &self,
        on_event: &(dyn Fn(InvalidationEvent) + Send + Sync),
        backoff: &mut Duration,
    ) -> String {
        let pubsub = match within(self.client.get_async_pubsub()).await {
            Ok(p) => p,
            Err(e) => return format!("cannot connect: {e}"),
        };
        let (mut sink, mut stream) = pubsub.split();
        if let Err(e) = within(sink.subscribe(CHANNEL)).await {
            return format!("cannot subscribe: {e}");
        }
        self.metrics.invalidation_feed_up.set(1);
        *backoff = FEED_BACKOFF_START;
        tracing::info!(channel = CHANNEL, "invalidation feed subscribed");
        // Anything published while we were not subscribed is lost: drop every cached entry.
        on_event(InvalidationEvent::Resync);

        let mut heartbeat = tokio::time::interval(FEED_HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return "the connection closed".to_string();
                    };
                    let payload: String = match msg.get_payload() {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring an unreadable invalidation");
                            continue;
                        }
                    };
                    // `{nonce} {invalidation}`: apply it, then acknowledge, so the publisher
                    // knows this replica refuses the credential from now on.
                    let (nonce, body) = match payload.split_once(' ') {
                        Some((n, b)) => (Some(n), b),
                        None => (None, payload.as_str()),
                    };
                    match Invalidation::decode(body) {
                        Some(inv) => on_event(InvalidationEvent::Invalidate(inv)),
                        None => {
                            tracing::warn!(%payload, "ignoring an unknown invalidation");
                            continue;
                        }
                    }
                    if let Some(nonce) = nonce.filter(|n| is_nonce(n)) {
                        let key = ack_key(nonce);
                        let acked: StoreResult<i64> =
                            match self.query::<i64>(redis::cmd("RPUSH").arg(&key).arg(1)).await {
                                Ok(_) => {
                                    self.query(redis::cmd("EXPIRE").arg(&key).arg(ACK_KEY_TTL_SECS))
                                        .await
                                }
                                Err(e) => Err(e),
                            };
                        if let Err(e) = acked {
                            tracing::warn!(error = %e, "could not acknowledge an invalidation");
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if let Err(e) = within(sink.ping::<redis::Value>()).await {
                        return format!("heartbeat failed: {e}");
                    }
                }
            }
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone, which means nobody can ask any
/// more). Cancel-safe, so it can be raced in `select!` again and again.
async fn shutdown_requested(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}
