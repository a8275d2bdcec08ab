//! Scheduling rules on tokio's paused clock: weights, tiers, cooldown scopes, half-open probes, concurrency limits,
//! affinity.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::account::{AccountKind, Credential, NewAccount};
use crate::oauth::{TokenEndpoint, TokenError, TokenFuture};
use crate::store::memory::MemoryStore;
use crate::store::Patch;
use crate::store::{AccountUpdate, Store};

#[derive(Debug)]
struct NoEndpoint;

impl TokenEndpoint for NoEndpoint {
    fn refresh<'a>(&'a self, _: &'a str) -> TokenFuture<'a> {
        Box::pin(async { Err(TokenError::Connect("no endpoint in this test".into())) })
    }
}

fn settings() -> PoolSettings {
    PoolSettings {
        probe_interval: Duration::from_secs(20),
        queue_wait: Duration::from_secs(2),
        max_queue: 2,
        affinity_capacity: 1000,
        affinity_ttl: Duration::from_secs(3600),
        affinity_load_factor: 2.0,
    }
}

/// Accounts given as (priority, weight, max_concurrency).
async fn pool(accounts: &[(i32, u32, Option<u32>)]) -> Arc<Pool> {
    let store = Arc::new(MemoryStore::default());
    for (i, (priority, weight, max)) in accounts.iter().enumerate() {
        let a = store
            .insert_account(NewAccount {
                name: format!("a{i}"),
                kind: AccountKind::ApiKey,
                credential: Credential {
                    secret: format!("k{i}"),
                    refresh_token: None,
                    expires_at: None,
                },
                identity: Default::default(),
                priority: *priority,
                weight: *weight,
                disabled: false,
            })
            .await
            .unwrap();
        if max.is_some() {
            store
                .update_account(
                    a.id,
                    a.version,
                    AccountUpdate {
                        max_concurrency: Patch::to(*max),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
    }
    let clock = Arc::new(crate::clock::TokioClock::starting_at(
        crate::clock::system_now(),
    ));
    let engine = RefreshEngine::new(
        store.clone(),
        Arc::new(NoEndpoint),
        clock,
        RefreshSettingsForTest::get(),
    );
    let pool = Arc::new(Pool::new(store, engine, settings()));
    pool.sync().await.unwrap();
    pool
}

struct RefreshSettingsForTest;
impl RefreshSettingsForTest {
    fn get() -> crate::refresh::RefreshSettings {
        crate::refresh::RefreshSettings::from(&crate::config::RefreshConfig::default())
    }
}

async fn pick_id(pool: &Pool, want: Criteria<'_>) -> AccountId {
    pool.acquire(want).await.unwrap().entry.id
}

#[tokio::test(start_paused = true)]
async fn sequential_requests_share_exactly_by_weight() {
    let p = pool(&[(0, 1, None), (0, 2, None), (0, 3, None)]).await;
    let mut counts: HashMap<AccountId, usize> = HashMap::new();
    for _ in 0..600 {
        *counts
            .entry(pick_id(&p, Criteria::default()).await)
            .or_default() += 1;
    }
    assert_eq!(counts[&1], 100);
    assert_eq!(counts[&2], 200);
    assert_eq!(counts[&3], 300);
}

#[tokio::test(start_paused = true)]
async fn an_account_far_above_the_least_load_is_skipped() {
    let p = pool(&[(0, 1, None), (0, 1, None)]).await;
    let busy = p.get(1).unwrap();
    for _ in 0..3 {
        busy.claim_again();
    }
    // Account 1 carries 3, account 2 none: 3 > 2 × 0 + 1, so 1 is skipped until it drains.
    for _ in 0..5 {
        assert_eq!(pick_id(&p, Criteria::default()).await, 2);
    }
    busy.release();
    busy.release();
    // Now 1 against 0: within bounds, weights decide again.
    let picks: std::collections::HashSet<_> = [
        pick_id(&p, Criteria::default()).await,
        pick_id(&p, Criteria::default()).await,
    ]
    .into();
    assert_eq!(picks.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn lower_priority_tier_serves_only_when_the_first_cannot() {
    let p = pool(&[(0, 1, None), (1, 1, None)]).await;
    for _ in 0..10 {
        assert_eq!(pick_id(&p, Criteria::default()).await, 1);
    }
    p.get(1)
        .unwrap()
        .cool_account(Instant::now() + Duration::from_secs(5), "test".into());
    assert_eq!(pick_id(&p, Criteria::default()).await, 2);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(pick_id(&p, Criteria::default()).await, 1);
}

#[tokio::test(start_paused = true)]
async fn a_model_cooldown_blocks_only_that_model() {
    let p = pool(&[(0, 1, None)]).await;
    p.get(1)
        .unwrap()
        .cool_model("opus", Instant::now() + Duration::from_secs(30));
    let err = p
        .acquire(Criteria {
            model: Some("opus"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    match err {
        GatewayError::RateLimited {
            retry_after_secs, ..
        } => assert_eq!(retry_after_secs, 30),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        pick_id(
            &p,
            Criteria {
                model: Some("sonnet"),
                ..Default::default()
            }
        )
        .await,
        1
    );
    // An account-wide cooldown blocks every model.
    p.get(1)
        .unwrap()
        .cool_account(Instant::now() + Duration::from_secs(10), "test".into());
    assert!(p
        .acquire(Criteria {
            model: Some("sonnet"),
            ..Default::default()
        })
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn a_cooling_account_gets_nothing_but_its_half_open_probes() {
    let p = pool(&[(0, 1, None), (0, 1, None)]).await;
    let limited = p.get(1).unwrap();
    limited.cool_account(Instant::now() + Duration::from_secs(60), "window".into());
    let mut probes = Vec::new();
    for second in 0..60u64 {
        for _ in 0..10 {
            let slot = p.acquire(Criteria::default()).await.unwrap();
            if slot.entry.id == 1 {
                assert!(slot.probe);
                probes.push(second);
                // The probe fails: upstream still says no; the account cools again from its answer.
                limited.cool_account(
                    Instant::now() + Duration::from_secs(60 - second),
                    "window".into(),
                );
            }
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(probes, vec![20, 40], "one probe per interval, nothing else");
}

#[tokio::test(start_paused = true)]
async fn a_successful_probe_ends_a_wrong_cooldown() {
    let p = pool(&[(0, 1, None), (0, 1, None)]).await;
    let limited = p.get(1).unwrap();
    // A reset hint of two days that is wrong.
    limited.cool_account(
        Instant::now() + Duration::from_secs(2 * 86_400),
        "window".into(),
    );
    tokio::time::advance(Duration::from_secs(20)).await;
    let slot = p.acquire(Criteria::default()).await.unwrap();
    assert!(slot.probe && slot.entry.id == 1);
    slot.entry.record_success(slot.probe);
    drop(slot);
    assert_eq!(limited.cooling_until(None), None);
    let ids: Vec<_> = [
        pick_id(&p, Criteria::default()).await,
        pick_id(&p, Criteria::default()).await,
    ]
    .into();
    assert!(
        ids.contains(&1),
        "back in rotation after one probe: {ids:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_queues_then_answers_429() {
    let p = pool(&[(0, 1, Some(1))]).await;
    let first = p.acquire(Criteria::default()).await.unwrap();
    // A waiter gets the slot as soon as it is freed.
    let p2 = p.clone();
    let waiter =
        tokio::spawn(async move { p2.acquire(Criteria::default()).await.map(|l| l.entry.id) });
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished());
    drop(first);
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
    // Without a free slot the wait ends after queue_wait with a 429.
    let _held = p.acquire(Criteria::default()).await.unwrap();
    let started = Instant::now();
    let err = p.acquire(Criteria::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            GatewayError::RateLimited {
                retry_after_secs: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    // The queue is bounded: with max_queue = 2 waiting, a third is refused at once.
    let (p3, p4) = (p.clone(), p.clone());
    let w1 = tokio::spawn(async move { p3.acquire(Criteria::default()).await.is_err() });
    let w2 = tokio::spawn(async move { p4.acquire(Criteria::default()).await.is_err() });
    tokio::task::yield_now().await;
    let started = Instant::now();
    assert!(p.acquire(Criteria::default()).await.is_err());
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(w1.await.unwrap() && w2.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_gives_up_gives_its_place_in_the_queue_back() {
    let p = pool(&[(0, 1, Some(1))]).await;
    let held = p.acquire(Criteria::default()).await.unwrap();
    // Many more than max_queue (2) callers give up while waiting (their futures are dropped, as when a client leaves).
    for _ in 0..10 {
        let gave_up =
            tokio::time::timeout(Duration::from_millis(100), p.acquire(Criteria::default())).await;
        assert!(gave_up.is_err(), "still waiting when it gave up");
    }
    // The queue is empty again: a new caller waits for the slot instead of being refused as "queue full".
    let p2 = p.clone();
    let waiter =
        tokio::spawn(async move { p2.acquire(Criteria::default()).await.map(|l| l.entry.id) });
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "waiting, not refused");
    drop(held);
    assert_eq!(waiter.await.unwrap().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn affinity_keeps_a_conversation_on_its_account_and_moves_it_when_it_cools() {
    let p = pool(&[(0, 1, None), (0, 1, None), (0, 1, None)]).await;
    let mut homes = HashMap::new();
    for conversation in 0..30u64 {
        let home = pick_id(
            &p,
            Criteria {
                affinity: Some(conversation),
                ..Default::default()
            },
        )
        .await;
        homes.insert(conversation, home);
    }
    for _turn in 0..10 {
        for conversation in 0..30u64 {
            assert_eq!(
                pick_id(
                    &p,
                    Criteria {
                        affinity: Some(conversation),
                        ..Default::default()
                    }
                )
                .await,
                homes[&conversation]
            );
        }
    }
    // Conversations spread over the accounts in the first place.
    assert_eq!(
        homes
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        3
    );
    // Their account cools: they move, and stay on the new one.
    let (conversation, home) = homes.iter().next().map(|(c, h)| (*c, *h)).unwrap();
    p.get(home)
        .unwrap()
        .cool_account(Instant::now() + Duration::from_secs(600), "test".into());
    let moved = pick_id(
        &p,
        Criteria {
            affinity: Some(conversation),
            ..Default::default()
        },
    )
    .await;
    assert_ne!(moved, home);
    assert_eq!(
        pick_id(
            &p,
            Criteria {
                affinity: Some(conversation),
                ..Default::default()
            }
        )
        .await,
        moved
    );
}

#[tokio::test(start_paused = true)]
async fn affinity_yields_to_bounded_load() {
    let p = pool(&[(0, 1, None), (0, 1, None)]).await;
    let home = pick_id(
        &p,
        Criteria {
            affinity: Some(7),
            ..Default::default()
        },
    )
    .await;
    // Pile requests onto the home account.
    let mut held = Vec::new();
    for _ in 0..6 {
        let slot = p
            .acquire(Criteria {
                affinity: Some(7),
                ..Default::default()
            })
            .await
            .unwrap();
        if slot.entry.id != home {
            break;
        }
        held.push(slot);
    }
    assert!(
        held.len() >= 3 && held.len() < 6,
        "affinity yields once its account is far above average: {}",
        held.len()
    );
}

#[tokio::test(start_paused = true)]
async fn all_cooling_is_429_with_the_soonest_moment_and_none_usable_is_503() {
    let p = pool(&[(0, 1, None), (0, 1, None)]).await;
    p.get(1)
        .unwrap()
        .cool_account(Instant::now() + Duration::from_secs(90), "x".into());
    p.get(2)
        .unwrap()
        .cool_account(Instant::now() + Duration::from_secs(30), "x".into());
    match p.acquire(Criteria::default()).await.unwrap_err() {
        GatewayError::RateLimited {
            retry_after_secs, ..
        } => assert_eq!(retry_after_secs, 30),
        other => panic!("{other:?}"),
    }
    let empty = pool(&[]).await;
    assert!(
        matches!(empty.acquire(Criteria::default()).await.unwrap_err(), GatewayError::NoAccount(m) if m.contains("add-key"))
    );
}

#[tokio::test(start_paused = true)]
async fn model_cooldowns_stay_bounded_whatever_models_clients_name() {
    let p = pool(&[(0, 1, None)]).await;
    let e = p.get(1).unwrap();
    for i in 0..10_000 {
        e.cool_model(
            &format!("model-{i}"),
            Instant::now() + Duration::from_secs(60),
        );
    }
    assert!(e.model_cooldowns().len() <= MAX_MODEL_COOLDOWNS);
}

// === the index chooses what the scan over every account chooses ===

/// The rule as it was written before the index: look at every entry on every choice. The reference the index is
/// checked against.
mod scan {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::account::Account;
    use crate::refresh::CredentialState;

    enum Skip {
        Cooling(Instant),
        Saturated,
        Unusable,
    }

    struct Candidate<'a> {
        entry: &'a Arc<AccountEntry>,
        account: Arc<Account>,
        used: i64,
    }

    pub(super) fn choose(pool: &Pool, want: Criteria<'_>) -> Choice {
        let entries = pool.entries();
        let now = pool.engine.now();
        let now_i = Instant::now();
        let mut soonest: Option<Instant> = None;
        let mut saturated = false;
        let mut candidates: Vec<Candidate<'_>> = Vec::new();
        let mut probe: Option<&Arc<AccountEntry>> = None;
        for entry in entries.iter() {
            if want.exclude.contains(&entry.id) {
                continue;
            }
            if !want.accounts.is_empty() {
                let name = &entry.cell.account().name;
                if !want
                    .accounts
                    .iter()
                    .any(|g| crate::keys::limits::glob(g, name))
                {
                    continue;
                }
            }
            match usable(entry, want.model, now) {
                Ok(account) => {
                    let used = (entry.utilization().unwrap_or(0.0) * 10.0).floor() as i64;
                    candidates.push(Candidate {
                        entry,
                        account,
                        used,
                    });
                }
                Err(Skip::Cooling(t)) => {
                    if probe.is_none()
                        && entry.probe_due(now_i, pool.settings.probe_interval)
                        && entry.cell.state().0 == CredentialState::Ready
                        && !entry.saturated(&entry.cell.account())
                    {
                        probe = Some(entry);
                    }
                    soonest = Some(soonest.map_or(t, |s| s.min(t)));
                }
                Err(Skip::Saturated) => saturated = true,
                Err(Skip::Unusable) => {}
            }
        }
        if let Some(entry) = probe {
            if entry.take_probe(now_i, pool.settings.probe_interval) {
                return Choice::Chosen(Slot::new(Arc::clone(entry), true, pool.freed.clone()));
            }
        }
        if candidates.is_empty() {
            return match (saturated, soonest) {
                (true, _) => Choice::Saturated,
                (false, Some(t)) => Choice::Cooling(t),
                (false, None) => Choice::None,
            };
        }
        let top = candidates.iter().map(|c| c.account.priority).min().unwrap();
        candidates.retain(|c| c.account.priority == top);
        if let Some(key) = want.affinity {
            if let Some(id) = pool.affinity.get(key) {
                if let Some(c) = candidates.iter().find(|c| c.entry.id == id) {
                    if !overloaded(pool, c, &candidates) {
                        return Choice::Chosen(Slot::new(
                            Arc::clone(c.entry),
                            false,
                            pool.freed.clone(),
                        ));
                    }
                }
            }
        }
        let chosen = pick(&candidates);
        if let Some(key) = want.affinity {
            pool.affinity.put(key, chosen.id);
        }
        Choice::Chosen(Slot::new(Arc::clone(chosen), false, pool.freed.clone()))
    }

    fn overloaded(pool: &Pool, c: &Candidate<'_>, all: &[Candidate<'_>]) -> bool {
        if all.len() < 2 {
            return false;
        }
        let peers: usize = all
            .iter()
            .filter(|p| p.entry.id != c.entry.id)
            .map(|p| p.entry.in_flight())
            .sum();
        let average = peers as f64 / (all.len() - 1) as f64;
        c.entry.in_flight() as f64 > pool.settings.affinity_load_factor * average + 2.0
    }

    fn pick<'a>(candidates: &[Candidate<'a>]) -> &'a Arc<AccountEntry> {
        let weight = |c: &Candidate<'_>| f64::from(c.account.weight.max(1));
        let load = |c: &Candidate<'_>| c.entry.in_flight() as f64 / weight(c);
        let least = candidates.iter().map(load).fold(f64::INFINITY, f64::min);
        let light: Vec<&Candidate<'a>> = candidates
            .iter()
            .filter(|c| load(c) <= 2.0 * least + 1.0)
            .collect();
        let best_used = light.iter().map(|c| c.used).min().unwrap_or(0);
        let eligible: Vec<&Candidate<'a>> = light
            .into_iter()
            .filter(|c| c.used <= best_used + 1)
            .collect();
        let total: i64 = eligible
            .iter()
            .map(|c| i64::from(c.account.weight.max(1)))
            .sum();
        let mut best: Option<(&Candidate<'a>, i64)> = None;
        for c in &eligible {
            let w = i64::from(c.account.weight.max(1));
            let current = c.entry.swrr.fetch_add(w, Ordering::Relaxed) + w;
            if best.as_ref().is_none_or(|(_, b)| current > *b) {
                best = Some((c, current));
            }
        }
        let (c, _) = best.unwrap();
        c.entry.swrr.fetch_sub(total, Ordering::Relaxed);
        c.entry
    }

    fn usable(
        entry: &AccountEntry,
        model: Option<&str>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Arc<Account>, Skip> {
        let (account, state, until) = entry.cell.gate();
        if account.disabled || account.banned.is_some() {
            return Err(Skip::Unusable);
        }
        match (state, until) {
            (CredentialState::NeedsReauth, _) => return Err(Skip::Unusable),
            (CredentialState::RefreshBackoff, _) if entry.cell.fresh_for_request(&account, now) => {
            }
            (CredentialState::RefreshBackoff | CredentialState::Held, Some(t)) => {
                return Err(Skip::Cooling(
                    t.max(Instant::now() + Duration::from_secs(1)),
                ))
            }
            (CredentialState::RefreshBackoff | CredentialState::Held, None) => {
                return Err(Skip::Unusable)
            }
            (CredentialState::Ready, _) => {}
        }
        if let Some(t) = entry.cooling_until(model) {
            return Err(Skip::Cooling(t));
        }
        if entry.saturated(&account) {
            return Err(Skip::Saturated);
        }
        Ok(account)
    }
}

mod agreement {
    use proptest::prelude::*;

    use super::*;
    use crate::ratelimit::{UnifiedLimits, UnifiedWindow};

    /// (priority, weight, max_concurrency, OAuth, token lifetime in seconds)
    type Spec = (i32, u32, Option<u32>, bool, i64);

    #[derive(Debug, Clone)]
    enum Change {
        Weight(u32),
        Priority(i32),
        Disabled(bool),
        Max(Option<u32>),
        Reauth(bool),
    }

    #[derive(Debug, Clone)]
    enum Op {
        Choose {
            model: u8,
            affinity: Option<u64>,
            exclude: u8,
            /// Index into the key's account globs (0: any account).
            globs: u8,
            keep: bool,
        },
        Drop(usize),
        Succeed(usize),
        CoolAccount(usize, u64),
        CoolModel(usize, u8, u64),
        Limits(usize, u8),
        Block(usize, u64),
        Reset(usize),
        /// Upstream refused the credential (401 after a refresh) or the organization (a ban), decided in the cell.
        Refuse(usize, bool),
        Advance(u64),
        Update(usize, Change),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            (1..4u32).prop_map(Change::Weight),
            (0..3i32).prop_map(Change::Priority),
            any::<bool>().prop_map(Change::Disabled),
            proptest::option::of(0..3u32).prop_map(Change::Max),
            any::<bool>().prop_map(Change::Reauth),
        ]
    }

    /// Durations in whole seconds, mostly multiples of 5 so that cooldowns, probes (every 20 s) and time steps land
    /// on each other's boundaries.
    fn secs() -> impl Strategy<Value = u64> {
        prop_oneof![3 => (1..7u64).prop_map(|x| x * 5), 1 => 1..120u64]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..3u8, proptest::option::of(0..4u64), any::<u8>(), 0..6u8, any::<bool>()).prop_map(
                |(model, affinity, exclude, globs, keep)| Op::Choose {
                    model,
                    affinity,
                    globs: globs.saturating_sub(2),
                    // Exclusions are rare (failover): most choices exclude nothing.
                    exclude: if exclude % 4 == 0 { exclude } else { 0 },
                    keep,
                }
            ),
            2 => any::<usize>().prop_map(Op::Drop),
            1 => any::<usize>().prop_map(Op::Succeed),
            1 => (any::<usize>(), secs()).prop_map(|(a, s)| Op::CoolAccount(a, s)),
            1 => (any::<usize>(), 1..3u8, secs()).prop_map(|(a, m, s)| Op::CoolModel(a, m, s)),
            1 => (any::<usize>(), 0..101u8).prop_map(|(a, u)| Op::Limits(a, u)),
            1 => (any::<usize>(), secs()).prop_map(|(a, s)| Op::Block(a, s)),
            1 => any::<usize>().prop_map(Op::Reset),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(a, ban)| Op::Refuse(a, ban)),
            2 => prop_oneof![(0..5u64).prop_map(|x| x * 5), 0..40u64].prop_map(Op::Advance),
            1 => (any::<usize>(), change()).prop_map(|(a, c)| Op::Update(a, c)),
        ]
    }

    async fn twin(
        specs: &[Spec],
        t0: chrono::DateTime<chrono::Utc>,
    ) -> (Arc<Pool>, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::default());
        for (i, (priority, weight, max, oauth, life)) in specs.iter().enumerate() {
            let a = store
                .insert_account(NewAccount {
                    name: format!("a{i}"),
                    kind: if *oauth {
                        AccountKind::Oauth
                    } else {
                        AccountKind::ApiKey
                    },
                    credential: Credential {
                        secret: format!("k{i}"),
                        refresh_token: oauth.then(|| format!("r{i}")),
                        expires_at: oauth.then(|| t0 + chrono::Duration::seconds(*life)),
                    },
                    identity: Default::default(),
                    priority: *priority,
                    weight: *weight,
                    disabled: false,
                })
                .await
                .unwrap();
            let update = AccountUpdate {
                max_concurrency: Patch::to(*max),
                ..Default::default()
            };
            store.update_account(a.id, a.version, update).await.unwrap();
        }
        let clock = Arc::new(crate::clock::TokioClock::starting_at(t0));
        let engine = RefreshEngine::new(
            store.clone(),
            Arc::new(NoEndpoint),
            clock,
            RefreshSettingsForTest::get(),
        );
        let pool = Arc::new(Pool::new(store.clone(), engine, settings()));
        pool.sync().await.unwrap();
        (pool, store)
    }

    /// What a choice found, comparable across the two pools.
    fn seen(c: &Choice) -> (u8, AccountId, bool, Option<Instant>) {
        match c {
            Choice::Chosen(l) => (0, l.entry.id, l.probe, None),
            Choice::Saturated => (1, 0, false, None),
            Choice::Cooling(t) => (2, 0, false, Some(*t)),
            Choice::None => (3, 0, false, None),
        }
    }

    fn nth(pool: &Pool, i: usize) -> Arc<AccountEntry> {
        let entries = pool.entries();
        Arc::clone(&entries[i % entries.len()])
    }

    async fn update(store: &MemoryStore, pool: &Pool, id: AccountId, change: &Change) {
        let a = store.get_account(id).await.unwrap().unwrap();
        let mut u = AccountUpdate::default();
        match change {
            Change::Weight(w) => u.weight = Some(*w),
            Change::Priority(p) => u.priority = Some(*p),
            Change::Disabled(d) => u.disabled = Some(*d),
            Change::Max(m) => u.max_concurrency = Patch::to(*m),
            Change::Reauth(r) => u.needs_reauth = Patch::to(r.then(|| "revoked".to_string())),
        }
        store.update_account(id, a.version, u).await.unwrap();
        pool.sync().await.unwrap();
    }

    async fn run(specs: Vec<Spec>, ops: Vec<Op>) {
        let t0 = crate::clock::system_now();
        let (scanned, scanned_store) = twin(&specs, t0).await;
        let (indexed, indexed_store) = twin(&specs, t0).await;
        let mut leases: Vec<(Slot, Slot)> = Vec::new();
        let models = [None, Some("m1"), Some("m2")];
        for (step, op) in ops.iter().enumerate() {
            let both = [(&scanned, &scanned_store), (&indexed, &indexed_store)];
            match op {
                Op::Choose {
                    model,
                    affinity,
                    exclude,
                    globs,
                    keep,
                } => {
                    let globs: Vec<String> = match globs {
                        0 => vec![],
                        1 => vec!["a1".into()],
                        2 => vec!["a*".into(), "x".into()],
                        _ => vec!["*2".into(), "a0".into()],
                    };
                    let ids: Vec<AccountId> = scanned
                        .entries()
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| exclude & (1 << (i % 8)) != 0)
                        .map(|(_, e)| e.id)
                        .collect();
                    let want = Criteria {
                        model: models[usize::from(*model)],
                        affinity: *affinity,
                        exclude: &ids,
                        accounts: &globs,
                    };
                    let a = scan::choose(&scanned, want);
                    let b = indexed.choose(want);
                    assert_eq!(seen(&a), seen(&b), "step {step}: {op:?}");
                    if let (Choice::Chosen(a), Choice::Chosen(b), true) = (a, b, *keep) {
                        leases.push((a, b));
                    }
                }
                Op::Drop(i) if !leases.is_empty() => {
                    let n = leases.len();
                    leases.remove(i % n);
                }
                Op::Succeed(i) if !leases.is_empty() => {
                    let (a, b) = &leases[i % leases.len()];
                    a.entry.record_success(a.probe);
                    b.entry.record_success(b.probe);
                }
                Op::Drop(_) | Op::Succeed(_) => {}
                Op::CoolAccount(i, secs) => {
                    for (p, _) in both {
                        nth(p, *i)
                            .cool_account(Instant::now() + Duration::from_secs(*secs), "x".into());
                    }
                }
                Op::CoolModel(i, m, secs) => {
                    let model = models[usize::from(*m)].unwrap();
                    for (p, _) in both {
                        nth(p, *i).cool_model(model, Instant::now() + Duration::from_secs(*secs));
                    }
                }
                Op::Limits(i, used) => {
                    for (p, _) in both {
                        nth(p, *i).set_limits(UnifiedLimits {
                            windows: vec![UnifiedWindow {
                                name: "5h".into(),
                                status: None,
                                utilization: Some(f64::from(*used) / 100.0),
                                reset: None,
                            }],
                            ..Default::default()
                        });
                    }
                }
                Op::Block(i, secs) => {
                    for (p, _) in both {
                        let now = p.engine.now();
                        nth(p, *i).cell.observe_block(
                            now,
                            now + chrono::Duration::seconds(*secs as i64),
                            "token endpoint answered 429",
                        );
                    }
                }
                Op::Reset(i) => {
                    for (p, _) in both {
                        nth(p, *i).clear_cooldowns();
                    }
                }
                Op::Refuse(i, ban) => {
                    for (p, _) in both {
                        let cell = &nth(p, *i).cell;
                        let secret = cell.account().credential.secret.clone();
                        if *ban {
                            p.engine
                                .mark_banned(cell, &secret, "organization disabled".into());
                        } else {
                            p.engine
                                .mark_rejected(cell, &secret, "401 after a refresh".into());
                        }
                    }
                }
                Op::Advance(secs) => tokio::time::advance(Duration::from_secs(*secs)).await,
                Op::Update(i, change) => {
                    for (p, store) in both {
                        update(store, p, nth(p, *i).id, change).await;
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Every choice — account, probe or not, saturated, cooling until when, none — is the scan's, whatever the
        /// sequence of cooldowns, probes, successes, limits, backoffs, store changes, loads and time.
        #[test]
        fn the_index_chooses_what_the_scan_over_every_account_chooses(
            specs in proptest::collection::vec(
                (0..2i32, 1..4u32, proptest::option::of(1..3u32), any::<bool>(), (0..60i64).prop_map(|x| x * 5)),
                1..7,
            ),
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(run(specs, ops));
        }
    }
}

/// The alert check reads every account's state without building its full view; what it finds must be what the views
/// say: per-account alerts (needs a login, banned, refresh backing off) and tiers whose every enabled account cools.
#[tokio::test(start_paused = true)]
async fn the_alert_check_finds_what_the_full_views_say() {
    // Tier 0: all cooling or unusable (one cooling, one banned, one disabled); tier 1: one ready among bad ones.
    let pool = pool(&[
        (0, 1, None),
        (0, 1, None),
        (0, 1, None),
        (1, 1, None),
        (1, 1, None),
        (1, 1, None),
    ])
    .await;
    let store = pool.store.clone();
    let entries = pool.entries();
    let update = |i: usize, update: AccountUpdate| {
        let (store, e) = (store.clone(), entries[i].clone());
        async move {
            let version = e.cell.account().version;
            store.update_account(e.id, version, update).await.unwrap();
        }
    };
    entries[0].cool_account(Instant::now() + Duration::from_secs(30), "429".into());
    update(
        1,
        AccountUpdate {
            banned: Patch::to(Some("organization disabled".into())),
            ..Default::default()
        },
    )
    .await;
    update(
        2,
        AccountUpdate {
            disabled: Some(true),
            ..Default::default()
        },
    )
    .await;
    update(
        4,
        AccountUpdate {
            needs_reauth: Patch::to(Some("invalid_grant".into())),
            ..Default::default()
        },
    )
    .await;
    entries[5].cool_account(Instant::now() + Duration::from_secs(30), "529".into());
    pool.sync().await.unwrap();

    let clock = crate::clock::TokioClock::starting_at(crate::clock::system_now());
    let entries = pool.entries();
    let found = crate::alerts::watch::conditions(&entries, &[], &clock);
    let views: Vec<_> = entries
        .iter()
        .map(|e| crate::view::AccountView::live(e, &clock))
        .collect();
    let expected = crate::alerts::watch::from_views(&views);
    assert_eq!(found, expected);
    let keys: Vec<_> = found.iter().map(|c| c.key.as_str()).collect();
    let (banned, reauth) = (entries[1].id, entries[4].id);
    assert_eq!(
        keys,
        [
            format!("account_banned:{banned}"),
            format!("account_needs_login:{reauth}"),
            "tier_cooling:0".into()
        ],
        "{found:?}"
    );
    // Once tier 0's cooldown ends, its tier alert goes (the banned one stays).
    tokio::time::advance(Duration::from_secs(31)).await;
    let found = crate::alerts::watch::conditions(&pool.entries(), &[], &clock);
    assert_eq!(found.len(), 2, "{found:?}");
}
