//! Every metric the gateway exports, registered once per gateway instance in its own registry
//! (so two gateways in one test process never mix numbers). Prefix `xgw_`; every label takes
//! values from a fixed, small set so a hostile client cannot blow up the series count.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Proxied requests by `method` (session, service_token, none) and `outcome`.
    requests: IntCounterVec,
    /// Time spent deciding who the caller is, cache hits included.
    auth_decision_seconds: HistogramVec,
    /// Upstream responses by `upstream` (platform, account) and `class` (2xx..5xx, error).
    upstream_responses: IntCounterVec,
    /// Login attempts by `result`.
    pub logins: IntCounterVec,
    /// Sessions currently valid, as counted by the sweeper.
    pub active_sessions: IntGauge,
    /// Store operations by `op`.
    pub store_seconds: HistogramVec,
    /// Failed store operations by `op` (the backend did not answer).
    pub store_errors: IntCounterVec,
    /// Invalidations heard from other replicas.
    pub invalidations_received: IntCounter,
    /// Two-factor events by `event` (enrolled, disabled, reset, challenge_issued, failed_code,
    /// backup_code_used, sms_sent, sms_failed, sms_rate_limited).
    pub two_factor_events: IntCounterVec,
    /// Revocations that not every replica acknowledged within the wait.
    pub invalidation_ack_timeouts: IntCounter,
    /// 1 while the invalidation feed is connected (always 1 on the embedded store).
    pub invalidation_feed_up: IntGauge,
    /// Sessions deleted by the sweeper after their retention.
    pub sessions_purged: IntCounter,
    /// Audit log entries written, by `type` (the `AuditEvent` names).
    pub audit_events: IntCounterVec,
    /// Audit log entries deleted by the sweeper after `audit.retention_days`.
    pub audit_purged: IntCounter,
    /// Quick Login flows started, by `provider` and `purpose` (sign_in, connect).
    pub oauth_starts: IntCounterVec,
    /// Quick Login callbacks by `provider` and `outcome` (signed_in, second_factor_required,
    /// connected, and each error code: oauth_denied, oauth_not_linked, ...).
    pub oauth_callbacks: IntCounterVec,
    /// Calls to a provider (discovery, jwks, token, user, user_emails) by `provider`, `call`
    /// and `result` (ok, error, unreachable), to tell a provider outage from user errors.
    pub oauth_provider_calls: IntCounterVec,
    hot: HotPath,
}

/// The label sets (almost) every proxied request touches, resolved once. `with_label_values`
/// hashes its labels and takes a lock on every call; a resolved child is an atomic add (load
/// benchmark, callgrind: ~800 instructions per request less). Other label sets go through the
/// vectors as before.
struct HotPath {
    session_allowed: IntCounter,
    token_allowed: IntCounter,
    session_decision: Histogram,
    token_decision: Histogram,
    /// `xgw_cache_lookups_total{result}`: its only two series, so the vector itself is not kept.
    cache_hit: IntCounter,
    cache_miss: IntCounter,
    platform_2xx: IntCounter,
}

impl HotPath {
    fn of(
        requests: &IntCounterVec,
        decisions: &HistogramVec,
        lookups: &IntCounterVec,
        responses: &IntCounterVec,
    ) -> HotPath {
        HotPath {
            session_allowed: requests.with_label_values(&["session", "allowed"]),
            token_allowed: requests.with_label_values(&["service_token", "allowed"]),
            session_decision: decisions.with_label_values(&["session"]),
            token_decision: decisions.with_label_values(&["service_token"]),
            cache_hit: lookups.with_label_values(&["hit"]),
            cache_miss: lookups.with_label_values(&["miss"]),
            platform_2xx: responses.with_label_values(&["platform", "2xx"]),
        }
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, Box::new(c.clone()), name);
    c
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    register(registry, Box::new(h.clone()), name);
    h
}

fn register(registry: &Registry, c: Box<dyn prometheus::core::Collector>, name: &str) {
    if let Err(e) = registry.register(c) {
        unreachable_metric(name, e)
    }
}

/// Metric definitions are static; a failure here is a programming error caught by every test.
#[allow(clippy::panic)]
fn unreachable_metric(name: &str, e: prometheus::Error) -> ! {
    panic!("metric {name} is misdefined: {e}")
}

