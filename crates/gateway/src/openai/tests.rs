//! Snapshot tests of the translation both ways (the `.snap` files under `snapshots/` are the reviewed expectations),
//! plus properties: bad input never panics.

use axum::http::StatusCode;
use insta::assert_json_snapshot;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::error::{from_anthropic_body, BadRequest};
use super::request::{translate, Translated};
use super::response::{completion, Labels};
use super::stream::translate_all;
use crate::error::GatewayError;

fn req(v: Value) -> Translated {
    translate(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{v} refused: {e:?}"))
}

fn refused(v: Value) -> BadRequest {
    match translate(v.to_string().as_bytes()) {
        Ok(t) => panic!("{v} was accepted as {}", t.body),
        Err(e) => e,
    }
}

fn labels(include_usage: bool) -> Labels {
    Labels {
        model: "claude-sonnet-4-5".into(),
        created: 1_700_000_000,
        include_usage,
    }
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

#[test]
fn request_text_roles_and_parameters() {
    let t = req(json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "Are you there?"}, {"type": "text", "text": ""}]},
            {"role": "assistant", "content": "Yes."},
            {"role": "assistant", "content": [{"type": "text", "text": "How can I help?"}]},
            {"role": "user", "content": "Say hi", "name": "bob"},
        ],
        "max_completion_tokens": 300,
        "max_tokens": 999,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "END",
        "user": "user-42",
        "stream": true,
        "stream_options": {"include_usage": true},
        "n": 1,
        "logprobs": false,
        "presence_penalty": 0,
        "seed": 7,
        "store": false,
        "response_format": {"type": "text"},
        "modalities": ["text"],
        "frequency_penalty": null,
    }));
    assert!(t.stream && t.include_usage);
    assert_json_snapshot!("request_text", t.body);
}

#[test]
fn request_defaults() {
    let t = req(
        json!({"model": "m", "messages": [user("hi")], "stop": ["a", "b"], "stream_options": {"include_usage": true}}),
    );
    assert!(
        !t.stream && !t.include_usage,
        "usage chunks only for streams"
    );
    assert_eq!(t.body["max_tokens"], super::request::DEFAULT_MAX_TOKENS);
    assert_json_snapshot!("request_defaults", t.body);
}

#[test]
fn request_images_and_files() {
    let t = req(json!({
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
        ]}],
    }));
    assert_json_snapshot!("request_images", t.body);
}

#[test]
fn request_tools_and_tool_results() {
    let t = req(json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            user("Weather in Paris and Rome?"),
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            user("And in Oslo?"),
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": true}},
            {"type": "function", "function": {"name": "no_args"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
    }));
    assert_json_snapshot!("request_tools", t.body);
}

#[test]
fn tool_choice_values() {
    let tools = json!([{"type": "function", "function": {"name": "f"}}]);
    let choice = |c: Value, parallel: Value| {
        req(json!({"model": "m", "messages": [user("x")], "tools": tools, "tool_choice": c, "parallel_tool_calls": parallel}))
            .body
            .get("tool_choice")
            .cloned()
    };
    assert_eq!(
        choice(json!("auto"), Value::Null),
        Some(json!({"type": "auto"}))
    );
    assert_eq!(
        choice(json!("none"), json!(false)),
        Some(json!({"type": "none"}))
    );
    assert_eq!(
        choice(json!("required"), json!(false)),
        Some(json!({"type": "any", "disable_parallel_tool_use": true}))
    );
    assert_eq!(choice(Value::Null, json!(true)), None);
    assert_eq!(
        choice(Value::Null, json!(false)),
        Some(json!({"type": "auto", "disable_parallel_tool_use": true}))
    );
    // Without tools, "auto"/"none" are dropped (Anthropic refuses a tool_choice without tools).
    let t = req(
        json!({"model": "m", "messages": [user("x")], "tool_choice": "none", "parallel_tool_calls": false}),
    );
    assert!(t.body.get("tool_choice").is_none() && t.body.get("tools").is_none());
}

