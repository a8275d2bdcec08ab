//! The connections of one [`super::Client`]: idle HTTP/1.1 connections, and one shared HTTP/2 connection, per origin
//! (scheme and authority), opened by [`Connector`].
//!
//! Why ours and not hyper-util's pooled client: with it, a request cost about 10 k instructions more on its thread
//! (callgrind, 3,000 small requests against the benchmark's fast upstream, the store's thread left out: 75 k against
//! 65 k): its pool key hashed with SipHash three times, a task spawned for every HTTP/1 answer to put its
//! connection back, the port and `host` worked out again for every request, large futures moved. Here a request scans
//! the few origins under one uncontended lock, the `host` value is made once per origin, and an HTTP/1 connection
//! goes back when its answer's body ends ([`Lease`], held by [`super::Body`]), with no task.
//!
//! What it keeps of hyper-util's pool (the tests here and `tests/upstream.rs` pin each):
//! - HTTP/1.1: one request at a time on a connection; a connection is taken again only once its previous answer was
//!   read to the end (a body dropped before its end closes its connection: hyper's rule); the most recently used
//!   first.
//! - HTTP/2 when ALPN picks it: one connection per origin for all requests; a closed one (hyper closes it once
//!   upstream's GOAWAY arrives) is replaced by the next request's.
//! - A request that a reused connection dropped before writing it (upstream closed an idle keep-alive connection just
//!   as it was taken) is sent on another connection: it never reached upstream. A fresh connection's is not.
//! - Idle connections are closed after the idle timeout (60 s): never taken after it, and dropped when it passes by
//!   a reaper task that runs only while some connection is idle.
//! - `host` for HTTP/1.1 when the request has none (the port only when it is not the scheme's); origin-form request
//!   targets, absolute form through a forwarding proxy.
//!
//! Not kept: waiting for an HTTP/2 connection being opened (a burst before the first is up opens several; the extras
//! serve their own request and close), connection poisoning, connection info on answers (unused).
//!
//! Must not know: what the request is, timeouts (the caller bounds the whole send), retries beyond the reuse race.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST};
use http::uri::{Authority, Scheme};
use http::{Request, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::rt::Executor;
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower::Service as _;

use super::connect::Connector;
use super::UpstreamError;

#[cfg(test)]
mod tests;

type H1 = http1::SendRequest<Full<Bytes>>;
type H2 = http2::SendRequest<Full<Bytes>>;

/// How long an unused connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The pool of one client.
pub struct Pool {
    shared: Arc<Shared>,
    connector: Connector,
    h2: http2::Builder<TokioExecutor>,
}

/// What leases and the reaper reach too.
struct Shared {
    idle_timeout: Duration,
    origins: Mutex<Origins>,
}

#[derive(Default)]
struct Origins {
    list: Vec<Origin>,
    /// Whether a reaper task runs (it ends when nothing is idle).
    reaping: bool,
}

/// The connections kept to one origin.
struct Origin {
    scheme: Scheme,
    authority: Authority,
    /// `host` as HTTP/1.1 sends it here.
    host: HeaderValue,
    /// Idle HTTP/1.1 connections, the most recently used last.
    idle: Vec<Idle>,
    h2: Option<SharedH2>,
}

struct Idle {
    tx: H1,
    /// Plain http to a forwarding proxy: requests go in absolute form.
    proxied: bool,
    since: Instant,
}

struct SharedH2 {
    tx: H2,
    used: Instant,
}

/// A connection taken for one request.
enum Taken {
    H1 {
        tx: H1,
        proxied: bool,
        host: HeaderValue,
    },
    H2 {
        tx: H2,
    },
}

/// An HTTP/1.1 connection lent to one answer: [`Lease::release`] when its body has ended puts it back; dropped
/// unreleased (the body was not read to its end), the connection closes.
pub struct Lease {
    shared: Arc<Shared>,
    scheme: Scheme,
    authority: Authority,
    tx: H1,
    proxied: bool,
}

impl Pool {
    pub fn new(connector: Connector, idle_timeout: Duration) -> Pool {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new());
        Pool {
            shared: Arc::new(Shared {
                idle_timeout,
                origins: Mutex::default(),
            }),
            connector,
            h2,
        }
    }

    /// Sends `req` (an absolute URI) on a pooled connection to its origin, or a new one, and waits for the answer's
    /// head. An HTTP/1.1 answer comes with the [`Lease`] of its connection.
    pub async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(http::Response<Incoming>, Option<Lease>), UpstreamError> {
        let uri = req.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(UpstreamError::Failed(
                "the upstream URL has no scheme or host".into(),
            ));
        };
        loop {
            let (taken, reused) = match self.take(scheme, authority) {
                Some(taken) => (taken, true),
                None => (self.connect(scheme, authority).await?, false),
            };
            let back = match taken {
                Taken::H1 {
                    mut tx,
                    proxied,
                    host,
                } => {
                    req.headers_mut().entry(HOST).or_insert(host);
                    if !proxied {
                        origin_form(req.uri_mut());
                    }
                    match tx.try_send_request(req).await {
                        Ok(res) => {
                            let lease = Lease {
                                shared: Arc::clone(&self.shared),
                                scheme: scheme.clone(),
                                authority: authority.clone(),
                                tx,
                                proxied,
                            };
                            return Ok((res, Some(lease)));
                        }
                        Err(mut e) => (e.take_message(), e.into_error()),
                    }
                }
                Taken::H2 { mut tx } => match tx.try_send_request(req).await {
                    Ok(res) => return Ok((res, None)),
                    Err(mut e) => (e.take_message(), e.into_error()),
                },
            };
            match back {
                (Some(unsent), _) if reused => {
                    tracing::debug!(
                        "a pooled upstream connection closed before the request was written; using another"
                    );
                    req = unsent;
                    *req.uri_mut() = uri.clone();
                }
                (_, error) => return Err(UpstreamError::of(&error)),
            }
        }
    }

    /// A usable pooled connection to the origin: its HTTP/2 connection, else its most recently used idle HTTP/1.1
    /// one that is ready. Drops what is closed or past the idle timeout on the way.
    fn take(&self, scheme: &Scheme, authority: &Authority) -> Option<Taken> {
        let now = Instant::now();
        let timeout = self.shared.idle_timeout;
        let mut origins = self.shared.lock();
        let origin = origins.find(scheme, authority)?;
        if let Some(h2) = &mut origin.h2 {
            if h2.usable(now, timeout) {
                h2.used = now;
                return Some(Taken::H2 { tx: h2.tx.clone() });
            }
            origin.h2 = None;
        }
        origin.idle.retain(|i| i.usable(now, timeout));
        // One whose answer just ended may not be ready yet (its connection task has not run since): it stays.
        let at = origin.idle.iter().rposition(|i| i.tx.is_ready())?;
        let idle = origin.idle.remove(at);
        Some(Taken::H1 {
            tx: idle.tx,
            proxied: idle.proxied,
            host: origin.host.clone(),
        })
    }

    /// A new connection to the origin, ready for a request; an HTTP/2 one is kept for the requests that follow.
    async fn connect(
        &self,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<Taken, UpstreamError> {
        let dst = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| UpstreamError::Failed(format!("upstream URL: {e}")))?;
        let io = self
            .connector
            .clone()
            .call(dst)
            .await
            .map_err(|e| UpstreamError::of(&*e))?;
        let connected = io.connected();
        let failed = |e: hyper::Error| UpstreamError::of(&e);
        if connected.is_negotiated_h2() {
            let (mut tx, conn) = self.h2.handshake(io).await.map_err(failed)?;
            TokioExecutor::new().execute(drive(conn));
            tx.ready().await.map_err(failed)?;
            self.shared.keep_h2(scheme, authority, tx.clone())?;
            return Ok(Taken::H2 { tx });
        }
        let (mut tx, conn) = http1::handshake(io).await.map_err(failed)?;
        TokioExecutor::new().execute(drive(conn));
        tx.ready().await.map_err(failed)?;
        Ok(Taken::H1 {
            tx,
            proxied: connected.is_proxied(),
            host: host_value(scheme, authority)?,
        })
    }

    /// Keeps `tx` as an idle connection to the origin of `uri`.
    #[cfg(test)]
    fn keep_idle(&self, uri: &Uri, tx: H1) {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return;
        };
        Lease {
            shared: Arc::clone(&self.shared),
            scheme: scheme.clone(),
            authority: authority.clone(),
            tx,
            proxied: false,
        }
        .release();
    }

    /// How many idle HTTP/1.1 connections to the origin are kept, and how many of them are ready.
    #[cfg(test)]
    fn idle(&self, uri: &Uri) -> (usize, usize) {
        let mut origins = self.shared.lock();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return (0, 0);
        };
        origins.find(scheme, authority).map_or((0, 0), |o| {
            let ready = o.idle.iter().filter(|i| i.tx.is_ready()).count();
            (o.idle.len(), ready)
        })
    }
}

