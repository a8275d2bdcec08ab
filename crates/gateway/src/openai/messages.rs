//! OpenAI `messages` → Anthropic `system` + `messages`.
//!
//! Anthropic has one top-level system prompt, only `user` and `assistant` roles that alternate, tool results as
//! `tool_result` blocks inside a user message (before any text there), and no empty text blocks. So: system and
//! developer messages are hoisted in order, tool messages become user `tool_result` blocks, consecutive same-role
//! messages are merged, empty text is dropped.

use serde_json::{json, Map, Value};

use super::error::BadRequest;

/// Image types the Messages API accepts as base64.
const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

#[derive(Debug, Default)]
pub struct Conversation {
    /// Text blocks of the system prompt.
    pub system: Vec<Value>,
    /// Anthropic messages, alternating roles.
    pub messages: Vec<Value>,
    /// The last assistant message calls tools (extended thinking would need its thinking block, which OpenAI clients
    /// do not send back).
    pub last_assistant_calls_tools: bool,
}

impl Conversation {
    /// Appends blocks for `role`, merging into the previous message when it has the same role.
    pub(crate) fn push(&mut self, role: &str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(content) = last["content"].as_array_mut() {
                    content.extend(blocks);
                }
            }
            _ => self.messages.push(json!({"role": role, "content": blocks})),
        }
        if role == "assistant" {
            self.last_assistant_calls_tools = self
                .messages
                .last()
                .and_then(|m| m["content"].as_array())
                .is_some_and(|c| c.iter().any(|b| b["type"] == "tool_use"));
        }
    }

    /// Anthropic wants a user message's `tool_result` blocks before its other blocks; keep each group's order.
    pub(crate) fn tool_results_first(&mut self) {
        for m in &mut self.messages {
            if m["role"] != "user" {
                continue;
            }
            if let Some(content) = m["content"].as_array_mut() {
                let (mut results, rest): (Vec<Value>, Vec<Value>) = std::mem::take(content)
                    .into_iter()
                    .partition(|b| b["type"] == "tool_result");
                results.extend(rest);
                *content = results;
            }
        }
    }
}

pub fn translate(messages: Option<&Value>) -> Result<Conversation, BadRequest> {
    let list = match messages {
        Some(Value::Array(l)) if !l.is_empty() => l,
        Some(Value::Array(_)) => {
            return Err(BadRequest::invalid(
                "messages",
                "at least one message is required",
            ))
        }
        None | Some(Value::Null) => return Err(BadRequest::invalid("messages", "field required")),
        Some(_) => return Err(BadRequest::invalid("messages", "must be an array")),
    };
    let mut conv = Conversation::default();
    for (i, m) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let m = m
            .as_object()
            .ok_or_else(|| BadRequest::invalid(&at, "must be an object"))?;
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| BadRequest::invalid(format!("{at}.role"), "field required"))?;
        let content = m.get("content").filter(|c| !c.is_null());
        match role {
            "system" | "developer" => {
                let blocks = text_blocks(content, &format!("{at}.content"))?;
                conv.system.extend(blocks);
            }
            "user" => conv.push("user", user_blocks(content, &format!("{at}.content"))?),
            "assistant" => conv.push("assistant", assistant_blocks(m, &at)?),
            "tool" => conv.push("user", vec![tool_result(m, &at)?]),
            "function" => {
                return Err(BadRequest::unsupported(
                    format!("{at}.role"),
                    "the deprecated `function` role is not supported; use `tool` messages with `tool_call_id`",
                ))
            }
            other => {
                return Err(BadRequest::invalid(
                    format!("{at}.role"),
                    format!("unknown role `{other}`"),
                ))
            }
        }
    }
    if conv.messages.is_empty() {
        return Err(BadRequest::invalid(
            "messages",
            "at least one non-empty user or assistant message is required",
        ));
    }
    conv.tool_results_first();
    Ok(conv)
}

pub(crate) fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// A string or a list of text parts (system, developer and tool messages allow nothing else).
fn text_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, BadRequest> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(text_block(s).into_iter().collect()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}[{j}]");
                match part_type(p, &pat)? {
                    "text" => out.extend(text_block(part_text(p, &pat)?)),
                    other => {
                        return Err(BadRequest::unsupported(
                            format!("{pat}.type"),
                            format!("`{other}` parts are not supported here, only `text`"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(BadRequest::invalid(
            at,
            "must be a string or an array of parts",
        )),
    }
}

fn part_type<'a>(part: &'a Value, at: &str) -> Result<&'a str, BadRequest> {
    part.get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::invalid(format!("{at}.type"), "field required"))
}

fn part_text<'a>(part: &'a Value, at: &str) -> Result<&'a str, BadRequest> {
    part.get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::invalid(format!("{at}.text"), "must be a string"))
}

fn user_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, BadRequest> {
    let parts = match content {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(text_block(s).into_iter().collect()),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(BadRequest::invalid(
                at,
                "must be a string or an array of parts",
            ))
        }
    };
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        let pat = format!("{at}[{j}]");
        match part_type(p, &pat)? {
            "text" => out.extend(text_block(part_text(p, &pat)?)),
            "image_url" => out.push(image_block(p, &pat)?),
            "file" => out.push(file_block(p, &pat)?),
            "input_audio" => {
                return Err(BadRequest::unsupported(
                    format!("{pat}.type"),
                    "Claude does not accept audio input",
                ))
            }
            other => {
                return Err(BadRequest::unsupported(
                    format!("{pat}.type"),
                    format!("unknown content part type `{other}`"),
                ))
            }
        }
    }
    Ok(out)
}

