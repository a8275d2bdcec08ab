//! Response helpers: JSON, Anthropic errors, headers, the drop-connection marker.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::ids::request_id;

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
