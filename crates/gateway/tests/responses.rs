//! Issue 14: the OpenAI Responses API (`/v1/responses`) against the real binary and the simulator, end to end with the
//! official `openai` Python SDK and with Codex CLI.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;

use common::python::run;
use common::*;
use serde_json::{json, Value};
use simulator::{Fault, FaultKind, Simulator};

/// The `openai` package the end-to-end test installs (the same pin as the chat adapter's test).
const OPENAI_SDK_VERSION: &str = "3.51.0";

async fn gateway(sim: &Simulator) -> Gateway {
    let key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("key-0", &key)]).await;
    Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "")
}

async fn post(gw: &Gateway, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/responses"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// Reads a Responses SSE body: (event name, data) per frame, checking `event:` matches `data.type`.
async fn events(resp: reqwest::Response) -> Vec<Value> {
    let text = resp.text().await.unwrap();
    let mut out = Vec::new();
    for frame in text.split("\n\n").filter(|f| !f.trim().is_empty()) {
        let mut lines = frame.lines();
        let event = lines.next().unwrap().strip_prefix("event: ").unwrap();
        let data: Value =
            serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["type"], event, "{frame}");
        out.push(data);
    }
    for (i, e) in out.iter().enumerate() {
        assert_eq!(e["sequence_number"], i, "sequence numbers count up: {e}");
    }
    out
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn stream_body(text: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "input": text, "stream": true})
}

// === Codex CLI ===

async fn codex_home(gw: &Gateway) -> (TempDir, std::path::PathBuf) {
    let home = TempDir::new();
    std::fs::create_dir_all(home.0.join(".codex")).unwrap();
    std::fs::write(
        home.0.join(".codex/config.toml"),
        format!(
            "check_for_update_on_startup = false\n{}\n{}",
            common::codex::config_toml(&gw.url("/v1")),
            common::codex::OFFLINE.replace("check_for_update_on_startup = false\n", "")
        ),
    )
    .unwrap();
    let work = home.0.join("work");
    std::fs::create_dir_all(&work).unwrap();
    (home, work)
}

#[tokio::test]
async fn codex_cli_plain_turn_and_tool_loop() {
    let codex = common::codex::codex().await;
    let sim = Simulator::start().await.unwrap();
    let gw = gateway(&sim).await;
    let (home, work) = codex_home(&gw).await;

    let (ok, stdout, stderr) = common::codex::exec(
        &codex,
        &home.0,
        &work,
        CLIENT_KEY,
        "say hello codex-plain-7",
    )
    .await;
    assert!(ok, "codex failed:\n{stdout}\n{stderr}\n{}", gw.logs());
    assert!(
        stdout.contains("Hello from the Anthropic simulator. You said:")
            && stdout.contains("say hello codex-plain-7"),
        "the answer reached Codex:\n{stdout}\n{stderr}"
    );
    let first = sim.requests().len();
    assert!(first >= 1);

    // Claude asks for exec_command, Codex runs it, the output comes back as function_call_output, Claude answers.
    let prompt = r#"sim_tool_use:exec_command sim_tool_args={"cmd":"echo codex-ran-$((40+2))"}"#;
    let (ok, stdout, stderr) =
        common::codex::exec(&codex, &home.0, &work, CLIENT_KEY, prompt).await;
    assert!(ok, "codex failed:\n{stdout}\n{stderr}\n{}", gw.logs());
    let reqs = sim.requests();
    let loop_reqs: Vec<Value> = reqs[first..]
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        loop_reqs.len(),
        2,
        "one call with the tool_use, one with its result"
    );
    let results: Vec<&Value> = loop_reqs[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| {
            m["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect::<Vec<_>>()
        })
        .filter(|b| b["type"] == "tool_result")
        .map(|_| &loop_reqs[1])
        .collect();
    assert_eq!(
        results.len(),
        1,
        "the tool's output came back: {}",
        loop_reqs[1]
    );
    let sent = loop_reqs[1].to_string();
    assert!(
        sent.contains("codex-ran-42"),
        "Codex ran the command and sent its output: {sent}"
    );
    assert!(
        stdout.contains("Tool result received:") && stdout.contains("codex-ran-42"),
        "Claude's final answer reached Codex:\n{stdout}\n{stderr}"
    );
}

// === Streams against the simulator ===

