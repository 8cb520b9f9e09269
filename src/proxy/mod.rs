//! The hot path: every request passes `request_filter` (who is this, may they pass?) and then
//! `upstream_request_filter` (strip what the client claimed, add what we vouch for).
//!
//! Routes: `/auth/*` goes to the account app (credential optional: the login page must work
//! without one), configured public paths go to the platform without a credential, everything
//! else needs a valid session cookie or Bearer token. A store that does not answer means 503,
//! never a pass-through.

pub mod client_ip;
pub mod credential;
pub mod resolve;
mod respond;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipnet::IpNet;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::auth::identity::Identity;
use crate::auth::jwt::JwtSigner;
use crate::clock::SharedClock;
use crate::metrics::{status_class, Metrics};
use credential::Credential;
use resolve::Resolver;
use respond::{LocalResponse, MAX_AUTH_BODY_BYTES};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Account,
    Platform,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Account => "account",
            Route::Platform => "platform",
        }
    }
}

/// Per-request state shared between the filters.
pub struct RequestCtx {
    route: Route,
    client_ip: Option<IpAddr>,
    identity: Option<Identity>,
    jwt: Option<Arc<str>>,
    /// Set once an upstream was chosen; our own responses are not upstream responses.
    proxied: bool,
}

pub struct ProxySettings {
    pub cookie_name: String,
    pub public_paths: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub platform_peer: HttpPeer,
    pub account_peer: HttpPeer,
}

pub struct GatewayProxy {
    pub settings: ProxySettings,
    pub resolver: Resolver,
    pub signer: Arc<JwtSigner>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
}

/// Headers a client may never set: they are the gateway's to vouch for.
fn is_identity_header(name: &str) -> bool {
    name.starts_with("x-auth-") || name == "x-user-id"
}

pub fn route_of(path: &str) -> Route {
    if path == "/auth" || path.starts_with("/auth/") {
        Route::Account
    } else {
        Route::Platform
    }
}

fn is_public(path: &str, public_paths: &[String]) -> bool {
    public_paths.iter().any(|p| {
        path == p
            || (path.starts_with(p.as_str())
                && (p.ends_with('/') || path[p.len()..].starts_with('/')))
    })
}

