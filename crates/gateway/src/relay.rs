//! Relaying an upstream SSE stream to the client.
//!
//! The original bytes pass through untouched, chunk by chunk as they arrive (the body is polled only when the client
//! can take more, so backpressure reaches upstream). A copy of each chunk feeds the [`SseDecoder`] to watch for
//! `message_start`, usage, `message_stop` and `event: error`. A stream that ends or breaks without `message_stop` gets a
//! final `event: error` and is counted as failed. Dropping the relay (client gone) drops the upstream response at once
//! and records the usage seen until then (input from `message_start`, output from the last `message_delta`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::pool::Slot;
use crate::sse::{SseDecoder, SseEvent};
use crate::usage::{Meter, UsageFields};

/// An upstream answer's body (read under the per-read timeout, see `crate::upstream::body`).
type Upstream = crate::upstream::Body;

/// Most bytes held back while waiting for `message_start`.
const MAX_HELD: usize = 1024 * 1024;

/// Most bytes of a non-stream answer kept to read its usage; a larger answer passes through unread.
const MAX_USAGE_TAP: usize = 4 * 1024 * 1024;

/// Counts the token usage of a whole non-stream answer.
pub fn record_usage_of(entry: &crate::pool::AccountEntry, body: &[u8], meter: Option<&Meter>) {
    let mut watch = StreamWatch::default();
    watch.usage(crate::usage::answer_usage(body).as_ref());
    if let Some(m) = meter {
        m.add_tokens(&watch.tokens);
    }
    entry.record_tokens(
        watch.input_tokens,
        watch.output_tokens,
        watch.cache_read_tokens,
        watch.cache_creation_tokens,
    );
}

/// A non-stream answer passed through untouched while a copy (bounded) is kept to count its token usage at the end.
pub struct UsageTap {
    upstream: Upstream,
    copy: Option<Vec<u8>>,
    slot: Slot,
    meter: Option<Meter>,
}

impl UsageTap {
    pub fn new(body: Upstream, slot: Slot, meter: Option<Meter>) -> Self {
        UsageTap {
            upstream: body,
            copy: Some(Vec::new()),
            slot,
            meter,
        }
    }
}

impl Stream for UsageTap {
    type Item = Result<Bytes, crate::upstream::UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let next = this.upstream.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(copy) = &mut this.copy {
                    if copy.len() + chunk.len() > MAX_USAGE_TAP {
                        this.copy = None;
                    } else {
                        copy.extend_from_slice(chunk);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(copy) = this.copy.take() {
                    record_usage_of(&this.slot.entry, &copy, this.meter.as_ref());
                }
            }
            _ => {}
        }
        next
    }
}

/// What the events seen so far say.
#[derive(Debug, Default)]
pub struct StreamWatch {
    decoder: SseDecoder,
    pub saw_start: bool,
    pub saw_stop: bool,
    /// `error.type` of an `event: error`.
    pub error: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_creation_tokens: u64,
    /// The same usage with cache writes split by lifetime.
    pub tokens: crate::store::tenants::Tokens,
}

impl StreamWatch {
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut events = Vec::new();
        self.decoder.push(chunk, &mut |e| events.push(e));
        for e in events {
            self.observe(e);
        }
    }

    fn observe(&mut self, e: SseEvent) {
        // Only the few events that matter are parsed; deltas pass by untouched.
        match e.event.as_deref() {
            Some("message_start") => {
                self.saw_start = true;
                self.usage(crate::usage::event_usage(&e.data, &["message", "usage"]).as_ref());
            }
            Some("message_delta") => {
                self.usage(crate::usage::event_usage(&e.data, &["usage"]).as_ref());
            }
            Some("message_stop") => self.saw_stop = true,
            Some("error") => {
                let parsed = crate::error::AnthropicError::parse(e.data.as_bytes());
                self.error = Some(parsed.kind_or_api_error().to_string());
            }
            _ => {}
        }
    }

    fn usage(&mut self, usage: Option<&UsageFields>) {
        let Some(u) = usage else { return };
        crate::usage::merge_usage(&mut self.tokens, u);
        if let Some(v) = u.input_tokens {
            self.input_tokens = v;
        }
        if let Some(v) = u.output_tokens {
            self.output_tokens = v; // cumulative in message_delta
        }
        if let Some(v) = u.cache_read_input_tokens {
            self.cache_read_tokens = v;
        }
        if let Some(v) = u.cache_creation_input_tokens {
            self.cache_creation_tokens = v;
        }
    }
}

/// The first moment of a stream, before anything reached the client.
pub enum Opened {
    /// `message_start` arrived: commit to this upstream.
    Started(Relay),
    /// An `event: error` (or the end) came before `message_start`: the caller may fail over; `relay` replays what
    /// arrived if it does not.
    Failed { relay: Relay, error: String },
}

