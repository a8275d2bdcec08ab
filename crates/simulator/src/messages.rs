//! `/v1/messages`, `/v1/messages/count_tokens`, `/v1/models`, and the 404 fallback.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::ids::{random_alnum, request_id};
use crate::respond::{api_error, drop_connection, json_response, set_header, set_headers};
use crate::sse::{self, BodyFault};
use crate::state::{AccessCheck, DisconnectGuard, InFlightGuard, Shared};
use crate::types::FaultKind;

const OAUTH_BETA: &str = "oauth-2025-04-20";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum CredKind {
    ApiKey,
    OAuth,
}

struct Credential {
    kind: CredKind,
    value: Option<String>,
}

/// The credential a request carries: `x-api-key`, else `authorization: Bearer`.
pub(crate) fn credential_of(headers: &HeaderMap) -> Option<(bool, String)> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some((false, k.to_string()));
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| (true, token.trim().to_string()))
}

fn has_beta(headers: &HeaderMap, flag: &str) -> bool {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == flag)
}

/// Anthropic answers any request that carries `Origin` (a browser's) without the opt-in header with 401, whatever
/// the credential.
fn check_cors(headers: &HeaderMap) -> Result<(), Response> {
    let opted_in = headers
        .get("anthropic-dangerous-direct-browser-access")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if headers.contains_key("origin") && !opted_in {
        return Err(api_error(
            401,
            "authentication_error",
            "CORS requests must set 'anthropic-dangerous-direct-browser-access' header",
        ));
    }
    Ok(())
}

/// After a credential was recognized: its organization's ban, then beta flags nobody here may use.
fn check_policy(sh: &Shared, headers: &HeaderMap, cred: &Credential) -> Result<(), Response> {
    let st = sh.lock();
    if let Some((status, kind, message)) = cred.value.as_ref().and_then(|v| st.bans.get(v)) {
        return Err(api_error(*status, kind, message));
    }
    let forbidden = headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|f| st.forbidden_betas.get(f.trim()));
    match forbidden {
        Some(message) => Err(api_error(403, "permission_error", message)),
        None => Ok(()),
    }
}

fn authenticate(sh: &Shared, headers: &HeaderMap) -> Result<Credential, Response> {
    check_cors(headers)?;
    let cred = recognize(sh, headers)?;
    check_policy(sh, headers, &cred)?;
    Ok(cred)
}

fn recognize(sh: &Shared, headers: &HeaderMap) -> Result<Credential, Response> {
    let cred = credential_of(headers);
    if sh.cfg.accept_any_key {
        return Ok(match cred {
            Some((bearer, value)) => Credential {
                kind: if bearer {
                    CredKind::OAuth
                } else {
                    CredKind::ApiKey
                },
                value: Some(value),
            },
            None => Credential {
                kind: CredKind::ApiKey,
                value: None,
            },
        });
    }
    let unauthorized = |m: &str| Err(api_error(401, "authentication_error", m));
    match cred {
        None => unauthorized("x-api-key header is required"),
        Some((false, key)) => {
            if sh.lock().api_keys.contains(&key) {
                Ok(Credential {
                    kind: CredKind::ApiKey,
                    value: Some(key),
                })
            } else {
                unauthorized("invalid x-api-key")
            }
        }
        Some((true, token)) => {
            if !has_beta(headers, OAUTH_BETA) {
                return unauthorized("OAuth authentication is currently not supported.");
            }
            let check = sh.lock().check_access(&token);
            match check {
                AccessCheck::Valid(_) => Ok(Credential {
                    kind: CredKind::OAuth,
                    value: Some(token),
                }),
                AccessCheck::Unknown => unauthorized("Invalid bearer token"),
                AccessCheck::Expired => unauthorized(
                    "OAuth token has expired. Please obtain a new token or refresh your existing token.",
                ),
                AccessCheck::Revoked => unauthorized("OAuth token has been revoked."),
            }
        }
    }
}

