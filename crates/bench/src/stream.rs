//! Streaming measurements with a raw HTTP/1.1 client over a TCP socket, so that every `read` the kernel hands over is
//! seen: when each SSE event completes, and whether two events arrived in the same read or the same HTTP chunk.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::client::Target;
use crate::load::micros;
use crate::stats::{Dist, Errors};

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Chunked,
    /// Content-Length or close-delimited: every read is treated as one chunk.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size line.
    Size,
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last (empty) chunk.
    Done,
}

/// What one stream showed.
#[derive(Debug, Default, Clone)]
pub struct StreamObs {
    pub status: u16,
    pub ttfb_us: u64,
    pub ttfe_us: u64,
    pub gaps_us: Vec<u64>,
    pub events: usize,
    /// Events that completed in a read that completed another event too.
    pub shared_read: usize,
    /// Events that were not alone in exactly one HTTP chunk.
    pub not_own_chunk: usize,
    pub saw_stop: bool,
}

/// Incremental parser of a response: status line and headers, chunked framing, and SSE event boundaries.
struct Parser {
    head: Vec<u8>,
    in_body: bool,
    framing: Framing,
    chunk: ChunkState,
    size_line: Vec<u8>,
    // SSE state: the current line's length (without CR), whether the current event has any line, its name.
    line_len: usize,
    line: Vec<u8>,
    event_open: bool,
    event_name: Vec<u8>,
    // Per HTTP chunk: events ending in it, and whether it began at an event boundary.
    chunk_ends: usize,
    chunk_began_idle: bool,
    chunk_open: bool,
    // Per read.
    read_ends: usize,
    last_event_at: Option<Instant>,
    obs: StreamObs,
    start: Instant,
}

impl Parser {
    fn new(start: Instant) -> Parser {
        Parser {
            head: Vec::new(),
            in_body: false,
            framing: Framing::Raw,
            chunk: ChunkState::Size,
            size_line: Vec::new(),
            line_len: 0,
            line: Vec::new(),
            event_open: false,
            event_name: Vec::new(),
            chunk_ends: 0,
            chunk_began_idle: true,
            chunk_open: false,
            read_ends: 0,
            last_event_at: None,
            obs: StreamObs::default(),
            start,
        }
    }

    fn idle(&self) -> bool {
        self.line_len == 0 && !self.event_open
    }

    /// Feeds one read. Returns true when the response is complete.
    fn feed(&mut self, data: &[u8], at: Instant) -> anyhow::Result<bool> {
        if self.obs.ttfb_us == 0 && !data.is_empty() {
            self.obs.ttfb_us = micros(at - self.start).max(1);
        }
        self.read_ends = 0;
        if !self.in_body {
            self.head.extend_from_slice(data);
            let Some(pos) = find(&self.head, b"\r\n\r\n") else {
                return Ok(false);
            };
            let head = String::from_utf8_lossy(&self.head[..pos]).to_ascii_lowercase();
            self.obs.status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("bad status line"))?;
            if head.contains("transfer-encoding: chunked") {
                self.framing = Framing::Chunked;
            }
            let rest = self.head.split_off(pos + 4);
            self.in_body = true;
            let done = self.body(&rest, at);
            self.end_read();
            return Ok(done);
        }
        let done = data.is_empty() || self.body(data, at);
        self.end_read();
        Ok(done)
    }

    fn end_read(&mut self) {
        if self.read_ends >= 2 {
            self.obs.shared_read += self.read_ends;
        }
        if self.framing == Framing::Raw {
            self.end_chunk();
        }
    }

    fn begin_chunk(&mut self) {
        self.chunk_ends = 0;
        self.chunk_began_idle = self.idle();
        self.chunk_open = true;
    }

    fn end_chunk(&mut self) {
        if !self.chunk_open {
            return;
        }
        self.chunk_open = false;
        let own = usize::from(self.chunk_ends == 1 && self.chunk_began_idle && self.idle());
        self.obs.not_own_chunk += self.chunk_ends - own;
    }

    /// Body bytes of one read; true at the end of a chunked body.
    fn body(&mut self, mut data: &[u8], at: Instant) -> bool {
        if self.framing == Framing::Raw {
            if !data.is_empty() {
                self.begin_chunk();
                self.sse(data, at);
            }
            return false;
        }
        while !data.is_empty() {
            match self.chunk {
                ChunkState::Done => return true,
                ChunkState::Size => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        self.size_line.extend_from_slice(data);
                        return false;
                    };
                    self.size_line.extend_from_slice(&data[..nl]);
                    data = &data[nl + 1..];
                    let line = String::from_utf8_lossy(&self.size_line).to_string();
                    self.size_line.clear();
                    let hex = line.trim().split(';').next().unwrap_or("");
                    let size = usize::from_str_radix(hex, 16).unwrap_or(0);
                    if size == 0 {
                        self.chunk = ChunkState::Done;
                        return true;
                    }
                    self.begin_chunk();
                    self.chunk = ChunkState::Data(size);
                }
                ChunkState::Data(left) => {
                    let take = left.min(data.len());
                    let (now, rest) = data.split_at(take);
                    self.sse(now, at);
                    data = rest;
                    if take == left {
                        self.end_chunk();
                        self.chunk = ChunkState::DataEnd;
                    } else {
                        self.chunk = ChunkState::Data(left - take);
                    }
                }
                ChunkState::DataEnd => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        return false;
                    };
                    data = &data[nl + 1..];
                    self.chunk = ChunkState::Size;
                }
            }
        }
        self.chunk == ChunkState::Done
    }

    /// SSE bytes: an event ends at an empty line (`\n\n` or `\r\n\r\n`).
    fn sse(&mut self, data: &[u8], at: Instant) {
        for &b in data {
            match b {
                b'\n' => {
                    if self.line_len == 0 {
                        if self.event_open {
                            self.event_done(at);
                        }
                    } else {
                        if let Some(name) = self.line.strip_prefix(b"event:") {
                            self.event_name = name.trim_ascii().to_vec();
                        }
                        self.event_open = true;
                    }
                    self.line_len = 0;
                    self.line.clear();
                }
                b'\r' => {}
                _ => {
                    self.line_len += 1;
                    if self.line.len() < 64 {
                        self.line.push(b);
                    }
                }
            }
        }
    }

    fn event_done(&mut self, at: Instant) {
        self.event_open = false;
        self.obs.events += 1;
        self.chunk_ends += 1;
        self.read_ends += 1;
        if self.event_name == b"message_stop" {
            self.obs.saw_stop = true;
        }
        match self.last_event_at {
            None => self.obs.ttfe_us = micros(at - self.start).max(1),
            Some(prev) => self.obs.gaps_us.push(micros(at - prev)),
        }
        self.last_event_at = Some(at);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The request bytes of a streaming `POST /v1/messages`.
pub fn request_bytes(target: &Target, body: &[u8]) -> Bytes {
    let mut req = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\n\
         accept: text/event-stream\r\n{}: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        target.addr,
        target.auth.0,
        target.auth.1.to_str().unwrap_or_default(),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    Bytes::from(req)
}

/// Sends one streaming request and reads the whole response; times count from `start` (the due time).
pub async fn one_stream(
    addr: SocketAddr,
    request: Bytes,
    start: Instant,
) -> anyhow::Result<StreamObs> {
    let mut sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    sock.write_all(&request).await?;
    let mut parser = Parser::new(start);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.read(&mut buf).await?;
        let at = Instant::now();
        if parser.feed(&buf[..n], at)? || n == 0 {
            break;
        }
    }
    if parser.obs.status == 0 {
        bail!("no response");
    }
    Ok(parser.obs)
}

