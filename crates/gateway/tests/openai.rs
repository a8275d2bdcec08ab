//! Issue 6: the OpenAI-compatible API (`/v1/chat/completions`, `/v1/models` in OpenAI shape) against the real binary
//! and the simulator, and end to end with the official `openai` Python SDK.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::python::run;
use common::*;
use serde_json::{json, Value};
use simulator::{Fault, FaultKind, SimConfig, Simulator};

/// The `openai` package the end-to-end test installs (checked to install and work with the gateway).
const OPENAI_SDK_VERSION: &str = "3.51.0";

async fn gateway_with_keys(sim: &Simulator, n: usize, extra: &str) -> (Gateway, Vec<String>) {
    let keys: Vec<String> = (0..n).map(|_| sim.new_api_key()).collect();
    let dir = TempDir::new();
    let accounts = keys
        .iter()
        .enumerate()
        .map(|(i, k)| api_key_account(&format!("key-{i}"), k))
        .collect();
    seed(&dir, accounts).await;
    (
        Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), extra),
        keys,
    )
}

async fn chat(gw: &Gateway, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// Asserts the OpenAI error shape and returns `error`.
fn openai_error(v: &Value) -> &Value {
    let e = &v["error"];
    assert!(
        e["message"].is_string() && e["type"].is_string(),
        "not an OpenAI error: {v}"
    );
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    assert!(v.get("type").is_none(), "Anthropic shape leaked: {v}");
    e
}

/// Reads an SSE body frame by frame, noting when each arrived.
async fn frames(resp: reqwest::Response) -> Vec<(Instant, Value)> {
    let mut resp = resp;
    let mut buf = String::new();
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let data = frame
                .trim_end()
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data frame: {frame:?}"));
            let v = serde_json::from_str(data).unwrap_or_else(|_| json!(data));
            out.push((Instant::now(), v));
        }
    }
    assert!(buf.is_empty(), "trailing bytes {buf:?}");
    out
}

fn deltas<'a>(frames: &'a [(Instant, Value)], key: &str) -> Vec<&'a str> {
    frames
        .iter()
        .filter_map(|(_, f)| f.pointer(&format!("/choices/0/delta/{key}"))?.as_str())
        .filter(|s| !s.is_empty())
        .collect()
}

fn finish_reason(frames: &[(Instant, Value)]) -> Option<&str> {
    frames
        .iter()
        .find_map(|(_, f)| f.pointer("/choices/0/finish_reason")?.as_str())
}

/// Text of the Anthropic deltas of `kind` (`text_delta`/`thinking_delta`) in a recorded upstream SSE response.
fn upstream_deltas(sse: &[u8], kind: &str, field: &str) -> String {
    String::from_utf8_lossy(sse)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter(|v| v.pointer("/delta/type").and_then(Value::as_str) == Some(kind))
        .map(|v| v["delta"][field].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn non_stream_completion_goes_through_the_pool_translated() {
    let sim = Simulator::start().await.unwrap();
    let (gw, keys) = gateway_with_keys(&sim, 1, "").await;
    let resp = chat(
        &gw,
        &json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hello there"},
            ],
            "user": "u-1",
            "stop": "STOP",
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.headers()["x-request-id"].to_str().unwrap(), request_id);
    let v: Value = resp.json().await.unwrap();

    let recs = sim.requests();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some(keys[0].as_str()));
    assert_eq!(
        r.header("authorization"),
        None,
        "client key never forwarded"
    );
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        r.json().unwrap(),
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 4096,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
            "stop_sequences": ["STOP"],
            "metadata": {"user_id": "u-1"},
        })
    );
    let upstream: Value = serde_json::from_slice(&r.response).unwrap();

    assert_eq!(v["object"], "chat.completion");
    let msg_id = upstream["id"].as_str().unwrap();
    assert_eq!(
        v["id"],
        format!("chatcmpl-{}", msg_id.strip_prefix("msg_").unwrap())
    );
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert!(v["created"].as_i64().unwrap() > 1_700_000_000);
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], upstream["content"][0]["text"]);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        v["usage"]["prompt_tokens"],
        upstream["usage"]["input_tokens"]
    );
    assert_eq!(
        v["usage"]["completion_tokens"],
        upstream["usage"]["output_tokens"]
    );
}

