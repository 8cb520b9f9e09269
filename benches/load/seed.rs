//! Gateways for the benchmark and what they need to hold: a config file each, an organization
//! and an admin user made with the real CLI (`org create`, `user create --password-stdin`), then
//! sessions and service tokens through the real account API, as a user would get them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::procs::{self, free_port, Proc, Role};

pub const EMAIL: &str = "bench@example.com";
pub const PASSWORD: &str = "Bench-Password-42";

/// One gateway process: its config, ports and (once started) process.
pub struct Gateway {
    pub name: String,
    pub config: PathBuf,
    pub port: u16,
    pub internal_port: u16,
    pub proc_: Option<Proc>,
}

impl Gateway {
    /// Writes `<dir>/<name>.toml`. Everything not set here is the shipped default (argon2
    /// parameters, cache TTL, JWT lifetime...).
    pub fn configure(
        dir: &Path,
        name: &str,
        store_url: &str,
        upstream_port: u16,
        threads: usize,
        jwt_key: Option<&Path>,
    ) -> std::io::Result<Gateway> {
        let port = free_port();
        let internal_port = free_port();
        let jwt = jwt_key
            .map(|p| format!("private_key_file = {:?}\n", p.display().to_string()))
            .unwrap_or_default();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ninternal_listen = \"127.0.0.1:{internal_port}\"\n\
             threads = {threads}\ngraceful_shutdown_timeout_seconds = 1\n\
             [upstream]\nurl = \"http://127.0.0.1:{upstream_port}\"\n\
             [store]\nurl = {store_url:?}\n\
             [session]\ncookie_secure = false\n\
             [jwt]\n{jwt}"
        );
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text)?;
        Ok(Gateway {
            name: name.to_string(),
            config,
            port,
            internal_port,
            proc_: None,
        })
    }

    /// The same gateway with `upstream.identity_headers = false`: the platform gets the
    /// identity in `X-Auth-Jwt` only.
    pub fn without_identity_headers(self) -> std::io::Result<Gateway> {
        let text = std::fs::read_to_string(&self.config)?;
        std::fs::write(
            &self.config,
            text.replacen("[upstream]\n", "[upstream]\nidentity_headers = false\n", 1),
        )?;
        Ok(self)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Starts `xelon-gateway serve`, under `wrapper` (e.g. valgrind and its options) if given,
    /// where idle proxies wait (`Proc::move_to` moves it onto the proxy CPU for its runs).
    pub fn start(&mut self, bin: &Path, dir: &Path, wrapper: &[String]) -> Result<(), String> {
        let mut cmd = procs::wrapped_command(Role::Rest, wrapper, bin);
        cmd.arg("--config").arg(&self.config).arg("serve");
        self.proc_ = Some(Proc::spawn(&self.name, &mut cmd, dir)?);
        Ok(())
    }

    pub fn proc_(&self) -> &Proc {
        self.proc_.as_ref().expect("gateway started")
    }

    /// Waits for `/readyz` (listeners up, store answering).
    pub async fn wait_ready(&mut self, http: &reqwest::Client) -> Result<(), String> {
        let url = format!("http://127.0.0.1:{}/readyz", self.internal_port);
        // Generous: under valgrind a start takes a while.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = http.get(&url).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if let Some(p) = self.proc_.as_mut() {
                p.check_alive()?;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("{} never became ready", self.name));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A counter from `/metrics` (summed over label sets matching `labels`).
    pub async fn metric(&self, http: &reqwest::Client, name: &str, labels: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.internal_port);
        let Ok(resp) = http.get(&url).send().await else {
            return f64::NAN;
        };
        let text = resp.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

/// Runs an admin command of the real CLI and returns the JSON it prints.
fn cli(bin: &Path, config: &Path, args: &[&str], stdin: Option<&str>) -> Result<Value, String> {
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), stdin) {
        pipe.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "xelon-gateway {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("xelon-gateway {args:?}: {e}"))
}

/// An organization and an admin user who may manage service tokens. Returns (org id, user id).
pub fn seed_directory(bin: &Path, config: &Path) -> Result<(String, String), String> {
    let org = cli(bin, config, &["org", "create", "--name", "Bench"], None)?;
    let org_id = org["id"].as_str().ok_or("org create: no id")?.to_string();
    let user = cli(
        bin,
        config,
        &[
            "user",
            "create",
            "--org",
            &org_id,
            "--email",
            EMAIL,
            "--first-name",
            "Bench",
            "--last-name",
            "User",
            "--admin",
            "--permission",
            "allowManageServiceTokens",
            "--password-stdin",
        ],
        Some(PASSWORD),
    )?;
    let user_id = user["id"].as_str().ok_or("user create: no id")?.to_string();
    Ok((org_id, user_id))
}

/// A logged-in browser: a client with its own cookie jar (cookies are per host, not per port,
/// so the same session also reaches other replicas on 127.0.0.1), the cookie value and the
/// CSRF token.
pub struct Login {
    pub client: reqwest::Client,
    pub cookie: String,
    pub csrf: String,
}

pub async fn login(gw: &Gateway) -> Result<Login, String> {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .post(gw.url("/auth/login"))
        .json(&json!({ "email": EMAIL, "password": PASSWORD }))
        .send()
        .await
        .map_err(|e| format!("login: {e}"))?;
    if resp.status() != 200 {
        return Err(format!("login answered {}", resp.status()));
    }
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("xgw_session="))
        .and_then(|v| v.split(';').next())
        .ok_or("login set no xgw_session cookie")?
        .to_string();
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    let csrf = body["csrf_token"]
        .as_str()
        .ok_or("login: no csrf_token")?
        .to_string();
    Ok(Login {
        client,
        cookie,
        csrf,
    })
}

/// Creates a service token through the account API; returns (token, token id).
pub async fn create_token(
    gw: &Gateway,
    login: &Login,
    org_id: &str,
    name: &str,
) -> Result<(String, String), String> {
    let resp = login
        .client
        .post(gw.url("/auth/api/v1/service-tokens"))
        .header("X-CSRF-Token", &login.csrf)
        .json(&json!({ "name": name, "organization_id": org_id }))
        .send()
        .await
        .map_err(|e| format!("create token: {e}"))?;
    if resp.status() != 201 {
        return Err(format!("create token answered {}", resp.status()));
    }
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    Ok((
        body["token"].as_str().ok_or("no token")?.to_string(),
        body["id"].as_str().ok_or("no token id")?.to_string(),
    ))
}
