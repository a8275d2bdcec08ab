//! The pool against plain HTTP/1.1 upstreams on std threads: the test's runtime never drives the upstream, so what a
//! test holds still (blocking its runtime) the pool's connection tasks cannot see either.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::upstream::connect::{Connector, Proxies};
use crate::upstream::Body;

const READ: Duration = Duration::from_secs(10);

/// What one upstream connection does with one request: the connection's index (0 for the first accepted), the
/// request's index on it, the stream. Returns whether to go on reading requests on this connection.
type Script = dyn Fn(usize, usize, &mut TcpStream) -> bool + Send + Sync;

struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Every request head, in the order read.
    heads: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    fn uri(&self) -> Uri {
        format!("http://{}/v1/messages", self.addr).parse().unwrap()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An upstream that runs `script` after reading each request, one thread per connection.
fn upstream(
    script: impl Fn(usize, usize, &mut TcpStream) -> bool + Send + Sync + 'static,
) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let script: Arc<Script> = Arc::new(script);
    let (a, h) = (Arc::clone(&accepted), Arc::clone(&heads));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let conn = a.fetch_add(1, Ordering::SeqCst);
            let (script, heads) = (Arc::clone(&script), Arc::clone(&h));
            std::thread::spawn(move || {
                stream.set_read_timeout(Some(READ)).unwrap();
                for req in 0.. {
                    let Some(head) = read_request(&mut stream) else {
                        return;
                    };
                    heads.lock().unwrap().push(head);
                    if !script(conn, req, &mut stream) {
                        return;
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        accepted,
        heads,
    }
}

/// Reads one request (head and content-length body); `None` at the end of the connection.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    assert!(reader.buffer().is_empty(), "one request at a time");
    Some(head)
}

fn answer(stream: &mut TcpStream, body: &str) {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
}

/// Whether the peer closed the connection within the read timeout.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    matches!(stream.read(&mut [0; 1]), Ok(0))
}

fn pool() -> Pool {
    let connector = Connector::new(
        Duration::from_secs(5),
        Proxies::none(),
        HeaderValue::from_static("test"),
    )
    .unwrap();
    Pool::new(connector, IDLE_TIMEOUT)
}

fn request(uri: &Uri) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri.clone();
    req
}

/// Sends one request and reads its answer to the end.
async fn send(pool: &Pool, uri: &Uri) -> Result<Bytes, UpstreamError> {
    let (res, lease) = pool.send(request(uri)).await?;
    Body::leased(res.into_body(), READ, lease).bytes().await
}

#[tokio::test]
async fn an_answer_read_to_its_end_gives_its_connection_to_the_next_request() {
    let up = upstream(|_, _, s| {
        answer(s, "ok");
        true
    });
    let pool = pool();
    for _ in 0..3 {
        assert_eq!(send(&pool, &up.uri()).await.unwrap(), "ok");
    }
    assert_eq!(
        up.accepted(),
        1,
        "one connection for three requests in turn"
    );
    let heads = up.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3);
    for head in &heads {
        assert!(
            head.starts_with("POST /v1/messages HTTP/1.1\r\n"),
            "origin form: {head}"
        );
        assert!(head.contains(&format!("host: {}\r\n", up.addr)), "{head}");
    }
}

#[tokio::test]
async fn chunked_and_empty_answers_give_their_connection_back_too() {
    for raw in [
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n",
    ] {
        let up = upstream(move |_, _, s| {
            s.write_all(raw.as_bytes()).unwrap();
            true
        });
        let pool = pool();
        for _ in 0..3 {
            send(&pool, &up.uri()).await.unwrap();
        }
        assert_eq!(
            up.accepted(),
            1,
            "one connection for three answers like {raw:?}"
        );
    }
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let (closed_tx, closed_rx) = mpsc::channel();
    let up = upstream(move |conn, _, s| {
        if conn > 0 {
            answer(s, "ok");
            return true;
        }
        // Half of the body, then wait for the gateway.
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nha")
            .unwrap();
        closed_tx.send(closed_by_peer(s)).unwrap();
        false
    });
    let pool = pool();
    let (res, lease) = pool.send(request(&up.uri())).await.unwrap();
    let mut body = Body::leased(res.into_body(), READ, lease);
    assert_eq!(body.chunk().await.unwrap().unwrap(), "ha");
    drop(body);
    assert_eq!(pool.idle(&up.uri()), (0, 0), "not put back");
    assert_eq!(send(&pool, &up.uri()).await.unwrap(), "ok");
    assert_eq!(up.accepted(), 2, "the next request opened a connection");
    let closed = tokio::task::spawn_blocking(move || closed_rx.recv().unwrap());
    assert!(closed.await.unwrap(), "the first connection was closed");
}

#[tokio::test]
async fn answers_in_flight_together_each_hold_their_own_connection() {
    let up = upstream(|_, _, s| {
        answer(s, "ok");
        true
    });
    let pool = pool();
    // Both requests find the pool empty in the same poll, before either answer is read.
    let uri = up.uri();
    let (a, b) = tokio::join!(send(&pool, &uri), send(&pool, &uri));
    assert_eq!((a.unwrap(), b.unwrap()), ("ok".into(), "ok".into()));
    assert_eq!(up.accepted(), 2);
    assert_eq!(pool.idle(&up.uri()), (2, 2), "both went back");
    assert_eq!(send(&pool, &up.uri()).await.unwrap(), "ok");
    assert_eq!(up.accepted(), 2, "the next request took one of them");
}

