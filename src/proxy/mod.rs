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
use http::HeaderValue;
use ipnet::IpNet;
use pingora::http::RequestHeader;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::auth::identity::{AuthMethod, Identity};
use crate::auth::jwt::JwtSigner;
use crate::auth::secret::SecretHash;
use crate::auth::token::{self, UseRefusal};
use crate::clock::SharedClock;
use crate::metrics::{status_class, Metrics};
use crate::store::cache::CachedAuth;
use crate::web::body_limit_message;
use credential::Credential;
use resolve::Resolver;
use respond::LocalResponse;

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
    /// The caller, as cached (identity and its prepared upstream header values).
    auth: Option<Arc<CachedAuth>>,
    jwt: Option<HeaderValue>,
    /// Set once an upstream was chosen; our own responses are not upstream responses.
    proxied: bool,
    /// The request carried `Authorization: Bearer`; the upstream never sees the token.
    bearer: bool,
}

pub struct ProxySettings {
    pub cookie_name: String,
    pub public_paths: Vec<String>,
    pub trusted_proxies: Vec<IpNet>,
    pub platform_peer: HttpPeer,
    pub account_peer: HttpPeer,
    /// `upstream.identity_headers`: whether the platform gets the `X-Auth-*` identity headers
    /// beside `X-Auth-Jwt` (the account app always gets them).
    pub platform_identity_headers: bool,
}

pub struct GatewayProxy {
    pub settings: ProxySettings,
    pub resolver: Resolver,
    pub signer: Arc<JwtSigner>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
}

const X_USER_ID: http::HeaderName = http::HeaderName::from_static("x-user-id");
const X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

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

/// A path an upstream might normalize into a different one (`/public/../api`, `%2e%2e`,
/// backslashes, `//`). Such a path never counts as public: the prefix match would be about a
/// path the upstream does not serve.
fn is_ambiguous_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.contains('\\')
        || path.contains("//")
        || lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.split('/').any(|seg| seg == "." || seg == "..")
}

fn is_public(path: &str, public_paths: &[String]) -> bool {
    // The prefix match first: with no public paths (the default) every request skips the
    // ambiguity check, which copies the path to lowercase it (an allocation per request).
    public_paths.iter().any(|p| {
        path == p
            || (path.starts_with(p.as_str())
                && (p.ends_with('/') || path[p.len()..].starts_with('/')))
    }) && !is_ambiguous_path(path)
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

/// Why a request that needs a credential is refused.
enum Refusal {
    /// No credential, or one that is not (or no longer) valid: a browser is sent to login.
    Unauthenticated {
        code: &'static str,
        message: &'static str,
    },
    /// A service token problem: always a JSON answer, never a redirect (scripts send tokens).
    Token {
        status: u16,
        code: &'static str,
        message: &'static str,
    },
    StoreUnavailable,
}

impl Refusal {
    const INVALID_TOKEN: Refusal = Refusal::Token {
        status: 401,
        code: "invalid_token",
        message: "The service token is not valid.",
    };

    fn outcome(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated { .. } => "unauthenticated",
            Refusal::Token { code, .. } => code,
            Refusal::StoreUnavailable => "store_unavailable",
        }
    }
}

impl From<UseRefusal> for Refusal {
    fn from(r: UseRefusal) -> Self {
        match r {
            UseRefusal::IpNotAllowed => Refusal::Token {
                status: 403,
                code: "ip_not_allowed",
                message: "This service token may not be used from this IP address.",
            },
            UseRefusal::ClientIdMismatch => Refusal::Token {
                status: 403,
                code: "client_id_mismatch",
                message: "Send the token's client id in X-User-Id.",
            },
        }
    }
}

/// The `X-User-Id` header: `None` if absent; a repeated or non-text header becomes a value
/// that matches no client id.
fn x_user_id(req: &RequestHeader) -> Option<String> {
    let mut values = req.headers.get_all(X_USER_ID).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(String::new());
    }
    Some(first.to_str().unwrap_or("").to_string())
}

