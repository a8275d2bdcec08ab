//! Anthropic SSE events → Responses stream events, event by event.
//!
//! Each upstream chunk is decoded as it arrives and the events it completes are written at once (no buffering; the
//! body is pulled only when the client can take more, so backpressure reaches upstream). The stream is
//! `response.created`, `response.in_progress`, per block `response.output_item.added`, its deltas and `….done`
//! events, `response.output_item.done`, then `response.completed` (or `response.incomplete` when Claude stopped at
//! the token limit), every event with a growing `sequence_number`. An upstream `event: error`, or a stream that ends
//! or breaks before `message_stop`, ends it with `response.failed` carrying an OpenAI error code — never silently
//! (Codex fails a turn whose stream ends without `response.completed`).

use std::collections::HashMap;

use axum::response::Response;
use serde_json::{json, Map, Value};

use super::output::{self, item_id, item_prefix, Outcome};
use super::stored::Saver;
use super::tools::ToolNames;
use crate::openai::response::Usage;
use crate::openai::stream::{event_stream, EventTranslator};
use crate::sse::SseEvent;

/// A content block being streamed.
#[derive(Debug)]
struct Open {
    output_index: usize,
    item_id: String,
    /// The Anthropic block as accumulated so far (`partial_json` gathers tool arguments).
    block: Value,
    partial_json: String,
}

/// The translation state of one stream.
#[derive(Debug)]
pub struct Translator {
    echo: Map<String, Value>,
    names: ToolNames,
    created_at: i64,
    model: String,
    id: String,
    seq: u64,
    usage: Usage,
    stop_reason: Option<String>,
    open: HashMap<u64, Open>,
    /// Finished items, by output index.
    output: Vec<Value>,
    next_index: usize,
    /// Finished Anthropic blocks, for storing the conversation.
    content: Vec<Value>,
    started: bool,
    /// `response.completed` / `.incomplete` went out.
    finished: bool,
    /// A terminal event went out: nothing more is written.
    done: bool,
}

/// The OpenAI error code for an Anthropic error type (and message) in `response.failed`.
pub fn failure_code(anthropic_type: &str, message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    match anthropic_type {
        "rate_limit_error" => "rate_limit_exceeded",
        "overloaded_error" => "server_is_overloaded",
        "invalid_request_error" | "request_too_large"
            if m.contains("too long") || m.contains("context") || m.contains("too large") =>
        {
            "context_length_exceeded"
        }
        "invalid_request_error" => "invalid_prompt",
        _ => "server_error",
    }
}

