//! Issue 2: the Messages API passthrough, header policy, errors, streaming, disconnects, CLI and config, against the
//! real binary and the simulator.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use simulator::{Fault, FaultKind, SimConfig, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn one_key_gateway(sim: &Simulator, extra: &str) -> (Gateway, String) {
    let key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("key-1", &key)]).await;
    (
        Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), extra),
        key,
    )
}

fn error_type(v: &serde_json::Value) -> &str {
    assert_eq!(v["type"], "error", "{v}");
    v["error"]["type"].as_str().unwrap()
}

#[tokio::test]
async fn non_stream_body_and_headers_pass_through() {
    let sim = Simulator::start().await.unwrap();
    let (gw, key) = one_key_gateway(&sim, "").await;
    let body = r#"{"model":"claude-sonnet-4-5",   "max_tokens":64,"future_field":{"x":[1,2]},"messages":[{"role":"user","content":"hello there"}]}"#;
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .header("anthropic-beta", "beta-one,beta-two")
        .header("x-stainless-lang", "python")
        .header("connection", "keep-alive")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .headers()
        .get("request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("req_"));
    assert!(resp
        .headers()
        .keys()
        .any(|k| k.as_str().starts_with("anthropic-ratelimit-")));
    let got = resp.bytes().await.unwrap();

    let recs = sim.requests();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        r.body.as_ref(),
        body.as_bytes(),
        "body forwarded byte for byte"
    );
    assert_eq!(
        got.as_ref(),
        r.response.as_ref(),
        "response relayed byte for byte"
    );
    assert_eq!(r.header("x-api-key"), Some(key.as_str()));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("anthropic-beta"), Some("beta-one,beta-two"));
    assert_eq!(r.header("x-stainless-lang"), Some("python"));
    assert!(
        r.headers.iter().all(|(_, v)| !v.contains(CLIENT_KEY)),
        "client key never reaches upstream"
    );
}

