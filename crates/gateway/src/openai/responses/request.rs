//! A Responses API request body → an Anthropic Messages request body.
//!
//! Like the chat adapter: every parameter is mapped, accepted because ignoring it cannot change the answer, or refused
//! with a 400 naming it. The conversation may start from a stored one (`previous_response_id`), which the handler
//! loads before translating.

use serde_json::{json, Map, Value};

use super::tools::{self, ToolNames};
use crate::openai::error::BadRequest;
use crate::openai::messages::Conversation;
use crate::openai::request::{
    boolean, field, max_tokens_and_budget, model, positive_int, refuse_unlisted,
    refuse_with_thinking, MessagesBody, THINKING_BUDGETS,
};

/// `reasoning.effort` `xhigh` (Responses only), beyond the chat adapter's `high`.
pub const XHIGH_BUDGET: u64 = 32768;

/// Accepted and ignored: they cannot change the answer's content.
const IGNORED: &[&str] = &[
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "client_metadata",
    "stream_options",
    "truncation",
    "include",
    "store",
    "previous_response_id",
    "user",
    "safety_identifier",
];

const MAPPED: &[&str] = &[
    "model",
    "input",
    "instructions",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stop",
    "text",
    "top_logprobs",
    "background",
    "max_tool_calls",
];

/// What the handler needs besides the body.
#[derive(Debug, Default)]
pub struct Translated {
    pub body: Value,
    pub model: String,
    /// Keep the conversation for a later `previous_response_id` (OpenAI's default is `true`).
    pub store: bool,
    pub names: ToolNames,
    /// The Anthropic messages sent (the stored conversation, if any, included), to keep with the answer; empty for
    /// `store: false` (nothing will be kept, so they are not copied).
    pub messages: Vec<Value>,
    /// The request's parameters echoed in the response object.
    pub echo: Map<String, Value>,
    /// The client's conversation id for affinity.
    pub prompt_cache_key: Option<String>,
}

pub fn parse(body: &[u8]) -> Result<Map<String, Value>, BadRequest> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(req)) => Ok(req),
        Ok(_) => Err(BadRequest::body("request body must be a JSON object")),
        Err(e) => Err(BadRequest::body(format!(
            "request body is not valid JSON: {e}"
        ))),
    }
}

pub fn previous_response_id(req: &Map<String, Value>) -> Result<Option<&str>, BadRequest> {
    match field(req, "previous_response_id") {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(BadRequest::invalid(
            "previous_response_id",
            "must be a non-empty string",
        )),
    }
}

