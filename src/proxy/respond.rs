//! Responses the proxy writes itself (401, 302, 403, 413, 503). Each carries `Content-Length`
//! (without it pingora drops keep-alive) and the shared security headers (pingora's
//! `response_filter` does not run for locally written responses).

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

    pub async fn send(self, session: &mut Session) -> Result<()> {
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
        Ok(())
    }
}
