//! Child processes of the benchmark: started with their output in a log file, killed when
//! dropped (and by the watchdog if the run overstays), measured through /proc, and pinned to
//! CPUs (`command`): the proxy under test alone on the last CPU, everything else on the others.

use std::ffi::OsStr;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Pids of every child we started and have not reaped, for the watchdog.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr in `<dir>/<name>.log` and a pipe on stdin (our
    /// helper servers exit when it closes).
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Result<Proc, String> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        lock_children().push(child.id());
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the tail of its log if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                self.log_tail()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// User + system CPU time of the whole process (all threads) so far, in microseconds.
    pub fn cpu_us(&self) -> f64 {
        cpu_us(self.pid())
    }

    /// Moves every thread of the process to the CPUs of `role` (`taskset -a -p`), and checks
    /// that each of them got there. A no-op while nothing is pinned. The proxies idle among the
    /// `Rest` and are moved onto the proxy CPU only for their own runs: pinned there all the
    /// time, the idle gateways' background work (timers, the sweeper, Redis feeds) ran on the
    /// CPU being measured.
    pub fn move_to(&self, role: Role) -> Result<(), String> {
        let Some(cpus) = pinned_cpus(role) else {
            return Ok(());
        };
        let pid = self.pid().to_string();
        let moved = Command::new("taskset")
            .args(["-a", "-p", "-c", &cpu_list(&cpus), &pid])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map_err(|e| format!("{}: {e}", self.name))?
            .filter_map(|t| t.ok()?.file_name().to_str()?.parse::<u32>().ok());
        for tid in threads {
            let actual = cpus_allowed_of(&format!("/proc/{pid}/task/{tid}/status"));
            // A thread that ended meanwhile has no status left to read.
            if !moved || (!actual.is_empty() && actual != cpus) {
                return Err(format!(
                    "{}: thread {tid} may run on CPU {} after `taskset -a -p -c {}`",
                    self.name,
                    cpu_list(&actual),
                    cpu_list(&cpus)
                ));
            }
        }
        Ok(())
    }

    /// Reads back where the process may run (/proc/PID/status) and prints it; while pinning is
    /// on, whether that is where `role` belongs. Call it once the process is up: until taskset
    /// has exec'd the program, the pid is taskset's.
    pub fn verify_pinned(&self, role: Role) -> Option<bool> {
        let actual = cpus_allowed(self.pid());
        let wanted = pinned_cpus(role);
        eprintln!(
            "{} (pid {}, {role:?}): may run on CPU {}",
            self.name,
            self.pid(),
            cpu_list(&actual)
        );
        wanted.map(|w| w == actual)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        lock_children().retain(|p| *p != pid);
    }
}

fn lock_children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Ends the whole run if it takes longer than `limit`: kills our children (by pid: only what
/// we started), then exits non-zero.
pub fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("load benchmark: exceeded its time limit of {limit:?}; stopping");
        for pid in lock_children().iter() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        std::process::exit(2);
    });
}

