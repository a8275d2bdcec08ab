//! Issue 11: a rotation the store could not take is never lost — not to another replica sending the replaced refresh
//! token, not to a restart while the store is down. Real gateway processes, real PostgreSQL, the simulator.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use claude_gateway::store::postgres::PostgresStore;
use claude_gateway::store::Store;
use common::postgres::{eventually, seed_pg, Postgres};
use common::*;
use simulator::{Simulator, TokenFault};

const FAST: &str = "[refresh]\nlease_secs = 3.0\nrefresh_timeout_secs = 2.0\n";

fn replica(sim: &Simulator, url: &str) -> Gateway {
    Gateway::start_in(
        TempDir::new(),
        &sim.base_url(),
        &sim.token_url(),
        &format!("store_url = \"{url}\"\n{FAST}"),
    )
}

async fn seed_expired(sim: &Simulator, url: &str) -> simulator::TokenPair {
    let pair = sim.issue_oauth(Duration::from_secs(0));
    seed_pg(
        url,
        vec![oauth_account(
            "shared",
            &pair.access_token,
            &pair.refresh_token,
            chrono::Duration::seconds(-60),
        )],
    )
    .await;
    pair
}

async fn stored_refresh_token(url: &str) -> Option<String> {
    let store = PostgresStore::connect(url).await.unwrap();
    store.list_accounts().await.unwrap()[0]
        .credential
        .refresh_token
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_rotation_is_not_undone_by_another_replica_and_reaches_the_store_when_it_can() {
    let pg = Postgres::start();
    let url = pg.database("held");
    let sim = Simulator::start().await.unwrap();
    let old = seed_expired(&sim, &url).await;
    let a = Gateway::start_in(
        TempDir::new(),
        &sim.base_url(),
        &sim.token_url(),
        &format!("store_url = \"{url}?application_name=replica_a\"\n{FAST}"),
    );
    let b = replica(&sim, &url);
    // Replica A's credential writes fail (its connection is refused them); everything else works.
    pg.query(
        "held",
        "CREATE FUNCTION refuse_a() RETURNS trigger AS $$ BEGIN \
           IF current_setting('application_name') = 'replica_a' \
              AND NEW.refresh_token IS DISTINCT FROM OLD.refresh_token THEN \
             RAISE EXCEPTION 'injected: credential write refused'; END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql",
    );
    pg.query(
        "held",
        "CREATE TRIGGER refuse_a BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION refuse_a()",
    );
    let c = client();
    let r = post_messages(&c, &a, message_body("a", false)).await;
    assert_eq!(r.status(), 503, "A holds a rotation it could not store");
    assert_eq!(sim.token_call_count(), 1);
    let rotated = sim.current_refresh_token(&old.refresh_token).unwrap();
    assert_ne!(rotated, old.refresh_token);
    assert_eq!(
        stored_refresh_token(&url).await.as_deref(),
        Some(old.refresh_token.as_str())
    );

    // B needs a refresh too, for longer than a lease lives: it must not send the replaced token.
    for _ in 0..3 {
        let r = post_messages(&c, &b, message_body("b", false)).await;
        assert_ne!(r.status(), 200);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let calls = sim.token_calls();
    assert_eq!(
        calls.len(),
        1,
        "nobody sent the rotated-out token: {calls:?}"
    );
    let admin = b.admin_accounts().await;
    assert_ne!(admin["accounts"][0]["state"], "needs_reauth", "{admin}");

    // The store takes A's writes again: the journaled rotation is written, and B serves with it.
    pg.query("held", "DROP TRIGGER refuse_a ON accounts");
    eventually(10, "A's rotation reaches the store", || async {
        stored_refresh_token(&url).await.as_deref() == Some(rotated.as_str())
    })
    .await;
    eventually(10, "B serves with the stored rotation", || async {
        post_messages(&c, &b, message_body("c", false))
            .await
            .status()
            == 200
    })
    .await;
    assert_eq!(sim.token_call_count(), 1, "{:?}", sim.token_calls());
    assert!(sim
        .token_calls()
        .iter()
        .all(|c| c.outcome != "invalid_grant"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_obtained_while_the_store_goes_down_survives_a_restart() {
    let mut pg = Postgres::start();
    let url = pg.database("down");
    let sim = Simulator::start().await.unwrap();
    let old = seed_expired(&sim, &url).await;
    let mut gw = replica(&sim, &url);
    // The store goes down while the token endpoint is answering.
    sim.push_token_fault(TokenFault::Slow(Duration::from_millis(1500)));
    let request = {
        let (c, url) = (client(), gw.url("/v1/messages"));
        tokio::spawn(async move {
            c.post(url)
                .header("x-api-key", CLIENT_KEY)
                .body(message_body("x", false))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.kill();
    assert_ne!(request.await.unwrap(), 200);
    let rotated = sim.current_refresh_token(&old.refresh_token).unwrap();
    assert_ne!(rotated, old.refresh_token, "the endpoint rotated");
    let journal = gw.dir.0.join("data/rotations");
    eventually(5, "the rotation is journaled", || async {
        std::fs::read_dir(&journal)
            .map(|d| d.count() > 0)
            .unwrap_or(false)
    })
    .await;

    // A rolling restart during the outage: the process dies; the store comes back; a new process starts.
    gw.kill();
    assert_eq!(sim.token_call_count(), 1);
    pg.restart();
    gw.start_again();
    assert_eq!(
        stored_refresh_token(&url).await.as_deref(),
        Some(rotated.as_str()),
        "replayed on start"
    );
    let r = post_messages(&client(), &gw, message_body("y", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(sim.token_call_count(), 1, "{:?}", sim.token_calls());
    assert!(
        std::fs::read_dir(&journal).unwrap().next().is_none(),
        "the journal is empty once stored"
    );
}
