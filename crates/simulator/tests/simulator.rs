// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use simulator::{Fault, FaultKind, SimConfig, Simulator, TokenFault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const KEY: &str = "sk-ant-api03-test-key";

struct Resp {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send a request on a fresh connection; return the response and the connection task.
async fn open(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (Response<Incoming>, JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    (resp, task)
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let (resp, _task) = open(addr, method, path, headers, body).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

fn api_headers(key: &str) -> Vec<(&str, &str)> {
    vec![
        ("x-api-key", key),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ]
}

fn oauth_headers(auth: &str) -> Vec<(&str, &str)> {
    vec![
        ("authorization", auth),
        ("anthropic-version", "2023-06-01"),
        (
            "anthropic-beta",
            "fine-grained-tool-streaming-2025-05-14,oauth-2025-04-20",
        ),
        ("content-type", "application/json"),
    ]
}

fn body(text: &str, stream: bool) -> String {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
}

async fn post_messages(sim: &Simulator, key: &str, body: &str) -> Resp {
    send(sim.addr(), "POST", "/v1/messages", &api_headers(key), body).await
}

/// (event name, data) pairs of an SSE body.
fn parse_sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap();
                }
            }
            assert_eq!(data["type"].as_str(), Some(name.as_str()));
            (name, data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(n, d)| match d["delta"]["type"].as_str() {
            Some(t) if n == "content_block_delta" => t.to_string(),
            _ => match d["content_block"]["type"].as_str() {
                Some(t) => format!("start:{t}"),
                None => n.clone(),
            },
        })
        .collect()
}

async fn token_request(sim: &Simulator, body: Value) -> Resp {
    send(
        sim.addr(),
        "POST",
        "/v1/oauth/token",
        &[("content-type", "application/json")],
        &body.to_string(),
    )
    .await
}

async fn refresh(sim: &Simulator, rt: &str) -> Resp {
    token_request(
        sim,
        json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": "x"}),
    )
    .await
}

/// Write a raw HTTP/1.1 request and read until EOF (or error).
async fn raw_exchange(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "server neither answered nor closed");
    out
}

