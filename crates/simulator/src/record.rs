//! The record of what the simulator answered: each request's response body chunks, as the server sent them.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// The body chunks sent for one recorded request, shared by its record and its body.
pub(crate) type ResponseLog = Arc<Mutex<Vec<Bytes>>>;

pub(crate) fn lock_log(log: &ResponseLog) -> MutexGuard<'_, Vec<Bytes>> {
    log.lock().unwrap_or_else(|e| e.into_inner())
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
