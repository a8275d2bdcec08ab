//! The fast upstream: a minimal hyper 1 responder that answers the Messages API with canned bodies, so that the direct
//! path is never the bottleneck (the simulator models Anthropic's behaviour and costs several times more per request).
//! `claude-gateway-bench --serve-upstream ADDR` runs it as a process of its own, whose CPU the suite measures.
//!
//! What it answers:
//! - `POST /v1/messages`: a valid Messages JSON (usage with the `cache_creation` breakdown), or, when the body says
//!   `"stream":true`, a valid SSE stream (`message_start`, `ping`, `content_block_start`, text deltas,
//!   `content_block_stop`, `message_delta`, `message_stop`), one event per HTTP chunk, `delay_ms` apart. A body field
//!   `"sim":{"events":N,"delay_ms":M}` (the simulator's) sets the stream's size and pacing; otherwise the defaults.
//! - `POST /v1/messages/count_tokens`: `{"input_tokens":…}`.
//! - `GET /v1/models…`: a one-model list (the gateway checks a credential with it only after a refusal).
//! - anything else: an Anthropic-shaped 404.
//!
//! It accepts any credential and checks nothing else: it is a floor to measure against, not a model of Anthropic.

use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// How the upstream runs and what its streams look like.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamConfig {
    /// Worker threads: 0 for a current-thread runtime.
    pub threads: usize,
    /// SSE events of a stream in all (frame included) when the request does not say.
    pub stream_events: usize,
    pub event_delay_ms: u64,
}

/// The events of a stream around its text deltas (`message_start`, `ping`, `content_block_start`,
/// `content_block_stop`, `message_delta`, `message_stop`).
pub const FRAME_EVENTS: usize = 6;

const MESSAGE: &str = r#"{"id":"msg_bench0000000000000000000001","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello from the fast upstream."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":250,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":8,"service_tier":"standard"}}"#;
const MODELS: &str = r#"{"data":[{"type":"model","id":"claude-sonnet-4-5","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"}],"has_more":false,"first_id":"claude-sonnet-4-5","last_id":"claude-sonnet-4-5"}"#;
const COUNT: &str = r#"{"input_tokens":250}"#;
const NOT_FOUND: &str =
    r#"{"type":"error","error":{"type":"not_found_error","message":"not found"}}"#;

/// The canned answers, built once.
struct Canned {
    /// Stream events for the default size, and the pieces to build other sizes.
    default_stream: Arc<[Bytes]>,
    config: UpstreamConfig,
}

/// `event: NAME\ndata: JSON\n\n`.
fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The events of a stream of `total` events (at least the frame and one delta).
pub fn stream_events(total: usize) -> Vec<Bytes> {
    let deltas = total.saturating_sub(FRAME_EVENTS).max(1);
    let mut ev = vec![
        event(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_bench0000000000000000000001","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":250,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}"#,
        ),
        event("ping", r#"{"type":"ping"}"#),
        event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
    ];
    let delta = event(
        "content_block_delta",
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"tok "}}"#,
    );
    ev.extend(std::iter::repeat_n(delta, deltas));
    ev.push(event(
        "content_block_stop",
        r#"{"type":"content_block_stop","index":0}"#,
    ));
    ev.push(event(
        "message_delta",
        &format!(
            r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn","stop_sequence":null}},"usage":{{"input_tokens":250,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":{deltas}}}}}"#
        ),
    ));
    ev.push(event("message_stop", r#"{"type":"message_stop"}"#));
    ev
}

/// A response body: canned bytes, or SSE events one frame each, `delay` apart.
enum Body {
    Full(Option<Bytes>),
    Events {
        events: Arc<[Bytes]>,
        next: usize,
        delay: Duration,
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    },
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Events {
                events,
                next,
                delay,
                sleep,
            } => {
                if *next >= events.len() {
                    return Poll::Ready(None);
                }
                if *next > 0 && !delay.is_zero() {
                    let s = sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(*delay)));
                    if s.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *sleep = None;
                }
                let e = events[*next].clone();
                *next += 1;
                Poll::Ready(Some(Ok(Frame::data(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_none(),
            Body::Events { events, next, .. } => *next >= events.len(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(Some(b)) => hyper::body::SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => hyper::body::SizeHint::with_exact(0),
            Body::Events { .. } => hyper::body::SizeHint::default(),
        }
    }
}

fn json(status: u16, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(Bytes::from_static(body.as_bytes()))));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    let h = r.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        "request-id",
        hyper::header::HeaderValue::from_static("req_bench_fast_upstream"),
    );
    r
}

