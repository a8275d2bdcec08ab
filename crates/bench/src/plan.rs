//! The suite's vocabulary: the plan of a run (sizes, durations, sections), where the binaries are, the request body,
//! and the few helpers every section uses. Knows no section.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::client::ClientKind;

pub const MODEL: &str = "claude-sonnet-4-5";
pub const UPSTREAM_KEY: &str = "sk-ant-api03-bench-upstream-key";

/// Sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    /// The paths of the throughput, large-body and routes scenarios alternate this many times (each for duration ÷
    /// rounds). One-second slices: this machine shares its host, and a burst of steal time lasting seconds fell on one
    /// path's half of the time with two rounds (the added p99 at 500 req/s read −1.25, +0.63 and +3.0 ms in three runs
    /// of one evening). The latency and pool scenarios go further: their paths are measured at once, paired
    /// ([`crate::load::OpenLoop::paired`]).
    pub rounds: usize,
    pub warmup: Duration,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub client_cmp: Duration,
    pub body_bytes: usize,
    pub rates: Vec<f64>,
    /// The latency scenario's run at each rate, every path at once (paired): as long as the four paths took one after
    /// another before, for about four times the samples per path (15,000 at 500 req/s: a p99 from the 150 slowest).
    pub latency_duration: Duration,
    /// The peer's run at each latency rate, alone after the paired paths (LiteLLM saturates at these rates).
    pub peer_duration: Duration,
    pub concurrency: usize,
    pub throughput_duration: Duration,
    pub stream_rate: f64,
    pub stream_duration: Duration,
    pub stream_events: usize,
    pub stream_delay_ms: u64,
    pub large_bytes: usize,
    pub large_rate: f64,
    pub large_duration: Duration,
    pub idle_wait: Duration,
    pub accounts: usize,
    pub accounts_rate: f64,
    pub open_streams: usize,
    pub open_stream_delay_ms: u64,
    pub stampede: usize,
    pub token_latency_ms: u64,
    /// The fast upstream's worker threads (0: current-thread runtime).
    pub upstream_threads: usize,
    /// Fixed rates at which CPU per request is measured.
    pub cpu_rates: Vec<f64>,
    pub cpu_duration: Duration,
    /// The CPU scenario's rounds (one-second slices, as [`Plan::rounds`]), so that a burst of load from outside the
    /// machine (it shares its host) falls on every path alike rather than on one path's half of the time.
    pub cpu_rounds: usize,
    /// The keys scenario: rate, time per configuration in all, rounds.
    pub keys_rate: f64,
    pub keys_duration: Duration,
    pub keys_rounds: usize,
    /// The routes scenario: rate and time per route.
    pub routes_rate: f64,
    pub routes_duration: Duration,
    /// The pool scenario: time at `accounts_rate`, its three paths at once (paired).
    pub pool_duration: Duration,
    /// Only these sections (`--only`), when set.
    pub only: Option<Vec<String>>,
}

/// The sections `--only` may name.
pub const SECTIONS: &[&str] = &[
    "latency",
    "throughput",
    "cpu",
    "streaming",
    "large",
    "keys",
    "routes",
    "pool",
    "memory",
    "stampede",
];

impl Plan {
    pub fn full() -> Plan {
        Plan {
            smoke: false,
            rounds: 8,
            warmup: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            max_in_flight: 1000,
            client_cmp: Duration::from_secs(3),
            body_bytes: 1024,
            rates: vec![100.0, 500.0, 2000.0],
            latency_duration: Duration::from_secs(30),
            peer_duration: Duration::from_secs(8),
            concurrency: 64,
            throughput_duration: Duration::from_secs(8),
            stream_rate: 40.0,
            stream_duration: Duration::from_secs(10),
            stream_events: 200,
            stream_delay_ms: 5,
            large_bytes: 700 * 1024,
            large_rate: 50.0,
            large_duration: Duration::from_secs(8),
            idle_wait: Duration::from_secs(2),
            accounts: 10_000,
            accounts_rate: 500.0,
            open_streams: 1000,
            open_stream_delay_ms: 100,
            stampede: 1000,
            token_latency_ms: 200,
            upstream_threads: 0,
            cpu_rates: vec![1000.0, 4000.0],
            cpu_duration: Duration::from_secs(10),
            cpu_rounds: 10,
            keys_rate: 2000.0,
            keys_duration: Duration::from_secs(12),
            keys_rounds: 4,
            routes_rate: 1000.0,
            routes_duration: Duration::from_secs(8),
            pool_duration: Duration::from_secs(30),
            only: None,
        }
    }

