//! OpenAI `tools`, `tool_choice`, `parallel_tool_calls` → Anthropic `tools`, `tool_choice`.

use serde_json::{json, Map, Value};

use super::error::BadRequest;

#[derive(Debug, Default, PartialEq)]
pub struct Tools {
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
}

impl Tools {
    /// Whether Claude is forced to call a tool (`required` or a named function), which extended thinking forbids.
    pub fn forced(&self) -> bool {
        self.tool_choice
            .as_ref()
            .is_some_and(|c| c["type"] == "any" || c["type"] == "tool")
    }
}

pub fn translate(req: &Map<String, Value>) -> Result<Tools, BadRequest> {
    let tools = tool_list(req)?;
    let choice = tool_choice(req, &tools)?;
    let tool_choice = settle_choice(choice, !tools.is_empty(), parallel_tool_calls(req)?)?;
    Ok(Tools {
        tools: (!tools.is_empty()).then_some(tools),
        tool_choice,
    })
}

/// The Anthropic `tool_choice` once the tools are known (shared by the chat and Responses adapters): none without
/// tools (a choice that forces a tool is refused, as Anthropic would), and `parallel_tool_calls: false` as
/// `disable_parallel_tool_use` on any choice but `none`.
pub(crate) fn settle_choice(
    choice: Option<Value>,
    has_tools: bool,
    parallel: bool,
) -> Result<Option<Value>, BadRequest> {
    if !has_tools {
        return match choice {
            Some(c) if c["type"] == "any" || c["type"] == "tool" => Err(BadRequest::invalid(
                "tool_choice",
                "requires at least one tool in tools",
            )),
            _ => Ok(None),
        };
    }
    let mut choice = choice;
    if !parallel {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    Ok(choice)
}

/// `tools`: each a function tool.
fn tool_list(req: &Map<String, Value>) -> Result<Vec<Value>, BadRequest> {
    match req.get("tools") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, &format!("tools[{i}]")))
            .collect(),
        Some(_) => Err(BadRequest::invalid("tools", "must be an array")),
    }
}

/// A `tool_choice` mode (`auto`, `none`, `required`) as Anthropic's tool choice; the same words on the chat and
/// Responses routes.
pub(crate) fn choice_mode(mode: &str) -> Result<Value, BadRequest> {
    match mode {
        "auto" => Ok(json!({"type": "auto"})),
        "none" => Ok(json!({"type": "none"})),
        "required" => Ok(json!({"type": "any"})),
        other => Err(BadRequest::invalid(
            "tool_choice",
            format!("unknown value `{other}`; use none, auto, required or a function"),
        )),
    }
}

/// `tool_choice`: a mode, or a function that must be among `tools`.
fn tool_choice(req: &Map<String, Value>, tools: &[Value]) -> Result<Option<Value>, BadRequest> {
    match req.get("tool_choice") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => choice_mode(s).map(Some),
        Some(Value::Object(o)) => named_function_choice(o, tools).map(Some),
        Some(_) => Err(BadRequest::invalid(
            "tool_choice",
            "must be a string or an object",
        )),
    }
}

/// `{"type": "function", "function": {"name": …}}` → `{"type": "tool", "name": …}`.
fn named_function_choice(o: &Map<String, Value>, tools: &[Value]) -> Result<Value, BadRequest> {
    let kind = o.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "function" {
        return Err(BadRequest::unsupported(
            "tool_choice.type",
            format!("`{kind}` is not supported; use none, auto, required or {{\"type\":\"function\",…}}"),
        ));
    }
    let name = o
        .get("function")
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::invalid("tool_choice.function.name", "field required"))?;
    if !tools.iter().any(|t| t["name"] == name) {
        return Err(BadRequest::invalid(
            "tool_choice.function.name",
            format!("no tool named `{name}` in tools"),
        ));
    }
    Ok(json!({"type": "tool", "name": name}))
}

/// `parallel_tool_calls`: true unless set to false.
pub(crate) fn parallel_tool_calls(req: &Map<String, Value>) -> Result<bool, BadRequest> {
    match req.get("parallel_tool_calls") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(BadRequest::invalid(
            "parallel_tool_calls",
            "must be a boolean",
        )),
    }
}

pub(crate) fn tool(t: &Value, at: &str) -> Result<Value, BadRequest> {
    let kind = t.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind != "function" {
        return Err(BadRequest::unsupported(
            format!("{at}.type"),
            format!("`{kind}` tools are not supported, only `function`"),
        ));
    }
    let f = t
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| BadRequest::invalid(format!("{at}.function"), "field required"))?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| BadRequest::invalid(format!("{at}.function.name"), "field required"))?;
    let schema = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(BadRequest::invalid(
                format!("{at}.function.parameters"),
                "must be a JSON Schema object",
            ))
        }
    };
    let mut out = json!({"name": name});
    if let Some(d) = f.get("description").and_then(Value::as_str) {
        out["description"] = json!(d);
    }
    out["input_schema"] = schema;
    Ok(out)
}
