//! The scenarios of the suite (issue 7), each measured on the direct path (client → simulator), through the gateway,
//! and, for 1–3, through LiteLLM, in the same run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use claude_gateway::account::{AccountKind, Credential, NewAccount};
use claude_gateway::store::sqlite::SqliteStore;
use claude_gateway::store::Store;

use crate::client::{Client, ClientKind, Target};
use crate::features;
use crate::load::{self, LoadResult};
use crate::nginx::Nginx;
use crate::procs::{self, FastUpstream, Gateway, GatewayDir, LiteLlm, Sim, CLIENT_KEY};
use crate::runner::{self, Scenario, Shape};
use crate::stream::{self, StreamResult};
use crate::upstream::FRAME_EVENTS;

pub const MODEL: &str = "claude-sonnet-4-5";
pub const UPSTREAM_KEY: &str = "sk-ant-api03-bench-upstream-key";
const STAMPEDE_REFRESH_TOKEN: &str = "sk-ant-ort01-bench-stampede-refresh-token";

/// Sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    /// Direct and gateway runs alternate this many times (each for duration ÷ rounds).
    pub rounds: usize,
    pub warmup: Duration,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub client_cmp: Duration,
    pub body_bytes: usize,
    pub rates: Vec<f64>,
    pub latency_duration: Duration,
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
    /// The keys scenario: rate, time per configuration in all, rounds.
    pub keys_rate: f64,
    pub keys_duration: Duration,
    pub keys_rounds: usize,
    /// The routes scenario: rate and time per route.
    pub routes_rate: f64,
    pub routes_duration: Duration,
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
    "memory",
    "stampede",
];

impl Plan {
    pub fn full() -> Plan {
        Plan {
            smoke: false,
            rounds: 2,
            warmup: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            max_in_flight: 1000,
            client_cmp: Duration::from_secs(3),
            body_bytes: 1024,
            rates: vec![100.0, 500.0, 2000.0],
            latency_duration: Duration::from_secs(10),
            concurrency: 64,
            throughput_duration: Duration::from_secs(8),
            stream_rate: 40.0,
            stream_duration: Duration::from_secs(10),
            stream_events: 200,
            stream_delay_ms: 5,
            large_bytes: 700 * 1024,
            large_rate: 50.0,
            large_duration: Duration::from_secs(10),
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
            keys_rate: 2000.0,
            keys_duration: Duration::from_secs(12),
            keys_rounds: 4,
            routes_rate: 1000.0,
            routes_duration: Duration::from_secs(8),
            only: None,
        }
    }

