//! One account in the pool: its credential cell, cooldowns (whole account, or one model), half-open probe timing,
//! latest rate-limit view, and load counters.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::index::Changes;
use super::CheckSlot;
#[cfg(test)]
use super::Swrr;
use crate::account::{Account, AccountId};
use crate::ratelimit::UnifiedLimits;
use crate::refresh::CredentialCell;
use crate::store::Usage;

const NO_UTILIZATION: u64 = u64::MAX;

/// Utilization (as stored bits) in 10 % steps, 0 when unknown.
fn steps(bits: u64) -> i64 {
    let utilization = if bits == NO_UTILIZATION {
        0.0
    } else {
        f64::from_bits(bits)
    };
    (utilization * 10.0).floor() as i64
}

/// Most model-scoped cooldowns kept per account; the oldest-ending is dropped first.
pub const MAX_MODEL_COOLDOWNS: usize = 32;

#[derive(Debug, Default)]
struct Cooldowns {
    account: Option<(Instant, String)>,
    models: Vec<(String, Instant)>,
    strikes: u32,
    /// When the current cooldown started or the last probe was sent.
    probe_mark: Option<Instant>,
    limits: Option<UnifiedLimits>,
}

#[derive(Debug)]
pub struct AccountEntry {
    pub id: AccountId,
    pub cell: Arc<CredentialCell>,
    in_flight: AtomicUsize,
    served: AtomicU64,
    /// The scanning reference's smooth weighted round-robin state (the index keeps its own).
    #[cfg(test)]
    pub(crate) swrr: Swrr,
    /// Where this entry reports changes of its state to the pool's ready index.
    changes: Arc<Changes>,
    /// Already reported and not yet looked at by the index (so the change list holds each entry once).
    queued: AtomicBool,
    /// False when no cooldown can be in force, so the scheduler skips the lock (set and cleared under it).
    maybe_cooling: AtomicBool,
    /// Bumped when a successful probe starts clearing this account's shared cooldowns in the store and again when that
    /// is done (odd: in progress), so a store sync that read the list before the clear does not park the account again.
    shared_clear_gen: AtomicU64,
    /// The account-wide utilization last reported, as f64 bits (`NO_UTILIZATION` when unknown): read without a lock.
    utilization_bits: AtomicU64,
    cooldowns: Mutex<Cooldowns>,
    /// Usage not yet written to the store (flushed in batches).
    pending_usage: Mutex<Usage>,
    /// The credential checks that decide whose fault a refusal is (`crate::attribution`).
    pub check: CheckSlot,
}

impl AccountEntry {
    pub(crate) fn new(account: Account, changes: &Arc<Changes>) -> Arc<Self> {
        let cell = CredentialCell::new(account);
        Arc::new_cyclic(|me: &std::sync::Weak<AccountEntry>| {
            let me = me.clone();
            cell.on_change(move || {
                if let Some(entry) = me.upgrade() {
                    entry.changed();
                }
            });
            AccountEntry {
                id: cell.account().id,
                cell,
                in_flight: AtomicUsize::new(0),
                served: AtomicU64::new(0),
                #[cfg(test)]
                swrr: Swrr::new(0),
                changes: Arc::clone(changes),
                queued: AtomicBool::new(false),
                maybe_cooling: AtomicBool::new(false),
                shared_clear_gen: AtomicU64::new(0),
                utilization_bits: AtomicU64::new(NO_UTILIZATION),
                cooldowns: Mutex::new(Cooldowns::default()),
                pending_usage: Mutex::new(Usage::default()),
                check: CheckSlot::default(),
            }
        })
    }