#[tokio::test]
async fn non_stream_message_echoes_user_text() {
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key(KEY);
    let r = post_messages(&sim, KEY, &body("hello simulator 42", false)).await;
    assert_eq!(r.status, 200);
    assert!(r.header("request-id").unwrap().starts_with("req_"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("anthropic-ratelimit-requests-limit"), Some("4000"));
    assert!(r
        .header("anthropic-ratelimit-tokens-reset")
        .unwrap()
        .ends_with('Z'));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["stop_reason"], "end_turn");
    assert!(v["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("hello simulator 42"));
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(v["usage"]["cache_read_input_tokens"].is_u64());

    let reqs = sim.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/messages");
    assert_eq!(reqs[0].status, 200);
    assert_eq!(reqs[0].credential.as_deref(), Some(KEY));
    assert_eq!(reqs[0].header("Anthropic-Version"), Some("2023-06-01"));
    assert_eq!(sim.in_flight(), 0);
}

#[tokio::test]
async fn auth_rejections() {
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key(KEY);
    let addr = sim.addr();
    let b = body("hi", false);

    // No credential, unknown key.
    let r = send(
        addr,
        "POST",
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        &b,
    )
    .await;
    assert_eq!(r.status, 401);
    let r = post_messages(&sim, "sk-ant-api03-unknown", &b).await;
    assert_eq!(r.status, 401);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert!(v["request_id"].as_str().unwrap().starts_with("req_"));

    // OAuth without the beta flag.
    let pair = sim.issue_oauth(Duration::from_secs(3600));
    let bearer = format!("Bearer {}", pair.access_token);
    let r = send(
        addr,
        "POST",
        "/v1/messages",
        &[
            ("authorization", bearer.as_str()),
            ("anthropic-version", "2023-06-01"),
        ],
        &b,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["error"]["message"],
        "OAuth authentication is currently not supported."
    );
    // With it: fine, and unified headers.
    let r = send(addr, "POST", "/v1/messages", &oauth_headers(&bearer), &b).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("anthropic-ratelimit-unified-status"),
        Some("allowed")
    );
    assert!(r
        .header("anthropic-ratelimit-unified-5h-utilization")
        .is_some());
    assert!(r.header("anthropic-ratelimit-requests-limit").is_none());

    // Revoked, expired, unknown bearer.
    sim.revoke_access_token(&pair.access_token);
    let r = send(addr, "POST", "/v1/messages", &oauth_headers(&bearer), &b).await;
    assert_eq!(r.status, 401);
    let expired = sim.issue_oauth(Duration::ZERO);
    let r = send(
        addr,
        "POST",
        "/v1/messages",
        &oauth_headers(&format!("Bearer {}", expired.access_token)),
        &b,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = send(
        addr,
        "POST",
        "/v1/messages",
        &oauth_headers("Bearer sk-ant-oat01-nope"),
        &b,
    )
    .await;
    assert_eq!(r.status, 401);
    // A setup token.
    sim.add_access_token("sk-ant-oat01-setup", Duration::from_secs(3600));
    let r = send(
        addr,
        "POST",
        "/v1/messages",
        &oauth_headers("Bearer sk-ant-oat01-setup"),
        &b,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.current_refresh_token("sk-ant-oat01-setup"), None);

    // Missing version, bad bodies.
    let r = send(addr, "POST", "/v1/messages", &[("x-api-key", KEY)], &b).await;
    assert_eq!(r.status, 400);
    let r = post_messages(&sim, KEY, "not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = post_messages(&sim, KEY, r#"{"model":"m","max_tokens":1,"messages":[]}"#).await;
    assert_eq!(r.status, 400);

    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![401, 401, 401, 200, 401, 401, 401, 200, 400, 400, 400]
    );
}

#[tokio::test]
async fn accept_any_key_accepts_anything() {
    let sim = Simulator::start_with(SimConfig {
        accept_any_key: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let r = post_messages(&sim, "whatever", &body("x", false)).await;
    assert_eq!(r.status, 200);
    let r = send(
        sim.addr(),
        "POST",
        "/v1/messages",
        &oauth_headers("Bearer foo"),
        &body("x", false),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn stream_text_event_order() {
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key(KEY);
    let r = post_messages(&sim, KEY, &body("stream me please", true)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.header("request-id").is_some());
    let events = parse_sse(&r.text());
    let mut expected = vec!["message_start", "ping", "start:text"];
    expected.extend(std::iter::repeat_n("text_delta", 8));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);
    let text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert!(text.contains("stream me please"));
    assert_eq!(events[0].1["message"]["content"], json!([]));
    assert!(
        events[0].1["message"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "end_turn"
    );
    assert!(
        events[events.len() - 2].1["usage"]["output_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn stream_thinking_and_tool_use() {
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key(KEY);
    let b = json!({
        "model": "claude-opus-4-1",
        "max_tokens": 100,
        "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1024, "note": "sim_thinking"},
        "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "please use a tool"}]}],
        "sim": {"events": 3},
    })
    .to_string();
    let r = post_messages(&sim, KEY, &b).await;
    assert_eq!(r.status, 200);
    let events = parse_sse(&r.text());
    let expected = vec![
        "message_start",
        "ping",
        "start:thinking",
        "thinking_delta",
        "thinking_delta",
        "thinking_delta",
        "signature_delta",
        "content_block_stop",
        "start:text",
        "text_delta",
        "text_delta",
        "text_delta",
        "content_block_stop",
        "start:tool_use",
        "input_json_delta",
        "input_json_delta",
        "input_json_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ];
    assert_eq!(names(&events), expected);
    let indexes: Vec<u64> = events
        .iter()
        .filter_map(|(_, d)| d["index"].as_u64())
        .collect();
    assert_eq!(indexes.first(), Some(&0));
    assert_eq!(indexes.last(), Some(&2));
    let tool_start = &events[13].1["content_block"];
    assert_eq!(tool_start["name"], "lookup");
    assert!(tool_start["id"].as_str().unwrap().starts_with("toolu_"));
    let json_text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    let input: Value = serde_json::from_str(&json_text).unwrap();
    assert!(input["q"].is_string() && input["n"].is_number());
    assert_eq!(events[18].1["delta"]["stop_reason"], "tool_use");

    // Non-stream: same content shape.
    let b = body("x sim_thinking sim_tool_use", false);
    let v = post_messages(&sim, KEY, &b).await.json();
    let types: Vec<&str> = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["thinking", "text", "tool_use"]);
    assert_eq!(v["stop_reason"], "tool_use");
    assert!(v["content"][0]["signature"].as_str().unwrap().len() > 10);
}

#[tokio::test]
async fn faults_are_scoped_by_credential() {
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key("k1");
    sim.add_api_key("k2");
    sim.push_fault(Fault::for_credential(FaultKind::Overloaded, "k2", 2));
    sim.push_fault(Fault::once(FaultKind::Status {
        status: 500,
        error_type: "api_error".into(),
        message: "boom".into(),
        headers: vec![("x-extra".into(), "1".into())],
    }));
    let b = body("x", false);
    let r = post_messages(&sim, "k1", &b).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["message"], "boom");
    assert_eq!(r.header("x-extra"), Some("1"));
    assert_eq!(post_messages(&sim, "k1", &b).await.status, 200);
    let r = post_messages(&sim, "k2", &b).await;
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["error"]["type"], "overloaded_error");
    assert_eq!(post_messages(&sim, "k2", &b).await.status, 529);
    assert_eq!(post_messages(&sim, "k2", &b).await.status, 200);

    sim.push_fault(Fault::once(FaultKind::RateLimited {
        retry_after: Some("7".into()),
        retry_after_ms: Some(7000),
        headers: vec![(
            "anthropic-ratelimit-unified-status".into(),
            "rejected".into(),
        )],
    }));
    let r = post_messages(&sim, "k1", &b).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("retry-after-ms"), Some("7000"));
    assert_eq!(
        r.header("anthropic-ratelimit-unified-status"),
        Some("rejected")
    );
}

#[tokio::test]
async fn ratelimit_headers_override() {
    let sim = Simulator::start().await.unwrap();
    let pair = sim.issue_oauth(Duration::from_secs(60));
    sim.set_ratelimit_headers(
        &pair.access_token,
        vec![(
            "anthropic-ratelimit-unified-5h-utilization".into(),
            "0.97".into(),
        )],
    );
    let bearer = format!("Bearer {}", pair.access_token);
    let r = send(
        sim.addr(),
        "POST",
        "/v1/messages",
        &oauth_headers(&bearer),
        &body("x", true),
    )
    .await;
    assert_eq!(
        r.header("anthropic-ratelimit-unified-5h-utilization"),
        Some("0.97")
    );
    assert_eq!(
        r.header("anthropic-ratelimit-unified-status"),
        Some("allowed")
    );
}

#[tokio::test]
async fn token_rotation_kills_old_refresh_token() {
    let sim = Simulator::start().await.unwrap();
    let pair = sim.issue_oauth(Duration::from_secs(60));
    assert_eq!(pair.expires_in, 60);
    let r = refresh(&sim, &pair.refresh_token).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    let access = v["access_token"].as_str().unwrap().to_string();
    let rt = v["refresh_token"].as_str().unwrap().to_string();
    assert!(access.starts_with("sk-ant-oat01-sim-"));
    assert!(rt.starts_with("sk-ant-ort01-sim-"));
    assert_eq!(v["expires_in"], 8 * 3600);
    assert!(v["account"]["email_address"]
        .as_str()
        .unwrap()
        .ends_with("@example.com"));
    assert!(v["organization"]["uuid"].is_string());
    assert_eq!(
        sim.current_refresh_token(&pair.access_token),
        Some(rt.clone())
    );
    assert_eq!(
        sim.current_refresh_token(&pair.refresh_token),
        Some(rt.clone())
    );

    // The old one is dead.
    let r = refresh(&sim, &pair.refresh_token).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    // The new access token works; so does the old one until it expires.
    let b = body("x", false);
    let r = send(
        sim.addr(),
        "POST",
        "/v1/messages",
        &oauth_headers(&format!("Bearer {access}")),
        &b,
    )
    .await;
    assert_eq!(r.status, 200);

    // Imported refresh tokens.
    sim.add_refresh_token("sk-ant-ort01-fixture");
    assert_eq!(refresh(&sim, "sk-ant-ort01-fixture").await.status, 200);
    assert_eq!(refresh(&sim, "sk-ant-ort01-fixture").await.status, 400);

    let calls = sim.token_calls();
    let outcomes: Vec<&str> = calls.iter().map(|c| c.outcome.as_str()).collect();
    assert_eq!(outcomes, ["ok", "invalid_grant", "ok", "invalid_grant"]);
    assert_eq!(calls[0].grant_type, "refresh_token");
    assert_eq!(
        calls[0].refresh_token.as_deref(),
        Some(pair.refresh_token.as_str())
    );
    assert_eq!(calls[1].status, 400);
    assert_eq!(sim.token_call_count(), 4);
}

#[tokio::test]
async fn token_faults() {
    let sim = Simulator::start().await.unwrap();
    let pair = sim.issue_oauth(Duration::from_secs(60));
    sim.push_token_fault(TokenFault::RateLimited {
        retry_after: Some("120".into()),
        retry_after_ms: None,
    });
    sim.push_token_fault(TokenFault::ServerError);
    sim.push_token_fault(TokenFault::InvalidGrant);
    let r = refresh(&sim, &pair.refresh_token).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("120"));
    assert_eq!(
        r.json()["error"]["type"],
        "rate_limit_error",
        "the shape platform.claude.com answers"
    );
    assert_eq!(refresh(&sim, &pair.refresh_token).await.status, 500);
    assert_eq!(refresh(&sim, &pair.refresh_token).await.status, 400);
    // Nothing rotated so far.
    assert_eq!(
        sim.current_refresh_token(&pair.access_token),
        Some(pair.refresh_token.clone())
    );

    // RotateThenDrop: no answer, but the family rotated.
    sim.push_token_fault(TokenFault::RotateThenDrop);
    let body =
        json!({"grant_type": "refresh_token", "refresh_token": pair.refresh_token}).to_string();
    let out = raw_exchange(
        sim.addr(),
        "/v1/oauth/token",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert!(out.is_empty(), "got {}", String::from_utf8_lossy(&out));
    let current = sim.current_refresh_token(&pair.access_token).unwrap();
    assert_ne!(current, pair.refresh_token);
    assert_eq!(refresh(&sim, &pair.refresh_token).await.status, 400);

    sim.push_token_fault(TokenFault::DropConnection);
    let body = json!({"grant_type": "refresh_token", "refresh_token": current}).to_string();
    let out = raw_exchange(
        sim.addr(),
        "/v1/oauth/token",
        &[("content-type", "application/json")],
        &body,
    )
    .await;
    assert!(out.is_empty());
    assert_eq!(
        sim.current_refresh_token(&pair.access_token),
        Some(current.clone())
    );

    let outcomes: Vec<(String, u16)> = sim
        .token_calls()
        .into_iter()
        .map(|c| (c.outcome, c.status))
        .collect();
    let expected = [
        ("rate_limited", 429),
        ("server_error", 500),
        ("invalid_grant", 400),
        ("rotated_then_dropped", 0),
        ("invalid_grant", 400),
        ("dropped", 0),
    ];
    assert_eq!(
        outcomes,
        expected
            .iter()
            .map(|(o, s)| (o.to_string(), *s))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn authorization_code_flow_with_pkce() {
    use base64::Engine;
    use sha2::Digest;
    let sim = Simulator::start().await.unwrap();
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier));
    let redirect = "http://localhost:54545/callback";
    let authorize = |state: &str| {
        format!(
            "/oauth/authorize?code=true&client_id=abc&response_type=code&redirect_uri={}&scope=user%3Aprofile%20user%3Ainference&code_challenge={challenge}&code_challenge_method=S256&state={state}",
            "http%3A%2F%2Flocalhost%3A54545%2Fcallback"
        )
    };
    let get_code = |r: &Resp| {
        let loc = r.header("location").unwrap().to_string();
        assert!(loc.starts_with(&format!("{redirect}?code=")), "{loc}");
        let code = loc
            .split("code=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_string();
        (loc, code)
    };
    let r = send(sim.addr(), "GET", &authorize("st1"), &[], "").await;
    assert_eq!(r.status, 302);
    let (loc, code) = get_code(&r);
    assert!(loc.ends_with("&state=st1"));

    let exchange = |code: &str, verifier: &str, redirect: &str| json!({"grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "client_id": "abc", "code_verifier": verifier, "state": "st1"});
    let r = token_request(&sim, exchange(&code, verifier, redirect)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["scope"], "user:profile user:inference");
    let access = v["access_token"].as_str().unwrap().to_string();
    // Single use.
    let r = token_request(&sim, exchange(&code, verifier, redirect)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");

    // Wrong verifier, wrong redirect.
    let (_, code) = get_code(&send(sim.addr(), "GET", &authorize("st2"), &[], "").await);
    assert_eq!(
        token_request(&sim, exchange(&code, "wrong", redirect))
            .await
            .status,
        400
    );
    let (_, code) = get_code(&send(sim.addr(), "GET", &authorize("st3"), &[], "").await);
    assert_eq!(
        token_request(&sim, exchange(&code, verifier, "http://evil/cb"))
            .await
            .status,
        400
    );

    // Profile.
    let bearer = format!("Bearer {access}");
    let r = send(
        sim.addr(),
        "GET",
        "/api/oauth/profile",
        &[("authorization", bearer.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(v["account"]["email"]
        .as_str()
        .unwrap()
        .starts_with("sim-user-"));
    assert!(v["organization"]["name"].is_string());
    let r = send(
        sim.addr(),
        "GET",
        "/api/oauth/profile",
        &[("authorization", "Bearer nope")],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn models_and_unknown_routes() {
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key(KEY);
    let h = api_headers(KEY);
    let r = send(sim.addr(), "GET", "/v1/models", &h, "").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"claude-sonnet-4-5")
            && ids.contains(&"claude-opus-4-1")
            && ids.contains(&"claude-haiku-4-5")
    );
    assert_eq!(v["has_more"], false);
    assert_eq!(v["first_id"], ids[0]);
    let r = send(sim.addr(), "GET", "/v1/models/claude-haiku-4-5", &h, "").await;
    assert_eq!(r.json()["display_name"], "Claude Haiku 4.5");
    let r = send(
        sim.addr(),
        "GET",
        "/v1/models/claude-sonnet-4-5-20250929",
        &h,
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(sim.addr(), "GET", "/v1/models/gpt-4", &h, "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = send(sim.addr(), "GET", "/v1/nope", &h, "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = send(
        sim.addr(),
        "POST",
        "/v1/messages/count_tokens",
        &h,
        &body("count me", false),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0);
    let paths: Vec<String> = sim.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
    sim.reset_records();
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn stream_disconnect_is_counted() {
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key(KEY);
    let b = json!({
        "model": "m", "max_tokens": 10, "stream": true,
        "messages": [{"role": "user", "content": "x"}],
        "sim": {"events": 200, "delay_ms": 20},
    })
    .to_string();
    let (resp, conn) = open(sim.addr(), "POST", "/v1/messages", &api_headers(KEY), &b).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.into_body();
    let first = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: message_start"));
    let second = stream.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&second).starts_with("event: ping"));
    assert_eq!(sim.in_flight(), 1);
    drop(stream);
    conn.abort();
    assert!(sim.wait_for_disconnects(1, Duration::from_secs(5)).await);
    assert_eq!(sim.disconnects(), 1);
    assert_eq!(sim.in_flight(), 0);

    // A slow answer abandoned before its headers counts too.
    sim.push_fault(Fault::once(FaultKind::Slow(Duration::from_secs(30))));
    let mut raw = TcpStream::connect(sim.addr()).await.unwrap();
    let b = body("slow", false);
    let mut req = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: sim\r\ncontent-length: {}\r\n",
        b.len()
    );
    for (n, v) in api_headers(KEY) {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&b);
    raw.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sim.in_flight(), 1);
    drop(raw);
    assert!(sim.wait_for_disconnects(2, Duration::from_secs(5)).await);
    assert_eq!(sim.in_flight(), 0);
    // A complete answer is no disconnect.
    assert_eq!(post_messages(&sim, KEY, &body("x", true)).await.status, 200);
    assert!(!sim.wait_for_disconnects(3, Duration::from_millis(50)).await);
    // The abandoned one has no status.
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 0, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_connection_closes_without_response() {
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key(KEY);
    sim.push_fault(Fault::once(FaultKind::DropConnection));
    let out = raw_exchange(
        sim.addr(),
        "/v1/messages",
        &api_headers(KEY),
        &body("x", false),
    )
    .await;
    assert!(out.is_empty(), "got {}", String::from_utf8_lossy(&out));
    // The next request is answered, and nothing counts as a client disconnect.
    let out = raw_exchange(
        sim.addr(),
        "/v1/messages",
        &[api_headers(KEY), vec![("connection", "close")]].concat(),
        &body("x", false),
    )
    .await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
    assert_eq!(sim.disconnects(), 0);
    let statuses: Vec<u16> = sim.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [0, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_faults() {
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key(KEY);

    // Cut: 3 events then a broken body.
    sim.push_fault(Fault::once(FaultKind::CutStream { after_events: 3 }));
    let (resp, _conn) = open(
        sim.addr(),
        "POST",
        "/v1/messages",
        &api_headers(KEY),
        &body("x", true),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body_ = resp.into_body();
    let mut got = Vec::new();
    let err = loop {
        match body_.frame().await {
            Some(Ok(f)) => got.push(f.into_data().unwrap()),
            Some(Err(e)) => break Some(e),
            None => break None,
        }
    };
    assert!(err.is_some(), "the body must end with an error");
    assert_eq!(got.len(), 3);

    // Error event: 2 events, then event: error, then a clean end.
    sim.push_fault(Fault::once(FaultKind::StreamError { after_events: 2 }));
    let r = post_messages(&sim, KEY, &body("x", true)).await;
    let events = parse_sse(&r.text());
    assert_eq!(names(&events), ["message_start", "ping", "error"]);
    assert_eq!(events[2].1["error"]["type"], "overloaded_error");

    // Stall: events, then nothing; abandoning it counts as a disconnect.
    sim.push_fault(Fault::once(FaultKind::StallStream { after_events: 4 }));
    let (resp, conn) = open(
        sim.addr(),
        "POST",
        "/v1/messages",
        &api_headers(KEY),
        &body("x", true),
    )
    .await;
    let mut body_ = resp.into_body();
    for _ in 0..4 {
        body_.frame().await.unwrap().unwrap();
    }
    let next = tokio::time::timeout(Duration::from_millis(150), body_.frame()).await;
    assert!(next.is_err(), "the stream must stall");
    drop(body_);
    conn.abort();
    assert!(sim.wait_for_disconnects(1, Duration::from_secs(5)).await);

    // Non-stream cut: truncated JSON.
    sim.push_fault(Fault::once(FaultKind::CutStream { after_events: 0 }));
    let (resp, _conn) = open(
        sim.addr(),
        "POST",
        "/v1/messages",
        &api_headers(KEY),
        &body("x", false),
    )
    .await;
    assert!(resp.into_body().collect().await.is_err());
}

#[tokio::test]
async fn latency_and_pacing() {
    let sim = Simulator::start_with(SimConfig {
        latency: Duration::from_millis(50),
        event_delay: Duration::from_millis(5),
        stream_events: 4,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    sim.add_api_key(KEY);
    let t = std::time::Instant::now();
    let r = post_messages(&sim, KEY, &body("x", true)).await;
    // 50ms latency + 9 gaps of 5ms between 10 events.
    assert!(
        t.elapsed() >= Duration::from_millis(95),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(parse_sse(&r.text()).len(), 10);
}

#[tokio::test]
async fn dropping_the_simulator_shuts_everything_down() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Simulator>();
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key(KEY);
    let addr = sim.addr();
    sim.push_fault(Fault::once(FaultKind::StallStream { after_events: 1 }));
    let (resp, _conn) = open(
        addr,
        "POST",
        "/v1/messages",
        &api_headers(KEY),
        &body("x", true),
    )
    .await;
    let mut stream = resp.into_body();
    stream.frame().await.unwrap().unwrap();
    drop(sim);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.frame())
        .await
        .unwrap();
    assert!(!matches!(end, Some(Ok(_))), "the stalled stream must end");
    tokio::task::yield_now().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

/// Split a raw HTTP/1.1 response into its status line + headers and its body, decoding a
/// chunked body.
fn split_raw_response(raw: &[u8]) -> (String, Vec<u8>) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut rest = &raw[end + 4..];
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    if !chunked {
        return (head, rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_line = std::str::from_utf8(&rest[..eol]).unwrap();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n");
        rest = &rest[size + 2..];
    }
    (head, body)
}

#[tokio::test]
async fn responses_are_recorded_byte_for_byte() {
    let sim = Simulator::start().await.unwrap();
    sim.add_api_key(KEY);
    let close = |key| [api_headers(key), vec![("connection", "close")]].concat();

    // Non-stream JSON: the whole body, with its content-length kept.
    let raw = raw_exchange(
        sim.addr(),
        "/v1/messages",
        &close(KEY),
        &body("record me", false),
    )
    .await;
    let (head, json_body) = split_raw_response(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains(&format!("content-length: {}", json_body.len())));
    assert!(String::from_utf8_lossy(&json_body).contains("record me"));

    // Stream: every chunk, in order.
    let raw = raw_exchange(
        sim.addr(),
        "/v1/messages",
        &close(KEY),
        &body("stream me", true),
    )
    .await;
    let (head, sse_body) = split_raw_response(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let events = parse_sse(&String::from_utf8(sse_body.clone()).unwrap());
    assert_eq!(events.last().unwrap().0, "message_stop");

    // JSON error.
    let raw = raw_exchange(
        sim.addr(),
        "/v1/messages",
        &close("sk-ant-api03-unknown"),
        &body("x", false),
    )
    .await;
    let (head, err_body) = split_raw_response(&raw);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");

    let reqs = sim.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].response, json_body);
    assert_eq!(reqs[1].response, sse_body);
    assert_eq!(reqs[2].response, err_body);
    assert_eq!(reqs[2].status, 401);
    assert_eq!(
        serde_json::from_slice::<Value>(&reqs[2].response).unwrap()["error"]["type"],
        "authentication_error"
    );

    // A stalled stream holds what was sent so far.
    sim.reset_records();
    sim.push_fault(Fault::once(FaultKind::StallStream { after_events: 3 }));
    let (resp, conn) = open(
        sim.addr(),
        "POST",
        "/v1/messages",
        &api_headers(KEY),
        &body("x", true),
    )
    .await;
    let mut stream = resp.into_body();
    let mut got = Vec::new();
    for _ in 0..3 {
        let chunk = stream.frame().await.unwrap().unwrap().into_data().unwrap();
        got.extend_from_slice(&chunk);
    }
    assert_eq!(sim.requests()[0].response, got);
    drop(stream);
    conn.abort();
    assert!(sim.wait_for_disconnects(1, Duration::from_secs(5)).await);
    assert_eq!(sim.requests()[0].response, got);

    // Recording off: nothing is kept.
    sim.reset_records();
    sim.set_recording(false);
    assert_eq!(post_messages(&sim, KEY, &body("x", true)).await.status, 200);
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn a_rate_limited_token_endpoint_answers_every_caller_429_for_the_period_and_records_call_times(
) {
    let sim = Simulator::start().await.unwrap();
    let a = sim.issue_oauth(Duration::ZERO);
    let b = sim.issue_oauth(Duration::ZERO);
    sim.rate_limit_token_endpoint(Duration::from_millis(400), Some("6"));
    for rt in [&a.refresh_token, &b.refresh_token] {
        let r = refresh(&sim, rt).await;
        assert_eq!(r.status, 429, "every account alike");
        assert_eq!(r.header("retry-after"), Some("6"));
        assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        refresh(&sim, &a.refresh_token).await.status,
        200,
        "nothing rotated meanwhile"
    );
    let calls = sim.token_calls();
    assert_eq!(calls.len(), 3);
    assert!(
        calls[2].at >= calls[0].at + Duration::from_millis(400),
        "{calls:?}"
    );
    assert!(calls[2].at <= sim.elapsed());
}
