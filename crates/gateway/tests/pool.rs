//! Issue 4: scheduling, scoped cooldowns, failover and affinity, against the real binary and the simulator.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use claude_gateway::store::sqlite::SqliteStore;
use claude_gateway::store::Store;
use common::*;
use simulator::{Fault, FaultKind, SimConfig, Simulator};

struct Keys(Vec<String>);

/// A gateway with API-key accounts given as (priority, weight).
async fn gateway(sim: &Simulator, accounts: &[(i32, u32)], extra: &str) -> (Gateway, Keys) {
    let dir = TempDir::new();
    let mut keys = Vec::new();
    let mut new = Vec::new();
    for (i, (priority, weight)) in accounts.iter().enumerate() {
        let key = sim.new_api_key();
        let mut a = api_key_account(&format!("acct-{i}"), &key);
        a.priority = *priority;
        a.weight = *weight;
        new.push(a);
        keys.push(key);
    }
    seed(&dir, new).await;
    (
        Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), extra),
        Keys(keys),
    )
}

fn body(model: &str, user: Option<&str>, stream: bool) -> String {
    let metadata = user
        .map(|u| format!(r#","metadata":{{"user_id":"{u}"}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"model":"{model}","max_tokens":16,"stream":{stream}{metadata},"messages":[{{"role":"user","content":"hi"}}]}}"#
    )
}

fn served_by(sim: &Simulator) -> Vec<(String, u16)> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .map(|r| (r.credential.unwrap_or_default(), r.status))
        .collect()
}