/// Rate-limit headers for a credential: realistic defaults, then `set_ratelimit_headers` ones.
fn ratelimit_headers(sh: &Shared, cred: &Credential) -> Vec<(String, String)> {
    let key = cred.value.clone().unwrap_or_default();
    let (count, custom) = {
        let mut st = sh.lock();
        let c = st.request_counts.entry(key.clone()).or_insert(0);
        *c += 1;
        let count = *c;
        (count, st.ratelimit_headers.get(&key).cloned())
    };
    let now = Utc::now();
    let mut h: Vec<(String, String)> = Vec::new();
    match cred.kind {
        CredKind::ApiKey => {
            let reset =
                (now + chrono::Duration::seconds(60)).to_rfc3339_opts(SecondsFormat::Secs, true);
            for (name, limit, used) in [
                ("requests", 4000u64, count),
                ("tokens", 2_000_000, count * 100),
                ("input-tokens", 1_600_000, count * 80),
                ("output-tokens", 400_000, count * 20),
            ] {
                let p = format!("anthropic-ratelimit-{name}");
                h.push((format!("{p}-limit"), limit.to_string()));
                h.push((
                    format!("{p}-remaining"),
                    limit.saturating_sub(used).to_string(),
                ));
                h.push((format!("{p}-reset"), reset.clone()));
            }
        }
        CredKind::OAuth => {
            let now_s = now.timestamp();
            let reset_5h = (now_s / 3600 + 5) * 3600;
            let reset_7d = (now_s / 86400 + 7) * 86400;
            let p = "anthropic-ratelimit-unified";
            for (n, v) in [
                ("status", "allowed".to_string()),
                ("reset", reset_5h.to_string()),
                ("5h-status", "allowed".to_string()),
                ("5h-utilization", "0.02".to_string()),
                ("5h-reset", reset_5h.to_string()),
                ("7d-status", "allowed".to_string()),
                ("7d-utilization", "0.01".to_string()),
                ("7d-reset", reset_7d.to_string()),
                ("representative-claim", "five_hour".to_string()),
                ("fallback-percentage", "0.5".to_string()),
            ] {
                h.push((format!("{p}-{n}"), v));
            }
        }
    }
    h.extend(custom.unwrap_or_default());
    h
}

fn check_version(headers: &HeaderMap) -> Result<(), Response> {
    if headers.contains_key("anthropic-version") {
        Ok(())
    } else {
        Err(api_error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        ))
    }
}

fn parse_body(body: &Bytes) -> Result<Value, Response> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        api_error(
            400,
            "invalid_request_error",
            &format!("Invalid JSON body: {e}"),
        )
    })?;
    if !v.get("model").is_some_and(Value::is_string) {
        return Err(api_error(
            400,
            "invalid_request_error",
            "model: Field required",
        ));
    }
    match v.get("messages").and_then(Value::as_array) {
        Some(m) if !m.is_empty() => Ok(v),
        Some(_) => Err(api_error(
            400,
            "invalid_request_error",
            "messages: at least one message is required",
        )),
        None => Err(api_error(
            400,
            "invalid_request_error",
            "messages: Field required",
        )),
    }
}

fn input_tokens(body: &Bytes) -> u64 {
    (body.len() as u64 / 4).max(1)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Text of the last user message (its text blocks joined).
fn last_user_text(req: &Value) -> String {
    let Some(msgs) = req.get("messages").and_then(Value::as_array) else {
        return String::new();
    };
    let Some(last) = msgs
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return String::new();
    };
    match last.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The text of the `tool_result` blocks in the last user message, if it has any.
fn last_tool_result(req: &Value) -> Option<String> {
    let last = req
        .get("messages")
        .and_then(Value::as_array)?
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    let blocks = last.get("content").and_then(Value::as_array)?;
    let results: Vec<String> = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| match b.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .collect();
    (!results.is_empty()).then(|| results.join(" | ").chars().take(MAX_ECHO_CHARS).collect())
}

/// The tool call a scripted turn makes: the tool named by `sim_tool_use:NAME` (else the first one), with the input
/// given by `sim_tool_args={…}` in the last user message (else one made up from the tool's schema).
fn scripted_tool(tools: Option<&Vec<Value>>, user: &str) -> ToolCall {
    let named = user
        .split("sim_tool_use:")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c.is_whitespace()).next())
        .filter(|n| !n.is_empty());
    let chosen = match named {
        Some(n) => tools.and_then(|t| {
            t.iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(n))
        }),
        None => tools.and_then(|t| t.first()),
    };
    let args = user.split("sim_tool_args=").nth(1).and_then(|rest| {
        serde_json::Deserializer::from_str(rest)
            .into_iter::<Value>()
            .next()
            .and_then(Result::ok)
            .filter(Value::is_object)
    });
    ToolCall {
        id: format!("toolu_sim{}", random_alnum(20)),
        name: chosen
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .or(named)
            .unwrap_or("get_weather")
            .to_string(),
        input: args.unwrap_or_else(|| tool_input(chosen)),
    }
}

