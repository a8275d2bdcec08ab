//! The bounded request-body reader every surface uses.
//!
//! Three bounds: one body is at most `max_body_bytes` (a declared oversize is refused before reading); it must arrive
//! within the listener's body-read timeout (408); and all bodies held in memory at once are at most
//! `listener.max_body_memory_bytes` together ([`BodyBudget`]: a body that would exceed it gets 503 with `retry-after`).
//! A body's share of the budget is given back when the last copy of its bytes is dropped.

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::GatewayError;
use crate::state::AppState;

/// A body's bytes with their share of the budget, given back when the bytes are dropped.
struct Held {
    bytes: Bytes,
    _share: Option<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads a request body up to the configured limit; a declared length over it is refused before reading anything.
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, GatewayError> {
    let limit = state.config.max_body_bytes;
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let budget = &state.bodies;
    let mut share = None;
    let declared = declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    budget.take(&mut share, declared)?;
    let mut charged = declared;
    let mut buf = BytesMut::with_capacity(declared);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(read_error)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = buf.len() + data.len();
        if u64::try_from(len).unwrap_or(u64::MAX) > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        if len > charged {
            budget.take(&mut share, len - charged)?;
            charged = len;
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from_owner(Held {
        bytes: buf.freeze(),
        _share: share,
    }))
}

/// A failed read: the client was too slow (408), or the connection broke.
fn read_error(e: axum::Error) -> GatewayError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<crate::listener::BodyReadTimeout>() {
            return GatewayError::BodyTimeout(t.to_string());
        }
        cause = c.source();
    }
    GatewayError::InvalidRequest(format!("could not read the request body: {e}"))
}
