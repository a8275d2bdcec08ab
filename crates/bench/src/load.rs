//! Load shapes: open-loop constant rate (latency), closed-loop fixed concurrency (throughput), and a burst of
//! simultaneous requests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::client::{error_kind, Client, Target};
use crate::stats::{Dist, Errors};

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Latency of the successful requests, µs.
    pub latency: Dist,
    /// The samples behind `latency` (to merge rounds).
    pub samples: Vec<u64>,
    pub ok: u64,
    pub errors: Errors,
    pub elapsed: Duration,
    /// CPU seconds used during the run by the proxy tree (0 for direct), the simulator, and this client.
    pub cpu_proxy: f64,
    pub cpu_sim: f64,
    pub cpu_client: f64,
    /// The system (kernel) part of `cpu_proxy`, `cpu_sim`.
    pub sys_proxy: f64,
    pub sys_sim: f64,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Two runs of the same load as one (rounds interleaved with other paths).
    pub fn merge(mut self, other: LoadResult) -> LoadResult {
        self.samples.extend(other.samples);
        self.latency = Dist::of(self.samples.clone());
        self.ok += other.ok;
        self.errors.merge(&other.errors);
        self.elapsed += other.elapsed;
        self.cpu_proxy += other.cpu_proxy;
        self.cpu_sim += other.cpu_sim;
        self.cpu_client += other.cpu_client;
        self.sys_proxy += other.sys_proxy;
        self.sys_sim += other.sys_sim;
        self
    }
}

#[derive(Default)]
struct Acc {
    lat: Vec<u64>,
    errors: Errors,
}

impl Acc {
    fn record(
        &mut self,
        started: Instant,
        result: Result<anyhow::Result<crate::client::Answer>, tokio::time::error::Elapsed>,
    ) {
        match result {
            Ok(Ok(a)) if a.status == 200 => self.lat.push(micros(started.elapsed())),
            Ok(Ok(a)) => self.errors.add(format!("HTTP {}", a.status)),
            Ok(Err(e)) => self.errors.add(error_kind(&e)),
            Err(_) => self.errors.add("timeout"),
        }
    }
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct CpuMark {
    proxy: (f64, f64),
    sim: (f64, f64),
    client: f64,
}

fn cpu_mark(target: &Target) -> CpuMark {
    let (proxy, sim) = target.cpu_times();
    CpuMark {
        proxy,
        sim,
        client: crate::procs::cpu_secs(std::process::id()).unwrap_or(0.0),
    }
}

fn finish(target: &Target, before: CpuMark, acc: Acc, elapsed: Duration) -> LoadResult {
    let after = cpu_mark(target);
    let ok = acc.lat.len() as u64;
    LoadResult {
        latency: Dist::of(acc.lat.clone()),
        samples: acc.lat,
        ok,
        errors: acc.errors,
        elapsed,
        cpu_proxy: (after.proxy.0 + after.proxy.1) - (before.proxy.0 + before.proxy.1),
        cpu_sim: (after.sim.0 + after.sim.1) - (before.sim.0 + before.sim.1),
        cpu_client: after.client - before.client,
        sys_proxy: after.proxy.1 - before.proxy.1,
        sys_sim: after.sim.1 - before.sim.1,
    }
}

/// Open loop: request `i` is due at `start + i / rate`, whatever happened to earlier ones, and its latency counts from
/// that due time (so a stall delays every request queued behind it: no coordinated omission). Due times come from a
/// dedicated OS thread sleeping to each one (finer than the runtime's 1 ms timer). At most `max_in_flight` requests
/// are outstanding; a due request beyond that is counted as an error and not sent.
pub async fn open_loop(
    client: &Client,
    target: &Target,
    body: &Bytes,
    rate: f64,
    duration: Duration,
    timeout: Duration,
    max_in_flight: usize,
) -> LoadResult {
    let n = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = Instant::now() + Duration::from_millis(2);
    let ticker = std::thread::spawn(move || {
        for i in 0..n {
            let due = start + interval.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                break;
            }
        }
    });
    let before = cpu_mark(target);
    let acc = Arc::new(Mutex::new(Acc::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    while let Some(due) = rx.recv().await {
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            lock(&acc).errors.add("client in-flight cap");
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (client, target, body, acc, in_flight) = (
            client.clone(),
            target.clone(),
            body.clone(),
            acc.clone(),
            in_flight.clone(),
        );
        tasks.spawn(async move {
            let r = tokio::time::timeout(timeout, client.messages(&target, &body)).await;
            lock(&acc).record(due, r);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let _ = ticker.join();
    let elapsed = start.elapsed();
    let acc = std::mem::take(&mut *lock(&acc));
    finish(target, before, acc, elapsed)
}

/// Closed loop: `concurrency` workers each send the next request as soon as the previous one is answered, for
/// `duration`.
pub async fn closed_loop(
    client: &Client,
    target: &Target,
    body: &Bytes,
    concurrency: usize,
    duration: Duration,
    timeout: Duration,
) -> LoadResult {
    let before = cpu_mark(target);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let (client, target, body) = (client.clone(), target.clone(), body.clone());
        tasks.spawn(async move {
            let mut acc = Acc::default();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = tokio::time::timeout(timeout, client.messages(&target, &body)).await;
                acc.record(t0, r);
            }
            acc
        });
    }
    let mut all = Acc::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(acc) = r {
            all.lat.extend(acc.lat);
            all.errors.merge(&acc.errors);
        }
    }
    let elapsed = start.elapsed();
    finish(target, before, all, elapsed)
}

/// `n` requests released at the same moment; each latency counts from that moment.
pub async fn burst(
    client: &Client,
    target: &Target,
    body: &Bytes,
    n: usize,
    timeout: Duration,
) -> LoadResult {
    let before = cpu_mark(target);
    let gate = Arc::new(tokio::sync::Barrier::new(n + 1));
    let start = Arc::new(Mutex::new(Instant::now()));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (client, target, body, gate, start) = (
            client.clone(),
            target.clone(),
            body.clone(),
            gate.clone(),
            start.clone(),
        );
        tasks.spawn(async move {
            gate.wait().await;
            let t0 = *lock(&start);
            let r = tokio::time::timeout(timeout, client.messages(&target, &body)).await;
            let mut acc = Acc::default();
            acc.record(t0, r);
            acc
        });
    }
    // Let every task reach the barrier, then open it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    *lock(&start) = Instant::now();
    gate.wait().await;
    let mut all = Acc::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(acc) = r {
            all.lat.extend(acc.lat);
            all.errors.merge(&acc.errors);
        }
    }
    let elapsed = lock(&start).elapsed();
    finish(target, before, all, elapsed)
}

/// Opens `n` pooled connections to `url`'s host by sending `n` simultaneous GETs to it. Returns how many succeeded.
pub async fn prewarm(client: &Client, url: &str, n: usize) -> usize {
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let (client, url, gate) = (client.clone(), url.to_string(), gate.clone());
        tasks.spawn(async move {
            gate.wait().await;
            client.get(&url).await.is_ok_and(|a| a.status < 500)
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += usize::from(r.unwrap_or(false));
    }
    ok
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
