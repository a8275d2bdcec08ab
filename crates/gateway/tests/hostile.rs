//! Issue 11 (engine part): hostile numbers from upstream and rotations that must not be lost, against the real binary
//! and the simulator with the fault injected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::time::Duration;

use common::*;
use simulator::{Fault, FaultKind, Simulator, TokenFault};

async fn expired_oauth_gateway(sim: &Simulator) -> (Gateway, simulator::TokenPair) {
    let pair = sim.issue_oauth(Duration::from_secs(0));
    let dir = TempDir::new();
    seed(
        &dir,
        vec![oauth_account(
            "oauth-1",
            &pair.access_token,
            &pair.refresh_token,
            chrono::Duration::seconds(-60),
        )],
    )
    .await;
    (
        Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), ""),
        pair,
    )
}

fn messages_credentials(sim: &Simulator) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .filter_map(|r| r.credential)
        .collect()
}

#[tokio::test]
async fn an_absurd_expires_in_and_retry_after_ms_on_a_200_keep_the_account_serving_and_the_rotation_survives_a_restart(
) {
    let sim = Simulator::start().await.unwrap();
    let (mut gw, old) = expired_oauth_gateway(&sim).await;
    // ~3e5 years and ~3e12 years: both overflow naive time arithmetic.
    sim.push_token_fault(TokenFault::Hostile {
        expires_in: serde_json::json!(10_000_000_000_000u64),
        headers: vec![("retry-after-ms".into(), "1e23".into())],
    });
    let c = client();
    assert_eq!(
        post_messages(&c, &gw, message_body("x", false))
            .await
            .status(),
        200
    );
    assert_eq!(
        post_messages(&c, &gw, message_body("y", false))
            .await
            .status(),
        200
    );
    let admin = gw.admin_accounts().await;
    assert_eq!(admin["accounts"][0]["state"], "ready", "{admin}");
    let rotated = sim.current_refresh_token(&old.refresh_token).unwrap();
    let stored = gw.store().await;
    let row = claude_gateway::store::find_account(&stored, "oauth-1")
        .await
        .unwrap();
    assert_eq!(
        row.credential.refresh_token.as_deref(),
        Some(rotated.as_str()),
        "the rotation is stored"
    );

    // After a SIGKILL the gateway refreshes with the rotated token, not the one it started with.
    gw.kill_and_restart();
    sim.revoke_access_token(&messages_credentials(&sim)[0]);
    assert_eq!(
        post_messages(&c, &gw, message_body("z", false))
            .await
            .status(),
        200
    );
    let calls = sim.token_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].refresh_token.as_deref(), Some(rotated.as_str()));
    assert_eq!(calls[1].outcome, "ok");
}

#[tokio::test]
async fn a_negative_or_textual_expires_in_is_accepted_and_the_rotation_is_kept() {
    let sim = Simulator::start().await.unwrap();
    let (gw, old) = expired_oauth_gateway(&sim).await;
    sim.push_token_fault(TokenFault::Hostile {
        expires_in: serde_json::json!("forever"),
        headers: vec![],
    });
    assert_eq!(
        post_messages(&client(), &gw, message_body("x", false))
            .await
            .status(),
        200
    );
    let rotated = sim.current_refresh_token(&old.refresh_token).unwrap();
    let row = claude_gateway::store::find_account(&gw.store().await, "oauth-1")
        .await
        .unwrap();
    assert_eq!(
        row.credential.refresh_token.as_deref(),
        Some(rotated.as_str())
    );
}

#[tokio::test]
async fn a_huge_retry_after_ms_on_a_429_cools_the_account_and_the_admin_listing_keeps_working() {
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("key-1", &key)]).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    sim.push_fault(Fault::once(FaultKind::RateLimited {
        retry_after: None,
        retry_after_ms: None,
        headers: vec![("retry-after-ms".into(), "1e23".into())],
    }));
    let r = post_messages(&client(), &gw, message_body("x", false)).await;
    assert_eq!(
        r.status(),
        429,
        "the client gets an answer, not a reset connection"
    );
    // The account now cools for a long (clamped) time: the gateway answers for it, with a long Retry-After.
    let r = post_messages(&client(), &gw, message_body("y", false)).await;
    assert_eq!(r.status(), 429);
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs > 86_400, "a long wait: {secs}");
    assert_eq!(
        sim.requests().len(),
        1,
        "the cooling account was not tried again"
    );
    let r = reqwest::Client::new()
        .get(gw.url("/admin/accounts"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let until = v["accounts"][0]["model_cooldowns"][0]["until"]
        .as_str()
        .unwrap();
    assert!(until > "2027", "clamped to a year, shown: {v}");
    assert!(gw.logs().contains("listening"), "the process is alive");
}

#[tokio::test]
async fn after_a_lost_answer_a_5xx_is_not_retried_with_the_same_token() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = expired_oauth_gateway(&sim).await;
    sim.push_token_fault(TokenFault::DropConnection);
    sim.push_token_fault(TokenFault::ServerError);
    sim.push_token_fault(TokenFault::ServerError);
    let r = post_messages(&client(), &gw, message_body("x", false)).await;
    assert_eq!(r.status(), 503);
    let calls = sim.token_calls();
    assert_eq!(
        calls.len(),
        2,
        "sent once, then exactly once more: {calls:?}"
    );
    assert_eq!(calls[0].refresh_token, calls[1].refresh_token);
    let a = gw.admin_accounts().await["accounts"][0].clone();
    assert_eq!(a["state"], "needs_reauth", "{a}");
    assert!(a["last_error"].as_str().unwrap().contains("lost"), "{a}");
    // Never again, whatever asks.
    let r = post_messages(&client(), &gw, message_body("y", false)).await;
    assert_ne!(r.status(), 200);
    assert_eq!(sim.token_call_count(), 2);
}

#[tokio::test]
async fn a_200_that_cannot_be_parsed_counts_as_a_lost_answer() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = expired_oauth_gateway(&sim).await;
    sim.push_token_fault(TokenFault::RotateThenGarbage);
    let r = post_messages(&client(), &gw, message_body("x", false)).await;
    assert_eq!(r.status(), 503);
    let calls = sim.token_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].outcome, "rotated_then_garbage");
    assert_eq!(
        calls[1].outcome, "invalid_grant",
        "the same (rotated-out) token, once more"
    );
    let a = gw.admin_accounts().await["accounts"][0].clone();
    assert_eq!(a["state"], "needs_reauth");
    assert!(a["last_error"].as_str().unwrap().contains("lost"), "{a}");
}