impl GatewayProxy {
    fn refuse(&self, req: &RequestHeader, refusal: Refusal) -> LocalResponse {
        match refusal {
            Refusal::StoreUnavailable => LocalResponse::json_error(
                503,
                "store_unavailable",
                "The gateway cannot check credentials right now; retry shortly.",
            ),
            Refusal::Token {
                status,
                code,
                message,
            } => LocalResponse::json_error(status, code, message),
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

    /// Resolves the credential to an identity. `Err`: the refusal to send if the route needs a
    /// credential (routes that do not need one proceed anonymously instead).
    async fn authenticate(
        &self,
        credential: Credential,
        x_user_id: Option<String>,
        ctx: &mut RequestCtx,
    ) -> Result<Arc<CachedAuth>, Refusal> {
        let now = self.clock.now();
        let (hash, hit) = match credential {
            Credential::None => {
                return Err(Refusal::Unauthenticated {
                    code: "authentication_required",
                    message: "Sign in, or send a service token as Authorization: Bearer.",
                })
            }
            Credential::Malformed => {
                return Err(Refusal::Unauthenticated {
                    code: "invalid_credentials",
                    message: "The credential sent is malformed.",
                })
            }
            // Typos and garbage never reach the store.
            Credential::BadBearer => return Err(Refusal::INVALID_TOKEN),
            Credential::Bearer { token_hash } => {
                match self.resolver.token(&token_hash, now).await {
                    Ok(Some(hit)) => (token_hash, hit),
                    Ok(None) => return Err(Refusal::INVALID_TOKEN),
                    Err(e) => return Err(store_failed(e)),
                }
            }
            Credential::Session { token_hash } => {
                match self.resolver.session(&token_hash, now).await {
                    Ok(Some(hit)) => (token_hash, hit),
                    Ok(None) => {
                        return Err(Refusal::Unauthenticated {
                            code: "invalid_session",
                            message: "The session has ended or expired; sign in again.",
                        })
                    }
                    Err(e) => return Err(store_failed(e)),
                }
            }
        };
        if let Some(rules) = &hit.auth.token_rules {
            token::check_use(
                rules.binding,
                &rules.client_id,
                ctx.client_ip,
                x_user_id.as_deref(),
            )?;
        }
        let auth = hit.auth;
        if hit.touch_due {
            self.touch_later(auth.identity.method, hash, ctx.client_ip);
        }
        ctx.jwt = match hit.jwt {
            Some(jwt) => Some(jwt),
            None => self.mint_jwt(&hash, &auth.identity, now),
        };
        Ok(auth)
    }

    fn mint_jwt(&self, key: &SecretHash, identity: &Identity, now: i64) -> Option<HeaderValue> {
        let minted = self.signer.mint(identity, now).map_err(|e| e.to_string());
        match minted.and_then(|(token, exp)| {
            // Base64url and dots: always a valid header value.
            let value = HeaderValue::from_str(&token).map_err(|e| e.to_string())?;
            Ok((value, exp))
        }) {
            Ok((token, exp)) => {
                self.resolver.cache.set_jwt(key, token.clone(), exp);
                Some(token)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot sign upstream JWT");
                None
            }
        }
    }

    /// Records last activity / last use off the request path (at most once a minute per
    /// credential).
    fn touch_later(&self, method: AuthMethod, hash: SecretHash, ip: Option<IpAddr>) {
        let store = self.resolver.store.clone();
        let now = self.clock.now();
        let ip = ip.map(|i| i.to_string()).unwrap_or_default();
        let hash = hash.hex();
        tokio::spawn(async move {
            let result = match method {
                AuthMethod::Session => store.touch_session(&hash, now, &ip).await,
                AuthMethod::ServiceToken => store.touch_token(&hash, now, &ip).await,
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "could not record credential activity");
            }
        });
    }

    fn count(&self, method: &str, outcome: &str) {
        self.metrics.count_request(method, outcome);
    }
}

fn store_failed(e: crate::store::StoreError) -> Refusal {
    tracing::warn!(error = %e, "store lookup failed; failing closed");
    Refusal::StoreUnavailable
}

fn method_label(c: &Credential) -> &'static str {
    match c {
        Credential::None => "none",
        Credential::Session { .. } => "session",
        Credential::Bearer { .. } | Credential::BadBearer => "service_token",
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
            auth: None,
            jwt: None,
            proxied: false,
            bearer: false,
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
            // The same per-route table the account app enforces (a chunked body is stopped
            // there; a declared length is refused here, before anything is forwarded).
            let limit = crate::web::auth_body_limit(path);
            let too_big = req
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|len| len > limit as u64);
            if too_big {
                self.count("none", "body_too_large");
                LocalResponse::json_error(413, "body_too_large", &body_limit_message(limit))
                    .send_discarding(session, limit.saturating_mul(2))
                    .await?;
                return Ok(true);
            }
        }

        let credential = credential::extract(&req.headers, &self.settings.cookie_name);
        let method = method_label(&credential);
        ctx.bearer = matches!(
            credential,
            Credential::Bearer { .. } | Credential::BadBearer
        );
        let anonymous_ok =
            ctx.route == Route::Account || is_public(path, &self.settings.public_paths);
        let x_user_id = x_user_id(req);
        let result = self.authenticate(credential, x_user_id, ctx).await;
        self.metrics
            .observe_auth_decision(method, started.elapsed().as_secs_f64());

        match result {
            Ok(auth) => {
                ctx.auth = Some(auth);
                self.count(method, "allowed");
                Ok(false)
            }
            Err(_) if anonymous_ok => {
                // The login page, the JWKS and public platform paths work without a credential.
                self.count(method, "anonymous");
                Ok(false)
            }
            Err(refusal) => {
                self.count(method, refusal.outcome());
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
        if let Some(kept) = cookies_without_ours(&upstream.headers, &self.settings.cookie_name) {
            upstream.remove_header(&http::header::COOKIE);
            if let Some(kept) = kept {
                upstream.insert_header(http::header::COOKIE, kept)?;
            }
        }
        if ctx.bearer {
            // Service tokens stay between client and gateway; the upstream gets the JWT.
            upstream.remove_header(&http::header::AUTHORIZATION);
        }

        // X-Forwarded-For: a chain through trusted proxies is extended by the peer; a chain
        // written by an untrusted client is replaced, since nothing in it can be believed.
        let peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // The peer's address is formatted once, on the stack: it is usually both headers below.
        let mut peer_text = IpText::new();
        if let Some(peer) = peer_ip {
            let trusted = self
                .settings
                .trusted_proxies
                .iter()
                .any(|n| n.contains(&peer));
            let prior: Vec<&str> = if trusted {
                upstream
                    .headers
                    .get_all(X_FORWARDED_FOR)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect()
            } else {
                Vec::new()
            };
            let extended = (!prior.is_empty()).then(|| format!("{}, {peer}", prior.join(", ")));
            // An insert replaces every value the client sent under that name.
            match extended {
                Some(chain) => upstream.insert_header("x-forwarded-for", chain)?,
                None => upstream.insert_header("x-forwarded-for", peer_text.format(peer))?,
            }
        }
        if let Some(ip) = ctx.client_ip {
            let text = if Some(ip) == peer_ip && !peer_text.is_empty() {
                peer_text.as_bytes()
            } else {
                peer_text.format(ip)
            };
            upstream.insert_header("x-auth-client-ip", text)?;
        }

        if let Some(auth) = &ctx.auth {
            let id = &auth.identity;
            let credential_header = match id.method {
                AuthMethod::Session => "x-auth-session-id",
                AuthMethod::ServiceToken => "x-auth-token-id",
            };
            // The JWT carries the same identity; an operator may spare the platform (and this
            // hot path: five header inserts) the plain copies. The account app reads them.
            let plain_headers =
                ctx.route == Route::Account || self.settings.platform_identity_headers;
            // Prepared once per cached credential: a clone is a reference count, not a copy.
            match &auth.headers {
                _ if !plain_headers => {}
                Some(h) => {
                    upstream.insert_header("x-auth-method", h.method.clone())?;
                    upstream.insert_header("x-auth-user-id", h.user_id.clone())?;
                    upstream.insert_header("x-auth-user-email", h.email.clone())?;
                    upstream.insert_header("x-auth-org-id", h.org_id.clone())?;
                    upstream.insert_header(credential_header, h.credential_id.clone())?;
                }
                None => {
                    upstream.insert_header("x-auth-method", id.method.as_str())?;
                    upstream.insert_header("x-auth-user-id", &*id.user_id)?;
                    upstream.insert_header("x-auth-user-email", &*id.email)?;
                    upstream.insert_header("x-auth-org-id", &*id.org_id)?;
                    upstream.insert_header(credential_header, &*id.credential_id)?;
                }
            }
            if let Some(jwt) = ctx.jwt.take() {
                upstream.insert_header("x-auth-jwt", jwt)?;
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
                .count_upstream_response(ctx.route.label(), class);
        }
    }
}

/// The `Cookie` header(s) without the gateway's cookie: `None` when there is nothing to change
/// (no cookie header that is text), `Some(None)` when nothing is left. One header (the usual
/// case) is filtered without collecting; several are joined first, as a client may send them.
fn cookies_without_ours(headers: &http::HeaderMap, cookie_name: &str) -> Option<Option<String>> {
    let mut values = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    Some(match values.next() {
        None => credential::cookie_header_without(first, cookie_name),
        Some(second) => {
            let all: Vec<&str> = [first, second].into_iter().chain(values).collect();
            credential::cookie_header_without(&all.join("; "), cookie_name)
        }
    })
}

/// An IP address as text in a stack buffer (the longest, an IPv4-mapped IPv6 address, is 45
/// bytes): the hot path formats the client address once per request without a `String`.
struct IpText {
    buf: [u8; 64],
    len: usize,
}

impl IpText {
    fn new() -> Self {
        IpText {
            buf: [0; 64],
            len: 0,
        }
    }

    fn format(&mut self, ip: IpAddr) -> &[u8] {
        match ip {
            // By hand: `write!` through `fmt` costs ~1,000 instructions per request here, this
            // ~60 (load benchmark, callgrind). The test checks it against `Display`.
            IpAddr::V4(v4) => {
                self.len = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b'.');
                    }
                    if octet >= 100 {
                        self.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        self.push(b'0' + octet / 10 % 10);
                    }
                    self.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(_) => {
                use std::io::Write;
                let mut rest = &mut self.buf[..];
                // Cannot fail: 64 bytes hold any address.
                let _ = write!(rest, "{ip}");
                self.len = 64 - rest.len();
            }
        }
        self.as_bytes()
    }

    /// At most 15 bytes for an IPv4 address: always within the buffer.
    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn is_empty(&self) -> bool {
        self.len == 0
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
        for sneaky in [
            "/status/../api",
            "/status/%2e%2e/api",
            "/status/%2E%2E%2Fapi",
            "/status/..",
            "/status//api",
            "/status/.\\api",
            "/docs/./x",
        ] {
            assert!(!is_public(sneaky, &public), "{sneaky}");
        }
    }

    #[test]
    fn client_addresses_are_formatted_as_display_does() {
        let mut text = IpText::new();
        for a in [0u8, 1, 9, 10, 99, 100, 199, 200, 255] {
            for b in [0u8, 7, 10, 42, 100, 255] {
                let ip = IpAddr::from([a, b, 255 - a, 100 - b % 100]);
                assert_eq!(text.format(ip), ip.to_string().as_bytes(), "{ip}");
            }
        }
        for ip in [
            "::1",
            "2001:db8::17",
            "::ffff:198.51.100.7",
            "fe80::1:2:3:4",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(text.format(ip), ip.to_string().as_bytes(), "{ip}");
        }
    }

    #[test]
    fn identity_headers_are_recognized() {
        assert!(is_identity_header("x-auth-user-id"));
        assert!(is_identity_header("x-user-id"));
        assert!(!is_identity_header("x-request-id"));
    }
}