/// Buckets from 10 µs to 2.5 s: cache hits sit at the bottom, store misses in the middle.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e));
            register(&r, Box::new(g.clone()), name);
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e));
            register(&r, Box::new(c.clone()), name);
            c
        };
        let requests = counter_vec(
            &r,
            "xgw_requests_total",
            "Proxied requests by credential method and auth outcome",
            &["method", "outcome"],
        );
        let auth_decision_seconds = histogram_vec(
            &r,
            "xgw_auth_decision_seconds",
            "Time to decide who the caller is",
            &["method"],
            latency_buckets(),
        );
        let upstream_responses = counter_vec(
            &r,
            "xgw_upstream_responses_total",
            "Upstream responses by upstream and status class",
            &["upstream", "class"],
        );
        let cache_lookups = counter_vec(
            &r,
            "xgw_cache_lookups_total",
            "Credential cache lookups by result",
            &["result"],
        );
        let hot = HotPath::of(
            &requests,
            &auth_decision_seconds,
            &cache_lookups,
            &upstream_responses,
        );
        Metrics {
            hot,
            requests,
            auth_decision_seconds,
            upstream_responses,
            logins: counter_vec(
                &r,
                "xgw_logins_total",
                "Login attempts by result",
                &["result"],
            ),
            active_sessions: gauge("xgw_active_sessions", "Sessions currently valid"),
            store_seconds: histogram_vec(
                &r,
                "xgw_store_operation_seconds",
                "Store operation latency by operation",
                &["op"],
                latency_buckets(),
            ),
            store_errors: counter_vec(
                &r,
                "xgw_store_errors_total",
                "Store operations that failed because the backend did not answer",
                &["op"],
            ),
            invalidations_received: counter(
                "xgw_invalidations_received_total",
                "Invalidations received from the store's feed",
            ),
            two_factor_events: counter_vec(
                &r,
                "xgw_2fa_events_total",
                "Two-factor authentication events",
                &["event"],
            ),
            invalidation_ack_timeouts: counter(
                "xgw_invalidation_ack_timeouts_total",
                "Revocations not acknowledged by every replica within the wait",
            ),
            invalidation_feed_up: gauge(
                "xgw_invalidation_feed_up",
                "1 while the invalidation feed is connected",
            ),
            sessions_purged: counter(
                "xgw_sessions_purged_total",
                "Sessions deleted after their retention",
            ),
            audit_events: counter_vec(
                &r,
                "xgw_audit_events_total",
                "Audit log entries written, by event type",
                &["type"],
            ),
            audit_purged: counter(
                "xgw_audit_purged_total",
                "Audit log entries deleted after their retention",
            ),
            oauth_starts: counter_vec(
                &r,
                "xgw_oauth_starts_total",
                "Quick Login flows started, by provider and purpose",
                &["provider", "purpose"],
            ),
            oauth_callbacks: counter_vec(
                &r,
                "xgw_oauth_callbacks_total",
                "Quick Login callbacks, by provider and outcome",
                &["provider", "outcome"],
            ),
            oauth_provider_calls: counter_vec(
                &r,
                "xgw_oauth_provider_calls_total",
                "HTTP calls to Quick Login providers, by provider, call and result",
                &["provider", "call", "result"],
            ),
            registry: r,
        }
    }

    /// `xgw_requests_total{method, outcome}`.
    pub fn count_request(&self, method: &str, outcome: &str) {
        match (method, outcome) {
            ("session", "allowed") => self.hot.session_allowed.inc(),
            ("service_token", "allowed") => self.hot.token_allowed.inc(),
            _ => self.requests.with_label_values(&[method, outcome]).inc(),
        }
    }

    /// `xgw_auth_decision_seconds{method}`.
    pub fn observe_auth_decision(&self, method: &str, seconds: f64) {
        match method {
            "session" => self.hot.session_decision.observe(seconds),
            "service_token" => self.hot.token_decision.observe(seconds),
            _ => self
                .auth_decision_seconds
                .with_label_values(&[method])
                .observe(seconds),
        }
    }

    /// `xgw_cache_lookups_total{result}`.
    pub fn count_cache_lookup(&self, hit: bool) {
        if hit {
            self.hot.cache_hit.inc()
        } else {
            self.hot.cache_miss.inc()
        }
    }

    /// `xgw_upstream_responses_total{upstream, class}`.
    pub fn count_upstream_response(&self, upstream: &str, class: &str) {
        match (upstream, class) {
            ("platform", "2xx") => self.hot.platform_2xx.inc(),
            _ => self
                .upstream_responses
                .with_label_values(&[upstream, class])
                .inc(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `2xx`, `3xx`, ... for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}