fn clock_ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime from /proc/PID/stat (fields 14 and 15), in microseconds.
pub fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may contain spaces; count fields after its closing ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After ')': field 3 is index 0, so utime (14) is index 11 and stime (15) index 12.
    (tick(11) + tick(12)) * 1e6 / clock_ticks_per_sec()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(proc_: &mut Proc, port: u16, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        proc_.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!(
                "{} did not listen on port {port} within {limit:?}:\n{}",
                proc_.name,
                proc_.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Is `cmd` on the PATH?
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What a process is to the measurement, and so where it runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Role {
    /// The proxy being measured (bare proxy or a gateway), alone on the last CPU for its run
    /// (`Proc::move_to`); between their runs the proxies idle among the `Rest`.
    Proxy,
    /// Everything else the benchmark starts (upstream, redis-server, wrk, oha, perf): the other
    /// CPUs, so that it never competes with the proxy for its core.
    Rest,
    /// Every CPU: the gateway during the login run, where the work is argon2 hashing on its
    /// blocking threads and the figure is the machine's login capacity.
    All,
}

/// The CPUs of each role.
struct Pinning {
    proxy: Vec<usize>,
    rest: Vec<usize>,
}

/// Decided once, by `pin_cpus`, before the first process starts; `None` inside: unpinned.
static PINNING: OnceLock<Option<Pinning>> = OnceLock::new();

/// Decides whether and where processes are pinned, and returns the line the report prints
/// about it. Pinning needs at least 2 CPUs (of those this process may run on) and a working
/// `taskset` (util-linux); without one it warns and runs unpinned.
///
/// Why pin: with the proxy alone on its core, the proxy is the bottleneck and a throughput
/// ratio is a ratio of its CPU per request; and every wakeup between it and its peers (wrk, the
/// upstream, Redis) crosses cores, the same way for the bare proxy and the gateway. Unpinned,
/// the scheduler moves the peers between the cores, and the kernel's wakeup cost (~20 % of the
/// proxy's CPU in a perf profile) changes with where they happened to be.
pub fn pin_cpus(wanted: bool) -> String {
    let allowed = cpus_allowed(std::process::id());
    let (pinning, line) = if !wanted {
        (None, "no CPU pinning (--no-pin)".to_string())
    } else if allowed.len() < 2 {
        (
            None,
            format!("no CPU pinning: 1 CPU ({})", cpu_list(&allowed)),
        )
    } else if !taskset_works(&allowed) {
        eprintln!("load benchmark: WARNING: `taskset` (util-linux) is missing or cannot set CPU affinity here; running unpinned");
        (
            None,
            "no CPU pinning: `taskset` missing or not permitted".to_string(),
        )
    } else {
        let (last, others) = allowed.split_last().map_or((0, &[][..]), |(l, o)| (*l, o));
        let p = Pinning {
            proxy: vec![last],
            rest: others.to_vec(),
        };
        let line = format!(
            "CPU pinning (`taskset`): the proxy being measured alone on CPU {}; upstream, redis-server, wrk, oha, perf and the idle proxies on CPU {}",
            cpu_list(&p.proxy),
            cpu_list(&p.rest)
        );
        (Some(p), line)
    };
    let _ = PINNING.set(pinning);
    line
}

fn taskset_works(cpus: &[usize]) -> bool {
    have("taskset")
        && Command::new("taskset")
            .args(["-c", &cpu_list(cpus), "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The CPUs a process of `role` is pinned to, or `None` if nothing is pinned.
pub fn pinned_cpus(role: Role) -> Option<Vec<usize>> {
    PINNING.get()?.as_ref().map(|p| match role {
        Role::Proxy => p.proxy.clone(),
        Role::Rest => p.rest.clone(),
        Role::All => {
            let mut all = [p.rest.as_slice(), p.proxy.as_slice()].concat();
            all.sort_unstable();
            all
        }
    })
}

/// A command for `program`, started as `taskset -c LIST program ...` while pinning is on
/// (taskset sets the affinity and execs `program`: same pid, and the affinity is inherited by
/// every thread). Add the program's arguments to it as usual.
pub fn command(role: Role, program: impl AsRef<OsStr>) -> Command {
    match pinned_cpus(role) {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu_list(&cpus)).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// `command` for `program` run under `wrapper` (e.g. valgrind and its options), if any.
pub fn wrapped_command(role: Role, wrapper: &[String], program: impl AsRef<OsStr>) -> Command {
    match wrapper.split_first() {
        Some((first, args)) => {
            let mut c = command(role, first);
            c.args(args).arg(program);
            c
        }
        None => command(role, program),
    }
}

/// The CPUs process `pid` may run on, from `Cpus_allowed_list` in /proc/PID/status.
pub fn cpus_allowed(pid: u32) -> Vec<usize> {
    cpus_allowed_of(&format!("/proc/{pid}/status"))
}

/// `Cpus_allowed_list` of a /proc status file (a process's or a thread's).
fn cpus_allowed_of(status: &str) -> Vec<usize> {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(parse_cpu_list)
        })
        .unwrap_or_default()
}

/// "0-2,5" -> [0, 1, 2, 5].
fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
            cpus.extend(a..=b);
        }
    }
    cpus
}

/// [0, 1, 2, 5] -> "0,1,2,5" (taskset's syntax; /proc prints ranges, compare parsed lists).
pub fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
