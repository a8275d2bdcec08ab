//! The upstream HTTP client of the request path, seen from outside: the real binary against the simulator, a TLS
//! upstream of the test's own (a test CA trusted through `SSL_CERT_FILE`, as the platform verifier reads it) and a
//! tiny loopback proxy (CONNECT and absolute-form forwarding) named by the usual environment variables.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers; its
// servers run on bare spawns (they end with the test's runtime) and it measures real time against the real binary.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use simulator::{Fault, FaultKind, SimConfig, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// The environment under which the gateway trusts the test CA (and nothing else: an empty certificate directory).
fn trusting_the_test_ca(empty_dir: &std::path::Path) -> Vec<(String, String)> {
    vec![
        (
            "SSL_CERT_FILE".into(),
            fixture("ca.pem").display().to_string(),
        ),
        ("SSL_CERT_DIR".into(), empty_dir.display().to_string()),
    ]
}

async fn gateway_env(upstream: &str, extra: &str, env: &[(String, String)]) -> Gateway {
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("k", "sk-ant-api03-test")]).await;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Gateway::start_in_env(dir, upstream, "http://127.0.0.1:9/token", extra, &env)
}

// === A TLS upstream of the test's own ===

/// What the TLS upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    alpn: Option<Vec<u8>>,
    version: http::Version,
    headers: http::HeaderMap,
}

struct TlsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// TLS connections accepted.
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

const ANSWER: &str = r#"{"id":"msg_tls","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"over tls"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#;

/// A TLS acceptor with the test certificate (`fixtures/server.pem`, signed by the test CA) offering `alpn`.
fn test_acceptor(alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An HTTPS server with the test certificate offering `alpn`, answering every request with one Messages answer over
/// HTTP/2 when ALPN chose it, else HTTP/1.1.
async fn tls_upstream(alpn: &[&[u8]]) -> TlsUpstream {
    let acceptor = test_acceptor(alpn);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                let h2 = alpn.as_deref() == Some(b"h2");
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(Seen {
                            alpn: alpn.clone(),
                            version: req.version(),
                            headers: req.headers().clone(),
                        });
                        async move {
                            let mut res = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(ANSWER),
                            ));
                            res.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, svc)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    TlsUpstream {
        addr,
        seen,
        connections,
    }
}

