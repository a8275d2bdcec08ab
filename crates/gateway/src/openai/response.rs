//! An Anthropic Messages response → an OpenAI `chat.completion`, and the mappings streams share (ids, stop reasons,
//! usage).

use serde_json::{json, Value};

/// What a completion is labelled with besides the upstream message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// The model the client asked for (used when the upstream message names none).
    pub model: String,
    /// Unix seconds.
    pub created: i64,
    pub include_usage: bool,
}

/// `chatcmpl-` + the message id without its `msg_` prefix, so a completion can be traced to the upstream message.
pub fn completion_id(message_id: Option<&str>) -> String {
    let id = message_id.unwrap_or("unknown");
    format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id))
}

pub fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything new: the model stopped on its own.
        _ => "stop",
    }
}

/// Token counts as Anthropic reports them (`input_tokens` excludes cached tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

impl Usage {
    /// Updates from an Anthropic `usage` object; absent fields keep their values (`message_delta` carries only some).
    pub fn update(&mut self, usage: Option<&Value>) {
        let Some(u) = usage else { return };
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(v) = n("input_tokens") {
            self.input = v;
        }
        if let Some(v) = n("output_tokens") {
            self.output = v;
        }
        if let Some(v) = n("cache_read_input_tokens") {
            self.cache_read = v;
        }
        if let Some(v) = n("cache_creation_input_tokens") {
            self.cache_creation = v;
        }
    }

    /// OpenAI usage: the prompt counts every input token, cached or not.
    pub fn openai(&self) -> Value {
        // Upstream numbers: saturating, never an overflow.
        let prompt = self
            .input
            .saturating_add(self.cache_creation)
            .saturating_add(self.cache_read);
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt.saturating_add(self.output),
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }
}

/// Translates a non-stream Messages response.
pub fn completion(message: &Value, labels: &Labels) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = Vec::new();
    for block in message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("thinking") => reasoning.push_str(block["thinking"].as_str().unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": {
                    "name": block["name"],
                    "arguments": block.get("input").unwrap_or(&json!({})).to_string(),
                },
            })),
            // redacted thinking, server tool blocks: nothing an OpenAI client can use.
            _ => {}
        }
    }
    let mut msg = json!({"role": "assistant"});
    // OpenAI sends `content: null` for a pure tool call.
    msg["content"] = if text.is_empty() && !tool_calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    if !reasoning.is_empty() {
        msg["reasoning_content"] = json!(reasoning);
    }
    if !tool_calls.is_empty() {
        msg["tool_calls"] = Value::Array(tool_calls);
    }
    msg["refusal"] = Value::Null;
    let mut usage = Usage::default();
    usage.update(message.get("usage"));
    json!({
        "id": completion_id(message.get("id").and_then(Value::as_str)),
        "object": "chat.completion",
        "created": labels.created,
        "model": message.get("model").and_then(Value::as_str).unwrap_or(&labels.model),
        "choices": [{
            "index": 0,
            "message": msg,
            "logprobs": null,
            "finish_reason": finish_reason(message.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage.openai(),
    })
}
