//! New upstream connections: TCP, then a proxy tunnel when the environment names one, then TLS for `https`, all
//! within the connect timeout.
//!
//! The TCP and TLS settings are reqwest 0.13's (what the request path had before): TCP_NODELAY, keep-alive probes
//! after 15 s every 15 s (3 retries), a 30 s TCP user timeout; rustls with the process's crypto provider (aws-lc-rs,
//! installed once in `main`), TLS 1.2 and 1.3, SNI, the platform's certificate trust (rustls-platform-verifier: the
//! system store, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), ALPN `h2` then `http/1.1`. A connection through a CONNECT
//! tunnel negotiates ALPN with upstream end to end; the TLS to an `https://` proxy itself offers no ALPN.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, USER_AGENT};
use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use super::UpstreamError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TCP connection, with TLS for `https`.
type Direct = MaybeHttpsStream<TokioIo<TcpStream>>;

/// The connect timeout passed.
#[derive(Debug, thiserror::Error)]
#[error("no connection within the connect timeout")]
pub struct ConnectTimedOut;

/// The proxies the environment names (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, upper or lower case,
/// read as curl does), read once.
#[derive(Clone)]
pub struct Proxies {
    matcher: Arc<Matcher>,
    /// Whether any variable that can name a proxy for http is set (a superset of what the matcher reads for http):
    /// without one, no request needs the matcher.
    http_named: bool,
}

impl Proxies {
    pub fn from_env() -> Proxies {
        let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        Proxies {
            matcher: Arc::new(Matcher::from_env()),
            http_named: ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
                .into_iter()
                .any(set),
        }
    }

    /// No proxy, whatever the environment says.
    #[cfg(test)]
    pub fn none() -> Proxies {
        Proxies {
            matcher: Arc::new(Matcher::builder().build()),
            http_named: false,
        }
    }

    fn intercept(&self, dst: &Uri) -> Option<hyper_util::client::proxy::matcher::Intercept> {
        self.matcher.intercept(dst)
    }

    /// The `proxy-authorization` an http request sent through a forwarding proxy carries, if that proxy has
    /// credentials.
    pub fn forward_auth(&self, dst: &Uri) -> Option<HeaderValue> {
        if !self.http_named {
            return None;
        }
        self.intercept(dst)?.basic_auth().cloned()
    }
}

/// The connector of [`super::Client`].
#[derive(Clone)]
pub struct Connector {
    /// TCP, and TLS (with ALPN) for https.
    direct: HttpsConnector<HttpConnector>,
    /// To the proxy of a tunnel: TCP, and TLS without ALPN for an `https://` proxy.
    to_proxy: HttpsConnector<HttpConnector>,
    tls: Arc<rustls::ClientConfig>,
    proxies: Proxies,
    timeout: Duration,
    user_agent: HeaderValue,
}

impl Connector {
    pub fn new(
        timeout: Duration,
        proxies: Proxies,
        user_agent: HeaderValue,
    ) -> Result<Connector, UpstreamError> {
        let tls = Arc::new(tls_config()?);
        let mut to_proxy_tls = (*tls).clone();
        to_proxy_tls.alpn_protocols.clear();
        Ok(Connector {
            direct: HttpsConnector::from((tcp(timeout), Arc::clone(&tls))),
            to_proxy: HttpsConnector::from((tcp(timeout), Arc::new(to_proxy_tls))),
            tls,
            proxies,
            timeout,
            user_agent,
        })
    }

    /// The connection to `dst`: direct, through a CONNECT tunnel (https behind a proxy), or to a forwarding proxy
    /// (http behind a proxy).
    fn open(&self, dst: Uri) -> Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>> {
        let mut direct = self.direct.clone();
        let Some(proxy) = self.proxies.intercept(&dst) else {
            return Box::pin(async move {
                Ok(Conn {
                    io: Io::Direct(direct.call(dst).await?),
                    forwarding: false,
                })
            });
        };
        if dst.scheme() != Some(&http::uri::Scheme::HTTPS) {
            let to = proxy.uri().clone();
            return Box::pin(async move {
                Ok(Conn {
                    io: Io::Direct(direct.call(to).await?),
                    forwarding: true,
                })
            });
        }
        let mut tunnel = Tunnel::new(proxy.uri().clone(), self.to_proxy.clone());
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(USER_AGENT, self.user_agent.clone());
        let mut tunneled =
            HttpsConnector::from((tunnel.with_headers(headers), Arc::clone(&self.tls)));
        Box::pin(async move {
            Ok(Conn {
                io: Io::Tunneled(Box::new(tunneled.call(dst).await?)),
                forwarding: false,
            })
        })
    }
}

/// TCP as reqwest set it up.
fn tcp(timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    http.set_keepalive(Some(Duration::from_secs(15)));
    http.set_keepalive_interval(Some(Duration::from_secs(15)));
    http.set_keepalive_retries(Some(3));
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
    http
}

/// rustls with the installed crypto provider (aws-lc-rs when none is), the platform's trust, ALPN h2 and http/1.1.
fn tls_config() -> Result<rustls::ClientConfig, UpstreamError> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let failed = |e: rustls::Error| UpstreamError::Failed(format!("TLS setup: {e}"));
    let verifier =
        rustls_platform_verifier::Verifier::new(Arc::clone(&provider)).map_err(failed)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(failed)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let timeout = self.timeout;
        let opening = self.open(dst);
        Box::pin(async move {
            match tokio::time::timeout(timeout, opening).await {
                Ok(conn) => conn,
                Err(_) => Err(Box::new(ConnectTimedOut) as BoxError),
            }
        })
    }
}

// === impl Conn ===

// The direct connection (every connection without a proxy) stays inline; the rare tunneled one is boxed.
#[allow(clippy::large_enum_variant)]
enum Io {
    Direct(Direct),
    /// TLS to upstream inside a CONNECT tunnel (boxed: rare, and twice the size).
    Tunneled(Box<MaybeHttpsStream<Direct>>),
}

/// One upstream connection.
pub struct Conn {
    io: Io,
    /// Plain http through a forwarding proxy: requests are written in absolute form.
    forwarding: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        let connected = match &self.io {
            Io::Direct(s) => s.connected(),
            Io::Tunneled(s) => s.connected(),
        };
        connected.proxy(self.forwarding)
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Direct(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tunneled(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Io::Direct(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tunneled(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Io::Direct(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tunneled(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Direct(s) => s.is_write_vectored(),
            Io::Tunneled(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Direct(s) => Pin::new(s).poll_flush(cx),
            Io::Tunneled(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Direct(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tunneled(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