    /// Whether the section runs (every one unless `--only` was given).
    pub fn wants(&self, section: &str) -> bool {
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
            keys_rate: 100.0,
            keys_duration: Duration::from_millis(400),
            keys_rounds: 2,
            routes_rate: 50.0,
            routes_duration: Duration::from_millis(300),
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

/// The paths of one measurement: direct (client → upstream), nginx, the gateway, and the peer.
#[derive(Debug, Clone, Default)]
pub struct Paths<T> {
    pub direct: T,
    pub nginx: Option<T>,
    pub gateway: T,
    pub litellm: Option<T>,
}

impl<T> Paths<T> {
    /// The measured paths with their names, in the report's order.
    pub fn named(&self) -> Vec<(&'static str, &T)> {
        let mut v = vec![("direct", &self.direct)];
        v.extend(self.nginx.as_ref().map(|n| ("nginx", n)));
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

#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub idle_mb: f64,
    pub sim_idle_mb: f64,
    pub accounts: usize,
    pub seed_secs: f64,
    pub accounts_mb: f64,
    pub accounts_latency: Option<(LoadResult, LoadResult)>,
    pub streams_requested: usize,
    pub streams_open: usize,
    pub streams_errors: crate::stats::Errors,
    pub streams_mb: f64,
    pub streams_before_mb: f64,
    pub streams_sim_mb: f64,
    pub streams_after_close_mb: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Stampede {
    pub n: usize,
    pub token_calls: u64,
    pub refresh_attempts_metric: f64,
    /// One token-endpoint call made directly (the refresh itself).
    pub token_call_us: u64,
    pub direct_burst: LoadResult,
    pub gateway_burst: LoadResult,
    pub stampede: LoadResult,
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
    pub upstream_threads: usize,
    /// nginx's version when it was measured, else why not.
    pub nginx_version: Option<String>,
    pub nginx_absent: String,
    pub memory: Option<Memory>,
    pub stampede: Option<Stampede>,
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

/// The processes and paths every measurement of the main part shares.
struct Env<'a> {
    setup: &'a Setup,
    plan: &'a Plan,
    client: Client,
    /// The simulator: the token endpoint (kept running for the gateway).
    _sim: Sim,
    up: FastUpstream,
    gw: Gateway,
    gdir: GatewayDir,
    /// Kept running while its target is measured.
    _nginx: Option<Nginx>,
    litellm: Option<(LiteLlm, Target)>,
    direct: Target,
    gateway: Target,
    nginx_target: Option<Target>,
    small: Bytes,
}

impl Env<'_> {
    /// The paths measured side by side: direct, nginx (when there is one), gateway.
    fn side_by_side(&self) -> Vec<Target> {
        let mut v = vec![self.direct.clone()];
        v.extend(self.nginx_target.clone());
        v.push(self.gateway.clone());
        v
    }

    /// Results in the order of [`Env::side_by_side`], and the peer's, as [`Paths`].
    fn split<T: Default>(&self, mut v: Vec<T>, litellm: Option<T>) -> Paths<T> {
        let gateway = v.pop().unwrap_or_default();
        let nginx = if self.nginx_target.is_some() {
            v.pop()
        } else {
            None
        };
        Paths {
            direct: v.pop().unwrap_or_default(),
            nginx,
            gateway,
            litellm,
        }
    }

    fn peer(&self) -> Option<&Target> {
        self.litellm.as_ref().map(|(_, t)| t)
    }

    /// `shape` on direct, nginx and the gateway in alternating rounds, then on the peer once when `with_peer`.
    async fn json(
        &self,
        shape: Shape,
        body: &Bytes,
        duration: Duration,
        with_peer: bool,
    ) -> Paths<LoadResult> {
        let paths = self.side_by_side();
        let s = Scenario {
            paths: &paths,
            shape,
            body,
            duration,
            rounds: self.plan.rounds,
        };
        let v = runner::measure(&self.client, self.plan, &s).await;
        let peer = match self.peer().filter(|_| with_peer) {
            Some(t) => {
                let s = Scenario {
                    paths: std::slice::from_ref(t),
                    rounds: 1,
                    ..s
                };
                runner::measure(&self.client, self.plan, &s).await.pop()
            }
            None => None,
        };
        self.split(v, peer)
    }
}

fn log_paths<T>(what: &str, p: &Paths<T>, line: impl Fn(&T) -> String) {
    for (name, r) in p.named() {
        say(format!("{what} {name}: {}", line(r)));
    }
}

fn load_line(r: &LoadResult) -> String {
    format!(
        "{:.0} req/s, p50 {} p99 {} µs, proxy CPU {:.2} s, upstream CPU {:.2} s, errors {}",
        r.rps(),
        r.latency.p50,
        r.latency.p99,
        r.cpu_proxy,
        r.cpu_sim,
        r.errors.describe()
    )
}

/// Starts the processes of the main part: the simulator (token endpoint), the fast upstream, a gateway in front of
/// it, nginx and LiteLLM when available, and picks the load client.
async fn start_env<'a>(setup: &'a Setup, results: &mut Results) -> anyhow::Result<Env<'a>> {
    let plan = &setup.plan;
    let sim = Sim::start(&setup.simulator_bin, &[])?;
    let up = FastUpstream::start(
        plan.upstream_threads,
        plan.stream_events,
        plan.stream_delay_ms,
    )?;
    say(format!(
        "simulator on {}, fast upstream on {}",
        sim.base_url, up.base_url
    ));
    let gdir = GatewayDir::with_upstream(None, "main", &up.base_url, &sim.token_url())?;
    gdir.cli(
        &setup.gateway_bin,
        &["accounts", "add-key", "--name", "bench", UPSTREAM_KEY],
    )?;
    let gw = Gateway::start(&setup.gateway_bin, &gdir)?;
    say(format!("gateway on {}", gw.base_url));
    let up_pid = up.proc.pid();
    let direct = Target::new(&up.base_url, ("x-api-key", UPSTREAM_KEY), None, up_pid)?;
    let gateway = Target::new(
        &gw.base_url,
        ("x-api-key", CLIENT_KEY),
        Some(gw.proc.pid()),
        up_pid,
    )?;
    let small = body(plan.body_bytes, false, None);
    let nginx = match &setup.nginx {
        Ok(bin) => match Nginx::start(bin, direct.addr).await {
            Ok(n) => {
                say(format!("nginx {} on {}", n.version, n.base_url));
                results.nginx_version = Some(n.version.clone());
                Some(n)
            }
            Err(e) => {
                results.nginx_absent = format!("nginx failed to start: {}", one_line(&e));
                None
            }
        },
        Err(why) => {
            results.nginx_absent = why.clone();
            None
        }
    };
    let nginx_target = match &nginx {
        Some(n) => Some(Target::new(
            &n.base_url,
            ("x-api-key", UPSTREAM_KEY),
            Some(n.proc.pid()),
            up_pid,
        )?),
        None => None,
    };
    let litellm = match &setup.litellm {
        Some(exe) => match start_litellm(exe, &up.base_url, up_pid, &small).await {
            Ok((ll, target)) => {
                results.litellm_version = Some(ll.version.clone());
                Some((ll, target))
            }
            Err(e) => {
                say(format!("LiteLLM unavailable: {e:#}"));
                results.litellm_absent =
                    format!("LiteLLM failed to start or to answer: {}", one_line(&e));
                None
            }
        },
        None => None,
    };
    let (client, cmp) = pick_client(setup, &direct, &small).await?;
    results.client_cmp = Some(cmp);
    Ok(Env {
        setup,
        plan,
        client,
        _sim: sim,
        up,
        gw,
        gdir,
        _nginx: nginx,
        litellm,
        direct,
        gateway,
        nginx_target,
        small,
    })
}

/// Which load client adds less: the same closed loop on the direct path with each; returns the one asked for.
async fn pick_client(
    setup: &Setup,
    direct: &Target,
    small: &Bytes,
) -> anyhow::Result<(Client, ClientCmp)> {
    let plan = &setup.plan;
    let hyper = Client::new(ClientKind::Hyper)?;
    let reqwest = Client::new(ClientKind::Reqwest)?;
    let shape = Shape::Closed(plan.concurrency);
    let mut cmp = Vec::new();
    for c in [&hyper, &reqwest] {
        let _ = runner::once(c, plan, direct, shape, small, plan.warmup).await;
        cmp.push(runner::once(c, plan, direct, shape, small, plan.client_cmp).await);
    }
    let reqwest_r = cmp.pop().unwrap_or_default();
    let hyper_r = cmp.pop().unwrap_or_default();
    say(format!(
        "client: hyper {:.0} req/s ({:.3} CPU s/1k), reqwest {:.0} req/s ({:.3} CPU s/1k)",
        hyper_r.rps(),
        per_k(hyper_r.cpu_client, hyper_r.ok),
        reqwest_r.rps(),
        per_k(reqwest_r.cpu_client, reqwest_r.ok)
    ));
    let client = match setup.client {
        ClientKind::Hyper => hyper,
        ClientKind::Reqwest => reqwest,
    };
    Ok((
        client,
        ClientCmp {
            hyper: hyper_r,
            reqwest: reqwest_r,
        },
    ))
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
    if plan.wants("latency") {
        for &rate in &plan.rates {
            let p = env
                .json(Shape::Open(rate), &env.small, plan.latency_duration, true)
                .await;
            log_paths(&format!("latency {rate} req/s"), &p, load_line);
            results.latency.push((rate, p));
        }
    }
    if plan.wants("throughput") {
        let p = env
            .json(
                Shape::Closed(plan.concurrency),
                &env.small,
                plan.throughput_duration,
                true,
            )
            .await;
        log_paths("throughput", &p, load_line);
        results.throughput = Some(p);
    }
    if plan.wants("cpu") {
        for &rate in &plan.cpu_rates {
            let p = env
                .json(Shape::Open(rate), &env.small, plan.cpu_duration, false)
                .await;
            log_paths(&format!("CPU at {rate} req/s"), &p, load_line);
            results.cpu.push((rate, p));
        }
    }
    if plan.wants("streaming") {
        results.streaming = Some(streaming(&env).await);
    }
    let env = drop_peer(env);
    if plan.wants("large") {
        results.large = Some(large(&env).await?);
    }
    if plan.wants("keys") {
        results.keys = Some(
            features::keys(
                &env.setup.gateway_bin,
                &env.gdir,
                &env.gw,
                &env.client,
                plan,
                &env.gateway,
                &env.small,
            )
            .await?,
        );
    }
    if plan.wants("routes") {
        results.routes = Some(
            features::routes(
                &env.client,
                plan,
                &env.gw,
                &env.up.base_url,
                env.up.proc.pid(),
            )
            .await?,
        );
    }
    drop(env);
    if plan.wants("memory") {
        results.memory = Some(memory(setup, &Client::new(setup.client)?).await?);
    }
    if plan.wants("stampede") {
        results.stampede = Some(stampede(setup, &Client::new(setup.client)?).await?);
    }
    Ok(results)
}

/// Stops LiteLLM (it is measured in the first sections only) and nginx's siblings keep running.
fn drop_peer(mut env: Env<'_>) -> Env<'_> {
    env.litellm = None;
    env
}

/// Streams from the fast upstream, direct, through nginx and through the gateway started in turn, then LiteLLM's.
async fn streaming(env: &Env<'_>) -> Paths<StreamResult> {
    let plan = env.plan;
    let text_events = plan.stream_events.saturating_sub(FRAME_EVENTS).max(1);
    let sbody = body(
        plan.body_bytes,
        true,
        Some((text_events, plan.stream_delay_ms)),
    );
    let paths = env.side_by_side();
    let expected = Some(plan.stream_events);
    let v = runner::streams(
        plan,
        &paths,
        &sbody,
        plan.stream_rate,
        plan.stream_duration,
        expected,
    )
    .await;
    let peer = match env.peer() {
        Some(t) => runner::streams(
            plan,
            std::slice::from_ref(t),
            &sbody,
            plan.stream_rate,
            plan.stream_duration,
            None,
        )
        .await
        .pop(),
        None => None,
    };
    let p = env.split(v, peer);
    log_paths("streaming", &p, |r: &StreamResult| {
        format!(
            "{} streams, first event p90 {} p99 {} µs, gap p99 {} µs, shared reads {}, errors {}",
            r.streams_ok,
            r.ttfe.p90,
            r.ttfe.p99,
            r.gap.p99,
            r.shared_read,
            r.errors.describe()
        )
    });
    p
}

/// 700 KB requests on direct and the gateway (and nginx), with the gateway's RSS sampled throughout.
async fn large(env: &Env<'_>) -> anyhow::Result<Large> {
    let plan = env.plan;
    let big = body(plan.large_bytes, false, None);
    let pid = env.gw.proc.pid();
    let rss_before_mb = procs::rss_mb(pid)?;
    let sampler = RssSampler::start(pid);
    let p = env
        .json(
            Shape::Open(plan.large_rate),
            &big,
            plan.large_duration,
            false,
        )
        .await;
    let rss_peak_mb = sampler.stop().await;
    let rss_after_mb = procs::rss_mb(pid)?;
    log_paths("large bodies", &p, load_line);
    Ok(Large {
        paths: p,
        rss_before_mb,
        rss_peak_mb,
        rss_after_mb,
    })
}

async fn start_litellm(
    exe: &Path,
    upstream: &str,
    upstream_pid: u32,
    small: &Bytes,
) -> anyhow::Result<(LiteLlm, Target)> {
    say("starting LiteLLM (its imports take a while)");
    let ll = LiteLlm::start(exe, upstream, MODEL).await?;
    let target = Target::new(
        &ll.base_url,
        ("authorization", "Bearer sk-bench-litellm"),
        Some(ll.proc.pid()),
        upstream_pid,
    )?;
    // One of each kind of request must work before it is measured.
    let client = Client::new(ClientKind::Hyper)?;
    let a = client.messages(&target, small).await?;
    if a.status != 200 {
        return Err(anyhow!("POST /v1/messages answered HTTP {}", a.status));
    }
    let sbody = body(small.len(), true, None);
    let obs = stream::one_stream(
        target.addr,
        stream::request_bytes(&target, &sbody),
        Instant::now(),
    )
    .await?;
    if obs.status != 200 || !obs.saw_stop {
        return Err(anyhow!(
            "streaming POST /v1/messages answered HTTP {} with {} events (message_stop: {})",
            obs.status,
            obs.events,
            obs.saw_stop
        ));
    }
    say(format!("LiteLLM {} on {}", ll.version, ll.base_url));
    Ok((ll, target))
}

fn one_line(e: &anyhow::Error) -> String {
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

/// Samples a process's RSS every 20 ms and keeps the peak.
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    peak_kib: Arc<AtomicU64>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let (stop, mut rx) = tokio::sync::oneshot::channel();
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak = peak_kib.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(kb) = procs::status_kb(pid, "VmRSS") {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = &mut rx => return,
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        });
        RssSampler {
            stop,
            task,
            peak_kib,
        }
    }

