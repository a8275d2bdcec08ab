//! An OpenAI Chat Completions request body → an Anthropic Messages request body.
//!
//! Every OpenAI parameter is either mapped, accepted because ignoring it cannot change the answer, or refused with a
//! 400 naming it. Unknown parameters are refused too: a parameter the gateway does not understand might change what
//! the client expects, and a silently different answer is worse than a clear error.

use serde_json::{json, Map, Value};

use super::error::BadRequest;

/// `max_tokens` when the client sends neither `max_completion_tokens` nor `max_tokens` (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Extended-thinking `budget_tokens` for each `reasoning_effort`.
pub const THINKING_BUDGETS: &[(&str, u64)] = &[("low", 1024), ("medium", 4096), ("high", 16384)];

/// Anthropic's smallest thinking budget.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// Accepted and ignored: they cannot change the answer's content (storage, tiers, cache keys, best-effort seeds).
const IGNORED: &[&str] = &[
    "seed",
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
];

/// Translated into the Messages body (some only when neutral, see `refuse_non_neutral`).
const MAPPED: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "stream",
    "stream_options",
    "user",
    "safety_identifier",
    "reasoning_effort",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "n",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "modalities",
];

/// What the handler needs besides the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub body: Value,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
}

/// Most JSON values (scalars, arrays, objects, keys) in one request body: far above any real conversation (text and
/// images are single strings however long), far below what would make its tree cost more memory than its text.
pub const MAX_JSON_VALUES: usize = 262_144;

pub fn translate(body: &[u8]) -> Result<Translated, BadRequest> {
    let v = crate::json::parse_bounded(body, MAX_JSON_VALUES)
        .map_err(|e| BadRequest::body(e.to_string()))?;
    match v {
        Value::Object(req) => translate_object(&req),
        _ => Err(BadRequest::body("request body must be a JSON object")),
    }
}

/// A field, with `null` treated as absent (OpenAI clients send explicit nulls for unset options).
pub(crate) fn field<'a>(req: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    req.get(key).filter(|v| !v.is_null())
}

pub(crate) fn number(req: &Map<String, Value>, key: &str) -> Result<Option<f64>, BadRequest> {
    match field(req, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| BadRequest::invalid(key, "must be a number")),
    }
}

pub(crate) fn positive_int(req: &Map<String, Value>, key: &str) -> Result<Option<u64>, BadRequest> {
    match field(req, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| BadRequest::invalid(key, "must be a positive integer")),
    }
}

pub(crate) fn boolean(req: &Map<String, Value>, key: &str) -> Result<Option<bool>, BadRequest> {
    match field(req, key) {
        None => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .ok_or_else(|| BadRequest::invalid(key, "must be a boolean")),
    }
}

fn translate_object(req: &Map<String, Value>) -> Result<Translated, BadRequest> {
    refuse_unsupported(req)?;
    let model = model(req)?;
    let stream = boolean(req, "stream")?.unwrap_or(false);
    let include_usage = stream
        && field(req, "stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
    let conv = super::messages::translate(req.get("messages"))?;
    let tools = super::tools::translate(req)?;

    let requested_max = match positive_int(req, "max_completion_tokens")? {
        Some(n) => Some(("max_completion_tokens", n)),
        None => positive_int(req, "max_tokens")?.map(|n| ("max_tokens", n)),
    };
    let mut budget = thinking_budget(req)?;
    if budget.is_some() && conv.last_assistant_calls_tools {
        // Anthropic requires the thinking block of an assistant turn that called tools to be sent back with the tool
        // results; OpenAI clients cannot, so this turn is answered without extended thinking.
        budget = None;
    }
    let (max_tokens, budget) = max_tokens_and_budget(budget, requested_max, "reasoning_effort")?;
    if budget.is_some() {
        refuse_with_thinking(req, &tools)?;
    }
    let body = MessagesBody {
        model: &model,
        max_tokens,
        system: &conv.system,
        messages: conv.messages,
        budget,
        tools,
        stream,
    }
    .build(req)?;
    Ok(Translated {
        body,
        model,
        stream,
        include_usage,
    })
}

/// The `model` field: required, a non-empty string.
pub(crate) fn model(req: &Map<String, Value>) -> Result<String, BadRequest> {
    match field(req, "model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(_) => Err(BadRequest::invalid("model", "must be a non-empty string")),
        None => Err(BadRequest::invalid("model", "field required")),
    }
}

/// The end user for `metadata.user_id`: `user`, or OpenAI's successor of it, `safety_identifier`.
pub(crate) fn end_user(req: &Map<String, Value>) -> Result<Option<&str>, BadRequest> {
    let u = match field(req, "user") {
        Some(Value::String(u)) => Some(u.as_str()),
        Some(_) => return Err(BadRequest::invalid("user", "must be a string")),
        None => field(req, "safety_identifier").and_then(Value::as_str),
    };
    Ok(u.filter(|u| !u.is_empty()))
}

/// What the chat and Responses adapters put in a Messages body once they have translated their own fields.
pub(crate) struct MessagesBody<'a> {
    pub model: &'a str,
    pub max_tokens: u64,
    pub system: &'a [Value],
    pub messages: Vec<Value>,
    /// The extended-thinking budget (already checked against the request by `refuse_with_thinking`).
    pub budget: Option<u64>,
    pub tools: super::tools::Tools,
    pub stream: bool,
}

