//! Micro-benchmarks of the per-request auth work (criterion): parsing and resolving a session
//! cookie and a service token on a cache hit and on a miss (embedded store in a temp dir), the
//! IP / CIDR rules of a token, and minting vs reusing the upstream JWT.
//!
//! `cargo bench --bench hot_path` measures and then prints ratios between benchmarks of the same
//! run (so machine noise largely cancels out); `cargo test --benches` runs each once as a smoke
//! test. See BENCHMARKS.md for what the numbers mean.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use criterion::Criterion;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue};
use xelon_gateway::admin::{self, NewUser};
use xelon_gateway::auth::jwt::JwtSigner;
use xelon_gateway::auth::password::Passwords;
use xelon_gateway::auth::secret::{
    hash_secret, new_csrf_token, new_id, new_session_secret, SecretHash,
};
use xelon_gateway::auth::token::{self, IpBinding};
use xelon_gateway::clock::{Clock, SystemClock};
use xelon_gateway::metrics::Metrics;
use xelon_gateway::proxy::client_ip::client_ip;
use xelon_gateway::proxy::credential::{self, Credential};
use xelon_gateway::proxy::resolve::Resolver;
use xelon_gateway::store::cache::AuthCache;
use xelon_gateway::store::{Invalidation, ServiceToken, Session, SharedStore};

const COOKIE: &str = "xgw_session";

/// A store with one org, one user, one session and one token, and a resolver over it.
struct Fixture {
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    resolver: Resolver,
    signer: JwtSigner,
    now: i64,
    cookie_headers: HeaderMap,
    session_hash: SecretHash,
    bearer_headers: HeaderMap,
    token_hash: SecretHash,
}