impl Translator {
    pub fn new(
        echo: Map<String, Value>,
        names: ToolNames,
        created_at: i64,
        model: String,
    ) -> Translator {
        Translator {
            echo,
            names,
            created_at,
            model,
            id: output::response_id(None),
            seq: 0,
            usage: Usage::default(),
            stop_reason: None,
            open: HashMap::new(),
            output: Vec::new(),
            next_index: 0,
            content: Vec::new(),
            started: false,
            finished: false,
            done: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The Anthropic blocks of a response that finished (completed or incomplete), to store.
    pub fn finished_content(&self) -> Option<&[Value]> {
        self.finished.then_some(self.content.as_slice())
    }

    fn emit(&mut self, out: &mut String, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push_str("event: ");
        out.push_str(kind);
        out.push_str("\ndata: ");
        out.push_str(&data.to_string());
        out.push_str("\n\n");
    }

    fn response(&self, status: &str, incomplete: &Value, error: &Value) -> Value {
        let o = Outcome {
            id: &self.id,
            model: &self.model,
            created_at: self.created_at,
            status,
            incomplete_details: incomplete,
            error,
        };
        output::response(
            &self.echo,
            o,
            self.output.clone(),
            output::usage(&self.usage),
        )
    }

    /// Appends the Responses events for one Anthropic event to `out`.
    pub fn event(&mut self, ev: &SseEvent, out: &mut String) {
        if self.done {
            return;
        }
        let (kind, data) = match ev.anthropic() {
            Ok(read) => read,
            Err(unreadable) => {
                if let Some(why) = unreadable.failure() {
                    self.fail(out, "server_error", why);
                }
                return;
            }
        };
        let kind = kind.as_str();
        match kind {
            "message_start" => self.start(&data["message"], out),
            "content_block_start" => self.block_start(&data, out),
            "content_block_delta" => self.block_delta(&data, out),
            "content_block_stop" => self.block_stop(&data, out),
            "message_delta" => {
                self.usage.update(data.get("usage"));
                if let Some(r) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(r.to_string());
                }
            }
            "message_stop" => self.complete(out),
            "error" => {
                let e = crate::error::AnthropicError::of_value(&data);
                let m = e.message.as_deref().unwrap_or("upstream stream failed");
                let code = failure_code(e.kind_or_api_error(), m);
                self.fail(out, code, m);
            }
            _ => {}
        }
    }

    /// The upstream ended (or broke) here.
    pub fn end(&mut self, out: &mut String, message: &str) {
        if !self.done {
            self.fail(out, "server_error", message);
        }
    }

    fn start(&mut self, m: &Value, out: &mut String) {
        self.id = output::response_id(m.get("id").and_then(Value::as_str));
        if let Some(model) = m.get("model").and_then(Value::as_str) {
            self.model = model.to_string();
        }
        self.usage.update(m.get("usage"));
        self.started = true;
        let r = self.response("in_progress", &Value::Null, &Value::Null);
        self.emit(out, "response.created", json!({"response": r}));
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn block_start(&mut self, data: &Value, out: &mut String) {
        let block = data["content_block"].clone();
        let kind = block["type"].as_str().unwrap_or_default().to_string();
        let Some(prefix) = item_prefix(&kind, block["name"].as_str(), &self.names) else {
            // Blocks that are no item (server tool results) are still kept for the stored conversation.
            if let Some(index) = data["index"].as_u64() {
                self.open.insert(
                    index,
                    Open {
                        output_index: usize::MAX,
                        item_id: String::new(),
                        block,
                        partial_json: String::new(),
                    },
                );
            }
            return;
        };
        let output_index = self.next_index;
        self.next_index += 1;
        let id = item_id(prefix, &self.id, output_index);
        let (empty, added) = self.started_item(&block, &id);
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": added}),
        );
        match kind.as_str() {
            "text" => self.emit(out, "response.content_part.added", json!({
                "item_id": id, "output_index": output_index, "content_index": 0, "part": output::output_text(""),
            })),
            "thinking" => self.emit(out, "response.reasoning_summary_part.added", json!({
                "item_id": id, "output_index": output_index, "summary_index": 0,
                "part": {"type": "summary_text", "text": ""},
            })),
            _ => {}
        }
        let index = data["index"].as_u64().unwrap_or(u64::MAX);
        let mut open = Open {
            output_index,
            item_id: id,
            block: empty,
            partial_json: String::new(),
        };
        // A block may start with content (normally empty): stream it as a first delta.
        match kind.as_str() {
            "text" => self.text_delta(&mut open, block["text"].as_str().unwrap_or_default(), out),
            "thinking" => self.thinking_delta(
                &mut open,
                block["thinking"].as_str().unwrap_or_default(),
                out,
            ),
            "tool_use" | "server_tool_use" => {
                if let Some(input) = block
                    .get("input")
                    .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                {
                    self.args_delta(&mut open, &input.to_string(), out);
                }
            }
            _ => {}
        }
        self.open.insert(index, open);
    }

    /// The block as it starts (content emptied) and its item as `output_item.added` shows it: in progress, no content,
    /// arguments or encrypted content yet.
    fn started_item(&self, block: &Value, id: &str) -> (Value, Value) {
        let mut empty = block.clone();
        match block["type"].as_str().unwrap_or_default() {
            "text" => empty["text"] = json!(""),
            "thinking" => empty["thinking"] = json!(""),
            "tool_use" | "server_tool_use" => empty["input"] = json!({}),
            _ => {}
        }
        let mut added = output::item(&empty, id, &self.names).unwrap_or(Value::Null);
        match added["type"].as_str().unwrap_or_default() {
            "message" => added["content"] = json!([]),
            "function_call" => added["arguments"] = json!(""),
            _ => {}
        }
        if added.get("status").is_some() {
            added["status"] = json!("in_progress");
        }
        if let Some(o) = added.as_object_mut() {
            o.remove("encrypted_content");
        }
        (empty, added)
    }

    fn text_delta(&mut self, open: &mut Open, text: &str, out: &mut String) {
        if text.is_empty() {
            return;
        }
        let acc = format!("{}{text}", open.block["text"].as_str().unwrap_or_default());
        open.block["text"] = json!(acc);
        self.emit(out, "response.output_text.delta", json!({
            "item_id": open.item_id, "output_index": open.output_index, "content_index": 0, "delta": text, "logprobs": [],
        }));
    }

    fn thinking_delta(&mut self, open: &mut Open, text: &str, out: &mut String) {
        if text.is_empty() {
            return;
        }
        let acc = format!(
            "{}{text}",
            open.block["thinking"].as_str().unwrap_or_default()
        );
        open.block["thinking"] = json!(acc);
        self.emit(out, "response.reasoning_summary_text.delta", json!({
            "item_id": open.item_id, "output_index": open.output_index, "summary_index": 0, "delta": text,
        }));
    }

    fn args_delta(&mut self, open: &mut Open, partial: &str, out: &mut String) {
        if partial.is_empty() {
            return;
        }
        open.partial_json.push_str(partial);
        let is_function = open.output_index != usize::MAX
            && open.block["type"] == "tool_use"
            && matches!(
                self.names
                    .kind(open.block["name"].as_str().unwrap_or_default()),
                super::tools::CallKind::Function { .. }
            );
        if is_function {
            self.emit(
                out,
                "response.function_call_arguments.delta",
                json!({
                    "item_id": open.item_id, "output_index": open.output_index, "delta": partial,
                }),
            );
        }
    }

    fn block_delta(&mut self, data: &Value, out: &mut String) {
        let Some(index) = data["index"].as_u64() else {
            return;
        };
        let Some(mut open) = self.open.remove(&index) else {
            return;
        };
        let delta = &data["delta"];
        let text = |k: &str| delta.get(k).and_then(Value::as_str).unwrap_or_default();
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") if open.output_index != usize::MAX => {
                self.text_delta(&mut open, text("text"), out)
            }
            Some("thinking_delta") => self.thinking_delta(&mut open, text("thinking"), out),
            Some("signature_delta") => {
                let acc = format!(
                    "{}{}",
                    open.block["signature"].as_str().unwrap_or_default(),
                    text("signature")
                );
                open.block["signature"] = json!(acc);
            }
            Some("input_json_delta") => self.args_delta(&mut open, text("partial_json"), out),
            _ => {}
        }
        self.open.insert(index, open);
    }

    fn block_stop(&mut self, data: &Value, out: &mut String) {
        let Some(index) = data["index"].as_u64() else {
            return;
        };
        let Some(mut open) = self.open.remove(&index) else {
            return;
        };
        if !open.partial_json.is_empty() {
            open.block["input"] =
                serde_json::from_str(&open.partial_json).unwrap_or_else(|_| json!({}));
        }
        self.content.push(open.block.clone());
        if open.output_index == usize::MAX {
            return;
        }
        let Some(item) = output::item(&open.block, &open.item_id, &self.names) else {
            return;
        };
        let (id, oi) = (open.item_id.clone(), open.output_index);
        match item["type"].as_str().unwrap_or_default() {
            "message" => {
                let text = open.block["text"].clone();
                self.emit(out, "response.output_text.done", json!({
                    "item_id": id, "output_index": oi, "content_index": 0, "text": text, "logprobs": [],
                }));
                self.emit(out, "response.content_part.done", json!({
                    "item_id": id, "output_index": oi, "content_index": 0, "part": item["content"][0],
                }));
            }
            "reasoning" => {
                let text = open.block["thinking"].as_str().unwrap_or_default().to_string();
                if open.block["type"] == "thinking" {
                    self.emit(out, "response.reasoning_summary_text.done", json!({
                        "item_id": id, "output_index": oi, "summary_index": 0, "text": text,
                    }));
                    self.emit(out, "response.reasoning_summary_part.done", json!({
                        "item_id": id, "output_index": oi, "summary_index": 0,
                        "part": {"type": "summary_text", "text": text},
                    }));
                }
            }
            "function_call" => self.emit(out, "response.function_call_arguments.done", json!({
                "item_id": id, "output_index": oi, "name": item["name"], "arguments": item["arguments"],
            })),
            "custom_tool_call" => {
                self.emit(out, "response.custom_tool_call_input.delta", json!({
                    "item_id": id, "output_index": oi, "delta": item["input"],
                }));
                self.emit(out, "response.custom_tool_call_input.done", json!({
                    "item_id": id, "output_index": oi, "input": item["input"],
                }));
            }
            _ => {}
        }
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": oi, "item": item}),
        );
        self.output.push(item);
    }

    fn complete(&mut self, out: &mut String) {
        let (status, incomplete) = output::status(self.stop_reason.as_deref());
        let r = self.response(status, &incomplete, &Value::Null);
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({"response": r}));
        self.finished = true;
        self.done = true;
    }

    fn fail(&mut self, out: &mut String, code: &str, message: &str) {
        let error = json!({"code": code, "message": message});
        let r = self.response("failed", &Value::Null, &error);
        self.emit(out, "response.failed", json!({"response": r}));
        self.done = true;
    }
}

