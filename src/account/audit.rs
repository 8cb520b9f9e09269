//! The audit log from the account app's side: `Audit` records an event (best effort: the
//! action it describes has already happened, so a store hiccup is logged and counted rather
//! than turned into a failed request), and `GET /auth/api/v1/orgs/{org}/audit` pages through
//! an organization's entries for its admins.
//!
//! What is recorded, and where (`org_id`):
//! - `login_succeeded` in the session's organization; `login_failed` (a wrong password for an
//!   existing account) in every organization of that account. Attempts for unknown emails
//!   have no organization and are not recorded, nor are attempts refused by the rate limit
//!   (they never reach the password check, and would let anyone flood the log).
//! - `logout`, `session_expired_by_admin`, `service_token_created` / `_deleted`,
//!   `member_created` / `_removed` in the organization concerned.
//! - `password_changed`, `email_changed`: about the person, so in every organization they
//!   belong to.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::administered_org;
use super::error::ApiError;
use super::extract::Caller;
use super::AppState;
use crate::clock::rfc3339;
use crate::store::{audit_id, is_audit_id, AuditEntry, AuditEvent, AUDIT_PAGE_MAX};

/// Entries per page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 50;

/// An event about to be recorded.
pub struct Audit {
    event: AuditEvent,
    actor: Option<String>,
    target: Option<String>,
    ip: String,
    user_agent: String,
    details: BTreeMap<String, String>,
}

impl Audit {
    /// An event without a signed-in actor (a login attempt).
    pub fn anonymous(event: AuditEvent, ip: &str, user_agent: &str) -> Self {
        Self {
            event,
            actor: None,
            target: None,
            ip: ip.to_string(),
            user_agent: user_agent.to_string(),
            details: BTreeMap::new(),
        }
    }

    /// An event done by the signed-in caller, from their address and browser.
    pub fn by(caller: &Caller, event: AuditEvent) -> Self {
        Self {
            actor: Some(caller.user.id.clone()),
            ..Self::anonymous(event, &caller.client_ip, &caller.user_agent)
        }
    }

    pub fn actor(mut self, user_id: &str) -> Self {
        self.actor = Some(user_id.to_string());
        self
    }

    pub fn target(mut self, id: &str) -> Self {
        self.target = Some(id.to_string());
        self
    }

    pub fn detail(mut self, key: &str, value: &str) -> Self {
        self.details.insert(key.to_string(), value.to_string());
        self
    }

    /// Appends the event to the organization's log.
    pub async fn record(&self, state: &AppState, org_id: &str) {
        let now = state.clock.now();
        let entry = AuditEntry {
            id: audit_id(now, rand::random()),
            time: now,
            org_id: org_id.to_string(),
            event: self.event,
            actor_user_id: self.actor.clone(),
            target: self.target.clone(),
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            details: self.details.clone(),
        };
        match state.store.append_audit(&entry).await {
            Ok(()) => state
                .metrics
                .audit_events
                .with_label_values(&[self.event.as_str()])
                .inc(),
            // Counted in xgw_store_errors_total{op="append_audit"} when the store is down.
            Err(e) => tracing::warn!(
                error = %e,
                event = self.event.as_str(),
                org_id,
                "cannot write an audit log entry"
            ),
        }
    }

    /// Appends the event to the log of every organization `user` belongs to.
    pub async fn record_for(&self, state: &AppState, user: &crate::store::User) {
        for m in &user.memberships {
            self.record(state, &m.org_id).await;
        }
    }

    /// Appends the event to the log of each organization (e.g. every one a user belongs to).
    pub async fn record_in<'a>(&self, state: &AppState, org_ids: impl Iterator<Item = &'a str>) {
        for org_id in org_ids {
            self.record(state, org_id).await;
        }
    }
}

#[derive(Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "id": e.id,
        "time": rfc3339(e.time),
        "organization_id": e.org_id,
        "type": e.event.as_str(),
        "actor_user_id": e.actor_user_id,
        "target": e.target,
        "ip": e.ip,
        "user_agent": e.user_agent,
        "details": e.details,
    })
}

/// `GET /auth/api/v1/orgs/{org_id}/audit?limit=&before=`: newest first. `before` is the `id`
/// of the last entry already seen (the previous page's `next_before`).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<String>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    administered_org(&state, &caller, &org_id).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=AUDIT_PAGE_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_limit", "limit must be a number from 1 to 200")
            })?,
    };
    if let Some(before) = q.before.as_deref() {
        if !is_audit_id(before) {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "before must be the id of an audit entry (the next_before of the previous page)",
            ));
        }
    }
    let entries = state
        .store
        .list_audit(&org_id, q.before.as_deref(), limit)
        .await?;
    // A full page may have more behind it; a short one is the end.
    let next_before = if entries.len() == limit {
        entries.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(Json(json!({
        "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
        "next_before": next_before,
    })))
}
