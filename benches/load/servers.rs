//! The two bench-only servers, run as child processes of the driver (it re-runs its own
//! executable with `__upstream` or `__bare-proxy`): a fixed-response upstream and a bare pingora
//! passthrough with the gateway's own server settings and upstream peer, and no auth.
//!
//! Both exit when their standard input closes, so they never outlive the driver.

use std::io::Read;
use std::path::Path;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xelon_gateway::config::Config;

/// Ends this process once the driver is gone (its end of our stdin closes).
fn exit_with_parent() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

/// The platform stand-in: one thread, answers every request with the same 3 bytes. Parses only
/// what it must (end of headers, Content-Length) so it costs the proxies' upstream nearly nothing.
pub fn upstream(listen: &str) {
    exit_with_parent();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("upstream runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("upstream cannot listen on {listen}: {e}"));
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(serve(sock));
        }
    });
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &[u8]) -> usize {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.split("\r\n")
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn serve(mut sock: tokio::net::TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(RESPONSE.len() * 4);
    loop {
        match sock.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Answer every complete request in the buffer (clients may pipeline).
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let total = end + 4 + content_length(&buf[..end]);
            if buf.len() < total {
                break;
            }
            buf.drain(..total);
            out.extend_from_slice(RESPONSE);
        }
        if !out.is_empty() {
            if sock.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if buf.len() > 1 << 20 {
            return;
        }
    }
}

/// A passthrough: every request to the one upstream peer, nothing added, nothing checked.
struct Bare {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

/// The bare proxy, configured from the gateway's own config file: the same `ServerConf`
/// (threads, grace, shutdown timeout) and the same upstream peer (timeouts, resolved address)
/// through the same library functions the gateway's `build` uses.
pub fn bare_proxy(config_path: &Path, listen: &str) {
    exit_with_parent();
    let config = Config::load_from_env(config_path, true).expect("bare proxy config");
    let peer = xelon_gateway::platform_peer(&config).expect("bare proxy upstream");
    let mut server = Server::new_with_opt_and_conf(None, xelon_gateway::server_conf(&config));
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Bare { peer },
        "bare proxy",
    );
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever()
}
