//! Work that needs the Redis deployment: revocation propagation between two replicas, and the
//! many distinct sessions that keep the credential cache cold.

use std::time::{Duration, Instant};

use serde_json::Value;
use xelon_gateway::auth::secret::{hash_secret, new_csrf_token, new_id, new_session_secret};
use xelon_gateway::clock::{Clock, SystemClock};
use xelon_gateway::store::{Session, SharedStore};

use crate::seed::{create_token, login, Gateway, Login};

/// How long a replica may keep accepting a revoked credential before the trial counts as failed.
pub const POLL_LIMIT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct Trials {
    /// Milliseconds from replica A's answer to replica B's first refusal.
    pub ms: Vec<f64>,
    /// Trials where B's very first request after A answered was already refused.
    pub first_poll: usize,
    /// Trials where B still accepted the credential after `POLL_LIMIT`.
    pub failed: usize,
}

/// GETs `path` through `gw` with the given client and header until it is refused (401) or
/// `POLL_LIMIT` passes. Returns (time of refusal, polls needed).
async fn poll_until_refused(
    client: &reqwest::Client,
    url: &str,
    header: Option<(&str, &str)>,
) -> Result<Option<(Instant, usize)>, String> {
    let deadline = Instant::now() + POLL_LIMIT;
    let mut polls = 0;
    while Instant::now() < deadline {
        polls += 1;
        let mut req = client.get(url);
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let status = req.send().await.map_err(|e| e.to_string())?.status();
        if status == 401 {
            return Ok(Some((Instant::now(), polls)));
        }
        if status != 200 {
            return Err(format!("replica B answered {status} while polling"));
        }
    }
    Ok(None)
}

async fn expect_ok(
    client: &reqwest::Client,
    url: &str,
    header: Option<(&str, &str)>,
) -> Result<(), String> {
    let mut req = client.get(url);
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let status = req.send().await.map_err(|e| e.to_string())?.status();
    if status == 200 {
        Ok(())
    } else {
        Err(format!("{url} answered {status}, expected 200"))
    }
}

fn record(t: &mut Trials, answered: Instant, outcome: Option<(Instant, usize)>) {
    match outcome {
        Some((refused, polls)) => {
            t.ms.push(refused.duration_since(answered).as_secs_f64() * 1e3);
            if polls == 1 {
                t.first_poll += 1;
            }
        }
        None => t.failed += 1,
    }
}

/// "Expire now" through replica A on a session replica B has cached; B is polled until it
/// refuses the cookie.
pub async fn session_trials(
    a: &Gateway,
    b: &Gateway,
    admin: &Login,
    org_id: &str,
    n: usize,
) -> Result<Trials, String> {
    let mut t = Trials::default();
    let on_b = b.url("/bench/revocation");
    for _ in 0..n {
        let victim = login(a).await?;
        let me: Value = victim
            .client
            .get(a.url("/auth/api/v1/me"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let id = me["session"]["id"].as_str().ok_or("me: no session id")?;
        // Twice: the first use may be the one that fills B's cache.
        expect_ok(&victim.client, &on_b, None).await?;
        expect_ok(&victim.client, &on_b, None).await?;
        let resp = admin
            .client
            .post(a.url(&format!("/auth/api/v1/orgs/{org_id}/sessions/{id}/expire")))
            .header("X-CSRF-Token", &admin.csrf)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let answered = Instant::now();
        if resp.status() != 204 {
            return Err(format!("expire answered {}", resp.status()));
        }
        let outcome = poll_until_refused(&victim.client, &on_b, None).await?;
        record(&mut t, answered, outcome);
    }
    Ok(t)
}

/// A service token deleted through replica A while replica B has it cached.
pub async fn token_trials(
    a: &Gateway,
    b: &Gateway,
    admin: &Login,
    org_id: &str,
    n: usize,
) -> Result<Trials, String> {
    let mut t = Trials::default();
    let on_b = b.url("/bench/revocation");
    // A client without cookies: only the token identifies it.
    let plain = reqwest::Client::new();
    for i in 0..n {
        let (token, id) = create_token(a, admin, org_id, &format!("revocation {i}")).await?;
        let bearer = format!("Bearer {token}");
        let header = Some(("Authorization", bearer.as_str()));
        expect_ok(&plain, &on_b, header).await?;
        expect_ok(&plain, &on_b, header).await?;
        let resp = admin
            .client
            .delete(a.url(&format!("/auth/api/v1/service-tokens/{id}")))
            .header("X-CSRF-Token", &admin.csrf)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let answered = Instant::now();
        if resp.status() != 204 {
            return Err(format!("token delete answered {}", resp.status()));
        }
        let outcome = poll_until_refused(&plain, &on_b, header).await?;
        record(&mut t, answered, outcome);
    }
    Ok(t)
}

/// Sessions written straight into the store through the same `create_session` the login uses
/// (one login each would spend the run hashing passwords). Returns (cookie values, session ids).
pub async fn create_sessions(
    store: &SharedStore,
    user_id: &str,
    org_id: &str,
    n: usize,
) -> Result<(Vec<String>, Vec<String>), String> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let now = SystemClock.now();
    let made: Vec<(String, String)> = stream::iter(0..n)
        .map(|_| async move {
            let secret = new_session_secret();
            let session = Session {
                id: new_id("ses"),
                token_hash: hash_secret(&secret),
                user_id: user_id.to_string(),
                org_id: org_id.to_string(),
                ip: "127.0.0.1".into(),
                user_agent: "xgw load benchmark".into(),
                created_at: now,
                last_activity_at: now,
                csrf_token: new_csrf_token(),
                ended_at: None,
                ended_reason: None,
                second_factor: None,
                federated: None,
            };
            store
                .create_session(&session)
                .await
                .map(|()| (secret, session.id))
                .map_err(|e| e.to_string())
        })
        .buffer_unordered(64)
        .try_collect()
        .await?;
    Ok(made.into_iter().unzip())
}

/// Deletes the benchmark's throwaway sessions straight from Redis (keys as docs/operations.md
/// lists them), so the sweepers do not walk them during later measurements. Not through
/// `end_session` + `purge_sessions`: the purge is one Lua script per organization, and over tens
/// of thousands of sessions it outlasts the store's 1 s command timeout.
pub async fn remove_sessions(
    redis: &mut redis::aio::MultiplexedConnection,
    org_id: &str,
    secrets: &[String],
    ids: &[String],
) -> Result<(), String> {
    for (secrets, ids) in secrets.chunks(1000).zip(ids.chunks(1000)) {
        let mut pipe = redis::pipe();
        for (secret, id) in secrets.iter().zip(ids) {
            pipe.cmd("DEL")
                .arg(format!("xgw:session:{}", hash_secret(secret)))
                .arg(format!("xgw:session_id:{id}"))
                .ignore();
        }
        pipe.cmd("SREM")
            .arg(format!("xgw:org_sessions:{org_id}"))
            .arg(ids)
            .ignore();
        pipe.query_async::<()>(redis)
            .await
            .map_err(|e| format!("removing benchmark sessions: {e}"))?;
    }
    Ok(())
}