/// A client-bound stream of the upstream's bytes.
pub struct Relay {
    upstream: Upstream,
    watch: StreamWatch,
    held: VecDeque<Bytes>,
    ended: bool,
    account: String,
    slot: Slot,
    meter: Option<Meter>,
}

impl Relay {
    /// Counts this stream's usage in the request's meter (set once the stream was chosen to answer).
    pub fn meter(&mut self, meter: Meter) {
        meter.first_byte();
        self.meter = Some(meter);
    }

    /// Reads the upstream until `message_start` (holding the bytes), an error event, or the end.
    pub async fn open(body: Upstream, slot: Slot, account: String) -> Opened {
        let mut relay = Relay {
            upstream: body,
            watch: StreamWatch::default(),
            held: VecDeque::new(),
            ended: false,
            account,
            slot,
            meter: None,
        };
        loop {
            match relay.upstream.next().await {
                Some(Ok(chunk)) => {
                    relay.watch.feed(&chunk);
                    relay.held.push_back(chunk);
                    if let Some(error) = relay.watch.error.clone() {
                        return Opened::Failed { relay, error };
                    }
                    if relay.held.iter().map(Bytes::len).sum::<usize>() > MAX_HELD {
                        // `message_start` is the first event; an upstream that sends this much without it is broken.
                        return Opened::Failed {
                            relay,
                            error: "api_error".into(),
                        };
                    }
                    if relay.watch.saw_start {
                        return Opened::Started(relay);
                    }
                }
                Some(Err(e)) => {
                    let error = if e.is_timeout() {
                        "timeout_error"
                    } else {
                        "api_error"
                    };
                    return Opened::Failed {
                        relay,
                        error: error.into(),
                    };
                }
                None => {
                    return Opened::Failed {
                        relay,
                        error: "api_error".into(),
                    }
                }
            }
        }
    }

    fn finish(&mut self, outcome: &'static str) {
        self.ended = true;
        metrics::counter!("gateway_streams_total", "outcome" => outcome).increment(1);
        self.record_usage();
        if let (Some(m), false) = (&self.meter, outcome == "complete") {
            m.error(self.watch.error.as_deref().unwrap_or("api_error"));
        }
    }

    /// Counts the tokens seen so far (Anthropic bills a stream's input from `message_start` on, and its output as far
    /// as it was generated, whether or not the client read it to the end).
    fn record_usage(&self) {
        let w = &self.watch;
        metrics::counter!("gateway_tokens_total", "kind" => "input").increment(w.input_tokens);
        metrics::counter!("gateway_tokens_total", "kind" => "output").increment(w.output_tokens);
        metrics::counter!("gateway_tokens_total", "kind" => "cache_read")
            .increment(w.cache_read_tokens);
        metrics::counter!("gateway_tokens_total", "kind" => "cache_creation")
            .increment(w.cache_creation_tokens);
        self.slot.entry.record_tokens(
            w.input_tokens,
            w.output_tokens,
            w.cache_read_tokens,
            w.cache_creation_tokens,
        );
        if let Some(m) = &self.meter {
            m.add_tokens(&w.tokens);
        }
    }

    fn failure_event(&mut self, message: &str) -> Bytes {
        self.finish("failed");
        tracing::warn!(account = %self.account, message, "stream failed");
        let body = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
        // End a partial event first so the error is parsed on its own.
        let sep = if self.watch.decoder_idle() {
            ""
        } else {
            "\n\n"
        };
        Bytes::from(format!("{sep}event: error\ndata: {body}\n\n"))
    }
}

impl StreamWatch {
    fn decoder_idle(&self) -> bool {
        self.decoder.is_idle()
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(chunk) = this.held.pop_front() {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match this.upstream.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.watch.feed(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                let msg = if e.is_timeout() {
                    "upstream stream stalled past the read timeout".to_string()
                } else {
                    "upstream stream broke before message_stop".to_string()
                };
                Poll::Ready(Some(Ok(this.failure_event(&msg))))
            }
            Poll::Ready(None) => {
                if this.watch.saw_stop {
                    this.finish("complete");
                    Poll::Ready(None)
                } else if this.watch.error.is_some() {
                    // The upstream already told the client what went wrong.
                    this.finish("failed");
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Ok(
                        this.failure_event("upstream stream ended before message_stop")
                    )))
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if !self.ended {
            // The client went away: the upstream response is dropped with us, and what it used so far is counted.
            metrics::counter!("gateway_streams_total", "outcome" => "client_gone").increment(1);
            self.record_usage();
            if let Some(m) = &self.meter {
                m.error("client_gone");
            }
            tracing::debug!(account = %self.account, "client left mid-stream; upstream request dropped");
        }
    }
}
