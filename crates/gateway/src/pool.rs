//! The account pool: which accounts exist, which may serve now, and which one serves the next request.
//!
//! Entries mirror the store (reloaded when its change counter moves). Each entry owns its credential cell (refresh
//! state) and its cooldowns, so removing an account drops all of its state.
//!
//! Invariant: every per-account map is bounded (model cooldowns are capped at [`MAX_MODEL_COOLDOWNS`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::account::{Account, AccountId};
use crate::error::GatewayError;
use crate::ratelimit::UnifiedLimits;
use crate::refresh::{CredentialCell, CredentialState, RefreshEngine};
use crate::store::{SharedStore, StoreError};

pub const MAX_MODEL_COOLDOWNS: usize = 32;

#[derive(Debug, Default)]
struct Cooldowns {
    account: Option<(Instant, String)>,
    models: Vec<(String, Instant)>,
    strikes: u32,
    limits: Option<UnifiedLimits>,
}

/// One account in the pool.
#[derive(Debug)]
pub struct AccountEntry {
    pub id: AccountId,
    pub cell: Arc<CredentialCell>,
    in_flight: AtomicUsize,
    served: AtomicU64,
    cooldowns: Mutex<Cooldowns>,
}

impl AccountEntry {
    fn new(account: Account) -> Arc<Self> {
        Arc::new(AccountEntry {
            id: account.id,
            cell: CredentialCell::new(account),
            in_flight: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            cooldowns: Mutex::new(Cooldowns::default()),
        })
    }

    fn cd(&self) -> MutexGuard<'_, Cooldowns> {
        self.cooldowns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Until when this account may not serve `model` (account-wide or model cooldown), if it may not now.
    pub fn cooling_until(&self, model: Option<&str>) -> Option<Instant> {
        let now = Instant::now();
        let mut cd = self.cd();
        cd.models.retain(|(_, t)| *t > now);
        let account = cd.account.as_ref().map(|(t, _)| *t).filter(|t| *t > now);
        let model = model.and_then(|m| {
            cd.models
                .iter()
                .find(|(name, _)| name == m)
                .map(|(_, t)| *t)
        });
        account.into_iter().chain(model).max()
    }

    /// Cools the whole account until `until`.
    pub fn cool_account(&self, until: Instant, reason: String) {
        let mut cd = self.cd();
        cd.strikes += 1;
        if cd.account.as_ref().is_none_or(|(t, _)| *t < until) {
            cd.account = Some((until, reason));
        }
    }

    /// Cools one model of this account until `until`.
    pub fn cool_model(&self, model: &str, until: Instant) {
        let now = Instant::now();
        let mut cd = self.cd();
        cd.strikes += 1;
        cd.models.retain(|(_, t)| *t > now);
        match cd.models.iter_mut().find(|(m, _)| m == model) {
            Some((_, t)) => *t = (*t).max(until),
            None => {
                if cd.models.len() >= MAX_MODEL_COOLDOWNS {
                    // Drop the one ending soonest; the map stays bounded whatever model names clients send.
                    if let Some(i) = cd
                        .models
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, (_, t))| *t)
                        .map(|(i, _)| i)
                    {
                        cd.models.swap_remove(i);
                    }
                }
                cd.models.push((model.to_string(), until));
            }
        }
    }

    /// Consecutive failures since the last success (for backoff growth).
    pub fn strikes(&self) -> u32 {
        self.cd().strikes
    }

    pub fn record_success(&self) {
        let mut cd = self.cd();
        cd.strikes = 0;
    }

    pub fn clear_cooldowns(&self) {
        let mut cd = self.cd();
        cd.account = None;
        cd.models.clear();
        cd.strikes = 0;
    }

    pub fn set_limits(&self, limits: UnifiedLimits) {
        self.cd().limits = Some(limits);
    }

    pub fn limits(&self) -> Option<UnifiedLimits> {
        self.cd().limits.clone()
    }

    pub fn cooldown_reason(&self) -> Option<String> {
        let now = Instant::now();
        self.cd()
            .account
            .as_ref()
            .filter(|(t, _)| *t > now)
            .map(|(_, r)| r.clone())
    }
}

/// A claim on an account for one request; the in-flight count drops with it.
#[derive(Debug)]
pub struct Lease {
    pub entry: Arc<AccountEntry>,
}

impl Lease {
    fn new(entry: Arc<AccountEntry>) -> Lease {
        entry.in_flight.fetch_add(1, Ordering::Relaxed);
        entry.served.fetch_add(1, Ordering::Relaxed);
        Lease { entry }
    }
}

