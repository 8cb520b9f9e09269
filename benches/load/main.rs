//! The load benchmark: what authentication costs on the hot path, against a bare pingora proxy,
//! in one run. See BENCHMARKS.md for what each number means and how to read them.
//!
//! `benches/load.sh` (= `cargo bench --bench load`, after installing wrk, oha and redis-server)
//! builds release binaries and runs the full benchmark. `cargo test --bench load` (also part of
//! `cargo test --all-targets`) runs the short mode against debug binaries: a few seconds per
//! target, to prove the whole thing still works end to end, not to measure anything.
//!
//! It starts, all on 127.0.0.1 and on free ports: a fixed-response upstream and a bare pingora
//! passthrough (this executable again, see `servers.rs`), the real `xelon-gateway serve` on the
//! embedded store, a redis-server and two gateway replicas on it. Every load run is bounded in
//! time, and a watchdog ends the whole benchmark if it overstays.

mod procs;
mod replicas;
mod seed;
mod servers;
mod tools;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use procs::{free_port, wait_for_port, Proc};
use seed::{create_token, login, seed_directory, Gateway};
use tools::{Scripts, Wrk, WrkResult};
use xelon_gateway::config::Config;
use xelon_gateway::metrics::Metrics;

const GATEWAY_BIN: &str = env!("CARGO_BIN_EXE_xelon-gateway");

struct Opts {
    full: bool,
    rounds: usize,
    secs: u32,
    latency_secs: u32,
    threads: usize,
    connections: u32,
    oha_connections: u32,
    trials: usize,
    login_secs: u32,
    /// `--perf DIR`: instead of the benchmark, record `perf` profiles of the proxies under load.
    perf: Option<PathBuf>,
    /// `--callgrind DIR`: instead of the benchmark, run the bare proxy and the embedded gateway
    /// under callgrind and count instructions and allocations per request.
    callgrind: Option<PathBuf>,
}

