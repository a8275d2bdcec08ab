//! The ready index: which accounts may serve, per priority tier, kept current by change reports and timers, so that a
//! choice never scans the pool.
//!
//! Every entry is in one class — ready (in its tier, grouped by window-utilization step and weight), cooling
//! (account-wide cooldown or credential backoff, ordered by its end) or unusable — decided by [`classify`], the rule
//! the scan over every entry used. An entry is classified again when it reports a change (a cooldown set or cleared, a
//! probe taken, its utilization crossing a 10 % step, its credential cell's state: backoff, hold, re-auth, a newer
//! stored row) or when a timer it asked for fires (a cooldown or backoff ends, a backed-off token stops being fresh).
//! What changes on every request is not indexed but looked at per choice, and is small: the accounts with requests in
//! flight (load, `max_concurrency`), the request's exclusions, the accounts cooling for its model and the due probes.
//!
//! Smooth weighted round-robin without touching every account: an account's SWRR value is `base + weight × gain`,
//! where `gain` counts the choices its group took part in, so a choice adds every eligible account's weight by bumping
//! one counter per group, and only the few accounts vetoed inside an eligible group get theirs taken back. The choice
//! is the scan's, step for step (`pool/tests.rs` checks it against the scan with a property test).
//!
//! Cost of a choice: O(log n) plus the small sets above, never the pool's size.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::Counter;
use tokio::time::Instant;

use super::{AccountEntry, Criteria, PoolSettings};
use crate::account::{Account, AccountId};
use crate::affinity::AffinityMap;
use crate::refresh::CredentialState;

/// Entries whose state changed since the index last looked (each once: see [`AccountEntry::changed`]).
#[derive(Debug, Default)]
pub(crate) struct Changes(Mutex<Vec<AccountId>>);

impl Changes {
    pub(crate) fn push(&self, id: AccountId) {
        self.lock().push(id);
    }

    /// Moves the reported ids into `into` (which must be empty), keeping both allocations.
    fn take_into(&self, into: &mut Vec<AccountId>) {
        std::mem::swap(&mut *self.lock(), into);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<AccountId>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where an entry stands for the scheduler, apart from what changes per request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    /// May serve: tier `tier`, group (`used`, `weight`).
    Ready {
        tier: i32,
        used: i64,
        weight: i64,
        max: Option<u32>,
    },
    /// Cooling account-wide, or its credential backing off or held (`credential`), until `until`.
    Cooling {
        until: Instant,
        credential: bool,
    },
    Unusable,
}

/// A classification and what the index must watch for it.
struct Placement {
    class: Class,
    /// When to classify again without a report (a cooldown or backoff ends, a token stops being fresh).
    timer: Option<Instant>,
    /// When the next half-open probe is due, while cooling.
    probe: Option<Instant>,
    /// Model-scoped cooldowns in force.
    models: Vec<(String, Instant)>,
}

/// The index's record of one entry.
#[derive(Debug)]
struct Seat {
    entry: Arc<AccountEntry>,
    class: Class,
    /// The SWRR value's base while ready (value = base + weight × the group's gain), the value itself otherwise.
    swrr: i64,
    timer: Option<Instant>,
    probe: Option<Instant>,
    models: Vec<(String, Instant)>,
}

/// A group of a tier: (utilization step, weight).
type GroupKey = (i64, i64);

/// Members ordered so that the last one has the highest base and, among equal ones, the lowest id (the scan's order).
type Member = (i64, Reverse<AccountId>);

#[derive(Debug, Default)]
struct Group {
    gain: i64,
    members: BTreeSet<Member>,
}

#[derive(Debug, Default)]
struct Tier {
    /// Keyed by (utilization step, weight).
    groups: BTreeMap<GroupKey, Group>,
    len: usize,
}

/// Why a ready entry may not take this request.
#[derive(Debug, Clone, Copy)]
enum Veto {
    Excluded,
    /// Cooling for the request's model until then.
    Cooling(Instant),
    Saturated,
    /// Far above the least in-flight load per weight.
    Heavy,
}

/// A ready candidate with requests in flight.
#[derive(Debug, Clone, Copy)]
struct Busy {
    id: AccountId,
    in_flight: usize,
    weight: i64,
}

impl Busy {
    fn load(&self) -> f64 {
        self.in_flight as f64 / self.weight as f64
    }
}

/// What a choice found.
pub(super) enum Outcome {
    Probe(Arc<AccountEntry>),
    Chosen(Arc<AccountEntry>),
    Saturated,
    Cooling(Instant),
    None,
}

/// Hashes an account id with one multiplication. Ids are the store's, never a client's choice, so there is no flood
/// of colliding keys to fear that would need SipHash (several times the cost, on each lookup of every choice).
#[derive(Debug, Default, Clone, Copy)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(GOLDEN);
        }
    }
    fn write_i64(&mut self, n: i64) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(GOLDEN);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// 2^64 / φ, odd: multiplying by it spreads consecutive ids over the high bits the table's tags read.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

