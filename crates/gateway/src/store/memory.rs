//! An in-memory store with failure injection, for tests (deterministic under tokio's paused time: no I/O threads).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::sqlite::apply_update;
use super::{
    AccountUpdate, Fence, SharedCooldown, StoreError, StoreFuture, TokenCallSlot,
    TokenEndpointState, Usage,
};
use crate::account::{Account, AccountId, NewAccount};

/// (holder, fence, expires). Lease time is the store's own clock, as in SQL (the database's clock); here it is tokio's,
/// so paused-time tests can expire leases.
type LeaseRow = (String, i64, tokio::time::Instant);

#[derive(Debug, Default)]
pub struct MemoryStore {
    accounts: Mutex<BTreeMap<AccountId, Account>>,
    leases: Mutex<BTreeMap<AccountId, LeaseRow>>,
    cooldowns: Mutex<Vec<SharedCooldown>>,
    usage: Mutex<BTreeMap<AccountId, Usage>>,
    token_endpoint: Mutex<TokenEndpointState>,
    responses: Mutex<BTreeMap<String, super::StoredResponse>>,
    /// How many responses each `put_responses` call carried (tests of their group commit).
    pub response_batches: Mutex<Vec<usize>>,
    next_id: AtomicUsize,
    seq: AtomicUsize,
    /// When set, every write fails as if the store were unreachable.
    pub fail_writes: AtomicBool,
    /// When set, every operation fails.
    pub fail_all: AtomicBool,
    /// When set, a fenced write (a flight storing a rotation) panics: a bug inside a refresh task, after the endpoint
    /// rotated the token.
    pub panic_on_fenced_write: AtomicBool,
    /// When set, every write hangs forever (a store that accepted the connection but never answers).
    pub hang_writes: AtomicBool,
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

