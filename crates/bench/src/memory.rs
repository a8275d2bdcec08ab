//! Memory: the gateway's RSS idle, with many accounts loaded and with many streams held open, each in a fresh gateway
//! in front of a simulator of its own (so its RSS is that of a fresh process too).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use claude_gateway::account::{AccountKind, Credential, NewAccount};
use claude_gateway::store::sqlite::SqliteStore;
use claude_gateway::store::Store;

use crate::client::Target;
use crate::plan::{body, say, Setup, UPSTREAM_KEY};
use crate::procs::{self, Gateway, GatewayDir, Sim, CLIENT_KEY};
use crate::stats::Errors;
use crate::stream;

#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub idle_mb: f64,
    pub sim_idle_mb: f64,
    pub accounts: usize,
    pub seed_secs: f64,
    pub accounts_mb: f64,
    pub streams_requested: usize,
    pub streams_open: usize,
    pub streams_errors: Errors,
    pub streams_mb: f64,
    pub streams_before_mb: f64,
    pub streams_sim_mb: f64,
    pub streams_after_close_mb: f64,
}

/// The three states, each in a fresh gateway.
pub async fn run(setup: &Setup) -> anyhow::Result<Memory> {
    let plan = &setup.plan;
    let mut m = Memory {
        accounts: plan.accounts,
        streams_requested: plan.open_streams,
        ..Memory::default()
    };
    let sim = Sim::start(&setup.simulator_bin, &[])?;
    idle(setup, &sim, &mut m).await?;
    accounts(setup, &sim, &mut m).await?;
    open_streams(setup, &sim, &mut m).await?;
    Ok(m)
}

/// A gateway with one API-key account in front of `sim`.
pub fn one_account_gateway(
    setup: &Setup,
    label: &str,
    sim: &Sim,
) -> anyhow::Result<(GatewayDir, Gateway)> {
    let dir = GatewayDir::new(None, label, sim)?;
    dir.cli(
        &setup.gateway_bin,
        &["accounts", "add-key", "--name", "bench", UPSTREAM_KEY],
    )?;
    let gw = Gateway::start(&setup.gateway_bin, &dir)?;
    Ok((dir, gw))
}

async fn idle(setup: &Setup, sim: &Sim, m: &mut Memory) -> anyhow::Result<()> {
    let (_dir, gw) = one_account_gateway(setup, "idle", sim)?;
    tokio::time::sleep(setup.plan.idle_wait).await;
    m.idle_mb = procs::rss_mb(gw.proc.pid())?;
    m.sim_idle_mb = procs::rss_mb(sim.proc.pid())?;
    say(format!(
        "memory idle: gateway {:.1} MB (simulator {:.1} MB)",
        m.idle_mb, m.sim_idle_mb
    ));
    Ok(())
}

/// Many API-key accounts, seeded into the store before the gateway starts.
async fn accounts(setup: &Setup, sim: &Sim, m: &mut Memory) -> anyhow::Result<()> {
    let plan = &setup.plan;
    let dir = GatewayDir::new(fast_tmp().as_deref(), "accounts", sim)?;
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
    Ok(())
}

/// Many slowly paced streams, held open once their first event arrived.
async fn open_streams(setup: &Setup, sim: &Sim, m: &mut Memory) -> anyhow::Result<()> {
    let plan = &setup.plan;
    let (_dir, gw) = one_account_gateway(setup, "streams", sim)?;
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
    Ok(())
}

/// Samples a process's RSS every 20 ms and keeps the peak.
pub struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    peak_kib: Arc<AtomicU64>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
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

    pub async fn stop(self) -> f64 {
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
