//! The result table of the load benchmark, in Markdown (BENCHMARKS.md quotes it), and the
//! statistics it uses.

use std::fmt::Write as _;
use std::time::Instant;

use xelon_gateway::config::Config;

use crate::tools::{self, WrkResult};
use crate::{replicas, row, Bench, Sample, Target};

pub(crate) fn median(v: &[f64]) -> f64 {
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

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The machine's CPU time counters (`cpu` line of /proc/stat: user nice system idle iowait irq
/// softirq steal ...), in ticks.
pub(crate) fn cpu_times() -> Vec<f64> {
    cpu_stat_lines()
        .into_iter()
        .find_map(|(name, ticks)| (name == "cpu").then_some(ticks))
        .unwrap_or_default()
}

/// The `cpu` lines of /proc/stat: the machine's (`cpu`) and each CPU's (`cpu0`, ...), with
/// their counters in ticks.
fn cpu_stat_lines() -> Vec<(String, Vec<f64>)> {
    std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu"))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next()?.to_string();
            Some((name, fields.filter_map(|v| v.parse().ok()).collect()))
        })
        .collect()
}

/// Busy and total time of some CPUs (their `cpuN` lines of /proc/stat), to tell how busy they
/// were between two readings.
pub(crate) struct CpuBusy {
    cpus: Vec<usize>,
    busy: f64,
    total: f64,
}

impl CpuBusy {
    /// Starts measuring `cpus`; every CPU if `None` (nothing pinned).
    pub(crate) fn start(cpus: Option<Vec<usize>>) -> CpuBusy {
        let cpus = cpus.unwrap_or_default();
        let (busy, total) = cpu_ticks(&cpus);
        CpuBusy { cpus, busy, total }
    }

    /// The busy fraction since `start` (0..1; NaN if /proc/stat could not be read).
    pub(crate) fn fraction(&self) -> f64 {
        let (busy, total) = cpu_ticks(&self.cpus);
        (busy - self.busy) / (total - self.total)
    }
}

/// (busy, total) ticks of `cpus` (all CPUs if empty): busy is everything but idle and iowait.
fn cpu_ticks(cpus: &[usize]) -> (f64, f64) {
    let mut busy = 0.0;
    let mut total = 0.0;
    for (name, ticks) in cpu_stat_lines() {
        let wanted = match name["cpu".len()..].parse::<usize>() {
            Ok(cpu) => cpus.contains(&cpu),
            Err(_) => cpus.is_empty(),
        };
        if !wanted {
            continue;
        }
        // Guest time is already counted in user time.
        let all: f64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
        busy += all - idle;
        total += all;
    }
    (busy, total)
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
pub(crate) struct Results {
    pub(crate) targets: Vec<Target>,
    pub(crate) tp: Vec<Vec<Sample>>,
    /// The bare proxy's closed-loop throughput with oha as the load generator.
    pub(crate) oha_capacity: f64,
    pub(crate) rates: Vec<f64>,
    pub(crate) lat_targets: Vec<usize>,
    /// By rate, then by latency target: one result per round.
    pub(crate) lat: Vec<Vec<Vec<tools::OhaResult>>>,
    pub(crate) sessions: replicas::Trials,
    pub(crate) tokens: replicas::Trials,
    pub(crate) login: WrkResult,
    pub(crate) load_before: String,
    pub(crate) cpu_before: Vec<f64>,
    pub(crate) started: Instant,
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
    pub(crate) fn report(&self, r: &Results) -> String {
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
             {}, {} connections, {} s per run",
            o.connections,
            o.secs,
            if o.latency_correction {
                "--latency-correction"
            } else {
                "WITHOUT --latency-correction (--uncorrected: a diagnostic, not the target's figure)"
            },
            o.oha_connections,
            o.latency_secs
        );
        let _ = writeln!(out, "- {}", self.pinning);
        let _ = writeln!(
            out,
            "\n| throughput (closed loop) | req/s | ÷ baseline | baseline (same round) | target | proxy CPU µs/req | proxy cores busy | upstream CPU µs/req | Redis commands/req | cache misses |"
        );
        let _ = writeln!(out, "|---|---:|---:|---|---|---:|---:|---:|---:|---:|");
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
            let baseline = if t.baseline == t.name {
                String::new()
            } else {
                r.targets[row(&r.targets, t.baseline)].label.to_string()
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.label,
                med(s, &|x| Some(x.rps)),
                fmt_opt(ratio, 3),
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
        let cpu = |i: usize| med(&r.tp[i], &|x| Some(x.cpu_us_per_req));
        let _ = writeln!(
            out,
            "\nAdded proxy CPU per request over the baseline (medians): {}",
            r.targets
                .iter()
                .enumerate()
                .filter(|(_, t)| t.baseline != t.name)
                .map(|(i, t)| format!(
                    "{} {:+.1} µs",
                    t.label,
                    cpu(i) - cpu(row(&r.targets, t.baseline))
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );

        for (k, rate) in r.rates.iter().enumerate() {
            let lat = &r.lat[k];
            let _ = writeln!(
                out,
                "\n| latency at {rate:.0} req/s ({} of bare's {:.0} req/s under oha), {}; added = row − first row | p50 ms | p99 ms | added p50 ms | added p99 ms | target (added p99 ≤ 0.3 ms) | busy, oha's CPU |",
                if k == 0 { "½" } else { "¼" },
                r.oha_capacity,
                if o.latency_correction {
                    "CO-corrected"
                } else {
                    "NOT CO-corrected"
                }
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---:|");
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
                        if o.latency_correction {
                            verdict(a99 <= 0.3).to_string()
                        } else {
                            "n/a (uncorrected)".to_string()
                        },
                    )
                };
                let _ = writeln!(
                    out,
                    "| {} | {:.3} | {:.3} | {add50} | {add99} | {target} | {:.0}% |",
                    r.targets[i].label,
                    p(j, |x| x.p50_ms),
                    p(j, |x| x.p99_ms),
                    p(j, |x| x.generator_cpu_busy) * 100.0
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
