//! An in-memory store with failure injection, for tests (deterministic under tokio's paused time: no I/O threads).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::sqlite::apply_update;
use super::{AccountUpdate, StoreError, StoreFuture};
use crate::account::{Account, AccountId, NewAccount};

#[derive(Debug, Default)]
pub struct MemoryStore {
    accounts: Mutex<BTreeMap<AccountId, Account>>,
    next_id: AtomicUsize,
    seq: AtomicUsize,
    /// When set, every write fails as if the store were unreachable.
    pub fail_writes: AtomicBool,
    /// When set, every operation fails.
    pub fail_all: AtomicBool,
    pub writes: AtomicUsize,
}

impl MemoryStore {
    fn check(&self, write: bool) -> Result<(), StoreError> {
        if self.fail_all.load(Ordering::SeqCst)
            || (write && self.fail_writes.load(Ordering::SeqCst))
        {
            return Err(StoreError::Unavailable("injected store failure".into()));
        }
        Ok(())
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<AccountId, Account>> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

impl super::Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.check(false) })
    }

    fn list_accounts(&self) -> StoreFuture<'_, Vec<Account>> {
        Box::pin(async move {
            self.check(false)?;
            Ok(self.map().values().cloned().collect())
        })
    }

    fn get_account(&self, id: AccountId) -> StoreFuture<'_, Option<Account>> {
        Box::pin(async move {
            self.check(false)?;
            Ok(self.map().get(&id).cloned())
        })
    }

    fn insert_account(&self, a: NewAccount) -> StoreFuture<'_, Account> {
        Box::pin(async move {
            self.check(true)?;
            let mut map = self.map();
            if map.values().any(|x| x.name == a.name) {
                return Err(StoreError::DuplicateName(a.name));
            }
            let id = self.next_id.fetch_add(1, Ordering::SeqCst) as AccountId + 1;
            let now = chrono::Utc::now();
            let account = Account {
                id,
                name: a.name,
                kind: a.kind,
                credential: a.credential,
                disabled: a.disabled,
                needs_reauth: None,
                last_error: None,
                email: a.email,
                account_uuid: a.account_uuid,
                organization_uuid: a.organization_uuid,
                organization_name: a.organization_name,
                priority: a.priority,
                weight: a.weight,
                version: 1,
                created_at: now,
                updated_at: now,
            };
            map.insert(id, account.clone());
            self.bump();
            Ok(account)
        })
    }

    fn update_account(
        &self,
        id: AccountId,
        expected_version: i64,
        update: AccountUpdate,
    ) -> StoreFuture<'_, Account> {
        Box::pin(async move {
            self.check(true)?;
            let mut map = self.map();
            let account = map
                .get_mut(&id)
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            if account.version != expected_version {
                return Err(StoreError::Conflict {
                    id,
                    expected: expected_version,
                });
            }
            apply_update(account, update);
            account.version += 1;
            account.updated_at = chrono::Utc::now();
            let out = account.clone();
            self.bump();
            Ok(out)
        })
    }

    fn remove_account(&self, id: AccountId) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.check(true)?;
            self.map()
                .remove(&id)
                .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
            self.bump();
            Ok(())
        })
    }

    fn change_seq(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            self.check(false)?;
            Ok(self.seq.load(Ordering::SeqCst) as i64)
        })
    }
}
