//! Issue 17: the token endpoint is one resource for every account. The real binary (one replica on SQLite, three on
//! PostgreSQL) against the simulator: the budget paces token calls, an endpoint 429 pauses every refresh, proactive
//! refreshes trickle, short-lived tokens are not exchanged on every request.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::postgres::{seed_pg, Postgres};
use common::*;
use simulator::{SimConfig, Simulator, TokenCall};

/// `n` OAuth accounts whose tokens the simulator issued with `ttl`, stored as expiring after `expires_in`.
fn accounts(
    sim: &Simulator,
    n: usize,
    ttl: Duration,
    expires_in: impl Fn(usize) -> chrono::Duration,
) -> Vec<claude_gateway::account::NewAccount> {
    (0..n)
        .map(|i| {
            let pair = sim.issue_oauth(ttl);
            oauth_account(
                &format!("acct{i}"),
                &pair.access_token,
                &pair.refresh_token,
                expires_in(i),
            )
        })
        .collect()
}

fn expired(_: usize) -> chrono::Duration {
    chrono::Duration::seconds(-60)
}

fn refresh_calls(sim: &Simulator) -> Vec<TokenCall> {
    sim.token_calls()
        .into_iter()
        .filter(|c| c.grant_type == "refresh_token")
        .collect()
}

/// Token calls in any one second never exceed the budget: `rate` per second plus the `burst`.
fn assert_within_budget(calls: &[TokenCall], rate: f64, burst: u32) {
    let mut at: Vec<Duration> = calls.iter().map(|c| c.at).collect();
    at.sort();
    let most = rate.ceil() as usize + burst as usize;
    for (i, start) in at.iter().enumerate() {
        let in_second = at[i..]
            .iter()
            .take_while(|t| **t < *start + Duration::from_secs(1))
            .count();
        assert!(in_second <= most, "{in_second} token calls within one second from {start:?} (budget {rate}/s + {burst}): {at:?}");
    }
}

async fn send(c: &reqwest::Client, url: String, i: usize) -> reqwest::StatusCode {
    c.post(url)
        .header("x-api-key", CLIENT_KEY)
        .body(message_body(&format!("r{i}"), false))
        .send()
        .await
        .unwrap()
        .status()
}

