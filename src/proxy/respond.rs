//! Responses the proxy writes itself (401, 302, 403, 413, 503). Each carries `Content-Length`
//! (without it pingora drops keep-alive) and the shared security headers (pingora's
//! `response_filter` does not run for locally written responses).
//!
//! They are written before the request body was read. Closing a socket with unread data makes
//! the kernel reset it, and a client still uploading then sees "connection reset" instead of
//! our answer; so after answering, the rest of the body is read and dropped, within bounds
//! (nginx calls this lingering close). A request without a body costs nothing extra.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::web::{json_error, CSP_NONE, SECURITY_HEADERS};

pub struct LocalResponse {
    status: u16,
    location: Option<String>,
    body: Bytes,
}

impl LocalResponse {
    pub fn json_error(status: u16, code: &str, message: &str) -> Self {
        Self {
            status,
            location: None,
            body: Bytes::from(json_error(code, message)),
        }
    }

    pub fn redirect(location: &str) -> Self {
        Self {
            status: 302,
            location: Some(location.to_string()),
            body: Bytes::new(),
        }
    }

    /// Writes the response, then drops up to `DISCARD_BYTES` of request body (2 s at most).
    pub async fn send(self, session: &mut Session) -> Result<()> {
        self.send_discarding(session, DISCARD_BYTES).await
    }

    /// `send` with another bound on the body to drop (a 413 drops up to twice the route's limit).
    pub async fn send_discarding(self, session: &mut Session, budget: usize) -> Result<()> {
        let mut resp = ResponseHeader::build(self.status, Some(8))?;
        for (name, value) in SECURITY_HEADERS {
            resp.insert_header(*name, *value)?;
        }
        resp.insert_header("content-security-policy", CSP_NONE)?;
        resp.insert_header("content-length", self.body.len().to_string())?;
        if let Some(location) = &self.location {
            resp.insert_header("location", location.as_str())?;
        } else {
            resp.insert_header("content-type", "application/json")?;
        }
        if self.status == 401 {
            resp.insert_header("www-authenticate", "Bearer realm=\"xelon\"")?;
        }
        let empty = self.body.is_empty();
        session.write_response_header(Box::new(resp), empty).await?;
        if !empty {
            session.write_response_body(Some(self.body), true).await?;
        }
        discard_body(session, budget).await;
        Ok(())
    }
}

/// Request body dropped after a local response, unless the route says more.
pub const DISCARD_BYTES: usize = 8 * 1024 * 1024;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads and drops what the client is still sending, up to `budget` bytes or `DISCARD_TIME`,
/// so the connection closes cleanly (see the module docs). The bounds keep a huge or stalled
/// upload from holding the task.
async fn discard_body(session: &mut Session, budget: usize) {
    let drain = async {
        let mut read = 0usize;
        while read < budget {
            match session.read_request_body().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}
