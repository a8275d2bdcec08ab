//! `previous_response_id`: conversations kept in the store for responses created with `store: true`.
//!
//! What is kept is the Anthropic conversation as sent plus Claude's answer (so a continuation replays exactly what
//! Claude saw, signed thinking blocks included), not the Responses items. Rows expire after [`TTL`], at most
//! [`MAX_STORED`] are kept (the oldest go first), a conversation larger than [`MAX_BODY_BYTES`] is not kept, and a row
//! is only found with the client key that created it (its SHA-256, never the key itself). A continuation of a
//! response that was not kept (store: false, expired, too large, unknown, or another key's) is a 400 naming
//! `previous_response_id`.

use std::time::Duration;

use serde_json::Value;

use crate::clock::SharedClock;
use crate::openai::error::BadRequest;
use crate::store::{SharedStore, StoredResponse};

/// How long a stored response can be continued.
pub const TTL: Duration = Duration::from_secs(24 * 3600);
/// Stored responses kept at most; older ones are deleted first.
pub const MAX_STORED: u64 = 10_000;
/// A conversation larger than this is not kept.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Who may continue a stored response: a hash of the client key (`""` when the gateway takes no client keys).
pub fn owner(client_key: Option<&str>) -> String {
    client_key.map(crate::keys::hash).unwrap_or_default()
}

/// The stored conversation `id` continues, or a 400 saying why there is none.
pub async fn load(
    store: &SharedStore,
    clock: &SharedClock,
    id: &str,
    owner: &str,
) -> Result<Vec<Value>, LoadError> {
    let found = store
        .get_response(id.to_string(), owner.to_string(), clock.now())
        .await
        .map_err(|e| LoadError::Store(e.to_string()))?;
    let not_found = || {
        LoadError::BadRequest(BadRequest::invalid(
            "previous_response_id",
            format!("no stored response `{id}` for this key: responses are kept only when created with store: true, for {} hours", TTL.as_secs() / 3600),
        ))
    };
    let body = found.ok_or_else(not_found)?;
    match serde_json::from_str::<Value>(&body) {
        Ok(Value::Array(messages)) => Ok(messages),
        _ => Err(not_found()),
    }
}

#[derive(Debug)]
pub enum LoadError {
    BadRequest(BadRequest),
    Store(String),
}

/// Keeps a finished response's conversation (the messages sent, then Claude's answer).
#[derive(Debug)]
pub struct Saver {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub owner: String,
    pub messages: Vec<Value>,
}

impl Saver {
    /// Stores the conversation under `id`; a failure is logged (the answer already went out and stays valid; only a
    /// later continuation of it fails).
    pub async fn save(self, id: &str, answer: Vec<Value>) {
        let mut messages = self.messages;
        if !answer.is_empty() {
            messages.push(serde_json::json!({"role": "assistant", "content": answer}));
        }
        let body = Value::Array(messages).to_string();
        if body.len() > MAX_BODY_BYTES {
            tracing::info!(
                response = id,
                bytes = body.len(),
                "response too large to keep for previous_response_id"
            );
            return;
        }
        let now = self.clock.now();
        let row = StoredResponse {
            id: id.to_string(),
            owner: self.owner,
            body,
            created_at: now,
            expires_at: now + chrono::Duration::from_std(TTL).unwrap_or_default(),
        };
        if let Err(e) = self.store.put_response(row, MAX_STORED).await {
            tracing::warn!(response = id, error = %e, "could not keep the response for previous_response_id");
        }
    }
}