impl Opts {
    fn from_args(args: &[String]) -> Opts {
        let flag = |f: &str| args.iter().any(|a| a == f);
        let value = |f: &str| {
            args.iter()
                .position(|a| a == f)
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let path = |f: &str| {
            args.iter()
                .position(|a| a == f)
                .and_then(|i| args.get(i + 1))
                .map(PathBuf::from)
        };
        // `cargo bench` passes --bench; `cargo test` does not.
        let full = flag("--bench") && !flag("--short");
        let (rounds, secs, latency_secs, trials, login_secs) = if full {
            (5, 5, 6, 50, 5)
        } else {
            (1, 1, 1, 5, 1)
        };
        Opts {
            full,
            rounds: value("--rounds").map_or(rounds, |v| v.max(1) as usize),
            secs: value("--secs").map_or(secs, |v| v.max(1) as u32),
            latency_secs: value("--latency-secs").map_or(latency_secs, |v| v.max(1) as u32),
            threads: value("--threads").map_or(1, |v| v.max(1) as usize),
            connections: 32,
            oha_connections: 16,
            trials: value("--trials").map_or(trials, |v| v.max(1) as usize),
            login_secs,
            perf: path("--perf"),
            callgrind: path("--callgrind"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("__upstream") => return servers::upstream(&args[2]),
        Some("__bare-proxy") => return servers::bare_proxy(Path::new(&args[2]), &args[3]),
        _ => {}
    }
    let opts = Opts::from_args(&args);
    procs::watchdog(Duration::from_secs(if opts.full {
        40 * 60
    } else {
        5 * 60
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(run(&opts)) {
        Ok(checks) => {
            let failed: Vec<&str> = checks
                .iter()
                .filter(|(_, ok)| !ok)
                .map(|(what, _)| what.as_str())
                .collect();
            for what in &failed {
                println!("FAILED check: {what}");
            }
            println!(
                "load: {} passed, {} failed",
                checks.len() - failed.len(),
                failed.len()
            );
            if !failed.is_empty() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("load benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}

/// Where oha is: on the PATH, or where `cargo install` puts it.
fn find_oha() -> Option<PathBuf> {
    if procs::have("oha") {
        return Some(PathBuf::from("oha"));
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let path = home.join("bin").join("oha");
    path.exists().then_some(path)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Bare,
    Embedded,
    RedisA,
}

#[derive(Clone)]
enum Cred {
    Cookie(String),
    Bearer(String),
    /// A different, never used session for every request (wrk Lua script).
    Rotating,
}

impl Cred {
    fn header(&self) -> Option<String> {
        match self {
            Cred::Cookie(c) => Some(format!("Cookie: xgw_session={c}")),
            Cred::Bearer(t) => Some(format!("Authorization: Bearer {t}")),
            Cred::Rotating => None,
        }
    }
}

struct Target {
    label: &'static str,
    via: Via,
    cred: Cred,
    /// Compared with this target's throughput (index into the target list).
    baseline: usize,
    /// Cached credentials: ≥ 0.90 × bare, ≤ 0.01 store round trips per request.
    cached: bool,
}

/// One closed-loop run.
#[derive(Clone, Copy, Default)]
struct Sample {
    rps: f64,
    ratio: f64,
    cpu_us_per_req: f64,
    /// Cores the proxy process kept busy.
    cores: f64,
    upstream_cpu_us_per_req: f64,
    store_rt_per_req: Option<f64>,
    miss_fraction: Option<f64>,
    errors: f64,
}

struct Bench<'a> {
    opts: &'a Opts,
    dir: PathBuf,
    scripts: Scripts,
    oha: PathBuf,
    http: reqwest::Client,
    upstream: Proc,
    bare: Proc,
    bare_port: u16,
    emb: Gateway,
    ra: Gateway,
    rb: Gateway,
    _redis: Proc,
    redis: redis::aio::MultiplexedConnection,
    store: xelon_gateway::store::SharedStore,
    r_org: String,
    r_user: String,
    r_admin: seed::Login,
    emb_cookie: String,
    emb_token: String,
    r_token: String,
    checks: Vec<(String, bool)>,
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

async fn redis_calls(con: &mut redis::aio::MultiplexedConnection) -> Result<f64, String> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(con)
        .await
        .map_err(|e| format!("redis INFO: {e}"))?;
    // cmdstat_get:calls=12,usec=...  — every command but our own INFO.
    Ok(info
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| {
            l.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<f64>()
                .ok()
        })
        .sum())
}

async fn run(opts: &Opts) -> Result<Vec<(String, bool)>, String> {
    let mut missing = Vec::new();
    for tool in ["wrk", "redis-server"] {
        if !procs::have(tool) {
            missing.push(tool);
        }
    }
    let oha = find_oha();
    if oha.is_none() {
        missing.push("oha");
    }
    if !missing.is_empty() {
        return Err(format!(
            "missing {missing:?}: run benches/load.sh (or scripts/test), which installs them \
             (apt-get install wrk redis-server; cargo install oha --locked \
             --no-default-features --features native-tls)"
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("xgw-load-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let outcome = async {
        let mut bench = Bench::start(opts, oha.unwrap_or_default(), dir.clone()).await?;
        let report = bench.measure().await?;
        Ok::<_, String>((report, std::mem::take(&mut bench.checks)))
        // `bench` drops here: every process it started is killed.
    }
    .await;
    match outcome {
        Ok((report, checks)) => {
            println!("{report}");
            let _ = std::fs::remove_dir_all(&dir);
            Ok(checks)
        }
        // The logs of every process stay behind for a look.
        Err(e) => Err(format!("{e}\n(logs in {})", dir.display())),
    }
}

impl<'a> Bench<'a> {
    /// Starts every process, with its log in `dir`, and seeds the gateways.
    async fn start(opts: &'a Opts, oha: PathBuf, dir: PathBuf) -> Result<Bench<'a>, String> {
        let io = |e: std::io::Error| e.to_string();
        let scripts = Scripts::write(&dir).map_err(io)?;
        let bin = Path::new(GATEWAY_BIN);
        let me = std::env::current_exe().map_err(io)?;
        let http = reqwest::Client::new();

        let up_port = free_port();
        let mut upstream = Proc::spawn(
            "upstream",
            Command::new(&me)
                .arg("__upstream")
                .arg(format!("127.0.0.1:{up_port}")),
            &dir,
        )?;
        wait_for_port(&mut upstream, up_port, Duration::from_secs(10)).await?;

        std::fs::create_dir_all(dir.join("embedded")).map_err(io)?;
        let emb_url = format!("embedded:{}", dir.join("embedded/gateway.redb").display());
        let mut emb =
            Gateway::configure(&dir, "gw-embedded", &emb_url, up_port, opts.threads, None)
                .map_err(io)?;
        // redb allows one process per file: seed before the gateway holds it.
        let (emb_org, _) = seed_directory(bin, &emb.config)?;
        let valgrind = |name: &str| -> Vec<String> {
            opts.callgrind.as_ref().map_or_else(Vec::new, |out| {
                vec![
                    "valgrind".into(),
                    "--tool=callgrind".into(),
                    format!("--callgrind-out-file={}/{name}.callgrind", out.display()),
                ]
            })
        };
        emb.start(bin, &dir, &valgrind("gateway"))?;

        // The bare proxy reads the embedded gateway's config: same server settings, same peer.
        let bare_port = free_port();
        let bare_wrapper = valgrind("bare");
        let mut bare_cmd = match bare_wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&me);
                c
            }
            None => Command::new(&me),
        };
        bare_cmd
            .arg("__bare-proxy")
            .arg(&emb.config)
            .arg(format!("127.0.0.1:{bare_port}"));
        let mut bare = Proc::spawn("bare-proxy", &mut bare_cmd, &dir)?;

        let redis_port = free_port();
        let mut redis_proc = Proc::spawn(
            "redis-server",
            Command::new("redis-server")
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir),
            &dir,
        )?;
        wait_for_port(&mut redis_proc, redis_port, Duration::from_secs(10)).await?;
        let redis_url = format!("redis://127.0.0.1:{redis_port}/0");
        // Replicas share one JWT key, as operations.md asks.
        let jwt_key = dir.join("jwt-ed25519.pk8");
        xelon_gateway::auth::jwt::JwtSigner::load(&jwt_key, true, "xelon-gateway", 300)
            .map_err(|e| e.to_string())?;
        let mut ra = Gateway::configure(
            &dir,
            "gw-redis-a",
            &redis_url,
            up_port,
            opts.threads,
            Some(&jwt_key),
        )
        .map_err(io)?;
        let mut rb = Gateway::configure(
            &dir,
            "gw-redis-b",
            &redis_url,
            up_port,
            opts.threads,
            Some(&jwt_key),
        )
        .map_err(io)?;
        let (r_org, r_user) = seed_directory(bin, &ra.config)?;
        ra.start(bin, &dir, &valgrind("gateway-redis"))?;
        rb.start(bin, &dir, &[])?;

        wait_for_port(&mut bare, bare_port, Duration::from_secs(120)).await?;
        for gw in [&mut emb, &mut ra, &mut rb] {
            gw.wait_ready(&http).await?;
        }
        let redis = redis::Client::open(redis_url.as_str())
            .map_err(|e| e.to_string())?
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let store = xelon_gateway::store::open(&redis_url, Arc::new(Metrics::new()))
            .map_err(|e| e.to_string())?;
        let emb_login = login(&emb).await?;
        let (emb_token, _) = create_token(&emb, &emb_login, &emb_org, "load").await?;
        let r_admin = login(&ra).await?;
        let (r_token, _) = create_token(&ra, &r_admin, &r_org, "load").await?;
        Ok(Bench {
            opts,
            dir,
            scripts,
            oha,
            http,
            upstream,
            bare,
            bare_port,
            emb,
            ra,
            rb,
            _redis: redis_proc,
            redis,
            store,
            r_org,
            r_user,
            r_admin,
            emb_cookie: emb_login.cookie,
            emb_token,
            r_token,
            checks: Vec::new(),
        })
    }

    fn check(&mut self, what: String, ok: bool) {
        self.checks.push((what, ok));
    }

    fn proc_of(&self, via: Via) -> &Proc {
        match via {
            Via::Bare => &self.bare,
            Via::Embedded => self.emb.proc_(),
            Via::RedisA => self.ra.proc_(),
        }
    }

    fn gateway_of(&self, via: Via) -> Option<&Gateway> {
        match via {
            Via::Bare => None,
            Via::Embedded => Some(&self.emb),
            Via::RedisA => Some(&self.ra),
        }
    }

    fn url_of(&self, via: Via) -> String {
        match self.gateway_of(via) {
            Some(gw) => gw.url("/bench/api"),
            None => format!("http://127.0.0.1:{}/bench/api", self.bare_port),
        }
    }

    async fn cache_counts(&self, via: Via) -> (f64, f64) {
        match self.gateway_of(via) {
            Some(gw) => (
                gw.metric(&self.http, "xgw_cache_lookups_total", "\"hit\"")
                    .await,
                gw.metric(&self.http, "xgw_cache_lookups_total", "\"miss\"")
                    .await,
            ),
            None => (0.0, 0.0),
        }
    }

    /// Records a `perf` profile (with DWARF call graphs) of the bare proxy and of the embedded
    /// gateway with each cached credential, each under the same closed-loop load.
    async fn profile(&mut self, dir: &Path, targets: &[Target]) -> Result<String, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut out = String::new();
        for (i, name) in [
            (0, "bare"),
            (1, "gateway-bearer"),
            (2, "gateway-cookie"),
            (3, "gateway-redis-bearer"),
        ] {
            let data = dir.join(format!("{name}.perf.data"));
            let pid = self.proc_of(targets[i].via).pid();
            let mut perf = tokio::process::Command::new("perf")
                .args(["record", "-F", "999", "--call-graph", "dwarf,32768", "-o"])
                .arg(&data)
                .args(["-p", &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run perf: {e}"))?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let s = self.closed_loop(&targets[i], self.opts.secs, None).await?;
            if let Some(perf_pid) = perf.id() {
                let _ = Command::new("kill")
                    .arg("-INT")
                    .arg(perf_pid.to_string())
                    .status();
            }
            let _ = tokio::time::timeout(Duration::from_secs(60), perf.wait()).await;
            let _ = writeln!(
                out,
                "{name}: {:.0} req/s, {:.1} µs CPU/req -> perf report -i {} --no-children",
                s.rps,
                s.cpu_us_per_req,
                data.display()
            );
        }
        Ok(out)
    }

    /// With the bare proxy and the embedded gateway under callgrind: zeroes the counters, sends
    /// the same number of requests (oha, fixed count), dumps, and reads instructions and
    /// malloc/calloc/realloc calls per request from the dump. Stable where timings are not.
    async fn count_instructions(
        &mut self,
        dir: &Path,
        targets: &[Target],
    ) -> Result<String, String> {
        let n: u32 = 2000;
        let mut out = format!(
            "\n| callgrind, {n} requests, 4 connections | instructions/req | allocations/req |\n|---|---:|---:|\n"
        );
        for (i, name, dump) in [
            (0, "bare", "bare"),
            (1, "gateway-bearer", "gateway"),
            (2, "gateway-cookie", "gateway"),
            (3, "gateway-redis-bearer", "gateway-redis"),
            (4, "gateway-redis-cookie", "gateway-redis"),
        ] {
            let t = &targets[i];
            let pid = self.proc_of(t.via).pid().to_string();
            let control = |arg: &str| {
                Command::new("callgrind_control")
                    .args([arg, &pid])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .map_err(|e| format!("callgrind_control: {e}"))
            };
            control("-z")?;
            let status = tokio::process::Command::new(&self.oha)
                .args(["--no-tui", "-n", &n.to_string(), "-c", "4", "-H"])
                .arg(t.cred.header().unwrap_or_default())
                .arg(self.url_of(t.via))
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            tokio::time::timeout(Duration::from_secs(300), status)
                .await
                .map_err(|_| "oha under callgrind took over 300 s".to_string())?
                .map_err(|e| e.to_string())?;
            control("-d")?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (ir, allocs) = read_callgrind_dumps(dir, dump, &pid)?;
            let _ = writeln!(
                out,
                "| {name} | {:.0} | {:.1} |",
                ir / f64::from(n),
                allocs / f64::from(n)
            );
        }
        Ok(out)
    }

    /// One closed-loop wrk run against `t`, with the proxy's CPU time, the upstream's, Redis
    /// commands and cache lookups counted around it.
    async fn closed_loop(
        &mut self,
        t: &Target,
        secs: u32,
        cookies: Option<&Path>,
    ) -> Result<Sample, String> {
        let url = self.url_of(t.via);
        let headers: Vec<String> = t.cred.header().into_iter().collect();
        let (script, args) = match cookies {
            Some(file) => (&self.scripts.rotate, vec![file.display().to_string()]),
            None => (&self.scripts.plain, Vec::new()),
        };
        let script = script.clone();
        let (hits0, misses0) = self.cache_counts(t.via).await;
        let redis0 = match t.via {
            Via::RedisA => Some(redis_calls(&mut self.redis).await?),
            _ => None,
        };
        let cpu0 = self.proc_of(t.via).cpu_us();
        let up0 = self.upstream.cpu_us();
        let w: WrkResult = Wrk {
            url: &url,
            connections: self.opts.connections,
            secs,
            headers: &headers,
            script: &script,
            script_args: &args,
        }
        .run()
        .await?;
        let cpu = self.proc_of(t.via).cpu_us() - cpu0;
        let up = self.upstream.cpu_us() - up0;
        let redis1 = match t.via {
            Via::RedisA => Some(redis_calls(&mut self.redis).await?),
            _ => None,
        };
        let (hits1, misses1) = self.cache_counts(t.via).await;
        let n = w.requests.max(1.0);
        let lookups = (hits1 - hits0) + (misses1 - misses0);
        Ok(Sample {
            rps: w.rps(),
            ratio: f64::NAN,
            cpu_us_per_req: cpu / n,
            cores: cpu / 1e6 / w.secs.max(0.001),
            upstream_cpu_us_per_req: up / n,
            store_rt_per_req: redis0.zip(redis1).map(|(a, b)| (b - a) / n),
            miss_fraction: (t.via != Via::Bare && lookups > 0.0)
                .then(|| (misses1 - misses0) / lookups),
            errors: w.errors,
        })
    }

    fn targets(&self) -> Vec<Target> {
        let cookie = Cred::Cookie(self.emb_cookie.clone());
        vec![
            Target {
                label: "bare pingora passthrough",
                via: Via::Bare,
                cred: cookie.clone(),
                baseline: 0,
                cached: false,
            },
            Target {
                label: "gateway, embedded, Bearer token (cached)",
                via: Via::Embedded,
                cred: Cred::Bearer(self.emb_token.clone()),
                baseline: 0,
                cached: true,
            },
            Target {
                label: "gateway, embedded, session cookie (cached)",
                via: Via::Embedded,
                cred: cookie,
                baseline: 0,
                cached: true,
            },
            Target {
                label: "gateway, Redis, Bearer token (cached)",
                via: Via::RedisA,
                cred: Cred::Bearer(self.r_token.clone()),
                baseline: 0,
                cached: true,
            },
            Target {
                label: "gateway, Redis, session cookie (cached)",
                via: Via::RedisA,
                cred: Cred::Cookie(self.r_admin.cookie.clone()),
                baseline: 0,
                cached: true,
            },
            Target {
                label: "bare passthrough, new cookie per request",
                via: Via::Bare,
                cred: Cred::Rotating,
                baseline: 5,
                cached: false,
            },
            Target {
                label: "gateway, Redis, session cookie, cache cold",
                via: Via::RedisA,
                cred: Cred::Rotating,
                baseline: 5,
                cached: false,
            },
        ]
    }

    async fn measure(&mut self) -> Result<String, String> {
        let started = Instant::now();
        let load_before = loadavg();
        let cpu_before = cpu_times();
        let opts = self.opts;
        let targets = self.targets();
        let redis_cached = 4;

        // Warm up connection pools, caches and JWTs (not recorded).
        for t in targets.iter().filter(|t| !matches!(t.cred, Cred::Rotating)) {
            self.closed_loop(t, 1, None).await?;
        }

        if let Some(dir) = &opts.perf {
            return self.profile(dir, &targets).await;
        }
        if let Some(dir) = &opts.callgrind {
            return self.count_instructions(dir, &targets).await;
        }

        let mut tp: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
        for round in 0..opts.rounds {
            let mut this: Vec<Sample> = Vec::new();
            let mut cold: (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
            let mut cookies_file: Option<PathBuf> = None;
            for (i, t) in targets.iter().enumerate() {
                if matches!(t.cred, Cred::Rotating) && cookies_file.is_none() {
                    // Enough never-used sessions for the gateway's whole run: its cached
                    // throughput this round bounds its cold throughput.
                    let n = (this[redis_cached].rps * f64::from(opts.secs) * 1.25) as usize + 500;
                    cold = replicas::create_sessions(&self.store, &self.r_user, &self.r_org, n)
                        .await?;
                    let file = self.dir.join("cold-cookies.txt");
                    std::fs::write(&file, cold.0.join("\n")).map_err(|e| e.to_string())?;
                    cookies_file = Some(file);
                }
                let cookies = match t.cred {
                    Cred::Rotating => cookies_file.as_deref(),
                    _ => None,
                };
                let mut s = self.closed_loop(t, opts.secs, cookies).await?;
                s.ratio = if i == t.baseline {
                    1.0
                } else {
                    s.rps / this[t.baseline].rps
                };
                eprintln!(
                    "round {}/{}  {:<45} {:>9.0} req/s  ratio {:.3}  {:.1} µs CPU/req",
                    round + 1,
                    opts.rounds,
                    t.label,
                    s.rps,
                    s.ratio,
                    s.cpu_us_per_req
                );
                this.push(s);
            }
            replicas::remove_sessions(&mut self.redis, &self.r_org, &cold.0, &cold.1).await?;
            for (i, s) in this.into_iter().enumerate() {
                tp[i].push(s);
            }
        }
        for (t, samples) in targets.iter().zip(&tp) {
            let errors: f64 = samples.iter().map(|s| s.errors).sum();
            self.check(
                format!("no errors or non-2xx answers: {}", t.label),
                errors == 0.0,
            );
            if t.cached && t.via == Via::RedisA {
                let rt = median(
                    &samples
                        .iter()
                        .filter_map(|s| s.store_rt_per_req)
                        .collect::<Vec<_>>(),
                );
                self.check(
                    format!("≤ 0.01 store round trips per request: {}", t.label),
                    rt <= 0.01,
                );
            }
            if !t.cached && t.via == Via::RedisA {
                let miss = median(
                    &samples
                        .iter()
                        .filter_map(|s| s.miss_fraction)
                        .collect::<Vec<_>>(),
                );
                self.check(format!("≥ 90% cache misses: {}", t.label), miss >= 0.9);
            }
        }

        // Latency at a fixed rate: half of what the bare proxy sustains with oha driving it.
        // oha spends more CPU per request than wrk, and on 2 cores the load generator shares
        // the machine with the proxy: half of wrk's figure would overload the machine and
        // measure the run queue, not the proxy.
        let bare_header = targets[0].cred.header().unwrap_or_default();
        let mut capacity = Vec::new();
        for _ in 0..opts.rounds.min(3) {
            let r = tools::oha_run(
                &self.oha,
                &self.url_of(Via::Bare),
                &bare_header,
                None,
                opts.oha_connections,
                opts.secs.min(3),
            )
            .await?;
            capacity.push(r.rps);
        }
        let oha_capacity = median(&capacity);
        // Half of capacity, as the targets are stated; and a quarter, where the generator,
        // the upstream and the proxy together leave the 2 cores some slack, so that the
        // difference is the proxy's and not a run queue's.
        let rates: Vec<f64> = [0.5, 0.25]
            .iter()
            .map(|f| (oha_capacity * f).max(50.0).round())
            .collect();
        let lat_targets = [0usize, 1, 2, 4];
        let mut lat: Vec<Vec<Vec<tools::OhaResult>>> =
            vec![vec![Vec::new(); lat_targets.len()]; rates.len()];
        for round in 0..opts.rounds {
            for ((k, &rate), (j, &i)) in rates
                .iter()
                .enumerate()
                .flat_map(|r| lat_targets.iter().enumerate().map(move |t| (r, t)))
            {
                let t = &targets[i];
                let header = t.cred.header().unwrap_or_default();
                let r = tools::oha_run(
                    &self.oha,
                    &self.url_of(t.via),
                    &header,
                    Some(rate),
                    opts.oha_connections,
                    opts.latency_secs,
                )
                .await?;
                eprintln!(
                    "round {}/{}  {:<45} at {rate:.0}/s: p50 {:.3} ms  p99 {:.3} ms  ({:.0} req/s done)",
                    round + 1,
                    opts.rounds,
                    t.label,
                    r.p50_ms,
                    r.p99_ms,
                    r.rps
                );
                lat[k][j].push(r);
            }
        }
        for (j, &i) in lat_targets.iter().enumerate() {
            let runs = lat.iter().flat_map(|by_target| &by_target[j]);
            let failed: f64 = runs.clone().map(|r| r.failed).sum();
            let ok: f64 = runs.map(|r| r.ok).sum();
            self.check(
                format!("fixed rate, all answers 2xx: {}", targets[i].label),
                failed == 0.0 && ok > 0.0,
            );
        }

        // Revocation between two replicas on one Redis.
        let sessions =
            replicas::session_trials(&self.ra, &self.rb, &self.r_admin, &self.r_org, opts.trials)
                .await?;
        let tokens =
            replicas::token_trials(&self.ra, &self.rb, &self.r_admin, &self.r_org, opts.trials)
                .await?;
        self.check(
            "every expired session refused by the other replica".into(),
            sessions.failed == 0,
        );
        self.check(
            "every deleted token refused by the other replica".into(),
            tokens.failed == 0,
        );

        // Logins at the configured argon2 parameters.
        let args = [seed::EMAIL.to_string(), seed::PASSWORD.to_string()];
        let login_url = self.emb.url("/auth/login");
        let login = Wrk {
            url: &login_url,
            connections: 4,
            secs: opts.login_secs,
            headers: &[],
            script: &self.scripts.login,
            script_args: &args,
        }
        .run()
        .await?;
        self.check(
            "every benchmark login succeeded".into(),
            login.errors == 0.0 && login.requests > 0.0,
        );

        for p in [&mut self.upstream, &mut self.bare] {
            p.check_alive()?;
        }
        Ok(self.report(&Results {
            targets,
            tp,
            oha_capacity,
            rates,
            lat_targets: lat_targets.to_vec(),
            lat,
            sessions,
            tokens,
            login,
            load_before,
            cpu_before,
            started,
        }))
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The machine's CPU time counters (`cpu` line of /proc/stat: user nice system idle iowait irq
/// softirq steal ...), in ticks.
fn cpu_times() -> Vec<f64> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_string();
            Some(
                line.split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect(),
            )
        })
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

/// Everything `measure` collected, for the report.
struct Results {
    targets: Vec<Target>,
    tp: Vec<Vec<Sample>>,
    /// The bare proxy's closed-loop throughput with oha as the load generator.
    oha_capacity: f64,
    rates: Vec<f64>,
    lat_targets: Vec<usize>,
    /// By rate, then by latency target: one result per round.
    lat: Vec<Vec<Vec<tools::OhaResult>>>,
    sessions: replicas::Trials,
    tokens: replicas::Trials,
    login: WrkResult,
    load_before: String,
    cpu_before: Vec<f64>,
    started: Instant,
}

fn fmt_opt(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.digits$}")
    }
}

impl Bench<'_> {
    /// The result table, in Markdown (BENCHMARKS.md quotes it).
    fn report(&self, r: &Results) -> String {
        let o = self.opts;
        let med = |samples: &[Sample], f: &dyn Fn(&Sample) -> Option<f64>| {
            median(&samples.iter().filter_map(f).collect::<Vec<_>>())
        };
        let mut out = String::new();
        let mode = if o.full {
            format!("full mode, {} interleaved rounds, medians", o.rounds)
        } else {
            "SHORT MODE (a smoke test: one short round; the numbers mean nothing)".to_string()
        };
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        let _ = writeln!(out, "\n## xelon-gateway load benchmark: {mode}\n");
        let _ = writeln!(
            out,
            "- machine: {} × {} cores; Linux {}; load average {} at start, {} at end; {:.0} s; \
             CPU time stolen by the hypervisor: {:.1}%",
            cpu_model(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
            r.load_before,
            loadavg(),
            r.started.elapsed().as_secs_f64(),
            {
                let now = cpu_times();
                let delta: Vec<f64> = now.iter().zip(&r.cpu_before).map(|(a, b)| a - b).collect();
                let total: f64 = delta.iter().take(8).sum();
                100.0 * delta.get(7).copied().unwrap_or(0.0) / total.max(1.0)
            }
        );
        let _ = writeln!(
            out,
            "- {profile} build; bare proxy and gateway: pingora 0.9, `server.threads = {}`, the same \
             `ServerConf` and upstream peer; upstream: fixed 3-byte answer, 1 thread",
            o.threads
        );
        let _ = writeln!(
            out,
            "- closed loop: wrk, 1 thread, {} connections, {} s per run; fixed rate: oha \
             --latency-correction, {} connections, {} s per run",
            o.connections, o.secs, o.oha_connections, o.latency_secs
        );
        let _ = writeln!(
            out,
            "\n| throughput (closed loop) | req/s | ÷ baseline | target | proxy CPU µs/req | proxy cores busy | upstream CPU µs/req | Redis commands/req | cache misses |"
        );
        let _ = writeln!(out, "|---|---:|---:|---|---:|---:|---:|---:|---:|");
        for (t, s) in r.targets.iter().zip(&r.tp) {
            let ratio = med(s, &|x| Some(x.ratio));
            let rt = med(s, &|x| x.store_rt_per_req);
            let target = if t.cached {
                let mut v = format!("≥ 0.90 {}", verdict(ratio >= 0.9));
                if !rt.is_nan() {
                    let _ = write!(v, "; ≤ 0.01 RT {}", verdict(rt <= 0.01));
                }
                v
            } else {
                String::new()
            };
            let baseline = if t.baseline == 5 && t.via != Via::Bare {
                format!("{} (÷ new-cookie bare)", fmt_opt(ratio, 3))
            } else {
                fmt_opt(ratio, 3)
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
                t.label,
                med(s, &|x| Some(x.rps)),
                baseline,
                target,
                fmt_opt(med(s, &|x| Some(x.cpu_us_per_req)), 1),
                fmt_opt(med(s, &|x| Some(x.cores)), 2),
                fmt_opt(med(s, &|x| Some(x.upstream_cpu_us_per_req)), 1),
                fmt_opt(rt, 4),
                med(s, &|x| x.miss_fraction)
                    .is_nan()
                    .then(String::new)
                    .unwrap_or_else(|| format!("{:.1}%", 100.0 * med(s, &|x| x.miss_fraction))),
            );
        }
        let bare_cpu = med(&r.tp[0], &|x| Some(x.cpu_us_per_req));
        let _ = writeln!(
            out,
            "\nAdded proxy CPU per request over bare (medians): {}",
            r.targets
                .iter()
                .zip(&r.tp)
                .skip(1)
                .filter(|(t, _)| t.cached)
                .map(|(t, s)| format!(
                    "{} +{:.1} µs",
                    t.label,
                    med(s, &|x| Some(x.cpu_us_per_req)) - bare_cpu
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );

        for (k, rate) in r.rates.iter().enumerate() {
            let lat = &r.lat[k];
            let _ = writeln!(
                out,
                "\n| latency at {rate:.0} req/s ({} of bare's {:.0} req/s under oha), CO-corrected | p50 ms | p99 ms | added p50 ms | added p99 ms | target (added p99 ≤ 0.3 ms) |",
                if k == 0 { "½" } else { "¼" },
                r.oha_capacity
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---|");
            let p = |j: usize, f: fn(&tools::OhaResult) -> f64| {
                median(&lat[j].iter().map(f).collect::<Vec<_>>())
            };
            // Added latency: per round, gateway minus the bare run of the same round; then the
            // median.
            let added = |j: usize, f: fn(&tools::OhaResult) -> f64| {
                median(
                    &lat[j]
                        .iter()
                        .zip(&lat[0])
                        .map(|(g, b)| f(g) - f(b))
                        .collect::<Vec<_>>(),
                )
            };
            for (j, &i) in r.lat_targets.iter().enumerate() {
                let (a50, a99) = (added(j, |x| x.p50_ms), added(j, |x| x.p99_ms));
                let (add50, add99, target) = if j == 0 {
                    (String::new(), String::new(), String::new())
                } else {
                    (
                        format!("{a50:+.3}"),
                        format!("{a99:+.3}"),
                        verdict(a99 <= 0.3).to_string(),
                    )
                };
                let _ = writeln!(
                    out,
                    "| {} | {:.3} | {:.3} | {add50} | {add99} | {target} |",
                    r.targets[i].label,
                    p(j, |x| x.p50_ms),
                    p(j, |x| x.p99_ms)
                );
            }
        }

        let _ = writeln!(
            out,
            "\n| revocation, 2 replicas on one Redis: A revokes, B polled | trials | p50 ms | p99 ms | max ms | refused on B's first request | target (p99 ≤ 50 ms) |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---|");
        for (what, t) in [
            ("session \"Expire now\"", &r.sessions),
            ("service token delete", &r.tokens),
        ] {
            let p99 = percentile(&t.ms, 99.0);
            let _ = writeln!(
                out,
                "| {what} | {}{} | {:.2} | {:.2} | {:.2} | {}/{} | {} |",
                t.ms.len(),
                if t.failed > 0 {
                    format!(" ({} never refused)", t.failed)
                } else {
                    String::new()
                },
                percentile(&t.ms, 50.0),
                p99,
                t.ms.iter().copied().fold(f64::NAN, f64::max),
                t.first_poll,
                t.ms.len(),
                verdict(p99 <= 50.0 && t.failed == 0)
            );
        }

        let l = &Config::default().login;
        let _ = writeln!(
            out,
            "\n| login (argon2id m={} KiB, t={}, p={}), 4 connections, embedded store | logins/s | p50 ms | p99 ms |",
            l.argon2_memory_kib, l.argon2_iterations, l.argon2_parallelism
        );
        let _ = writeln!(out, "|---|---:|---:|---:|");
        let _ = writeln!(
            out,
            "| `POST /auth/login` (JSON), through the gateway | {:.1} | {:.1} | {:.1} |",
            r.login.rps(),
            r.login.p50_ms,
            r.login.p99_ms
        );
        out
    }
}

/// Sums the instructions and allocation calls of the newest dump of process `pid` (callgrind
/// writes one file per thread: `<name>.callgrind.<dump>-<thread>`), then removes it so the next
/// dump of the same process is read alone.
fn read_callgrind_dumps(dir: &Path, name: &str, _pid: &str) -> Result<(f64, f64), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    let prefix = format!("{name}.callgrind.");
    let files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&prefix) && !f.ends_with(".read"))
        })
        .collect();
    if files.is_empty() {
        return Err(format!("no callgrind dump {prefix}* in {}", dir.display()));
    }
    let mut ir = 0.0;
    let mut allocs = 0.0;
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
        let (i, a) = parse_callgrind(&text);
        ir += i;
        allocs += a;
        let done = file.with_extension(format!(
            "{}.read",
            file.extension().and_then(|e| e.to_str()).unwrap_or("")
        ));
        let _ = std::fs::rename(file, done);
    }
    Ok((ir, allocs))
}

/// (total instructions, calls to malloc/calloc/realloc) of one callgrind output file.
fn parse_callgrind(text: &str) -> (f64, f64) {
    let mut names: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut total = 0.0;
    let mut allocs = 0.0;
    let mut calling_alloc = false;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("summary:")
            .or_else(|| line.strip_prefix("totals:"))
        {
            total = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(total);
        } else if let Some(rest) = line.strip_prefix("fn=") {
            // Function names are compressed: "(12) name" the first time, "(12)" after that.
            if let Some((id, name)) = rest.split_once(' ') {
                names.insert(id.to_string(), name.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            let name = match rest.split_once(' ') {
                Some((id, name)) => {
                    names.insert(id.to_string(), name.to_string());
                    name.to_string()
                }
                None => names.get(rest).cloned().unwrap_or_default(),
            };
            calling_alloc = matches!(
                name.as_str(),
                "malloc" | "calloc" | "realloc" | "posix_memalign" | "aligned_alloc"
            );
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if calling_alloc {
                allocs += rest
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
            calling_alloc = false;
        }
    }
    (total, allocs)
}
