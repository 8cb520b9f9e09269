//! Profiling modes of the load benchmark: `--perf DIR` records perf profiles of the proxies under
//! load; `--callgrind DIR` counts instructions and allocations per request under callgrind.
//! Processes are pinned as in the benchmark itself (harmless under callgrind, which counts).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::procs::{self, Role};
use crate::{row, Bench, Target};

impl Bench<'_> {
    /// Records a `perf` profile (with DWARF call graphs) of the bare proxy (with no credential,
    /// and with each credential header) and of the gateways with each cached credential, each
    /// under the same closed-loop load.
    pub(crate) async fn profile(
        &mut self,
        dir: &Path,
        targets: &[Target],
    ) -> Result<String, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let mut out = String::new();
        for name in [
            "bare",
            "bare-bearer",
            "bare-cookie",
            "gateway-bearer",
            "gateway-cookie",
            "gateway-redis-bearer",
        ] {
            let i = row(targets, name);
            let data = dir.join(format!("{name}.perf.data"));
            let pid = self.proc_of(targets[i].via).pid();
            let mut perf = tokio::process::Command::from(procs::command(Role::Rest, "perf"))
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

    /// With the proxies under callgrind: zeroes the counters, sends the same number of requests
    /// (oha, fixed count), dumps, and reads instructions and malloc/calloc/realloc calls per
    /// request from the dump. Stable where timings are not. Each row is also given against its
    /// baseline row (`Target::baseline`): the bare proxy with the same credential header.
    pub(crate) async fn count_instructions(
        &mut self,
        dir: &Path,
        targets: &[Target],
    ) -> Result<String, String> {
        let n: u32 = 2000;
        let mut out = format!(
            "\n| callgrind, {n} requests, 4 connections | instructions/req | allocations/req | baseline | added instructions/req | added allocations/req |\n|---|---:|---:|---|---:|---:|\n"
        );
        // Per request, by row name, for the rows after it.
        let mut counted: Vec<(&str, f64, f64)> = Vec::new();
        // (row, the name of its process's callgrind output)
        for (name, dump) in [
            ("bare", "bare"),
            ("bare-bearer", "bare"),
            ("bare-cookie", "bare"),
            ("gateway-bearer", "gateway"),
            ("gateway-cookie", "gateway"),
            ("gateway-redis-bearer", "gateway-redis"),
            ("gateway-redis-cookie", "gateway-redis"),
            ("gateway-cookie-jwt-only", "gateway-jwt-only"),
        ] {
            let t = &targets[row(targets, name)];
            let pid = self.proc_of(t.via).pid().to_string();
            let control = |arg: &str| {
                Command::new("callgrind_control")
                    .args([arg, &pid])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .map_err(|e| format!("callgrind_control: {e}"))
            };
            self.proc_of(t.via).move_to(Role::Proxy)?;
            control("-z")?;
            let mut oha = tokio::process::Command::from(procs::command(Role::Rest, &self.oha));
            oha.args(["--no-tui", "-n", &n.to_string(), "-c", "4"]);
            if let Some(header) = t.cred.header() {
                oha.arg("-H").arg(header);
            }
            let status = oha
                .arg(self.url_of(t.via))
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            tokio::time::timeout(Duration::from_secs(300), status)
                .await
                .map_err(|_| "oha under callgrind took over 300 s".to_string())?
                .map_err(|e| e.to_string())?;
            control("-d")?;
            self.proc_of(t.via).move_to(Role::Rest)?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (ir, allocs) = read_callgrind_dumps(dir, dump, &pid)?;
            let (ir, allocs) = (ir / f64::from(n), allocs / f64::from(n));
            let added = counted
                .iter()
                .find(|(row, _, _)| *row == t.baseline && t.baseline != name)
                .map_or_else(
                    || ("".to_string(), "".to_string(), "".to_string()),
                    |(row, b_ir, b_allocs)| {
                        (
                            row.to_string(),
                            format!("{:+.0}", ir - b_ir),
                            format!("{:+.1}", allocs - b_allocs),
                        )
                    },
                );
            let _ = writeln!(
                out,
                "| {name} | {ir:.0} | {allocs:.1} | {} | {} | {} |",
                added.0, added.1, added.2
            );
            counted.push((name, ir, allocs));
        }
        Ok(out)
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