impl TlsUpstream {
    fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn https_upstream_is_verified_by_the_platform_trust_and_speaks_h2_when_alpn_offers_it() {
    let up = tls_upstream(&[b"h2", b"http/1.1"]).await;
    let empty = TempDir::new();
    let gw = gateway_env(&up.url(), "", &trusting_the_test_ca(&empty.0)).await;
    let c = client();
    for i in 0..3 {
        let r = post_messages(&c, &gw, message_body(&format!("h2 {i}"), false)).await;
        assert_eq!(r.status(), 200, "{}", gw.logs());
        assert_eq!(r.text().await.unwrap(), ANSWER);
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one HTTP/2 connection serves the requests that follow"
    );
    for s in &seen {
        assert_eq!(s.alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(s.version, http::Version::HTTP_2);
        assert_eq!(
            s.headers.get("user-agent").unwrap(),
            concat!("claude-gateway/", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(s.headers.get("x-api-key").unwrap(), "sk-ant-api03-test");
    }
}

#[tokio::test]
async fn https_upstream_without_h2_is_spoken_to_in_http1() {
    let up = tls_upstream(&[b"http/1.1"]).await;
    let empty = TempDir::new();
    let gw = gateway_env(&up.url(), "", &trusting_the_test_ca(&empty.0)).await;
    let r = post_messages(&client(), &gw, message_body("h1", false)).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    assert_eq!(
        seen[0].headers.get("host").unwrap().to_str().unwrap(),
        format!("localhost:{}", up.addr.port())
    );
}

#[tokio::test]
async fn an_upstream_certificate_the_platform_does_not_trust_is_refused_as_unreachable() {
    let up = tls_upstream(&[b"h2", b"http/1.1"]).await;
    // The machine's own trust (whatever the environment says), which does not hold the test CA.
    let gw = gateway_env(&up.url(), "", &[]).await;
    let r = post_messages(&client(), &gw, message_body("untrusted", false)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-gateway-error"], "1");
    assert!(
        up.seen().is_empty(),
        "no request reached an untrusted upstream"
    );
}

#[tokio::test]
async fn the_connect_timeout_covers_the_tls_handshake_and_cools_the_account_here() {
    // Accepts TCP and never answers the TLS handshake.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let gw = gateway_env(&format!("https://localhost:{}", addr.port()), "", &[]).await; // connect 2 s, read 5 s
    let started = std::time::Instant::now();
    let r = post_messages(&client(), &gw, message_body("silent", false)).await;
    let took = started.elapsed();
    assert_eq!(r.status(), 504);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "timeout_error");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_millis(4500),
        "the 2 s connect timeout ends it, not the 5 s read timeout: {took:?}"
    );
    let accounts = gw.admin_accounts().await;
    assert_eq!(
        accounts["accounts"][0]["state"], "cooling_down",
        "{accounts}"
    );
}

// === What upstream sees of a request ===

/// Sends one request over a raw connection, so that nothing adds headers the test did not write.
async fn raw_request(gw: &Gateway, head_lines: &str, body: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let req = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {}\r\nx-api-key: {CLIENT_KEY}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n{head_lines}\r\n{body}",
        gw.addr,
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn upstream_sees_the_gateway_user_agent_and_accept_only_when_the_client_sent_none() {
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("k", &key)]).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let body = message_body("who am i", false);

    let answer = raw_request(&gw, "", &body).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = raw_request(
        &gw,
        "user-agent: my-app/1.0\r\naccept: application/json\r\n",
        &body,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let reqs = sim.requests();
    assert_eq!(reqs.len(), 2);
    let ours = concat!("claude-gateway/", env!("CARGO_PKG_VERSION"));
    assert_eq!(reqs[0].header("user-agent"), Some(ours));
    assert_eq!(reqs[0].header("accept"), Some("*/*"));
    assert_eq!(reqs[1].header("user-agent"), Some("my-app/1.0"));
    assert_eq!(reqs[1].header("accept"), Some("application/json"));
    for r in &reqs {
        let host = sim.addr().to_string();
        assert_eq!(r.header("host"), Some(host.as_str()));
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(r.body.as_ref(), body.as_bytes());
        assert_eq!(r.header("x-api-key"), Some(key.as_str()));
        assert_eq!(
            r.headers.iter().filter(|(n, _)| n == "user-agent").count(),
            1,
            "one user-agent: {:?}",
            r.headers
        );
    }
}

// === Read timeouts: per read, never a total deadline ===

/// A gateway whose upstream read timeout is `secs` (the harness's default is 5 s).
async fn gateway_with_read_timeout(sim: &Simulator, secs: f64) -> Gateway {
    let key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("k", &key)]).await;
    let text = config_text(&dir.0, &sim.base_url(), &sim.token_url(), "").replace(
        "read_timeout_secs = 5",
        &format!("read_timeout_secs = {secs}"),
    );
    std::fs::write(dir.0.join("gateway.toml"), text).unwrap();
    Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "")
}

#[tokio::test]
async fn a_stream_that_keeps_sending_outlives_the_read_timeout_many_times() {
    let sim = Simulator::start_with(SimConfig {
        stream_events: 40,
        event_delay: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let gw = gateway_with_read_timeout(&sim, 0.5).await;
    let started = std::time::Instant::now();
    let text = post_messages(&client(), &gw, message_body("long", true))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "the stream took many read timeouts"
    );
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(!text.contains("event: error"), "{text}");
}

#[tokio::test]
async fn a_stalled_non_stream_body_ends_at_the_read_timeout() {
    let sim = Simulator::start().await.unwrap();
    let gw = gateway_with_read_timeout(&sim, 1.0).await;
    // Headers, then silence before the body.
    sim.push_fault(Fault::once(FaultKind::StallStream { after_events: 0 }));
    let started = std::time::Instant::now();
    let r = post_messages(&client(), &gw, message_body("stall", false)).await;
    let outcome = r.bytes().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "ended by the 1 s read timeout: {took:?}"
    );
    // The answer's head was held until its body arrived; without one, the gateway says so (or the body breaks if it
    // had started).
    if let Ok(body) = outcome {
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("timeout_error") || text.is_empty(), "{text}");
    }
}