/// Translates a whole transcript at once (tests and snapshots).
#[cfg(test)]
pub fn translate_all(mut t: Translator, sse: &[u8]) -> String {
    let mut d = crate::sse::SseDecoder::default();
    let mut out = String::new();
    d.push(sse, &mut |e| t.event(&e, &mut out));
    t.end(&mut out, "upstream stream ended before message_stop");
    out
}

/// The Responses translator with the conversation's saver: a finished response is stored before the stream ends.
struct Saving {
    translator: Translator,
    saver: Option<Saver>,
}

impl EventTranslator for Saving {
    fn event(&mut self, ev: &SseEvent, out: &mut String) {
        self.translator.event(ev, out)
    }
    fn end(&mut self, out: &mut String, why: &str) {
        self.translator.end(out, why)
    }
    fn is_done(&self) -> bool {
        self.translator.is_done()
    }
    fn finish(&mut self) -> impl std::future::Future<Output = ()> + Send {
        let content = self.translator.finished_content().map(<[Value]>::to_vec);
        let save = self.saver.take().zip(content);
        let id = self.translator.id.clone();
        async move {
            if let Some((saver, content)) = save {
                saver.save(&id, content).await;
            }
        }
    }
}

/// Wraps a 2xx Anthropic SSE response into a Responses event stream with the same status and headers; a finished
/// response is stored through `saver` before the client's stream ends.
pub fn translate(response: Response, translator: Translator, saver: Option<Saver>) -> Response {
    event_stream(response, Saving { translator, saver })
}
