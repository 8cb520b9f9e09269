//! The internal listener (loopback by default): `/metrics` for Prometheus, `/healthz` (the
//! process answers) and `/readyz` (the store answers too; 503 while it does not, back to 200
//! when it returns, no restart needed).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::store::SharedStore;

const READY_TIMEOUT: Duration = Duration::from_secs(1);

pub struct InternalApp {
    pub metrics: Arc<Metrics>,
    pub store: SharedStore,
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let len = resp.body().len();
    let h = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

#[async_trait]
impl ServeHttp for InternalApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/metrics" => respond(200, "text/plain; version=0.0.4", self.metrics.render()),
            "/healthz" => respond(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => match tokio::time::timeout(READY_TIMEOUT, self.store.ping()).await {
                Ok(Ok(())) => respond(200, "application/json", br#"{"status":"ready"}"#.to_vec()),
                _ => respond(
                    503,
                    "application/json",
                    br#"{"status":"store_unavailable"}"#.to_vec(),
                ),
            },
            _ => respond(
                404,
                "application/json",
                br#"{"error":"not_found"}"#.to_vec(),
            ),
        }
    }
}
