//! Snapshot tests of both directions: Responses requests → Messages bodies (a real Codex CLI request included),
//! refusals, Messages answers → response objects, and SSE transcripts → Responses events.

use serde_json::{json, Value};

use super::output::{decode_thinking, encode_thinking, from_message};
use super::request::{parse, translate};
use super::stream::{translate_all, Translator};

fn body(v: &Value) -> Value {
    translate(&parse(v.to_string().as_bytes()).unwrap(), Vec::new())
        .unwrap()
        .body
}

fn refusal(v: Value) -> Value {
    translate(&parse(v.to_string().as_bytes()).unwrap(), Vec::new())
        .unwrap_err()
        .openai_body()
}

#[test]
fn request_from_codex_cli() {
    let raw = include_str!("testdata/codex_request.json");
    let t = translate(&parse(raw.as_bytes()).unwrap(), Vec::new()).unwrap();
    let mut b = t.body;
    // The tool schemas and Codex's long prompts are Codex's own; the snapshot keeps their names and sizes.
    let names: Vec<Value> = b["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    b["tools"] = json!(names);
    for block in b["system"].as_array_mut().unwrap() {
        block["text"] = json!(format!("<{} chars>", block["text"].as_str().unwrap().len()));
    }
    for m in b["messages"].as_array_mut().unwrap() {
        for block in m["content"].as_array_mut().unwrap() {
            let text = block["text"].as_str().unwrap_or_default();
            if text.len() > 80 {
                block["text"] = json!(format!("<{} chars>", text.len()));
            }
        }
    }
    insta::assert_json_snapshot!(b);
    assert_eq!(
        t.prompt_cache_key.as_deref(),
        Some("01a2314d-bbc9-7c73-b912-922b015e9ad6")
    );
    assert!(!t.store);
}

#[test]
fn request_mapping() {
    let thinking = json!({"type": "thinking", "thinking": "hmm", "signature": "sig"});
    insta::assert_json_snapshot!(body(&json!({
        "model": "claude-sonnet-4-5",
        "instructions": "You are terse.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Prefer rg."}]},
            {"role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBOR"},
                {"type": "input_image", "image_url": "https://example.com/a.png"},
                {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"},
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": encode_thinking(&thinking)},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running it."}]},
            {"type": "function_call", "call_id": "call_A", "name": "exec_command", "arguments": "{\"cmd\":\"ls\"}"},
            {"type": "function_call", "call_id": "call_B", "namespace": "mcp", "name": "search", "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": "call_C", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"type": "function_call_output", "call_id": "call_A", "output": "a.txt"},
            {"type": "function_call_output", "call_id": "call_B", "output": [{"type": "input_text", "text": "found"}]},
            {"type": "custom_tool_call_output", "call_id": "call_C", "output": "Done"},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [
            {"type": "function", "name": "exec_command", "description": "Run", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}},
            {"type": "namespace", "name": "mcp", "description": "MCP", "tools": [{"type": "function", "name": "search", "parameters": {"type": "object"}}]},
            {"type": "custom", "name": "apply_patch", "description": "Patch", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
            {"type": "web_search", "external_web_access": false},
            {"type": "web_search"},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "max_output_tokens": 20000,
        "stop": ["END"],
        "user": "u-1",
        "store": false,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "conv-1",
        "metadata": {"a": "b"},
        "stream": true,
    })));
}

#[test]
fn request_refusals() {
    let base = || json!({"model": "claude-sonnet-4-5", "input": "hi"});
    let with = |k: &str, v: Value| {
        let mut b = base();
        b[k] = v;
        b
    };
    insta::assert_json_snapshot!(vec![
        refusal(json!({"input": "hi"})),
        refusal(json!({"model": "m"})),
        refusal(with("background", json!(true))),
        refusal(with("conversation", json!("conv_1"))),
        refusal(with("max_tool_calls", json!(3))),
        refusal(with(
            "text",
            json!({"format": {"type": "json_schema", "name": "x", "schema": {}}})
        )),
        refusal(with("text", json!({"verbosity": "low"}))),
        refusal(with("top_logprobs", json!(2))),
        refusal(with(
            "tools",
            json!([{"type": "file_search", "vector_store_ids": []}])
        )),
        refusal(with(
            "tool_choice",
            json!({"type": "function", "name": "nope"})
        )),
        refusal(with("reasoning", json!({"effort": "extreme"}))),
        refusal(with(
            "input",
            json!([{"type": "item_reference", "id": "msg_1"}])
        )),
        refusal(with(
            "input",
            json!([{"type": "reasoning", "summary": [], "encrypted_content": "gAAAAB-openai"}])
        )),
        refusal(with(
            "input",
            json!([{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}])
        )),
        refusal(with("temperature", json!(1.5))),
        refusal(with("unknown_knob", json!(1))),
        refusal({
            let mut b = with("reasoning", json!({"effort": "high"}));
            b["temperature"] = json!(0.2);
            b
        }),
    ]);
}

