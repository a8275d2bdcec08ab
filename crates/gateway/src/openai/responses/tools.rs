//! Responses `tools`, `tool_choice`, `parallel_tool_calls` → Anthropic `tools`, `tool_choice`, and the names that map
//! Claude's tool calls back.
//!
//! - `function` tools map one to one.
//! - `custom` (freeform) tools become a tool with one string parameter `input`; Claude's call comes back as a
//!   `custom_tool_call` whose `input` is that string.
//! - `namespace` tools are flattened: `{namespace}__{name}` (Anthropic tool names have no namespaces); a call comes
//!   back as a `function_call` with `namespace` and the tool's own `name`.
//! - `web_search` with `external_web_access: false` (Codex's cached-only mode, which Claude has no equivalent of) is
//!   dropped; otherwise it becomes Anthropic's server-side `web_search_20250305` tool.
//! - Other hosted tools (file search, computer use, code interpreter, image generation, MCP, local shell) are refused
//!   with a 400 naming them.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use crate::openai::error::BadRequest;

/// Separator between a namespace and a tool name in a flattened Anthropic tool name.
pub const NAMESPACE_SEPARATOR: &str = "__";

/// How Claude's tool names map back to Responses tools.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ToolNames {
    /// Flattened Anthropic name → (namespace, name).
    namespaced: HashMap<String, (String, String)>,
    /// Anthropic names of custom (freeform) tools.
    custom: HashSet<String>,
}

/// What a Claude tool call is on the Responses side.
#[derive(Debug, PartialEq, Eq)]
pub enum CallKind<'a> {
    Function {
        name: &'a str,
        namespace: Option<&'a str>,
    },
    Custom {
        name: &'a str,
    },
}

impl ToolNames {
    pub fn kind<'a>(&'a self, anthropic_name: &'a str) -> CallKind<'a> {
        if self.custom.contains(anthropic_name) {
            return CallKind::Custom {
                name: anthropic_name,
            };
        }
        match self.namespaced.get(anthropic_name) {
            Some((ns, name)) => CallKind::Function {
                name,
                namespace: Some(ns),
            },
            None => CallKind::Function {
                name: anthropic_name,
                namespace: None,
            },
        }
    }

    /// The Anthropic name of a Responses tool (`namespace` for tools inside a namespace).
    pub fn anthropic(namespace: Option<&str>, name: &str) -> String {
        match namespace.filter(|n| !n.is_empty()) {
            Some(ns) => format!("{ns}{NAMESPACE_SEPARATOR}{name}"),
            None => name.to_string(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Tools {
    pub tools: Vec<Value>,
    pub tool_choice: Option<Value>,
    pub names: ToolNames,
}

impl Tools {
    /// The chat adapter's view, for the checks both adapters share.
    pub fn as_chat(&self) -> crate::openai::tools::Tools {
        crate::openai::tools::Tools {
            tools: (!self.tools.is_empty()).then(|| self.tools.clone()),
            tool_choice: self.tool_choice.clone(),
        }
    }
}

pub fn translate(req: &Map<String, Value>) -> Result<Tools, BadRequest> {
    let mut out = Tools::default();
    match req.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(list)) => {
            for (i, t) in list.iter().enumerate() {
                add_tool(&mut out, t, &format!("tools[{i}]"))?;
            }
        }
        Some(_) => return Err(BadRequest::invalid("tools", "must be an array")),
    }
    let choice = tool_choice(req.get("tool_choice"), &out)?;
    let parallel = crate::openai::tools::parallel_tool_calls(req)?;
    out.tool_choice = crate::openai::tools::settle_choice(choice, !out.tools.is_empty(), parallel)?;
    Ok(out)
}

fn str_field<'a>(t: &'a Value, key: &str, at: &str) -> Result<&'a str, BadRequest> {
    t.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| BadRequest::invalid(format!("{at}.{key}"), "field required"))
}

