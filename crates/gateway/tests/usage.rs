//! Issue 11, "usage that is lost": a stream the client abandons still counts the tokens it used, and the last usage
//! batch at shutdown is written after the streams in flight have finished. Real binary against the simulator.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use claude_gateway::store::{Store, Usage};
use common::*;
use simulator::{SimConfig, Simulator};

/// A simulator whose streams run ~2 s (40 deltas 50 ms apart).
async fn slow_streams() -> Simulator {
    Simulator::start_with(SimConfig {
        stream_events: 40,
        event_delay: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn gateway(sim: &Simulator, extra: &str) -> Gateway {
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("key-1", &sim.new_api_key())]).await;
    Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), extra)
}

/// The `usage` of the first event named `event` in what the simulator sent.
fn sent_usage(sim: &Simulator, event: &str, pointer: &str) -> serde_json::Value {
    let sent = sim.requests().pop().unwrap().response;
    let text = String::from_utf8_lossy(&sent).to_string();
    let block = text
        .split("\n\n")
        .find(|b| b.starts_with(&format!("event: {event}\n")))
        .unwrap_or_else(|| panic!("no {event} in {text}"));
    let data = block.split_once("data: ").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(data).unwrap();
    v.pointer(pointer).cloned().unwrap()
}

async fn totals(store: &impl Store) -> Usage {
    store
        .usage_totals()
        .await
        .unwrap()
        .into_iter()
        .next()
        .map(|(_, u)| u)
        .unwrap_or_default()
}

async fn open_stream(gw: &Gateway) -> reqwest::Response {
    let r = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .header("content-type", "application/json")
        .body(message_body("a long answer please", true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r
}

#[tokio::test]
async fn a_stream_abandoned_after_message_start_counts_its_input_tokens() {
    let sim = slow_streams().await;
    let gw = gateway(&sim, "usage_flush_secs = 0.2").await;
    let mut r = open_stream(&gw).await;
    // The first chunk the client gets carries `message_start` (headers are held until it arrived).
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(r);
    assert!(
        sim.wait_for_disconnects(1, Duration::from_secs(5)).await,
        "the gateway dropped the upstream stream"
    );
    let input = sent_usage(&sim, "message_start", "/message/usage/input_tokens");
    let input = input.as_u64().unwrap();
    assert!(input > 0);
    let store = gw.store().await;
    let mut seen = Usage::default();
    for _ in 0..50 {
        seen = totals(&store).await;
        if seen.input_tokens > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen.requests, 1, "{seen:?}");
    assert_eq!(
        seen.input_tokens, input,
        "input billed from message_start is counted: {seen:?}"
    );
}

#[tokio::test]
async fn the_last_usage_flush_at_shutdown_comes_after_the_streams_in_flight_finished() {
    let sim = slow_streams().await;
    // No periodic flush during the test: only the last one at shutdown writes usage.
    let mut gw = gateway(&sim, "usage_flush_secs = 3600").await;
    let mut r = open_stream(&gw).await;
    r.chunk().await.unwrap().unwrap();
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(gw.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert!(
        String::from_utf8_lossy(&body).contains("message_stop"),
        "the stream finished whole"
    );
    let exit = gw
        .wait_exit(Duration::from_secs(20))
        .expect("exits after the drain");
    assert!(exit.success(), "{exit:?}");
    let output = sent_usage(&sim, "message_delta", "/usage/output_tokens");
    let input = sent_usage(&sim, "message_start", "/message/usage/input_tokens");
    let store = gw.store().await;
    let seen = totals(&store).await;
    assert_eq!(seen.requests, 1, "{seen:?}");
    assert_eq!(seen.output_tokens, output.as_u64().unwrap(), "{seen:?}");
    assert_eq!(seen.input_tokens, input.as_u64().unwrap(), "{seen:?}");
}
