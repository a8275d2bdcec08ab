//! Anthropic content blocks → Responses output items, and the `response` object around them.
//!
//! One block is one item: `text` → a `message` with one `output_text` part; `thinking` / `redacted_thinking` → a
//! `reasoning` item (the thinking text as its summary) whose `encrypted_content` carries the whole signed block, so a
//! client that sends the item back gives Claude its thinking block again; `tool_use` → a `function_call` (with
//! `namespace` for flattened namespace tools) or a `custom_tool_call`; `server_tool_use` → a `web_search_call`. The
//! streaming translation builds its finished items with the same functions, so both shapes agree.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::tools::{CallKind, ToolNames};
use crate::openai::response::Usage;

/// Marks `encrypted_content` this gateway wrote (a versioned, base64url-encoded Anthropic thinking block).
const THINKING_PREFIX: &str = "claude-gateway.thinking.v1.";

pub fn encode_thinking(block: &Value) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(block.to_string());
    format!("{THINKING_PREFIX}{b64}")
}

/// The thinking block inside `encrypted_content`, if this gateway wrote it.
pub fn decode_thinking(enc: &str) -> Option<Value> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(enc.strip_prefix(THINKING_PREFIX)?)
        .ok()?;
    let block: Value = serde_json::from_slice(&raw).ok()?;
    let ok = match block.get("type").and_then(Value::as_str) {
        Some("thinking") => block["thinking"].is_string() && block["signature"].is_string(),
        Some("redacted_thinking") => block["data"].is_string(),
        _ => false,
    };
    ok.then_some(block)
}

/// `resp_` + the upstream message id without `msg_`, so a response can be traced to the upstream message.
pub fn response_id(message_id: Option<&str>) -> String {
    let id = message_id.unwrap_or("unknown");
    format!("resp_{}", id.strip_prefix("msg_").unwrap_or(id))
}

/// The id of output item `index` of response `response_id`, prefixed for its kind (`msg`, `rs`, `fc`, `ctc`, `ws`).
pub fn item_id(prefix: &str, response_id: &str, index: usize) -> String {
    let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("{prefix}_{base}_{index}")
}

/// The item prefix for a block type (`None`: the block is no output item).
pub fn item_prefix(
    block_type: &str,
    name: Option<&str>,
    names: &ToolNames,
) -> Option<&'static str> {
    match block_type {
        "text" => Some("msg"),
        "thinking" | "redacted_thinking" => Some("rs"),
        "tool_use" => match names.kind(name.unwrap_or_default()) {
            CallKind::Custom { .. } => Some("ctc"),
            CallKind::Function { .. } => Some("fc"),
        },
        "server_tool_use" => Some("ws"),
        _ => None,
    }
}

/// The finished output item for a whole Anthropic block; `None` for blocks that are no item (tool results of server
/// tools, unknown kinds).
pub fn item(block: &Value, id: &str, names: &ToolNames) -> Option<Value> {
    let s = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or_default();
    match s("type") {
        "text" => Some(json!({
            "id": id, "type": "message", "status": "completed", "role": "assistant",
            "content": [output_text(s("text"))],
        })),
        "thinking" => Some(json!({
            "id": id, "type": "reasoning",
            "summary": if s("thinking").is_empty() { json!([]) } else { json!([{"type": "summary_text", "text": s("thinking")}]) },
            "encrypted_content": encode_thinking(block),
        })),
        "redacted_thinking" => Some(json!({
            "id": id, "type": "reasoning", "summary": [], "encrypted_content": encode_thinking(block),
        })),
        "tool_use" => {
            let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
            Some(match names.kind(s("name")) {
                CallKind::Custom { name } => json!({
                    "id": id, "type": "custom_tool_call", "status": "completed", "call_id": s("id"), "name": name,
                    "input": input.get("input").and_then(Value::as_str).unwrap_or_default(),
                }),
                CallKind::Function { name, namespace } => {
                    let mut v = json!({
                        "id": id, "type": "function_call", "status": "completed", "call_id": s("id"), "name": name,
                        "arguments": input.to_string(),
                    });
                    if let Some(ns) = namespace {
                        v["namespace"] = json!(ns);
                    }
                    v
                }
            })
        }
        "server_tool_use" => Some(json!({
            "id": id, "type": "web_search_call", "status": "completed",
            "action": {"type": "search", "query": block.pointer("/input/query").cloned().unwrap_or(Value::Null)},
        })),
        _ => None,
    }
}

pub fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// The items for a message's content blocks, numbered in order.
pub fn items(content: &[Value], response_id: &str, names: &ToolNames) -> Vec<Value> {
    let mut out = Vec::new();
    for block in content {
        let kind = block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = block.get("name").and_then(Value::as_str);
        let Some(prefix) = item_prefix(kind, name, names) else {
            continue;
        };
        let id = item_id(prefix, response_id, out.len());
        out.extend(item(block, &id, names));
    }
    out
}

/// Responses usage: input counts every input token, cached or not; Claude does not report thinking tokens apart from
/// the answer's, so `reasoning_tokens` is 0.
pub fn usage(u: &Usage) -> Value {
    let input = u.input + u.cache_creation + u.cache_read;
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": u.cache_read},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + u.output,
    })
}

/// `status` and `incomplete_details` for a stop reason.
pub fn status(stop_reason: Option<&str>) -> (&'static str, Value) {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => {
            ("incomplete", json!({"reason": "max_output_tokens"}))
        }
        Some("refusal") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// What a response object is made of besides its echoed parameters.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub created_at: i64,
    pub status: &'a str,
    pub incomplete_details: &'a Value,
    pub error: &'a Value,
}

/// The `response` object.
pub fn response(
    echo: &Map<String, Value>,
    o: Outcome<'_>,
    output: Vec<Value>,
    usage: Value,
) -> Value {
    let mut r = Map::new();
    r.insert("id".into(), json!(o.id));
    r.insert("object".into(), json!("response"));
    r.insert("created_at".into(), json!(o.created_at));
    r.insert("status".into(), json!(o.status));
    r.insert("background".into(), json!(false));
    r.insert("error".into(), o.error.clone());
    r.insert("incomplete_details".into(), o.incomplete_details.clone());
    r.insert("model".into(), json!(o.model));
    r.insert("output".into(), Value::Array(output));
    r.insert("usage".into(), usage);
    for (k, v) in echo {
        r.insert(k.clone(), v.clone());
    }
    Value::Object(r)
}

/// Translates a non-stream Messages response.
pub fn from_message(
    message: &Value,
    echo: &Map<String, Value>,
    names: &ToolNames,
    created_at: i64,
    model: &str,
) -> Value {
    let id = response_id(message.get("id").and_then(Value::as_str));
    let content = message
        .get("content")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut u = Usage::default();
    u.update(message.get("usage"));
    let (status, incomplete) = status(message.get("stop_reason").and_then(Value::as_str));
    let outcome = Outcome {
        id: &id,
        model: message
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(model),
        created_at,
        status,
        incomplete_details: &incomplete,
        error: &Value::Null,
    };
    response(echo, outcome, items(content, &id, names), usage(&u))
}