#[test]
fn tool_results_go_before_text_in_a_user_message() {
    let t = req(json!({"model": "m", "messages": [
        user("q"),
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        user("note first"),
        {"role": "tool", "tool_call_id": "c1", "content": ""},
    ]}));
    let last = &t.body["messages"][2];
    assert_eq!(last["role"], "user");
    assert_eq!(
        last["content"][0],
        json!({"type": "tool_result", "tool_use_id": "c1"})
    );
    assert_eq!(last["content"][1]["text"], "note first");
    assert_eq!(t.body["messages"][1]["content"][0]["input"], json!({}));
}

#[test]
fn request_thinking_budgets() {
    let base = |extra: Value| {
        let mut v = json!({"model": "claude-sonnet-4-5", "messages": [user("Think hard")]});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        req(v).body
    };
    let cases = json!({
        "low_default_max": base(json!({"reasoning_effort": "low"})),
        "medium_default_max": base(json!({"reasoning_effort": "medium"})),
        "high_capped_by_max_completion_tokens": base(json!({"reasoning_effort": "high", "max_completion_tokens": 2000})),
        "high_with_room": base(json!({"reasoning_effort": "high", "max_tokens": 32000, "temperature": 1, "top_p": 0.99})),
        "minimal_is_no_thinking": base(json!({"reasoning_effort": "minimal"})),
    });
    assert_json_snapshot!("request_thinking", cases);
    // In a tool loop the assistant's thinking block cannot be sent back, so that turn runs without thinking.
    let t = req(
        json!({"model": "m", "reasoning_effort": "high", "messages": [
            user("q"),
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
        ]}),
    );
    assert!(t.body.get("thinking").is_none());
    assert_eq!(t.body["max_tokens"], super::request::DEFAULT_MAX_TOKENS);
}

#[test]
fn request_refusals_name_the_parameter() {
    let m = || json!([{"role": "user", "content": "x"}]);
    let cases: Vec<(&str, Value)> = vec![
        ("n", json!({"model": "m", "messages": m(), "n": 2})),
        (
            "logprobs",
            json!({"model": "m", "messages": m(), "logprobs": true}),
        ),
        (
            "top_logprobs",
            json!({"model": "m", "messages": m(), "top_logprobs": 3}),
        ),
        (
            "response_format json_object",
            json!({"model": "m", "messages": m(), "response_format": {"type": "json_object"}}),
        ),
        (
            "response_format json_schema",
            json!({"model": "m", "messages": m(), "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}),
        ),
        (
            "modalities",
            json!({"model": "m", "messages": m(), "modalities": ["text", "audio"]}),
        ),
        (
            "audio",
            json!({"model": "m", "messages": m(), "audio": {"voice": "alloy", "format": "mp3"}}),
        ),
        (
            "presence_penalty",
            json!({"model": "m", "messages": m(), "presence_penalty": 0.5}),
        ),
        (
            "logit_bias",
            json!({"model": "m", "messages": m(), "logit_bias": {"50256": -100}}),
        ),
        (
            "functions",
            json!({"model": "m", "messages": m(), "functions": [{"name": "f"}]}),
        ),
        (
            "unknown parameter",
            json!({"model": "m", "messages": m(), "frobnicate": 1}),
        ),
        (
            "temperature above 1",
            json!({"model": "m", "messages": m(), "temperature": 1.5}),
        ),
        (
            "temperature with reasoning",
            json!({"model": "m", "messages": m(), "temperature": 0.2, "reasoning_effort": "low"}),
        ),
        (
            "forced tool with reasoning",
            json!({"model": "m", "messages": m(), "reasoning_effort": "low", "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}),
        ),
        (
            "max tokens under the smallest budget",
            json!({"model": "m", "messages": m(), "reasoning_effort": "low", "max_completion_tokens": 1000}),
        ),
        (
            "unknown reasoning_effort",
            json!({"model": "m", "messages": m(), "reasoning_effort": "extreme"}),
        ),
        ("missing model", json!({"messages": m()})),
        ("empty messages", json!({"model": "m", "messages": []})),
        (
            "only a system message",
            json!({"model": "m", "messages": [{"role": "system", "content": "s"}]}),
        ),
        (
            "unknown role",
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
        ),
        (
            "audio input",
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]}),
        ),
        (
            "bmp image",
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]}]}),
        ),
        (
            "ftp image",
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
        ),
        (
            "file id",
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}]}),
        ),
        (
            "bad tool arguments",
            json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{nope"}}]}]}),
        ),
        (
            "tool result without id",
            json!({"model": "m", "messages": [{"role": "tool", "content": "r"}]}),
        ),
        (
            "tool_choice without tools",
            json!({"model": "m", "messages": m(), "tool_choice": "required"}),
        ),
        (
            "tool_choice naming a missing tool",
            json!({"model": "m", "messages": m(), "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
        ),
        (
            "custom tool",
            json!({"model": "m", "messages": m(), "tools": [{"type": "custom", "custom": {"name": "f"}}]}),
        ),
        (
            "stream not a bool",
            json!({"model": "m", "messages": m(), "stream": "yes"}),
        ),
        ("not an object", json!([1, 2])),
    ];
    let mut out = serde_json::Map::new();
    for (name, body) in cases {
        let e = refused(body);
        assert_eq!(e.openai_body()["error"]["type"], "invalid_request_error");
        out.insert(name.into(), e.openai_body()["error"].clone());
    }
    assert_json_snapshot!("request_refusals", out);
    let e = translate(b"{not json").unwrap_err();
    assert!(e.message.contains("not valid JSON"), "{e:?}");
}

#[test]
fn response_text_with_cache_usage() {
    let msg = json!({
        "id": "msg_01ABC", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 1000},
    });
    assert_json_snapshot!("response_text", completion(&msg, &labels(false)));
}

