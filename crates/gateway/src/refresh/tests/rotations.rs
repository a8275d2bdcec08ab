//! Hostile values, a panicking flight, held rotations, the lost-answer rule (issue 11), on tokio's paused clock.

use super::*;
use crate::store::Fence;

struct PanickingEndpoint;

impl std::fmt::Debug for PanickingEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PanickingEndpoint")
    }
}

impl TokenEndpoint for PanickingEndpoint {
    fn refresh<'a>(&'a self, _: &'a str) -> TokenFuture<'a> {
        Box::pin(async { panic!("injected panic inside the token call") })
    }
}

// === A flight settles even if its task panics ===

#[tokio::test(start_paused = true)]
async fn a_flight_whose_task_panics_settles_its_cell_and_answers_its_waiters() {
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(TokioClock::starting_at(Utc::now()));
    let account = store
        .insert_account(oauth_account("a", "rt-0", clock.now() + expired()))
        .await
        .unwrap();
    let engine = RefreshEngine::new(
        store.clone(),
        Arc::new(PanickingEndpoint),
        clock,
        settings(),
    );
    let cell = CredentialCell::new(account);
    let err = engine.credential(&cell).await.unwrap_err();
    assert!(
        matches!(err, RefreshError::Transient { .. }),
        "an answer, not a timeout: {err:?}"
    );
    assert!(!cell.refreshing(), "the flight is cleared");
    // The account is not wedged: after the backoff a new flight starts (and is settled again).
    tokio::time::advance(Duration::from_secs(5)).await;
    let err = engine.credential(&cell).await.unwrap_err();
    assert!(matches!(err, RefreshError::Transient { .. }), "{err:?}");
    assert!(!cell.refreshing());
}

#[tokio::test(start_paused = true)]
async fn a_panic_after_the_endpoint_rotated_keeps_the_rotation_and_stores_it_without_a_new_exchange(
) {
    let r = rig(vec![], expired()).await;
    r.store.panic_on_fenced_write.store(true, Ordering::SeqCst);
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert!(matches!(err, RefreshError::Held(_)), "{err:?}");
    assert_eq!(r.cell.state().0, CredentialState::Held);
    assert!(!r.cell.refreshing());
    assert_eq!(r.endpoint.calls(), vec!["rt-0"]);

    r.store.panic_on_fenced_write.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(5)).await;
    let a = r.engine.credential(&r.cell).await.unwrap();
    assert_eq!(a.credential.secret, "at-1");
    assert_eq!(
        r.endpoint.calls().len(),
        1,
        "persisted, not exchanged again"
    );
    assert_eq!(
        stored(&r.store).await.credential.refresh_token.as_deref(),
        Some("rt-1")
    );
}

// === Hostile numbers ===

#[test]
fn an_absurd_or_odd_expires_in_is_parsed_into_a_bounded_domain() {
    let parse = |v: serde_json::Value| -> TokenResponse {
        serde_json::from_value(serde_json::json!({"access_token": "a", "expires_in": v})).unwrap()
    };
    let max = crate::clock::MAX_WAIT.as_secs();
    assert_eq!(
        parse(serde_json::json!(8_000_000_000_000u64)).expires_in,
        Some(max)
    );
    assert_eq!(parse(serde_json::json!(u64::MAX)).expires_in, Some(max));
    assert_eq!(parse(serde_json::json!(1e300)).expires_in, Some(max));
    assert_eq!(parse(serde_json::json!(-5)).expires_in, Some(0));
    assert_eq!(parse(serde_json::json!(3600.7)).expires_in, Some(3600));
    assert_eq!(parse(serde_json::json!("3600")).expires_in, Some(3600));
    assert_eq!(parse(serde_json::json!("soon")).expires_in, None);
    assert_eq!(parse(serde_json::json!(null)).expires_in, None);
    let far = parse(serde_json::json!(u64::MAX))
        .expires_at(Utc::now())
        .unwrap();
    assert!(far > Utc::now() + chrono::Duration::days(300));
}

// === The lost-answer rule ===

fn lost() -> Answer {
    Answer::Fail(TokenError::Lost("connection closed".into()))
}

