//! The request path's upstream HTTP client: hyper's HTTP/1.1 and HTTP/2 connections, our own pool of them
//! ([`pool`]) and our own connector ([`connect`]), nothing more.
//!
//! Why not reqwest here: its fixed cost per request (its tower redirect and retry layers, always installed; two URL
//! parses; header-map clones; boxed futures) was about a seventh of the gateway's whole cost per request. OAuth, the
//! credential check, alerts and login keep reqwest (not hot).
//!
//! What it promises, as reqwest 0.13 did for the request path (`tests/upstream.rs` pins each):
//! - HTTPS with rustls (the process's crypto provider, aws-lc-rs) and the platform's trust (rustls-platform-verifier),
//!   ALPN offering `h2` and `http/1.1` (HTTP/2 when the server picks it); plain `http` is HTTP/1.1
//!   ([`connect`]).
//! - One keep-alive pool per client (one client per connection worker, see `crate::proxy::Upstream`): idle
//!   connections closed after 60 s; a request a reused connection dropped unwritten sent on another ([`pool`]);
//!   TCP_NODELAY, TCP keep-alive probes.
//! - `connect_timeout` bounds a whole connect (TCP, proxy tunnel, TLS handshake); `read_timeout` bounds the wait for
//!   the response head from the moment the request is sent, and then each wait for the next body chunk
//!   ([`body::Body`]): never a total deadline, so a stream that keeps sending is never cut.
//! - `user-agent: claude-gateway/VERSION` and `accept: */*` only when the request has none; `host` and
//!   `content-length` from hyper.
//! - Proxies from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read once at start): a
//!   CONNECT tunnel for https, absolute-form requests (with the proxy's credentials) for http.
//! - A request HTTP/2 says upstream did not process (REFUSED_STREAM, a graceful GOAWAY) is sent again, at most
//!   twice, as reqwest's retry layer did; nothing else is retried here (failover is `crate::proxy`'s).
//! - No redirects are followed: a 3xx is upstream's answer and goes back to the client as any other.
//!
//! Must not know: accounts, the pool, what the request is (that is `crate::proxy`'s), HTTP status policy (failures
//! are [`UpstreamError`]s; `crate::error` maps them to the client's answer).

pub mod body;
pub mod connect;
pub mod pool;
pub mod uri;

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    Entry, HeaderMap, HeaderName, HeaderValue, ACCEPT, PROXY_AUTHORIZATION, USER_AGENT,
};
use http::{Method, Request, Uri};
use http_body_util::Full;
use std::sync::Arc;

pub use body::Body;
pub use uri::Base;

/// The user agent upstream sees when the client sent none.
pub const USER_AGENT_VALUE: &str = concat!("claude-gateway/", env!("CARGO_PKG_VERSION"));

/// An upstream answer: its head, and a body read under the per-read timeout.
pub type Response = http::Response<Body>;

/// Why an upstream call produced no (more) answer. Not an HTTP answer itself: `crate::error` maps it once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No connection within the connect timeout, no response head within the read timeout, or no next body chunk
    /// within it.
    #[error("upstream did not answer within the timeout")]
    Timeout,
    /// The connection failed or broke (refused, reset, DNS, TLS, a protocol error), with its root cause. Never names
    /// the upstream URL or a proxy's credentials.
    #[error("{0}")]
    Failed(String),
    /// HTTP/2 says upstream did not process the request (its stream was refused, or the connection was closing
    /// gracefully): sending it again is safe, and [`Client::send`] does, at most [`MAX_RESENDS`] times.
    #[error("{0}")]
    NotProcessed(String),
}

/// How often a request upstream did not process is sent again (reqwest's protocol retries: two).
pub const MAX_RESENDS: usize = 2;