    /// Reports that what the scheduler sees of this entry may have changed; the index looks again before the next
    /// choice. Call after the change, outside the entry's locks.
    pub(crate) fn changed(&self) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.changes.push(self.id);
        }
    }

    /// The index is about to look at this entry: changes from now on are reported again.
    pub(super) fn unqueue(&self) {
        self.queued.store(false, Ordering::Release);
    }

    fn cd(&self) -> MutexGuard<'_, Cooldowns> {
        self.cooldowns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn claim(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served.fetch_add(1, Ordering::Relaxed);
        let mut u = self.usage();
        u.requests = u.requests.saturating_add(1);
    }

    fn usage(&self) -> MutexGuard<'_, Usage> {
        self.pending_usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds token usage seen in a response.
    pub fn record_tokens(&self, input: u64, output: u64, cache_read: u64, cache_creation: u64) {
        self.usage().add(&Usage {
            requests: 0,
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_creation_tokens: cache_creation,
        });
    }

    /// Takes the usage accumulated since the last flush.
    pub(crate) fn take_usage(&self) -> Usage {
        std::mem::take(&mut *self.usage())
    }

    /// Puts back usage whose flush failed.
    pub(crate) fn return_usage(&self, back: Usage) {
        self.usage().add(&back);
    }

    pub(crate) fn claim_again(&self) {
        // Claims made outside a choice are normally on a busy entry already; one that was idle must be seen as busy.
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.changed();
        }
    }

    pub(crate) fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests (attempts) this account was chosen for.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether the account is at its `max_concurrency`.
    pub fn saturated(&self, account: &Account) -> bool {
        account
            .max_concurrency
            .is_some_and(|max| self.in_flight() >= max as usize)
    }

    /// Until when this account may not serve `model` (account-wide or model cooldown), if it may not now.
    pub fn cooling_until(&self, model: Option<&str>) -> Option<Instant> {
        if !self.maybe_cooling.load(Ordering::Acquire) {
            return None;
        }
        let now = Instant::now();
        let mut cd = self.cd();
        cd.models.retain(|(_, t)| *t > now);
        let account = cd.account.as_ref().map(|(t, _)| *t).filter(|t| *t > now);
        if account.is_none() && cd.models.is_empty() {
            self.maybe_cooling.store(false, Ordering::Release);
        }
        let model = model.and_then(|m| {
            cd.models
                .iter()
                .find(|(name, _)| name == m)
                .map(|(_, t)| *t)
        });
        account.into_iter().chain(model).max()
    }

    /// Cools the whole account until `until` (a later cooldown is never shortened).
    pub fn cool_account(&self, until: Instant, reason: String) {
        let mut cd = self.cd();
        self.maybe_cooling.store(true, Ordering::Release);
        cd.strikes += 1;
        cd.probe_mark = Some(Instant::now());
        if cd.account.as_ref().is_none_or(|(t, _)| *t < until) {
            cd.account = Some((until, reason));
        } else if let Some((_, r)) = cd.account.as_mut() {
            *r = reason;
        }
        drop(cd);
        self.changed();
    }

    /// Cools one model of this account until `until`.
    pub fn cool_model(&self, model: &str, until: Instant) {
        let now = Instant::now();
        let mut cd = self.cd();
        self.maybe_cooling.store(true, Ordering::Release);
        cd.strikes += 1;
        cd.probe_mark = Some(now);
        cd.models.retain(|(_, t)| *t > now);
        match cd.models.iter_mut().find(|(m, _)| m == model) {
            Some((_, t)) => *t = (*t).max(until),
            None => {
                if cd.models.len() >= MAX_MODEL_COOLDOWNS {
                    // Drop the one ending soonest: the list stays bounded whatever model names clients send.
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
        drop(cd);
        self.changed();
    }

    /// Adopts a cooldown another process learned (no strike: it was not our failure).
    pub fn apply_shared(&self, model: Option<&str>, until: Instant, reason: &str) {
        let now = Instant::now();
        if until <= now {
            return;
        }
        let mut cd = self.cd();
        self.maybe_cooling.store(true, Ordering::Release);
        let mut changed = false;
        if cd.probe_mark.is_none() {
            cd.probe_mark = Some(now);
            changed = true;
        }
        match model {
            None => {
                if cd.account.as_ref().is_none_or(|(t, _)| *t < until) {
                    cd.account = Some((until, reason.to_string()));
                    changed = true;
                }
            }
            Some(m) => {
                let full = cd.models.len() >= MAX_MODEL_COOLDOWNS;
                match cd.models.iter_mut().find(|(x, _)| x == m) {
                    Some((_, t)) if *t < until => {
                        *t = until;
                        changed = true;
                    }
                    Some(_) => {}
                    None if !full => {
                        cd.models.push((m.to_string(), until));
                        changed = true;
                    }
                    None => {}
                }
            }
        }
        drop(cd);
        if changed {
            self.changed();
        }
    }

    /// Whether a half-open probe is due: the account is cooling and `interval` passed since the cooldown began or the
    /// last probe left.
    pub fn probe_due(&self, now: Instant, interval: Duration) -> bool {
        let cd = self.cd();
        let cooling = cd.account.as_ref().is_some_and(|(t, _)| *t > now)
            || cd.models.iter().any(|(_, t)| *t > now);
        cooling && cd.probe_mark.is_some_and(|m| m + interval <= now)
    }

    /// When the next half-open probe is due, while a cooldown is in force.
    pub(crate) fn probe_at(&self, interval: Duration) -> Option<Instant> {
        let now = Instant::now();
        let cd = self.cd();
        let cooling = cd.account.as_ref().is_some_and(|(t, _)| *t > now)
            || cd.models.iter().any(|(_, t)| *t > now);
        cd.probe_mark.filter(|_| cooling).map(|m| m + interval)
    }

    /// Claims the due probe (one at a time): the next one is due `interval` later.
    pub(crate) fn take_probe(&self, now: Instant, interval: Duration) -> bool {
        let mut cd = self.cd();
        let taken = match cd.probe_mark {
            Some(m) if m + interval <= now => {
                cd.probe_mark = Some(now);
                true
            }
            _ => false,
        };
        drop(cd);
        if taken {
            self.changed();
        }
        taken
    }

    /// Consecutive failures since the last success (for backoff growth).
    pub fn strikes(&self) -> u32 {
        self.cd().strikes
    }

    /// A request succeeded. After a probe this ends the account's cooldowns: the hint that parked it was wrong or has
    /// passed. Returns whether a probe ended a cooldown (which the store must forget too).
    pub fn record_success(&self, probe: bool) -> bool {
        let mut cd = self.cd();
        cd.strikes = 0;
        if !probe {
            return false;
        }
        let ended = cd.account.is_some() || !cd.models.is_empty();
        cd.account = None;
        cd.models.clear();
        cd.probe_mark = None;
        drop(cd);
        self.changed();
        ended
    }

    /// The shared-cooldown clear generation (see `shared_clear_gen`).
    pub(crate) fn shared_clear_gen(&self) -> u64 {
        self.shared_clear_gen.load(Ordering::Acquire)
    }

    /// Marks the start or the end of clearing this account's shared cooldowns.
    pub(crate) fn bump_shared_clear_gen(&self) {
        self.shared_clear_gen.fetch_add(1, Ordering::AcqRel);
    }

    pub fn clear_cooldowns(&self) {
        let mut cd = self.cd();
        cd.account = None;
        cd.models.clear();
        cd.strikes = 0;
        cd.probe_mark = None;
        drop(cd);
        self.changed();
    }

    pub fn set_limits(&self, limits: UnifiedLimits) {
        let bits = limits.utilization().map_or(NO_UTILIZATION, f64::to_bits);
        let before = self.utilization_bits.swap(bits, Ordering::AcqRel);
        self.cd().limits = Some(limits);
        if steps(before) != steps(bits) {
            self.changed();
        }
    }

    /// Window utilization in 10 % steps (0 when unknown): the headroom the scheduler compares.
    pub fn used(&self) -> i64 {
        steps(self.utilization_bits.load(Ordering::Acquire))
    }

    pub fn limits(&self) -> Option<UnifiedLimits> {
        self.cd().limits.clone()
    }

    /// Highest utilization of the account-wide windows last reported (0..1).
    pub fn utilization(&self) -> Option<f64> {
        let bits = self.utilization_bits.load(Ordering::Relaxed);
        (bits != NO_UTILIZATION).then(|| f64::from_bits(bits))
    }

    /// Why the account is cooling, while it is.
    pub fn cooldown_reason(&self) -> Option<String> {
        let now = Instant::now();
        let cd = self.cd();
        if let Some((_, r)) = cd.account.as_ref().filter(|(t, _)| *t > now) {
            return Some(r.clone());
        }
        let models: Vec<&str> = cd
            .models
            .iter()
            .filter(|(_, t)| *t > now)
            .map(|(m, _)| m.as_str())
            .collect();
        (!models.is_empty()).then(|| format!("rate limited for {}", models.join(", ")))
    }

    /// Model-scoped cooldowns in force: (model, until).
    pub fn model_cooldowns(&self) -> Vec<(String, Instant)> {
        let now = Instant::now();
        self.cd()
            .models
            .iter()
            .filter(|(_, t)| *t > now)
            .cloned()
            .collect()
    }
}