    /// Whether the section runs (every one unless `--only` was given).
    pub fn wants(&self, section: &str) -> bool {
        // A section the suite runs but `--only` cannot name (as `pool` once was) fails the smoke test here.
        assert!(
            SECTIONS.contains(&section),
            "section {section:?} is not in SECTIONS"
        );
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == section))
    }

    /// Every scenario for a moment at tiny rates: proves the suite runs and reports, measures nothing.
    pub fn smoke() -> Plan {
        Plan {
            smoke: true,
            rounds: 1,
            warmup: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
            max_in_flight: 100,
            client_cmp: Duration::from_millis(200),
            body_bytes: 1024,
            rates: vec![50.0, 100.0],
            latency_duration: Duration::from_millis(400),
            peer_duration: Duration::from_millis(400),
            concurrency: 4,
            throughput_duration: Duration::from_millis(400),
            stream_rate: 10.0,
            stream_duration: Duration::from_millis(300),
            stream_events: 20,
            stream_delay_ms: 2,
            large_bytes: 700 * 1024,
            large_rate: 10.0,
            large_duration: Duration::from_millis(300),
            idle_wait: Duration::from_millis(200),
            accounts: 100,
            accounts_rate: 50.0,
            open_streams: 20,
            open_stream_delay_ms: 100,
            stampede: 50,
            token_latency_ms: 200,
            upstream_threads: 0,
            cpu_rates: vec![100.0],
            cpu_duration: Duration::from_millis(300),
            cpu_rounds: 2,
            keys_rate: 100.0,
            keys_duration: Duration::from_millis(400),
            keys_rounds: 2,
            routes_rate: 50.0,
            routes_duration: Duration::from_millis(300),
            pool_duration: Duration::from_millis(300),
            only: None,
        }
    }
}

/// Where the binaries are and how to run.
pub struct Setup {
    pub plan: Plan,
    pub gateway_bin: PathBuf,
    pub simulator_bin: PathBuf,
    pub litellm: Option<PathBuf>,
    /// nginx's binary, or why there is none.
    pub nginx: Result<PathBuf, String>,
    pub client: ClientKind,
}

/// A Messages request body of exactly `size` bytes (the user text is padded).
pub fn body(size: usize, stream: bool, sim: Option<(usize, u64)>) -> Bytes {
    let sim = sim
        .map(|(events, delay)| format!(r#","sim":{{"events":{events},"delay_ms":{delay}}}"#))
        .unwrap_or_default();
    let make = |text: &str| {
        format!(
            r#"{{"model":"{MODEL}","max_tokens":256,"stream":{stream}{sim},"messages":[{{"role":"user","content":"{text}"}}]}}"#
        )
    };
    let overhead = make("").len();
    let words = "the quick brown fox jumps over the lazy dog ";
    let text: String = words
        .chars()
        .cycle()
        .take(size.saturating_sub(overhead))
        .collect();
    Bytes::from(make(&text))
}

pub fn say(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

pub fn one_line(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    let s: String = s
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    s
}

pub fn per_k(cpu: f64, ok: u64) -> f64 {
    if ok == 0 {
        0.0
    } else {
        cpu / (ok as f64 / 1000.0)
    }
}
