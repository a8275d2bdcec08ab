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