/// A browser navigating (rather than a script calling the API) is sent to the login page.
fn is_browser_navigation(req: &RequestHeader) -> bool {
    (req.method == http::Method::GET || req.method == http::Method::HEAD)
        && req
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

/// What the decision concluded for a request that needs a credential.
enum Refusal {
    /// No credential, or one that is not (or no longer) valid.
    Unauthenticated {
        code: &'static str,
        message: &'static str,
    },
    StoreUnavailable,
}

impl GatewayProxy {
    fn refuse(&self, req: &RequestHeader, refusal: Refusal) -> LocalResponse {
        match refusal {
            Refusal::StoreUnavailable => LocalResponse::json_error(
                503,
                "store_unavailable",
                "The gateway cannot check credentials right now; retry shortly.",
            ),
            Refusal::Unauthenticated { .. } if is_browser_navigation(req) => {
                let next = req
                    .uri
                    .path_and_query()
                    .map(|pq| pq.as_str())
                    .unwrap_or("/");
                LocalResponse::redirect(&format!(
                    "/auth/login?next={}",
                    crate::web::query_escape(next)
                ))
            }
            Refusal::Unauthenticated { code, message } => {
                LocalResponse::json_error(401, code, message)
            }
        }
    }

    /// Resolves the credential to an identity. `Ok(None)`: proceed anonymously if the route
    /// allows it. `Err`: the refusal to send if a credential was required.
    async fn authenticate(
        &self,
        credential: Credential,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Identity>, Refusal> {
        match credential {
            Credential::None => Err(Refusal::Unauthenticated {
                code: "authentication_required",
                message: "Sign in, or send a service token as Authorization: Bearer.",
            }),
            Credential::Malformed => Err(Refusal::Unauthenticated {
                code: "invalid_credentials",
                message: "The credential sent is malformed.",
            }),
            Credential::Bearer { .. } => Err(Refusal::Unauthenticated {
                code: "invalid_token",
                message: "The service token is not valid.",
            }),
            Credential::Session { token_hash } => {
                let now = self.clock.now();
                match self.resolver.session(&token_hash, now).await {
                    Ok(Some(hit)) => {
                        if hit.touch_due {
                            self.touch_later(token_hash.clone(), ctx.client_ip);
                        }
                        let identity = hit.auth.identity.clone();
                        ctx.jwt = match hit.jwt {
                            Some(jwt) => Some(jwt),
                            None => self.mint_jwt(&token_hash, &identity, now),
                        };
                        Ok(Some(identity))
                    }
                    Ok(None) => Err(Refusal::Unauthenticated {
                        code: "invalid_session",
                        message: "The session has ended or expired; sign in again.",
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "store lookup failed; failing closed");
                        Err(Refusal::StoreUnavailable)
                    }
                }
            }
        }
    }

    fn mint_jwt(&self, key: &str, identity: &Identity, now: i64) -> Option<Arc<str>> {
        match self.signer.mint(identity, now) {
            Ok((token, exp)) => {
                let token: Arc<str> = Arc::from(token);
                self.resolver.cache.set_jwt(key, token.clone(), exp);
                Some(token)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot sign upstream JWT");
                None
            }
        }
    }

    /// Records last activity off the request path (at most once a minute per session).
    fn touch_later(&self, token_hash: String, ip: Option<IpAddr>) {
        let store = self.resolver.store.clone();
        let now = self.clock.now();
        let ip = ip.map(|i| i.to_string()).unwrap_or_default();
        tokio::spawn(async move {
            if let Err(e) = store.touch_session(&token_hash, now, &ip).await {
                tracing::debug!(error = %e, "could not record session activity");
            }
        });
    }

    fn count(&self, method: &str, outcome: &str) {
        self.metrics
            .requests
            .with_label_values(&[method, outcome])
            .inc();
    }
}

fn method_label(c: &Credential) -> &'static str {
    match c {
        Credential::None => "none",
        Credential::Session { .. } => "session",
        Credential::Bearer { .. } => "service_token",
        Credential::Malformed => "malformed",
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            route: Route::Platform,
            client_ip: None,
            identity: None,
            jwt: None,
            proxied: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let started = Instant::now();
        let req = session.req_header();
        let path = req.uri.path();
        ctx.route = route_of(path);
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| client_ip::client_ip(a.ip(), &req.headers, &self.settings.trusted_proxies));

        if ctx.route == Route::Account {
            let too_big = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|len| len > MAX_AUTH_BODY_BYTES);
            if too_big {
                self.count("none", "body_too_large");
                LocalResponse::json_error(
                    413,
                    "body_too_large",
                    "Request bodies are limited to 64 KiB.",
                )
                .send(session)
                .await?;
                return Ok(true);
            }
        }

        let credential = credential::extract(&req.headers, &self.settings.cookie_name);
        let method = method_label(&credential);
        let anonymous_ok =
            ctx.route == Route::Account || is_public(path, &self.settings.public_paths);
        let result = self.authenticate(credential, ctx).await;
        self.metrics
            .auth_decision_seconds
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());

        match result {
            Ok(identity) => {
                ctx.identity = identity;
                self.count(method, "allowed");
                Ok(false)
            }
            Err(_) if anonymous_ok => {
                // The login page, the JWKS and public platform paths work without a credential.
                self.count(method, "anonymous");
                Ok(false)
            }
            Err(refusal) => {
                let outcome = match refusal {
                    Refusal::StoreUnavailable => "store_unavailable",
                    Refusal::Unauthenticated { .. } => "unauthenticated",
                };
                self.count(method, outcome);
                self.refuse(session.req_header(), refusal)
                    .send(session)
                    .await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.proxied = true;
        Ok(Box::new(match ctx.route {
            Route::Account => self.settings.account_peer.clone(),
            Route::Platform => self.settings.platform_peer.clone(),
        }))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let claimed: Vec<http::HeaderName> = upstream
            .headers
            .keys()
            .filter(|n| is_identity_header(n.as_str()))
            .cloned()
            .collect();
        for name in claimed {
            upstream.remove_header(&name);
        }

        // Upstreams never see the session secret.
        let cookies: Vec<String> = upstream
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        if !cookies.is_empty() {
            upstream.remove_header(&http::header::COOKIE);
            if let Some(kept) =
                credential::cookie_header_without(&cookies.join("; "), &self.settings.cookie_name)
            {
                upstream.insert_header(http::header::COOKIE, kept)?;
            }
        }
        if ctx.identity.is_some() {
            // The token authenticated the request; the upstream gets the JWT instead.
            upstream.remove_header(&http::header::AUTHORIZATION);
        }

        // X-Forwarded-For: a chain through trusted proxies is extended by the peer; a chain
        // written by an untrusted client is replaced, since nothing in it can be believed.
        let peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(peer) = peer_ip {
            let trusted = self
                .settings
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&peer));
            let prior: Vec<String> = upstream
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect();
            upstream.remove_header("x-forwarded-for");
            let value = if trusted && !prior.is_empty() {
                format!("{}, {peer}", prior.join(", "))
            } else {
                peer.to_string()
            };
            upstream.insert_header("x-forwarded-for", value)?;
        }
        if let Some(ip) = ctx.client_ip {
            upstream.insert_header("x-auth-client-ip", ip.to_string())?;
        }

        if let Some(id) = &ctx.identity {
            upstream.insert_header("x-auth-method", id.method.as_str())?;
            upstream.insert_header("x-auth-user-id", &*id.user_id)?;
            upstream.insert_header("x-auth-user-email", &*id.email)?;
            upstream.insert_header("x-auth-org-id", &*id.org_id)?;
            upstream.insert_header("x-auth-session-id", &*id.credential_id)?;
            if let Some(jwt) = &ctx.jwt {
                upstream.insert_header("x-auth-jwt", &**jwt)?;
            }
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // Only proxied responses count as upstream responses; our own were counted already.
        if ctx.proxied {
            let class = match (e, session.response_written()) {
                (None, Some(resp)) => status_class(resp.status.as_u16()),
                _ => "error",
            };
            self.metrics
                .upstream_responses
                .with_label_values(&[ctx.route.label(), class])
                .inc();
        }
    }
}

/// Connect and read timeouts for both upstreams.
pub fn with_timeouts(mut peer: HttpPeer) -> HttpPeer {
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    peer.options.total_connection_timeout = Some(Duration::from_secs(10));
    peer.options.read_timeout = Some(Duration::from_secs(60));
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_public_paths() {
        assert_eq!(route_of("/auth/login"), Route::Account);
        assert_eq!(route_of("/auth"), Route::Account);
        assert_eq!(route_of("/authx"), Route::Platform);
        let public = vec!["/status".to_string(), "/docs/".to_string()];
        assert!(is_public("/status", &public));
        assert!(is_public("/status/x", &public));
        assert!(!is_public("/statusx", &public));
        assert!(is_public("/docs/a", &public));
        assert!(!is_public("/api", &public));
    }

    #[test]
    fn identity_headers_are_recognized() {
        assert!(is_identity_header("x-auth-user-id"));
        assert!(is_identity_header("x-user-id"));
        assert!(!is_identity_header("x-request-id"));
    }
}