#[tokio::test]
async fn stream_text_arrives_event_by_event_and_completes() {
    let sim = Simulator::start().await.unwrap();
    let gw = gateway(&sim).await;
    let ev = events(post(&gw, CLIENT_KEY, &stream_body("hi there")).await).await;
    let t = types(&ev);
    assert_eq!(
        t,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        .iter()
        .copied()
        .chain(std::iter::repeat_n(
            "response.output_text.delta",
            t.len() - 8
        ))
        .chain([
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ])
        .collect::<Vec<_>>(),
    );
    let deltas: String = ev
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert!(t.len() - 8 > 1, "text in pieces");
    let done = ev.last().unwrap();
    assert_eq!(done["response"]["status"], "completed");
    let item = &done["response"]["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["content"][0]["text"], deltas.as_str());
    assert!(deltas.ends_with("You said: hi there"), "{deltas}");
    let u = &done["response"]["usage"];
    assert!(
        u["input_tokens"].as_u64().unwrap() > 0 && u["output_tokens"].as_u64().unwrap() > 0,
        "{u}"
    );
    assert_eq!(
        u["total_tokens"],
        u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn stream_tool_use_sends_arguments_in_pieces() {
    let sim = Simulator::start().await.unwrap();
    let gw = gateway(&sim).await;
    let mut body = stream_body("sim_tool_use weather?");
    body["tools"] = json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let ev = events(post(&gw, CLIENT_KEY, &body).await).await;
    let pieces: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert!(pieces.len() > 1, "arguments in pieces: {pieces:?}");
    let done = ev
        .iter()
        .find(|e| e["type"] == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done["arguments"], pieces.concat());
    let out = &ev.last().unwrap()["response"]["output"];
    let call = out
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap();
    assert_eq!(call["name"], "get_weather");
    assert!(
        call["call_id"].as_str().unwrap().starts_with("toolu_"),
        "{call}"
    );
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "sim city"})
    );
}

#[tokio::test]
async fn stream_thinking_comes_back_as_reasoning_and_round_trips() {
    let sim = Simulator::start().await.unwrap();
    let gw = gateway(&sim).await;
    let mut body = stream_body("sim_thinking please");
    body["reasoning"] = json!({"effort": "low"});
    let ev = events(post(&gw, CLIENT_KEY, &body).await).await;
    let t = types(&ev);
    for k in [
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
    ] {
        assert!(t.contains(&k), "{k} missing: {t:?}");
    }
    let output = ev.last().unwrap()["response"]["output"].clone();
    let rs = &output[0];
    assert_eq!(rs["type"], "reasoning");
    assert!(rs["summary"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("Let me think"));
    let upstream: Value = serde_json::from_slice(&sim.requests()[0].body).unwrap();
    assert_eq!(
        upstream["thinking"],
        json!({"type": "enabled", "budget_tokens": 1024})
    );

    // Sent back in `input`, the reasoning item becomes the signed thinking block again.
    let mut next =
        json!({"model": "claude-sonnet-4-5", "reasoning": {"effort": "low"}, "store": false});
    let mut input = vec![json!({"role": "user", "content": "sim_thinking please"})];
    input.extend(output.as_array().unwrap().iter().cloned());
    input.push(json!({"role": "user", "content": "and again"}));
    next["input"] = Value::Array(input);
    let r = post(&gw, CLIENT_KEY, &next).await;
    assert_eq!(r.status(), 200);
    let sent: Value = serde_json::from_slice(&sim.requests()[1].body).unwrap();
    let thinking = &sent["messages"][1]["content"][0];
    assert_eq!(thinking["type"], "thinking");
    assert!(
        thinking["signature"].as_str().unwrap().starts_with("EqQB"),
        "{thinking}"
    );
}

#[tokio::test]
async fn stream_failing_midway_ends_with_response_failed() {
    let sim = Simulator::start().await.unwrap();
    let gw = gateway(&sim).await;
    sim.push_fault(Fault::once(FaultKind::StreamError { after_events: 5 }));
    let ev = events(post(&gw, CLIENT_KEY, &stream_body("hi")).await).await;
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{ev:?}");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(
        last["response"]["error"]["code"], "server_is_overloaded",
        "{last}"
    );
    assert!(!types(&ev).contains(&"response.completed"));

    sim.push_fault(Fault::once(FaultKind::CutStream { after_events: 5 }));
    let ev = events(post(&gw, CLIENT_KEY, &stream_body("hi")).await).await;
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{ev:?}");
    assert_eq!(last["response"]["error"]["code"], "server_error");
}