/// The number after `"key":` in `body`, if any.
fn number_after(body: &[u8], key: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(body, key)?;
    let rest = &body[at + key.len()..];
    let rest = &rest[rest.iter().position(|b| !b" :".contains(b))?..];
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

fn wants_stream(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"stream\":true").is_some()
        || memchr::memmem::find(body, b"\"stream\": true").is_some()
}

impl Canned {
    fn stream(&self, body: &[u8]) -> Response<Body> {
        let (events, delay) = match memchr::memmem::find(body, b"\"sim\":") {
            Some(at) => {
                let sim = &body[at..body.len().min(at + 80)];
                let events = number_after(sim, b"\"events\"")
                    .map(|n| Arc::from(stream_events(n as usize + FRAME_EVENTS)))
                    .unwrap_or_else(|| self.default_stream.clone());
                let delay =
                    number_after(sim, b"\"delay_ms\"").unwrap_or(self.config.event_delay_ms);
                (events, delay)
            }
            None => (self.default_stream.clone(), self.config.event_delay_ms),
        };
        let mut r = Response::new(Body::Events {
            events,
            next: 0,
            delay: Duration::from_millis(delay),
            sleep: None,
        });
        r.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut().insert(
            "cache-control",
            hyper::header::HeaderValue::from_static("no-cache"),
        );
        r
    }

    async fn answer(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let (parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return Ok(json(400, NOT_FOUND));
        };
        let path = parts.uri.path();
        Ok(match (parts.method == hyper::Method::POST, path) {
            (true, "/v1/messages") if wants_stream(&body) => self.stream(&body),
            (true, "/v1/messages") => json(200, MESSAGE),
            (true, "/v1/messages/count_tokens") => json(200, COUNT),
            (false, p) if p.starts_with("/v1/models") => json(200, MODELS),
            _ => json(404, NOT_FOUND),
        })
    }
}

/// Serves on `listen` until killed; prints `listening on http://ADDR` on stderr once bound.
pub fn serve(listen: SocketAddr, config: UpstreamConfig) -> anyhow::Result<()> {
    let runtime = if config.threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(accept_loop(listen, config))
}

async fn accept_loop(listen: SocketAddr, config: UpstreamConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!(
        "fast upstream listening on http://{}",
        listener.local_addr()?
    );
    let canned = Arc::new(Canned {
        default_stream: Arc::from(stream_events(config.stream_events)),
        config,
    });
    serve_http1(listener, move |req| canned.clone().answer(req)).await
}

/// Serves HTTP/1.1 on every connection `listener` accepts, each request answered by `handle`, until the process is
/// killed (connections live until the client closes them). The fast upstream's loop and the hyper proxy's.
pub async fn serve_http1<H, F, B, E>(
    listener: tokio::net::TcpListener,
    handle: H,
) -> anyhow::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), hyper::service::service_fn(handle))
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_bodies_are_valid_json() {
        for body in [MESSAGE, MODELS, COUNT, NOT_FOUND] {
            serde_json::from_str::<serde_json::Value>(body).unwrap();
        }
        let m: serde_json::Value = serde_json::from_str(MESSAGE).unwrap();
        assert_eq!(m["usage"]["cache_creation"]["ephemeral_1h_input_tokens"], 0);
    }

    #[test]
    fn streams_have_the_asked_size_and_valid_events() {
        let ev = stream_events(200);
        assert_eq!(ev.len(), 200);
        let names: Vec<String> = ev
            .iter()
            .map(|e| {
                let text = std::str::from_utf8(e).unwrap();
                let data = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                let name = text
                    .lines()
                    .next()
                    .unwrap()
                    .strip_prefix("event: ")
                    .unwrap();
                assert_eq!(v["type"], name);
                assert!(text.ends_with("\n\n"));
                name.to_string()
            })
            .collect();
        assert_eq!(names[0], "message_start");
        assert_eq!(names[199], "message_stop");
        assert_eq!(names[198], "message_delta");
        assert_eq!(stream_events(1).len(), FRAME_EVENTS + 1);
    }

    #[test]
    fn reads_the_stream_flag_and_the_sim_overrides() {
        assert!(wants_stream(br#"{"model":"m","stream":true}"#));
        assert!(wants_stream(br#"{"model":"m", "stream": true}"#));
        assert!(!wants_stream(br#"{"model":"m","stream":false}"#));
        let sim = br#"{"sim":{"events":194,"delay_ms":5}}"#;
        assert_eq!(number_after(sim, b"\"events\""), Some(194));
        assert_eq!(number_after(sim, b"\"delay_ms\""), Some(5));
        assert_eq!(number_after(sim, b"\"missing\""), None);
    }
}
