//! The account pool: which accounts exist, which may serve now, and which one serves the next request.
//!
//! Entries mirror the store (reloaded when its change counter moves). Each entry owns its credential cell (refresh
//! state), its cooldowns and its rate-limit view, so removing an account drops all of its state.
//!
//! Choosing, in order: priority tier (lower first); a due half-open probe of a cooling account; conversation affinity
//! (unless that account carries far more than its peers); then weights, with accounts far above the least in-flight
//! load or far below the best window headroom skipped (see [`pick`]).
//!
//! Invariant: every per-account map is bounded (model cooldowns are capped at [`MAX_MODEL_COOLDOWNS`]); the affinity map
//! is bounded in size and age.

use std::collections::HashSet;
#[cfg(test)]
use std::sync::atomic::AtomicI64;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::account::AccountId;
use crate::affinity::AffinityMap;
use crate::config::PoolConfig;
use crate::error::GatewayError;
use crate::refresh::{CredentialState, RefreshEngine};
use crate::store::{SharedCooldown, SharedStore, StoreError};

mod check;
mod entry;
mod index;

pub use check::{secret_id, CheckSlot, Checked, Verdict};
pub use entry::AccountEntry;
#[cfg(test)]
use entry::MAX_MODEL_COOLDOWNS;
use index::{Changes, Index, Outcome};

/// Scheduling knobs, as durations.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub probe_interval: Duration,
    pub queue_wait: Duration,
    pub max_queue: usize,
    pub affinity_capacity: usize,
    pub affinity_ttl: Duration,
    pub affinity_load_factor: f64,
}

impl From<&PoolConfig> for PoolSettings {
    fn from(c: &PoolConfig) -> Self {
        PoolSettings {
            probe_interval: crate::clock::secs(c.probe_interval_secs),
            queue_wait: Duration::from_millis(c.queue_wait_ms),
            max_queue: c.max_queue,
            affinity_capacity: c.affinity_capacity,
            affinity_ttl: crate::clock::secs(c.affinity_ttl_secs),
            affinity_load_factor: c.affinity_load_factor,
        }
    }
}

/// A concurrency slot: a claim on an account for one request; the in-flight count drops with it. (Not to be confused
/// with the store's refresh lease.)
#[derive(Debug)]
pub struct Slot {
    pub entry: Arc<AccountEntry>,
    /// This request is the half-open probe of a cooling account: success clears the cooldown.
    pub probe: bool,
    freed: Arc<Notify>,
}

impl Slot {
    fn new(entry: Arc<AccountEntry>, probe: bool, freed: Arc<Notify>) -> Slot {
        entry.claim();
        Slot {
            entry,
            probe,
            freed,
        }
    }

    /// A second claim on the same account (the response body holds one for as long as the client reads).
    pub fn clone_for(other: &Slot) -> Slot {
        other.entry.claim_again();
        Slot {
            entry: Arc::clone(&other.entry),
            probe: false,
            freed: other.freed.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.entry.release();
        self.freed.notify_waiters();
    }
}

/// What a request asks of the pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct Criteria<'a> {
    pub model: Option<&'a str>,
    pub affinity: Option<u64>,
    pub exclude: &'a [AccountId],
    /// Account-name globs the client key may use (empty: any).
    pub accounts: &'a [String],
}

#[derive(Debug)]
pub struct Pool {
    entries: RwLock<Arc<Vec<Arc<AccountEntry>>>>,
    store: SharedStore,
    engine: RefreshEngine,
    settings: PoolSettings,
    seen_seq: AtomicU64,
    /// The ready index; its lock serializes choices (the load checks, the claim and the smooth weighted round-robin
    /// state must not interleave).
    index: Mutex<Index>,
    /// Where entries report changes the index must look at.
    changes: Arc<Changes>,
    affinity: AffinityMap,
    freed: Arc<Notify>,
    queued: AtomicUsize,
    /// Held for the whole of [`Pool::sync`].
    syncing: tokio::sync::Mutex<()>,
}

/// A place in the `max_concurrency` wait queue, given back on drop (also when the waiting future is dropped).
struct QueuePlace<'a>(&'a AtomicUsize);