#[tokio::test(start_paused = true)]
async fn after_a_lost_answer_a_second_lost_answer_or_a_5xx_is_never_followed_by_another_send() {
    for second in [
        lost(),
        Answer::Fail(TokenError::Server { status: 500 }),
        Answer::Fail(TokenError::Timeout),
    ] {
        let r = rig(vec![lost(), second.clone(), Answer::Rotate], expired()).await;
        let err = r.engine.credential(&r.cell).await.unwrap_err();
        assert!(
            matches!(&err, RefreshError::NeedsReauth(m) if m.contains("lost")),
            "{second:?}: {err:?}"
        );
        assert_eq!(r.endpoint.calls(), vec!["rt-0", "rt-0"], "{second:?}");
        assert!(
            stored(&r.store).await.needs_reauth.is_some(),
            "persisted for every replica"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_200_that_cannot_be_parsed_is_an_unknown_outcome() {
    let r = rig(
        vec![
            Answer::Fail(TokenError::BadResponse("x".into())),
            Answer::Fail(TokenError::Server { status: 502 }),
        ],
        expired(),
    )
    .await;
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert!(matches!(err, RefreshError::NeedsReauth(_)), "{err:?}");
    assert_eq!(r.endpoint.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_one_more_send_is_counted_across_flights() {
    // Lost, then a 429 (nothing processed: the one more send is still unused), then — in a later flight — the one more
    // send is lost too: the token is never sent a fourth time.
    let r = rig(
        vec![
            lost(),
            Answer::Fail(TokenError::RateLimited {
                retry_after: Some(Duration::from_secs(10)),
            }),
            lost(),
        ],
        expired(),
    )
    .await;
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert!(matches!(err, RefreshError::Backoff { .. }), "{err:?}");
    tokio::time::advance(Duration::from_secs(11)).await;
    let err = r.engine.credential(&r.cell).await.unwrap_err();
    assert!(matches!(err, RefreshError::NeedsReauth(_)), "{err:?}");
    assert_eq!(r.endpoint.calls(), vec!["rt-0", "rt-0", "rt-0"]);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_then_success_clears_the_doubt() {
    let r = rig(vec![lost(), Answer::Rotate], expired()).await;
    let a = r.engine.credential(&r.cell).await.unwrap();
    assert_eq!(a.credential.refresh_token.as_deref(), Some("rt-1"));
    assert_eq!(r.endpoint.calls(), vec!["rt-0", "rt-0"]);
    assert!(r.engine.inner.journal.doubt(a.id).is_none());
}

// === Held rotations ===

#[tokio::test(start_paused = true)]
async fn a_held_rotation_keeps_the_lease_so_no_other_replica_sends_the_replaced_token() {
    let r = rig(vec![Answer::Gate], expired()).await;
    let waiter = {
        let (engine, cell) = (r.engine.clone(), r.cell.clone());
        tokio::spawn(async move { engine.credential(&cell).await })
    };
    r.endpoint.entered.notified().await;
    r.store.fail_writes.store(true, Ordering::SeqCst);
    r.endpoint.release.notify_one();
    assert!(matches!(waiter.await.unwrap(), Err(RefreshError::Held(_))));
    r.store.fail_writes.store(false, Ordering::SeqCst);
    let id = r.cell.account().id;
    // Long after the lease's time-to-live, another holder still cannot take it.
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(30)).await;
        tokio::task::yield_now().await;
        let other = r
            .store
            .acquire_refresh_lease(id, "other-replica", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            other, None,
            "the lease is kept while the rotation is unsaved"
        );
        if r.engine.inner.journal.rotation(id).is_none() {
            break;
        }
    }
    // Once a flight of ours stores the rotation, the lease is free again.
    let a = r.engine.credential(&r.cell).await.unwrap();
    assert_eq!(a.credential.secret, "at-1");
    assert_eq!(r.endpoint.calls().len(), 1);
    tokio::time::advance(Duration::from_secs(30)).await;
    tokio::task::yield_now().await;
    let other = r
        .store
        .acquire_refresh_lease(id, "other-replica", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(other.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_needs_reauth_recorded_about_the_replaced_token_does_not_override_a_held_rotation() {
    let r = rig(vec![Answer::Gate], expired()).await;
    let waiter = {
        let (engine, cell) = (r.engine.clone(), r.cell.clone());
        tokio::spawn(async move { engine.credential(&cell).await })
    };
    r.endpoint.entered.notified().await;
    r.store.fail_writes.store(true, Ordering::SeqCst);
    r.endpoint.release.notify_one();
    assert!(matches!(waiter.await.unwrap(), Err(RefreshError::Held(_))));
    r.store.fail_writes.store(false, Ordering::SeqCst);
    // Another replica sent the replaced token (`invalid_grant`) and recorded its verdict.
    let row = stored(&r.store).await;
    let update = crate::store::AccountUpdate {
        needs_reauth: crate::store::Patch::Set("the refresh token was refused".into()),
        ..Default::default()
    };
    let judged = r
        .store
        .update_account(row.id, row.version, update)
        .await
        .unwrap();
    r.cell.observe_stored(judged);
    assert_eq!(
        r.cell.state().0,
        CredentialState::Held,
        "our newer tokens stand"
    );
    // The replay writes the rotation over the verdict.
    assert_eq!(r.engine.replay_journal().await, 1);
    let row = stored(&r.store).await;
    assert_eq!(row.credential.refresh_token.as_deref(), Some("rt-1"));
    assert!(row.needs_reauth.is_none());
    r.cell.observe_stored(row);
    assert_eq!(r.cell.state().0, CredentialState::Ready);
    assert_eq!(r.endpoint.calls().len(), 1);
}

#[tokio::test]
async fn the_journal_is_private_durable_and_survives_a_new_process() {
    let dir = std::env::temp_dir().join(format!(
        "cgw-journal-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let journal = Journal::open(&dir).unwrap();
    let tokens: TokenResponse = serde_json::from_value(
        serde_json::json!({"access_token": "at-9", "refresh_token": "rt-9", "expires_in": 60}),
    )
    .unwrap();
    let rotation = journal::Rotation::new(Some("rt-8".into()), &tokens, Utc::now());
    journal.record_rotation(7, rotation.clone()).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("rotations")), 0o700);
        assert_eq!(mode(&dir.join("rotations/7.json")), 0o600);
    }
    assert!(
        !format!("{journal:?}").contains("rt-9"),
        "Debug shows no token"
    );
    let reopened = Journal::open(&dir).unwrap();
    assert_eq!(
        reopened.rotation(7).map(|r| r.refresh_token),
        Some(Some("rt-9".into()))
    );
    reopened.forget_rotation(7, "at-9").await;
    assert!(Journal::open(&dir).unwrap().rotations().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_stale_fence_cannot_write() {
    let r = rig(vec![], expired()).await;
    let id = r.cell.account().id;
    let mine = r
        .store
        .acquire_refresh_lease(id, "me", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;
    let theirs = r
        .store
        .acquire_refresh_lease(id, "them", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(theirs.is_some());
    let row = stored(&r.store).await;
    let stale = Fence {
        holder: "me".into(),
        token: mine,
    };
    let update = crate::store::AccountUpdate {
        last_error: crate::store::Patch::Set("x".into()),
        ..Default::default()
    };
    let err = r
        .store
        .update_account_fenced(id, row.version, &stale, update)
        .await
        .unwrap_err();
    assert!(
        matches!(err, crate::store::StoreError::Fenced(_)),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_store_write_ends_the_flight_instead_of_renewing_its_lease_forever() {
    let r = rig(vec![Answer::Gate], expired()).await;
    let waiter = {
        let (engine, cell) = (r.engine.clone(), r.cell.clone());
        tokio::spawn(async move { engine.credential(&cell).await })
    };
    r.endpoint.entered.notified().await;
    // The store accepts the rotation's write and never answers.
    r.store.hang_writes.store(true, Ordering::SeqCst);
    r.endpoint.release.notify_one();
    let _ = waiter.await.unwrap();
    for _ in 0..10 {
        tokio::time::advance(Duration::from_secs(10)).await;
        tokio::task::yield_now().await;
    }
    assert!(
        !r.cell.refreshing(),
        "the flight ended at the store call's deadline"
    );
    assert_eq!(
        r.cell.state().0,
        CredentialState::Held,
        "and kept its rotation"
    );
    let id = r.cell.account().id;
    assert!(r.engine.inner.journal.rotation(id).is_some());
    // The store answers again: the rotation is stored without a new exchange.
    r.store.hang_writes.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(30)).await;
    let a = r.engine.credential(&r.cell).await.unwrap();
    assert_eq!(a.credential.secret, "at-1");
    assert_eq!(r.endpoint.calls().len(), 1);
}
