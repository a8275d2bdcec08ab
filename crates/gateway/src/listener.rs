//! The client-facing listener: HTTP/1.1 connections, each bounded in how long the client may take to send.
//!
//! hyper serves the connections; this module decides which connections exist and how long each may stay silent:
//! - **Connection cap**: at most `max_connections` at once; at the cap the listener stops accepting, so further
//!   clients wait in the kernel's backlog (no file descriptor is spent on them) until a connection closes.
//! - **Header-read timeout**: a request head must arrive whole within `header_read_timeout_secs` of its first byte.
//! - **Idle timeout**: a keep-alive connection with no request in progress closes after `idle_timeout_secs`.
//! - **Body-read timeout**: a request body must arrive whole within `body_read_timeout_secs` of its head (the handler
//!   answers 408 in the route's dialect).
//!
//! Invariant: the timeouts apply to reads from the client only, never to a response in progress: a connection whose
//! response is still being written (a long SSE stream) has no deadline, however long it runs.
//!
//! Cleartext HTTP/2 (h2c) is deliberately not spoken: the connections are HTTP/1.1 only (an HTTP/2 preface is
//! refused), so these limits hold for every connection, and the proxies in front (nginx) speak HTTP/1.1 upstream.
//!
//! Shutdown: [`serve`] stops accepting at once when `stop` resolves, lets every request in progress finish (idle
//! connections close), and returns when the last connection has closed.
//!
//! Threads: with [`Workers`] each accepted connection is handed, in turn, to a connection worker (a single-threaded
//! runtime, see [`workers`]) that serves it whole; without, connections run on the runtime that calls [`serve`].

pub mod workers;
pub use workers::Workers;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerConfig;

/// The listener's limits, as durations.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSettings {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

impl From<&ListenerConfig> for ListenerSettings {
    fn from(c: &ListenerConfig) -> Self {
        ListenerSettings {
            header_read_timeout: crate::clock::secs(c.header_read_timeout_secs),
            idle_timeout: crate::clock::secs(c.idle_timeout_secs),
            body_read_timeout: crate::clock::secs(c.body_read_timeout_secs),
            max_connections: c.max_connections,
        }
    }
}

/// A request body that did not arrive whole within the body-read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (listener.body_read_timeout_secs)")]
pub struct BodyReadTimeout(pub Duration);

/// What answers a connection's requests (the gateway's is `crate::dispatch::App`).
pub trait Handler: Clone + Send + Sync + 'static {
    fn handle(
        &self,
        req: axum::extract::Request,
    ) -> impl Future<Output = axum::response::Response> + Send;
}

/// Serves `app` on `listener` until `stop` resolves and every connection has closed; on `workers` when given.
pub async fn serve<A: Handler>(
    listener: TcpListener,
    app: A,
    settings: ListenerSettings,
    workers: Option<&Workers>,
    stop: impl Future<Output = ()>,
) {
    let connections = TaskTracker::new();
    let drain = CancellationToken::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let mut warned: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = take_slot(&slots, &mut warned) => slot,
        };
        let (tcp, remote) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: keep serving the others.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (app, drain) = (app.clone(), drain.clone());
        match workers {
            Some(w) => match tcp.into_std() {
                // Registered again with the worker's own reactor, on the worker.
                Ok(tcp) => {
                    connections.spawn_on(
                        async move {
                            match TcpStream::from_std(tcp) {
                                Ok(tcp) => connection(tcp, remote, app, settings, drain, slot).await,
                                Err(e) => tracing::warn!(error = %e, "could not hand a connection to a worker"),
                            }
                        },
                        w.next(),
                    );
                }
                Err(e) => tracing::warn!(error = %e, "could not hand a connection to a worker"),
            },
            None => {
                connections.spawn(connection(tcp, remote, app, settings, drain, slot));
            }
        }
    }
    // New connections are refused from here on; the ones open finish what they are doing.
    drop(listener);
    drain.cancel();
    connections.close();
    connections.wait().await;
}