#[tokio::test]
async fn stream_passes_through_event_by_event() {
    let sim = Simulator::start_with(SimConfig {
        stream_events: 20,
        ..Default::default()
    })
    .await
    .unwrap();
    let (gw, _) = one_key_gateway(&sim, "").await;
    let resp = client()
        .post(gw.url("/v1/messages"))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("anthropic-version", "2023-06-01")
        .body(r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"sim_thinking please"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(resp.headers().get("content-encoding").is_none());
    let got = resp.bytes().await.unwrap();
    let r = &sim.requests()[0];
    assert_eq!(
        got.as_ref(),
        r.response.as_ref(),
        "stream relayed byte for byte"
    );
    let text = String::from_utf8(got.to_vec()).unwrap();
    assert!(text.starts_with("event: message_start"));
    assert!(text.contains("thinking_delta"));
    assert!(text.trim_end().ends_with(r#"{"type":"message_stop"}"#));
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"gateway_streams_total{outcome="complete"} 1"#)
            && m.contains(r#"gateway_requests_total{route="/v1/messages",status="200"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn client_key_is_required() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = one_key_gateway(&sim, "").await;
    let c = client();
    let body = message_body("hi", false);
    let r = c
        .post(gw.url("/v1/messages"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_type(&r.json().await.unwrap()), "authentication_error");
    let r = c
        .post(gw.url("/v1/messages"))
        .header("x-api-key", "sk-wrong")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(gw.url("/v1/models"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(sim.requests().is_empty());
    let r = c
        .get(gw.url("/admin/accounts"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a client key is not an admin key");
}

/// The API routes skip the router (`crate::dispatch`) but keep its layers, in its order: the browser guard, the request
/// count, the client's key; any other method or path on them is still the router's.
#[tokio::test]
async fn api_routes_keep_every_layer_and_other_methods_stay_the_routers() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) =
        one_key_gateway(&sim, r#"cors_allowed_origins = ["http://allowed.example"]"#).await;
    let c = client();
    let routes = [
        ("/v1/messages", "anthropic"),
        ("/v1/messages/count_tokens", "anthropic"),
        ("/v1/chat/completions", "openai"),
        ("/v1/responses", "openai"),
    ];
    for (path, dialect) in routes {
        let post = || c.post(gw.url(path)).body(message_body("hi", false));
        // No key: refused in the route's dialect, and counted under the route.
        let r = post().send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        match dialect {
            "anthropic" => assert_eq!(error_type(&v), "authentication_error", "{path}"),
            _ => assert!(
                v["error"]["message"].is_string() && v.get("type").is_none(),
                "{path}: {v}"
            ),
        }
        // A foreign page's request is refused before its key is looked at, and before it is counted.
        let r = post()
            .bearer_auth(CLIENT_KEY)
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        // An allowed origin's request goes through the key check and gets the CORS headers on its answer.
        let r = post()
            .header("origin", "http://allowed.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "http://allowed.example"
        );
        // The router's: another method, a preflight, another path.
        let r = c
            .get(gw.url(path))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "GET {path}");
        let r = c
            .request(reqwest::Method::OPTIONS, gw.url(path))
            .header("origin", "http://allowed.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "preflight {path}");
        let r = c
            .post(gw.url(&format!("{path}/")))
            .bearer_auth(CLIENT_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "POST {path}/");
    }
    assert!(sim.requests().is_empty());
    let m = gw.metrics().await;
    for (path, _) in routes {
        assert!(
            m.contains(&format!(
                r#"gateway_requests_total{{route="{path}",status="401"}} 2"#
            )) && !m.contains(&format!(
                r#"gateway_requests_total{{route="{path}",status="403"}}"#
            )),
            "{path}: {m}"
        );
    }
}

#[tokio::test]
async fn invalid_requests_get_anthropic_errors_and_reach_nobody() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = one_key_gateway(&sim, "").await;
    let c = client();
    for (body, needle) in [
        ("{not json", "not valid JSON"),
        (r#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
        (r#"{"model":"m"}"#, "messages"),
        (r#"{"model":"m","messages":[]}"#, "messages"),
        (r#"[1,2]"#, "JSON"),
    ] {
        let r = c
            .post(gw.url("/v1/messages"))
            .header("x-api-key", CLIENT_KEY)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(error_type(&v), "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    let r = c.get(gw.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_type(&r.json().await.unwrap()), "not_found_error");
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn oversized_bodies_are_refused_without_reading_them() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = one_key_gateway(&sim, "max_body_bytes = 4096").await;
    let c = client();
    let big = message_body(&"x".repeat(8000), false);
    let r = c
        .post(gw.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_type(&r.json().await.unwrap()), "request_too_large");
    // Chunked, no content-length: stopped at the limit.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let r = c
        .post(gw.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // A declared gigabyte is answered before any of it is sent.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {CLIENT_KEY}\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn no_account_is_503_with_instructions_and_readyz_says_so() {
    let sim = Simulator::start().await.unwrap();
    let gw = Gateway::start(&sim, "");
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("accounts add-key"),
        "{v}"
    );
    assert_eq!(
        reqwest::get(gw.url("/healthz")).await.unwrap().status(),
        200
    );
    assert_eq!(reqwest::get(gw.url("/readyz")).await.unwrap().status(), 503);
    assert!(
        gw.logs().contains("accounts add-key"),
        "startup log tells how to add an account"
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("k", "sk-ant-api03-x")]).await;
    let gw = Gateway::start_in(
        dir,
        &format!("http://{closed}"),
        "http://127.0.0.1:9/token",
        "",
    );
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(error_type(&r.json().await.unwrap()), "api_error");

    let sim = Simulator::start().await.unwrap();
    let (gw, _) = one_key_gateway(&sim, "").await; // read timeout 5 s
    sim.push_fault(Fault::once(FaultKind::Slow(Duration::from_secs(30))));
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 504);
    assert_eq!(error_type(&r.json().await.unwrap()), "timeout_error");
}

#[tokio::test]
async fn upstream_client_errors_pass_through_untouched() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = one_key_gateway(&sim, "").await;
    sim.push_fault(Fault::once(FaultKind::Status {
        status: 400,
        error_type: "invalid_request_error".into(),
        message: "max_tokens: must be positive".into(),
        headers: vec![],
    }));
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("request-id").is_some());
    let got = r.bytes().await.unwrap();
    assert_eq!(got.as_ref(), sim.requests()[0].response.as_ref());
    assert_eq!(sim.requests().len(), 1, "a client error is not retried");
}

#[tokio::test]
async fn client_disconnect_drops_the_upstream_request() {
    let sim = Simulator::start_with(SimConfig {
        stream_events: 200,
        event_delay: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    let (gw, _) = one_key_gateway(&sim, "").await;
    let mut resp = post_messages(&client(), &gw, message_body("long story", true)).await;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(resp);
    assert!(
        sim.wait_for_disconnects(1, Duration::from_secs(1)).await,
        "upstream stream dropped within 1 s"
    );

    // Also while waiting for a slow non-stream answer.
    sim.push_fault(Fault::once(FaultKind::Slow(Duration::from_secs(4))));
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(c
        .post(gw.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .body(message_body("x", false))
        .send()
        .await
        .is_err());
    assert!(
        sim.wait_for_disconnects(2, Duration::from_secs(1)).await,
        "slow upstream request dropped within 1 s"
    );
}

#[tokio::test]
async fn a_stream_cut_midway_ends_with_an_error_event_and_counts_as_failed() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = one_key_gateway(&sim, "").await;
    sim.push_fault(Fault::once(FaultKind::CutStream { after_events: 4 }));
    let r = post_messages(&client(), &gw, message_body("x", true)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(
        text.contains("event: error\ndata: {\"type\":\"error\""),
        "{text}"
    );
    assert!(!text.contains("event: message_stop"));
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"gateway_streams_total{outcome="failed"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_stalled_stream_hits_the_read_timeout_and_ends_with_an_error_event() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = one_key_gateway(&sim, "").await; // read timeout 5 s
    sim.push_fault(Fault::once(FaultKind::StallStream { after_events: 3 }));
    let text = post_messages(&client(), &gw, message_body("x", true))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("event: error") && text.contains("read timeout"),
        "{text}"
    );
}

#[tokio::test]
async fn count_tokens_and_models_pass_through() {
    let sim = Simulator::start().await.unwrap();
    let (gw, key) = one_key_gateway(&sim, "").await;
    let c = client();
    let r = c
        .post(gw.url("/v1/messages/count_tokens"))
        .header("x-api-key", CLIENT_KEY)
        .body(r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"count me"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.json::<serde_json::Value>().await.unwrap()["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let r = c
        .get(gw.url("/v1/models?limit=5"))
        .header("x-api-key", CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "claude-sonnet-4-5"));
    let r = c
        .get(gw.url("/v1/models/claude-sonnet-4-5"))
        .header("x-api-key", CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(gw.url("/v1/models/nope"))
        .header("x-api-key", CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let recs = sim.requests();
    assert!(recs
        .iter()
        .all(|r| r.credential.as_deref() == Some(key.as_str())));
    assert!(recs
        .iter()
        .any(|r| r.path == "/v1/models" && r.query.as_deref() == Some("limit=5")));
}

#[tokio::test]
async fn accounts_cli_manages_accounts_and_the_running_gateway_follows() {
    let sim = Simulator::start().await.unwrap();
    let gw = Gateway::start(&sim, "");
    let key = sim.new_api_key();
    let out = gw.cli(&["accounts", "add-key", "--name", "main", &key]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = gw.cli(&["accounts", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(v["accounts"][0]["name"], "main");
    assert_eq!(v["accounts"][0]["kind"], "api_key");
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&key),
        "list never prints secrets"
    );
    // Duplicate names are refused clearly.
    let dup = gw.cli(&["accounts", "add-key", "--name", "main", "sk-other"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    gw.wait_accounts(1).await;
    assert_eq!(
        post_messages(&client(), &gw, message_body("hi", false))
            .await
            .status(),
        200
    );
    assert!(gw.cli(&["accounts", "disable", "main"]).status.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        post_messages(&client(), &gw, message_body("hi", false))
            .await
            .status(),
        503
    );
    assert_eq!(
        gw.admin_accounts().await["accounts"][0]["state"],
        "disabled"
    );
    assert!(gw.cli(&["accounts", "enable", "1"]).status.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        post_messages(&client(), &gw, message_body("hi", false))
            .await
            .status(),
        200
    );
    assert!(gw.cli(&["accounts", "remove", "main"]).status.success());
    gw.wait_accounts(0).await;
    let missing = gw.cli(&["accounts", "remove", "main"]);
    assert!(!missing.status.success());
}

#[test]
fn bad_config_fails_at_start_naming_key_and_file() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nclient_keyz = [\"x\"]\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("client_keyz") && err.contains("bad.toml"),
        "{err}"
    );

    std::fs::write(&path, "[upstream]\nread_timeout_secs = -1\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("upstream.read_timeout_secs"));
}

#[cfg(unix)]
#[tokio::test]
async fn store_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = one_key_gateway(&sim, "").await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&gw.dir.0.join("data")), 0o700);
    for f in std::fs::read_dir(gw.dir.0.join("data")).unwrap() {
        let p = f.unwrap().path();
        assert_eq!(mode(&p) & 0o077, 0, "{} is readable by others", p.display());
    }
}

#[tokio::test]
async fn token_usage_of_both_kinds_of_answers_is_counted_in_batches() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = one_key_gateway(&sim, "usage_flush_secs = 0.2").await;
    let c = client();
    let mut expected_input = 0;
    for stream in [false, false, true] {
        let r = post_messages(&c, &gw, message_body("count my tokens", stream)).await;
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        if !stream {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            expected_input += v["usage"]["input_tokens"].as_u64().unwrap();
        }
    }
    use claude_gateway::store::Store;
    let store = gw.store().await;
    let mut totals = Default::default();
    // Up to 20 s: the flush runs every 0.2 s, but a loaded CI machine (the whole suite on 2 cores) can delay it; the
    // loop ends as soon as the batch is in, the stream's input tokens included (a stream's request and its tokens may
    // land in different flushes).
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let all = store.usage_totals().await.unwrap();
        if let Some((_, u)) = all.into_iter().next() {
            if u.requests == 3 && u.output_tokens > 0 && u.input_tokens > expected_input {
                totals = u;
                break;
            }
        }
    }
    let totals: claude_gateway::store::Usage = totals;
    assert_eq!(totals.requests, 3, "{totals:?}");
    assert!(
        totals.input_tokens > expected_input,
        "non-stream and stream input counted: {totals:?} vs {expected_input}"
    );
    let admin = gw.admin_accounts().await;
    assert_eq!(admin["accounts"][0]["usage"]["requests"], 3, "{admin}");
}