#[tokio::test]
async fn stream_text_is_translated_as_it_arrives() {
    let sim = Simulator::start_with(SimConfig {
        stream_events: 10,
        event_delay: Duration::from_millis(40),
        ..Default::default()
    })
    .await
    .unwrap();
    let (gw, _) = gateway_with_keys(&sim, 1, "").await;
    let resp = chat(
        &gw,
        &json!({"model": "claude-sonnet-4-5", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "tell me"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let frames = frames(resp).await;
    let upstream = sim.requests()[0].response.clone();

    assert_eq!(frames[0].1["choices"][0]["delta"]["role"], "assistant");
    let content = deltas(&frames, "content");
    assert_eq!(content.len(), 10, "one chunk per upstream text delta");
    assert_eq!(
        content.concat(),
        upstream_deltas(&upstream, "text_delta", "text")
    );
    assert_eq!(finish_reason(&frames), Some("stop"));
    let n = frames.len();
    assert_eq!(frames[n - 1].1, json!("[DONE]"));
    let usage = &frames[n - 2].1;
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let ids: Vec<&Value> = frames[..n - 1].iter().map(|(_, f)| &f["id"]).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one id per stream");
    // Chunks were written as their events arrived, not at the end: the first text came well before the last.
    let first_text = frames
        .iter()
        .find(|(_, f)| {
            f.pointer("/choices/0/delta/content")
                .is_some_and(|c| c != "")
        })
        .unwrap()
        .0;
    let done = frames[n - 1].0;
    assert!(
        done - first_text >= Duration::from_millis(250),
        "stream was buffered: {:?}",
        done - first_text
    );
}

#[tokio::test]
async fn stream_tool_call_arguments_arrive_incrementally() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = gateway_with_keys(&sim, 1, "").await;
    let resp = chat(
        &gw,
        &json!({
            "model": "claude-sonnet-4-5", "stream": true,
            "messages": [{"role": "user", "content": "sim_tool_use weather in Paris"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let frames = frames(resp).await;
    let sent = sim.requests()[0].json().unwrap();
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert_eq!(sent["tools"][0]["name"], "get_weather");

    let calls: Vec<&Value> = frames
        .iter()
        .filter_map(|(_, f)| f.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    let first = calls[0];
    assert_eq!(first["index"], 0);
    assert!(first["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(first["type"], "function");
    assert_eq!(first["function"]["name"], "get_weather");
    let pieces: Vec<&str> = calls[1..]
        .iter()
        .map(|c| {
            assert_eq!(c["index"], 0);
            assert!(c.get("id").is_none() && c["function"].get("name").is_none());
            c["function"]["arguments"].as_str().unwrap()
        })
        .collect();
    assert_eq!(pieces.len(), 3, "one chunk per upstream input_json_delta");
    let args: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(args, json!({"city": "sim city", "days": 42}));
    assert_eq!(finish_reason(&frames), Some("tool_calls"));
    assert_eq!(frames.last().unwrap().1, json!("[DONE]"));
    // The relay underneath saw the whole upstream stream: it counts as complete, not as a client that left.
    let mut m = String::new();
    for _ in 0..50 {
        m = gw.metrics().await;
        if m.contains(r#"gateway_streams_total{outcome="complete"} 1"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        m.contains(r#"gateway_streams_total{outcome="complete"} 1"#) && !m.contains("client_gone"),
        "{m}"
    );
}

#[tokio::test]
async fn reasoning_effort_turns_on_thinking_and_returns_reasoning_content() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = gateway_with_keys(&sim, 1, "").await;
    let body = json!({
        "model": "claude-sonnet-4-5", "stream": true, "reasoning_effort": "low",
        "messages": [{"role": "user", "content": "sim_thinking about it"}],
    });
    let frames = frames(chat(&gw, &body).await).await;
    let rec = &sim.requests()[0];
    let sent = rec.json().unwrap();
    assert_eq!(
        sent["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );
    assert_eq!(sent["max_tokens"], 1024 + 4096);
    let reasoning = deltas(&frames, "reasoning_content");
    assert_eq!(reasoning.len(), 3);
    assert_eq!(
        reasoning.concat(),
        upstream_deltas(&rec.response, "thinking_delta", "thinking")
    );
    assert!(!deltas(&frames, "content").is_empty());

    // Non-stream: thinking and a tool call together.
    let mut body = body;
    body["stream"] = json!(false);
    body["messages"][0]["content"] = json!("sim_thinking and sim_tool_use");
    body["tools"] = json!([{"type": "function", "function": {"name": "lookup"}}]);
    let v: Value = chat(&gw, &body).await.json().await.unwrap();
    let msg = &v["choices"][0]["message"];
    assert!(msg["reasoning_content"]
        .as_str()
        .unwrap()
        .contains("step by step"));
    assert_eq!(msg["tool_calls"][0]["function"]["name"], "lookup");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn upstream_errors_mid_stream_end_with_an_error_chunk() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = gateway_with_keys(&sim, 1, "").await;
    let body = json!({"model": "claude-sonnet-4-5", "stream": true, "messages": [{"role": "user", "content": "x"}]});

    sim.push_fault(Fault::once(FaultKind::StreamError { after_events: 4 }));
    let frames_err = frames(chat(&gw, &body).await).await;
    let last = &frames_err.last().unwrap().1;
    assert_eq!(openai_error(last)["message"], "Overloaded");
    assert_eq!(last["error"]["type"], "server_error");
    assert!(
        !deltas(&frames_err, "content").is_empty(),
        "text before the error"
    );
    assert!(frames_err.iter().all(|(_, f)| f != "[DONE]"));

    sim.push_fault(Fault::once(FaultKind::CutStream { after_events: 4 }));
    let frames_cut = frames(chat(&gw, &body).await).await;
    let last = &frames_cut.last().unwrap().1;
    assert!(openai_error(last)["message"]
        .as_str()
        .unwrap()
        .contains("before message_stop"));
    assert!(frames_cut.iter().all(|(_, f)| f != "[DONE]"));
}

#[tokio::test]
async fn a_client_leaving_mid_stream_drops_the_upstream_request() {
    let sim = Simulator::start_with(SimConfig {
        stream_events: 200,
        event_delay: Duration::from_millis(20),
        ..Default::default()
    })
    .await
    .unwrap();
    let (gw, _) = gateway_with_keys(&sim, 1, "").await;
    let mut resp = chat(
        &gw,
        &json!({"model": "claude-sonnet-4-5", "stream": true, "messages": [{"role": "user", "content": "long"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.chunk().await.unwrap().unwrap().is_empty());
    drop(resp);
    assert!(
        sim.wait_for_disconnects(1, Duration::from_secs(1)).await,
        "upstream stream dropped within 1 s"
    );
}

#[tokio::test]
async fn failover_works_as_for_messages() {
    let sim = Simulator::start().await.unwrap();
    let (gw, keys) = gateway_with_keys(&sim, 2, "").await;
    sim.push_fault(Fault::once(FaultKind::Overloaded));
    let resp = chat(
        &gw,
        &json!({"model": "claude-sonnet-4-5", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let f = frames(resp).await;
    assert_eq!(f.last().unwrap().1, json!("[DONE]"));
    let recs = sim.requests();
    assert_eq!(recs.len(), 2);
    assert_ne!(recs[0].credential, recs[1].credential);
    assert!(recs
        .iter()
        .all(|r| keys.contains(r.credential.as_ref().unwrap())));
}

#[tokio::test]
async fn every_error_on_the_route_has_the_openai_shape() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = gateway_with_keys(&sim, 1, "max_body_bytes = 4096").await;
    let c = client();
    let ok_body =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]});

    // Client auth.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .body(ok_body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(openai_error(&v)["type"], "authentication_error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-wrong")
        .body(ok_body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    openai_error(&r.json().await.unwrap());

    // Validation, naming the parameter.
    for (body, param) in [
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}),
            json!("n"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}),
            json!("response_format"),
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": true}),
            json!("logprobs"),
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            json!("model"),
        ),
    ] {
        let r = chat(&gw, &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(openai_error(&v)["param"], param, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    openai_error(&r.json().await.unwrap());

    // Body limit.
    let big = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(8000)}]});
    let r = chat(&gw, &big).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(openai_error(&v)["code"], "request_too_large");

    // Unknown OpenAI routes.
    let r = c
        .post(gw.url("/v1/embeddings"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    openai_error(&r.json().await.unwrap());
    assert!(sim.requests().is_empty(), "none of these reached upstream");

    // Upstream client errors keep their status and request id.
    sim.push_fault(Fault::once(FaultKind::Status {
        status: 400,
        error_type: "invalid_request_error".into(),
        message: "stop_sequences: each stop sequence must contain non-whitespace".into(),
        headers: vec![],
    }));
    let r = chat(&gw, &ok_body).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("request-id").is_some());
    let v: Value = r.json().await.unwrap();
    assert!(openai_error(&v)["message"]
        .as_str()
        .unwrap()
        .contains("non-whitespace"));

    // An upstream 429 (no other account) keeps retry-after.
    sim.push_fault(Fault::once(FaultKind::RateLimited {
        retry_after: Some("7".into()),
        retry_after_ms: None,
        headers: vec![],
    }));
    let r = chat(&gw, &ok_body).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let v: Value = r.json().await.unwrap();
    assert_eq!(openai_error(&v)["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    // And while the account cools down, the gateway's own 429 has the same shape.
    let r = chat(&gw, &ok_body).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    assert_eq!(
        openai_error(&r.json().await.unwrap())["type"],
        "rate_limit_error"
    );
}

#[tokio::test]
async fn no_account_is_a_503_in_openai_shape() {
    let sim = Simulator::start().await.unwrap();
    let gw = Gateway::start(&sim, "");
    let r = chat(
        &gw,
        &json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(openai_error(&v)["message"]
        .as_str()
        .unwrap()
        .contains("accounts add-key"));
    assert_eq!(v["error"]["type"], "server_error");
}

#[tokio::test]
async fn models_answer_in_the_clients_dialect() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = gateway_with_keys(&sim, 1, "").await;
    let c = client();
    let get = |path: &str, anthropic: bool| {
        let mut b = c.get(gw.url(path)).bearer_auth(CLIENT_KEY);
        if anthropic {
            b = b.header("anthropic-version", "2023-06-01");
        }
        b.send()
    };
    let v: Value = get("/v1/models", false)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    let first = &v["data"][0];
    assert_eq!(first["object"], "model");
    assert_eq!(first["owned_by"], "anthropic");
    assert!(first["created"].as_i64().unwrap() > 1_600_000_000);
    assert!(v["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "claude-sonnet-4-5"));
    assert_eq!(
        sim.requests()[0].query.as_deref(),
        Some("limit=1000"),
        "OpenAI's list has no pages"
    );

    let v: Value = get("/v1/models", true).await.unwrap().json().await.unwrap();
    assert_eq!(v["data"][0]["type"], "model", "Anthropic shape: {v}");
    assert!(v.get("has_more").is_some());

    let v: Value = get("/v1/models/claude-sonnet-4-5", false)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v,
        json!({"id": "claude-sonnet-4-5", "object": "model", "created": v["created"], "owned_by": "anthropic"})
    );
    let r = get("/v1/models/gpt-4o", false).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        openai_error(&r.json().await.unwrap())["type"],
        "not_found_error"
    );
    let r = c
        .get(gw.url("/v1/models"))
        .bearer_auth("sk-wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    openai_error(&r.json().await.unwrap());
}

/// A virtual environment with the pinned `openai` package under `target/openai-venv`, created once and reused (see
/// [`common::python::venv`]).
async fn openai_venv() -> PathBuf {
    common::python::venv("openai-venv", &[("openai", OPENAI_SDK_VERSION)]).await
}

#[tokio::test]
async fn openai_python_sdk_end_to_end() {
    let python = openai_venv().await;
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = gateway_with_keys(&sim, 1, "").await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_sdk_e2e.py");
    let base = gw.url("/v1");
    let out = run(
        tokio::process::Command::new(&python).arg(&script).args([
            base.as_str(),
            CLIENT_KEY,
            "main",
        ]),
        "openai SDK script (main)",
    )
    .await;
    for step in [
        "ok non-stream",
        "ok stream",
        "ok tools",
        "ok stream tools",
        "ok reasoning",
        "ok errors",
    ] {
        assert!(out.lines().any(|l| l == step), "{step} missing:\n{out}");
    }

    sim.push_fault(Fault::once(FaultKind::StreamError { after_events: 4 }));
    let out = run(
        tokio::process::Command::new(&python).arg(&script).args([
            base.as_str(),
            CLIENT_KEY,
            "stream_error",
        ]),
        "openai SDK script (stream_error)",
    )
    .await;
    assert!(out.contains("ok stream error"), "{out}");
}