#[test]
fn thinking_is_dropped_when_the_tool_turn_lost_its_reasoning_item() {
    let b = body(&json!({
        "model": "m",
        "reasoning": {"effort": "low"},
        "input": [
            {"role": "user", "content": "go"},
            {"type": "reasoning", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ],
    }));
    assert!(b.get("thinking").is_none(), "{b}");
}

#[test]
fn encrypted_content_round_trips_only_our_blocks() {
    let block = json!({"type": "thinking", "thinking": "t", "signature": "s"});
    assert_eq!(decode_thinking(&encode_thinking(&block)), Some(block));
    let redacted = json!({"type": "redacted_thinking", "data": "d"});
    assert_eq!(decode_thinking(&encode_thinking(&redacted)), Some(redacted));
    assert_eq!(
        decode_thinking(&encode_thinking(&json!({"type": "text", "text": "x"}))),
        None
    );
    assert_eq!(decode_thinking("gAAAAABopaque"), None);
}

fn translated_names() -> super::request::Translated {
    let req = json!({
        "model": "claude-sonnet-4-5",
        "input": "x",
        "tools": [
            {"type": "function", "name": "exec_command"},
            {"type": "namespace", "name": "mcp", "tools": [{"type": "function", "name": "search"}]},
            {"type": "custom", "name": "apply_patch"},
        ],
    });
    translate(&parse(req.to_string().as_bytes()).unwrap(), Vec::new()).unwrap()
}

#[test]
fn response_object() {
    let t = translated_names();
    let message = json!({
        "id": "msg_01abc", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Plan.", "signature": "sig"},
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "exec_command", "input": {"cmd": "ls"}},
            {"type": "tool_use", "id": "toolu_2", "name": "mcp__search", "input": {}},
            {"type": "tool_use", "id": "toolu_3", "name": "apply_patch", "input": {"input": "*** Begin Patch"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 5, "output_tokens": 20},
    });
    let mut incomplete = message.clone();
    incomplete["content"] = json!([{"type": "text", "text": "Cut"}]);
    incomplete["stop_reason"] = json!("max_tokens");
    let mut both = vec![from_message(
        &message,
        &t.echo,
        &t.names,
        1_700_000_000,
        "m",
    )];
    both.push(from_message(
        &incomplete,
        &t.echo,
        &t.names,
        1_700_000_000,
        "m",
    ));
    for r in &mut both {
        r["tools"] = json!("<echoed>");
    }
    insta::assert_json_snapshot!(both);
}

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

fn transcript(events: &[Value]) -> Vec<Value> {
    let t = translated_names();
    let mut echo = t.echo;
    echo.insert("tools".into(), json!("<echoed>"));
    let out = translate_all(
        Translator::new(echo, t.names, 1_700_000_000, "m".into()),
        sse(events).as_bytes(),
    );
    out.split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            serde_json::from_str(f.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap()
        })
        .collect()
}

fn start() -> Value {
    json!({"type": "message_start", "message": {"id": "msg_01abc", "model": "claude-sonnet-4-5", "content": [], "usage": {"input_tokens": 12, "output_tokens": 1}}})
}

#[test]
fn stream_events() {
    insta::assert_json_snapshot!(transcript(&[
        start(),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Plan"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hel"}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "lo"}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "mcp__search", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"q\":"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"x\"}"}}),
        json!({"type": "content_block_stop", "index": 2}),
        json!({"type": "content_block_start", "index": 3, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "apply_patch", "input": {}}}),
        json!({"type": "content_block_delta", "index": 3, "delta": {"type": "input_json_delta", "partial_json": "{\"input\":\"P\"}"}}),
        json!({"type": "content_block_stop", "index": 3}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 30}}),
        json!({"type": "message_stop"}),
    ]));
}

#[test]
fn stream_failures() {
    let text_start = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
    let failed = |events: &[Value]| {
        let out = transcript(events);
        let last = out.last().unwrap().clone();
        assert_eq!(last["type"], "response.failed");
        last["response"]["error"].clone()
    };
    insta::assert_json_snapshot!(vec![
        failed(&[
            start(),
            text_start.clone(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        ]),
        failed(&[
            start(),
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        ]),
        failed(&[
            start(),
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 200001 tokens"}})
        ]),
        failed(&[start(), text_start]),
    ]);
}

#[test]
fn an_unreadable_upstream_event_fails_the_response_naming_why() {
    let t = translated_names();
    let out = translate_all(
        Translator::new(t.echo, t.names, 1_700_000_000, "m".into()),
        b"event: error\ndata: not json\n\n",
    );
    assert!(
        out.contains("response.failed") && out.contains("upstream stream failed"),
        "{out}"
    );
    let t = translated_names();
    let huge = format!(
        "event: content_block_delta\ndata: {}\n\n",
        "x".repeat(crate::sse::DEFAULT_MAX_LINE + 1)
    );
    let out = translate_all(
        Translator::new(t.echo, t.names, 1_700_000_000, "m".into()),
        huge.as_bytes(),
    );
    assert!(
        out.contains("response.failed")
            && out.contains("upstream sent an event too large to relay"),
        "{out}"
    );
}