/// Requests for `period`, `i`-th to `urls[i % len]`, every `every`; returns every status.
async fn traffic(urls: Vec<String>, period: Duration, every: Duration) -> Vec<reqwest::StatusCode> {
    let c = client();
    let end = tokio::time::Instant::now() + period;
    let mut tasks = Vec::new();
    let mut i = 0;
    while tokio::time::Instant::now() < end {
        let (c, url) = (c.clone(), urls[i % urls.len()].clone());
        tasks.push(tokio::spawn(async move { send(&c, url, i).await }));
        i += 1;
        tokio::time::sleep(every).await;
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// 12 expired accounts, the endpoint answering every call 429 `Retry-After: 6` for 6 s, traffic throughout.
async fn twelve_accounts_and_a_429(sim: &Simulator, urls: Vec<String>) {
    sim.reset_records();
    let t0 = sim.elapsed();
    sim.rate_limit_token_endpoint(Duration::from_secs(6), Some("6"));
    let during = traffic(
        urls.clone(),
        Duration::from_millis(5500),
        Duration::from_millis(100),
    )
    .await;
    let calls: Vec<_> = refresh_calls(sim)
        .into_iter()
        .filter(|c| c.at < t0 + Duration::from_secs(6))
        .collect();
    assert!(
        calls.len() <= 2,
        "{} token calls within the 6 s: {calls:?}",
        calls.len()
    );
    assert!(!calls.is_empty(), "the first refresh was tried");
    assert!(
        during.iter().all(|s| *s == 429),
        "no account could serve: 429 with retry-after: {during:?}"
    );
    // After the pause every account refreshes, and traffic is served.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = traffic(urls, Duration::from_secs(3), Duration::from_millis(50)).await;
    assert!(
        after.iter().filter(|s| **s == 200).count() > after.len() / 2,
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_429_pauses_every_refresh_one_replica() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    seed(&dir, accounts(&sim, 12, Duration::ZERO, expired)).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    twelve_accounts_and_a_429(&sim, vec![gw.url("/v1/messages")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_429_pauses_every_refresh_on_three_replicas() {
    let pg = Postgres::start();
    let url = pg.database("budget429");
    let sim = Simulator::start().await.unwrap();
    seed_pg(&url, accounts(&sim, 12, Duration::ZERO, expired)).await;
    let gws: Vec<Gateway> = (0..3)
        .map(|_| {
            Gateway::start_in(
                TempDir::new(),
                &sim.base_url(),
                &sim.token_url(),
                &format!("store_url = \"{url}\"\n"),
            )
        })
        .collect();
    twelve_accounts_and_a_429(&sim, gws.iter().map(|g| g.url("/v1/messages")).collect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pause_and_the_refresh_queue_are_visible() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    seed(&dir, accounts(&sim, 3, Duration::ZERO, expired)).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    sim.rate_limit_token_endpoint(Duration::from_secs(30), Some("30"));
    let c = client();
    assert_eq!(send(&c, gw.url("/v1/messages"), 0).await, 429);
    let view = gw.admin_accounts().await["token_endpoint"].clone();
    assert_eq!(view["rate_limit_scope"], "endpoint");
    assert_eq!(view["max_calls_per_sec"], 2.0);
    assert!(view["paused_until"].is_string(), "{view}");
    assert!(
        view["pause_reason"].as_str().unwrap().contains("429"),
        "{view}"
    );
    let refresh: serde_json::Value = c
        .get(gw.url("/admin/refresh"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        refresh["token_endpoint"]["paused_until"],
        view["paused_until"]
    );
    assert!(refresh["refreshing"].is_array());
    let m = gw.metrics().await;
    assert!(
        m.contains("gateway_token_endpoint_paused_until_seconds"),
        "{m}"
    );
    assert!(m.contains("gateway_token_calls_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_expired_accounts_under_two_hundred_concurrent_requests_stay_within_the_budget() {
    let sim = Simulator::start_with(SimConfig {
        token_latency: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = TempDir::new();
    seed(&dir, accounts(&sim, 40, Duration::ZERO, expired)).await;
    let gw = Gateway::start_in(
        dir,
        &sim.base_url(),
        &sim.token_url(),
        "[refresh]\nmax_calls_per_sec = 5\nmax_calls_burst = 2\nscan_interval_secs = 1\n",
    );
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (c, url) = (c.clone(), gw.url("/v1/messages"));
        tasks.push(tokio::spawn(async move { send(&c, url, i).await }));
    }
    for t in tasks {
        assert_eq!(
            t.await.unwrap(),
            200,
            "every request is served (waiting for its turn or on a refreshed account)"
        );
    }
    // The refreshes requests passed over keep their turns (and the scan takes the rest): all 40 run, paced.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while refresh_calls(&sim).len() < 40 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = refresh_calls(&sim);
    assert_eq!(calls.len(), 40, "one call per account");
    assert!(
        calls.iter().all(|c| c.outcome == "ok"),
        "every refresh succeeds: {calls:?}"
    );
    assert_within_budget(&calls, 5.0, 2);
    let span =
        calls.iter().map(|c| c.at).max().unwrap() - calls.iter().map(|c| c.at).min().unwrap();
    assert!(
        span >= Duration::from_millis(7000),
        "40 calls at 5/s take about 8 s, not {span:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_accounts_expiring_in_the_same_minute_are_refreshed_as_a_trickle() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    // Lifetimes of 20 to 80 s, all ending within one minute: without jitter each is due at half its life.
    seed(
        &dir,
        accounts(&sim, 1000, Duration::from_secs(120), |i| {
            chrono::Duration::milliseconds(20_000 + 60 * i as i64)
        }),
    )
    .await;
    let gw = Gateway::start_in(
        dir,
        &sim.base_url(),
        &sim.token_url(),
        "[refresh]\nmax_calls_per_sec = 40\nmax_calls_burst = 4\nscan_interval_secs = 1\nlead_jitter = 0.0\n",
    );
    let urls = vec![gw.url("/v1/messages")];
    let load = tokio::spawn(traffic(
        urls,
        Duration::from_secs(45),
        Duration::from_millis(40),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while refresh_calls(&sim).len() < 1000 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "no request fails: {:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    let calls = refresh_calls(&sim);
    assert_eq!(
        calls.len(),
        1000,
        "each account refreshed once, before it expired"
    );
    assert!(calls.iter().all(|c| c.outcome == "ok"));
    assert_within_budget(&calls, 40.0, 4);
    // A trickle over the window, not a burst: the calls span most of the 30 s in which the tokens fall due.
    let (first, last) = (
        calls.iter().map(|c| c.at).min().unwrap(),
        calls.iter().map(|c| c.at).max().unwrap(),
    );
    assert!(
        last - first >= Duration::from_secs(20),
        "refreshes spread over {:?}",
        last - first
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_under_steady_traffic_rotate_about_once_per_lifetime() {
    let ttl = Duration::from_secs(4);
    let sim = Simulator::start_with(SimConfig {
        access_token_ttl: ttl,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = TempDir::new();
    seed(
        &dir,
        accounts(&sim, 5, ttl, |_| chrono::Duration::seconds(4)),
    )
    .await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let period = Duration::from_secs(20);
    let statuses = traffic(
        vec![gw.url("/v1/messages")],
        period,
        Duration::from_millis(20),
    )
    .await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "{:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    let required = 5 * (period.as_secs() / ttl.as_secs()) as usize;
    let calls = refresh_calls(&sim).len();
    assert!(
        calls <= 2 * required,
        "{calls} token calls where {required} rotations were needed"
    );
    assert!(
        calls >= required / 2,
        "tokens were rotated as they expired: {calls}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_refresh_waits_for_its_turn_is_served_by_an_account_with_a_valid_token() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    // Ten expired accounts and one whose token is valid; one token call every 5 s.
    let mut seeded = accounts(&sim, 10, Duration::ZERO, expired);
    let valid = sim.issue_oauth(Duration::from_secs(3600));
    seeded.push(oauth_account(
        "valid",
        &valid.access_token,
        &valid.refresh_token,
        chrono::Duration::hours(1),
    ));
    seed(&dir, seeded).await;
    let gw = Gateway::start_in(
        dir,
        &sim.base_url(),
        &sim.token_url(),
        "[refresh]\nmax_calls_per_sec = 0.2\nmax_calls_burst = 1\n",
    );
    let c = client();
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (c, url) = (c.clone(), gw.url("/v1/messages"));
        tasks.push(tokio::spawn(async move {
            let status = send(&c, url, i).await;
            (status, started.elapsed())
        }));
    }
    for t in tasks {
        let (status, took) = t.await.unwrap();
        assert_eq!(status, 200);
        // Waiting for their turns instead would take up to 10 × 5 s.
        assert!(
            took < Duration::from_secs(4),
            "a request waited {took:?} for a queued refresh"
        );
    }
    assert!(
        refresh_calls(&sim).len() <= 2,
        "the budget still holds: {:?}",
        refresh_calls(&sim)
    );
    let served_by_valid = sim
        .requests()
        .iter()
        .filter(|r| {
            r.path == "/v1/messages" && r.credential.as_deref() == Some(valid.access_token.as_str())
        })
        .count();
    assert!(
        served_by_valid >= 5,
        "requests failed over to the valid account: {served_by_valid}"
    );
}
