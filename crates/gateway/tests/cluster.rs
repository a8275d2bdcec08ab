//! Issue 5: several replicas (real gateway processes) sharing one PostgreSQL, against the simulator.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use claude_gateway::store::postgres::PostgresStore;
use claude_gateway::store::Store;
use common::postgres::{eventually, seed_pg, Postgres};
use common::*;
use simulator::{Fault, FaultKind, SimConfig, Simulator, TokenFault};

/// Starts `n` replicas sharing `url`.
fn replicas(sim: &Simulator, url: &str, n: usize, extra: &str) -> Vec<Gateway> {
    (0..n)
        .map(|_| {
            let dir = TempDir::new();
            Gateway::start_in(
                dir,
                &sim.base_url(),
                &sim.token_url(),
                &format!("store_url = \"{url}\"\n{extra}"),
            )
        })
        .collect()
}

fn messages_requests(sim: &Simulator) -> Vec<simulator::RecordedRequest> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_three_hundred_requests_one_token_call() {
    let pg = Postgres::start();
    let url = pg.database("stampede");
    let sim = Simulator::start_with(SimConfig {
        token_latency: Duration::from_millis(300),
        ..Default::default()
    })
    .await
    .unwrap();
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
    let gws = replicas(&sim, &url, 3, "");
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (c, url) = (c.clone(), gws[i % 3].url("/v1/messages"));
        tasks.push(tokio::spawn(async move {
            c.post(url)
                .header("x-api-key", CLIENT_KEY)
                .body(message_body(&format!("r{i}"), false))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(sim.token_call_count(), 1, "{:?}", sim.token_calls());
    let creds: std::collections::HashSet<_> = messages_requests(&sim)
        .into_iter()
        .map(|r| r.credential)
        .collect();
    assert_eq!(creds.len(), 1, "every replica used the one new token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_429_seen_by_one_replica_blocks_refresh_on_all() {
    let pg = Postgres::start();
    let url = pg.database("block");
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
    let gws = replicas(&sim, &url, 3, "");
    sim.push_token_fault(TokenFault::RateLimited {
        retry_after: Some("4".into()),
        retry_after_ms: None,
    });
    let c = client();
    let r = post_messages(&c, &gws[0], message_body("a", false)).await;
    assert_eq!(r.status(), 429);
    let store = PostgresStore::connect(&url).await.unwrap();
    eventually(5, "the block reaches the store", || async {
        store.list_accounts().await.unwrap()[0]
            .refresh_blocked_until
            .is_some()
    })
    .await;
    for gw in &gws[1..] {
        let r = post_messages(&c, gw, message_body("b", false)).await;
        assert_eq!(r.status(), 429, "replicas that never saw the 429 honour it");
        assert!(r.headers().get("retry-after").is_some());
    }
    assert_eq!(sim.token_call_count(), 1);
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (c, url) = (c.clone(), gws[i % 3].url("/v1/messages"));
        tasks.push(tokio::spawn(async move {
            c.post(url)
                .header("x-api-key", CLIENT_KEY)
                .body(message_body("c", false))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        sim.token_call_count(),
        2,
        "exactly one call after the wait, in the whole cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_learned_by_one_replica_is_honoured_by_the_others() {
    let pg = Postgres::start();
    let url = pg.database("cooldown");
    let sim = Simulator::start().await.unwrap();
    let (k1, k2) = (sim.new_api_key(), sim.new_api_key());
    let mut first = api_key_account("first", &k1);
    first.priority = 0;
    let mut second = api_key_account("second", &k2);
    second.priority = 1;
    seed_pg(&url, vec![first, second]).await;
    let gws = replicas(&sim, &url, 2, "");
    sim.push_fault(Fault::for_credential(
        FaultKind::RateLimited {
            retry_after: Some("120".into()),
            retry_after_ms: None,
            headers: vec![],
        },
        &k1,
        1,
    ));
    let c = client();
    assert_eq!(
        post_messages(&c, &gws[0], message_body("x", false))
            .await
            .status(),
        200
    );
    eventually(5, "replica 2 adopts the cooldown", || async {
        let a = gws[1].admin_accounts().await;
        a["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["name"] == "first" && !x["model_cooldowns"].as_array().unwrap().is_empty())
    })
    .await;
    sim.reset_records();
    for _ in 0..10 {
        assert_eq!(
            post_messages(&c, &gws[1], message_body("y", false))
                .await
                .status(),
            200
        );
    }
    assert!(
        messages_requests(&sim)
            .iter()
            .all(|r| r.credential.as_deref() == Some(k2.as_str())),
        "replica 2 never used the cooling account"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_while_holding_the_lease_is_taken_over_without_reusing_a_rotated_token() {
    let pg = Postgres::start();
    let url = pg.database("takeover");
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
    let extra = "[refresh]\nlease_secs = 3\ncall_timeout_secs = 1.5\nrefresh_timeout_secs = 20\n";
    let mut gws = replicas(&sim, &url, 2, extra);
    // Replica 1's token call hangs: it holds the lease when it dies.
    sim.push_token_fault(TokenFault::Slow(Duration::from_secs(60)));
    let c = client();
    let url1 = gws[0].url("/v1/messages");
    let c1 = c.clone();
    let hanging = tokio::spawn(async move {
        c1.post(url1)
            .header("x-api-key", CLIENT_KEY)
            .body(message_body("a", false))
            .send()
            .await
    });
    eventually(5, "replica 1 calls the token endpoint", || async {
        sim.token_call_count() == 1
    })
    .await;
    gws[0].kill_and_restart(); // SIGKILL, then a fresh process
    let _ = hanging.await;
    // Replica 2 waits for the dead holder's lease to expire, re-reads the credential, refreshes once.
    let r = post_messages(&c, &gws[1], message_body("b", false)).await;
    assert_eq!(r.status(), 200);
    let calls = sim.token_calls();
    assert!(
        calls.iter().all(|c| c.outcome != "invalid_grant"),
        "a rotated token was sent: {calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| c.outcome == "ok").count(),
        1,
        "{calls:?}"
    );
    // The restarted replica uses the stored rotation too.
    assert_eq!(
        post_messages(&c, &gws[0], message_body("c", false))
            .await
            .status(),
        200
    );
    assert_eq!(
        sim.token_calls()
            .iter()
            .filter(|c| c.outcome == "ok")
            .count(),
        1
    );
    drop(gws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_survive_a_postgres_restart_and_lose_no_rotation() {
    let mut pg = Postgres::start();
    let url = pg.database("restart");
    let sim = Simulator::start().await.unwrap();
    let live = sim.issue_oauth(Duration::from_secs(3600));
    let stale = sim.issue_oauth(Duration::from_secs(0));
    let mut a = oauth_account(
        "live",
        &live.access_token,
        &live.refresh_token,
        chrono::Duration::hours(1),
    );
    a.priority = 0;
    let mut b = oauth_account(
        "expired",
        &stale.access_token,
        &stale.refresh_token,
        chrono::Duration::seconds(-60),
    );
    b.priority = 1;
    seed_pg(&url, vec![a, b]).await;
    let gws = replicas(&sim, &url, 2, "");
    let c = client();
    for gw in &gws {
        gw.wait_accounts(2).await;
    }
    pg.kill();
    // Serving goes on with the credentials in hand.
    for gw in &gws {
        for _ in 0..5 {
            assert_eq!(
                post_messages(&c, gw, message_body("x", false))
                    .await
                    .status(),
                200
            );
        }
        let r = reqwest::get(gw.url("/readyz")).await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.text().await.unwrap().contains("store unreachable"));
    }
    // The live account disabled locally is not possible without the store; make it cool instead so the expired
    // account is needed: a request for a model the live account is cooling for.
    sim.push_fault(Fault::for_credential(
        FaultKind::RateLimited {
            retry_after: Some("600".into()),
            retry_after_ms: None,
            headers: vec![],
        },
        &live.access_token,
        1,
    ));
    let body =
        r#"{"model":"claude-opus-4-1","max_tokens":8,"messages":[{"role":"user","content":"x"}]}"#;
    let r = post_messages(&c, &gws[0], body.to_string()).await;
    assert_eq!(r.status(), 503, "a refresh needs the store: clear 503");
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(sim.token_call_count(), 0, "no refresh without the store");

    pg.restart();
    eventually(20, "readiness comes back", || async {
        reqwest::get(gws[0].url("/readyz"))
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    let mut last = String::new();
    let mut ok = false;
    for _ in 0..100 {
        let r = post_messages(&c, &gws[0], body.to_string()).await;
        if r.status() == 200 {
            ok = true;
            break;
        }
        last = format!("{} {}", r.status(), r.text().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ok,
        "the expired account never refreshed after the store came back: {last}\n{}\n{}",
        gws[0].admin_accounts().await,
        gws[0].logs()
    );
    assert_eq!(sim.token_call_count(), 1);
    let store = PostgresStore::connect(&url).await.unwrap();
    let stored = store.list_accounts().await.unwrap();
    let expired = stored.iter().find(|a| a.name == "expired").unwrap();
    assert_eq!(
        expired.credential.refresh_token,
        sim.current_refresh_token(&stale.refresh_token),
        "rotation persisted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_written_in_batches() {
    let pg = Postgres::start();
    let url = pg.database("usage");
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    seed_pg(&url, vec![api_key_account("k", &key)]).await;
    let gws = replicas(&sim, &url, 1, "usage_flush_secs = 0.5\n");
    let c = client();
    for i in 0..60 {
        let body = post_messages(&c, &gws[0], message_body("x", i % 2 == 0))
            .await
            .text()
            .await
            .unwrap();
        assert!(!body.is_empty());
    }
    let store = PostgresStore::connect(&url).await.unwrap();
    eventually(10, "usage reaches the store", || async {
        store
            .usage_totals()
            .await
            .unwrap()
            .first()
            .map(|(_, u)| u.requests)
            == Some(60)
    })
    .await;
    let totals = store.usage_totals().await.unwrap();
    assert!(
        totals[0].1.output_tokens > 0,
        "stream token usage recorded: {totals:?}"
    );
    // Far fewer row writes than requests.
    eventually(10, "statistics are visible", || async {
        pg.query(
            "usage",
            "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE relname = 'usage'",
        )
        .parse::<i64>()
        .unwrap_or(0)
            > 0
    })
    .await;
    let writes: i64 = pg
        .query(
            "usage",
            "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE relname = 'usage'",
        )
        .parse()
        .unwrap();
    assert!(writes < 15, "{writes} row writes for 60 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_safely_and_the_embedded_store_migrates_in() {
    let pg = Postgres::start();
    let url = pg.database("fresh");
    // Three replicas' migrations at once on an empty database.
    let (a, b, c) = tokio::join!(
        PostgresStore::connect(&url),
        PostgresStore::connect(&url),
        PostgresStore::connect(&url)
    );
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert!(a.list_accounts().await.unwrap().is_empty());

    // `store migrate` copies an embedded store's accounts, state included.
    let dir = TempDir::new();
    let mut disabled = api_key_account("old-key", "sk-ant-api03-old");
    disabled.disabled = true;
    seed(
        &dir,
        vec![
            api_key_account("key", "sk-ant-api03-x"),
            oauth_account("oauth", "at", "rt", chrono::Duration::hours(1)),
            disabled,
        ],
    )
    .await;
    let out = std::process::Command::new(bin())
        .args(["store", "migrate", "--from"])
        .arg(dir.0.join("data"))
        .args(["--to", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Copied 3 account(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let accounts = a.list_accounts().await.unwrap();
    assert_eq!(accounts.len(), 3);
    let oauth = accounts.iter().find(|x| x.name == "oauth").unwrap();
    assert_eq!(oauth.credential.refresh_token.as_deref(), Some("rt"));
    assert!(
        accounts
            .iter()
            .find(|x| x.name == "old-key")
            .unwrap()
            .disabled
    );
    // Running it again copies nothing twice.
    let out = std::process::Command::new(bin())
        .args(["store", "migrate", "--from"])
        .arg(dir.0.join("data"))
        .args(["--to", &url])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("skipped 3"));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("sk-ant"),
        "no secrets printed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_added_or_disabled_through_one_replica_is_used_correctly_by_the_others_within_a_second(
) {
    let pg = Postgres::start();
    let url = pg.database("propagate");
    let sim = Simulator::start().await.unwrap();
    let gws = replicas(&sim, &url, 2, "");
    let c = client();
    assert_eq!(
        post_messages(&c, &gws[1], message_body("x", false))
            .await
            .status(),
        503
    );
    // Add through the CLI of replica 1's config (same store).
    let key = sim.new_api_key();
    let out = gws[0].cli(&["accounts", "add-key", "--name", "k", &key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = std::time::Instant::now();
    eventually(1, "replica 2 serves with the new account", || async {
        post_messages(&c, &gws[1], message_body("x", false))
            .await
            .status()
            == 200
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(1));
    let out = gws[0].cli(&["accounts", "disable", "k"]);
    assert!(out.status.success());
    let started = std::time::Instant::now();
    eventually(1, "replica 2 stops using the disabled account", || async {
        post_messages(&c, &gws[1], message_body("x", false))
            .await
            .status()
            == 503
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(1));
}