/// Split `s` into exactly `n` non-empty pieces (padding `s` with filler words if it is too short).
pub(crate) fn split_chunks(s: &str, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let mut chars: Vec<char> = s.chars().collect();
    while chars.len() < n {
        chars.extend(" lorem".chars());
    }
    let (base, extra) = (chars.len() / n, chars.len() % n);
    let mut out = Vec::with_capacity(n);
    let mut at = 0;
    for i in 0..n {
        let len = base + usize::from(i < extra);
        out.push(chars[at..at + len].iter().collect());
        at += len;
    }
    out
}

struct ToolCall {
    id: String,
    name: String,
    input: Value,
}

/// The simulated answer to one messages request.
struct Reply {
    id: String,
    model: String,
    thinking: Option<(Vec<String>, String)>,
    text: String,
    tool: Option<ToolCall>,
    /// `sim_max_tokens`: the answer stops at the token limit.
    max_tokens: bool,
    input_tokens: u64,
    output_tokens: u64,
    cache: Cache,
}

/// Prompt-cache usage a request asks for with `sim_cache_5m=N`, `sim_cache_1h=N`, `sim_cache_read=N` anywhere in its
/// body (so it survives the gateway's OpenAI translation). The simulator does not model a real cache: what is asked is
/// reported, as Anthropic reports it — `cache_creation_input_tokens` with the `cache_creation` breakdown by lifetime
/// in the message (and in `message_start`), and the cumulative totals without the breakdown in `message_delta`.
#[derive(Debug, Default, Clone, Copy)]
struct Cache {
    write_5m: u64,
    write_1h: u64,
    read: u64,
}

fn marker(body: &[u8], name: &str) -> u64 {
    let needle = format!("{name}=");
    let Some(at) = body
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
    else {
        return 0;
    };
    let digits: String = body[at + needle.len()..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|b| char::from(*b))
        .collect();
    digits.parse().unwrap_or(0)
}

impl Cache {
    fn of(body: &[u8]) -> Cache {
        Cache {
            write_5m: marker(body, "sim_cache_5m"),
            write_1h: marker(body, "sim_cache_1h"),
            read: marker(body, "sim_cache_read"),
        }
    }
}

const MAX_ECHO_CHARS: usize = 4000;
const MAX_EVENTS: usize = 100_000;

fn tool_input(tool: Option<&Value>) -> Value {
    let props = tool
        .and_then(|t| t.get("input_schema"))
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    match props {
        Some(props) if !props.is_empty() => {
            let mut input = serde_json::Map::new();
            for (name, schema) in props {
                let v = match schema.get("type").and_then(Value::as_str) {
                    Some("integer") | Some("number") => json!(42),
                    Some("boolean") => json!(true),
                    Some("array") => json!([]),
                    Some("object") => json!({}),
                    _ => json!(format!("sim {name}")),
                };
                input.insert(name.clone(), v);
            }
            Value::Object(input)
        }
        _ => json!({"location": "San Francisco, CA", "unit": "celsius"}),
    }
}