/// Runs one connection's protocol until it closes.
async fn drive<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), hyper::Error>>,
{
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "upstream connection ended");
    }
}

impl Lease {
    /// Puts the connection back: its answer's body has ended.
    pub fn release(self) {
        let Lease {
            shared,
            scheme,
            authority,
            tx,
            proxied,
        } = self;
        if tx.is_closed() {
            return;
        }
        let since = Instant::now();
        let mut origins = shared.lock();
        let Ok(origin) = origins.find_or_add(&scheme, &authority) else {
            return;
        };
        origin.idle.push(Idle { tx, proxied, since });
        Shared::start_reaper(&shared, &mut origins);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Origins> {
        // The lock guards plain bookkeeping that no panic leaves half done.
        self.origins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a new HTTP/2 connection as the origin's unless it has a usable one.
    fn keep_h2(
        self: &Arc<Self>,
        scheme: &Scheme,
        authority: &Authority,
        tx: H2,
    ) -> Result<(), UpstreamError> {
        let now = Instant::now();
        let mut origins = self.lock();
        let timeout = self.idle_timeout;
        let origin = origins.find_or_add(scheme, authority)?;
        if !origin.h2.as_ref().is_some_and(|h| h.usable(now, timeout)) {
            origin.h2 = Some(SharedH2 { tx, used: now });
        }
        Shared::start_reaper(self, &mut origins);
        Ok(())
    }

    /// Starts the reaper unless one runs (or no runtime is there to run it: then expiry is checked only when a
    /// connection is taken).
    fn start_reaper(shared: &Arc<Shared>, origins: &mut Origins) {
        if origins.reaping {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        origins.reaping = true;
        // Holds the pool weakly, and ends when nothing is idle or the pool is gone: nothing for shutdown to wait on.
        drop(runtime.spawn(reap(Arc::downgrade(shared))));
    }
}

/// Drops idle connections as their idle timeout passes, while there are any.
async fn reap(shared: Weak<Shared>) {
    loop {
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let mut origins = shared.lock();
            match origins.sweep(Instant::now(), shared.idle_timeout) {
                Some(next) => next,
                None => {
                    origins.reaping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

impl Origins {
    fn position(&self, scheme: &Scheme, authority: &Authority) -> Option<usize> {
        self.list
            .iter()
            .position(|o| o.authority == *authority && o.scheme == *scheme)
    }

    fn find(&mut self, scheme: &Scheme, authority: &Authority) -> Option<&mut Origin> {
        let at = self.position(scheme, authority)?;
        Some(&mut self.list[at])
    }

    /// The origin's entry, added when it has none (the only time its `host` value is made).
    fn find_or_add(
        &mut self,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<&mut Origin, UpstreamError> {
        let at = match self.position(scheme, authority) {
            Some(at) => at,
            None => {
                self.list.push(Origin {
                    scheme: scheme.clone(),
                    authority: authority.clone(),
                    host: host_value(scheme, authority)?,
                    idle: Vec::new(),
                    h2: None,
                });
                self.list.len() - 1
            }
        };
        Ok(&mut self.list[at])
    }

    /// Drops what is closed or past its idle timeout, and origins left with nothing; returns when the next kept
    /// connection's timeout passes, `None` when none is kept.
    fn sweep(&mut self, now: Instant, timeout: Duration) -> Option<Instant> {
        for origin in &mut self.list {
            origin.idle.retain(|i| i.usable(now, timeout));
            if !origin.h2.as_ref().is_some_and(|h| h.usable(now, timeout)) {
                origin.h2 = None;
            }
        }
        self.list.retain(|o| !o.idle.is_empty() || o.h2.is_some());
        self.list
            .iter()
            .flat_map(|o| {
                let idle = o.idle.iter().map(|i| i.since);
                idle.chain(o.h2.as_ref().map(|h| h.used))
            })
            .min()
            .map(|oldest| oldest + timeout)
    }
}

impl Idle {
    fn usable(&self, now: Instant, timeout: Duration) -> bool {
        !self.tx.is_closed() && fresh(self.since, now, timeout)
    }
}

impl SharedH2 {
    fn usable(&self, now: Instant, timeout: Duration) -> bool {
        !self.tx.is_closed() && fresh(self.used, now, timeout)
    }
}

/// Whether a connection unused since `since` is still within the idle timeout at `now`.
fn fresh(since: Instant, now: Instant, timeout: Duration) -> bool {
    now.saturating_duration_since(since) < timeout
}

/// `host` for HTTP/1.1: the host, and the port when it is not the scheme's default.
fn host_value(scheme: &Scheme, authority: &Authority) -> Result<HeaderValue, UpstreamError> {
    let default = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let value = match authority.port_u16() {
        Some(port) if port != default => {
            HeaderValue::from_str(&format!("{}:{port}", authority.host()))
        }
        _ => HeaderValue::from_str(authority.host()),
    };
    value.map_err(|_| UpstreamError::Failed("the upstream host is not a valid header value".into()))
}

/// The request target of a direct HTTP/1.1 request: the path and query alone.
fn origin_form(uri: &mut Uri) {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = uri.path_and_query().cloned();
    *uri = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
}
