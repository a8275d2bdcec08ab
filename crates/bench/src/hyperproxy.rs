//! A second floor: the smallest reverse proxy hyper 1 makes — a server and a pooled client on one current-thread
//! runtime, each request sent on to the upstream as it came (method, path, headers, streamed body) and the answer
//! streamed back, with no gateway work at all. `claude-gateway-bench --serve-proxy ADDR --proxy-to URL` runs it.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type Client = hyper_util::client::legacy::Client<HttpConnector, Incoming>;
type Body = BoxBody<Bytes, hyper::Error>;

struct Proxy {
    client: Client,
    /// `http://host:port` of the upstream.
    upstream: String,
}

fn bad_gateway() -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Full::new(Bytes::from_static(b"bad gateway"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
    r
}

impl Proxy {
    async fn forward(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, hyper::Error> {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Ok(uri) = format!("{}{path}", self.upstream).parse() else {
            return Ok(bad_gateway());
        };
        parts.uri = uri;
        parts.headers.remove(hyper::header::HOST);
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => Ok(resp.map(BodyExt::boxed)),
            Err(_) => Ok(bad_gateway()),
        }
    }
}

/// Serves on `listen`, forwarding to `upstream` (`http://host:port`), until killed; prints `listening on http://ADDR`
/// on stderr once bound.
pub fn serve(listen: SocketAddr, upstream: String) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(accept_loop(listen, upstream))
}

async fn accept_loop(listen: SocketAddr, upstream: String) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!("hyper proxy listening on http://{}", listener.local_addr()?);
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(http);
    let proxy = Arc::new(Proxy {
        client,
        upstream: upstream.trim_end_matches('/').to_string(),
    });
    crate::upstream::serve_http1(listener, move |req| proxy.clone().forward(req)).await
}