/// A connection slot, waiting while every slot is taken (and saying so at most once a minute).
async fn take_slot(slots: &Arc<Semaphore>, warned: &mut Option<Instant>) -> OwnedSemaphorePermit {
    if let Ok(slot) = Arc::clone(slots).try_acquire_owned() {
        return slot;
    }
    metrics::counter!("gateway_connection_cap_reached_total").increment(1);
    if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
        *warned = Some(Instant::now());
        tracing::warn!("the connection cap (listener.max_connections) is reached; new clients wait until one closes");
    }
    match Arc::clone(slots).acquire_owned().await {
        Ok(slot) => slot,
        // The semaphore is never closed; should it be, waiting forever is the safe answer.
        Err(_) => std::future::pending().await,
    }
}

/// One client connection: HTTP/1.1 with keep-alive, closed by the watchdog when the client is too slow or idle.
async fn connection<A: Handler>(
    tcp: TcpStream,
    remote: SocketAddr,
    app: A,
    settings: ListenerSettings,
    drain: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    metrics::gauge!("gateway_client_connections").increment(1.0);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: Arc::clone(&activity),
    });
    let on_request = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_progress = RequestInProgress::start(Arc::clone(&on_request));
        let mut req =
            req.map(|body| axum::body::Body::new(TimedBody::new(body, settings.body_read_timeout)));
        req.extensions_mut().insert(ConnectInfo(remote));
        let app = app.clone();
        async move {
            let response = app.handle(req).await;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                inner: body,
                _in_progress: in_progress,
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let expired = activity.expired(settings);
    tokio::pin!(expired);
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %remote, "client connection ended with an error");
                }
                break;
            }
            why = &mut expired => {
                tracing::debug!(%remote, why, "closing a client connection");
                metrics::counter!("gateway_client_connections_closed_total", "reason" => why).increment(1);
                break;
            }
            () = drain.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    metrics::gauge!("gateway_client_connections").decrement(1.0);
}

// === Activity: what a connection is doing, for its watchdog ===

/// Marks "no time recorded".
const NONE: u64 = u64::MAX;

