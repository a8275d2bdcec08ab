//! Response helpers: JSON, Anthropic errors, headers, the drop-connection marker.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde_json::{json, Value};

use crate::state::{lock_log, request_id, ResponseLog};

/// Response extension telling the connection layer to close the connection without answering.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DropConnection;

pub(crate) fn drop_connection() -> Response {
    let mut r = Response::new(Body::empty());
    r.extensions_mut().insert(DropConnection);
    r
}

pub(crate) fn is_dropped(resp: &Response) -> bool {
    resp.extensions().get::<DropConnection>().is_some()
}

pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Set (replace) a header; invalid names or values are ignored.
pub(crate) fn set_header(resp: &mut Response, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (
        HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
        HeaderValue::from_str(value),
    ) {
        resp.headers_mut().insert(n, v);
    }
}

pub(crate) fn set_headers(resp: &mut Response, headers: &[(String, String)]) {
    for (n, v) in headers {
        set_header(resp, n, v);
    }
}

/// An Anthropic error: `{"type":"error","error":{"type","message"},"request_id"}` plus `request-id`.
pub(crate) fn api_error(status: u16, error_type: &str, message: &str) -> Response {
    let rid = request_id();
    let mut r = json_response(
        status_code(status),
        &json!({
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": rid,
        }),
    );
    set_header(&mut r, "request-id", &rid);
    r
}

/// An OAuth-style error: `{"error","error_description"}`.
pub(crate) fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    json_response(
        status_code(status),
        &json!({"error": error, "error_description": description}),
    )
}

/// A response body that appends every data chunk to `log` as it hands it to the server.
/// Size hint and end of stream are the inner body's, so `content-length` is kept.
pub(crate) struct RecordingBody {
    inner: Body,
    log: ResponseLog,
}

impl RecordingBody {
    pub(crate) fn new(inner: Body, log: ResponseLog) -> RecordingBody {
        RecordingBody { inner, log }
    }
}

impl HttpBody for RecordingBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(data) = frame
            .as_ref()
            .and_then(|f| f.as_ref().ok())
            .and_then(Frame::data_ref)
            .filter(|d| !d.is_empty())
        {
            lock_log(&self.log).push(data.clone());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
