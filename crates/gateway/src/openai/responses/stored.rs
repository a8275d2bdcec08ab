//! `previous_response_id`: conversations kept in the store for responses created with `store: true`.
//!
//! What is kept is the Anthropic conversation as sent plus Claude's answer (so a continuation replays exactly what
//! Claude saw, signed thinking blocks included), not the Responses items. Rows expire after [`TTL`], at most
//! [`MAX_STORED`] are kept (the oldest go first), a conversation larger than [`MAX_BODY_BYTES`] is not kept, and a row
//! is only found with the client key that created it (its SHA-256, never the key itself). A continuation of a
//! response that was not kept (store: false, expired, too large, unknown, or another key's) is a 400 naming
//! `previous_response_id`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

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
    pub keeper: Keeper,
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
        if let Err(e) = self.keeper.keep(row).await {
            tracing::warn!(response = id, error = %e, "could not keep the response for previous_response_id");
        }
    }
}

/// Most responses in one write, and the body bytes after which a write takes no more.
const MAX_BATCH: usize = 64;
const MAX_BATCH_BYTES: usize = MAX_BODY_BYTES;
/// Responses waiting for a write at most; a full queue makes savers wait (their answers are in memory already).
const QUEUE: usize = 1024;

type Job = (StoredResponse, oneshot::Sender<Result<(), String>>);

/// Writes stored responses in group commits: one writer task takes every response queued while the previous write ran
/// and keeps them in one write, so at 1,000 responses a second the store sees a few writes, not a thousand (each a
/// transaction of several round trips to SQLite's one writer thread). A response is still kept before
/// [`Keeper::keep`] returns, so a continuation sent right after its answer finds it; a saver that goes away (its
/// client disconnected) leaves its response in the write.
#[derive(Debug, Clone)]
pub struct Keeper(Arc<KeeperInner>);

#[derive(Debug)]
struct KeeperInner {
    store: SharedStore,
    queue: mpsc::Sender<Job>,
    /// The writer's end of the queue until the first response starts the writer.
    idle: Mutex<Option<mpsc::Receiver<Job>>>,
    /// The runtime the writer runs on: the one the Keeper was made in (the gateway's shared runtime, not a connection
    /// worker's), else the first saver's.
    runtime: Option<tokio::runtime::Handle>,
}

impl Keeper {
    pub fn new(store: SharedStore) -> Keeper {
        let (queue, rx) = mpsc::channel(QUEUE);
        Keeper(Arc::new(KeeperInner {
            store,
            queue,
            idle: Mutex::new(Some(rx)),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }))
    }

    /// Keeps `row` (at most [`MAX_STORED`] are kept; expired ones go) and returns once it is written.
    pub async fn keep(&self, row: StoredResponse) -> Result<(), String> {
        let idle = self.0.idle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(rx) = idle {
            // Not on a TaskTracker: the writer ends when the last Keeper is dropped and the queue is empty, after
            // every saver has its answer.
            let writer = write_batches(self.0.store.clone(), rx);
            match &self.0.runtime {
                Some(runtime) => drop(runtime.spawn(writer)),
                #[allow(clippy::disallowed_methods)]
                None => drop(tokio::spawn(writer)),
            }
        }
        let (done, written) = oneshot::channel();
        let gone = || "the response writer stopped".to_string();
        self.0.queue.send((row, done)).await.map_err(|_| gone())?;
        written.await.map_err(|_| gone())?
    }
}

/// The writer: each write takes what queued meanwhile, up to [`MAX_BATCH`] responses or [`MAX_BATCH_BYTES`].
async fn write_batches(store: SharedStore, mut queue: mpsc::Receiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut bytes = first.0.body.len();
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let Ok(job) = queue.try_recv() else { break };
            bytes += job.0.body.len();
            jobs.push(job);
        }
        let (rows, waiters): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
        let result = store
            .put_responses(rows, MAX_STORED)
            .await
            .map_err(|e| e.to_string());
        for w in waiters {
            // A saver that went away does not need the answer.
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]

    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::Store;

    fn row(i: usize) -> StoredResponse {
        let now = crate::clock::system_now();
        StoredResponse {
            id: format!("resp_{i}"),
            owner: "o".into(),
            body: format!("[{i}]"),
            created_at: now,
            expires_at: now + chrono::Duration::hours(1),
        }
    }

    async fn kept(store: &MemoryStore, i: usize) -> bool {
        let now = crate::clock::system_now();
        store
            .get_response(format!("resp_{i}"), "o".into(), now)
            .await
            .unwrap()
            .is_some()
    }

    fn batches(store: &MemoryStore) -> Vec<usize> {
        store.response_batches.lock().unwrap().clone()
    }

    /// Savers that queue while a write runs share the next write (real tasks; a current-thread runtime makes the
    /// interleaving the same every run): 100 at once are 2 writes of at most MAX_BATCH, and each saver returns only
    /// once its response is kept.
    #[tokio::test(flavor = "current_thread")]
    async fn savers_queued_together_share_one_write_and_return_once_kept() {
        let store = Arc::new(MemoryStore::default());
        let keeper = Keeper::new(store.clone());
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let (keeper, store) = (keeper.clone(), store.clone());
                tokio::spawn(async move {
                    keeper.keep(row(i)).await.unwrap();
                    assert!(kept(&store, i).await, "{i} returned before it was kept");
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(batches(&store), [MAX_BATCH, 100 - MAX_BATCH]);
        // Alone, a response is its own write.
        keeper.keep(row(100)).await.unwrap();
        assert_eq!(batches(&store).last(), Some(&1));
    }

    /// A saver whose client went away leaves its response in the write; a failed write fails each of its savers and
    /// the writer goes on with the next.
    #[tokio::test(flavor = "current_thread")]
    async fn a_saver_that_goes_away_is_still_kept_and_a_failed_write_fails_its_savers() {
        let store = Arc::new(MemoryStore::default());
        let keeper = Keeper::new(store.clone());
        let gone = tokio::spawn({
            let keeper = keeper.clone();
            async move { keeper.keep(row(1)).await }
        });
        tokio::task::yield_now().await; // it queued its response
        gone.abort();
        keeper.keep(row(2)).await.unwrap();
        assert!(kept(&store, 1).await && kept(&store, 2).await);

        store.fail_writes.store(true, Ordering::SeqCst);
        let failing: Vec<_> = (3..6)
            .map(|i| {
                let keeper = keeper.clone();
                tokio::spawn(async move { keeper.keep(row(i)).await })
            })
            .collect();
        for t in failing {
            let e = t.await.unwrap().unwrap_err();
            assert!(e.contains("injected store failure"), "{e}");
        }
        store.fail_writes.store(false, Ordering::SeqCst);
        keeper.keep(row(6)).await.unwrap();
        assert!(!kept(&store, 3).await && kept(&store, 6).await);
    }
}