/// What one connection is doing, shared by its socket (reads), its service (requests) and its watchdog.
///
/// Nothing here wakes the watchdog: it looks at the state when its timer fires, and its timer never sleeps longer than
/// the shorter timeout ([`Activity::expired`]). A request's start and end and a head's first byte are a few atomic
/// stores, not a wake-up of the connection's task (which would poll hyper's connection again for nothing).
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    /// Requests whose response has not been written whole yet.
    in_progress: AtomicUsize,
    /// When the first byte of a request head arrived while no request was in progress (ms since `epoch`), or NONE.
    head_since: AtomicU64,
    /// When the connection last became idle (ms since `epoch`).
    idle_since: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            in_progress: AtomicUsize::new(0),
            head_since: AtomicU64::new(NONE),
            idle_since: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Bytes arrived from the client.
    fn read(&self) {
        if self.in_progress.load(Ordering::Acquire) == 0
            && self.head_since.load(Ordering::Acquire) == NONE
        {
            let _ = self.head_since.compare_exchange(
                NONE,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// The deadline that applies now: none while a request is in progress.
    fn deadline(&self, s: ListenerSettings) -> Option<(Instant, &'static str)> {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::Acquire) {
            NONE => Some((
                self.at(self.idle_since.load(Ordering::Acquire)) + s.idle_timeout,
                "idle",
            )),
            since => Some((self.at(since) + s.header_read_timeout, "header_timeout")),
        }
    }

    /// Resolves (with the reason) once the connection has been idle, or sending a head, for too long.
    ///
    /// Exact without being told of changes: every deadline lies at least `min(header, idle timeout)` after the change
    /// that set it (a head's first byte, the end of a request), and the watchdog looks again at most that long after
    /// it last looked, so it always looks again before a deadline set since, then sleeps until that deadline.
    async fn expired(&self, s: ListenerSettings) -> &'static str {
        let look_again = s
            .header_read_timeout
            .min(s.idle_timeout)
            .max(Duration::from_millis(1));
        loop {
            let now = Instant::now();
            let wake = match self.deadline(s) {
                Some((at, why)) if at <= now => return why,
                Some((at, _)) => at.min(now + look_again),
                None => now + look_again,
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// A request from its head until its response has been written whole (or dropped).
#[derive(Debug)]
struct RequestInProgress(Arc<Activity>);

impl RequestInProgress {
    fn start(activity: Arc<Activity>) -> RequestInProgress {
        activity.in_progress.fetch_add(1, Ordering::AcqRel);
        activity.head_since.store(NONE, Ordering::Release);
        RequestInProgress(activity)
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now_ms(), Ordering::Release);
        a.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

// === Watched: the socket, reporting reads ===

struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// === Bodies: the request's with a deadline, the response's holding the request in progress ===

/// The request body, failing with [`BodyReadTimeout`] once its deadline has passed. The timer is set only when a read
/// has to wait (most bodies arrive with their head and never need one).
struct TimedBody {
    inner: Incoming,
    /// When the body's time runs out.
    until: Instant,
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> TimedBody {
        TimedBody {
            inner,
            until: Instant::now() + timeout,
            deadline: None,
            timeout,
        }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let until = self.until;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyReadTimeout(self.timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body; the request counts as in progress until it is written whole or dropped.
struct Tracked {
    inner: axum::body::Body,
    _in_progress: RequestInProgress,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod watchdog_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{Activity, ListenerSettings, RequestInProgress};

    fn settings(header: u64, idle: u64) -> ListenerSettings {
        ListenerSettings {
            header_read_timeout: Duration::from_secs(header),
            idle_timeout: Duration::from_secs(idle),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 1,
        }
    }

    /// When `expired` resolves, and why, with `during` running alongside it (paused time).
    async fn expiry(
        activity: &Arc<Activity>,
        s: ListenerSettings,
        during: impl std::future::Future<Output = ()>,
    ) -> (Duration, &'static str) {
        let start = Instant::now();
        let (why, ()) = tokio::join!(activity.expired(s), during);
        (start.elapsed(), why)
    }

    /// One request on the connection: its head arrives at once, its response takes `lasts`.
    async fn one_request(activity: Arc<Activity>, lasts: Duration) {
        activity.read();
        let request = RequestInProgress::start(Arc::clone(&activity));
        tokio::time::sleep(lasts).await;
        drop(request);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_exactly_at_the_idle_timeout() {
        let a = Arc::new(Activity::new());
        let (after, why) = expiry(&a, settings(30, 120), async {}).await;
        assert_eq!((after, why), (Duration::from_secs(120), "idle"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_begun_while_the_watchdog_sleeps_expires_at_its_own_deadline() {
        // The watchdog is asleep toward the idle deadline (120 s) when the head's first byte arrives at 50 s: nobody
        // tells it, yet it closes at 50 + 30 s.
        let a = Arc::new(Activity::new());
        let reader = Arc::clone(&a);
        let (after, why) = expiry(&a, settings(30, 120), async move {
            tokio::time::sleep(Duration::from_secs(50)).await;
            reader.read();
        })
        .await;
        assert_eq!((after, why), (Duration::from_secs(80), "header_timeout"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_has_no_deadline_and_idleness_counts_from_its_end() {
        let a = Arc::new(Activity::new());
        // A response written for an hour: longer than every timeout.
        let request = one_request(Arc::clone(&a), Duration::from_secs(3600));
        let (after, why) = expiry(&a, settings(30, 120), request).await;
        assert_eq!((after, why), (Duration::from_secs(3600 + 120), "idle"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_timeout_shorter_than_the_header_timeout_is_exact_too() {
        let a = Arc::new(Activity::new());
        let request = one_request(Arc::clone(&a), Duration::from_millis(61_500));
        let (after, why) = expiry(&a, settings(30, 2), request).await;
        assert_eq!((after, why), (Duration::from_millis(63_500), "idle"));
    }
}
