//! Graceful shutdown of `serve`: SIGTERM while streams are in flight lets every stream finish whole, refuses new
//! connections at once, and exits 0 soon after the last stream ends.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use simulator::{SimConfig, Simulator};

const STREAMS: usize = 20;

/// Sends `signal` (e.g. `TERM`) to a process with the system's `kill`.
fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}: {status}");
}

/// One request on a new connection, with a short deadline: Ok(status) if the gateway answered.
async fn probe(gw: &Gateway) -> Result<u16, String> {
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    match c.get(gw.url("/healthz")).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("is_connect={} {e:?}", e.is_connect())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_streams_finish_and_exits_zero() {
    // 60 text deltas 25 ms apart: each stream runs ~1.6 s, long after its first chunk.
    let sim = Simulator::start_with(SimConfig {
        stream_events: 60,
        event_delay: Duration::from_millis(25),
        ..Default::default()
    })
    .await
    .unwrap();
    let key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("key-1", &key)]).await;
    let mut gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    assert_eq!(probe(&gw).await, Ok(200));

    let client = client();
    let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(STREAMS);
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let client = client.clone();
        let url = gw.url("/v1/messages");
        let first_tx = first_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut resp = client
                .post(url)
                .header("x-api-key", CLIENT_KEY)
                .header("anthropic-version", "2023-06-01")
                .header("content-type", "application/json")
                .body(message_body(&format!("stream number {i}"), true))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "stream {i}");
            let mut body = Vec::new();
            let mut first = true;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        body.extend_from_slice(&chunk);
                        if first {
                            first = false;
                            first_tx.send(()).await.unwrap();
                        }
                    }
                    Ok(None) => break,
                    Err(e) => panic!(
                        "stream {i} broke after {} bytes: {e:?}\n{}",
                        body.len(),
                        String::from_utf8_lossy(&body)
                    ),
                }
            }
            (String::from_utf8(body).unwrap(), Instant::now())
        }));
    }
    drop(first_tx);
    for n in 0..STREAMS {
        tokio::time::timeout(Duration::from_secs(20), first_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} of {STREAMS} streams started"))
            .unwrap();
    }
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "every stream is still in flight at SIGTERM"
    );
    assert_eq!(sim.in_flight(), STREAMS, "all upstream streams open");

    send_signal(gw.pid(), "TERM");
    let signalled = Instant::now();

    // New connections are refused (or at least never answered) soon after the signal, while the streams still run.
    let mut refused = None;
    while signalled.elapsed() < Duration::from_secs(3) {
        if let Err(e) = probe(&gw).await {
            refused = Some((Instant::now(), e));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (refused_at, why) = refused.expect("new connections still served 3 s after SIGTERM");
    assert!(
        refused_at - signalled < Duration::from_millis(500),
        "took {:?} to stop accepting",
        refused_at - signalled
    );
    assert!(
        why.starts_with("is_connect=true"),
        "refused at connect: {why}"
    );

    let mut ends = Vec::new();
    let mut bodies = Vec::new();
    for t in tasks {
        let (body, ended) = t.await.unwrap();
        ends.push(ended);
        bodies.push(body);
    }
    let last_end = ends.iter().max().copied().unwrap();
    assert!(
        refused_at < *ends.iter().min().unwrap(),
        "new connections were refused before any in-flight stream ended"
    );
    assert!(probe(&gw).await.is_err(), "still refusing while exiting");

    // Every stream arrived whole, byte for byte as the simulator sent it.
    for (i, body) in bodies.iter().enumerate() {
        assert!(
            body.starts_with("event: message_start"),
            "stream {i}: {body}"
        );
        assert!(!body.contains("event: error"), "stream {i}: {body}");
        assert!(
            body.trim_end()
                .ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}"),
            "stream {i} not whole: {body}"
        );
        assert_eq!(
            body.matches("text_delta").count(),
            60,
            "stream {i}: every delta"
        );
    }
    let mut sent: Vec<String> = sim
        .requests()
        .iter()
        .map(|r| String::from_utf8(r.response.to_vec()).unwrap())
        .collect();
    let mut got = bodies.clone();
    sent.sort();
    got.sort();
    assert_eq!(sent.len(), STREAMS);
    assert!(sent == got, "streams relayed byte for byte");

    // And the process exits 0 soon after the last stream ended.
    let status = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(5)))
        .unwrap_or_else(|| panic!("still running 5 s after the streams ended:\n{}", gw.logs()));
    assert!(status.success(), "exit status {status}:\n{}", gw.logs());
    assert!(
        last_end.elapsed() < Duration::from_secs(5),
        "exited {:?} after the last stream",
        last_end.elapsed()
    );
    assert!(gw.logs().contains("shutting down"), "{}", gw.logs());
}
