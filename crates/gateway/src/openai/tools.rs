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
    let tools = match req.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, t)| tool(t, &format!("tools[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(BadRequest::invalid("tools", "must be an array")),
    };
    let mut choice = match req.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            other => {
                return Err(BadRequest::invalid(
                    "tool_choice",
                    format!("unknown value `{other}`; use none, auto, required or a function"),
                ))
            }
        },
        Some(Value::Object(o)) => {
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
                .ok_or_else(|| {
                    BadRequest::invalid("tool_choice.function.name", "field required")
                })?;
            if !tools.iter().any(|t| t["name"] == name) {
                return Err(BadRequest::invalid(
                    "tool_choice.function.name",
                    format!("no tool named `{name}` in tools"),
                ));
            }
            Some(json!({"type": "tool", "name": name}))
        }
        Some(_) => {
            return Err(BadRequest::invalid(
                "tool_choice",
                "must be a string or an object",
            ))
        }
    };
    let parallel = match req.get("parallel_tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(BadRequest::invalid(
                "parallel_tool_calls",
                "must be a boolean",
            ))
        }
    };
    if tools.is_empty() {
        // Without tools only "no tool" choices make sense; Anthropic refuses a tool_choice without tools.
        return match choice {
            Some(c) if c["type"] == "any" || c["type"] == "tool" => Err(BadRequest::invalid(
                "tool_choice",
                "requires at least one tool in tools",
            )),
            _ => Ok(Tools::default()),
        };
    }
    if !parallel {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = json!(true);
        }
    }
    Ok(Tools {
        tools: Some(tools),
        tool_choice: choice,
    })
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
