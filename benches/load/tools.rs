//! The load generators: wrk (Debian's) for closed-loop throughput, oha (crates.io) with
//! `--latency-correction` for latency at a fixed rate. Each run is bounded by its own duration.
//! Both run on the CPUs that are not the proxy's (`procs::Role::Rest`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::procs::{self, Role};

/// Prints one JSON line when wrk is done; wrk's own summary is not meant for machines.
const WRK_REPORT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\n{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// Sends every request with a different session cookie, read from the file given as the first
/// script argument (one cookie value per line), so that no request hits a cached session.
const WRK_ROTATE_COOKIES: &str = r#"
local cookies = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do cookies[#cookies + 1] = line end
end
request = function()
  i = i + 1
  if i > #cookies then i = 1 end
  return wrk.format(nil, nil, { ["Cookie"] = "xgw_session=" .. cookies[i] })
end
"#;

/// A JSON login, for login throughput.
const WRK_LOGIN: &str = r#"
init = function(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"email":"' .. args[1] .. '","password":"' .. args[2] .. '"}'
end
"#;

pub struct Scripts {
    pub plain: PathBuf,
    pub rotate: PathBuf,
    pub login: PathBuf,
}

impl Scripts {
    pub fn write(dir: &Path) -> std::io::Result<Scripts> {
        let s = Scripts {
            plain: dir.join("report.lua"),
            rotate: dir.join("rotate.lua"),
            login: dir.join("login.lua"),
        };
        std::fs::write(&s.plain, WRK_REPORT)?;
        std::fs::write(&s.rotate, format!("{WRK_ROTATE_COOKIES}{WRK_REPORT}"))?;
        std::fs::write(&s.login, format!("{WRK_LOGIN}{WRK_REPORT}"))?;
        Ok(s)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    pub requests: f64,
    pub secs: f64,
    /// Socket errors, timeouts and responses other than 2xx/3xx.
    pub errors: f64,
    /// Latency percentiles as wrk sees them (closed loop: not corrected for coordinated
    /// omission; used only for logins, where each request costs milliseconds).
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        self.requests / self.secs
    }
}

pub struct Wrk<'a> {
    pub url: &'a str,
    pub connections: u32,
    pub secs: u32,
    pub headers: &'a [String],
    pub script: &'a Path,
    pub script_args: &'a [String],
}

impl Wrk<'_> {
    /// One thread: wrk's event loop is cheap, and every cycle it does not use is one the proxy
    /// under test can have on this 2-core machine.
    pub async fn run(&self) -> Result<WrkResult, String> {
        let mut cmd = tokio::process::Command::from(procs::command(Role::Rest, "wrk"));
        cmd.arg("-t1")
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.secs))
            .arg("--timeout")
            .arg("5s")
            .arg("-s")
            .arg(self.script);
        for h in self.headers {
            cmd.arg("-H").arg(h);
        }
        cmd.arg(self.url);
        if !self.script_args.is_empty() {
            cmd.arg("--").args(self.script_args);
        }
        let out = run_bounded(cmd, self.secs).await?;
        let line = out
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| format!("wrk printed no report:\n{out}"))?;
        let v: Value = serde_json::from_str(line).map_err(|e| format!("wrk report: {e}"))?;
        let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
        Ok(WrkResult {
            requests: n("requests"),
            secs: n("duration_us") / 1e6,
            errors: n("connect") + n("read") + n("write") + n("status") + n("timeout"),
            p50_ms: n("p50_us") / 1e3,
            p99_ms: n("p99_us") / 1e3,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct OhaResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ok: f64,
    /// Responses other than 2xx and errors, except requests cut off by the run's deadline.
    pub failed: f64,
    /// How busy the CPUs oha ran on were during the run (0..1), set by the caller
    /// (`report::CpuBusy`): near 1, a latency tail is oha's and the upstream's run queue.
    pub generator_cpu_busy: f64,
}

/// oha at a fixed rate, latencies corrected for coordinated omission (measured from when each
/// request was due, not from when a busy connection got round to sending it) unless
/// `corrected` is false (`--uncorrected`, a diagnostic); or, with no rate, as fast as it can
/// (closed loop). `header`: one extra request header, if any.
pub async fn oha_run(
    oha: &Path,
    url: &str,
    header: Option<&str>,
    rate: Option<f64>,
    corrected: bool,
    connections: u32,
    secs: u32,
) -> Result<OhaResult, String> {
    let mut cmd = tokio::process::Command::from(procs::command(Role::Rest, oha));
    cmd.arg("--no-tui")
        .arg("--output-format")
        .arg("json")
        .arg("-z")
        .arg(format!("{secs}s"))
        .arg("-c")
        .arg(connections.to_string());
    if let Some(rate) = rate {
        cmd.arg("-q").arg(format!("{rate:.0}"));
        if corrected {
            cmd.arg("--latency-correction");
        }
    }
    if let Some(header) = header {
        cmd.arg("-H").arg(header);
    }
    cmd.arg(url);
    let out = run_bounded(cmd, secs).await?;
    let start = out
        .find('{')
        .ok_or_else(|| format!("oha printed no JSON:\n{out}"))?;
    let v: Value = serde_json::from_str(&out[start..]).map_err(|e| format!("oha JSON: {e}"))?;
    let pct = |k: &str| v["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1e3;
    let mut ok = 0.0;
    let mut failed = 0.0;
    if let Some(codes) = v["statusCodeDistribution"].as_object() {
        for (code, n) in codes {
            let n = n.as_f64().unwrap_or(0.0);
            if code.starts_with('2') {
                ok += n;
            } else {
                failed += n;
            }
        }
    }
    if let Some(errors) = v["errorDistribution"].as_object() {
        for (what, n) in errors {
            if !what.contains("deadline") {
                failed += n.as_f64().unwrap_or(0.0);
            }
        }
    }
    Ok(OhaResult {
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: pct("p50"),
        p99_ms: pct("p99"),
        ok,
        failed,
        generator_cpu_busy: f64::NAN,
    })
}

/// Runs a load generator for `secs` seconds and gives it 30 s more before giving up on it.
async fn run_bounded(mut cmd: tokio::process::Command, secs: u32) -> Result<String, String> {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let limit = Duration::from_secs(u64::from(secs) + 30);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| format!("{:?} did not finish within {limit:?}", cmd.as_std()))?
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.as_std().get_program()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}):\n{text}\n{}",
            cmd.as_std(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(text)
}