type ById<V> = HashMap<AccountId, V, BuildHasherDefault<IdHasher>>;

/// `gateway_affinity_total{result}` handles, made on first use as `metrics::counter!` makes them (see
/// `crate::request_metrics`): a choice with a conversation key counts one, and looking the series up costs more than
/// the increment.
#[derive(Debug, Default)]
struct AffinityCounters([OnceLock<Counter>; 4]);

/// What became of a request's conversation affinity.
#[derive(Debug, Clone, Copy)]
enum Affinity {
    /// No account known for the conversation.
    Miss,
    /// Its account may not take this request.
    Moved,
    /// Its account carries far more than its peers.
    Yield,
    Hit,
}

impl Affinity {
    fn label(self) -> &'static str {
        match self {
            Affinity::Miss => "miss",
            Affinity::Moved => "moved",
            Affinity::Yield => "yield",
            Affinity::Hit => "hit",
        }
    }
}

impl AffinityCounters {
    fn count(&self, result: Affinity) {
        self.0[result as usize]
            .get_or_init(|| metrics::counter!("gateway_affinity_total", "result" => result.label()))
            .increment(1);
    }
}

#[derive(Debug, Default)]
pub(super) struct Index {
    seats: ById<Seat>,
    tiers: BTreeMap<i32, Tier>,
    cooling: BTreeSet<(Instant, AccountId)>,
    timers: BTreeSet<(Instant, AccountId)>,
    probes: BTreeSet<(Instant, AccountId)>,
    by_model: HashMap<String, BTreeMap<AccountId, Instant>>,
    /// Every entry with requests in flight (and some that had them: dropped when seen idle), and those whose
    /// `max_concurrency` is 0.
    busy: BTreeSet<AccountId>,
    // Scratch space reused by every choice.
    pending: Vec<AccountId>,
    vetoes: ById<Veto>,
    loads: Vec<Busy>,
    affinity_counters: AffinityCounters,
}

// === impl Index: keeping it current ===

impl Index {
    pub(super) fn insert(
        &mut self,
        entry: Arc<AccountEntry>,
        now: DateTime<Utc>,
        interval: Duration,
    ) {
        let id = entry.id;
        if self.seats.contains_key(&id) {
            return;
        }
        // Reports made before it was here may have been dropped: classify from scratch, and hear the next ones.
        entry.unqueue();
        let seat = Seat {
            entry,
            class: Class::Unusable,
            swrr: 0,
            timer: None,
            probe: None,
            models: Vec::new(),
        };
        self.seats.insert(id, seat);
        self.reclassify(id, now, interval);
    }

    pub(super) fn remove(&mut self, id: AccountId) {
        if let Some(mut seat) = self.seats.remove(&id) {
            self.unplace(id, &mut seat);
        }
        self.busy.remove(&id);
    }