// === Proxies from the environment ===

/// A loopback proxy: CONNECT tunnels and absolute-form forwarding, recording every request head it got.
struct TestProxy {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn test_proxy() -> TestProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let heads2 = heads.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(proxy_one(client, heads2.clone()));
        }
    });
    TestProxy { addr, heads }
}

async fn proxy_one(mut client: tokio::net::TcpStream, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let Ok(n) = client.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    heads.lock().unwrap().push(head.clone());
    let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
    if head.starts_with("CONNECT ") {
        let Ok(mut up) = tokio::net::TcpStream::connect(&target).await else {
            return;
        };
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
    } else {
        let authority = target
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .unwrap_or("")
            .to_string();
        let Ok(mut up) = tokio::net::TcpStream::connect(&authority).await else {
            return;
        };
        up.write_all(&buf).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
    }
}

/// Lower-case base64 of `user:password`, as it appears in a lower-cased `proxy-authorization: Basic …`.
fn basic(credentials: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(credentials)
        .to_ascii_lowercase()
}

impl TestProxy {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn url_with(&self, credentials: &str) -> String {
        format!("http://{credentials}@{}", self.addr)
    }
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn https_proxy_from_the_environment_tunnels_with_connect() {
    let up = tls_upstream(&[b"h2", b"http/1.1"]).await;
    let proxy = test_proxy().await;
    let empty = TempDir::new();
    let mut env = trusting_the_test_ca(&empty.0);
    env.push(("HTTPS_PROXY".into(), proxy.url_with("tunnel:secret")));
    env.push(("NO_PROXY".into(), String::new()));
    let gw = gateway_env(&up.url(), "", &env).await;
    let r = post_messages(&client(), &gw, message_body("via proxy", false)).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    let heads = proxy.heads();
    let connect = format!("CONNECT localhost:{} HTTP/1.1", up.addr.port());
    let head = heads
        .iter()
        .find(|h| h.starts_with(&connect))
        .unwrap_or_else(|| panic!("{heads:?}"))
        .to_ascii_lowercase();
    // The proxy's credentials and our user agent go on the CONNECT.
    assert!(
        head.contains(&format!(
            "proxy-authorization: basic {}",
            basic("tunnel:secret")
        )),
        "{head}"
    );
    assert!(
        head.contains(&format!(
            "user-agent: claude-gateway/{}",
            env!("CARGO_PKG_VERSION")
        )),
        "{head}"
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].version,
        http::Version::HTTP_2,
        "ALPN is end to end through the tunnel"
    );
}

#[tokio::test]
async fn http_proxy_from_the_environment_gets_absolute_form_requests_and_no_proxy_bypasses_it() {
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let proxy = test_proxy().await;
    let env = [
        ("HTTP_PROXY".to_string(), proxy.url_with("fwd:pw")),
        ("NO_PROXY".to_string(), String::new()),
    ];
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("k", &key)]).await;
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gw = Gateway::start_in_env(dir, &sim.base_url(), &sim.token_url(), "", &env_ref);
    let r = post_messages(&client(), &gw, message_body("forwarded", false)).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    let want = format!("POST {}/v1/messages HTTP/1.1", sim.base_url());
    let heads = proxy.heads();
    let head = heads
        .iter()
        .find(|h| h.starts_with(&want))
        .unwrap_or_else(|| panic!("{heads:?}"))
        .to_ascii_lowercase();
    assert!(
        head.contains(&format!("proxy-authorization: basic {}", basic("fwd:pw"))),
        "the request itself carries the forwarding proxy's credentials: {head}"
    );
    assert_eq!(sim.requests().len(), 1);

    // The same with the upstream's host in NO_PROXY: straight to upstream.
    let proxy2 = test_proxy().await;
    let env = [
        ("HTTP_PROXY".to_string(), proxy2.url()),
        ("NO_PROXY".to_string(), "127.0.0.1".to_string()),
    ];
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("k", &key)]).await;
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gw = Gateway::start_in_env(dir, &sim.base_url(), &sim.token_url(), "", &env_ref);
    let r = post_messages(&client(), &gw, message_body("direct", false)).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    assert!(proxy2.heads().is_empty(), "{:?}", proxy2.heads());
    assert_eq!(sim.requests().len(), 2);
}

