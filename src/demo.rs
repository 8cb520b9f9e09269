//! A stand-in for the platform API: answers every request with what it received, as JSON, so
//! a newcomer (and the tests) can see exactly which identity headers the gateway forwarded.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::extract::Request;
use axum::Json;
use serde_json::{json, Value};

async fn echo(req: Request) -> Json<Value> {
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = axum::body::to_bytes(req.into_body(), 1024 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    Json(json!({ "method": method, "uri": uri, "headers": headers, "body": body }))
}

/// Serves the echo upstream on `listener` until the process ends (on its own thread and runtime,
/// so it works beside pingora, which must not run inside a tokio runtime).
pub fn spawn_echo_upstream(listener: std::net::TcpListener) -> std::io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("echo-upstream".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new().fallback(echo);
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "echo upstream stopped");
                }
            });
        })?;
    Ok(addr)
}