impl Reply {
    fn build(req: &Value, body: &Bytes) -> Reply {
        let user: String = last_user_text(req).chars().take(MAX_ECHO_CHARS).collect();
        let tool_result = last_tool_result(req);
        let text = match &tool_result {
            Some(result) if user.is_empty() => format!("Tool result received: {result}"),
            Some(result) => format!("Tool result received: {result}. You said: {user}"),
            None => format!("Hello from the Anthropic simulator. You said: {user}"),
        };
        let thinking = contains(body, b"sim_thinking").then(|| {
            (
                split_chunks(
                    "Let me think about this request step by step. The user wants a reply.",
                    3,
                ),
                format!("EqQBCkYIBxgCKkB{}", random_alnum(80)),
            )
        });
        let tools = req
            .get("tools")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty());
        let cut = contains(body, b"sim_max_tokens");
        // A turn that carries a tool's result is answered in text, so a scripted tool loop ends.
        let wants_tool = !cut
            && tool_result.is_none()
            && (contains(body, b"sim_tool_use")
                || (tools.is_some() && user.to_ascii_lowercase().contains("use a tool")));
        let tool = wants_tool.then(|| scripted_tool(tools, &user));
        let output_tokens = (text.len() as u64 / 4).max(1)
            + thinking.as_ref().map_or(0, |_| 20)
            + tool.as_ref().map_or(0, |_| 30);
        Reply {
            id: format!("msg_sim{}", random_alnum(24)),
            model: req
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            thinking,
            text,
            tool,
            max_tokens: cut,
            input_tokens: input_tokens(body),
            output_tokens,
            cache: Cache::of(body),
        }
    }

    fn stop_reason(&self) -> &'static str {
        if self.max_tokens {
            "max_tokens"
        } else if self.tool.is_some() {
            "tool_use"
        } else {
            "end_turn"
        }
    }

    fn usage(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache.write_5m + self.cache.write_1h,
            "cache_read_input_tokens": self.cache.read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache.write_5m,
                "ephemeral_1h_input_tokens": self.cache.write_1h,
            },
            "output_tokens": output_tokens,
            "service_tier": "standard",
        })
    }

    fn message(&self, content: Vec<Value>, stop_reason: Option<&str>, output_tokens: u64) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": self.usage(output_tokens),
        })
    }

    fn to_json(&self) -> Value {
        let mut content = Vec::new();
        if let Some((parts, sig)) = &self.thinking {
            content.push(json!({"type": "thinking", "thinking": parts.concat(), "signature": sig}));
        }
        content.push(json!({"type": "text", "text": self.text}));
        if let Some(t) = &self.tool {
            content.push(json!({"type": "tool_use", "id": t.id, "name": t.name, "input": t.input}));
        }
        self.message(content, Some(self.stop_reason()), self.output_tokens)
    }

    /// The SSE events of the stream, in order.
    fn to_events(&self, text_events: usize) -> Vec<Bytes> {
        let mut ev = vec![
            sse::event(
                "message_start",
                &json!({"type": "message_start", "message": self.message(Vec::new(), None, 1)}),
            ),
            sse::event("ping", &json!({"type": "ping"})),
        ];
        let mut index = 0;
        let start = |index: usize, block: Value| {
            sse::event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": block}),
            )
        };
        let delta = |index: usize, delta: Value| {
            sse::event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            )
        };
        let stop = |index: usize| {
            sse::event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            )
        };
        if let Some((parts, sig)) = &self.thinking {
            ev.push(start(
                index,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            ));
            for p in parts {
                ev.push(delta(
                    index,
                    json!({"type": "thinking_delta", "thinking": p}),
                ));
            }
            ev.push(delta(
                index,
                json!({"type": "signature_delta", "signature": sig}),
            ));
            ev.push(stop(index));
            index += 1;
        }
        ev.push(start(index, json!({"type": "text", "text": ""})));
        for chunk in split_chunks(&self.text, text_events) {
            ev.push(delta(index, json!({"type": "text_delta", "text": chunk})));
        }
        ev.push(stop(index));
        index += 1;
        if let Some(t) = &self.tool {
            ev.push(start(
                index,
                json!({"type": "tool_use", "id": t.id, "name": t.name, "input": {}}),
            ));
            for chunk in split_chunks(&t.input.to_string(), 3) {
                ev.push(delta(
                    index,
                    json!({"type": "input_json_delta", "partial_json": chunk}),
                ));
            }
            ev.push(stop(index));
        }
        ev.push(sse::event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason(), "stop_sequence": null},
                "usage": {
                    "input_tokens": self.input_tokens,
                    "cache_creation_input_tokens": self.cache.write_5m + self.cache.write_1h,
                    "cache_read_input_tokens": self.cache.read,
                    "output_tokens": self.output_tokens,
                },
            }),
        ));
        ev.push(sse::event("message_stop", &json!({"type": "message_stop"})));
        ev
    }
}

/// Per-request overrides: `"sim": {"events": N, "delay_ms": M}`.
fn overrides(sh: &Shared, req: &Value) -> (usize, Duration) {
    let sim = req.get("sim");
    let events = sim
        .and_then(|s| s.get("events"))
        .and_then(Value::as_u64)
        .map_or(sh.cfg.stream_events, |n| {
            usize::try_from(n).unwrap_or(MAX_EVENTS)
        })
        .min(MAX_EVENTS);
    let delay = sim
        .and_then(|s| s.get("delay_ms"))
        .and_then(Value::as_u64)
        .map_or(sh.cfg.event_delay, Duration::from_millis);
    (events, delay)
}

fn with_headers(mut r: Response, headers: &[(String, String)]) -> Response {
    set_headers(&mut r, headers);
    r
}

