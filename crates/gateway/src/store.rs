//! Persistence of accounts behind one interface, so the embedded SQLite store and a shared PostgreSQL store are
//! interchangeable.
//!
//! Invariant: every account write is a compare-and-set on `version` (except creation and removal), and bumps it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::account::{Account, AccountId, Credential, NewAccount};

pub mod memory;
pub mod sqlite;

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
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store data is invalid: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying the same operation later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Conflict { .. }
        )
    }
}

/// A change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AccountUpdate {
    pub name: Option<String>,
    pub credential: Option<Credential>,
    pub disabled: Option<bool>,
    /// `Some(None)` clears the flag.
    pub needs_reauth: Option<Option<String>>,
    pub last_error: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub account_uuid: Option<Option<String>>,
    pub organization_uuid: Option<Option<String>>,
    pub organization_name: Option<Option<String>>,
    pub priority: Option<i32>,
    pub weight: Option<u32>,
}

pub trait Store: Send + Sync + std::fmt::Debug {
    /// A short description for logs ("sqlite ./data/gateway.db"), no secrets.
    fn describe(&self) -> String;
    /// Succeeds when the store answers.
    fn ping(&self) -> StoreFuture<'_, ()>;
    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>>;
    fn get_account(&self, id: AccountId) -> StoreFuture<'_, Option<Account>>;
    fn insert_account(&self, account: NewAccount) -> StoreFuture<'_, Account>;
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

/// Opens the store the configuration names.
pub async fn open(config: &crate::config::Config) -> Result<SharedStore, StoreError> {
    if config.store_url.is_some() {
        return Err(StoreError::Unavailable(
            "store_url (PostgreSQL) is not supported by this build yet; remove it to use the embedded store".into(),
        ));
    }
    Ok(Arc::new(sqlite::SqliteStore::open(&config.data_dir).await?))
}