    async fn stop(self) -> f64 {
        let _ = self.stop.send(());
        let _ = self.task.await;
        procs::kib_to_mb(self.peak_kib.load(Ordering::Relaxed))
    }
}

/// Where to put a store that is written 10,000 times (tmpfs when there is one: seeding speed only).
pub fn fast_tmp() -> Option<PathBuf> {
    let shm = PathBuf::from("/dev/shm");
    shm.is_dir().then_some(shm)
}

fn api_key_account(name: String, key: String) -> NewAccount {
    NewAccount {
        name,
        kind: AccountKind::ApiKey,
        credential: Credential {
            secret: key,
            refresh_token: None,
            expires_at: None,
        },
        identity: Default::default(),
        priority: 0,
        weight: 1,
        disabled: false,
    }
}

/// Writes `n` API-key accounts into the SQLite store in `data_dir`; returns the seconds it took.
pub async fn seed_api_keys(data_dir: &Path, n: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let store = SqliteStore::open(data_dir)
        .await
        .map_err(|e| anyhow!("opening the store: {e}"))?;
    for i in 0..n {
        store
            .insert_account(api_key_account(
                format!("bench-{i:05}"),
                format!("sk-ant-api03-bench-{i:05}-{}", "k".repeat(64)),
            ))
            .await
            .map_err(|e| anyhow!("seeding account {i}: {e}"))?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

async fn memory(setup: &Setup, client: &Client) -> anyhow::Result<Memory> {
    let plan = &setup.plan;
    let mut m = Memory {
        accounts: plan.accounts,
        streams_requested: plan.open_streams,
        ..Memory::default()
    };
    // A simulator of its own, so its RSS is that of a fresh process too.
    let sim = Sim::start(&setup.simulator_bin, &[])?;

    // Idle: a fresh gateway with one account.
    {
        let dir = GatewayDir::new(None, "idle", &sim)?;
        dir.cli(
            &setup.gateway_bin,
            &["accounts", "add-key", "--name", "bench", UPSTREAM_KEY],
        )?;
        let gw = Gateway::start(&setup.gateway_bin, &dir)?;
        tokio::time::sleep(plan.idle_wait).await;
        m.idle_mb = procs::rss_mb(gw.proc.pid())?;
        m.sim_idle_mb = procs::rss_mb(sim.proc.pid())?;
        say(format!(
            "memory idle: gateway {:.1} MB (simulator {:.1} MB)",
            m.idle_mb, m.sim_idle_mb
        ));
    }

    // 10,000 accounts, seeded into the store before the gateway starts.
    {
        let dir = GatewayDir::new(fast_tmp().as_deref(), "accounts", &sim)?;
        m.seed_secs = seed_api_keys(&dir.data_dir(), plan.accounts).await?;
        let gw = Gateway::start(&setup.gateway_bin, &dir)?;
        gw.wait_accounts(plan.accounts, Duration::from_secs(30))
            .await?;
        tokio::time::sleep(plan.idle_wait).await;
        m.accounts_mb = procs::rss_mb(gw.proc.pid())?;
        say(format!(
            "memory with {} accounts: {:.1} MB (seeded in {:.1} s)",
            plan.accounts, m.accounts_mb, m.seed_secs
        ));
        // What choosing among that many accounts costs per request.
        let target = Target::new(
            &gw.base_url,
            ("x-api-key", CLIENT_KEY),
            Some(gw.proc.pid()),
            sim.proc.pid(),
        )?;
        let direct_here = Target::new(
            &sim.base_url,
            ("x-api-key", UPSTREAM_KEY),
            None,
            sim.proc.pid(),
        )?;
        let small = body(plan.body_bytes, false, None);
        let dur = plan.latency_duration / 2;
        let mut pair = Vec::new();
        for t in [direct_here, target] {
            let _ = load::open_loop(
                client,
                &t,
                &small,
                plan.accounts_rate,
                plan.warmup,
                plan.timeout,
                plan.max_in_flight,
            )
            .await;
            pair.push(
                load::open_loop(
                    client,
                    &t,
                    &small,
                    plan.accounts_rate,
                    dur,
                    plan.timeout,
                    plan.max_in_flight,
                )
                .await,
            );
        }
        let g = pair.pop().unwrap_or_default();
        let d = pair.pop().unwrap_or_default();
        say(format!(
            "latency with {} accounts at {} req/s: direct p99 {} µs, gateway p99 {} µs",
            plan.accounts, plan.accounts_rate, d.latency.p99, g.latency.p99
        ));
        m.accounts_latency = Some((d, g));
    }

    // 1,000 open streams, slowly paced, held open.
    {
        let dir = GatewayDir::new(None, "streams", &sim)?;
        dir.cli(
            &setup.gateway_bin,
            &["accounts", "add-key", "--name", "bench", UPSTREAM_KEY],
        )?;
        let gw = Gateway::start(&setup.gateway_bin, &dir)?;
        let target = Target::new(
            &gw.base_url,
            ("x-api-key", CLIENT_KEY),
            Some(gw.proc.pid()),
            sim.proc.pid(),
        )?;
        let slow = body(
            plan.body_bytes,
            true,
            Some((200, plan.open_stream_delay_ms)),
        );
        let request = stream::request_bytes(&target, &slow);
        m.streams_before_mb = procs::rss_mb(gw.proc.pid())?;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..plan.open_streams {
            let (request, addr) = (request.clone(), target.addr);
            tasks.spawn(async move {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    stream::open_and_hold(addr, request),
                )
                .await
            });
        }
        let mut held = Vec::new();
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(Ok(sock))) => held.push(sock),
                Ok(Ok(Err(e))) => m.streams_errors.add(crate::client::error_kind(&e)),
                Ok(Err(_)) => m.streams_errors.add("timeout"),
                Err(e) => m.streams_errors.add(format!("task: {e}")),
            }
        }
        m.streams_open = held.len();
        tokio::time::sleep(plan.idle_wait / 2).await;
        m.streams_mb = procs::rss_mb(gw.proc.pid())?;
        m.streams_sim_mb = procs::rss_mb(sim.proc.pid())?;
        drop(held);
        tokio::time::sleep(plan.idle_wait).await;
        m.streams_after_close_mb = procs::rss_mb(gw.proc.pid())?;
        say(format!(
            "memory with {} open streams: {:.1} MB (simulator {:.1} MB), {:.1} MB after they closed",
            m.streams_open, m.streams_mb, m.streams_sim_mb, m.streams_after_close_mb
        ));
    }
    Ok(m)
}