/// `data:<type>;base64,<data>` → (type, data).
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((media, data))
}

pub(crate) fn image_block(part: &Value, at: &str) -> Result<Value, BadRequest> {
    // `image_url` is `{url, detail?}`; some clients send the URL string directly.
    let image = part.get("image_url");
    let url = image
        .and_then(|i| i.get("url"))
        .or(image)
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::invalid(format!("{at}.image_url.url"), "field required"))?;
    let param = format!("{at}.image_url.url");
    if url.starts_with("data:") {
        let (media, data) = data_url(url).ok_or_else(|| {
            BadRequest::invalid(&param, "a data URL must look like data:image/png;base64,…")
        })?;
        if !IMAGE_TYPES.contains(&media) {
            return Err(BadRequest::unsupported(
                &param,
                format!(
                    "image type `{media}` is not supported; use one of {}",
                    IMAGE_TYPES.join(", ")
                ),
            ));
        }
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}),
        );
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(BadRequest::invalid(
        &param,
        "must be an https URL or a base64 data URL",
    ))
}

/// PDF files sent inline (`file.file_data` as a data URL) become document blocks; uploaded file ids cannot be.
pub(crate) fn file_block(part: &Value, at: &str) -> Result<Value, BadRequest> {
    let file = part.get("file");
    if file
        .and_then(|f| f.get("file_id"))
        .is_some_and(|v| !v.is_null())
    {
        return Err(BadRequest::unsupported(
            format!("{at}.file.file_id"),
            "OpenAI file ids cannot be resolved; send the file inline as file_data",
        ));
    }
    let param = format!("{at}.file.file_data");
    let data = file
        .and_then(|f| f.get("file_data"))
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::invalid(&param, "field required"))?;
    match data_url(data) {
        Some(("application/pdf", b64)) => Ok(
            json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": b64}}),
        ),
        _ => Err(BadRequest::unsupported(
            &param,
            "only PDF files sent as data:application/pdf;base64,… are supported",
        )),
    }
}

fn assistant_blocks(m: &Map<String, Value>, at: &str) -> Result<Vec<Value>, BadRequest> {
    let content = m.get("content").filter(|c| !c.is_null());
    let mut out = match content {
        None => Vec::new(),
        Some(Value::String(s)) => text_block(s).into_iter().collect(),
        Some(Value::Array(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                let pat = format!("{at}.content[{j}]");
                match part_type(p, &pat)? {
                    "text" => out.extend(text_block(part_text(p, &pat)?)),
                    "refusal" => out.extend(text_block(
                        p.get("refusal").and_then(Value::as_str).unwrap_or_default(),
                    )),
                    other => {
                        return Err(BadRequest::unsupported(
                            format!("{pat}.type"),
                            format!("`{other}` parts are not supported in assistant messages"),
                        ))
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err(BadRequest::invalid(
                format!("{at}.content"),
                "must be a string or an array of parts",
            ))
        }
    };
    if m.get("function_call").is_some_and(|v| !v.is_null()) {
        return Err(BadRequest::unsupported(
            format!("{at}.function_call"),
            "the deprecated `function_call` is not supported; use `tool_calls`",
        ));
    }
    match m.get("tool_calls") {
        None | Some(Value::Null) => {}
        Some(Value::Array(calls)) => {
            for (j, c) in calls.iter().enumerate() {
                out.push(tool_use(c, &format!("{at}.tool_calls[{j}]"))?);
            }
        }
        Some(_) => {
            return Err(BadRequest::invalid(
                format!("{at}.tool_calls"),
                "must be an array",
            ))
        }
    }
    Ok(out)
}

fn tool_use(call: &Value, at: &str) -> Result<Value, BadRequest> {
    let kind = call
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("function");
    if kind != "function" {
        return Err(BadRequest::unsupported(
            format!("{at}.type"),
            format!("`{kind}` tool calls are not supported, only `function`"),
        ));
    }
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::invalid(format!("{at}.id"), "field required"))?;
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::invalid(format!("{at}.function.name"), "field required"))?;
    let args_at = format!("{at}.function.arguments");
    let input = match call.pointer("/function/arguments") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|e| BadRequest::invalid(&args_at, format!("is not valid JSON: {e}")))?,
        Some(v) => v.clone(),
    };
    if !input.is_object() {
        return Err(BadRequest::invalid(
            &args_at,
            "must be a JSON object (Claude tool inputs are objects)",
        ));
    }
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

fn tool_result(m: &Map<String, Value>, at: &str) -> Result<Value, BadRequest> {
    let id = m
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::invalid(format!("{at}.tool_call_id"), "field required"))?;
    let content = m.get("content").filter(|c| !c.is_null());
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    match content {
        Some(Value::String(s)) if !s.is_empty() => block["content"] = json!(s),
        Some(Value::String(_)) | None => {}
        Some(c) => {
            let blocks = text_blocks(Some(c), &format!("{at}.content"))?;
            if !blocks.is_empty() {
                block["content"] = Value::Array(blocks);
            }
        }
    }
    Ok(block)
}
