//! The suite's plan, its results, and the order of its sections: the side-by-side part on the fast upstream (`env`),
//! then the scenarios that need processes of their own (memory, stampede).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::client::{Client, ClientKind};
use crate::env::{drop_peer, large, load_line, log_paths, start_env, streaming, Env};
use crate::features;
use crate::load::LoadResult;
use crate::runner::Shape;
use crate::stream::StreamResult;

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

/// The paths of one measurement: direct (client → upstream), nginx, the minimal hyper proxy, the gateway, and the
/// peer.
#[derive(Debug, Clone, Default)]
pub struct Paths<T> {
    pub direct: T,
    pub nginx: Option<T>,
    pub hyper: Option<T>,
    pub gateway: T,
    pub litellm: Option<T>,
}

impl<T> Paths<T> {
    /// The measured paths with their names, in the report's order.
    pub fn named(&self) -> Vec<(&'static str, &T)> {
        let mut v = vec![("direct", &self.direct)];
        v.extend(self.nginx.as_ref().map(|n| ("nginx", n)));
        v.extend(self.hyper.as_ref().map(|h| ("hyper proxy", h)));
        v.push(("gateway", &self.gateway));
        v.extend(self.litellm.as_ref().map(|l| ("LiteLLM", l)));
        v
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientCmp {
    pub hyper: LoadResult,
    pub reqwest: LoadResult,
}

#[derive(Debug, Clone, Default)]
pub struct Large {
    pub paths: Paths<LoadResult>,
    pub rss_before_mb: f64,
    pub rss_peak_mb: f64,
    pub rss_after_mb: f64,
}

/// Everything a run measured.
#[derive(Debug, Default)]
pub struct Results {
    pub client_kind: String,
    pub client_cmp: Option<ClientCmp>,
    pub latency: Vec<(f64, Paths<LoadResult>)>,
    pub throughput: Option<Paths<LoadResult>>,
    /// CPU per request at fixed rates.
    pub cpu: Vec<(f64, Paths<LoadResult>)>,
    pub streaming: Option<Paths<StreamResult>>,
    pub large: Option<Large>,
    pub keys: Option<features::Keys>,
    pub routes: Option<features::Routes>,
    pub pool: Option<crate::pool::Pool>,
    pub upstream_threads: usize,
    /// nginx's version when it was measured, else why not.
    pub nginx_version: Option<String>,
    pub nginx_absent: String,
    pub memory: Option<crate::memory::Memory>,
    pub stampede: Option<crate::stampede::Stampede>,
    /// LiteLLM's version when it was measured.
    pub litellm_version: Option<String>,
    /// Why LiteLLM was not measured.
    pub litellm_absent: String,
    pub notes: Vec<String>,
    /// The callgrind profile's workloads (empty when there is none).
    pub profile: Vec<crate::profile::Phase>,
    pub profile_note: Option<String>,
    /// The heap of a gateway loading the memory scenario's accounts (massif), when profiled.
    pub heap: Option<crate::profile::Heap>,
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

/// Runs every scenario and returns what they measured.
pub async fn run(setup: &Setup) -> anyhow::Result<Results> {
    let plan = &setup.plan;
    let mut results = Results {
        client_kind: format!("{:?}", setup.client).to_lowercase(),
        litellm_absent: "not requested (run bench/run.sh, or pass --litellm PATH)".into(),
        nginx_absent: "not requested".into(),
        upstream_threads: plan.upstream_threads,
        ..Results::default()
    };
    let env = start_env(setup, &mut results).await?;
    proxy_sections(&env, &mut results).await;
    let env = drop_peer(env);
    feature_sections(&env, &mut results).await;
    drop(env);
    if plan.wants("memory") {
        let m = crate::memory::run(setup).await;
        results.memory = noted(&mut results, "memory", m);
    }
    if plan.wants("stampede") {
        let s = match Client::new(setup.client) {
            Ok(client) => crate::stampede::run(setup, &client).await,
            Err(e) => Err(e),
        };
        results.stampede = noted(&mut results, "stampede", s);
    }
    Ok(results)
}

/// A section's result; a failed section leaves a note in the report instead of ending the run.
fn noted<T>(results: &mut Results, section: &str, r: anyhow::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            say(format!("the {section} section failed: {e:#}"));
            results
                .notes
                .push(format!("The {section} section failed: {}", one_line(&e)));
            None
        }
    }
}

/// Sections 1–4: direct, nginx, the gateway and the peer side by side.
async fn proxy_sections(env: &Env<'_>, results: &mut Results) {
    let plan = env.plan;
    if plan.wants("latency") {
        for &rate in &plan.rates {
            let p = env
                .json_paired(rate, &env.small, plan.latency_duration, true)
                .await;
            log_paths(&format!("latency {rate} req/s"), &p, load_line);
            results.latency.push((rate, p));
        }
    }
    if plan.wants("throughput") {
        let shape = Shape::Closed(plan.concurrency);
        let p = env
            .json(shape, &env.small, plan.throughput_duration, true)
            .await;
        log_paths("throughput", &p, load_line);
        results.throughput = Some(p);
    }
    if plan.wants("cpu") {
        for &rate in &plan.cpu_rates {
            let p = env
                .json_in_rounds(
                    Shape::Open(rate),
                    &env.small,
                    plan.cpu_duration,
                    plan.cpu_rounds,
                    false,
                )
                .await;
            log_paths(&format!("CPU at {rate} req/s"), &p, load_line);
            results.cpu.push((rate, p));
        }
    }
    if plan.wants("streaming") {
        results.streaming = Some(streaming(env).await);
    }
}

/// Sections 5–7: large bodies, the newer features' costs, pool scale.
async fn feature_sections(env: &Env<'_>, results: &mut Results) {
    let plan = env.plan;
    if plan.wants("large") {
        let l = large(env).await;
        results.large = noted(results, "large bodies", l);
    }
    if plan.wants("keys") {
        let (bin, client) = (&env.setup.gateway_bin, &env.client);
        let k = features::keys(
            bin,
            &env.gdir,
            &env.gw,
            client,
            plan,
            &env.gateway,
            &env.small,
        );
        let k = k.await;
        results.keys = noted(results, "keys", k);
    }
    if plan.wants("routes") {
        let r = features::routes(
            &env.client,
            plan,
            &env.gw,
            &env.up.base_url,
            env.up.proc.pid(),
        );
        let r = r.await;
        results.routes = noted(results, "routes", r);
    }
    if plan.wants("pool") {
        let token_url = env.sim.token_url();
        let p = crate::pool::run(env.setup, &env.client, &env.up, &token_url).await;
        results.pool = noted(results, "pool", p);
    }
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