fn headers(name: &'static str, value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    // Realistic neighbours: a browser sends more than our cookie.
    h.insert("accept", HeaderValue::from_static("application/json"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert(name, HeaderValue::from_str(value).unwrap());
    h
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let url = format!("embedded:{}", dir.path().join("gw.redb").display());
    let store: SharedStore = xelon_gateway::store::open(&url, metrics.clone()).unwrap();
    let now = SystemClock.now();
    let secret = new_session_secret();
    let token_value = token::new_token();
    let (session_hash, token_hash) = rt.block_on(async {
        let org = admin::create_org(&store, "Bench", now).await.unwrap();
        let user = admin::create_user(
            &store,
            &Passwords::new(19_456, 2, 1).unwrap(),
            NewUser {
                org_id: &org.id,
                email: "bench@example.com",
                first_name: "Bench",
                last_name: "User",
                admin: true,
                permissions: &[],
                password: "Bench-Password-42",
            },
            now,
        )
        .await
        .unwrap();
        let session_hash = hash_secret(&secret);
        store
            .create_session(&Session {
                id: new_id("ses"),
                token_hash: session_hash.clone(),
                user_id: user.id.clone(),
                org_id: org.id.clone(),
                ip: "127.0.0.1".into(),
                user_agent: "bench".into(),
                created_at: now,
                last_activity_at: now,
                csrf_token: new_csrf_token(),
                ended_at: None,
                ended_reason: None,
                second_factor: None,
                federated: None,
            })
            .await
            .unwrap();
        let token_hash = hash_secret(&token_value);
        store
            .create_token(&ServiceToken {
                id: new_id("tok"),
                token_hash: token_hash.clone(),
                name: "bench".into(),
                user_id: user.id.clone(),
                org_id: org.id.clone(),
                ip: None,
                client_id: new_id("cli"),
                created_at: now,
                // Used just now: no "last used" write is due during the benchmark.
                last_used_at: Some(now),
                last_used_ip: None,
            })
            .await
            .unwrap();
        (
            SecretHash::from_hex(&session_hash).unwrap(),
            SecretHash::from_hex(&token_hash).unwrap(),
        )
    });
    Fixture {
        _dir: dir,
        rt,
        resolver: Resolver {
            store,
            cache: Arc::new(AuthCache::new(300, 100_000)),
            metrics,
        },
        signer: JwtSigner::ephemeral("xelon-gateway", 300).unwrap(),
        now,
        cookie_headers: headers("cookie", &format!("theme=dark; {COOKIE}={secret}; lang=en")),
        session_hash,
        bearer_headers: headers("authorization", &format!("Bearer {token_value}")),
        token_hash,
    }
}

/// Parse + shape check + SHA-256, as `request_filter` does before any lookup.
fn cookie_hash(h: &HeaderMap) -> SecretHash {
    match credential::extract(h, COOKIE) {
        Credential::Session { token_hash } => token_hash,
        other => panic!("not a session credential: {other:?}"),
    }
}

/// Parse + shape and checksum check + SHA-256.
fn bearer_hash(h: &HeaderMap) -> SecretHash {
    match credential::extract(h, COOKIE) {
        Credential::Bearer { token_hash } => token_hash,
        other => panic!("not a well-formed bearer token: {other:?}"),
    }
}

fn bench_session_cookie(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("session_cookie");
    g.bench_function("parse", |b| {
        b.iter(|| cookie_hash(black_box(&f.cookie_headers)))
    });
    // Warm the cache (and give the entry a JWT, as the proxy would).
    let hit = f.rt.block_on(f.resolver.session(&f.session_hash, f.now));
    assert!(hit.unwrap().is_some());
    f.resolver.cache.set_jwt(
        &f.session_hash,
        HeaderValue::from_static("jwt"),
        f.now + 300,
    );
    g.bench_function("hit", |b| {
        b.iter(|| {
            let hash = cookie_hash(black_box(&f.cookie_headers));
            let hit = f.resolver.session(&hash, f.now).now_or_never();
            let hit = hit.unwrap().unwrap().unwrap();
            black_box((hit.auth.identity.user_id.len(), hit.jwt.is_some()))
        })
    });
    g.bench_function("miss_embedded", |b| {
        b.iter(|| {
            let hash = cookie_hash(black_box(&f.cookie_headers));
            // Evict just this entry (the organization stays cached, as for any new session).
            f.resolver
                .cache
                .invalidate(&Invalidation::Session(hash.hex()));
            let hit = f.rt.block_on(f.resolver.session(&hash, f.now));
            black_box(hit.unwrap().unwrap().auth.identity.user_id.len())
        })
    });
    g.finish();
}

fn bench_service_token(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("service_token");
    g.bench_function("parse", |b| {
        b.iter(|| bearer_hash(black_box(&f.bearer_headers)))
    });
    assert!(f
        .rt
        .block_on(f.resolver.token(&f.token_hash, f.now))
        .unwrap()
        .is_some());
    let ip: Option<IpAddr> = Some([127, 0, 0, 1].into());
    g.bench_function("hit", |b| {
        b.iter(|| {
            let hash = bearer_hash(black_box(&f.bearer_headers));
            let hit = f.resolver.token(&hash, f.now).now_or_never();
            let hit = hit.unwrap().unwrap().unwrap();
            let rules = hit.auth.token_rules.as_ref().unwrap();
            token::check_use(rules.binding, &rules.client_id, ip, None).unwrap();
            black_box(hit.auth.identity.user_id.len())
        })
    });
    g.bench_function("miss_embedded", |b| {
        b.iter(|| {
            let hash = bearer_hash(black_box(&f.bearer_headers));
            f.resolver
                .cache
                .invalidate(&Invalidation::Token(hash.hex()));
            let hit = f.rt.block_on(f.resolver.token(&hash, f.now));
            black_box(hit.unwrap().unwrap().auth.identity.user_id.len())
        })
    });
    g.finish();
}

fn bench_ip_rules(c: &mut Criterion) {
    let mut g = c.benchmark_group("ip_check");
    let v4: Option<IpAddr> = Some("203.0.113.9".parse().unwrap());
    let v6: Option<IpAddr> = Some("2001:db8::42".parse().unwrap());
    let single = Some(IpBinding::parse("203.0.113.9").unwrap());
    let range4 = Some(IpBinding::parse("203.0.113.0/24").unwrap());
    let range6 = Some(IpBinding::parse("2001:db8::/32").unwrap());
    let cases = [
        ("unbound", None, v4, None),
        ("single", single, v4, None),
        ("range_v4", range4, v4, Some("cli_1")),
        ("range_v6", range6, v6, Some("cli_1")),
    ];
    for (name, binding, ip, x_user_id) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                token::check_use(
                    black_box(binding),
                    black_box("cli_1"),
                    black_box(ip),
                    black_box(x_user_id),
                )
            })
        });
    }
    // The client IP behind two trusted proxies (X-Forwarded-For walked from the right).
    let trusted = vec!["10.0.0.0/8".parse().unwrap()];
    let mut xff = HeaderMap::new();
    xff.insert(
        "x-forwarded-for",
        HeaderValue::from_static("198.51.100.7, 203.0.113.9, 10.0.0.2"),
    );
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    g.bench_function("client_ip_trusted_xff", |b| {
        b.iter(|| client_ip(black_box(peer), black_box(&xff), black_box(&trusted)))
    });
    g.finish();
}

