//! Responses `instructions` and `input` items → Anthropic `system` and `messages`.
//!
//! `instructions`, then `system` and `developer` messages, form the system prompt in order. Items that belong to the
//! assistant (`message` with role `assistant`, `reasoning`, `function_call`, `custom_tool_call`) merge into one
//! assistant message; tool outputs become `tool_result` blocks of the next user message (call ids round-trip exactly).
//! A `reasoning` item whose `encrypted_content` this gateway wrote becomes the signed thinking block again; one
//! without it cannot be replayed and is dropped. `web_search_call` items are dropped (their findings are in the answer
//! text that follows them).

use serde_json::{json, Map, Value};

use super::output::decode_thinking;
use super::tools::ToolNames;
use crate::openai::error::BadRequest;
use crate::openai::messages::{file_block, image_block, text_block, Conversation};

/// Adds `instructions` and `input` to `conv` (which may already hold a stored conversation).
pub fn translate(req: &Map<String, Value>, conv: &mut Conversation) -> Result<(), BadRequest> {
    match req.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => conv.system.extend(text_block(s)),
        Some(_) => return Err(BadRequest::invalid("instructions", "must be a string")),
    }
    match req.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => conv.push("user", text_block(s).into_iter().collect()),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                add_item(conv, item, &format!("input[{i}]"))?;
            }
        }
        Some(_) => {
            return Err(BadRequest::invalid(
                "input",
                "must be a string or an array of items",
            ))
        }
    }
    if conv.messages.is_empty() {
        return Err(BadRequest::invalid(
            "input",
            "at least one non-empty user or assistant item is required",
        ));
    }
    conv.tool_results_first();
    Ok(())
}

fn str_of<'a>(item: &'a Value, key: &str, at: &str) -> Result<&'a str, BadRequest> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::invalid(format!("{at}.{key}"), "field required"))
}

/// One input item, dispatched by its type.
fn add_item(conv: &mut Conversation, item: &Value, at: &str) -> Result<(), BadRequest> {
    let kind = match item.get("type").and_then(Value::as_str) {
        Some(k) => k,
        None if item.get("role").is_some() => "message",
        None => return Err(BadRequest::invalid(format!("{at}.type"), "field required")),
    };
    match kind {
        "message" => message(conv, item, at),
        "function_call" => function_call(conv, item, at),
        "custom_tool_call" => custom_tool_call(conv, item, at),
        "function_call_output" | "custom_tool_call_output" => tool_output(conv, item, at),
        "reasoning" => reasoning(conv, item, at),
        "web_search_call" => Ok(()),
        "item_reference" => Err(BadRequest::unsupported(
            format!("{at}.type"),
            "item references are not supported; send the items themselves, or previous_response_id",
        )),
        other => Err(BadRequest::unsupported(
            format!("{at}.type"),
            format!("`{other}` items are not supported by Claude through this gateway"),
        )),
    }
}

/// A `function_call` → the assistant's `tool_use` (namespaced names flattened).
fn function_call(conv: &mut Conversation, item: &Value, at: &str) -> Result<(), BadRequest> {
    let name = ToolNames::anthropic(
        item.get("namespace").and_then(Value::as_str),
        str_of(item, "name", at)?,
    );
    let input = arguments(item.get("arguments"), &format!("{at}.arguments"))?;
    let id = str_of(item, "call_id", at)?;
    conv.push(
        "assistant",
        vec![json!({"type": "tool_use", "id": id, "name": name, "input": input})],
    );
    Ok(())
}

/// A `custom_tool_call` → a `tool_use` whose input is `{"input": <the free-form text>}`.
fn custom_tool_call(conv: &mut Conversation, item: &Value, at: &str) -> Result<(), BadRequest> {
    let id = str_of(item, "call_id", at)?;
    let name = str_of(item, "name", at)?;
    let input = item
        .get("input")
        .and_then(Value::as_str)
        .unwrap_or_default();
    conv.push(
        "assistant",
        vec![json!({"type": "tool_use", "id": id, "name": name, "input": {"input": input}})],
    );
    Ok(())
}

