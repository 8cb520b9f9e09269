//! Starts the real gateway (built by `xelon_gateway::build_with_store`, as `main` does) on free
//! ports with an echo upstream, a manual clock and its own store; gives tests a cookie-keeping
//! HTTP client with redirects off.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use xelon_gateway::admin::{self, NewUser};
use xelon_gateway::auth::password::Passwords;
use xelon_gateway::clock::{Clock, ManualClock, SharedClock};
use xelon_gateway::config::Config;
use xelon_gateway::metrics::Metrics;
use xelon_gateway::store::{Organization, User};
use xelon_gateway::{ChannelShutdown, Handles};

pub const PASSWORD: &str = "Correct-Horse-Battery-9";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An upstream that answers every request with what it received.
pub fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    xelon_gateway::demo::spawn_echo_upstream(listener).unwrap()
}

pub struct Options {
    /// `None`: a fresh embedded store in a temp dir.
    pub store_url: Option<String>,
    /// Share a clock between replicas.
    pub clock: Option<Arc<ManualClock>>,
    /// Share a JWT key between replicas.
    pub jwt_key: Option<PathBuf>,
    /// Share the key sealing TOTP seeds between replicas.
    pub secrets_key: Option<PathBuf>,
    /// Deliver SMS codes to this webhook URL.
    pub sms_webhook: Option<String>,
    /// Quick Login providers; `server.public_url` is then the gateway's own address, unless
    /// `public_url` says otherwise (replicas behind one address).
    pub oauth: Option<xelon_gateway::config::OAuthConfig>,
    pub public_url: Option<String>,
    pub tweak: fn(&mut Config),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            store_url: None,
            clock: None,
            jwt_key: None,
            secrets_key: None,
            sms_webhook: None,
            oauth: None,
            public_url: None,
            tweak: |_| {},
        }
    }
}

pub struct TestGateway {
    pub base: String,
    pub internal: String,
    pub handles: Handles,
    pub clock: Arc<ManualClock>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let upstream = echo_upstream();
        let mut config = Config::default();
        config.server.listen = format!("127.0.0.1:{}", free_port());
        config.server.internal_listen = format!("127.0.0.1:{}", free_port());
        config.server.threads = 1;
        config.server.graceful_shutdown_timeout_seconds = 1;
        config.upstream.url = format!("http://{upstream}");
        config.upstream.public_paths = vec!["/public".into()];
        config.store.url = opts
            .store_url
            .clone()
            .unwrap_or_else(|| format!("embedded:{}", dir.path().join("gateway.redb").display()));
        // reqwest's cookie store (rightly) keeps Secure cookies off plain http.
        config.session.cookie_secure = false;
        config.jwt.private_key_file = opts.jwt_key.clone();
        config.secrets.key_file = opts.secrets_key.clone();
        if let Some(url) = &opts.sms_webhook {
            config.sms.provider = xelon_gateway::sms::SmsProvider::Webhook;
            config.sms.webhook_url = Some(url.clone());
        }
        if let Some(oauth) = &opts.oauth {
            config.oauth = oauth.clone();
            config.server.public_url = Some(
                opts.public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{}", config.server.listen)),
            );
        }
        (opts.tweak)(&mut config);

        let clock = opts.clock.clone().unwrap_or_else(ManualClock::new);
        let shared: SharedClock = clock.clone();
        let metrics = Arc::new(Metrics::new());
        let store = xelon_gateway::open_store(&config, metrics.clone()).unwrap();
        let gateway = xelon_gateway::build_with_store(&config, shared, store, metrics).unwrap();
        let handles = gateway.handles.clone();
        let (tx, rx) = tokio::sync::watch::channel(false);
        std::thread::spawn(move || gateway.run(Box::new(ChannelShutdown(rx))));

        let gw = TestGateway {
            base: format!("http://{}", config.server.listen),
            internal: format!("http://{}", config.server.internal_listen),
            handles,
            clock,
            shutdown: Some(tx),
            _dir: dir,
        };
        gw.wait_until_serving().await;
        gw
    }

    async fn wait_until_serving(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let proxy = client.get(format!("{}/auth/login", self.base)).send().await;
            let internal = client
                .get(format!("{}/healthz", self.internal))
                .send()
                .await;
            if matches!((&proxy, &internal), (Ok(p), Ok(i)) if p.status() == 200 && i.status() == 200)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start: proxy {proxy:?} internal {internal:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A browser-like client: keeps cookies, does not follow redirects.
    pub fn client(&self) -> reqwest::Client {
        self.client_with_jar().0
    }

    /// A client whose cookie jar the test can add to.
    pub fn client_with_jar(&self) -> (reqwest::Client, Arc<reqwest::cookie::Jar>) {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        (client, jar)
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub async fn create_org(&self, name: &str) -> Organization {
        admin::create_org(&self.handles.store, name, self.now())
            .await
            .unwrap()
    }

    /// A user with `PASSWORD` in `org`.
    pub async fn create_user(&self, org: &Organization, email: &str, is_admin: bool) -> User {
        let passwords = Passwords::new(19_456, 2, 1).unwrap();
        admin::create_user(
            &self.handles.store,
            &passwords,
            NewUser {
                org_id: &org.id,
                email,
                first_name: "Ada",
                last_name: "Lovelace",
                admin: is_admin,
                permissions: &[],
                password: PASSWORD,
            },
            self.now(),
        )
        .await
        .unwrap()
    }

    /// Logs `client` in; returns the login response body (with `csrf_token`).
    pub async fn login(&self, client: &reqwest::Client, email: &str) -> Value {
        let resp = client
            .post(self.url("/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "login failed");
        resp.json().await.unwrap()
    }

    /// An org with one admin, logged in: (org, admin user, client, csrf token).
    pub async fn admin_session(&self) -> (Organization, User, reqwest::Client, String) {
        let org = self.create_org("Acme").await;
        let user = self.create_user(&org, "admin@acme.test", true).await;
        let client = self.client();
        let login = self.login(&client, "admin@acme.test").await;
        let csrf = login["csrf_token"].as_str().unwrap().to_string();
        (org, user, client, csrf)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.internal))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        // The server thread stops on its own; the process does not wait for it.
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}

/// GETs `path` through the gateway and returns the echo upstream's view of the request.
pub async fn echoed(gw: &TestGateway, client: &reqwest::Client, path: &str) -> Value {
    let resp = client.get(gw.url(path)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path} was not forwarded");
    resp.json().await.unwrap()
}

/// Status and JSON body (`Null` when the body is empty or not JSON).
pub async fn status_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A state-changing API call as the browser UI makes it: JSON body and the CSRF header.
pub async fn send(
    gw: &TestGateway,
    client: &reqwest::Client,
    method: reqwest::Method,
    path: &str,
    csrf: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method, gw.url(path))
        .header("X-CSRF-Token", csrf);
    if let Some(body) = body {
        req = req.json(&body);
    }
    status_json(req.send().await.unwrap()).await
}

/// GET as a signed-in browser; (status, JSON body).
pub async fn get(gw: &TestGateway, client: &reqwest::Client, path: &str) -> (u16, Value) {
    status_json(client.get(gw.url(path)).send().await.unwrap()).await
}

/// A login attempt with any password; (status, JSON body).
pub async fn try_login(
    gw: &TestGateway,
    client: &reqwest::Client,
    email: &str,
    password: &str,
) -> (u16, Value) {
    let resp = client
        .post(gw.url("/auth/login"))
        .json(&serde_json::json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    status_json(resp).await
}