fn bench_jwt(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("jwt");
    let hit =
        f.rt.block_on(f.resolver.session(&f.session_hash, f.now))
            .unwrap()
            .unwrap();
    let identity = hit.auth.identity.clone();
    g.bench_function("mint", |b| {
        b.iter(|| f.signer.mint(black_box(&identity), f.now).unwrap())
    });
    let (jwt, exp) = f.signer.mint(&identity, f.now).unwrap();
    f.resolver
        .cache
        .set_jwt(&f.session_hash, HeaderValue::from_str(&jwt).unwrap(), exp);
    g.bench_function("reuse", |b| {
        b.iter(|| {
            let hit = f.resolver.cache.get(black_box(&f.session_hash), f.now);
            hit.unwrap().jwt.unwrap()
        })
    });
    g.finish();
}

/// What a cache hit cannot go below: a SHA-256 of the secret and one hash map lookup.
fn bench_baseline(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("baseline");
    let secret = "xgs_0123456789012345678901234567890123456789012";
    g.bench_function("sha256", |b| b.iter(|| SecretHash::of(black_box(secret))));
    // A std map (SipHash) with the same key type the cache uses.
    let map: HashMap<SecretHash, Arc<str>> = (0..1000)
        .map(|i| (SecretHash::of(&i.to_string()), Arc::from("v")))
        .chain([(f.session_hash, Arc::from("v"))])
        .collect();
    g.bench_function("hashmap_lookup", |b| {
        b.iter(|| map.get(black_box(&f.session_hash)).cloned())
    });
    g.finish();
}

/// Where criterion writes its results (its own default, made explicit so we can read them).
fn output_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .to_path_buf()
        });
    target.join("criterion")
}

/// The median of one benchmark of this run, in nanoseconds (`None` if it was not run this time:
/// a filter may have skipped it, leaving an older result on disk).
fn median_ns(dir: &Path, group: &str, name: &str, since: SystemTime) -> Option<f64> {
    let path = dir
        .join(group)
        .join(name)
        .join("new")
        .join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn print_ratios(dir: &Path, since: SystemTime) {
    let rows = [
        (
            "cookie: hit ÷ parse+hash",
            "session_cookie/hit",
            "session_cookie/parse",
        ),
        (
            "cookie: miss (embedded) ÷ hit",
            "session_cookie/miss_embedded",
            "session_cookie/hit",
        ),
        (
            "token: hit ÷ parse+checksum+hash",
            "service_token/hit",
            "service_token/parse",
        ),
        (
            "token: miss (embedded) ÷ hit",
            "service_token/miss_embedded",
            "service_token/hit",
        ),
        (
            "ip: single ÷ unbound",
            "ip_check/single",
            "ip_check/unbound",
        ),
        (
            "ip: range v4 ÷ unbound",
            "ip_check/range_v4",
            "ip_check/unbound",
        ),
        (
            "ip: range v6 ÷ unbound",
            "ip_check/range_v6",
            "ip_check/unbound",
        ),
        ("jwt: mint ÷ reuse", "jwt/mint", "jwt/reuse"),
        (
            "cookie hit ÷ (sha256 + map lookup)",
            "session_cookie/hit",
            "baseline/sha256+baseline/hashmap_lookup",
        ),
    ];
    let get = |id: &str| -> Option<f64> {
        id.split('+')
            .map(|part| {
                let (g, n) = part.split_once('/')?;
                median_ns(dir, g, n, since)
            })
            .sum()
    };
    println!();
    println!("ratios of medians measured in this run:");
    println!(
        "  {:<38} {:>12} {:>12} {:>8}",
        "", "ns", "baseline ns", "ratio"
    );
    for (label, a, b) in rows {
        match (get(a), get(b)) {
            (Some(x), Some(y)) => {
                println!("  {label:<38} {x:>12.1} {y:>12.1} {:>8.2}", x / y)
            }
            _ => println!("  {label:<38} (not measured in this run)"),
        }
    }
}

fn main() {
    let started = SystemTime::now();
    let dir = output_dir();
    let mut c = Criterion::default()
        .output_directory(&dir)
        .configure_from_args();
    let f = fixture();
    bench_session_cookie(&mut c, &f);
    bench_service_token(&mut c, &f);
    bench_ip_rules(&mut c);
    bench_jwt(&mut c, &f);
    bench_baseline(&mut c, &f);
    c.final_summary();
    // Only `cargo bench` measures (cargo passes --bench); `cargo test` just runs each once.
    if std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test") {
        print_ratios(&dir, started);
    }
}
