//! Refresh-engine behaviour against a scripted token endpoint and an in-memory store. Backoff and Retry-After tests run
//! on tokio's paused clock; stampede tests run with real concurrency on a multi-threaded runtime.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;

use super::*;
use crate::account::{Account, AccountKind, Credential, NewAccount};
use crate::clock::{Clock, TokioClock};
use crate::oauth::{TokenEndpoint, TokenError, TokenFuture, TokenResponse};
use crate::store::memory::MemoryStore;
use crate::store::Patch;
use crate::store::Store;

/// Issue 11: hostile values, panics inside a flight, rotations that must not be lost, the lost-answer rule.
mod rotations;

/// One scripted answer.
#[derive(Debug, Clone)]
enum Answer {
    /// Rotate: answer a fresh pair derived from a counter.
    Rotate,
    Fail(TokenError),
    /// Wait for `release` before rotating (a slow endpoint the test controls).
    Gate,
}

#[derive(Debug, Default)]
struct FakeEndpoint {
    script: Mutex<VecDeque<Answer>>,
    calls: Mutex<Vec<String>>,
    issued: AtomicUsize,
    release: Notify,
    entered: Notify,
    delay: Mutex<Option<Duration>>,
}

impl FakeEndpoint {
    fn with(script: Vec<Answer>) -> Arc<Self> {
        Arc::new(FakeEndpoint {
            script: Mutex::new(script.into()),
            ..Default::default()
        })
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn rotate(&self) -> TokenResponse {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        serde_json::from_value(serde_json::json!({
            "access_token": format!("at-{n}"),
            "refresh_token": format!("rt-{n}"),
            "expires_in": 28800,
            "account": {"uuid": "u", "email_address": "user@example.com"},
        }))
        .unwrap()
    }
}

impl TokenEndpoint for FakeEndpoint {
    fn refresh<'a>(&'a self, refresh_token: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(refresh_token.to_string());
            self.entered.notify_one();
            let delay = *self.delay.lock().unwrap();
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let answer = self
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Answer::Rotate);
            match answer {
                Answer::Rotate => Ok(self.rotate()),
                Answer::Fail(e) => Err(e),
                Answer::Gate => {
                    self.release.notified().await;
                    Ok(self.rotate())
                }
            }
        })
    }
}

fn settings() -> RefreshSettings {
    let cfg = crate::config::RefreshConfig {
        max_attempts: 3,
        backoff_base_ms: 1000,
        rate_limit_backoff_base_secs: 60,
        lead_secs: 600,
        ..Default::default()
    };
    RefreshSettings::from(&cfg)
}

struct Rig {
    store: Arc<MemoryStore>,
    endpoint: Arc<FakeEndpoint>,
    engine: RefreshEngine,
    cell: Arc<CredentialCell>,
}

async fn rig(script: Vec<Answer>, expires_in: chrono::Duration) -> Rig {
    rig_with(script, expires_in, settings()).await
}

async fn rig_with(
    script: Vec<Answer>,
    expires_in: chrono::Duration,
    settings: RefreshSettings,
) -> Rig {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(TokioClock::starting_at(crate::clock::system_now()));
    let account = store
        .insert_account(oauth_account("a", "rt-0", clock.now() + expires_in))
        .await
        .unwrap();
    let endpoint = FakeEndpoint::with(script);
    let engine = RefreshEngine::new(store.clone(), endpoint.clone(), clock, settings);
    Rig {
        store,
        endpoint,
        engine,
        cell: CredentialCell::new(account),
    }
}

fn oauth_account(name: &str, rt: &str, expires_at: chrono::DateTime<Utc>) -> NewAccount {
    NewAccount {
        name: name.into(),
        kind: AccountKind::Oauth,
        credential: Credential {
            secret: "at-0".into(),
            refresh_token: Some(rt.into()),
            expires_at: Some(expires_at),
        },
        identity: Default::default(),
        priority: 0,
        weight: 1,
        disabled: false,
    }
}

fn expired() -> chrono::Duration {
    chrono::Duration::seconds(-10)
}

async fn stored(store: &MemoryStore) -> Account {
    store.list_accounts().await.unwrap().remove(0)
}