async fn stampede(setup: &Setup, client: &Client) -> anyhow::Result<Stampede> {
    let plan = &setup.plan;
    let n = plan.stampede;
    let mut s = Stampede {
        n,
        ..Stampede::default()
    };
    let sim = Sim::start(
        &setup.simulator_bin,
        &[
            "--token-latency-ms".into(),
            plan.token_latency_ms.to_string(),
            "--refresh-token".into(),
            STAMPEDE_REFRESH_TOKEN.into(),
        ],
    )?;
    let small = body(plan.body_bytes, false, None);

    // The refresh itself: one token-endpoint call (an unknown refresh token: same delay, no rotation).
    {
        let http = reqwest::Client::new();
        let t0 = Instant::now();
        let _ = http
            .post(sim.token_url())
            .json(&serde_json::json!({"grant_type": "refresh_token", "refresh_token": "sk-ant-ort01-unknown", "client_id": "bench"}))
            .send()
            .await?
            .bytes()
            .await?;
        s.token_call_us = load::micros(t0.elapsed());
    }

    // The same burst on the direct path (connections opened beforehand).
    let direct = Target::new(
        &sim.base_url,
        ("x-api-key", UPSTREAM_KEY),
        None,
        sim.proc.pid(),
    )?;
    load::prewarm(client, &format!("{}/v1/models", sim.base_url), n).await;
    s.direct_burst = load::burst(client, &direct, &small, n, plan.timeout).await;

    // Through the gateway, first with an API key (no refresh). One burst opens the connections on both sides, the
    // next one is measured.
    let dir = GatewayDir::new(None, "stampede", &sim)?;
    dir.cli(
        &setup.gateway_bin,
        &["accounts", "add-key", "--name", "warm-key", UPSTREAM_KEY],
    )?;
    let gw = Gateway::start(&setup.gateway_bin, &dir)?;
    let target = Target::new(
        &gw.base_url,
        ("x-api-key", CLIENT_KEY),
        Some(gw.proc.pid()),
        sim.proc.pid(),
    )?;
    load::prewarm(client, &format!("{}/healthz", gw.base_url), n).await;
    let _ = load::burst(client, &target, &small, n, plan.timeout).await;
    s.gateway_burst = load::burst(client, &target, &small, n, plan.timeout).await;

    // Then the stampede on the same warm gateway: the API key is disabled and an OAuth account whose access token
    // expired an hour ago is added to the running gateway's store (so no start-up scan refreshes it first).
    dir.cli(&setup.gateway_bin, &["accounts", "disable", "warm-key"])?;
    {
        let store = SqliteStore::open(&dir.data_dir())
            .await
            .map_err(|e| anyhow!("opening the store: {e}"))?;
        store
            .insert_account(NewAccount {
                name: "expired-oauth".into(),
                kind: AccountKind::Oauth,
                credential: Credential {
                    secret: "sk-ant-oat01-bench-expired-access-token".into(),
                    refresh_token: Some(STAMPEDE_REFRESH_TOKEN.into()),
                    expires_at: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
                },
                identity: Default::default(),
                priority: 0,
                weight: 1,
                disabled: false,
            })
            .await
            .map_err(|e| anyhow!("seeding the OAuth account: {e}"))?;
    }
    gw.wait_until(
        "the API key disabled and the OAuth account loaded",
        Duration::from_secs(10),
        |accounts| {
            accounts.len() == 2
                && accounts
                    .iter()
                    .any(|a| a.get("kind").and_then(|k| k.as_str()) == Some("oauth"))
                && accounts
                    .iter()
                    .any(|a| a.get("state").and_then(|k| k.as_str()) == Some("disabled"))
        },
    )
    .await?;
    load::prewarm(client, &format!("{}/healthz", gw.base_url), n).await;
    let calls_before = sim.token_calls().await?;
    s.stampede = load::burst(client, &target, &small, n, plan.timeout).await;
    s.token_calls = sim.token_calls().await? - calls_before;
    s.refresh_attempts_metric = gw
        .metric("gateway_refresh_attempts_total")
        .await
        .context("reading the gateway's metrics")?;
    say(format!(
        "stampede: {} requests, {} token calls, p50 {} µs, p99 {} µs, errors {}",
        n,
        s.token_calls,
        s.stampede.latency.p50,
        s.stampede.latency.p99,
        s.stampede.errors.describe()
    ));
    Ok(s)
}