impl Lease {
    /// A second claim on the same account (the stream relay holds one for as long as the client reads).
    pub fn clone_for(other: &Lease) -> Lease {
        other.entry.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease {
            entry: Arc::clone(&other.entry),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.entry.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Pool {
    entries: RwLock<Arc<Vec<Arc<AccountEntry>>>>,
    store: SharedStore,
    engine: RefreshEngine,
    seen_seq: AtomicU64,
    rotation: AtomicUsize,
}

/// Why an account was skipped, for the error a client gets when none can serve.
enum Skip {
    Cooling(Instant),
    Unusable,
}

impl Pool {
    pub fn new(store: SharedStore, engine: RefreshEngine) -> Self {
        Pool {
            entries: RwLock::new(Arc::new(Vec::new())),
            store,
            engine,
            seen_seq: AtomicU64::new(u64::MAX),
            rotation: AtomicUsize::new(0),
        }
    }

    pub fn engine(&self) -> &RefreshEngine {
        &self.engine
    }

    pub fn entries(&self) -> Arc<Vec<Arc<AccountEntry>>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn get(&self, id: AccountId) -> Option<Arc<AccountEntry>> {
        self.entries().iter().find(|e| e.id == id).cloned()
    }

    /// Reloads accounts from the store if anything changed since the last load. Entries of unchanged accounts keep
    /// their state; removed accounts are dropped with all of theirs.
    pub async fn sync(&self) -> Result<bool, StoreError> {
        let seq = self.store.change_seq().await?;
        let seq = u64::try_from(seq).unwrap_or(0);
        if self.seen_seq.load(Ordering::Acquire) == seq {
            return Ok(false);
        }
        let accounts = self.store.list_accounts().await?;
        let current = self.entries();
        let by_id: HashMap<AccountId, &Arc<AccountEntry>> =
            current.iter().map(|e| (e.id, e)).collect();
        let mut next = Vec::with_capacity(accounts.len());
        for account in accounts {
            match by_id.get(&account.id) {
                Some(entry) => {
                    entry.cell.observe_stored(account);
                    next.push(Arc::clone(entry));
                }
                None => next.push(AccountEntry::new(account)),
            }
        }
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.seen_seq.store(seq, Ordering::Release);
        Ok(true)
    }

    /// Picks the account for the next attempt: lowest priority tier first, then fewest in flight relative to weight,
    /// then most window headroom, rotating among equals. `exclude` lists accounts already tried for this request.
    pub fn select(
        &self,
        model: Option<&str>,
        exclude: &[AccountId],
    ) -> Result<Lease, GatewayError> {
        let entries = self.entries();
        let mut soonest: Option<Instant> = None;
        type Rank = (i32, u64, u64);
        let mut best: Option<(&Arc<AccountEntry>, Rank)> = None;
        let start = self.rotation.fetch_add(1, Ordering::Relaxed);
        let now = self.engine.now();
        let n = entries.len();
        for i in 0..n {
            let entry = &entries[(start + i) % n];
            if exclude.contains(&entry.id) {
                continue;
            }
            match usable(entry, model, now) {
                Ok(account) => {
                    let load =
                        (entry.in_flight() as u64 * 1_000_000) / u64::from(account.weight.max(1));
                    let utilization = entry.limits().and_then(|l| l.utilization()).unwrap_or(0.0);
                    let key = (account.priority, load, (utilization * 1000.0) as u64);
                    if best.as_ref().is_none_or(|(_, k)| key < *k) {
                        best = Some((entry, key));
                    }
                }
                Err(Skip::Cooling(t)) => soonest = Some(soonest.map_or(t, |s| s.min(t))),
                Err(Skip::Unusable) => {}
            }
        }
        if let Some((entry, _)) = best {
            return Ok(Lease::new(Arc::clone(entry)));
        }
        if let Some(t) = soonest {
            return Err(GatewayError::RateLimited {
                message: "every account is cooling down or backing off; retry after the time in retry-after".into(),
                retry_after_secs: crate::clock::retry_after_secs(t),
            });
        }
        Err(self.no_account_error())
    }

    fn no_account_error(&self) -> GatewayError {
        let entries = self.entries();
        if entries.is_empty() {
            return GatewayError::NoAccount(
                "the gateway has no upstream accounts: add one with `claude-gateway accounts add-key --name NAME KEY`, \
                 `claude-gateway login`, or `claude-gateway accounts import PATH`"
                    .into(),
            );
        }
        let reasons: Vec<String> = entries
            .iter()
            .map(|e| {
                let a = e.cell.account();
                let why = if a.disabled {
                    "disabled".to_string()
                } else {
                    match e.cell.state() {
                        (CredentialState::NeedsReauth, _, r) => {
                            format!("needs re-authentication: {}", r.unwrap_or_default())
                        }
                        _ => "unusable".to_string(),
                    }
                };
                format!("{} ({why})", a.name)
            })
            .collect();
        GatewayError::NoAccount(format!(
            "no usable upstream account: {}. Enable an account, log in again, or add one",
            reasons.join("; ")
        ))
    }

    /// Whether at least one account could serve now (readiness).
    pub fn any_usable(&self) -> bool {
        let now = self.engine.now();
        self.entries().iter().any(|e| usable(e, None, now).is_ok())
    }
}

fn usable(
    entry: &AccountEntry,
    model: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Arc<Account>, Skip> {
    let account = entry.cell.account();
    if account.disabled {
        return Err(Skip::Unusable);
    }
    match entry.cell.state() {
        (CredentialState::NeedsReauth, _, _) => return Err(Skip::Unusable),
        // A refresh that is backing off only matters once the current token no longer works.
        (CredentialState::RefreshBackoff, _, _)
            if crate::refresh::fresh(&account, now, crate::refresh::EXPIRY_SKEW) => {}
        (CredentialState::RefreshBackoff | CredentialState::Held, Some(t), _) => {
            return Err(Skip::Cooling(
                t.max(tokio::time::Instant::now() + Duration::from_secs(1)),
            ))
        }
        (CredentialState::RefreshBackoff | CredentialState::Held, None, _) => {
            return Err(Skip::Unusable)
        }
        (CredentialState::Ready, _, _) => {}
    }
    if let Some(t) = entry.cooling_until(model) {
        return Err(Skip::Cooling(t));
    }
    Ok(account)
}

/// A short jittered cooldown after an overload or server failure.
pub fn jittered(base: Duration) -> Duration {
    crate::backoff::Backoff::new(base, base).delay(1) + base / 2
}