impl<'a> QueuePlace<'a> {
    /// Takes a place if fewer than `max` are taken.
    fn take(queued: &'a AtomicUsize, max: usize) -> Option<QueuePlace<'a>> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| QueuePlace(queued))
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Choice {
    Chosen(Slot),
    Saturated,
    Cooling(Instant),
    None,
}

impl Pool {
    pub fn new(store: SharedStore, engine: RefreshEngine, settings: PoolSettings) -> Self {
        let affinity = AffinityMap::new(settings.affinity_capacity, settings.affinity_ttl);
        Pool {
            entries: RwLock::new(Arc::new(Vec::new())),
            store,
            engine,
            settings,
            seen_seq: AtomicU64::new(u64::MAX),
            index: Mutex::new(Index::default()),
            changes: Arc::new(Changes::default()),
            affinity,
            freed: Arc::new(Notify::new()),
            queued: AtomicUsize::new(0),
            syncing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn engine(&self) -> &RefreshEngine {
        &self.engine
    }

    /// The proactive refresh scan: every enabled OAuth account within its lead time starts its refresh.
    pub fn refresh_ahead(&self) {
        let entries = self.entries();
        self.engine()
            .refresh_ahead_all(entries.iter().map(|e| &e.cell));
    }

    pub fn entries(&self) -> Arc<Vec<Arc<AccountEntry>>> {
        self.entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn get(&self, id: AccountId) -> Option<Arc<AccountEntry>> {
        let entries = self.entries();
        position(&entries, id).map(|i| entries[i].clone())
    }

    /// Cools `entry` as a whole until `until`, here and (through the store) on every replica: for what Anthropic
    /// answered (429, 529, 5xx), which holds for every replica.
    pub fn cool_account(&self, entry: &Arc<AccountEntry>, until: Instant, reason: String) {
        entry.cool_account(until, reason.clone());
        self.share_cooldown(entry.id, None, until, reason);
    }

    /// Cools `entry` on this replica only: for failures of this replica's own path to upstream (connection refused,
    /// connect or read timeouts, DNS), which say nothing about the account for the others.
    pub fn cool_account_here(&self, entry: &Arc<AccountEntry>, until: Instant, reason: String) {
        entry.cool_account(until, reason);
    }

    /// A request succeeded on `entry`. When it was the half-open probe that ended a cooldown, the cooldown ends
    /// everywhere: the store forgets it too, so neither this replica's next sync nor another replica parks the
    /// account again.
    pub fn record_success(&self, entry: &Arc<AccountEntry>, probe: bool) {
        if !entry.record_success(probe) {
            return;
        }
        entry.bump_shared_clear_gen();
        let store = self.store.clone();
        let entry = Arc::clone(entry);
        self.engine.tasks().spawn(async move {
            if let Err(e) = store.clear_cooldowns(entry.id).await {
                tracing::warn!(account = entry.id, error = %e, "a probe ended a cooldown here, but the store still has it");
            }
            entry.bump_shared_clear_gen();
        });
    }

    /// Cools one model of `entry` until `until`, here and on every replica.
    pub fn cool_model(&self, entry: &Arc<AccountEntry>, model: &str, until: Instant) {
        entry.cool_model(model, until);
        self.share_cooldown(
            entry.id,
            Some(model.to_string()),
            until,
            format!("rate limited for {model}"),
        );
    }

    fn share_cooldown(
        &self,
        account_id: AccountId,
        model: Option<String>,
        until: Instant,
        reason: String,
    ) {
        let store = self.store.clone();
        let until = crate::clock::instant_to_wall(&crate::clock::SystemClock, until);
        self.engine.tasks().spawn(async move {
            if let Err(e) = store
                .put_cooldown(SharedCooldown {
                    account_id,
                    model,
                    until,
                    reason,
                })
                .await
            {
                tracing::debug!(error = %e, "could not share a cooldown through the store");
            }
        });
    }

    /// Clears an account's cooldowns here and in the store.
    pub async fn reset(&self, entry: &Arc<AccountEntry>) -> Result<(), StoreError> {
        entry.clear_cooldowns();
        self.store.clear_cooldowns(entry.id).await
    }

    /// Adopts cooldowns other replicas recorded.
    pub async fn sync_cooldowns(&self) -> Result<(), StoreError> {
        let now = self.engine.now();
        let entries = self.entries();
        // A clear that started (or is running) since this snapshot makes the list below stale for that account. By
        // position, not in a map: this runs every second, over every account.
        let gens: Vec<u64> = entries.iter().map(|e| e.shared_clear_gen()).collect();
        let shared = self.store.list_cooldowns(now).await?;
        for c in shared {
            let Some(i) = position(&entries, c.account_id) else {
                continue;
            };
            let e = &entries[i];
            let gen = e.shared_clear_gen();
            if gen % 2 == 1 || gens[i] != gen {
                continue;
            }
            let left = crate::clock::wait_until(now, c.until);
            e.apply_shared(
                c.model.as_deref(),
                crate::clock::instant_in(left),
                &c.reason,
            );
        }
        Ok(())
    }

    /// Writes the usage accumulated since the last flush in one batch.
    pub async fn flush_usage(&self) -> Result<usize, StoreError> {
        let entries = self.entries();
        let batch: Vec<(AccountId, crate::store::Usage)> = entries
            .iter()
            .map(|e| (e.id, e.take_usage()))
            .filter(|(_, u)| !u.is_empty())
            .collect();
        let n = batch.len();
        if n == 0 {
            return Ok(0);
        }
        if let Err(e) = self.store.add_usage(batch.clone()).await {
            for (id, u) in batch {
                if let Some(entry) = entries.iter().find(|x| x.id == id) {
                    entry.return_usage(u);
                }
            }
            return Err(e);
        }
        Ok(n)
    }

    /// Reloads accounts from the store if anything changed since the last load. Entries of unchanged accounts keep
    /// their state; removed accounts are dropped with all of theirs.
    pub async fn sync(&self) -> Result<bool, StoreError> {
        // Serialized: two concurrent syncs (the background loop and an admin listing) would each build an entry, hence
        // a cell and a refresh flight, for the same new account.
        let _one_at_a_time = self.syncing.lock().await;
        // Rotations this process obtained but could not store yet (store down, a crash or restart since) go first.
        self.engine.replay_journal().await;
        let seq = self.store.change_seq().await?;
        let seq = u64::try_from(seq).unwrap_or(0);
        if self.seen_seq.load(Ordering::Acquire) == seq {
            return Ok(false);
        }
        let accounts = self.store.list_accounts().await?;
        let current = self.entries();
        let mut next = Vec::with_capacity(accounts.len());
        for account in accounts {
            let block = account
                .refresh_blocked_until
                .zip(account.refresh_block_reason.clone());
            let entry = match position(&current, account.id).map(|i| &current[i]) {
                Some(entry) => {
                    entry.cell.observe_stored(account);
                    Arc::clone(entry)
                }
                None => AccountEntry::new(account, &self.changes),
            };
            if let Some((until, reason)) = block {
                entry.cell.observe_block(self.engine.now(), until, &reason);
            }
            next.push(entry);
        }
        // Kept in id order (the store lists them so), which `position` relies on.
        next.sort_unstable_by_key(|e| e.id);
        self.reindex(&current, &next);
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.seen_seq.store(seq, Ordering::Release);
        self.freed.notify_waiters();
        Ok(true)
    }

    /// Tells the index which entries came and went (changed ones reported themselves).
    fn reindex(&self, before: &[Arc<AccountEntry>], after: &[Arc<AccountEntry>]) {
        let kept: HashSet<AccountId> = after.iter().map(|e| e.id).collect();
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        for gone in before.iter().filter(|e| !kept.contains(&e.id)) {
            index.remove(gone.id);
        }
        let now = self.engine.now();
        for entry in after {
            index.insert(Arc::clone(entry), now, self.settings.probe_interval);
        }
    }

    /// Chooses the account for the next attempt, waiting (up to `queue_wait`, with at most `max_queue` waiters) when
    /// every usable account is at its `max_concurrency`.
    pub async fn acquire(&self, want: Criteria<'_>) -> Result<Slot, GatewayError> {
        let deadline = Instant::now() + self.settings.queue_wait;
        // The place in the queue is held by a guard, so a caller that gives up while waiting (its future dropped)
        // gives it back.
        let mut place: Option<QueuePlace<'_>> = None;
        loop {
            // Register interest before looking, so a slot freed between the look and the wait is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.choose(want) {
                Choice::Chosen(slot) => return Ok(slot),
                Choice::Cooling(t) => return Err(all_cooling(t)),
                Choice::None => return Err(self.no_account_error()),
                Choice::Saturated => {
                    if place.is_none() {
                        place = Some(
                            QueuePlace::take(&self.queued, self.settings.max_queue)
                                .ok_or_else(|| saturated(1))?,
                        );
                    }
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return Err(saturated(1));
                    }
                }
            }
        }
    }

    fn choose(&self, want: Criteria<'_>) -> Choice {
        // One choice at a time, under the index's lock: the load and concurrency checks and the claim must not
        // interleave.
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.refresh(
            &self.changes,
            self.engine.now(),
            self.settings.probe_interval,
        );
        match index.choose(want, &self.affinity, &self.settings) {
            Outcome::Probe(entry) => {
                tracing::info!(account = entry.id, "half-open probe of a cooling account");
                metrics::counter!("gateway_probes_total").increment(1);
                Choice::Chosen(Slot::new(entry, true, self.freed.clone()))
            }
            Outcome::Chosen(entry) => Choice::Chosen(Slot::new(entry, false, self.freed.clone())),
            Outcome::Saturated => Choice::Saturated,
            Outcome::Cooling(t) => Choice::Cooling(t),
            Outcome::None => Choice::None,
        }
    }

    /// Why nothing can serve, for the client: how many accounts are in which state and what the operator can do, never
    /// their names, emails or upstream messages (those are in the admin API and the logs).
    fn no_account_error(&self) -> GatewayError {
        let entries = self.entries();
        if entries.is_empty() {
            return GatewayError::NoAccount(
                "the gateway has no upstream accounts: add one with `claude-gateway accounts add-key --name NAME KEY`, \
                 `claude-gateway login`, or `claude-gateway accounts import PATH`"
                    .into(),
            );
        }
        let (mut disabled, mut banned, mut reauth, mut other) = (0, 0, 0, 0);
        for e in entries.iter() {
            let a = e.cell.account();
            if a.disabled {
                disabled += 1;
            } else if a.banned.is_some() {
                banned += 1;
            } else if e.cell.state().0 == CredentialState::NeedsReauth {
                reauth += 1;
            } else {
                other += 1;
            }
            tracing::debug!(account = %a.name, disabled = a.disabled, banned = ?a.banned, "account unusable");
        }
        let mut parts = Vec::new();
        if reauth > 0 {
            parts.push(format!(
                "{reauth} need{} re-authentication (`claude-gateway login` or `accounts import`)",
                if reauth == 1 { "s" } else { "" }
            ));
        }
        if banned > 0 {
            parts.push(format!(
                "{banned} refused by Anthropic for good (banned or disabled organization; see the admin API)"
            ));
        }
        if disabled > 0 {
            parts.push(format!(
                "{disabled} disabled (`claude-gateway accounts enable`)"
            ));
        }
        if other > 0 {
            parts.push(format!("{other} unusable for now"));
        }
        GatewayError::NoAccount(format!(
            "no usable upstream account among {}: {}",
            entries.len(),
            parts.join("; ")
        ))
    }

    /// Whether at least one account could serve now (readiness).
    pub fn any_usable(&self) -> bool {
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        index.refresh(
            &self.changes,
            self.engine.now(),
            self.settings.probe_interval,
        );
        index.any_usable()
    }
}

fn all_cooling(t: Instant) -> GatewayError {
    GatewayError::RateLimited {
        message:
            "every account is cooling down or backing off; retry after the time in retry-after"
                .into(),
        retry_after_secs: crate::clock::retry_after_secs(t),
    }
}

fn saturated(secs: u64) -> GatewayError {
    GatewayError::RateLimited {
        message: "every account is at its max_concurrency and the wait queue is full or timed out"
            .into(),
        retry_after_secs: secs,
    }
}

/// Where account `id` is in `entries` (kept in id order by [`Pool::sync`]).
fn position(entries: &[Arc<AccountEntry>], id: AccountId) -> Option<usize> {
    entries.binary_search_by_key(&id, |e| e.id).ok()
}

/// A short jittered cooldown after an overload or server failure: uniformly in [base, 1.5 × base].
pub fn jittered(base: Duration) -> Duration {
    crate::backoff::Backoff::new(base, base).delay(1) + base / 2
}

/// Smooth weighted round-robin state of an entry (the scanning reference in the tests).
#[cfg(test)]
pub(crate) type Swrr = AtomicI64;

#[cfg(test)]
mod tests;
