//! An upstream response body read under a per-read timeout.
//!
//! Promise: the body fails with [`UpstreamError::Timeout`] only when upstream stayed silent for the whole read timeout
//! while the gateway was waiting for it. The clock runs only while a read waits (from the first poll that finds
//! nothing, reset by every frame), so a stream that keeps sending is never cut however long it lasts, and a slow
//! client (backpressure: the body is not polled) is not blamed on upstream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};

use super::pool::Lease;
use super::UpstreamError;

/// An upstream response body (`B` is hyper's `Incoming` outside tests).
pub struct Body<B = hyper::body::Incoming> {
    inner: B,
    timeout: Duration,
    /// Made on the first read that has to wait, then reset: most small answers arrive with their head and never wait.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` runs for the read in progress.
    armed: bool,
    /// The HTTP/1.1 connection the body comes on, put back in its pool when the body ends.
    lease: Option<Lease>,
}

impl<B> Body<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    #[cfg(test)]
    pub fn new(inner: B, timeout: Duration) -> Self {
        Body::leased(inner, timeout, None)
    }

    /// A body that gives its connection back to the pool at its end (at once when it has none).
    pub fn leased(inner: B, timeout: Duration, lease: Option<Lease>) -> Self {
        let mut body = Body {
            inner,
            timeout,
            sleep: None,
            armed: false,
            lease,
        };
        body.release_at_end();
        body
    }

    /// Puts the connection back once the body has ended.
    fn release_at_end(&mut self) {
        if self.lease.is_some() && self.inner.is_end_stream() {
            self.release();
        }
    }

    /// Puts the connection back in its pool.
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }

    /// The body's length when upstream declared it.
    pub fn exact_len(&self) -> Option<u64> {
        self.inner.size_hint().exact()
    }

    /// The next chunk of data (trailers are skipped); `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        while let Some(frame) = self.frame().await {
            if let Ok(data) = frame?.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// The whole body.
    pub async fn bytes(self) -> Result<Bytes, UpstreamError> {
        Ok(self.collect().await?.to_bytes())
    }

    /// Waits for the read timeout to pass from the first wait of this read.
    fn poll_silence(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let timeout = self.timeout;
        let sleep = match &mut self.sleep {
            Some(s) => {
                if !self.armed {
                    s.as_mut().reset(Instant::now() + timeout);
                }
                s
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep(timeout))),
        };
        self.armed = true;
        sleep.as_mut().poll(cx)
    }
}

impl<B> HttpBody for Body<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                match &frame {
                    None => this.release(),
                    Some(Ok(_)) => this.release_at_end(),
                    // A broken connection is not kept.
                    Some(Err(_)) => this.lease = None,
                }
                Poll::Ready(frame.map(|f| f.map_err(|e| UpstreamError::of(&e))))
            }
            Poll::Pending => match this.poll_silence(cx) {
                Poll::Ready(()) => {
                    this.armed = false;
                    Poll::Ready(Some(Err(UpstreamError::Timeout)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body as a stream of data chunks (trailers skipped), for the relays.
impl<B> futures_util::Stream for Body<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match std::task::ready!(self.as_mut().poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::sync::mpsc;

    /// A body fed by the test, chunk by chunk.
    struct Fed(mpsc::UnboundedReceiver<Bytes>);

    impl HttpBody for Fed {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|c| c.map(|c| Ok(Frame::data(c))))
        }
    }

    const T: Duration = Duration::from_secs(300);

    fn fed() -> (mpsc::UnboundedSender<Bytes>, Body<Fed>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Body::new(Fed(rx), T))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_sending_is_never_cut() {
        let (tx, mut body) = fed();
        let feed = async move {
            // 100 chunks, each just inside the read timeout: 100 times the timeout in all.
            for i in 0..100u32 {
                tokio::time::sleep(T - Duration::from_millis(1)).await;
                tx.send(Bytes::from(i.to_string())).unwrap();
            }
        };
        let read = async {
            let started = Instant::now();
            let mut n = 0;
            while let Some(chunk) = body.next().await {
                chunk.unwrap();
                n += 1;
            }
            (n, started.elapsed())
        };
        let ((), (n, took)) = tokio::join!(feed, read);
        assert_eq!(n, 100);
        assert!(took > T * 99);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_for_the_whole_read_timeout_fails_with_a_timeout() {
        let (tx, mut body) = fed();
        tx.send(Bytes::from_static(b"first")).unwrap();
        assert_eq!(body.chunk().await.unwrap().unwrap(), "first");
        let started = Instant::now();
        let e = body.chunk().await.unwrap_err();
        assert!(e.is_timeout());
        assert_eq!(started.elapsed(), T);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_reader_does_not_read_is_not_upstream_silence() {
        let (tx, mut body) = fed();
        tx.send(Bytes::from_static(b"a")).unwrap();
        assert_eq!(body.chunk().await.unwrap().unwrap(), "a");
        // The client is slow: nothing polls the body for three read timeouts, while upstream sent the next chunk.
        tokio::time::sleep(T * 3).await;
        tx.send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(body.chunk().await.unwrap().unwrap(), "b");
        // A wait that starts now gets the whole timeout again.
        let feed = async {
            tokio::time::sleep(T - Duration::from_secs(1)).await;
            tx.send(Bytes::from_static(b"c")).unwrap();
        };
        let ((), c) = tokio::join!(feed, body.chunk());
        assert_eq!(c.unwrap().unwrap(), "c");
        drop(tx);
        assert!(body.chunk().await.unwrap().is_none());
    }
}