    /// Looks again at every entry that reported a change and every entry whose timer fired.
    pub(super) fn refresh(&mut self, changes: &Changes, now: DateTime<Utc>, interval: Duration) {
        let now_i = Instant::now();
        let mut ids = std::mem::take(&mut self.pending);
        changes.take_into(&mut ids);
        for id in &ids {
            if let Some(seat) = self.seats.get(id) {
                seat.entry.unqueue();
            }
        }
        while let Some(&(t, id)) = self.timers.first() {
            if t > now_i {
                break;
            }
            self.timers.remove(&(t, id));
            if let Some(seat) = self.seats.get_mut(&id) {
                seat.timer = None;
            }
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        for &id in &ids {
            self.reclassify(id, now, interval);
        }
        ids.clear();
        self.pending = ids;
    }

    /// Whether some account could serve now or after a cooldown (not every one disabled or needing re-auth).
    pub(super) fn any_usable(&self) -> bool {
        !self.tiers.is_empty() || !self.cooling.is_empty()
    }

    fn reclassify(&mut self, id: AccountId, now: DateTime<Utc>, interval: Duration) {
        let Some(mut seat) = self.seats.remove(&id) else {
            return;
        };
        self.unplace(id, &mut seat);
        let placement = classify(&seat.entry, now, interval);
        self.place(id, &mut seat, placement);
        self.seats.insert(id, seat);
    }

    fn unplace(&mut self, id: AccountId, seat: &mut Seat) {
        match seat.class {
            Class::Ready {
                tier, used, weight, ..
            } => {
                if let Some(t) = self.tiers.get_mut(&tier) {
                    if let Some(g) = t.groups.get_mut(&(used, weight)) {
                        g.members.remove(&(seat.swrr, Reverse(id)));
                        seat.swrr += weight * g.gain;
                        if g.members.is_empty() {
                            t.groups.remove(&(used, weight));
                        }
                    }
                    t.len -= 1;
                    if t.len == 0 {
                        self.tiers.remove(&tier);
                    }
                }
                self.busy.remove(&id);
            }
            Class::Cooling { until, .. } => {
                self.cooling.remove(&(until, id));
            }
            Class::Unusable => {}
        }
        seat.class = Class::Unusable;
        if let Some(t) = seat.timer.take() {
            self.timers.remove(&(t, id));
        }
        if let Some(t) = seat.probe.take() {
            self.probes.remove(&(t, id));
        }
        for (model, _) in seat.models.drain(..) {
            if let Some(ids) = self.by_model.get_mut(&model) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_model.remove(&model);
                }
            }
        }
    }

    fn place(&mut self, id: AccountId, seat: &mut Seat, p: Placement) {
        match p.class {
            Class::Ready {
                tier,
                used,
                weight,
                max,
            } => {
                let t = self.tiers.entry(tier).or_default();
                let g = t.groups.entry((used, weight)).or_default();
                seat.swrr -= weight * g.gain;
                g.members.insert((seat.swrr, Reverse(id)));
                t.len += 1;
                if max == Some(0) || seat.entry.in_flight() > 0 {
                    self.busy.insert(id);
                }
            }
            Class::Cooling { until, .. } => {
                self.cooling.insert((until, id));
            }
            Class::Unusable => {}
        }
        seat.class = p.class;
        if let Some(t) = p.timer {
            self.timers.insert((t, id));
        }
        seat.timer = p.timer;
        if let Some(t) = p.probe {
            self.probes.insert((t, id));
        }
        seat.probe = p.probe;
        for (model, until) in &p.models {
            self.by_model
                .entry(model.clone())
                .or_default()
                .insert(id, *until);
        }
        seat.models = p.models;
    }
}

// === impl Index: choosing ===

impl Index {
    /// One choice, by the rules in the pool's module doc. The caller claims the returned entry.
    pub(super) fn choose(
        &mut self,
        want: Criteria<'_>,
        affinity: &AffinityMap,
        settings: &PoolSettings,
    ) -> Outcome {
        let now = Instant::now();
        self.veto(want, now);
        if let Some(entry) = self.probe(now, settings.probe_interval) {
            if entry.take_probe(now, settings.probe_interval) {
                self.busy.insert(entry.id);
                return Outcome::Probe(entry);
            }
        }
        let Some((tier, count)) = self.top_tier() else {
            return self.failure(want, now);
        };
        self.load(tier);
        if let Some(entry) = self.affine(want, tier, count, affinity, settings) {
            self.busy.insert(entry.id);
            return Outcome::Chosen(entry);
        }
        match self.pick(tier, count) {
            Some(entry) => {
                if let Some(key) = want.affinity {
                    affinity.put(key, entry.id);
                }
                self.busy.insert(entry.id);
                Outcome::Chosen(entry)
            }
            None => Outcome::None,
        }
    }

    fn ready_tier(&self, id: AccountId) -> Option<i32> {
        match self.seats.get(&id)?.class {
            Class::Ready { tier, .. } => Some(tier),
            _ => None,
        }
    }

