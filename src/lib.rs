//! xelon-gateway: a reverse-proxy authentication gateway for the Xelon HQ platform API.
//!
//! `build` assembles the whole gateway — proxy, account app, internal listener, background
//! services — into one pingora `Server`. `main` and the integration tests both go through it,
//! so what the tests exercise is what runs.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod account;
pub mod admin;
pub mod auth;
pub mod background;
pub mod clock;
pub mod config;
pub mod demo;
pub mod internal;
pub mod metrics;
pub mod oauth;
pub mod proxy;
pub mod sms;
pub mod store;
pub mod web;

use std::net::ToSocketAddrs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pingora::upstreams::peer::HttpPeer;

use crate::account::{AccountService, AppState};
use crate::auth::jwt::JwtSigner;
use crate::auth::password::Passwords;
use crate::auth::seal::Sealer;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::resolve::Resolver;
use crate::proxy::{GatewayProxy, ProxySettings};
use crate::store::cache::AuthCache;
use crate::store::SharedStore;

/// Most credentials one replica caches; past it the cache starts over.
const CACHE_MAX_ENTRIES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Jwt(#[from] auth::jwt::JwtError),
    #[error(transparent)]
    Password(#[from] auth::password::PasswordError),
    #[error("upstream.url: {0}")]
    Upstream(String),
    #[error("cannot prepare the account app socket in {path}: {reason}")]
    Socket { path: String, reason: String },
    #[error(transparent)]
    Seal(#[from] auth::seal::SealError),
    #[error("[sms]: {0}")]
    Sms(#[from] sms::SmsError),
    #[error("[oauth]: {0}")]
    OAuth(String),
}

/// The parts of a built gateway that tests and admin tooling reach into.
#[derive(Clone)]
pub struct Handles {
    pub store: SharedStore,
    pub cache: Arc<AuthCache>,
    pub metrics: Arc<Metrics>,
    pub signer: Arc<JwtSigner>,
    pub clock: SharedClock,
    pub account_socket: PathBuf,
}

pub struct Gateway {
    pub server: Server,
    pub handles: Handles,
}

/// Opens the configured store, with a fresh metrics registry.
pub fn open_store(config: &Config, metrics: Arc<Metrics>) -> Result<SharedStore, BuildError> {
    Ok(store::open(&config.store.url, metrics)?)
}

/// The key sealing TOTP seeds: configured file, else one kept beside an embedded store. On
/// Redis without a configured key there is none (replicas must share it): TOTP enrolment then
/// answers 503 and says why in the log, SMS 2FA still works.
fn sealer(config: &Config) -> Result<Option<Arc<Sealer>>, BuildError> {
    if let Some(path) = &config.secrets.key_file {
        return Ok(Some(Arc::new(Sealer::load(path, false)?)));
    }
    if let Some(db) = config.store.url.strip_prefix("embedded:") {
        let dir = Path::new(db).parent().unwrap_or(Path::new("."));
        let path = dir.join("secrets.key");
        if !path.exists() {
            tracing::warn!(path = %path.display(), "generating a secrets key for TOTP seeds; back it up with the store");
        }
        return Ok(Some(Arc::new(Sealer::load(&path, true)?)));
    }
    tracing::error!(
        "secrets.key_file is not set: TOTP enrolment is unavailable on this Redis-backed gateway"
    );
    Ok(None)
}

/// The JWT key: configured file, else one kept beside an embedded store, else per process.
fn jwt_signer(config: &Config) -> Result<JwtSigner, BuildError> {
    let jwt = &config.jwt;
    if let Some(path) = &jwt.private_key_file {
        return Ok(JwtSigner::load(
            path,
            false,
            &jwt.issuer,
            jwt.lifetime_seconds,
        )?);
    }
    if let Some(db) = config.store.url.strip_prefix("embedded:") {
        let dir = Path::new(db).parent().unwrap_or(Path::new("."));
        let path = dir.join("jwt-ed25519.pk8");
        return Ok(JwtSigner::load(
            &path,
            true,
            &jwt.issuer,
            jwt.lifetime_seconds,
        )?);
    }
    tracing::warn!(
        "jwt.private_key_file is not set: this replica signs with a key of its own, so upstream \
         JWT verification only works against this replica's JWKS. Set it for several replicas."
    );
    Ok(JwtSigner::ephemeral(&jwt.issuer, jwt.lifetime_seconds)?)
}

/// A private directory (0700) for the account app's socket.
fn private_runtime_dir() -> Result<PathBuf, BuildError> {
    let dir = std::env::temp_dir().join(format!(
        "xgw-{}-{}",
        std::process::id(),
        auth::secret::new_id("rt")
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)
        .map_err(|e| BuildError::Socket {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(dir)
}

/// The platform upstream as the proxy reaches it (also used by the bench-only bare proxy, so the
/// two compare like for like).
pub fn platform_peer(config: &Config) -> Result<HttpPeer, BuildError> {
    let up = config.upstream().map_err(BuildError::Upstream)?;
    // Resolve once at start: no DNS lookup per request.
    let addr = (up.host.as_str(), up.port)
        .to_socket_addrs()
        .map_err(|e| BuildError::Upstream(format!("cannot resolve {}: {e}", up.host)))?
        .next()
        .ok_or_else(|| BuildError::Upstream(format!("{} resolves to nothing", up.host)))?;
    Ok(proxy::with_timeouts(HttpPeer::new(addr, up.tls, up.host)))
}

/// The pingora server settings (also used by the bench-only bare proxy, so the two compare like
/// for like).
pub fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout_seconds),
        ..ServerConf::default()
    }
}

/// Builds the gateway: every service on one pingora server, nothing started yet.
pub fn build(config: &Config, clock: SharedClock) -> Result<Gateway, BuildError> {
    let metrics = Arc::new(Metrics::new());
    let store = open_store(config, metrics.clone())?;
    build_with_store(config, clock, store, metrics)
}

pub fn build_with_store(
    config: &Config,
    clock: SharedClock,
    store: SharedStore,
    metrics: Arc<Metrics>,
) -> Result<Gateway, BuildError> {
    let signer = Arc::new(jwt_signer(config)?);
    let cache = Arc::new(AuthCache::new(
        config.session.cache_ttl_seconds as i64,
        CACHE_MAX_ENTRIES,
    ));
    let passwords = Arc::new(Passwords::new(
        config.login.argon2_memory_kib,
        config.login.argon2_iterations,
        config.login.argon2_parallelism,
    )?);
    let account_socket = private_runtime_dir()?.join("account.sock");
    let account_peer = HttpPeer::new_uds(
        account_socket.to_str().unwrap_or_default(),
        false,
        String::new(),
    )
    .map_err(|e| BuildError::Socket {
        path: account_socket.display().to_string(),
        reason: e.to_string(),
    })?;

    let mut server = Server::new_with_opt_and_conf(None, server_conf(config));
    server.bootstrap();

    let gateway = GatewayProxy {
        settings: ProxySettings {
            cookie_name: config.session.cookie_name.clone(),
            public_paths: config.upstream.public_paths.clone(),
            platform_identity_headers: config.upstream.identity_headers,
            trusted_proxies: config.trusted_proxies(),
            platform_peer: platform_peer(config)?,
            account_peer: proxy::with_timeouts(account_peer),
        },
        resolver: Resolver {
            store: store.clone(),
            cache: cache.clone(),
            metrics: metrics.clone(),
        },
        signer: signer.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
    };
    let mut proxy_service =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "xgw proxy");
    proxy_service.add_tcp(&config.server.listen);
    server.add_service(proxy_service);

    let mut internal = Service::new(
        "xgw internal".to_string(),
        HttpServer::new_app(internal::InternalApp {
            metrics: metrics.clone(),
            store: store.clone(),
        }),
    );
    internal.add_tcp(&config.server.internal_listen);
    server.add_service(internal);

    let state = AppState {
        store: store.clone(),
        cache: cache.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        passwords,
        signer: signer.clone(),
        login: config.login.clone(),
        cookie_name: config.session.cookie_name.clone(),
        cookie_secure: config.session.cookie_secure,
        expired_retention_days: config.session.expired_retention_days,
        avatar_permits: Arc::new(tokio::sync::Semaphore::new(account::AVATAR_CONCURRENCY)),
        sealer: sealer(config)?,
        sms: sms::sender_from_config(&config.sms, clock.clone())?,
        oauth: oauth::Providers::from_config(
            &config.oauth,
            config.server.public_url.as_deref(),
            metrics.clone(),
        )
        .map_err(BuildError::OAuth)?
        .map(Arc::new),
    };
    server.add_service(background_service(
        "xgw account app",
        AccountService {
            state,
            socket: account_socket.clone(),
        },
    ));
    server.add_service(background_service(
        "xgw invalidations",
        background::InvalidationListener {
            store: store.clone(),
            cache: cache.clone(),
            metrics: metrics.clone(),
        },
    ));
    server.add_service(background_service(
        "xgw sweeper",
        background::Sweeper {
            store: store.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            retention_days: config.session.expired_retention_days,
            audit_retention_days: config.audit.retention_days,
        },
    ));

    Ok(Gateway {
        server,
        handles: Handles {
            store,
            cache,
            metrics,
            signer,
            clock,
            account_socket,
        },
    })
}

/// A shutdown trigger for `Server::run`: the server stops when the sender sends `true` or is
/// dropped. Tests use it; `main` uses the Unix signals instead.
pub struct ChannelShutdown(pub tokio::sync::watch::Receiver<bool>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for ChannelShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        while !*rx.borrow() {
            if rx.changed().await.is_err() {
                break;
            }
        }
        ShutdownSignal::FastShutdown
    }
}

impl Gateway {
    /// Runs until the shutdown signal; returns after the services stopped.
    pub fn run(self, shutdown: Box<dyn ShutdownSignalWatch>) {
        self.server.run(RunArgs {
            shutdown_signal: shutdown,
        });
    }
}
