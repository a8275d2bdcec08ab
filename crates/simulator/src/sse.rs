//! Writing SSE events one body chunk at a time, with pacing, faults and disconnect detection.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::state::{DisconnectGuard, InFlightGuard};

/// `event: NAME\ndata: JSON\n\n`, with `"type"` first in the data object as the real API sends it.
pub(crate) fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {}\n\n", type_first(data)))
}

fn type_first(data: &Value) -> String {
    match (data.as_object(), data.get("type")) {
        (Some(obj), Some(t)) => {
            let mut out = format!("{{\"type\":{t}");
            for (k, v) in obj.iter().filter(|(k, _)| k.as_str() != "type") {
                out.push(',');
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                out.push_str(&v.to_string());
            }
            out.push('}');
            out
        }
        _ => data.to_string(),
    }
}

pub(crate) fn overloaded_event() -> Bytes {
    event(
        "error",
        &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    )
}

/// What happens after `n` chunks of a body were sent.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BodyFault {
    /// End the body with an error: the connection is closed mid-body.
    Cut(usize),
    /// Send an `event: error` overloaded_error and end normally.
    Error(usize),
    /// Hang forever.
    Stall(usize),
}

impl BodyFault {
    fn position(self) -> usize {
        match self {
            BodyFault::Cut(n) | BodyFault::Error(n) | BodyFault::Stall(n) => n,
        }
    }
}

struct Chunks {
    chunks: VecDeque<Bytes>,
    sent: usize,
    delay: Duration,
    fault: Option<BodyFault>,
    ended: bool,
    guard: DisconnectGuard,
    _in_flight: Option<InFlightGuard>,
}

/// A body that yields `chunks` one by one (each its own frame), `delay` apart. If the body is
/// dropped before its end (the client went away), `guard` counts a disconnect.
pub(crate) fn chunked_body(
    chunks: Vec<Bytes>,
    delay: Duration,
    fault: Option<BodyFault>,
    guard: DisconnectGuard,
    in_flight: Option<InFlightGuard>,
) -> Body {
    let state = Chunks {
        chunks: chunks.into(),
        sent: 0,
        delay,
        fault,
        ended: false,
        guard,
        _in_flight: in_flight,
    };
    Body::from_stream(futures_util::stream::unfold(state, next_chunk))
}

async fn next_chunk(mut st: Chunks) -> Option<(io::Result<Bytes>, Chunks)> {
    if st.ended {
        return None;
    }
    let fault_here = st.fault.filter(|f| f.position() == st.sent);
    if fault_here.is_none() && st.chunks.is_empty() {
        st.ended = true;
        st.guard.done();
        return None;
    }
    if st.sent > 0 && !st.delay.is_zero() {
        tokio::time::sleep(st.delay).await;
    }
    match fault_here {
        Some(BodyFault::Cut(_)) => {
            // Let hyper flush what was sent so far: on a body error it closes the connection
            // without writing out its buffer. One `Pending` makes it flush first.
            tokio::task::yield_now().await;
            st.ended = true;
            st.guard.done();
            return Some((Err(io::Error::other("simulated cut of the body")), st));
        }
        Some(BodyFault::Error(_)) => {
            st.ended = true;
            st.guard.done();
            return Some((Ok(overloaded_event()), st));
        }
        Some(BodyFault::Stall(_)) => {
            // Hang until the client goes away (the guard then counts a disconnect).
            std::future::pending::<()>().await;
        }
        None => {}
    }
    let chunk = st.chunks.pop_front()?;
    st.sent += 1;
    Some((Ok(chunk), st))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn event_puts_type_first() {
        let e = event(
            "message_delta",
            &json!({"usage": {"output_tokens": 3}, "type": "message_delta", "a\"b": 1}),
        );
        let text = String::from_utf8(e.to_vec()).unwrap();
        assert!(text.starts_with("event: message_delta\ndata: {\"type\":\"message_delta\","));
        assert!(text.ends_with("}\n\n"));
        let data: Value =
            serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(data["usage"]["output_tokens"], 3);
        assert_eq!(data["a\"b"], 1);
    }
}
