//! What the store keeps for operators: the audit log of admin actions and the replicas' heartbeats. [`OpsStore`] is
//! implemented once for SQLite and PostgreSQL (`store/ops_sql.rs`); the in-memory test store has none
//! ([`super::Store::ops`] is `None`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StoreFuture;

/// One state-changing admin action. Never holds a secret: `detail` is written by the admin routes from names and ids.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Assigned by the store (0 before it is written).
    pub id: i64,
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// `admin_key` or `session:<short id>`.
    pub actor: String,
    /// The method and route pattern, e.g. `POST /admin/accounts/{id}/disable`.
    pub action: String,
    /// The object acted on (an account or key id), when the route names one.
    pub target: Option<String>,
    /// The HTTP status the action ended with.
    pub status: u16,
    pub detail: Option<String>,
}

/// A replica's heartbeat: who it is and what it last saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplicaBeat {
    pub id: String,
    pub version: String,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub seen_at: DateTime<Utc>,
    /// Free-form facts (listen address, accounts, in flight) as JSON.
    pub detail: serde_json::Value,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::clock::rfc3339(*t))
}

pub trait OpsStore: Send + Sync {
    /// Appends an entry; returns its id.
    fn append_audit(&self, entry: AuditEntry) -> StoreFuture<'_, i64>;
    /// The newest entries first, at most `limit`, older than `before` (an id) when given.
    fn list_audit(&self, limit: u32, before: Option<i64>) -> StoreFuture<'_, Vec<AuditEntry>>;
    /// Writes (replaces) a replica's heartbeat.
    fn heartbeat(&self, beat: ReplicaBeat) -> StoreFuture<'_, ()>;
    /// Heartbeats seen since `since`, newest first; older rows are deleted.
    fn replicas(&self, since: DateTime<Utc>) -> StoreFuture<'_, Vec<ReplicaBeat>>;
}
