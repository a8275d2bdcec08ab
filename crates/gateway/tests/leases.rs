//! Issue 11: refresh leases are judged by the database's clock, not by a replica's (a replica whose clock runs an hour
//! ahead, via libfaketime, must not take over a live holder's lease), and the credential write's fence holds under a
//! concurrent takeover. Real processes, real PostgreSQL, the simulator.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use claude_gateway::account::Credential;
use claude_gateway::store::postgres::PostgresStore;
use claude_gateway::store::{AccountUpdate, Fence, Store, StoreError};
use common::postgres::{seed_pg, Postgres};
use common::*;
use simulator::{Simulator, TokenFault};

/// libfaketime, installed by `.ci/setup`.
fn libfaketime() -> String {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ];
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
        .unwrap_or_else(|| {
            panic!("libfaketime not found (apt-get install faketime; .ci/setup does)")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_runs_ahead_does_not_take_a_live_holders_lease() {
    let pg = Postgres::start();
    let url = pg.database("skew");
    let sim = Simulator::start().await.unwrap();
    let pair = sim.issue_oauth(Duration::from_secs(0));
    seed_pg(
        &url,
        vec![oauth_account(
            "shared",
            &pair.access_token,
            &pair.refresh_token,
            chrono::Duration::seconds(-60),
        )],
    )
    .await;
    let extra = format!(
        "store_url = \"{url}\"\n[refresh]\nlease_secs = 30.0\nrefresh_timeout_secs = 10.0\n"
    );
    let a = Gateway::start_in(TempDir::new(), &sim.base_url(), &sim.token_url(), &extra);
    let lib = libfaketime();
    let ahead = Gateway::start_in_env(
        TempDir::new(),
        &sim.base_url(),
        &sim.token_url(),
        &extra,
        &[
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME", "+1h"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    // A's exchange takes a while; meanwhile the replica an hour ahead needs the same refresh.
    sim.push_token_fault(TokenFault::Slow(Duration::from_millis(2000)));
    let first = {
        let (c, url) = (client(), a.url("/v1/messages"));
        tokio::spawn(async move {
            c.post(url)
                .header("x-api-key", CLIENT_KEY)
                .body(message_body("a", false))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = post_messages(&client(), &ahead, message_body("b", false)).await;
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(
        second.status(),
        200,
        "the skewed replica waited for A's result and adopted it"
    );
    let calls = sim.token_calls();
    assert_eq!(calls.len(), 1, "one exchange, not a takeover: {calls:?}");
    assert!(calls.iter().all(|c| c.outcome == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fenced_write_and_a_concurrent_takeover_never_both_win() {
    let pg = Postgres::start();
    let url = pg.database("fence");
    let account = seed_pg(
        &url,
        vec![oauth_account(
            "a",
            "at-0",
            "rt-0",
            chrono::Duration::seconds(60),
        )],
    )
    .await;
    let id = account[0].id;
    let old_holder = std::sync::Arc::new(PostgresStore::connect(&url).await.unwrap());
    let taker = std::sync::Arc::new(PostgresStore::connect(&url).await.unwrap());
    let mut fenced = 0;
    for i in 0..40 {
        let token = old_holder
            .acquire_refresh_lease(id, "old", Duration::from_millis(1))
            .await
            .unwrap()
            .expect("the lease is free or expired");
        let version = old_holder.get_account(id).await.unwrap().unwrap().version;
        tokio::time::sleep(Duration::from_millis(3)).await; // the old holder's lease expires
        let secret = format!("at-{}", i + 1);
        let write = {
            let (store, secret) = (old_holder.clone(), secret.clone());
            tokio::spawn(async move {
                let update = AccountUpdate {
                    credential: Some(Credential {
                        secret,
                        refresh_token: Some(format!("rt-{}", i + 1)),
                        expires_at: None,
                    }),
                    ..Default::default()
                };
                let fence = Fence {
                    holder: "old".into(),
                    token,
                };
                store
                    .update_account_fenced(id, version, &fence, update)
                    .await
            })
        };
        let takeover = {
            let store = taker.clone();
            tokio::spawn(async move {
                let taken = store
                    .acquire_refresh_lease(id, "new", Duration::from_secs(30))
                    .await
                    .unwrap();
                // What the new holder re-reads right after taking the lease.
                let seen = store
                    .get_account(id)
                    .await
                    .unwrap()
                    .unwrap()
                    .credential
                    .secret;
                if let Some(t) = taken {
                    let fence = Fence {
                        holder: "new".into(),
                        token: t,
                    };
                    store.release_refresh_lease(id, &fence).await.unwrap();
                }
                (taken, seen)
            })
        };
        let written = write.await.unwrap();
        let (taken, seen) = takeover.await.unwrap();
        assert!(taken.is_some(), "the expired lease was taken over");
        match written {
            Ok(_) => assert_eq!(
                seen, secret,
                "iteration {i}: the new holder must see the write its takeover let through"
            ),
            Err(StoreError::Fenced(_)) => fenced += 1,
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("{fenced} of 40 writes were fenced out; the rest were seen by the new holder");
}