// === Redirects ===

/// A plain-http upstream that answers every request with a redirect to another path of its own, counting requests.
async fn redirecting_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let paths = Arc::new(Mutex::new(Vec::new()));
    let paths2 = paths.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let paths = paths2.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        paths.lock().unwrap().push(format!(
                            "{} {}",
                            req.method(),
                            req.uri().path()
                        ));
                        async move {
                            let mut res = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"moved"),
                            ));
                            *res.status_mut() = http::StatusCode::TEMPORARY_REDIRECT;
                            res.headers_mut()
                                .insert("location", "/v1/elsewhere".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, paths)
}

#[tokio::test]
async fn an_upstream_redirect_is_answered_to_the_client_never_followed_with_the_credential() {
    let (addr, paths) = redirecting_upstream().await;
    let gw = gateway_env(&format!("http://{addr}"), "", &[]).await;
    let r = post_messages(&client(), &gw, message_body("redirect me", false)).await;
    assert_eq!(r.status(), 307);
    assert_eq!(
        *paths.lock().unwrap(),
        ["POST /v1/messages"],
        "the gateway sent the request (and the account's credential) once, to the configured upstream only"
    );
}

// === HTTP/2 streams upstream did not process ===

/// An HTTP/2-only TLS upstream (the h2 crate's server, to refuse streams at will) that resets the first `refuse`
/// streams with REFUSED_STREAM and answers the others; it counts the streams it saw.
async fn refusing_h2_upstream(refuse: usize) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let acceptor = test_acceptor(&[b"h2"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = streams.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut conn) = h2::server::handshake(tls).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    if seen.fetch_add(1, Ordering::SeqCst) < refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let head = http::Response::builder()
                        .header("content-type", "application/json")
                        .body(())
                        .unwrap();
                    let mut body = respond.send_response(head, false).unwrap();
                    body.send_data(bytes::Bytes::from(ANSWER), true).unwrap();
                }
            });
        }
    });
    (addr, streams)
}

#[tokio::test]
async fn a_stream_upstream_refused_is_sent_again_without_cooling_the_account() {
    let (addr, streams) = refusing_h2_upstream(2).await;
    let empty = TempDir::new();
    let url = format!("https://localhost:{}", addr.port());
    let gw = gateway_env(&url, "", &trusting_the_test_ca(&empty.0)).await;
    let r = post_messages(&client(), &gw, message_body("refused twice", false)).await;
    assert_eq!(r.status(), 200, "{}", gw.logs());
    assert_eq!(r.text().await.unwrap(), ANSWER);
    assert_eq!(streams.load(std::sync::atomic::Ordering::SeqCst), 3);
    let accounts = gw.admin_accounts().await;
    assert_eq!(accounts["accounts"][0]["state"], "ready", "{accounts}");
}

#[tokio::test]
async fn a_stream_refused_three_times_is_upstream_unreachable() {
    let (addr, streams) = refusing_h2_upstream(usize::MAX).await;
    let empty = TempDir::new();
    let url = format!("https://localhost:{}", addr.port());
    let gw = gateway_env(&url, "", &trusting_the_test_ca(&empty.0)).await;
    let r = post_messages(&client(), &gw, message_body("always refused", false)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        streams.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "sent once and again at most twice"
    );
}