pub(crate) async fn messages(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cred = credential_of(&headers).map(|(_, v)| v);
    let rec = sh.record_request(&method, &uri, &headers, &body, cred.as_deref());
    let resp = answer_messages(&sh, &headers, body).await;
    sh.finish_request(rec, resp)
}

async fn answer_messages(sh: &Arc<Shared>, headers: &HeaderMap, body: Bytes) -> Response {
    let in_flight = InFlightGuard::new(sh);
    let cred = match authenticate(sh, headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let rl = ratelimit_headers(sh, &cred);
    if let Err(r) = check_version(headers) {
        return with_headers(r, &rl);
    }
    let req = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return with_headers(r, &rl),
    };
    let fault = match sh.take_fault(cred.value.as_deref()).map(|f| f.kind) {
        Some(FaultKind::Delayed(d, inner)) => {
            tokio::time::sleep(d).await;
            Some(*inner)
        }
        other => other,
    };
    let mut guard = DisconnectGuard::new(sh);
    if !sh.cfg.latency.is_zero() {
        tokio::time::sleep(sh.cfg.latency).await;
    }
    let mut body_fault = None;
    match fault {
        None => {}
        Some(FaultKind::RateLimited {
            retry_after,
            retry_after_ms,
            headers: extra,
        }) => {
            guard.done();
            let mut r = with_headers(
                api_error(
                    429,
                    "rate_limit_error",
                    "This request would exceed your account's rate limit. Please try again later.",
                ),
                &rl,
            );
            if let Some(ra) = retry_after {
                set_header(&mut r, "retry-after", &ra);
            }
            if let Some(ms) = retry_after_ms {
                set_header(&mut r, "retry-after-ms", &ms.to_string());
            }
            return with_headers(r, &extra);
        }
        Some(FaultKind::Status {
            status,
            error_type,
            message,
            headers: extra,
        }) => {
            guard.done();
            let r = with_headers(api_error(status, &error_type, &message), &rl);
            return with_headers(r, &extra);
        }
        Some(FaultKind::Overloaded) => {
            guard.done();
            return with_headers(api_error(529, "overloaded_error", "Overloaded"), &rl);
        }
        Some(FaultKind::Slow(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::DropConnection) => {
            guard.done();
            return drop_connection();
        }
        Some(FaultKind::CutStream { after_events }) => {
            body_fault = Some(BodyFault::Cut(after_events))
        }
        Some(FaultKind::StreamError { after_events }) => {
            body_fault = Some(BodyFault::Error(after_events))
        }
        Some(FaultKind::StallStream { after_events }) => {
            body_fault = Some(BodyFault::Stall(after_events))
        }
        Some(FaultKind::Delayed(_, inner)) => {
            // One level of delay is applied above; a nested one answers as a plain 500 so the mistake shows.
            guard.done();
            return api_error(
                500,
                "api_error",
                &format!("nested Delayed fault: {inner:?}"),
            );
        }
    }

    let (events, delay) = overrides(sh, &req);
    let reply = Reply::build(&req, &body);
    let rid = request_id();
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    let mut resp = if stream {
        let body = sse::chunked_body(
            reply.to_events(events),
            delay,
            body_fault,
            guard,
            Some(in_flight),
        );
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        set_header(&mut r, "cache-control", "no-cache");
        r
    } else {
        let json = Bytes::from(reply.to_json().to_string());
        match body_fault {
            None => {
                guard.done();
                let mut r = Response::new(Body::from(json));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r
            }
            Some(BodyFault::Error(_)) => {
                guard.done();
                api_error(529, "overloaded_error", "Overloaded")
            }
            Some(f) => {
                // Cut: half of the JSON then an abrupt end; Stall: headers, then nothing.
                let len = json.len();
                let half = json.slice(..len / 2);
                let f = match f {
                    BodyFault::Cut(_) => BodyFault::Cut(1),
                    _ => BodyFault::Stall(0),
                };
                let mut r = Response::new(sse::chunked_body(
                    vec![half],
                    Duration::ZERO,
                    Some(f),
                    guard,
                    Some(in_flight),
                ));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                r.headers_mut()
                    .insert(CONTENT_LENGTH, HeaderValue::from(len));
                r
            }
        }
    };
    set_header(&mut resp, "request-id", &rid);
    with_headers(resp, &rl)
}

pub(crate) async fn count_tokens(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cred_value = credential_of(&headers).map(|(_, v)| v);
    let rec = sh.record_request(&method, &uri, &headers, &body, cred_value.as_deref());
    let resp = (|| {
        let cred = authenticate(&sh, &headers)?;
        let rl = ratelimit_headers(&sh, &cred);
        check_version(&headers).map_err(|r| with_headers(r, &rl))?;
        parse_body(&body).map_err(|r| with_headers(r, &rl))?;
        let mut r = json_response(
            StatusCode::OK,
            &json!({"input_tokens": input_tokens(&body)}),
        );
        set_header(&mut r, "request-id", &request_id());
        Ok::<_, Response>(with_headers(r, &rl))
    })()
    .unwrap_or_else(|r| r);
    sh.finish_request(rec, resp)
}

const MODELS: &[(&str, &str, &str)] = &[
    (
        "claude-sonnet-4-5",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
    (
        "claude-haiku-4-5",
        "Claude Haiku 4.5",
        "2025-10-01T00:00:00Z",
    ),
    ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
    ("claude-opus-4-0", "Claude Opus 4", "2025-05-22T00:00:00Z"),
    (
        "claude-sonnet-4-0",
        "Claude Sonnet 4",
        "2025-05-22T00:00:00Z",
    ),
    (
        "claude-3-5-haiku-latest",
        "Claude Haiku 3.5",
        "2024-10-22T00:00:00Z",
    ),
];

fn model_json(id: &str, display: &str, created: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": display, "created_at": created})
}

/// A known model id, or a dated form of one (`claude-sonnet-4-5-20250929`).
fn find_model(id: &str) -> Option<Value> {
    MODELS.iter().find_map(|(m, d, c)| {
        let dated = id
            .strip_prefix(m)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|date| date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()));
        (id == *m || dated).then(|| model_json(id, d, c))
    })
}

