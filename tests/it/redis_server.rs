//! A throwaway `redis-server` for the Redis backend tests: its own port, no persistence, and a
//! private working directory, so tests neither share state nor leave files behind.
//!
//! If `REDIS_URL` is set, that server is used instead and nothing is spawned. Tests then share
//! one database (run them with `--test-threads=1` against a Redis you can wipe), and the
//! outage tests, which must stop the server, skip themselves (`is_external`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RedisServer {
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    external: bool,
}

impl RedisServer {
    /// Starts a fresh server (or attaches to `REDIS_URL`) and waits until it answers PING.
    pub fn start() -> RedisServer {
        if let Ok(url) = std::env::var("REDIS_URL") {
            let port = redis::Client::open(url.as_str())
                .ok()
                .and_then(|c| match &c.get_connection_info().addr {
                    redis::ConnectionAddr::Tcp(_, port) => Some(*port),
                    _ => None,
                })
                .unwrap_or(6379);
            return RedisServer {
                url,
                port,
                child: None,
                dir: tempfile::tempdir().expect("create a temp dir"),
                external: true,
            };
        }
        // A port picked by binding :0 may be taken again before redis-server binds it; try a
        // few times rather than fail a test on that race.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut server = RedisServer {
                url: format!("redis://127.0.0.1:{port}/"),
                port,
                child: None,
                dir: tempfile::tempdir().expect("create a temp dir for redis-server"),
                external: false,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// True when the server came from `REDIS_URL` and cannot be stopped by the tests.
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// Kills the server (SIGKILL: an outage, not a polite shutdown).
    pub fn stop(&mut self) {
        assert!(!self.external, "cannot stop an external REDIS_URL server");
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted) and waits for it.
    pub fn restart(&mut self) {
        assert!(
            !self.external,
            "cannot restart an external REDIS_URL server"
        );
        self.stop();
        // The old socket may linger for a moment; redis-server binds with SO_REUSEADDR, but
        // retry a few times in case the kernel is still releasing the port.
        let mut last_error = String::new();
        for _ in 0..10 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => {
                    last_error = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        panic!(
            "redis-server did not restart on port {}: {last_error}",
            self.port
        );
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, like a hung
    /// host. `resume` thaws it.
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&mut self, sig: &str) {
        assert!(!self.external, "cannot signal an external REDIS_URL server");
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (needed by the Redis backend tests); \
                 install it with `sudo apt-get install -y redis-server`, \
                 or point REDIS_URL at a running server"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if pings(self.port) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("exited with {status} (port {} taken?)", self.port));
                }
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(format!(
                    "no PONG on port {} within {READY_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// One inline PING over a plain socket: readiness must not depend on the client under test.
fn pings(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].starts_with(b"+PONG"),
        Err(_) => false,
    }
}
