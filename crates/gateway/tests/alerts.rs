//! Issue 13: alert webhooks against a local receiver — signed with HMAC-SHA256, retried after a failed delivery, and
//! sent once per episode however many requests see the condition.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::*;
use serde_json::Value;
use sha2::Digest;
use simulator::Simulator;

const SECRET: &str = "webhook-test-secret";

/// (delivery id, event, signature, body) of one POST.
type Post = (String, String, String, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver {
    /// (delivery id, event, signature, body) of every POST, failed ones included.
    seen: Arc<Mutex<Vec<Post>>>,
    /// Answer 500 to this many POSTs first.
    fail_first: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Receiver, String) {
        let r = Receiver::default();
        *r.fail_first.lock().unwrap() = fail_first;
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let h = |k: &str| {
                        headers
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    state.seen.lock().unwrap().push((
                        h("x-gateway-delivery"),
                        h("x-gateway-event"),
                        h("x-gateway-signature"),
                        body.to_vec(),
                    ));
                    let mut fail = state.fail_first.lock().unwrap();
                    if *fail > 0 {
                        *fail -= 1;
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    fn seen(&self) -> Vec<Post> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Post> {
        for _ in 0..200 {
            if self.seen().len() >= n {
                return self.seen();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the receiver got {} posts, expected {n}", self.seen().len());
    }
}

/// HMAC-SHA256 as the receiver computes it (independently of the gateway's code).
fn hmac(key: &[u8], message: &[u8]) -> String {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let inner = sha2::Sha256::new()
        .chain_update(k.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    let outer = sha2::Sha256::new()
        .chain_update(k.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_alerts_once_per_episode_signed_and_retried() {
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let (receiver, url) = Receiver::start(1).await;
    let dir = TempDir::new();
    let accounts = seed(&dir, vec![api_key_account("team", &key)]).await;
    let mut text = config_text(&dir.0, &sim.base_url(), &sim.token_url(), "");
    text.push_str(&format!(
        "[alerts]\nwebhooks = [\"{url}\"]\nsecret = \"{SECRET}\"\nbackoff_base_ms = 50\n[pool]\ncredential_check_interval_secs = 0.1\n"
    ));
    std::fs::write(dir.0.join("gateway.toml"), text).unwrap();
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let c = client();
    assert_eq!(
        post_messages(&c, &gw, message_body("hi", false))
            .await
            .status(),
        200
    );

    sim.revoke_api_key(&key);
    for _ in 0..5 {
        let r = post_messages(&c, &gw, message_body("hi", false)).await;
        assert!(!r.status().is_success());
    }
    // The first delivery fails (500) and is retried with the same id and body.
    let seen = receiver.wait_for(2).await;
    assert_eq!(seen[0].0, seen[1].0, "a retry is the same delivery");
    assert_eq!(seen[0].3, seen[1].3);
    let (_, event, signature, body) = &seen[1];
    assert_eq!(event, "account_needs_login");
    assert_eq!(
        signature,
        &format!("sha256={}", hmac(SECRET.as_bytes(), body))
    );
    let alert: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(alert["event"], "account_needs_login");
    assert_eq!(alert["account"]["name"], "team");
    assert!(
        !String::from_utf8_lossy(body).contains(&key),
        "no secret in an alert"
    );

    // More failing requests and several checks later: still one alert for this episode.
    for _ in 0..5 {
        let _ = post_messages(&c, &gw, message_body("hi", false)).await;
    }
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(receiver.seen().len(), 2, "once per episode");

    // The operator enables it (episode over); it fails again: a new episode, a new alert.
    let r = c
        .post(gw.url(&format!("/admin/accounts/{}/enable", accounts[0].id)))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = post_messages(&c, &gw, message_body("hi", false)).await;
    let seen = receiver.wait_for(3).await;
    assert_ne!(seen[2].0, seen[0].0, "a new episode is a new delivery");
    assert_eq!(seen[2].1, "account_needs_login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_whose_accounts_all_cool_alerts_and_webhooks_need_a_secret() {
    let sim = Simulator::start().await.unwrap();
    let (receiver, url) = Receiver::start(0).await;
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("only", &sim.new_api_key())]).await;
    let mut text = config_text(&dir.0, &sim.base_url(), &sim.token_url(), "");
    text.push_str(&format!(
        "[alerts]\nwebhooks = [\"{url}\"]\nsecret = \"{SECRET}\"\n"
    ));
    std::fs::write(dir.0.join("gateway.toml"), text.clone()).unwrap();
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    sim.push_fault(simulator::Fault::once(simulator::FaultKind::Overloaded));
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert!(!r.status().is_success());
    let seen = receiver.wait_for(1).await;
    assert_eq!(seen[0].1, "tier_cooling");
    let alert: Value = serde_json::from_slice(&seen[0].3).unwrap();
    assert_eq!(alert["tier"], 0);

    // Unsigned webhooks are refused at start, naming the key.
    let bad = text.replace(&format!("secret = \"{SECRET}\"\n"), "");
    let path = gw.dir.0.join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("alerts.secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_alerts_once_at_80_and_once_at_100_percent_of_its_budget() {
    let sim = Simulator::start().await.unwrap();
    let (receiver, url) = Receiver::start(0).await;
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("a", &sim.new_api_key())]).await;
    let mut text = config_text(&dir.0, &sim.base_url(), &sim.token_url(), "");
    text.push_str(&format!(
        "[alerts]\nwebhooks = [\"{url}\"]\nsecret = \"{SECRET}\"\n"
    ));
    std::fs::write(dir.0.join("gateway.toml"), text).unwrap();
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let c = client();
    // The budget is 2.25 answers: two reach 89 %, the third passes 100 %.
    let first: Value = post_messages(&c, &gw, message_body("hi", false))
        .await
        .json()
        .await
        .unwrap();
    let per_answer = first["usage"]["input_tokens"].as_u64().unwrap()
        + first["usage"]["output_tokens"].as_u64().unwrap();
    let r: Value = c
        .post(gw.url("/admin/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name": "team", "tokens_per_day": per_answer * 9 / 4}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = r["key"].as_str().unwrap().to_string();
    let send = || {
        c.post(gw.url("/v1/messages"))
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(message_body("hi", false))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(send().await.unwrap().status(), 200);
    }
    let seen = receiver.wait_for(1).await;
    assert_eq!(seen[0].1, "key_budget_80");
    assert_eq!(send().await.unwrap().status(), 200);
    let seen = receiver.wait_for(2).await;
    assert_eq!(seen[1].1, "key_budget_100");
    let alert: Value = serde_json::from_slice(&seen[1].3).unwrap();
    assert!(
        alert["summary"].as_str().unwrap().contains("team"),
        "{alert}"
    );
    for _ in 0..3 {
        assert_eq!(send().await.unwrap().status(), 429, "over its budget");
    }
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(receiver.seen().len(), 2, "once per episode and threshold");
}
