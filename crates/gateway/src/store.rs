//! Persistence of accounts behind one interface, so the embedded SQLite store and a shared PostgreSQL store are
//! interchangeable.
//!
//! Invariant: every account write is a compare-and-set on `version` (except creation and removal), and bumps it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::account::{Account, AccountId, Credential, Identity, NewAccount};

pub mod deadline;
pub mod encryption;
pub mod memory;
pub mod ops;
mod ops_sql;
pub mod postgres;
mod sql;
pub mod sqlite;
pub mod tenants;
mod tenants_sql;
mod upsert;

pub use upsert::{upsert_oauth, upsert_one, OauthAccount, Saved};

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;
pub type SharedStore = Arc<dyn Store>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no account {0}")]
    NotFound(String),
    #[error("account {id} changed concurrently (expected version {expected})")]
    Conflict { id: AccountId, expected: i64 },
    #[error("an account named {0:?} already exists")]
    DuplicateName(String),
    #[error("no client key {0}")]
    KeyNotFound(String),
    #[error("a client key named {0:?} already exists")]
    DuplicateKey(String),
    #[error("account {0}'s refresh lease was taken by another holder")]
    Fenced(AccountId),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data is invalid: {0}")]
    Corrupt(String),
    /// The credentials cannot be read with the configured store key (none configured, another key, damaged data).
    #[error("{0}")]
    Key(String),
}

/// A cooldown this far in the past is deleted by writers.
pub const COOLDOWN_RETENTION: Duration = Duration::from_secs(3600);

pub use crate::patch::Patch;

/// A change to an account; `None` (or `Patch::Keep`) leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AccountUpdate {
    pub name: Option<String>,
    pub credential: Option<Credential>,
    pub disabled: Option<bool>,
    pub needs_reauth: Patch<String>,
    /// Set when Anthropic refuses the organization for good; `Clear` lifts the ban.
    pub banned: Patch<String>,
    pub last_error: Patch<String>,
    /// Who the account is: each field known here overwrites the stored one; an unknown one keeps it.
    pub identity: Identity,
    pub priority: Option<i32>,
    pub weight: Option<u32>,
    pub max_concurrency: Patch<u32>,
    pub tags: Option<Vec<String>>,
    /// `Clear` lifts a refresh block.
    pub refresh_block: Patch<(DateTime<Utc>, String)>,
}

/// One account write of a batch ([`Store::write_accounts`]).
#[derive(Debug, Clone)]
pub enum AccountWrite {
    Insert(NewAccount),
    /// Applies `update` if the account is still at `version`.
    Update {
        id: AccountId,
        version: i64,
        update: AccountUpdate,
    },
}

/// Proof of holding an account's refresh lease: writes made with it fail once another holder took the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub holder: String,
    pub token: i64,
}

/// A message-endpoint cooldown shared through the store; `model` `None` = the whole account.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedCooldown {
    pub account_id: AccountId,
    pub model: Option<String>,
    pub until: DateTime<Utc>,
    pub reason: String,
}

/// The token endpoint's pacing state, shared by every process using the store (one row for the whole store).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenEndpointState {
    /// The budget's theoretical arrival time (GCRA): calls are spent up to this moment.
    pub spent_until: Option<DateTime<Utc>>,
    /// A token-endpoint 429 pauses every refresh until then (`rate_limit_scope = "endpoint"`).
    pub paused_until: Option<DateTime<Utc>>,
    pub pause_reason: Option<String>,
}

/// The answer to asking for one token-endpoint call.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenCallSlot {
    /// The call may go out now; it was counted.
    Granted,
    /// Not before `until`; `paused` carries the reason when the endpoint is paused (a 429).
    Wait {
        until: DateTime<Utc>,
        paused: Option<String>,
    },
}

/// Usage to add to an account's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
}