#[test]
fn response_tools_and_thinking() {
    let msg = json!({
        "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 50, "output_tokens": 40},
    });
    assert_json_snapshot!("response_tools", completion(&msg, &labels(false)));
}

#[test]
fn stop_reasons_map_to_finish_reasons() {
    let reasons = json!({
        "end_turn": super::response::finish_reason(Some("end_turn")),
        "stop_sequence": super::response::finish_reason(Some("stop_sequence")),
        "max_tokens": super::response::finish_reason(Some("max_tokens")),
        "tool_use": super::response::finish_reason(Some("tool_use")),
        "refusal": super::response::finish_reason(Some("refusal")),
        "pause_turn": super::response::finish_reason(Some("pause_turn")),
        "null": super::response::finish_reason(None),
    });
    assert_json_snapshot!("finish_reasons", reasons);
}

/// Anthropic events as the API writes them.
fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

/// The translated stream as a list of frames: parsed JSON, or the literal `[DONE]`.
fn frames(out: &str) -> Value {
    let frames: Vec<Value> = out
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            let data = f
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("bad frame {f:?}"));
            serde_json::from_str(data).unwrap_or_else(|_| json!(data))
        })
        .collect();
    Value::Array(frames)
}

fn start(id: &str) -> Value {
    json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929", "content": [], "stop_reason": null, "usage": {"input_tokens": 12, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 20, "output_tokens": 1}}})
}

fn delta(index: u64, d: Value) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": d})
}

fn block_start(index: u64, b: Value) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": b})
}

fn block_stop(index: u64) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

fn message_end(reason: &str, output: u64) -> [Value; 2] {
    [
        json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": output}}),
        json!({"type": "message_stop"}),
    ]
}