async fn models_common(
    sh: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    answer: impl FnOnce() -> Response,
) -> Response {
    let cred_value = credential_of(headers).map(|(_, v)| v);
    let rec = sh.record_request(method, uri, headers, &Bytes::new(), cred_value.as_deref());
    let resp = match authenticate(sh, headers) {
        Ok(cred) => {
            let rl = ratelimit_headers(sh, &cred);
            let mut r = answer();
            set_header(&mut r, "request-id", &request_id());
            with_headers(r, &rl)
        }
        Err(r) => r,
    };
    sh.finish_request(rec, resp)
}

pub(crate) async fn list_models(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    models_common(&sh, &method, &uri, &headers, || {
        let data: Vec<Value> = MODELS.iter().map(|(m, d, c)| model_json(m, d, c)).collect();
        json_response(
            StatusCode::OK,
            &json!({
                "data": data,
                "has_more": false,
                "first_id": MODELS.first().map(|m| m.0),
                "last_id": MODELS.last().map(|m| m.0),
            }),
        )
    })
    .await
}

pub(crate) async fn get_model(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    models_common(&sh, &method, &uri, &headers, || match find_model(&id) {
        Some(m) => json_response(StatusCode::OK, &m),
        None => api_error(404, "not_found_error", &format!("model: {id}")),
    })
    .await
}

pub(crate) async fn not_found(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let rec = if path.starts_with("/v1/messages") || path.starts_with("/v1/models") {
        let cred = credential_of(&headers).map(|(_, v)| v);
        sh.record_request(&method, &uri, &headers, &body, cred.as_deref())
    } else {
        None
    };
    let resp = api_error(404, "not_found_error", "Not found");
    sh.finish_request(rec, resp)
}

pub(crate) async fn method_not_allowed() -> Response {
    api_error(405, "invalid_request_error", "Method not allowed")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn split_chunks_gives_exactly_n_non_empty_pieces() {
        for n in [1, 2, 7, 8, 50] {
            let parts = split_chunks("héllo wörld", n);
            assert_eq!(parts.len(), n);
            assert!(parts.iter().all(|p| !p.is_empty()));
            assert!(parts.concat().starts_with("héllo wörld"));
        }
        assert_eq!(split_chunks("abcdef", 3), ["ab", "cd", "ef"]);
        assert!(split_chunks("abc", 0).is_empty());
    }

    #[test]
    fn last_user_text_joins_text_blocks() {
        let req = json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "x"}, {"type": "image"}, {"type": "text", "text": "y"}]},
        ]});
        assert_eq!(last_user_text(&req), "x y");
    }

    #[test]
    fn dated_model_ids_resolve() {
        assert!(find_model("claude-opus-4-1-20250805").is_some());
        assert!(find_model("claude-opus-4-1-2025").is_none());
        assert!(find_model("claude-opus").is_none());
    }
}
