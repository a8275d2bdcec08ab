//! Anthropic SSE events → OpenAI `chat.completion.chunk`s, event by event.
//!
//! Each upstream chunk is decoded as it arrives and the chunks it completes are written at once, so tokens reach the
//! client as they are generated and backpressure still reaches upstream (the body is pulled only when the client can
//! take more). The stream ends with `data: [DONE]` after `message_stop`. An upstream `event: error` — or a stream that
//! ends without `message_stop` — ends it instead with `data: {"error":{…}}` and no `[DONE]`: the OpenAI SDKs raise an
//! `APIError` for a data payload with an `error` key, and a client waiting for `[DONE]` sees an incomplete stream.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::response::{completion_id, finish_reason, Labels, Usage};
use crate::error::{openai_error_body, openai_kind};
use crate::sse::{SseDecoder, SseEvent};

/// A tool_use block being streamed: its Anthropic block index and whether any argument text went out.
#[derive(Debug)]
struct ToolBlock {
    block: u64,
    args_sent: bool,
}

/// The translation state of one stream.
#[derive(Debug)]
pub struct Translator {
    labels: Labels,
    id: String,
    model: String,
    /// tool_use blocks in order; a block's position is its OpenAI `tool_calls[].index`.
    tools: Vec<ToolBlock>,
    usage: Usage,
    finish_sent: bool,
    /// `[DONE]` or an error went out: nothing more is written.
    done: bool,
}

impl Translator {
    pub fn new(labels: Labels) -> Translator {
        Translator {
            id: completion_id(None),
            model: labels.model.clone(),
            labels,
            tools: Vec::new(),
            usage: Usage::default(),
            finish_sent: false,
            done: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends the OpenAI SSE frames for one Anthropic event to `out`.
    pub fn event(&mut self, ev: &SseEvent, out: &mut String) {
        if self.done {
            return;
        }
        let (kind, data) = match ev.anthropic() {
            Ok(read) => read,
            Err(unreadable) => {
                if let Some(why) = unreadable.failure() {
                    self.error(out, "api_error", why);
                }
                return;
            }
        };
        let kind = kind.as_str();
        match kind {
            "message_start" => {
                let m = &data["message"];
                self.id = completion_id(m.get("id").and_then(Value::as_str));
                if let Some(model) = m.get("model").and_then(Value::as_str) {
                    self.model = model.to_string();
                }
                self.usage.update(m.get("usage"));
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            "content_block_start" => self.block_start(&data, out),
            "content_block_delta" => self.block_delta(&data, out),
            "content_block_stop" => {
                let block = data.get("index").and_then(Value::as_u64);
                if let Some(i) = self.tools.iter().position(|t| Some(t.block) == block) {
                    if !self.tools[i].args_sent {
                        // A call without arguments: send `{}` so the arguments parse as JSON.
                        self.tool_args(out, i, "{}");
                    }
                }
            }
            "message_delta" => {
                self.usage.update(data.get("usage"));
                let reason = data.pointer("/delta/stop_reason").and_then(Value::as_str);
                if reason.is_some() && !self.finish_sent {
                    self.finish_sent = true;
                    self.chunk(out, json!({}), Some(finish_reason(reason)));
                }
            }
            "message_stop" => {
                if !self.finish_sent {
                    self.finish_sent = true;
                    self.chunk(out, json!({}), Some("stop"));
                }
                if self.labels.include_usage {
                    let mut c = self.base();
                    c["choices"] = json!([]);
                    c["usage"] = self.usage.openai();
                    frame(out, &c);
                }
                out.push_str("data: [DONE]\n\n");
                self.done = true;
            }
            "error" => {
                let e = crate::error::AnthropicError::of_value(&data);
                let m = e.message.as_deref().unwrap_or("upstream stream failed");
                self.error(out, e.kind_or_api_error(), m);
            }
            // ping, and event types added later
            _ => {}
        }
    }

    /// The upstream ended (or broke) here.
    pub fn end(&mut self, out: &mut String, message: &str) {
        if !self.done {
            self.error(out, "api_error", message);
        }
    }

    fn block_start(&mut self, data: &Value, out: &mut String) {
        let block = &data["content_block"];
        match block.get("type").and_then(Value::as_str) {
            Some("tool_use") => {
                let index = self.tools.len();
                self.tools.push(ToolBlock {
                    block: data
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(u64::MAX),
                    args_sent: false,
                });
                let call = json!({
                    "index": index,
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": ""},
                });
                self.chunk(out, json!({"tool_calls": [call]}), None);
                // Blocks normally start with `input: {}` and stream the arguments; a non-empty one is sent whole.
                if let Some(input) = block
                    .get("input")
                    .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                {
                    self.tool_args(out, index, &input.to_string());
                }
            }
            Some("text") => {
                if let Some(t) = block
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    self.chunk(out, json!({"content": t}), None);
                }
            }
            Some("thinking") => {
                if let Some(t) = block
                    .get("thinking")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    self.chunk(out, json!({"reasoning_content": t}), None);
                }
            }
            _ => {}
        }
    }

    fn block_delta(&mut self, data: &Value, out: &mut String) {
        let delta = &data["delta"];
        let text = |k: &str| delta.get(k).and_then(Value::as_str).unwrap_or_default();
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => self.chunk(out, json!({"content": text("text")}), None),
            Some("thinking_delta") => {
                self.chunk(out, json!({"reasoning_content": text("thinking")}), None)
            }
            Some("input_json_delta") => {
                let block = data.get("index").and_then(Value::as_u64);
                let partial = text("partial_json");
                if let Some(i) = self.tools.iter().position(|t| Some(t.block) == block) {
                    if !partial.is_empty() {
                        self.tool_args(out, i, partial);
                    }
                }
            }
            // signature_delta, citations_delta: nothing an OpenAI client can use.
            _ => {}
        }
    }