    /// The request's vetoes of ready entries (and its exclusions of any): exclusions (by id, then by the key's account
    /// globs) first, then model cooldowns,
    /// then `max_concurrency`, the scan's order.
    fn veto(&mut self, want: Criteria<'_>, now: Instant) {
        self.vetoes.clear();
        for id in want.exclude {
            if self.seats.contains_key(id) {
                self.vetoes.insert(*id, Veto::Excluded);
            }
        }
        if !want.accounts.is_empty() {
            // A key limited to some accounts by name: the others are excluded. (A pass over the names, for such keys
            // only.)
            for (id, seat) in &self.seats {
                let name = &seat.entry.cell.account().name;
                if !want
                    .accounts
                    .iter()
                    .any(|g| crate::keys::limits::glob(g, name))
                {
                    self.vetoes.entry(*id).or_insert(Veto::Excluded);
                }
            }
        }
        if let Some(ids) = want.model.and_then(|m| self.by_model.get(m)) {
            for (&id, &until) in ids {
                if until > now && self.ready_tier(id).is_some() {
                    self.vetoes.entry(id).or_insert(Veto::Cooling(until));
                }
            }
        }
        let Index {
            busy,
            seats,
            vetoes,
            ..
        } = self;
        busy.retain(|id| {
            let Some(seat) = seats.get(id) else {
                return false;
            };
            let Class::Ready { max, .. } = seat.class else {
                return false;
            };
            let in_flight = seat.entry.in_flight();
            if max.is_some_and(|max| in_flight >= max as usize) {
                vetoes.entry(*id).or_insert(Veto::Saturated);
            }
            in_flight > 0 || max == Some(0)
        });
    }

    /// The due half-open probe of an account cooling for this request: the lowest id among them.
    fn probe(&self, now: Instant, interval: Duration) -> Option<Arc<AccountEntry>> {
        let mut best: Option<&Seat> = None;
        for &(due, id) in &self.probes {
            if due > now {
                break;
            }
            if best.is_some_and(|b| b.entry.id < id) {
                continue;
            }
            let Some(seat) = self.seats.get(&id) else {
                continue;
            };
            let veto = self.vetoes.get(&id);
            let cooling_here = match seat.class {
                Class::Cooling {
                    credential: false, ..
                } => !matches!(veto, Some(Veto::Excluded)),
                Class::Ready { .. } => matches!(veto, Some(Veto::Cooling(_))),
                _ => false,
            };
            if cooling_here
                && seat.entry.probe_due(now, interval)
                && seat.entry.cell.state().0 == CredentialState::Ready
                && !seat.entry.saturated(&seat.entry.cell.account())
            {
                best = Some(seat);
            }
        }
        best.map(|s| Arc::clone(&s.entry))
    }

    /// The first tier with a candidate for this request, and how many it has.
    fn top_tier(&self) -> Option<(i32, usize)> {
        self.tiers.iter().find_map(|(&prio, tier)| {
            let vetoed = self
                .vetoes
                .keys()
                .filter(|id| self.ready_tier(**id) == Some(prio))
                .count();
            (tier.len > vetoed).then_some((prio, tier.len - vetoed))
        })
    }

    /// The candidates of `tier` with requests in flight.
    fn load(&mut self, tier: i32) {
        let Index {
            busy,
            seats,
            vetoes,
            loads,
            ..
        } = self;
        loads.clear();
        for id in busy.iter() {
            let Some(seat) = seats.get(id) else {
                continue;
            };
            let Class::Ready {
                tier: t, weight, ..
            } = seat.class
            else {
                continue;
            };
            if t != tier || vetoes.contains_key(id) {
                continue;
            }
            let in_flight = seat.entry.in_flight();
            if in_flight > 0 {
                loads.push(Busy {
                    id: *id,
                    in_flight,
                    weight,
                });
            }
        }
    }