#[tokio::test]
async fn max_tokens_is_an_incomplete_response() {
    let sim = Simulator::start().await.unwrap();
    let gw = gateway(&sim).await;
    let ev = events(post(&gw, CLIENT_KEY, &stream_body("sim_max_tokens")).await).await;
    let last = ev.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["status"], "incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );

    let r: Value = post(
        &gw,
        CLIENT_KEY,
        &json!({"model": "claude-sonnet-4-5", "input": "sim_max_tokens", "max_output_tokens": 50}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
    let upstream: Value = serde_json::from_slice(&sim.requests()[1].body).unwrap();
    assert_eq!(upstream["max_tokens"], 50);
}

// === Errors, previous_response_id ===

#[tokio::test]
async fn errors_are_openai_shaped_with_status_and_retry_after() {
    let sim = Simulator::start().await.unwrap();
    let gw = gateway(&sim).await;
    sim.push_fault(Fault::once(FaultKind::RateLimited {
        retry_after: Some("7".into()),
        retry_after_ms: None,
        headers: vec![],
    }));
    let r = post(&gw, CLIENT_KEY, &stream_body("hi")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");

    let r = post(
        &gw,
        CLIENT_KEY,
        &json!({"model": "m", "input": "x", "background": true}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "background", "{v}");
    let r = post(&gw, "sk-wrong", &stream_body("hi")).await;
    assert_eq!(r.status(), 401);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
}

#[tokio::test]
async fn previous_response_id_continues_a_stored_conversation_for_its_key_only() {
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("key-0", &key)]).await;
    let gw = Gateway::start_in(
        dir,
        &sim.base_url(),
        &sim.token_url(),
        "client_keys = [\"sk-gw-test-client\", \"sk-other\"]\n",
    );
    let first: Value = post(
        &gw,
        CLIENT_KEY,
        &json!({"model": "claude-sonnet-4-5", "input": "remember apples"}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = first["id"].as_str().unwrap();
    // Streamed and stored too.
    let ev = events(post(&gw, CLIENT_KEY, &json!({"model": "claude-sonnet-4-5", "input": "and pears", "previous_response_id": id, "stream": true})).await).await;
    let second = ev.last().unwrap()["response"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sent: Value = serde_json::from_slice(&sim.requests()[1].body).unwrap();
    let msgs = sent["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{sent}");
    assert_eq!(msgs[0]["content"][0]["text"], "remember apples");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[2]["content"][0]["text"], "and pears");

    let r = post(&gw, CLIENT_KEY, &json!({"model": "claude-sonnet-4-5", "input": "and plums", "previous_response_id": second})).await;
    assert_eq!(r.status(), 200);
    let sent: Value = serde_json::from_slice(&sim.requests()[2].body).unwrap();
    assert_eq!(sent["messages"].as_array().unwrap().len(), 5);

    for (key, body) in [
        (
            "sk-other",
            json!({"model": "m", "input": "x", "previous_response_id": id}),
        ),
        (
            CLIENT_KEY,
            json!({"model": "m", "input": "x", "previous_response_id": "resp_unknown"}),
        ),
    ] {
        let r = post(&gw, key, &body).await;
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["param"], "previous_response_id", "{v}");
    }
    let unstored: Value = post(
        &gw,
        CLIENT_KEY,
        &json!({"model": "claude-sonnet-4-5", "input": "x", "store": false}),
    )
    .await
    .json()
    .await
    .unwrap();
    let r = post(
        &gw,
        CLIENT_KEY,
        &json!({"model": "m", "input": "x", "previous_response_id": unstored["id"]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        sim.requests().len(),
        4,
        "refused continuations never reach upstream"
    );
}

// === The official openai Python SDK ===

#[tokio::test]
async fn openai_python_sdk_responses_create() {
    let python = common::python::venv("openai-venv", &[("openai", OPENAI_SDK_VERSION)]).await;
    let sim = Simulator::start().await.unwrap();
    let gw = gateway(&sim).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_responses_e2e.py");
    let out = run(
        tokio::process::Command::new(&python)
            .arg(&script)
            .args([gw.url("/v1").as_str(), CLIENT_KEY]),
        "openai SDK responses script",
    )
    .await;
    for step in [
        "ok create",
        "ok stream",
        "ok tools",
        "ok continue",
        "ok error",
    ] {
        assert!(out.lines().any(|l| l == step), "{step} missing:\n{out}");
    }
}

// === The store behind previous_response_id ===

/// What one stored-responses test row looks like: response `i`, created `created` seconds after `t0`, expiring `ttl`
/// seconds later.
fn stored_row(
    t0: chrono::DateTime<chrono::Utc>,
    i: u32,
    created: i64,
    ttl: i64,
) -> claude_gateway::store::StoredResponse {
    let at = t0 + chrono::Duration::seconds(created);
    claude_gateway::store::StoredResponse {
        id: format!("resp_{i}"),
        owner: "owner-hash".into(),
        body: format!("[{i}]"),
        created_at: at,
        expires_at: at + chrono::Duration::seconds(ttl),
    }
}

async fn found(
    store: &dyn claude_gateway::store::Store,
    i: u32,
    owner: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    store
        .get_response(format!("resp_{i}"), owner.to_string(), now)
        .await
        .unwrap()
}

/// Keeping responses through `a` and `b` (two replicas of one store, or the same store twice): each finds the other's,
/// only for their owner; a kept response drops the expired ones and all but the newest `keep`.
async fn keeps_the_newest_and_drops_the_expired(
    a: &dyn claude_gateway::store::Store,
    b: &dyn claude_gateway::store::Store,
) {
    const DAY: i64 = 86_400;
    let t0 = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    a.put_responses(vec![stored_row(t0, 0, 0, 10)], 10)
        .await
        .unwrap();
    b.put_responses(vec![stored_row(t0, 1, 1, DAY)], 10)
        .await
        .unwrap();
    a.put_responses(vec![stored_row(t0, 2, 2, DAY)], 10)
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(
            found(b, i, "owner-hash", at(5)).await,
            Some(format!("[{i}]"))
        );
        assert_eq!(
            found(a, i, "owner-hash", at(5)).await,
            Some(format!("[{i}]"))
        );
    }
    assert_eq!(found(a, 1, "another-owner", at(5)).await, None);
    assert_eq!(found(a, 0, "owner-hash", at(11)).await, None, "expired");
    // Keeping one at t0 + 20 s deletes response 0 (expired at t0 + 10 s): not found even when asked as of t0 + 5 s.
    b.put_responses(vec![stored_row(t0, 3, 20, DAY)], 10)
        .await
        .unwrap();
    assert_eq!(found(a, 0, "owner-hash", at(5)).await, None, "pruned");
    assert!(found(a, 1, "owner-hash", at(21)).await.is_some());
    // Keeping at most 3: each new one pushes out the oldest, whichever replica kept it.
    a.put_responses(vec![stored_row(t0, 4, 21, DAY)], 3)
        .await
        .unwrap();
    assert_eq!(found(b, 1, "owner-hash", at(22)).await, None);
    assert!(found(b, 2, "owner-hash", at(22)).await.is_some());
    b.put_responses(vec![stored_row(t0, 5, 22, DAY)], 3)
        .await
        .unwrap();
    for (i, kept) in [(2, false), (3, true), (4, true), (5, true)] {
        assert_eq!(
            found(a, i, "owner-hash", at(23)).await.is_some(),
            kept,
            "response {i}"
        );
    }
    // One batch (a group commit of several savers): rows in order, a later one with an id replacing an earlier one,
    // and the newest `keep` of all kept.
    let mut rewritten = stored_row(t0, 6, 24, DAY);
    rewritten.body = "[6, rewritten]".into();
    let batch = vec![
        stored_row(t0, 6, 24, DAY),
        stored_row(t0, 7, 24, DAY),
        rewritten,
        stored_row(t0, 8, 24, DAY),
    ];
    b.put_responses(batch, 3).await.unwrap();
    assert_eq!(
        found(a, 6, "owner-hash", at(25)).await.as_deref(),
        Some("[6, rewritten]")
    );
    for (i, kept) in [(5, false), (7, true), (8, true)] {
        assert_eq!(
            found(a, i, "owner-hash", at(25)).await.is_some(),
            kept,
            "response {i} after the batch"
        );
    }
    // A batch out of time order is pruned by its newest row: response 9 (expired at t0 + 35 s) goes with response 10
    // (kept at t0 + 40 s), though it comes after it.
    let batch = vec![stored_row(t0, 10, 40, DAY), stored_row(t0, 9, 30, 5)];
    a.put_responses(batch, 10).await.unwrap();
    assert!(found(b, 10, "owner-hash", at(41)).await.is_some());
    assert_eq!(
        found(b, 9, "owner-hash", at(31)).await,
        None,
        "expired before the batch's newest row"
    );
    a.put_responses(Vec::new(), 3).await.unwrap();
}

#[tokio::test]
async fn stored_responses_keep_the_newest_and_drop_the_expired_in_every_store_and_across_replicas()
{
    let memory = claude_gateway::store::memory::MemoryStore::default();
    keeps_the_newest_and_drops_the_expired(&memory, &memory).await;
    let dir = TempDir::new();
    let sqlite = claude_gateway::store::sqlite::SqliteStore::open(&dir.0.join("data"))
        .await
        .unwrap();
    keeps_the_newest_and_drops_the_expired(&sqlite, &sqlite).await;
    let pg = common::postgres::Postgres::start();
    let url = pg.database("responses_bound");
    let one = claude_gateway::store::postgres::PostgresStore::connect(&url)
        .await
        .unwrap();
    let two = claude_gateway::store::postgres::PostgresStore::connect(&url)
        .await
        .unwrap();
    keeps_the_newest_and_drops_the_expired(&one, &two).await;
}