/// A function or custom tool's output → the user's `tool_result` (text, or parts as blocks).
fn tool_output(conv: &mut Conversation, item: &Value, at: &str) -> Result<(), BadRequest> {
    let id = str_of(item, "call_id", at)?;
    let mut block = json!({"type": "tool_result", "tool_use_id": id});
    match item.get("output") {
        Some(Value::String(s)) if !s.is_empty() => block["content"] = json!(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {}
        Some(Value::Array(parts)) => {
            let blocks = parts_to_blocks(parts, &format!("{at}.output"), false)?;
            if !blocks.is_empty() {
                block["content"] = Value::Array(blocks);
            }
        }
        Some(_) => {
            return Err(BadRequest::invalid(
                format!("{at}.output"),
                "must be a string or an array of parts",
            ))
        }
    }
    conv.push("user", vec![block]);
    Ok(())
}

/// A `reasoning` item → the signed thinking block it carries; without `encrypted_content` there is nothing Claude
/// can verify, so the item is dropped.
fn reasoning(conv: &mut Conversation, item: &Value, at: &str) -> Result<(), BadRequest> {
    if let Some(enc) = item.get("encrypted_content").and_then(Value::as_str) {
        let block = decode_thinking(enc).ok_or_else(|| {
            BadRequest::invalid(
                format!("{at}.encrypted_content"),
                "was not written by this gateway (Claude needs its own signed thinking block back)",
            )
        })?;
        conv.push("assistant", vec![block]);
    }
    Ok(())
}

/// Function-call arguments: a JSON object, as a string (or already parsed).
fn arguments(v: Option<&Value>, at: &str) -> Result<Value, BadRequest> {
    let input = match v {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) if s.trim().is_empty() => json!({}),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s)
            .map_err(|e| BadRequest::invalid(at, format!("is not valid JSON: {e}")))?,
        Some(v) => v.clone(),
    };
    if !input.is_object() {
        return Err(BadRequest::invalid(
            at,
            "must be a JSON object (Claude tool inputs are objects)",
        ));
    }
    Ok(input)
}

fn message(conv: &mut Conversation, item: &Value, at: &str) -> Result<(), BadRequest> {
    let role = str_of(item, "role", at)?;
    let cat = format!("{at}.content");
    let blocks = match item.get("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => text_block(s).into_iter().collect(),
        Some(Value::Array(parts)) => parts_to_blocks(parts, &cat, role == "assistant")?,
        Some(_) => {
            return Err(BadRequest::invalid(
                &cat,
                "must be a string or an array of parts",
            ))
        }
    };
    match role {
        "system" | "developer" => {
            if let Some(b) = blocks.iter().find(|b| b["type"] != "text") {
                return Err(BadRequest::unsupported(
                    &cat,
                    format!(
                        "`{}` parts are not supported in {role} messages, only text",
                        b["type"]
                    ),
                ));
            }
            conv.system.extend(blocks);
        }
        "user" => conv.push("user", blocks),
        "assistant" => conv.push("assistant", blocks),
        other => {
            return Err(BadRequest::invalid(
                format!("{at}.role"),
                format!("unknown role `{other}`"),
            ))
        }
    }
    Ok(())
}

/// Content parts → Anthropic blocks. Assistant messages carry `output_text` and `refusal`; others carry input parts.
fn parts_to_blocks(parts: &[Value], at: &str, assistant: bool) -> Result<Vec<Value>, BadRequest> {
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        let pat = format!("{at}[{j}]");
        let kind = str_of(p, "type", &pat)?;
        match kind {
            "input_text" | "output_text" | "text" => {
                out.extend(text_block(str_of(p, "text", &pat)?))
            }
            "refusal" if assistant => out.extend(text_block(
                p.get("refusal").and_then(Value::as_str).unwrap_or_default(),
            )),
            "input_image" if !assistant => {
                if p.get("file_id").is_some_and(|v| !v.is_null()) {
                    return Err(BadRequest::unsupported(
                        format!("{pat}.file_id"),
                        "OpenAI file ids cannot be resolved; send the image as image_url (a data URL or an http URL)",
                    ));
                }
                out.push(image_block(p, &pat)?);
            }
            "input_file" if !assistant => {
                if p.get("file_url").is_some_and(|v| !v.is_null()) {
                    return Err(BadRequest::unsupported(
                        format!("{pat}.file_url"),
                        "files by URL are not supported; send the PDF inline as file_data",
                    ));
                }
                out.push(file_block(&json!({"file": p}), &pat)?);
            }
            "input_audio" => {
                return Err(BadRequest::unsupported(
                    format!("{pat}.type"),
                    "Claude does not accept audio input",
                ))
            }
            other => {
                return Err(BadRequest::unsupported(
                    format!("{pat}.type"),
                    format!("`{other}` parts are not supported here"),
                ))
            }
        }
    }
    Ok(out)
}