/// Opens a streaming request and returns the socket once the first event arrived (memory scenario: the caller holds
/// it open).
pub async fn open_and_hold(addr: SocketAddr, request: Bytes) -> anyhow::Result<TcpStream> {
    let mut sock = TcpStream::connect(addr).await?;
    sock.write_all(&request).await?;
    let mut parser = Parser::new(Instant::now());
    let mut buf = vec![0u8; 16 * 1024];
    while parser.obs.events == 0 {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before the first event");
        }
        parser.feed(&buf[..n], Instant::now())?;
    }
    if parser.obs.status != 200 {
        bail!("HTTP {}", parser.obs.status);
    }
    Ok(sock)
}

/// Streams of a run, pooled.
#[derive(Debug, Default, Clone)]
pub struct StreamResult {
    pub streams_ok: u64,
    pub errors: Errors,
    pub ttfb: Dist,
    pub ttfe: Dist,
    pub gap: Dist,
    /// The samples behind the distributions (to merge rounds).
    pub samples: [Vec<u64>; 3],
    pub events: u64,
    pub shared_read: u64,
    pub not_own_chunk: u64,
    pub cpu_proxy: f64,
    pub cpu_sim: f64,
}

/// Open-loop streams: one started every `1/rate` seconds for `duration`, in turn on each of `targets` (stream `i` on
/// target `i mod n`, so the targets share the same moments); each must end with `message_stop` and, when
/// `expected_events` is given, deliver exactly that many events. One result per target; `cpu_sim` is the upstream's
/// CPU over the whole run (shared by the targets).
pub async fn stream_load(
    targets: &[Target],
    body: &[u8],
    rate: f64,
    duration: Duration,
    expected_events: Option<usize>,
    timeout: Duration,
) -> Vec<StreamResult> {
    let requests: Vec<Bytes> = targets.iter().map(|t| request_bytes(t, body)).collect();
    let crate::load::DueTimes { mut rx, ticker, .. } = crate::load::DueTimes::start(rate, duration);
    let before: Vec<(f64, f64)> = targets.iter().map(Target::cpu).collect();
    type Seen = Vec<(usize, anyhow::Result<StreamObs>)>;
    let obs: Arc<Mutex<Seen>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = JoinSet::new();
    let mut i = 0usize;
    while let Some(due) = rx.recv().await {
        let which = i % targets.len().max(1);
        i += 1;
        let (request, obs, addr) = (requests[which].clone(), obs.clone(), targets[which].addr);
        tasks.spawn(async move {
            let r = match tokio::time::timeout(timeout, one_stream(addr, request, due)).await {
                Ok(r) => r,
                Err(_) => Err(anyhow!("timeout")),
            };
            obs.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((which, r));
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let _ = ticker.join();
    let all = std::mem::take(&mut *obs.lock().unwrap_or_else(|e| e.into_inner()));
    let mut out: Vec<StreamResult> = targets
        .iter()
        .zip(before)
        .map(|(t, (p0, s0))| {
            let (p1, s1) = t.cpu();
            StreamResult {
                cpu_proxy: p1 - p0,
                cpu_sim: s1 - s0,
                ..StreamResult::default()
            }
        })
        .collect();
    for (which, r) in all {
        out[which].add(r, expected_events);
    }
    for o in &mut out {
        o.summarize();
    }
    out
}

impl StreamResult {
    /// One stream's outcome.
    fn add(&mut self, r: anyhow::Result<StreamObs>, expected_events: Option<usize>) {
        match r {
            Ok(o) if o.status != 200 => self.errors.add(format!("HTTP {}", o.status)),
            Ok(o) if expected_events.is_some_and(|n| n != o.events) || !o.saw_stop => {
                self.errors.add(format!(
                    "{} events{}",
                    o.events,
                    if o.saw_stop { "" } else { ", no message_stop" }
                ))
            }
            Ok(o) => {
                self.streams_ok += 1;
                self.events += o.events as u64;
                self.shared_read += o.shared_read as u64;
                self.not_own_chunk += o.not_own_chunk as u64;
                self.samples[0].push(o.ttfb_us);
                self.samples[1].push(o.ttfe_us);
                self.samples[2].extend(o.gaps_us);
            }
            Err(e) => self.errors.add(crate::client::error_kind(&e)),
        }
    }

    fn summarize(&mut self) {
        self.ttfb = Dist::of(self.samples[0].clone());
        self.ttfe = Dist::of(self.samples[1].clone());
        self.gap = Dist::of(self.samples[2].clone());
    }

    /// Two runs of the same load as one (rounds interleaved with other paths).
    pub fn merge(mut self, other: StreamResult) -> StreamResult {
        let [a, b, c] = other.samples;
        self.samples[0].extend(a);
        self.samples[1].extend(b);
        self.samples[2].extend(c);
        self.summarize();
        self.streams_ok += other.streams_ok;
        self.errors.merge(&other.errors);
        self.events += other.events;
        self.shared_read += other.shared_read;
        self.not_own_chunk += other.not_own_chunk;
        self.cpu_proxy += other.cpu_proxy;
        self.cpu_sim += other.cpu_sim;
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(reads: &[&[u8]]) -> StreamObs {
        let t0 = Instant::now();
        let mut p = Parser::new(t0);
        for (i, r) in reads.iter().enumerate() {
            let at = t0 + Duration::from_millis(i as u64 + 1);
            if p.feed(r, at).unwrap() {
                break;
            }
        }
        p.obs
    }

    fn chunk(s: &str) -> Vec<u8> {
        format!("{:x}\r\n{s}\r\n", s.len()).into_bytes()
    }

    const HEAD: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";

    #[test]
    fn separate_chunks_in_separate_reads() {
        let (a, b) = (
            chunk("event: a\ndata: 1\n\n"),
            chunk("event: message_stop\ndata: 2\n\n"),
        );
        let o = run(&[HEAD, &a, &b, b"0\r\n\r\n"]);
        assert_eq!(o.status, 200);
        assert_eq!(o.events, 2);
        assert_eq!(o.shared_read, 0);
        assert_eq!(o.not_own_chunk, 0);
        assert!(o.saw_stop);
        assert_eq!(o.ttfb_us, 1000);
        assert_eq!(o.ttfe_us, 2000);
        assert_eq!(o.gaps_us, vec![1000]);
    }

    #[test]
    fn two_events_in_one_read_and_one_chunk() {
        let mut both = chunk("event: a\ndata: 1\n\nevent: b\ndata: 2\n\n");
        both.extend_from_slice(b"0\r\n\r\n");
        let o = run(&[HEAD, &both]);
        assert_eq!(o.events, 2);
        assert_eq!(o.shared_read, 2);
        assert_eq!(o.not_own_chunk, 2);
    }

    #[test]
    fn one_event_split_over_chunks_and_reads() {
        let (a, b) = (chunk("event: a\r\n"), chunk("data: 1\n\n"));
        let o = run(&[HEAD, &a, &b, b"0\r\n\r\n"]);
        assert_eq!(o.events, 1);
        assert_eq!(o.shared_read, 0);
        assert_eq!(o.not_own_chunk, 1);
    }

    #[test]
    fn crlf_events_without_chunking() {
        let o = run(&[
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nevent: a\r\ndata: 1\r\n\r\n",
            b"event: b\r\ndata: 2\r\n\r\n",
            b"",
        ]);
        assert_eq!(o.events, 2);
        assert_eq!(o.not_own_chunk, 0);
        assert_eq!(o.shared_read, 0);
    }
}