    fn tool_args(&mut self, out: &mut String, index: usize, args: &str) {
        if let Some(t) = self.tools.get_mut(index) {
            t.args_sent = true;
        }
        let call = json!({"index": index, "function": {"arguments": args}});
        self.chunk(out, json!({"tool_calls": [call]}), None);
    }

    fn base(&self) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.labels.created,
            "model": self.model,
        })
    }

    fn chunk(&self, out: &mut String, delta: Value, finish: Option<&str>) {
        let mut c = self.base();
        c["choices"] =
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
        frame(out, &c);
    }

    fn error(&mut self, out: &mut String, anthropic_type: &str, message: &str) {
        let status = match anthropic_type {
            "invalid_request_error" => axum::http::StatusCode::BAD_REQUEST,
            "rate_limit_error" => axum::http::StatusCode::TOO_MANY_REQUESTS,
            _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        };
        let (kind, code) = openai_kind(status, anthropic_type);
        frame(out, &openai_error_body(message, kind, None, code));
        self.done = true;
    }
}

fn frame(out: &mut String, v: &Value) {
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
}

/// Translates a whole transcript at once (tests and snapshots).
#[cfg(test)]
pub fn translate_all(labels: Labels, sse: &[u8]) -> String {
    let mut t = Translator::new(labels);
    let mut d = SseDecoder::default();
    let mut out = String::new();
    d.push(sse, &mut |e| t.event(&e, &mut out));
    t.end(&mut out, "upstream stream ended before message_stop");
    out
}

/// Whether an Anthropic answer is an SSE stream (else a JSON body).
pub(crate) fn is_event_stream(answer: &Response) -> bool {
    answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// A translator of Anthropic SSE events into a client's event stream (the chat and the Responses adapter each have
/// one); [`event_stream`] drives it.
pub(crate) trait EventTranslator: Send + 'static {
    /// Writes what `ev` turns into to `out`.
    fn event(&mut self, ev: &SseEvent, out: &mut String);
    /// The upstream body ended or broke (`why`) before the terminal event: writes the stream's failure.
    fn end(&mut self, out: &mut String, why: &str);
    /// Whether the client's stream is complete.
    fn is_done(&self) -> bool;
    /// Runs once when done, before the client's stream ends (the Responses adapter stores the conversation here).
    fn finish(&mut self) -> impl std::future::Future<Output = ()> + Send {
        std::future::ready(())
    }
}

impl EventTranslator for Translator {
    fn event(&mut self, ev: &SseEvent, out: &mut String) {
        Translator::event(self, ev, out)
    }
    fn end(&mut self, out: &mut String, why: &str) {
        Translator::end(self, out, why)
    }
    fn is_done(&self) -> bool {
        Translator::is_done(self)
    }
}

struct State<T> {
    body: axum::body::BodyDataStream,
    decoder: SseDecoder,
    translator: T,
}

/// Wraps a 2xx Anthropic SSE response into an OpenAI chunk stream with the same status and headers.
pub fn translate(response: Response, labels: Labels) -> Response {
    event_stream(response, Translator::new(labels))
}

/// Wraps a 2xx Anthropic SSE response into `translator`'s event stream with the same status and headers. Each upstream
/// chunk is translated as it arrives and the body is pulled only when the client takes more (backpressure).
pub(crate) fn event_stream(response: Response, translator: impl EventTranslator) -> Response {
    let (parts, body) = response.into_parts();
    let state = State {
        body: body.into_data_stream(),
        decoder: SseDecoder::default(),
        translator,
    };
    let events = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.translator.is_done() {
                st.translator.finish().await;
                // The client's stream ends here; the rest of the upstream body (normally nothing after message_stop)
                // is drained in the background so the relay sees its end and counts the stream correctly.
                let mut rest = st.body;
                #[allow(clippy::disallowed_methods)]
                // bounded: ends with the upstream body, which has a read timeout
                tokio::spawn(async move { while rest.next().await.is_some() {} });
                return None;
            }
            let mut out = String::new();
            match st.body.next().await {
                Some(Ok(chunk)) => {
                    let t = &mut st.translator;
                    st.decoder.push(&chunk, &mut |e| t.event(&e, &mut out));
                }
                Some(Err(_)) => st.translator.end(&mut out, "upstream stream broke"),
                None => st
                    .translator
                    .end(&mut out, "upstream stream ended before message_stop"),
            }
            if !out.is_empty() {
                return Some((Ok::<Bytes, Infallible>(Bytes::from(out)), st));
            }
        }
    });
    let mut out = Response::new(Body::from_stream(events));
    *out.status_mut() = parts.status;
    super::error::copy_headers(&parts.headers, out.headers_mut());
    out.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    out
}