    /// Never returns while `hang_writes` is set.
    async fn hang(&self) {
        if self.hang_writes.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
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
            self.hang().await;
            self.check(true)?;
            let mut map = self.map();
            if map.values().any(|x| x.name == a.name) {
                return Err(StoreError::DuplicateName(a.name));
            }
            let id = self.next_id.fetch_add(1, Ordering::SeqCst) as AccountId + 1;
            let now = crate::clock::system_now();
            let account = Account {
                id,
                name: a.name,
                kind: a.kind,
                credential: a.credential,
                disabled: a.disabled,
                needs_reauth: None,
                banned: None,
                last_error: None,
                identity: a.identity,
                priority: a.priority,
                weight: a.weight,
                max_concurrency: None,
                refresh_blocked_until: None,
                refresh_block_reason: None,
                tags: Vec::new(),
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
            self.hang().await;
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
            account.updated_at = crate::clock::system_now();
            let out = account.clone();
            self.bump();
            Ok(out)
        })
    }

    fn remove_account(&self, id: AccountId) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.hang().await;
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

    fn acquire_refresh_lease(
        &self,
        id: AccountId,
        holder: &str,
        ttl: std::time::Duration,
    ) -> StoreFuture<'_, Option<i64>> {
        let holder = holder.to_string();
        Box::pin(async move {
            self.hang().await;
            self.check(true)?;
            let now = tokio::time::Instant::now();
            let mut leases = lock(&self.leases);
            let fence = match leases.get(&id) {
                Some((h, _, expires)) if *expires >= now && *h != holder => return Ok(None),
                Some((_, fence, _)) => fence + 1,
                None => 1,
            };
            leases.insert(id, (holder, fence, now + crate::clock::bounded(ttl)));
            Ok(Some(fence))
        })
    }

    fn renew_refresh_lease(
        &self,
        id: AccountId,
        fence: &Fence,
        ttl: std::time::Duration,
    ) -> StoreFuture<'_, bool> {
        let fence = fence.clone();
        Box::pin(async move {
            self.hang().await;
            self.check(true)?;
            match lock(&self.leases).get_mut(&id) {
                Some(l) if l.0 == fence.holder && l.1 == fence.token => {
                    l.2 = tokio::time::Instant::now() + crate::clock::bounded(ttl);
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
    }

    fn release_refresh_lease(&self, id: AccountId, fence: &Fence) -> StoreFuture<'_, ()> {
        let fence = fence.clone();
        Box::pin(async move {
            self.hang().await;
            self.check(true)?;
            if let Some(l) = lock(&self.leases).get_mut(&id) {
                if l.0 == fence.holder && l.1 == fence.token {
                    l.2 = tokio::time::Instant::now() - std::time::Duration::from_nanos(1);
                }
            }
            Ok(())
        })
    }

    fn update_account_fenced(
        &self,
        id: AccountId,
        expected_version: i64,
        fence: &Fence,
        update: AccountUpdate,
    ) -> StoreFuture<'_, Account> {
        let fence = fence.clone();
        Box::pin(async move {
            #[allow(clippy::panic)] // failure injection for tests: a panic inside a refresh flight
            if self.panic_on_fenced_write.load(Ordering::SeqCst) {
                panic!("injected panic in a fenced write");
            }
            self.hang().await;
            let held = lock(&self.leases)
                .get(&id)
                .is_some_and(|l| l.0 == fence.holder && l.1 == fence.token);
            if !held {
                self.hang().await;
                self.check(true)?;
                return Err(StoreError::Fenced(id));
            }
            self.update_account(id, expected_version, update).await
        })
    }

    fn take_token_call(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        interval: std::time::Duration,
        window: std::time::Duration,
    ) -> StoreFuture<'_, TokenCallSlot> {
        Box::pin(async move {
            self.check(true)?;
            let mut st = lock(&self.token_endpoint);
            let never = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
            let paused = st.paused_until.filter(|p| *p > now);
            match super::budget_decision(
                st.spent_until.unwrap_or(never),
                paused.unwrap_or(never),
                now,
                interval,
                window,
            ) {
                Ok(next) => {
                    st.spent_until = Some(next);
                    Ok(TokenCallSlot::Granted)
                }
                Err(until) => Ok(TokenCallSlot::Wait {
                    until,
                    paused: paused.map(|_| st.pause_reason.clone().unwrap_or_default()),
                }),
            }
        })
    }

    fn pause_token_endpoint(
        &self,
        until: chrono::DateTime<chrono::Utc>,
        reason: &str,
    ) -> StoreFuture<'_, ()> {
        let reason = reason.to_string();
        Box::pin(async move {
            self.check(true)?;
            let mut st = lock(&self.token_endpoint);
            if st.paused_until.is_none_or(|p| p < until) {
                st.paused_until = Some(until);
                st.pause_reason = Some(reason);
            }
            Ok(())
        })
    }

    fn token_endpoint_state(&self) -> StoreFuture<'_, TokenEndpointState> {
        Box::pin(async move {
            self.check(false)?;
            Ok(lock(&self.token_endpoint).clone())
        })
    }

    fn put_cooldown(&self, cooldown: SharedCooldown) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.hang().await;
            self.check(true)?;
            let mut all = lock(&self.cooldowns);
            all.retain(|c| !(c.account_id == cooldown.account_id && c.model == cooldown.model));
            all.push(cooldown);
            Ok(())
        })
    }

    fn list_cooldowns(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreFuture<'_, Vec<SharedCooldown>> {
        Box::pin(async move {
            self.check(false)?;
            Ok(lock(&self.cooldowns)
                .iter()
                .filter(|c| c.until > now)
                .cloned()
                .collect())
        })
    }

    fn clear_cooldowns(&self, id: AccountId) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.hang().await;
            self.check(true)?;
            lock(&self.cooldowns).retain(|c| c.account_id != id);
            Ok(())
        })
    }

    fn add_usage(&self, batch: Vec<(AccountId, Usage)>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.hang().await;
            self.check(true)?;
            let mut all = lock(&self.usage);
            for (id, u) in batch {
                all.entry(id).or_default().add(&u);
            }
            self.writes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }

    fn put_responses(&self, rows: Vec<super::StoredResponse>, keep: u64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.check(true)?;
            lock(&self.response_batches).push(rows.len());
            let mut all = lock(&self.responses);
            // As the SQL stores: every row written, then one prune by the newest row's time.
            let Some(newest) = rows.iter().map(|r| r.created_at).max() else {
                return Ok(());
            };
            for r in rows {
                all.insert(r.id.clone(), r);
            }
            all.retain(|_, s| s.expires_at >= newest);
            let keep = usize::try_from(keep).unwrap_or(usize::MAX);
            while all.len() > keep {
                let oldest = all
                    .values()
                    .min_by_key(|s| (s.created_at, s.id.clone()))
                    .map(|s| s.id.clone());
                match oldest {
                    Some(id) => all.remove(&id),
                    None => break,
                };
            }
            Ok(())
        })
    }

    fn get_response(
        &self,
        id: String,
        owner: String,
        now: chrono::DateTime<chrono::Utc>,
    ) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move {
            self.check(false)?;
            Ok(lock(&self.responses)
                .get(&id)
                .filter(|s| s.owner == owner && s.expires_at > now)
                .map(|s| s.body.clone()))
        })
    }

    fn usage_totals(&self) -> StoreFuture<'_, Vec<(AccountId, Usage)>> {
        Box::pin(async move {
            self.check(false)?;
            Ok(lock(&self.usage)
                .iter()
                .map(|(k, v)| (*k, v.clone()))
                .collect())
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