impl UpstreamError {
    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamError::Timeout)
    }

    /// Classifies an error from hyper or the connector: a timeout anywhere in its chain is a timeout; an HTTP/2
    /// refusal of the stream or a graceful GOAWAY from upstream is a request not processed.
    fn of(e: &(dyn std::error::Error + 'static)) -> UpstreamError {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cause {
            if c.downcast_ref::<h2::Error>().is_some_and(not_processed) {
                return UpstreamError::NotProcessed(crate::chain::error_chain(e));
            }
            let io_timeout = c
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
            if io_timeout || c.is::<connect::ConnectTimedOut>() {
                return UpstreamError::Timeout;
            }
            cause = c.source();
        }
        UpstreamError::Failed(crate::chain::error_chain(e))
    }
}

/// What RFC 9113 says was not processed: a stream the server refused (8.7), or a graceful GOAWAY (6.8).
fn not_processed(e: &h2::Error) -> bool {
    e.is_remote()
        && ((e.is_reset() && e.reason() == Some(h2::Reason::REFUSED_STREAM))
            || (e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR)))
}

/// Timeouts of one client (`[upstream]` in the config).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
}

impl From<&crate::config::UpstreamConfig> for Timeouts {
    fn from(c: &crate::config::UpstreamConfig) -> Self {
        Timeouts {
            connect: c.connect_timeout(),
            read: c.read_timeout(),
        }
    }
}

/// One pooled upstream client. Cloning shares the pool; each connection worker has its own (`crate::proxy::Upstream`)
/// so that a pooled connection is driven by the thread that made it.
#[derive(Clone)]
pub struct Client {
    pool: Arc<pool::Pool>,
    defaults: [(HeaderName, HeaderValue); 2],
    proxies: connect::Proxies,
    read_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("upstream::Client")
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with its own pool, using the proxies the environment names.
    pub fn new(timeouts: Timeouts) -> Result<Client, UpstreamError> {
        let proxies = connect::Proxies::from_env();
        let user_agent = HeaderValue::from_static(USER_AGENT_VALUE);
        let connector =
            connect::Connector::new(timeouts.connect, proxies.clone(), user_agent.clone())?;
        Ok(Client {
            pool: Arc::new(pool::Pool::new(connector, pool::IDLE_TIMEOUT)),
            defaults: [
                (ACCEPT, HeaderValue::from_static("*/*")),
                (USER_AGENT, user_agent),
            ],
            proxies,
            read_timeout: timeouts.read,
        })
    }

    /// Sends one request and waits (at most the read timeout, connecting included) for the response head; sends it
    /// again when upstream did not process it ([`UpstreamError::NotProcessed`]), at most [`MAX_RESENDS`] times.
    /// `headers` makes the request's headers for each send (hyper keeps those it sent).
    pub async fn send(
        &self,
        method: &Method,
        uri: &Uri,
        headers: impl Fn() -> HeaderMap,
        body: &Bytes,
    ) -> Result<Response, UpstreamError> {
        let mut resent = 0;
        loop {
            match self
                .send_once(method.clone(), uri.clone(), headers(), body.clone())
                .await
            {
                Err(UpstreamError::NotProcessed(cause)) if resent < MAX_RESENDS => {
                    tracing::debug!(%cause, "upstream did not process the request; sending it again");
                    resent += 1;
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, UpstreamError> {
        for (name, value) in &self.defaults {
            if let Entry::Vacant(e) = headers.entry(name) {
                e.insert(value.clone());
            }
        }
        if uri.scheme() == Some(&http::uri::Scheme::HTTP) {
            // Through an http proxy the request itself carries the proxy's credentials (a tunnel's CONNECT does for
            // https).
            if let Some(auth) = self.proxies.forward_auth(&uri) {
                headers.insert(PROXY_AUTHORIZATION, auth);
            }
        }
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let head = tokio::time::timeout(self.read_timeout, self.pool.send(req)).await;
        match head {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Err(e)) => Err(e),
            Ok(Ok((res, lease))) => Ok(res.map(|b| Body::leased(b, self.read_timeout, lease))),
        }
    }
}