#[test]
fn stream_text_with_usage() {
    let mut ev = vec![
        start("msg_s1"),
        json!({"type": "ping"}),
        block_start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "Hel"})),
        delta(0, json!({"type": "text_delta", "text": "lo"})),
        block_stop(0),
    ];
    ev.extend(message_end("end_turn", 7));
    assert_json_snapshot!(
        "stream_text",
        frames(&translate_all(labels(true), sse(&ev).as_bytes()))
    );
    // Without include_usage there is no usage chunk; [DONE] still ends the stream.
    let out = translate_all(labels(false), sse(&ev).as_bytes());
    assert!(!out.contains("\"usage\"") && out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn stream_thinking_and_parallel_tool_calls() {
    let mut ev = vec![
        start("msg_s2"),
        block_start(
            0,
            json!({"type": "thinking", "thinking": "", "signature": ""}),
        ),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "Two cities, "}),
        ),
        delta(
            0,
            json!({"type": "thinking_delta", "thinking": "two calls."}),
        ),
        delta(0, json!({"type": "signature_delta", "signature": "EqQB"})),
        block_stop(0),
        block_start(1, json!({"type": "text", "text": ""})),
        delta(1, json!({"type": "text_delta", "text": "Checking."})),
        block_stop(1),
        block_start(
            2,
            json!({"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {}}),
        ),
        delta(2, json!({"type": "input_json_delta", "partial_json": ""})),
        delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "{\"city\": "}),
        ),
        delta(
            2,
            json!({"type": "input_json_delta", "partial_json": "\"Paris\"}"}),
        ),
        block_stop(2),
        block_start(
            3,
            json!({"type": "tool_use", "id": "toolu_b", "name": "no_args", "input": {}}),
        ),
        block_stop(3),
    ];
    ev.extend(message_end("tool_use", 60));
    assert_json_snapshot!(
        "stream_tools",
        frames(&translate_all(labels(true), sse(&ev).as_bytes()))
    );
}

#[test]
fn stream_errors() {
    let mut cases = serde_json::Map::new();
    let head = vec![
        start("msg_s3"),
        block_start(0, json!({"type": "text", "text": ""})),
        delta(0, json!({"type": "text_delta", "text": "Par"})),
    ];
    let mut upstream_error = head.clone();
    upstream_error.push(
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    );
    upstream_error.push(delta(
        0,
        json!({"type": "text_delta", "text": "ignored after the error"}),
    ));
    cases.insert(
        "upstream_error".into(),
        frames(&translate_all(
            labels(true),
            sse(&upstream_error).as_bytes(),
        )),
    );
    cases.insert(
        "ended_early".into(),
        frames(&translate_all(labels(true), sse(&head).as_bytes())),
    );
    let error_first = [
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "every account is cooling down"}}),
    ];
    cases.insert(
        "error_before_start".into(),
        frames(&translate_all(labels(false), sse(&error_first).as_bytes())),
    );
    assert_json_snapshot!("stream_errors", cases);
}