    /// Conversation affinity, unless its account carries far more than its peers (more than `affinity_load_factor`
    /// times their average, plus two requests of slack).
    fn affine(
        &self,
        want: Criteria<'_>,
        tier: i32,
        count: usize,
        affinity: &AffinityMap,
        settings: &PoolSettings,
    ) -> Option<Arc<AccountEntry>> {
        let key = want.affinity?;
        let Some(id) = affinity.get(key) else {
            self.affinity_counters.count(Affinity::Miss);
            return None;
        };
        let candidate = self.ready_tier(id) == Some(tier) && !self.vetoes.contains_key(&id);
        let Some(seat) = self.seats.get(&id).filter(|_| candidate) else {
            self.affinity_counters.count(Affinity::Moved);
            return None;
        };
        let overloaded = count >= 2 && {
            let peers: usize = self
                .loads
                .iter()
                .filter(|b| b.id != id)
                .map(|b| b.in_flight)
                .sum();
            let average = peers as f64 / (count - 1) as f64;
            seat.entry.in_flight() as f64 > settings.affinity_load_factor * average + 2.0
        };
        if overloaded {
            self.affinity_counters.count(Affinity::Yield);
            return None;
        }
        self.affinity_counters.count(Affinity::Hit);
        Some(Arc::clone(&seat.entry))
    }

    /// Weights decide the shares; load and headroom veto (see the pool's `pick` rule): candidates far above the least
    /// in-flight load per weight (more than twice it, plus one) and those more than one 10 % step above the best
    /// utilization are skipped; among the rest, smooth weighted round-robin.
    fn pick(&mut self, tier: i32, count: usize) -> Option<Arc<AccountEntry>> {
        let least = if count > self.loads.len() {
            0.0
        } else {
            self.loads
                .iter()
                .map(Busy::load)
                .fold(f64::INFINITY, f64::min)
        };
        for b in &self.loads {
            if b.load() > 2.0 * least + 1.0 {
                self.vetoes.insert(b.id, Veto::Heavy);
            }
        }
        let Index {
            seats,
            tiers,
            vetoes,
            ..
        } = self;
        let t = tiers.get_mut(&tier)?;
        // The vetoed members of this tier, with their group.
        let vetoed: Vec<(AccountId, GroupKey)> = vetoes
            .keys()
            .filter_map(|id| match seats.get(id)?.class {
                Class::Ready {
                    tier: t,
                    used,
                    weight,
                    ..
                } if t == tier => Some((*id, (used, weight))),
                _ => None,
            })
            .collect();
        let in_group = |key: GroupKey| vetoed.iter().filter(|(_, k)| *k == key).count();
        let best_used = t
            .groups
            .iter()
            .find(|(key, g)| g.members.len() > in_group(**key))
            .map(|(key, _)| key.0)?;
        let eligible = |key: &GroupKey| key.0 <= best_used + 1;
        let mut total = 0;
        for (key, g) in t.groups.iter_mut().filter(|(k, _)| eligible(k)) {
            g.gain += 1;
            total += key.1 * (g.members.len() - in_group(*key)) as i64;
        }
        // The vetoed do not gain: take back what the group's gain gave them.
        for (id, key) in vetoed.iter().filter(|(_, k)| eligible(k)) {
            if let (Some(g), Some(seat)) = (t.groups.get_mut(key), seats.get_mut(id)) {
                g.members.remove(&(seat.swrr, Reverse(*id)));
                seat.swrr -= key.1;
                g.members.insert((seat.swrr, Reverse(*id)));
            }
        }
        let mut best: Option<(Member, GroupKey)> = None;
        for (key, g) in t.groups.iter().filter(|(k, _)| eligible(k)) {
            let top = g
                .members
                .iter()
                .rev()
                .find(|(_, Reverse(id))| !vetoes.contains_key(id));
            if let Some(&(base, id)) = top {
                let value = (base + key.1 * g.gain, id);
                if best.is_none_or(|(b, _)| value > b) {
                    best = Some((value, *key));
                }
            }
        }
        let ((_, Reverse(id)), key) = best?;
        let (g, seat) = (t.groups.get_mut(&key)?, seats.get_mut(&id)?);
        g.members.remove(&(seat.swrr, Reverse(id)));
        seat.swrr -= total;
        g.members.insert((seat.swrr, Reverse(id)));
        Some(Arc::clone(&seat.entry))
    }