#[tokio::test]
async fn a_request_a_reused_connection_dropped_unwritten_goes_on_a_new_one() {
    let up = upstream(|_, _, s| {
        answer(s, "fresh");
        true
    });
    let pool = pool();
    // A pooled connection over an in-memory pipe, idle and ready, whose other end the test holds.
    let (ours, theirs) = tokio::io::duplex(4096);
    let (mut tx, conn) = http1::handshake(hyper_util::rt::TokioIo::new(ours))
        .await
        .unwrap();
    #[allow(clippy::disallowed_methods)] // the test awaits it
    let driven = tokio::spawn(drive(conn));
    tx.ready().await.unwrap();
    pool.keep_idle(&up.uri(), tx);
    assert_eq!(pool.idle(&up.uri()), (1, 1));
    // Upstream closes it just as it is taken: the close wakes its connection task, which has not run yet when the
    // request is handed to it.
    drop(theirs);
    assert_eq!(send(&pool, &up.uri()).await.unwrap(), "fresh");
    assert_eq!(up.accepted(), 1, "sent on a new connection");
    driven.await.unwrap();
}

#[tokio::test]
async fn a_request_written_to_a_connection_upstream_then_closes_fails() {
    let (close_tx, close_rx) = mpsc::channel::<()>();
    let (closed_tx, closed_rx) = mpsc::channel::<()>();
    let close_rx = Mutex::new(close_rx);
    let up = upstream(move |conn, _, s| {
        if conn == 0 {
            answer(s, "first");
            // Upstream closes the idle keep-alive connection when the test says.
            close_rx.lock().unwrap().recv().unwrap();
            s.shutdown(std::net::Shutdown::Both).unwrap();
            closed_tx.send(()).unwrap();
            return false;
        }
        answer(s, "second");
        true
    });
    let pool = pool();
    assert_eq!(send(&pool, &up.uri()).await.unwrap(), "first");
    assert_eq!(
        pool.idle(&up.uri()),
        (1, 1),
        "the connection is back and looks ready"
    );
    close_tx.send(()).unwrap();
    // Blocks this runtime: the connection task does not learn of the close before the request is written to it.
    closed_rx.recv().unwrap();
    let e = send(&pool, &up.uri()).await.unwrap_err();
    // It may have reached upstream: not sent again here (failover decides, `crate::proxy`).
    assert!(matches!(e, UpstreamError::Failed(_)), "{e:?}");
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_fresh_connection_that_fails_is_not_tried_again() {
    let up = upstream(|_, _, s| {
        s.shutdown(std::net::Shutdown::Both).unwrap();
        false
    });
    let pool = pool();
    let e = send(&pool, &up.uri()).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Failed(_)), "{e:?}");
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn an_idle_connection_is_closed_when_the_idle_timeout_passes() {
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let closed_tx = Mutex::new(Some(closed_tx));
    let up = upstream(move |_, _, s| {
        answer(s, "ok");
        let closed = closed_by_peer(s);
        if let Some(tx) = closed_tx.lock().unwrap().take() {
            let _ = tx.send(closed);
        }
        false
    });
    let pool = pool();
    assert_eq!(send(&pool, &up.uri()).await.unwrap(), "ok");
    assert_eq!(pool.idle(&up.uri()).0, 1);
    tokio::time::pause();
    tokio::time::advance(IDLE_TIMEOUT - Duration::from_secs(1)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        pool.idle(&up.uri()).0,
        1,
        "kept while younger than the timeout"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    for _ in 0..100 {
        if pool.idle(&up.uri()).0 == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.idle(&up.uri()), (0, 0), "the reaper dropped it");
    assert!(closed_rx.await.unwrap(), "and upstream saw it closed");
}

#[test]
fn host_names_the_port_only_when_it_is_not_the_schemes() {
    let host = |scheme: &str, authority: &str| {
        let scheme: Scheme = scheme.parse().unwrap();
        let authority: Authority = authority.parse().unwrap();
        host_value(&scheme, &authority).unwrap()
    };
    assert_eq!(host("http", "a.example:80"), "a.example");
    assert_eq!(host("https", "a.example:443"), "a.example");
    assert_eq!(host("https", "a.example"), "a.example");
    assert_eq!(host("http", "a.example:443"), "a.example:443");
    assert_eq!(host("https", "127.0.0.1:8443"), "127.0.0.1:8443");
    assert_eq!(
        host("https", "user:pw@a.example"),
        "a.example",
        "never the credentials"
    );
}

#[test]
fn a_direct_request_names_only_its_path_and_query() {
    let mut uri: Uri = "https://a.example/v1/messages?beta=true".parse().unwrap();
    origin_form(&mut uri);
    assert_eq!(uri, "/v1/messages?beta=true");
    let mut bare: Uri = "https://a.example".parse().unwrap();
    origin_form(&mut bare);
    assert_eq!(bare, "/");
}