impl MessagesBody<'_> {
    /// The body, with the request's sampling parameters and end user.
    pub(crate) fn build(self, req: &Map<String, Value>) -> Result<Value, BadRequest> {
        let mut out = Map::new();
        out.insert("model".into(), json!(self.model));
        out.insert("max_tokens".into(), json!(self.max_tokens));
        if !self.system.is_empty() {
            let system = match self.system {
                [one] => one["text"].clone(),
                many => Value::Array(many.to_vec()),
            };
            out.insert("system".into(), system);
        }
        out.insert("messages".into(), Value::Array(self.messages));
        if let Some(b) = self.budget {
            out.insert(
                "thinking".into(),
                json!({"type": "enabled", "budget_tokens": b}),
            );
        }
        sampling(req, &mut out)?;
        if let Some(t) = self.tools.tools {
            out.insert("tools".into(), Value::Array(t));
        }
        if let Some(c) = self.tools.tool_choice {
            out.insert("tool_choice".into(), c);
        }
        if let Some(u) = end_user(req)? {
            out.insert("metadata".into(), json!({"user_id": u}));
        }
        if self.stream {
            out.insert("stream".into(), json!(true));
        }
        Ok(Value::Object(out))
    }
}

/// Anthropic's `max_tokens` and the thinking budget for a requested limit (`(parameter, value)`) and effort budget.
/// OpenAI's limit covers reasoning and answer alike, like Anthropic's: it is kept, and thinking gets at most half of it
/// (never less than Claude's minimum) so the answer keeps room. `effort_param` names the effort in errors.
pub(crate) fn max_tokens_and_budget(
    budget: Option<u64>,
    requested_max: Option<(&str, u64)>,
    effort_param: &str,
) -> Result<(u64, Option<u64>), BadRequest> {
    match (budget, requested_max) {
        (None, Some((_, n))) => Ok((n, None)),
        (None, None) => Ok((DEFAULT_MAX_TOKENS, None)),
        (Some(b), None) => Ok((b + DEFAULT_MAX_TOKENS, Some(b))),
        (Some(b), Some((key, n))) => {
            if n <= MIN_THINKING_BUDGET {
                return Err(BadRequest::invalid(
                    key,
                    format!("must be greater than {MIN_THINKING_BUDGET} when {effort_param} is set (Claude's smallest thinking budget)"),
                ));
            }
            Ok((n, Some(b.min((n / 2).max(MIN_THINKING_BUDGET)))))
        }
    }
}

/// `reasoning_effort` → a thinking budget; `none`/`minimal` mean no extended thinking.
fn thinking_budget(req: &Map<String, Value>) -> Result<Option<u64>, BadRequest> {
    let Some(v) = field(req, "reasoning_effort") else {
        return Ok(None);
    };
    let effort = v
        .as_str()
        .ok_or_else(|| BadRequest::invalid("reasoning_effort", "must be a string"))?;
    if effort == "none" || effort == "minimal" {
        return Ok(None);
    }
    THINKING_BUDGETS
        .iter()
        .find(|(e, _)| *e == effort)
        .map(|(_, b)| Some(*b))
        .ok_or_else(|| {
            BadRequest::invalid(
                "reasoning_effort",
                format!("unknown value `{effort}`; use none, minimal, low, medium or high"),
            )
        })
}

/// Extended thinking fixes sampling and forbids forced tool use; say so rather than let the answer differ.
pub(crate) fn refuse_with_thinking(
    req: &Map<String, Value>,
    tools: &super::tools::Tools,
) -> Result<(), BadRequest> {
    if number(req, "temperature")?.is_some_and(|t| t != 1.0) {
        return Err(BadRequest::unsupported(
            "temperature",
            "cannot be set with reasoning_effort (Claude's extended thinking samples at temperature 1)",
        ));
    }
    if number(req, "top_p")?.is_some_and(|p| p < 0.95) {
        return Err(BadRequest::unsupported(
            "top_p",
            "must be at least 0.95 with reasoning_effort (Claude's extended thinking)",
        ));
    }
    if field(req, "top_k").is_some() {
        return Err(BadRequest::unsupported(
            "top_k",
            "cannot be set with reasoning_effort (Claude's extended thinking)",
        ));
    }
    if tools.forced() {
        return Err(BadRequest::unsupported(
            "tool_choice",
            "required or a named function cannot be combined with reasoning_effort (Claude's extended thinking allows only auto or none)",
        ));
    }
    Ok(())
}

