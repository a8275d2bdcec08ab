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
                email: None,
                account_uuid: None,
                organization_uuid: None,
                organization_name: None,
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