// === 1. One call per refresh ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_callers_cause_one_exchange() {
    let r = rig(vec![], expired()).await;
    *r.endpoint.delay.lock().unwrap() = Some(Duration::from_millis(50));
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let engine = r.engine.clone();
        let cell = r.cell.clone();
        tasks.push(tokio::spawn(async move { engine.credential(&cell).await }));
    }
    for t in tasks {
        let account = t.await.unwrap().unwrap();
        assert_eq!(account.credential.secret, "at-1");
    }
    assert_eq!(r.endpoint.calls(), vec!["rt-0"]);
    // Persisted before use.
    assert_eq!(
        stored(&r.store).await.credential.refresh_token.as_deref(),
        Some("rt-1")
    );
    // A request after the refresh uses the new token; no second exchange with the old refresh token.
    assert_eq!(
        r.engine
            .credential(&r.cell)
            .await
            .unwrap()
            .credential
            .secret,
        "at-1"
    );
    assert_eq!(r.endpoint.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_401_replacement_is_deduplicated_against_an_already_rotated_cell() {
    let r = rig(vec![], chrono::Duration::hours(1)).await;
    // Upstream rejected at-0: one forced refresh.
    let a = r.engine.replace_rejected(&r.cell, "at-0").await.unwrap();
    assert_eq!(a.credential.secret, "at-1");
    // A second request that also saw at-0 rejected gets at-1 without a new exchange.
    let b = r.engine.replace_rejected(&r.cell, "at-0").await.unwrap();
    assert_eq!(b.credential.secret, "at-1");
    assert_eq!(r.endpoint.calls(), vec!["rt-0"]);
}

// === 2. Cancellation ===

#[tokio::test(start_paused = true)]
async fn dropping_the_caller_that_started_a_refresh_does_not_cancel_it() {
    let r = rig(vec![Answer::Gate], expired()).await;
    let leader = {
        let (engine, cell) = (r.engine.clone(), r.cell.clone());
        tokio::spawn(async move { engine.credential(&cell).await })
    };
    r.endpoint.entered.notified().await;
    let follower = {
        let (engine, cell) = (r.engine.clone(), r.cell.clone());
        tokio::spawn(async move { engine.credential(&cell).await })
    };
    tokio::task::yield_now().await;
    leader.abort(); // the client that triggered the refresh went away
    assert!(leader.await.unwrap_err().is_cancelled());
    r.endpoint.release.notify_one();
    let account = follower.await.unwrap().unwrap();
    assert_eq!(account.credential.secret, "at-1");
    assert_eq!(r.endpoint.calls().len(), 1);
    assert_eq!(
        stored(&r.store).await.credential.refresh_token.as_deref(),
        Some("rt-1")
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_client_left_stops_waiting_at_once() {
    let r = rig(vec![Answer::Gate], expired()).await;
    let waiter = {
        let (engine, cell) = (r.engine.clone(), r.cell.clone());
        tokio::spawn(async move { engine.credential(&cell).await })
    };
    r.endpoint.entered.notified().await;
    waiter.abort();
    // The waiter is gone although the flight still runs.
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert!(r.cell.refreshing());
    r.endpoint.release.notify_one();
    r.engine.tasks().close();
    r.engine.tasks().wait().await;
    assert!(!r.cell.refreshing());
    assert_eq!(r.cell.account().credential.secret, "at-1");
}

#[tokio::test(start_paused = true)]
async fn no_waiter_hangs_past_the_refresh_timeout() {
    let mut s = settings();
    s.wait_timeout = Duration::from_secs(10);
    s.call_timeout = Duration::from_secs(3600);
    let r = rig_with(vec![Answer::Gate], expired(), s).await;
    let started = tokio::time::Instant::now();
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert!(matches!(err, RefreshError::Timeout), "{err:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_hung_token_call_is_cut_by_the_call_timeout_and_tried_once_more() {
    let mut s = settings();
    s.call_timeout = Duration::from_secs(5);
    s.wait_timeout = Duration::from_secs(60);
    // First call hangs (answer never arrives), second succeeds.
    let r = rig_with(vec![Answer::Gate, Answer::Rotate], expired(), s).await;
    let account = r.engine.credential(&r.cell).await.unwrap();
    assert_eq!(account.credential.secret, "at-1");
    assert_eq!(
        r.endpoint.calls(),
        vec!["rt-0", "rt-0"],
        "the old token is tried exactly once more"
    );
}

// === 3. 429 from the token endpoint ===

#[tokio::test(start_paused = true)]
async fn retry_after_blocks_every_path_then_allows_exactly_one_call() {
    let r = rig(
        vec![Answer::Fail(TokenError::RateLimited {
            retry_after: Some(Duration::from_secs(120)),
        })],
        expired(),
    )
    .await;
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert!(
        matches!(
            err,
            RefreshError::Backoff {
                rate_limited: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(r.endpoint.calls().len(), 1);
    assert_eq!(r.cell.state().0, CredentialState::RefreshBackoff);

    tokio::time::advance(Duration::from_secs(119)).await;
    // Request path, forced (401) path, proactive path and admin path all refuse.
    assert!(matches!(
        r.engine.credential(&r.cell).await,
        Err(RefreshError::Backoff { .. })
    ));
    assert!(matches!(
        r.engine.replace_rejected(&r.cell, "at-0").await,
        Err(RefreshError::Backoff { .. })
    ));
    r.engine.refresh_ahead(&r.cell);
    assert!(r.engine.refresh_now(&r.cell).is_err());
    tokio::task::yield_now().await;
    assert_eq!(
        r.endpoint.calls().len(),
        1,
        "no call before Retry-After passed"
    );

    tokio::time::advance(Duration::from_secs(1)).await;
    let (a, b) = tokio::join!(r.engine.credential(&r.cell), r.engine.credential(&r.cell));
    assert_eq!(a.unwrap().credential.secret, "at-1");
    assert_eq!(b.unwrap().credential.secret, "at-1");
    assert_eq!(
        r.endpoint.calls().len(),
        2,
        "exactly one call after the wait"
    );
}

#[tokio::test(start_paused = true)]
async fn without_retry_after_backoff_is_exponential_and_jittered() {
    let rl = || Answer::Fail(TokenError::RateLimited { retry_after: None });
    let r = rig(vec![rl(), rl(), rl()], expired()).await;
    let mut waits = Vec::new();
    for strike in 0..3u32 {
        let err = r.engine.credential(&r.cell).await.unwrap_err();
        let until = err.retry_at().unwrap();
        let wait = until - tokio::time::Instant::now();
        // base 60 s, doubled per strike, equal jitter in [d/2, d].
        let full = Duration::from_secs(60 * 2u64.pow(strike));
        assert!(
            wait >= full / 2 && wait <= full,
            "strike {strike}: {wait:?}"
        );
        waits.push(wait);
        // Just before the end: still blocked, no call.
        tokio::time::advance(wait - Duration::from_millis(1)).await;
        assert!(r.engine.credential(&r.cell).await.is_err());
        assert_eq!(r.endpoint.calls().len(), strike as usize + 1);
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    let ok = r.engine.credential(&r.cell).await.unwrap();
    assert_eq!(ok.credential.secret, "at-1");
    assert_eq!(r.endpoint.calls().len(), 4);
}

// === 4. Permanent failures ===

fn invalid_grant() -> Answer {
    Answer::Fail(TokenError::Rejected {
        status: 400,
        error: "invalid_grant".into(),
        description: Some("Refresh token not found or invalid".into()),
    })
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_marks_needs_reauth_and_the_endpoint_is_not_called_again() {
    let r = rig(vec![invalid_grant()], expired()).await;
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert!(
        matches!(&err, RefreshError::NeedsReauth(m) if m.contains("invalid_grant")),
        "{err:?}"
    );
    let s = stored(&r.store).await;
    assert!(s.needs_reauth.as_deref().unwrap().contains("log in again"));
    tokio::time::advance(Duration::from_secs(86_400)).await;
    for _ in 0..3 {
        assert!(matches!(
            r.engine.credential(&r.cell).await,
            Err(RefreshError::NeedsReauth(_))
        ));
    }
    r.engine.refresh_ahead(&r.cell);
    assert_eq!(r.endpoint.calls().len(), 1);

    // Re-import: a new credential clears the flag and refreshing works again.
    let s = stored(&r.store).await;
    let update = crate::store::AccountUpdate {
        credential: Some(Credential {
            secret: "at-x".into(),
            refresh_token: Some("rt-x".into()),
            expires_at: Some(crate::clock::system_now() - chrono::Duration::hours(1)),
        }),
        needs_reauth: Patch::Clear,
        ..Default::default()
    };
    let s = r
        .store
        .update_account(s.id, s.version, update)
        .await
        .unwrap();
    r.cell.observe_stored(s);
    assert_eq!(
        r.engine
            .credential(&r.cell)
            .await
            .unwrap()
            .credential
            .secret,
        "at-1"
    );
    assert_eq!(r.endpoint.calls(), vec!["rt-0", "rt-x"]);
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_after_someone_else_rotated_adopts_the_stored_credential() {
    let r = rig(vec![invalid_grant()], expired()).await;
    // Another process rotates the token after our flight read the store but before the endpoint answers: simulate by
    // writing the store now; the flight re-reads after the rejection.
    let s = stored(&r.store).await;
    let fresh_cred = Credential {
        secret: "at-other".into(),
        refresh_token: Some("rt-other".into()),
        expires_at: Some(crate::clock::system_now() + chrono::Duration::hours(8)),
    };
    // Make the cell's view stale (the store moved on).
    r.store
        .update_account(
            s.id,
            s.version,
            crate::store::AccountUpdate {
                credential: Some(fresh_cred),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let a = r.engine.credential(&r.cell).await.unwrap();
    assert_eq!(a.credential.secret, "at-other");
    assert!(
        r.endpoint.calls().is_empty(),
        "the stored credential was already fresh: no exchange"
    );
    assert!(stored(&r.store).await.needs_reauth.is_none());
}

// === 5. Transient failures ===

#[tokio::test(start_paused = true)]
async fn transient_failures_retry_with_backoff_and_report_real_attempts() {
    let server = || Answer::Fail(TokenError::Server { status: 503 });
    let r = rig(vec![server(), server(), server()], expired()).await;
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert_eq!(r.endpoint.calls().len(), 3);
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(r.cell.state().0, CredentialState::RefreshBackoff);
    assert!(err.retry_at().unwrap() > tokio::time::Instant::now());
    // Blocked until the next try; then one flight.
    assert!(r.engine.credential(&r.cell).await.is_err());
    assert_eq!(r.endpoint.calls().len(), 3);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        r.engine
            .credential(&r.cell)
            .await
            .unwrap()
            .credential
            .secret,
        "at-1"
    );
}

#[tokio::test(start_paused = true)]
async fn one_attempt_says_one_attempt() {
    let mut s = settings();
    s.max_attempts = 1;
    let r = rig_with(
        vec![Answer::Fail(TokenError::Connect("refused".into()))],
        expired(),
        s,
    )
    .await;
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert!(err.to_string().contains("after 1 attempt:"), "{err}");
    assert_eq!(r.endpoint.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_then_success_within_one_flight() {
    let r = rig(
        vec![Answer::Fail(TokenError::Server { status: 502 })],
        expired(),
    )
    .await;
    assert_eq!(
        r.engine
            .credential(&r.cell)
            .await
            .unwrap()
            .credential
            .secret,
        "at-1"
    );
    assert_eq!(r.endpoint.calls(), vec!["rt-0", "rt-0"]);
}

// === 6. Durable rotation ===

#[tokio::test(start_paused = true)]
async fn a_rotation_that_cannot_be_persisted_holds_the_account_and_is_persisted_later_without_a_new_exchange(
) {
    let r = rig(vec![Answer::Gate], expired()).await;
    let waiter = {
        let (engine, cell) = (r.engine.clone(), r.cell.clone());
        tokio::spawn(async move { engine.credential(&cell).await })
    };
    // The store becomes unwritable after the endpoint rotated the token, before the rotation is written.
    r.endpoint.entered.notified().await;
    r.store.fail_writes.store(true, Ordering::SeqCst);
    r.endpoint.release.notify_one();
    let err = waiter.await.unwrap().unwrap_err();
    assert!(matches!(err, RefreshError::Held(_)), "{err:?}");
    assert_eq!(r.cell.state().0, CredentialState::Held);
    assert_eq!(
        r.cell.account().credential.secret,
        "at-0",
        "the unpersisted token is not used"
    );
    assert_eq!(r.endpoint.calls().len(), 1);

    r.store.fail_writes.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(2)).await;
    let a = r.engine.credential(&r.cell).await.unwrap();
    assert_eq!(a.credential.secret, "at-1");
    assert_eq!(
        r.endpoint.calls().len(),
        1,
        "the pending rotation was persisted, not exchanged again"
    );
    assert_eq!(
        stored(&r.store).await.credential.refresh_token.as_deref(),
        Some("rt-1")
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_retries_the_old_token_once_and_then_reports_the_lost_outcome() {
    let r = rig(
        vec![
            Answer::Fail(TokenError::Lost("connection closed".into())),
            invalid_grant(),
        ],
        expired(),
    )
    .await;
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert_eq!(r.endpoint.calls(), vec!["rt-0", "rt-0"]);
    match err {
        RefreshError::NeedsReauth(m) => assert!(
            m.contains("answer to a refresh was lost") && m.contains("unknown"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn store_unreachable_means_no_refresh_is_attempted() {
    let r = rig(vec![], expired()).await;
    r.store.fail_all.store(true, Ordering::SeqCst);
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert!(matches!(err, RefreshError::Store(_)), "{err:?}");
    assert!(r.endpoint.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_setup_token_is_used_until_it_expires_and_never_refreshed() {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(TokioClock::starting_at(crate::clock::system_now()));
    let mut new = oauth_account("setup", "unused", clock.now() + chrono::Duration::hours(1));
    new.credential.refresh_token = None;
    let account = store.insert_account(new).await.unwrap();
    let endpoint = FakeEndpoint::with(vec![]);
    let engine = RefreshEngine::new(store.clone(), endpoint.clone(), clock, settings());
    let cell = CredentialCell::new(account);
    assert_eq!(
        engine.credential(&cell).await.unwrap().credential.secret,
        "at-0"
    );
    engine.refresh_ahead(&cell);
    tokio::time::advance(Duration::from_secs(3600)).await;
    let err = engine.credential(&cell).await.unwrap_err();
    assert!(
        matches!(&err, RefreshError::NeedsReauth(m) if m.contains("no refresh token")),
        "{err:?}"
    );
    assert!(endpoint.calls().is_empty());
}

// === 7. Proactive refresh ===

#[tokio::test(start_paused = true)]
async fn refresh_ahead_starts_within_the_jittered_lead_only() {
    // An 8-hour token, lead 600 s ± 25 %: never before 750 s ahead, always by 450 s ahead.
    let life = 8 * 3600;
    let r = rig(vec![], chrono::Duration::seconds(life)).await;
    tokio::time::advance(Duration::from_secs(life as u64 - 750)).await;
    r.engine.refresh_ahead(&r.cell);
    tokio::task::yield_now().await;
    assert!(r.endpoint.calls().is_empty());
    tokio::time::advance(Duration::from_secs(750 - 450)).await;
    r.engine.refresh_ahead(&r.cell);
    r.engine.tasks().close();
    r.engine.tasks().wait().await;
    assert_eq!(r.endpoint.calls().len(), 1);
    assert_eq!(r.cell.account().credential.secret, "at-1");
    // The request path had nothing to wait for.
    assert_eq!(
        r.engine
            .credential(&r.cell)
            .await
            .unwrap()
            .credential
            .secret,
        "at-1"
    );
}

// === 8. Bounded memory ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_ten_thousand_accounts_leaves_no_state_behind() {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(TokioClock::starting_at(crate::clock::system_now()));
    let endpoint = FakeEndpoint::with(vec![]);
    let mut unpaced = settings();
    unpaced.call_interval = Duration::from_nanos(1);
    unpaced.call_burst = 100_000;
    let engine = RefreshEngine::new(store.clone(), endpoint.clone(), clock.clone(), unpaced);
    let pool = crate::pool::Pool::new(
        store.clone(),
        engine.clone(),
        (&crate::config::PoolConfig::default()).into(),
    );
    let mut weak = Vec::new();
    for round in 0..10 {
        for i in 0..1000 {
            store
                .insert_account(oauth_account(
                    &format!("r{round}-{i}"),
                    &format!("rt-{round}-{i}"),
                    clock.now() - chrono::Duration::seconds(1),
                ))
                .await
                .unwrap();
        }
        pool.sync().await.unwrap();
        let entries = pool.entries();
        let mut joins = Vec::new();
        for e in entries.iter() {
            weak.push(Arc::downgrade(&e.cell));
            let (engine, cell) = (engine.clone(), e.cell.clone());
            joins.push(tokio::spawn(async move { engine.credential(&cell).await }));
        }
        for j in joins {
            j.await.unwrap().unwrap();
        }
        drop(entries);
        for a in store.list_accounts().await.unwrap() {
            store.remove_account(a.id).await.unwrap();
        }
        pool.sync().await.unwrap();
        assert!(pool.entries().is_empty());
    }
    assert_eq!(endpoint.calls().len(), 10_000);
    assert!(engine.tasks().is_empty(), "no flight outlives its refresh");
    assert!(
        weak.iter().all(|w| w.upgrade().is_none()),
        "every account's refresh state was dropped with it"
    );
}

// === Coordination through the store (several processes) ===

#[tokio::test(start_paused = true)]
async fn a_refresh_waits_for_another_holder_of_the_lease_and_adopts_its_result() {
    let r = rig(vec![], expired()).await;
    let id = stored(&r.store).await.id;
    // Another process holds the lease.
    let other = r
        .store
        .acquire_refresh_lease(id, "other-replica", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let waiter = {
        let (engine, cell) = (r.engine.clone(), r.cell.clone());
        tokio::spawn(async move { engine.credential(&cell).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        r.endpoint.calls().is_empty(),
        "no exchange while another process holds the lease"
    );
    // The other process stores its rotation.
    let s = stored(&r.store).await;
    let fence = crate::store::Fence {
        holder: "other-replica".into(),
        token: other,
    };
    let cred = Credential {
        secret: "at-other".into(),
        refresh_token: Some("rt-other".into()),
        expires_at: Some(crate::clock::system_now() + chrono::Duration::hours(8)),
    };
    r.store
        .update_account_fenced(
            id,
            s.version,
            &fence,
            crate::store::AccountUpdate {
                credential: Some(cred),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let a = waiter.await.unwrap().unwrap();
    assert_eq!(a.credential.secret, "at-other");
    assert!(r.endpoint.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_and_the_stale_holder_cannot_write() {
    let r = rig(vec![], expired()).await;
    let id = stored(&r.store).await.id;
    let dead = r
        .store
        .acquire_refresh_lease(id, "dead-replica", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::advance(Duration::from_millis(5)).await; // the memory store's lease clock is tokio's
    let a = r.engine.credential(&r.cell).await.unwrap();
    assert_eq!(a.credential.secret, "at-1");
    assert_eq!(
        r.endpoint.calls(),
        vec!["rt-0"],
        "the taker re-read the stored token"
    );
    // The dead holder wakes up and tries to write its (stale) result: fenced out.
    let s = stored(&r.store).await;
    let fence = crate::store::Fence {
        holder: "dead-replica".into(),
        token: dead,
    };
    let stale = Credential {
        secret: "at-stale".into(),
        refresh_token: Some("rt-stale".into()),
        expires_at: None,
    };
    let err = r
        .store
        .update_account_fenced(
            id,
            s.version,
            &fence,
            crate::store::AccountUpdate {
                credential: Some(stale),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, crate::store::StoreError::Fenced(_)),
        "{err:?}"
    );
    assert_eq!(
        stored(&r.store).await.credential.refresh_token.as_deref(),
        Some("rt-1")
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_is_recorded_in_the_store_and_binds_a_process_that_never_saw_it() {
    let r = rig(
        vec![Answer::Fail(TokenError::RateLimited {
            retry_after: Some(Duration::from_secs(300)),
        })],
        expired(),
    )
    .await;
    assert!(r.engine.credential(&r.cell).await.is_err());
    r.engine.tasks().close();
    r.engine.tasks().wait().await;
    let s = stored(&r.store).await;
    assert!(
        s.refresh_blocked_until.is_some(),
        "block written to the store"
    );
    // A second process (its own engine and cell, same store and endpoint) does not call the endpoint.
    let clock = Arc::new(TokioClock::starting_at(crate::clock::system_now()));
    let other = RefreshEngine::new(r.store.clone(), r.endpoint.clone(), clock, settings());
    let cell = CredentialCell::new(s);
    let err = other.credential(&cell).await.unwrap_err();
    assert!(matches!(err, RefreshError::Backoff { .. }), "{err:?}");
    assert_eq!(r.endpoint.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_holder_keeps_its_lease_however_long_the_endpoint_takes() {
    let mut s = settings();
    s.lease_ttl = Duration::from_millis(300); // renewed every 100 ms
    s.call_timeout = Duration::from_secs(10);
    let r = rig_with(vec![Answer::Gate], expired(), s).await;
    let id = stored(&r.store).await.id;
    let waiter = {
        let (engine, cell) = (r.engine.clone(), r.cell.clone());
        tokio::spawn(async move { engine.credential(&cell).await })
    };
    r.endpoint.entered.notified().await;
    // Well past the lease's time-to-live, another process still cannot take it: the holder renews it.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let taken = r
            .store
            .acquire_refresh_lease(id, "other-replica", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(taken, None, "a live holder's lease was taken");
    }
    r.endpoint.release.notify_one();
    assert_eq!(waiter.await.unwrap().unwrap().credential.secret, "at-1");
    // Released afterwards: the other process may take it at once.
    assert!(r
        .store
        .acquire_refresh_lease(id, "other-replica", Duration::from_secs(30))
        .await
        .unwrap()
        .is_some());
}

// === The token-endpoint budget (issue 17): one endpoint for every account ===

/// Records when each call arrived (tokio time) and which refresh token it carried, delegating to a scripted endpoint.
#[derive(Debug)]
struct Timed {
    inner: Arc<FakeEndpoint>,
    start: tokio::time::Instant,
    at: Mutex<Vec<(Duration, String)>>,
}

impl TokenEndpoint for Timed {
    fn refresh<'a>(&'a self, refresh_token: &'a str) -> TokenFuture<'a> {
        self.at
            .lock()
            .unwrap()
            .push((self.start.elapsed(), refresh_token.to_string()));
        self.inner.refresh(refresh_token)
    }
}

impl Timed {
    fn times(&self) -> Vec<Duration> {
        self.at.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }
    fn tokens(&self) -> Vec<String> {
        self.at
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }
}

struct Fleet {
    endpoint: Arc<Timed>,
    engine: RefreshEngine,
    cells: Vec<Arc<CredentialCell>>,
}

/// `n` accounts (refresh tokens `rt-a0` …) expiring at the given offsets, one engine, a budget of `rate`/s.
async fn fleet(
    script: Vec<Answer>,
    expiries: &[chrono::Duration],
    adjust: impl FnOnce(&mut RefreshSettings),
) -> Fleet {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(TokioClock::starting_at(crate::clock::system_now()));
    let mut cells = Vec::new();
    for (i, exp) in expiries.iter().enumerate() {
        let a = store
            .insert_account(oauth_account(
                &format!("a{i}"),
                &format!("rt-a{i}"),
                clock.now() + *exp,
            ))
            .await
            .unwrap();
        cells.push(CredentialCell::new(a));
    }
    let endpoint = Arc::new(Timed {
        inner: FakeEndpoint::with(script),
        start: tokio::time::Instant::now(),
        at: Mutex::default(),
    });
    let mut s = settings();
    adjust(&mut s);
    let engine = RefreshEngine::new(store, endpoint.clone(), clock, s);
    Fleet {
        endpoint,
        engine,
        cells,
    }
}

fn per_sec(rate: f64, burst: u32) -> impl FnOnce(&mut RefreshSettings) {
    move |s| {
        s.call_interval = Duration::from_secs_f64(1.0 / rate);
        s.call_burst = burst;
    }
}

async fn all_credentials(f: &Fleet) -> Vec<Result<Arc<Account>, RefreshError>> {
    let mut joins = Vec::new();
    for cell in &f.cells {
        let (engine, cell) = (f.engine.clone(), cell.clone());
        joins.push(tokio::spawn(async move { engine.credential(&cell).await }));
    }
    let mut out = Vec::new();
    for j in joins {
        out.push(j.await.unwrap());
    }
    out
}

/// The GCRA promise: the i-th call (0-based) comes no earlier than (i + 1 - burst) intervals after the first.
fn assert_paced(times: &[Duration], interval: Duration, burst: u32) {
    let first = times[0];
    for (i, t) in times.iter().enumerate() {
        let earliest = interval.mul_f64((i as f64 + 1.0 - f64::from(burst)).max(0.0));
        assert!(
            *t - first + Duration::from_millis(1) >= earliest,
            "call {i} at {t:?} is ahead of the budget ({earliest:?} after the first); all: {times:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_budget_paces_token_calls_of_every_account_and_every_refresh_succeeds() {
    let f = fleet(vec![], &[expired(); 12], per_sec(2.0, 2)).await;
    let results = all_credentials(&f).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let times = f.endpoint.times();
    assert_eq!(times.len(), 12, "one call per account");
    assert_paced(&times, Duration::from_millis(500), 2);
    // 12 calls at 2/s with a burst of 2: the last one about 5 s after the first, not all at once.
    assert!(
        times[11] - times[0] >= Duration::from_millis(4900),
        "{times:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_429_pauses_the_refresh_of_every_account_until_its_retry_after() {
    let rl = || {
        Answer::Fail(TokenError::RateLimited {
            retry_after: Some(Duration::from_secs(6)),
        })
    };
    let f = fleet(vec![rl(), rl()], &[expired(); 12], per_sec(2.0, 2)).await;
    let results = all_credentials(&f).await;
    let calls = f.endpoint.times().len();
    f.endpoint.inner.script.lock().unwrap().clear(); // the endpoint answers normally after the 6 s
    assert!(
        calls <= 2,
        "{calls} token calls after a 429 with Retry-After 6"
    );
    for r in &results {
        assert!(
            matches!(
                r,
                Err(RefreshError::Backoff {
                    rate_limited: true,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    // Every path refuses during the pause, also for accounts that never called.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(matches!(
        f.engine.credential(&f.cells[11]).await,
        Err(RefreshError::Backoff { .. })
    ));
    assert!(f.engine.refresh_now(&f.cells[10]).is_err());
    f.engine.refresh_ahead_all(f.cells.iter());
    tokio::task::yield_now().await;
    assert_eq!(
        f.endpoint.times().len(),
        calls,
        "no call before the Retry-After passed"
    );
    // Afterwards every account refreshes, within the budget.
    tokio::time::advance(Duration::from_secs(1)).await;
    let results = all_credentials(&f).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let times = f.endpoint.times();
    assert!(
        times[calls..].iter().all(|t| *t >= Duration::from_secs(6)),
        "{times:?}"
    );
    assert_paced(&times[calls..], Duration::from_millis(500), 2);
}

#[tokio::test(start_paused = true)]
async fn with_account_scope_a_429_pauses_only_its_account() {
    let f = fleet(
        vec![Answer::Fail(TokenError::RateLimited {
            retry_after: Some(Duration::from_secs(60)),
        })],
        &[expired(); 2],
        |s| s.endpoint_scope = false,
    )
    .await;
    assert!(f.engine.credential(&f.cells[0]).await.is_err());
    let other = f.engine.credential(&f.cells[1]).await.unwrap();
    assert_eq!(other.credential.refresh_token.as_deref(), Some("rt-1"));
    assert!(matches!(
        f.engine.credential(&f.cells[0]).await,
        Err(RefreshError::Backoff { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_refresh_a_request_waits_for_goes_before_proactive_ones() {
    // Ten tokens due for a proactive refresh, one already expired; one call per second, no burst.
    let mut expiries = vec![chrono::Duration::seconds(120); 10];
    expiries.push(expired());
    let f = fleet(vec![], &expiries, |s| {
        per_sec(1.0, 1)(s);
        s.scan_interval = Duration::from_secs(60);
    })
    .await;
    f.engine.refresh_ahead_all(f.cells[..10].iter());
    tokio::time::advance(Duration::from_millis(1500)).await;
    let started = f.endpoint.times().len();
    let account = f.engine.credential(&f.cells[10]).await.unwrap();
    assert!(account.credential.secret.starts_with("at-"));
    let tokens = f.endpoint.tokens();
    let position = tokens.iter().position(|t| t == "rt-a10").unwrap();
    assert!(
        position <= started + 1,
        "the request's refresh waited behind proactive ones: {tokens:?}"
    );
    f.engine.tasks().close();
    f.engine.tasks().wait().await;
    assert_paced(&f.endpoint.times(), Duration::from_secs(1), 1);
}

#[tokio::test(start_paused = true)]
async fn a_proactive_scan_starts_no_more_than_the_budget_serves_soonest_expiry_first() {
    // 100 ten-minute tokens expiring within the same two minutes, all within their lead after 450 s; 2 calls/s
    // and a 15 s scan: 30 refreshes per scan.
    let expiries: Vec<_> = (0..100)
        .map(|i| chrono::Duration::seconds(600 - i))
        .collect();
    let f = fleet(vec![], &expiries, per_sec(2.0, 2)).await;
    tokio::time::advance(Duration::from_secs(450)).await;
    f.engine.refresh_ahead_all(f.cells.iter());
    let refreshing: Vec<usize> = (0..100).filter(|i| f.cells[*i].refreshing()).collect();
    assert_eq!(
        refreshing,
        (70..100).collect::<Vec<_>>(),
        "the 30 soonest to expire"
    );
    // A scan while they run starts nothing more; once they are done the next 30 go.
    f.engine.refresh_ahead_all(f.cells.iter());
    assert_eq!((0..100).filter(|i| f.cells[*i].refreshing()).count(), 30);
    tokio::time::sleep(Duration::from_secs(15)).await;
    f.engine.refresh_ahead_all(f.cells.iter());
    assert_eq!((40..70).filter(|i| f.cells[*i].refreshing()).count(), 30);
    f.engine.tasks().close();
    f.engine.tasks().wait().await;
    assert_eq!(f.endpoint.times().len(), 60);
    assert_paced(&f.endpoint.times(), Duration::from_millis(500), 1);
}

#[tokio::test(start_paused = true)]
async fn a_short_lived_token_is_used_for_its_life_and_refreshed_once_near_its_end() {
    // A 4-second token: a fixed 30 s skew would call it expired at once, so every request would refresh it.
    let f = fleet(vec![], &[chrono::Duration::seconds(4)], |_| {}).await;
    for _ in 0..35 {
        let a = f.engine.credential(&f.cells[0]).await.unwrap();
        assert_eq!(a.credential.secret, "at-0");
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    f.engine.refresh_ahead_all(f.cells.iter());
    assert!(
        f.endpoint.times().is_empty(),
        "not exchanged before its margin"
    );
    tokio::time::advance(Duration::from_millis(200)).await;
    let a = f.engine.credential(&f.cells[0]).await.unwrap();
    assert_eq!(a.credential.secret, "at-1");
    assert_eq!(f.endpoint.times().len(), 1);
}