fn add_tool(out: &mut Tools, t: &Value, at: &str) -> Result<(), BadRequest> {
    let kind = t.get("type").and_then(Value::as_str).unwrap_or_default();
    match kind {
        "function" => out.tools.push(function(t, None, at)?),
        "custom" => {
            let name = str_field(t, "name", at)?;
            let mut tool = json!({
                "name": name,
                "input_schema": {
                    "type": "object",
                    "properties": {"input": {"type": "string", "description": custom_format(t)}},
                    "required": ["input"],
                },
            });
            if let Some(d) = t.get("description").and_then(Value::as_str) {
                tool["description"] = json!(d);
            }
            out.names.custom.insert(name.to_string());
            out.tools.push(tool);
        }
        "namespace" => {
            let ns = str_field(t, "name", at)?;
            let inner = t
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| BadRequest::invalid(format!("{at}.tools"), "must be an array"))?;
            for (j, f) in inner.iter().enumerate() {
                let fat = format!("{at}.tools[{j}]");
                let tool = function(f, Some(ns), &fat)?;
                let name = str_field(f, "name", &fat)?;
                out.names.namespaced.insert(
                    ToolNames::anthropic(Some(ns), name),
                    (ns.to_string(), name.to_string()),
                );
                out.tools.push(tool);
            }
        }
        "web_search" | "web_search_preview" | "web_search_2025_08_26" => {
            if t.get("external_web_access") != Some(&json!(false)) {
                out.tools
                    .push(json!({"type": "web_search_20250305", "name": "web_search"}));
            }
        }
        other => {
            return Err(BadRequest::unsupported(
                format!("{at}.type"),
                format!("`{other}` tools are not supported by Claude through this gateway; use function, custom, namespace or web_search"),
            ))
        }
    }
    Ok(())
}

/// A custom tool's input format, described for Claude (a grammar or plain text).
fn custom_format(t: &Value) -> String {
    let f = t.get("format");
    match f.and_then(|f| f.get("type")).and_then(Value::as_str) {
        Some("grammar") => format!(
            "Input in this {} grammar:\n{}",
            f.and_then(|f| f.get("syntax"))
                .and_then(Value::as_str)
                .unwrap_or("formal"),
            f.and_then(|f| f.get("definition"))
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        _ => "The tool's input, as free text.".to_string(),
    }
}

fn function(t: &Value, namespace: Option<&str>, at: &str) -> Result<Value, BadRequest> {
    let kind = t.get("type").and_then(Value::as_str).unwrap_or("function");
    if kind != "function" {
        return Err(BadRequest::unsupported(
            format!("{at}.type"),
            format!("`{kind}` tools are not supported inside a namespace, only `function`"),
        ));
    }
    let name = str_field(t, "name", at)?;
    let schema = match t.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(BadRequest::invalid(
                format!("{at}.parameters"),
                "must be a JSON Schema object",
            ))
        }
    };
    let mut out = json!({"name": ToolNames::anthropic(namespace, name)});
    if let Some(d) = t.get("description").and_then(Value::as_str) {
        out["description"] = json!(d);
    }
    out["input_schema"] = schema;
    Ok(out)
}

fn tool_choice(choice: Option<&Value>, tools: &Tools) -> Result<Option<Value>, BadRequest> {
    let named = |name: &str, param: &str| {
        if tools.tools.iter().any(|t| t["name"] == name) {
            Ok(Some(json!({"type": "tool", "name": name})))
        } else {
            Err(BadRequest::invalid(
                param,
                format!("no tool named `{name}` in tools"),
            ))
        }
    };
    match choice {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => crate::openai::tools::choice_mode(s).map(Some),
        Some(Value::Object(o)) => {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
            let name = o.get("name").and_then(Value::as_str);
            match (kind, name) {
                ("function" | "custom", Some(n)) => {
                    let ns = o.get("namespace").and_then(Value::as_str);
                    named(&ToolNames::anthropic(ns, n), "tool_choice.name")
                }
                ("function" | "custom", None) => {
                    Err(BadRequest::invalid("tool_choice.name", "field required"))
                }
                _ => Err(BadRequest::unsupported(
                    "tool_choice.type",
                    format!("`{kind}` is not supported; use none, auto, required or {{\"type\":\"function\",\"name\":…}}"),
                )),
            }
        }
        Some(_) => Err(BadRequest::invalid(
            "tool_choice",
            "must be a string or an object",
        )),
    }
}