/// A Responses API conversation kept for `previous_response_id`: `body` is opaque to the store (JSON written and read
/// by `openai::responses::stored`); `owner` scopes it to the client key that created it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    pub id: String,
    pub owner: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Usage {
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// Adds `other` field by field, saturating: the numbers come from upstream and must never overflow.
    pub fn add(&mut self, other: &Usage) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cache_creation_tokens = self
            .cache_creation_tokens
            .saturating_add(other.cache_creation_tokens);
    }
}

pub trait Store: Send + Sync + std::fmt::Debug {
    /// A short description for logs ("sqlite ./data/gateway.db"), no secrets.
    fn describe(&self) -> String;
    /// Succeeds when the store answers.
    fn ping(&self) -> StoreFuture<'_, ()>;
    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>>;
    fn get_account(&self, id: AccountId) -> StoreFuture<'_, Option<Account>>;
    fn insert_account(&self, account: NewAccount) -> StoreFuture<'_, Account>;
    /// Writes many accounts at once (an import of many files): inserts and compare-and-set updates, each as
    /// `insert_account` / `update_account` would, in one transaction with one change-counter bump where the backend
    /// has transactions. Returns the accounts as written, in the order of `writes`.
    fn write_accounts(&self, writes: Vec<AccountWrite>) -> StoreFuture<'_, Vec<Account>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(writes.len());
            for w in writes {
                out.push(match w {
                    AccountWrite::Insert(a) => self.insert_account(a).await?,
                    AccountWrite::Update {
                        id,
                        version,
                        update,
                    } => self.update_account(id, version, update).await?,
                });
            }
            Ok(out)
        })
    }
    /// Applies `update` if the account is still at `expected_version`; returns the account as written.
    fn update_account(
        &self,
        id: AccountId,
        expected_version: i64,
        update: AccountUpdate,
    ) -> StoreFuture<'_, Account>;
    fn remove_account(&self, id: AccountId) -> StoreFuture<'_, ()>;
    /// A number that changes whenever any account changes.
    fn change_seq(&self) -> StoreFuture<'_, i64>;

    // --- coordination between processes (replicas) sharing the store ---

    /// Takes the refresh lease of an account for `ttl` unless another holder has an unexpired one (the same holder may
    /// take it again). Returns the fence
    /// token (growing with every new holder), or `None` when someone else holds it.
    fn acquire_refresh_lease(
        &self,
        id: AccountId,
        holder: &str,
        ttl: Duration,
    ) -> StoreFuture<'_, Option<i64>>;
    /// Gives the lease back (only if `fence` still holds it).
    fn release_refresh_lease(&self, id: AccountId, fence: &Fence) -> StoreFuture<'_, ()>;
    /// Extends a held lease to `ttl` from now; `false` when `fence` no longer holds it.
    fn renew_refresh_lease(
        &self,
        id: AccountId,
        fence: &Fence,
        ttl: Duration,
    ) -> StoreFuture<'_, bool>;
    /// `update_account`, but only while no other holder took the refresh lease after `fence`.
    fn update_account_fenced(
        &self,
        id: AccountId,
        expected_version: i64,
        fence: &Fence,
        update: AccountUpdate,
    ) -> StoreFuture<'_, Account>;
    /// Counts one token-endpoint call against the shared budget if it fits: one call per `interval`, at most `window`
    /// worth of calls ahead of `now` (the burst), and none while the endpoint is paused.
    fn take_token_call(
        &self,
        now: DateTime<Utc>,
        interval: Duration,
        window: Duration,
    ) -> StoreFuture<'_, TokenCallSlot>;
    /// Pauses every token-endpoint call until `until` (never shortens a longer pause).
    fn pause_token_endpoint(&self, until: DateTime<Utc>, reason: &str) -> StoreFuture<'_, ()>;
    fn token_endpoint_state(&self) -> StoreFuture<'_, TokenEndpointState>;
    /// Records a message-endpoint cooldown (a later one for the same scope replaces it).
    fn put_cooldown(&self, cooldown: SharedCooldown) -> StoreFuture<'_, ()>;
    /// Cooldowns still in force at `now`.
    fn list_cooldowns(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<SharedCooldown>>;
    fn clear_cooldowns(&self, id: AccountId) -> StoreFuture<'_, ()>;
    /// Adds a batch of usage to the totals.
    fn add_usage(&self, batch: Vec<(AccountId, Usage)>) -> StoreFuture<'_, ()>;
    fn usage_totals(&self) -> StoreFuture<'_, Vec<(AccountId, Usage)>>;
    /// Removes what the store keeps of overwritten values (SQLite: empties the WAL; PostgreSQL: rewrites the accounts
    /// table), after `store encrypt` or `store rotate-key`.
    fn scrub(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    /// Client keys, their counters and the usage log; `None` for stores that keep none (the in-memory test store).
    fn tenants(&self) -> Option<&dyn tenants::TenantStore> {
        None
    }

    // --- Responses API conversations ---

    /// Keeps responses (in this order: a later one with the same id replaces an earlier one), deleting expired ones
    /// and all but the newest `keep` (so the table stays bounded). One write for the whole batch.
    fn put_responses(&self, responses: Vec<StoredResponse>, keep: u64) -> StoreFuture<'_, ()>;
    /// The body of response `id` if `owner` created it and it has not expired at `now`.
    fn get_response(
        &self,
        id: String,
        owner: String,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, Option<String>>;
    /// The audit log and replica heartbeats; `None` for stores that keep none (the in-memory test store).
    fn ops(&self) -> Option<&dyn ops::OpsStore> {
        None
    }
}

/// The budget decision shared by every store: GCRA with the burst as its tolerance. `spent_until` is the stored
/// theoretical arrival time; returns the new one when the call fits, else when to ask again.
pub fn budget_decision(
    spent_until: DateTime<Utc>,
    paused_until: DateTime<Utc>,
    now: DateTime<Utc>,
    interval: Duration,
    window: Duration,
) -> Result<DateTime<Utc>, DateTime<Utc>> {
    let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let next = spent_until.max(now) + interval;
    if paused_until > now {
        return Err(paused_until.max(next - window));
    }
    if next - window <= now {
        Ok(next)
    } else {
        Err(next - window)
    }
}

/// Finds an account by id (all digits) or by name.
pub async fn find_account(store: &dyn Store, id_or_name: &str) -> Result<Account, StoreError> {
    let accounts = store.list_accounts().await?;
    let by_id = id_or_name.parse::<AccountId>().ok();
    accounts
        .into_iter()
        .find(|a| Some(a.id) == by_id || a.name == id_or_name)
        .ok_or_else(|| StoreError::NotFound(id_or_name.to_string()))
}

/// Opens the store the configuration names, with the store key from `CLAUDE_GATEWAY_STORE_KEY` or `store_key_file`.
pub async fn open(config: &crate::config::Config) -> Result<SharedStore, StoreError> {
    open_with(config, configured_encryption(config)?).await
}

/// The credential encryption the configuration asks for (none without a key).
pub fn configured_encryption(
    config: &crate::config::Config,
) -> Result<encryption::Encryption, StoreError> {
    encryption::Encryption::from_env_or_file(config.store_key_file.as_deref())
        .map_err(|e| StoreError::Key(e.to_string()))
}

/// Opens the store the configuration names with `encryption`.
pub async fn open_with(
    config: &crate::config::Config,
    encryption: encryption::Encryption,
) -> Result<SharedStore, StoreError> {
    match &config.store_url {
        Some(url) => Ok(Arc::new(
            postgres::PostgresStore::connect(url)
                .await?
                .with_encryption(encryption),
        )),
        None => Ok(Arc::new(
            sqlite::SqliteStore::open(&config.data_dir)
                .await?
                .with_encryption(encryption),
        )),
    }
}