/// Translates `req`, continuing the stored conversation `prior` (empty when there is none).
pub fn translate(req: &Map<String, Value>, prior: Vec<Value>) -> Result<Translated, BadRequest> {
    refuse_unsupported(req)?;
    let model = model(req)?;
    let stream = boolean(req, "stream")?.unwrap_or(false);
    let store = boolean(req, "store")?.unwrap_or(true);
    let mut conv = Conversation {
        messages: prior,
        ..Conversation::default()
    };
    super::input::translate(req, &mut conv)?;
    let tools = tools::translate(req)?;
    let mut budget = thinking_budget(req)?;
    if budget.is_some() && last_assistant_lacks_thinking(&conv.messages) {
        // Claude requires the thinking block of an assistant turn that called tools to come back with the results;
        // without it (a client that dropped the reasoning item) this turn is answered without extended thinking.
        budget = None;
    }
    let requested = positive_int(req, "max_output_tokens")?.map(|n| ("max_output_tokens", n));
    let (max_tokens, budget) = max_tokens_and_budget(budget, requested, "reasoning.effort")?;
    let chat_tools = tools.as_chat();
    if budget.is_some() {
        refuse_with_thinking(req, &chat_tools).map_err(rename_effort)?;
    }
    let (sent, kept) = if store {
        (conv.messages.clone(), conv.messages)
    } else {
        (conv.messages, Vec::new())
    };
    let body = MessagesBody {
        model: &model,
        max_tokens,
        system: &conv.system,
        messages: sent,
        budget,
        tools: chat_tools,
        stream,
    }
    .build(req)?;
    Ok(Translated {
        body,
        model,
        store,
        names: tools.names,
        messages: kept,
        echo: echo(req, budget),
        prompt_cache_key: field(req, "prompt_cache_key")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The chat adapter's refusals name `reasoning_effort`; here the parameter is `reasoning.effort`.
fn rename_effort(mut e: BadRequest) -> BadRequest {
    e.message = e.message.replace("reasoning_effort", "reasoning.effort");
    e
}

/// The last assistant message calls tools but carries no thinking block.
fn last_assistant_lacks_thinking(messages: &[Value]) -> bool {
    let Some(last) = messages.iter().rev().find(|m| m["role"] == "assistant") else {
        return false;
    };
    let blocks = last["content"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    blocks.iter().any(|b| b["type"] == "tool_use")
        && !blocks
            .iter()
            .any(|b| b["type"] == "thinking" || b["type"] == "redacted_thinking")
}

/// `reasoning.effort` → a thinking budget; `none`/`minimal` (and no effort) mean no extended thinking.
fn thinking_budget(req: &Map<String, Value>) -> Result<Option<u64>, BadRequest> {
    let Some(reasoning) = field(req, "reasoning") else {
        return Ok(None);
    };
    let Some(r) = reasoning.as_object() else {
        return Err(BadRequest::invalid("reasoning", "must be an object"));
    };
    let effort = match r.get("effort") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(e)) => e.as_str(),
        Some(_) => return Err(BadRequest::invalid("reasoning.effort", "must be a string")),
    };
    match effort {
        "none" | "minimal" => Ok(None),
        "xhigh" => Ok(Some(XHIGH_BUDGET)),
        _ => THINKING_BUDGETS
            .iter()
            .find(|(e, _)| *e == effort)
            .map(|(_, b)| Some(*b))
            .ok_or_else(|| {
                BadRequest::invalid(
                    "reasoning.effort",
                    format!(
                        "unknown value `{effort}`; use none, minimal, low, medium, high or xhigh"
                    ),
                )
            }),
    }
}

/// Parameters Claude cannot honour get a 400 naming them; their neutral values pass.
fn refuse_unsupported(req: &Map<String, Value>) -> Result<(), BadRequest> {
    refuse_unlisted(req, MAPPED, IGNORED, |k| match k {
        "conversation" => Some(
            "the Conversations API is not supported; use previous_response_id or send the items",
        ),
        "prompt" => Some("prompt templates are not supported; send instructions and input"),
        "top_k" => Some("not a Responses parameter"),
        _ => None,
    })?;
    if boolean(req, "background")? == Some(true) {
        return Err(BadRequest::unsupported(
            "background",
            "background responses are not supported; stream instead",
        ));
    }
    if field(req, "max_tool_calls").is_some() {
        return Err(BadRequest::unsupported(
            "max_tool_calls",
            "Claude has no limit on built-in tool calls per response",
        ));
    }
    if field(req, "top_logprobs").is_some_and(|v| v.as_u64() != Some(0)) {
        return Err(BadRequest::unsupported(
            "top_logprobs",
            "Claude does not return log probabilities",
        ));
    }
    if let Some(include) = field(req, "include").and_then(Value::as_array) {
        if include.iter().any(|i| i == "message.output_text.logprobs") {
            return Err(BadRequest::unsupported(
                "include",
                "`message.output_text.logprobs`: Claude does not return log probabilities",
            ));
        }
    }
    text_options(field(req, "text"))
}

/// `text.format` must be plain text (no JSON mode); `text.verbosity` only `medium` (Claude has no such setting).
fn text_options(text: Option<&Value>) -> Result<(), BadRequest> {
    let Some(t) = text else { return Ok(()) };
    match t.pointer("/format/type").and_then(Value::as_str) {
        None | Some("text") => {}
        Some(kind) => {
            return Err(BadRequest::unsupported(
                "text.format",
                format!("`{kind}` is not supported: Claude has no JSON mode through this endpoint; ask for JSON in the prompt or define a tool whose parameters are the schema"),
            ))
        }
    }
    match t.get("verbosity") {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v == "medium" => Ok(()),
        Some(_) => Err(BadRequest::unsupported(
            "text.verbosity",
            "Claude has no verbosity setting; only medium is accepted",
        )),
    }
}

/// The request's parameters as the response object echoes them.
fn echo(req: &Map<String, Value>, budget: Option<u64>) -> Map<String, Value> {
    let get = |k: &str| field(req, k).cloned().unwrap_or(Value::Null);
    let mut e = Map::new();
    e.insert("instructions".into(), get("instructions"));
    e.insert("max_output_tokens".into(), get("max_output_tokens"));
    e.insert(
        "metadata".into(),
        field(req, "metadata").cloned().unwrap_or(json!({})),
    );
    e.insert(
        "parallel_tool_calls".into(),
        field(req, "parallel_tool_calls")
            .cloned()
            .unwrap_or(json!(true)),
    );
    e.insert("previous_response_id".into(), get("previous_response_id"));
    let reasoning = field(req, "reasoning").cloned().unwrap_or(json!({}));
    e.insert(
        "reasoning".into(),
        json!({
            "effort": if budget.is_some() { reasoning.get("effort").cloned().unwrap_or(Value::Null) } else { Value::Null },
            "summary": reasoning.get("summary").cloned().unwrap_or(Value::Null),
        }),
    );
    e.insert(
        "store".into(),
        field(req, "store").cloned().unwrap_or(json!(true)),
    );
    e.insert(
        "temperature".into(),
        field(req, "temperature").cloned().unwrap_or(json!(1.0)),
    );
    e.insert(
        "text".into(),
        json!({"format": {"type": "text"}, "verbosity": "medium"}),
    );
    e.insert(
        "tool_choice".into(),
        field(req, "tool_choice").cloned().unwrap_or(json!("auto")),
    );
    e.insert(
        "tools".into(),
        field(req, "tools").cloned().unwrap_or(json!([])),
    );
    e.insert(
        "top_p".into(),
        field(req, "top_p").cloned().unwrap_or(json!(1.0)),
    );
    e.insert(
        "truncation".into(),
        field(req, "truncation")
            .cloned()
            .unwrap_or(json!("disabled")),
    );
    e.insert("user".into(), get("user"));
    e
}