fn account<'a>(admin: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    admin["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_concurrent_requests_spread_by_weight() {
    let sim = Simulator::start_with(SimConfig {
        latency: Duration::from_millis(30),
        ..Default::default()
    })
    .await
    .unwrap();
    let (gw, keys) = gateway(&sim, &[(0, 1), (0, 2), (0, 3)], "").await;
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (c, url) = (c.clone(), gw.url("/v1/messages"));
        // 300 different conversations (affinity would otherwise keep one conversation together).
        let body = message_body(&format!("conversation {i}"), false);
        tasks.push(tokio::spawn(async move {
            c.post(url)
                .header("x-api-key", CLIENT_KEY)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (cred, _) in served_by(&sim) {
        *counts.entry(cred).or_default() += 1;
    }
    for (key, weight) in keys.0.iter().zip([1.0, 2.0, 3.0]) {
        let expected = 300.0 * weight / 6.0;
        let got = counts.get(key).copied().unwrap_or(0) as f64;
        assert!(
            (got - expected).abs() <= expected * 0.15,
            "weight {weight}: {got} requests, expected {expected} ± 15%: {counts:?}"
        );
    }
}

#[tokio::test]
async fn a_pool_where_one_account_answers_529_loses_no_request() {
    let sim = Simulator::start().await.unwrap();
    let (gw, keys) = gateway(&sim, &[(0, 1), (0, 1)], "").await;
    sim.push_fault(Fault::for_credential(
        FaultKind::Overloaded,
        &keys.0[0],
        10_000,
    ));
    let c = client();
    for i in 0..40 {
        let r = post_messages(&c, &gw, body("claude-sonnet-4-5", None, i % 2 == 0)).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(!text.contains("overloaded_error"), "{text}");
    }
    let served = served_by(&sim);
    assert!(
        served.iter().any(|(k, s)| k == &keys.0[0] && *s == 529),
        "the overloaded account was tried"
    );
    assert_eq!(served.iter().filter(|(_, s)| *s == 200).count(), 40);
}

#[tokio::test]
async fn a_stream_answered_429_or_error_before_message_start_completes_on_another_account() {
    let sim = Simulator::start().await.unwrap();
    let (gw, keys) = gateway(&sim, &[(0, 1), (1, 1)], "").await;
    sim.push_fault(Fault::for_credential(
        FaultKind::RateLimited {
            retry_after: Some("1".into()),
            retry_after_ms: None,
            headers: vec![],
        },
        &keys.0[0],
        1,
    ));
    let r = post_messages(&client(), &gw, body("claude-sonnet-4-5", None, true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.starts_with("event: message_start") && text.contains("event: message_stop"),
        "{text}"
    );
    assert_eq!(
        served_by(&sim),
        vec![(keys.0[0].clone(), 429), (keys.0[1].clone(), 200)]
    );

    // An `event: error` before message_start also fails over; the client never sees it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.reset_records();
    sim.push_fault(Fault::for_credential(
        FaultKind::StreamError { after_events: 0 },
        &keys.0[0],
        1,
    ));
    let text = post_messages(&client(), &gw, body("claude-sonnet-4-5", None, true))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("event: error") && text.contains("event: message_stop"),
        "{text}"
    );
    let served = served_by(&sim);
    assert_eq!(served.len(), 2, "{served:?}");
    assert_eq!(served[1].0, keys.0[1]);
}

#[tokio::test]
async fn a_plain_429_cools_one_model_and_a_rejected_window_cools_the_account() {
    let sim = Simulator::start().await.unwrap();
    let (gw, keys) = gateway(&sim, &[(0, 1), (1, 1)], "").await;
    let c = client();
    sim.push_fault(Fault::for_credential(
        FaultKind::RateLimited {
            retry_after: Some("30".into()),
            retry_after_ms: None,
            headers: vec![],
        },
        &keys.0[0],
        1,
    ));
    assert_eq!(
        post_messages(&c, &gw, body("claude-opus-4-1", None, false))
            .await
            .status(),
        200
    );
    sim.reset_records();
    assert_eq!(
        post_messages(&c, &gw, body("claude-opus-4-1", None, false))
            .await
            .status(),
        200
    );
    assert_eq!(
        post_messages(&c, &gw, body("claude-sonnet-4-5", None, false))
            .await
            .status(),
        200
    );
    assert_eq!(
        served_by(&sim),
        vec![(keys.0[1].clone(), 200), (keys.0[0].clone(), 200)],
        "opus goes to the second tier, sonnet stays on the first"
    );
    let admin = gw.admin_accounts().await;
    assert!(
        account(&admin, "acct-0")["last_error"]
            .as_str()
            .unwrap()
            .contains("claude-opus-4-1"),
        "{admin}"
    );

    // Reset clears it.
    let id = account(&admin, "acct-0")["id"].clone();
    let r = c
        .post(gw.url(&format!("/admin/accounts/{id}/reset")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sim.reset_records();
    assert_eq!(
        post_messages(&c, &gw, body("claude-opus-4-1", None, false))
            .await
            .status(),
        200
    );
    assert_eq!(served_by(&sim)[0].0, keys.0[0]);

    // A rejected 5-hour window cools the whole account until its reset.
    let reset = chrono::Utc::now().timestamp() + 120;
    sim.push_fault(Fault::for_credential(
        FaultKind::RateLimited {
            retry_after: None,
            retry_after_ms: None,
            headers: vec![
                (
                    "anthropic-ratelimit-unified-status".into(),
                    "rejected".into(),
                ),
                (
                    "anthropic-ratelimit-unified-5h-status".into(),
                    "rejected".into(),
                ),
                (
                    "anthropic-ratelimit-unified-5h-utilization".into(),
                    "1.0".into(),
                ),
                (
                    "anthropic-ratelimit-unified-5h-reset".into(),
                    reset.to_string(),
                ),
            ],
        },
        &keys.0[0],
        1,
    ));
    assert_eq!(
        post_messages(&c, &gw, body("claude-opus-4-1", None, false))
            .await
            .status(),
        200
    );
    sim.reset_records();
    assert_eq!(
        post_messages(&c, &gw, body("claude-sonnet-4-5", None, false))
            .await
            .status(),
        200
    );
    assert_eq!(
        served_by(&sim)[0].0,
        keys.0[1],
        "every model of the account is cooling"
    );
    let admin = gw.admin_accounts().await;
    let a = account(&admin, "acct-0");
    assert_eq!(a["state"], "cooling_down");
    let until = chrono::DateTime::parse_from_rfc3339(a["cooldown_until"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(
        (until - reset).abs() <= 2,
        "cooled until the window's reset: {until} vs {reset}"
    );
}

#[tokio::test]
async fn a_429_that_is_not_a_rate_limit_marks_the_account_and_is_not_retried() {
    let sim = Simulator::start().await.unwrap();
    let (gw, keys) = gateway(&sim, &[(0, 1), (1, 1)], "").await;
    sim.push_fault(Fault::for_credential(
        FaultKind::Status {
            status: 429,
            error_type: "rate_limit_error".into(),
            message: "This request would exceed your organization's monthly spend limit.".into(),
            headers: vec![],
        },
        &keys.0[0],
        100,
    ));
    let c = client();
    for _ in 0..5 {
        assert_eq!(
            post_messages(&c, &gw, body("claude-sonnet-4-5", None, false))
                .await
                .status(),
            200
        );
    }
    let on_first = served_by(&sim)
        .into_iter()
        .filter(|(k, _)| k == &keys.0[0])
        .count();
    assert_eq!(on_first, 1, "not retried in a loop");
    let admin = gw.admin_accounts().await;
    let a = account(&admin, "acct-0");
    assert!(
        a["last_error"].as_str().unwrap().contains("spend limit"),
        "{a}"
    );
    assert_eq!(a["state"], "cooling_down");
}

#[tokio::test]
async fn a_wrong_reset_hint_costs_one_probe_not_days() {
    let sim = Simulator::start().await.unwrap();
    let (gw, keys) = gateway(&sim, &[(0, 1), (1, 1)], "[pool]\nprobe_interval_secs = 1\n").await;
    sim.push_fault(Fault::for_credential(
        FaultKind::RateLimited {
            retry_after: Some("172800".into()),
            retry_after_ms: None,
            headers: vec![],
        },
        &keys.0[0],
        1,
    ));
    let c = client();
    assert_eq!(
        post_messages(&c, &gw, body("claude-sonnet-4-5", None, false))
            .await
            .status(),
        200
    );
    // Within the probe interval: nothing reaches the cooling account.
    assert_eq!(
        post_messages(&c, &gw, body("claude-sonnet-4-5", None, false))
            .await
            .status(),
        200
    );
    assert_eq!(
        served_by(&sim)
            .iter()
            .filter(|(k, _)| k == &keys.0[0])
            .count(),
        1
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The probe succeeds and the account is back.
    for _ in 0..3 {
        assert_eq!(
            post_messages(&c, &gw, body("claude-sonnet-4-5", None, false))
                .await
                .status(),
            200
        );
    }
    let first: Vec<_> = served_by(&sim)
        .into_iter()
        .filter(|(k, _)| k == &keys.0[0])
        .collect();
    assert_eq!(first.len(), 4, "{first:?}");
    assert_eq!(
        account(&gw.admin_accounts().await, "acct-0")["state"],
        "ready"
    );
}

#[tokio::test]
async fn affinity_keeps_conversations_on_one_account_and_moves_them_when_it_cools() {
    let sim = Simulator::start().await.unwrap();
    let (gw, keys) = gateway(&sim, &[(0, 1), (0, 1), (0, 1)], "").await;
    let c = client();
    for turn in 0..10 {
        for conv in 0..10 {
            let r = post_messages(
                &c,
                &gw,
                body(
                    "claude-sonnet-4-5",
                    Some(&format!("user-{conv}")),
                    turn % 2 == 1,
                ),
            )
            .await;
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    }
    let served = served_by(&sim);
    let mut by_conv: HashMap<usize, HashMap<String, usize>> = HashMap::new();
    for (i, (cred, _)) in served.iter().enumerate() {
        *by_conv
            .entry(i % 10)
            .or_default()
            .entry(cred.clone())
            .or_default() += 1;
    }
    for (conv, accounts) in &by_conv {
        let top = accounts.values().max().copied().unwrap_or(0);
        assert!(
            top as f64 >= 0.95 * 10.0,
            "conversation {conv}: {accounts:?}"
        );
    }
    let homes: std::collections::HashSet<_> = by_conv
        .values()
        .map(|a| a.iter().max_by_key(|(_, n)| **n).unwrap().0.clone())
        .collect();
    assert!(
        homes.len() >= 2,
        "conversations spread over accounts: {homes:?}"
    );
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"gateway_affinity_total{result="hit"} 90"#),
        "{m}"
    );

    // Conversation 0's account starts answering 429: its turns move and stay together.
    let home0 = by_conv[&0]
        .iter()
        .max_by_key(|(_, n)| **n)
        .unwrap()
        .0
        .clone();
    sim.push_fault(Fault::for_credential(
        FaultKind::RateLimited {
            retry_after: Some("600".into()),
            retry_after_ms: None,
            headers: vec![],
        },
        &home0,
        1,
    ));
    sim.reset_records();
    for _ in 0..5 {
        assert_eq!(
            post_messages(&c, &gw, body("claude-sonnet-4-5", Some("user-0"), false))
                .await
                .status(),
            200
        );
    }
    let after: Vec<_> = served_by(&sim)
        .into_iter()
        .filter(|(_, s)| *s == 200)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(after.len(), 5);
    assert!(
        after.iter().all(|k| k == &after[0] && k != &home0),
        "{after:?}"
    );
    let _ = keys;
}

#[tokio::test]
async fn rate_limit_headers_are_kept_per_account_and_shown() {
    let sim = Simulator::start().await.unwrap();
    let (gw, keys) = gateway(&sim, &[(0, 1)], "").await;
    sim.set_ratelimit_headers(
        &keys.0[0],
        vec![
            (
                "anthropic-ratelimit-unified-5h-utilization".into(),
                "0.42".into(),
            ),
            (
                "anthropic-ratelimit-unified-5h-status".into(),
                "allowed".into(),
            ),
            (
                "anthropic-ratelimit-unified-7d-utilization".into(),
                "0.17".into(),
            ),
        ],
    );
    assert_eq!(
        post_messages(&client(), &gw, body("claude-sonnet-4-5", None, false))
            .await
            .status(),
        200
    );
    let admin = gw.admin_accounts().await;
    let a = account(&admin, "acct-0");
    assert_eq!(a["utilization"], 0.42, "{a}");
    assert!(
        a["windows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "7d" && w["utilization"] == 0.17),
        "{a}"
    );
}

#[tokio::test]
async fn no_failover_starts_after_the_deadline() {
    let sim = Simulator::start_with(SimConfig {
        latency: Duration::from_millis(1200),
        ..Default::default()
    })
    .await
    .unwrap();
    let (gw, keys) = gateway(
        &sim,
        &[(0, 1), (1, 1)],
        "[pool]\nfailover_deadline_secs = 1\n",
    )
    .await;
    sim.push_fault(Fault::for_credential(FaultKind::Overloaded, &keys.0[0], 1));
    let r = post_messages(&client(), &gw, body("claude-sonnet-4-5", None, false)).await;
    assert_eq!(
        r.status(),
        529,
        "the deadline passed during the first attempt: its answer is returned"
    );
    assert_eq!(served_by(&sim).len(), 1);
}

#[tokio::test]
async fn max_concurrency_holds_extra_requests_in_a_bounded_queue() {
    // Each answer takes 1.5 s; a queued request waits at most 0.3 s: the second and third cannot get the slot.
    let sim = Simulator::start_with(SimConfig {
        latency: Duration::from_millis(1500),
        ..Default::default()
    })
    .await
    .unwrap();
    let (gw, _) = gateway(&sim, &[(0, 1)], "[pool]\nqueue_wait_ms = 300\n").await;
    let out = gw.cli(&["accounts", "set", "acct-0", "--max-concurrency", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(1200)).await; // the running gateway picks the change up
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (c, url) = (c.clone(), gw.url("/v1/messages"));
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .header("x-api-key", CLIENT_KEY)
                .body(body("claude-sonnet-4-5", None, false))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers().get("retry-after").is_some(),
            )
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results.sort();
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{results:?}"
    );
    assert!(
        results.iter().filter(|(s, _)| *s == 429).all(|(_, ra)| *ra),
        "{results:?}"
    );
    assert_eq!(sim.in_flight(), 0);
    let max_seen = served_by(&sim).len();
    assert_eq!(max_seen, 1, "the account never carried more than its limit");
}

#[tokio::test]
async fn clients_that_give_up_in_the_queue_give_their_places_back() {
    // One slot (max_concurrency 1), two places in the queue; the slot is held by a 2 s answer.
    let sim = Simulator::start_with(SimConfig {
        latency: Duration::from_millis(2000),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = TempDir::new();
    let key = sim.new_api_key();
    let [a] = &seed(&dir, vec![api_key_account("acct-0", &key)]).await[..] else {
        unreachable!()
    };
    let store = SqliteStore::open(&dir.0.join("data")).await.unwrap();
    store
        .update_account(
            a.id,
            a.version,
            claude_gateway::store::AccountUpdate {
                max_concurrency: claude_gateway::store::Patch::Set(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    drop(store);
    let gw = Gateway::start_in(
        dir,
        &sim.base_url(),
        &sim.token_url(),
        "[pool]\nqueue_wait_ms = 20000\nmax_queue = 2\n",
    );
    let send = |timeout: Duration| {
        let c = reqwest::Client::builder().timeout(timeout).build().unwrap();
        c.post(gw.url("/v1/messages"))
            .header("x-api-key", CLIENT_KEY)
            .body(body("claude-sonnet-4-5", None, false))
            .send()
    };
    let holder = tokio::spawn(send(Duration::from_secs(20)));
    // Wait until the holder's request reached upstream, so every later request has to queue.
    let started = std::time::Instant::now();
    while sim.in_flight() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first request never reached upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Five clients (more than max_queue) wait in the queue and give up.
    for i in 0..5 {
        let gave_up = send(Duration::from_millis(150)).await;
        assert!(
            gave_up.unwrap_err().is_timeout(),
            "client {i} was answered instead of waiting"
        );
    }
    // Their places are free again: this one waits for the slot and is served, not refused as "queue full".
    let r = send(Duration::from_secs(20)).await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(holder.await.unwrap().unwrap().status(), 200);
}