pub(crate) fn sampling(
    req: &Map<String, Value>,
    out: &mut Map<String, Value>,
) -> Result<(), BadRequest> {
    if let Some(t) = number(req, "temperature")? {
        if !(0.0..=1.0).contains(&t) {
            return Err(BadRequest::unsupported(
                "temperature",
                "Claude accepts 0 to 1 (OpenAI's 1 to 2 has no equivalent)",
            ));
        }
        out.insert("temperature".into(), req["temperature"].clone());
    }
    if let Some(p) = number(req, "top_p")? {
        if !(0.0..=1.0).contains(&p) {
            return Err(BadRequest::invalid("top_p", "must be between 0 and 1"));
        }
        out.insert("top_p".into(), req["top_p"].clone());
    }
    if let Some(k) = positive_int(req, "top_k")? {
        out.insert("top_k".into(), json!(k));
    }
    let stops: Vec<&str> = match field(req, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|s| {
                s.as_str().ok_or_else(|| {
                    BadRequest::invalid("stop", "must be a string or a list of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(BadRequest::invalid(
                "stop",
                "must be a string or a list of strings",
            ))
        }
    };
    let stops: Vec<&str> = stops.into_iter().filter(|s| !s.is_empty()).collect();
    if !stops.is_empty() {
        out.insert("stop_sequences".into(), json!(stops));
    }
    Ok(())
}

/// Parameters Claude cannot honour get a 400 naming them; their neutral values pass.
fn refuse_unsupported(req: &Map<String, Value>) -> Result<(), BadRequest> {
    refuse_unknown(req)?;
    refuse_non_neutral(req)?;
    response_format(req)
}

fn refuse_unknown(req: &Map<String, Value>) -> Result<(), BadRequest> {
    refuse_unlisted(req, MAPPED, IGNORED, |k| match k {
        "audio" => Some("Claude does not produce audio"),
        "prediction" => Some("predicted outputs are not supported by Claude"),
        "web_search_options" => Some("web search is not available through this endpoint"),
        "functions" | "function_call" => Some("deprecated; use tools and tool_choice"),
        "verbosity" => Some("Claude has no verbosity setting"),
        _ => None,
    })
}

/// The first parameter neither `mapped` nor `ignored` (a null one counts as absent) is refused with the reason `known`
/// gives for it, or as an unknown parameter.
pub(crate) fn refuse_unlisted(
    req: &Map<String, Value>,
    mapped: &[&str],
    ignored: &[&str],
    known: fn(&str) -> Option<&'static str>,
) -> Result<(), BadRequest> {
    let listed = |k: &str| mapped.contains(&k) || ignored.contains(&k);
    match req
        .keys()
        .find(|k| !listed(k) && !req[k.as_str()].is_null())
    {
        None => Ok(()),
        Some(k) => Err(BadRequest::unsupported(
            k.as_str(),
            known(k).unwrap_or("unknown parameter"),
        )),
    }
}

/// Parameters Claude has no equivalent for pass only with their neutral value (`n: 1`, no penalties, …).
fn refuse_non_neutral(req: &Map<String, Value>) -> Result<(), BadRequest> {
    if let Some(n) = field(req, "n") {
        if n.as_u64() != Some(1) {
            return Err(BadRequest::unsupported(
                "n",
                "Claude returns one choice per request; only n=1 is supported",
            ));
        }
    }
    if boolean(req, "logprobs")? == Some(true) {
        return Err(BadRequest::unsupported(
            "logprobs",
            "Claude does not return log probabilities",
        ));
    }
    if field(req, "top_logprobs").is_some_and(|v| v.as_u64() != Some(0)) {
        return Err(BadRequest::unsupported(
            "top_logprobs",
            "Claude does not return log probabilities",
        ));
    }
    for k in ["presence_penalty", "frequency_penalty"] {
        if number(req, k)?.is_some_and(|v| v != 0.0) {
            return Err(BadRequest::unsupported(
                k,
                "Claude has no repetition penalties; only 0 is accepted",
            ));
        }
    }
    if field(req, "logit_bias").is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty())) {
        return Err(BadRequest::unsupported(
            "logit_bias",
            "Claude does not support token biases",
        ));
    }
    if let Some(m) = field(req, "modalities") {
        if m != &json!(["text"]) {
            return Err(BadRequest::unsupported(
                "modalities",
                "Claude answers in text only; use [\"text\"]",
            ));
        }
    }
    Ok(())
}

/// `response_format`: only plain text (Claude has no JSON mode through this endpoint).
fn response_format(req: &Map<String, Value>) -> Result<(), BadRequest> {
    if let Some(f) = field(req, "response_format") {
        match f.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(kind @ ("json_object" | "json_schema")) => {
                return Err(BadRequest::unsupported(
                    "response_format",
                    format!("`{kind}` is not supported: Claude has no JSON mode through this endpoint; ask for JSON in the prompt or define a tool whose parameters are the schema"),
                ))
            }
            _ => {
                return Err(BadRequest::unsupported(
                    "response_format",
                    "only {\"type\":\"text\"} is supported",
                ))
            }
        }
    }
    Ok(())
}