    /// No candidate: saturated if one was only at its `max_concurrency`, else the soonest end of a cooldown.
    fn failure(&self, want: Criteria<'_>, now: Instant) -> Outcome {
        if self.vetoes.values().any(|v| matches!(v, Veto::Saturated)) {
            return Outcome::Saturated;
        }
        let mut soonest = self
            .vetoes
            .values()
            .filter_map(|v| match v {
                Veto::Cooling(t) => Some(*t),
                _ => None,
            })
            .min();
        for &(until, id) in &self.cooling {
            if soonest.is_some_and(|s| until >= s) {
                break;
            }
            let Some(seat) = self.seats.get(&id) else {
                continue;
            };
            if matches!(self.vetoes.get(&id), Some(Veto::Excluded)) {
                continue;
            }
            let t = match seat.class {
                Class::Cooling {
                    credential: true, ..
                } => until.max(now + Duration::from_secs(1)),
                _ => seat
                    .models
                    .iter()
                    .filter(|(m, t)| Some(m.as_str()) == want.model && *t > now)
                    .map(|(_, t)| *t)
                    .fold(until, Instant::max),
            };
            soonest = Some(soonest.map_or(t, |s| s.min(t)));
        }
        match soonest {
            Some(t) => Outcome::Cooling(t),
            None => Outcome::None,
        }
    }
}

// === classification ===

/// Where `entry` stands now: the scan's `usable` rule without the per-request parts (model, load, exclusions).
fn classify(entry: &AccountEntry, now: DateTime<Utc>, interval: Duration) -> Placement {
    let (account, state, until) = entry.cell.gate();
    let margin = entry.cell.request_margin();
    let models = entry.model_cooldowns();
    let probe = entry.probe_at(interval);
    let mut timer = models.iter().map(|(_, t)| *t).min();
    let class = if account.disabled || account.banned.is_some() {
        Class::Unusable
    } else {
        match (state, until) {
            (CredentialState::NeedsReauth, _) => Class::Unusable,
            // A refresh that is backing off only matters once the current token no longer works.
            (CredentialState::RefreshBackoff, until)
                if entry.cell.fresh_for_request(&account, now) =>
            {
                timer = earliest(timer, until);
                timer = earliest(timer, stale_at(&account, now, margin));
                ready_or_cooling(entry, &account, &mut timer)
            }
            (CredentialState::RefreshBackoff | CredentialState::Held, Some(t)) => {
                if state == CredentialState::RefreshBackoff {
                    timer = earliest(timer, Some(t));
                }
                Class::Cooling {
                    until: t,
                    credential: true,
                }
            }
            (CredentialState::RefreshBackoff | CredentialState::Held, None) => Class::Unusable,
            (CredentialState::Ready, _) => ready_or_cooling(entry, &account, &mut timer),
        }
    };
    Placement {
        class,
        timer,
        probe,
        models,
    }
}

fn ready_or_cooling(entry: &AccountEntry, account: &Account, timer: &mut Option<Instant>) -> Class {
    if let Some(t) = entry.cooling_until(None) {
        *timer = earliest(*timer, Some(t));
        return Class::Cooling {
            until: t,
            credential: false,
        };
    }
    Class::Ready {
        tier: account.priority,
        used: entry.used(),
        weight: i64::from(account.weight.max(1)),
        max: account.max_concurrency,
    }
}

/// When the account's token stops being good for a request (`margin` before its expiry), on tokio's clock.
fn stale_at(account: &Account, now: DateTime<Utc>, margin: Duration) -> Option<Instant> {
    let skew = chrono::Duration::from_std(margin).unwrap_or_default();
    let left = (account.credential.expires_at? - skew - now)
        .to_std()
        .unwrap_or_default();
    Some(Instant::now() + left)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The cached handles write the series the macro would: same name, same labels, same counts.
    #[test]
    fn affinity_counters_write_the_series_the_macro_would() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let c = AffinityCounters::default();
            for r in [
                Affinity::Miss,
                Affinity::Miss,
                Affinity::Moved,
                Affinity::Yield,
                Affinity::Hit,
            ] {
                c.count(r);
            }
        });
        let text = handle.render();
        for line in ["miss\"} 2", "moved\"} 1", "yield\"} 1", "hit\"} 1"] {
            let line = format!("gateway_affinity_total{{result=\"{line}");
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
    }

    /// Consecutive ids land in distinct buckets and tags: the id hasher spreads them.
    #[test]
    fn the_id_hasher_spreads_consecutive_ids() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<IdHasher>::default();
        let hashes: std::collections::HashSet<u64> =
            (1..=1000i64).map(|id| b.hash_one(id)).collect();
        assert_eq!(hashes.len(), 1000);
        let tags: std::collections::HashSet<u64> =
            (1..=1000i64).map(|id| b.hash_one(id) >> 57).collect();
        assert!(tags.len() > 100, "{}", tags.len());
    }
}