#[test]
fn error_bodies() {
    let upstream = json!({
        "429": from_anthropic_body(StatusCode::TOO_MANY_REQUESTS, br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#),
        "401": from_anthropic_body(StatusCode::UNAUTHORIZED, br#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#),
        "404": from_anthropic_body(StatusCode::NOT_FOUND, br#"{"type":"error","error":{"type":"not_found_error","message":"model: gpt-4o"}}"#),
        "529": from_anthropic_body(StatusCode::from_u16(529).unwrap(), br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        "502 not json": from_anthropic_body(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>"),
    });
    let gateway = json!({
        "401": GatewayError::Unauthorized("invalid client key".into()).openai_body(),
        "400": GatewayError::InvalidRequest("messages: field required".into()).openai_body(),
        "404": GatewayError::NotFound("no route for GET /v1/nothing".into()).openai_body(),
        "413": GatewayError::BodyTooLarge { limit: 4096 }.openai_body(),
        "429": GatewayError::RateLimited { message: "every account is cooling down".into(), retry_after_secs: 5 }.openai_body(),
        "503": GatewayError::NoAccount("no account".into()).openai_body(),
        "502": GatewayError::UpstreamUnreachable("connection refused".into()).openai_body(),
        "504": GatewayError::UpstreamTimeout.openai_body(),
    });
    assert_json_snapshot!(
        "error_bodies",
        json!({"upstream": upstream, "gateway": gateway})
    );
}

#[test]
fn models_reshape() {
    let list = json!({"data": [
        {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"},
        {"type": "model", "id": "claude-x", "display_name": "X", "created_at": "not a date"},
    ], "has_more": false});
    let one =
        json!({"type": "model", "id": "claude-opus-4-1", "created_at": "2025-08-05T00:00:00Z"});
    assert_json_snapshot!(
        "models",
        json!({"list": super::models::reshape(&list), "one": super::models::reshape(&one)})
    );
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        prop::sample::select(vec![
            "user",
            "assistant",
            "system",
            "tool",
            "developer",
            "text",
            "image_url",
            "function",
            "auto",
            "required",
            "none",
            "high",
            "data:image/png;base64,AA",
            "https://x",
            "",
            "{}",
            "file",
        ])
        .prop_map(|s| json!(s)),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "role",
                        "content",
                        "type",
                        "text",
                        "image_url",
                        "url",
                        "tool_calls",
                        "id",
                        "function",
                        "name",
                        "arguments",
                        "tool_call_id",
                        "parameters",
                        "file",
                        "file_data",
                    ]),
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    /// Whatever the client sends, the translation answers (accepts or refuses) without panicking, and what it
    /// accepts is a Messages body the proxy's validation accepts too.
    #[test]
    fn arbitrary_requests_never_panic(
        messages in arb_json(),
        tools in arb_json(),
        tool_choice in arb_json(),
        effort in arb_json(),
        max in arb_json(),
    ) {
        let body = json!({
            "model": "m", "messages": messages, "tools": tools, "tool_choice": tool_choice,
            "reasoning_effort": effort, "max_completion_tokens": max,
        });
        if let Ok(t) = translate(body.to_string().as_bytes()) {
            let bytes = serde_json::to_vec(&t.body).unwrap();
            prop_assert!(crate::proxy::Forward::messages("/v1/messages".into(), Default::default(), bytes.into()).is_ok());
            let max_tokens = t.body["max_tokens"].as_u64().unwrap();
            if let Some(b) = t.body.pointer("/thinking/budget_tokens") {
                prop_assert!(b.as_u64().unwrap() < max_tokens);
            }
        }
    }

    /// Arbitrary event data never panics the stream translator, and after `[DONE]` or an error nothing follows.
    #[test]
    fn arbitrary_events_never_panic(events in prop::collection::vec((prop::sample::select(vec![
        "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
        "message_stop", "error", "ping",
    ]), arb_json()), 0..12)) {
        let text: String = events.iter().map(|(e, d)| format!("event: {e}\ndata: {d}\n\n")).collect();
        let out = translate_all(labels(true), text.as_bytes());
        let frames: Vec<&str> = out.split("\n\n").filter(|f| !f.is_empty()).collect();
        let last = frames.last().copied().unwrap_or_default();
        let is_error = |f: &str| f.starts_with(r#"data: {"error""#);
        prop_assert!(last == "data: [DONE]" || is_error(last), "{}", out);
        for f in &frames[..frames.len().saturating_sub(1)] {
            prop_assert!(*f != "data: [DONE]" && !is_error(f), "{}", out);
        }
    }
}

#[test]
fn an_unreadable_upstream_event_ends_the_chat_stream_with_an_error_naming_why() {
    let broken = translate_all(labels(false), b"event: error\ndata: not json\n\n");
    assert!(broken.contains("upstream stream failed"), "{broken}");
    assert!(!broken.contains("[DONE]"), "{broken}");
    let huge = format!(
        "event: content_block_delta\ndata: {}\n\n",
        "x".repeat(crate::sse::DEFAULT_MAX_LINE + 1)
    );
    let too_large = translate_all(labels(false), huge.as_bytes());
    assert!(
        too_large.contains("upstream sent an event too large to relay"),
        "{too_large}"
    );
    assert!(!too_large.contains("[DONE]"), "{too_large}");
    // Any other unreadable data is skipped: the stream goes on.
    let skipped = translate_all(labels(false), b"event: ping\ndata: not json\n\n");
    assert!(
        !skipped.contains("upstream sent") && !skipped.contains("[DONE]"),
        "{skipped}"
    );
}
