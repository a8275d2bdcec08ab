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
    let load = OpenLoop {
        rate,
        duration,
        timeout,
        max_in_flight,
    };
    let mut v = load
        .paired(client, std::slice::from_ref(target), body)
        .await;
    v.pop().unwrap_or_default()
}

/// The due times of an open loop at `rate` requests/s for `duration`: a dedicated OS thread sleeps to each one (finer
/// than the runtime's 1 ms timer) and sends it; the channel closes after the last.
pub struct DueTimes {
    pub start: Instant,
    pub rx: tokio::sync::mpsc::UnboundedReceiver<Instant>,
    pub ticker: std::thread::JoinHandle<()>,
}

impl DueTimes {
    pub fn start(rate: f64, duration: Duration) -> DueTimes {
        let n = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
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
        DueTimes { start, rx, ticker }
    }
}

/// An open loop's shape: `rate` requests/s per path for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    pub rate: f64,
    pub duration: Duration,
    pub timeout: Duration,
    /// Most requests outstanding on one path.
    pub max_in_flight: usize,
}

impl OpenLoop {
    /// The open loop on every target at once, paired: one sequence of due times at `rate × n`, request `i` going to
    /// target `i mod n`, so each target gets `rate` requests/s and consecutive requests of the targets are due
    /// `1 / (rate × n)` apart. A burst of noise from elsewhere on the machine then falls on every target in the same
    /// moments, instead of on whichever target had its turn. One result per target, in order; the upstream's and the
    /// client's CPU in each is the whole run's (shared by the targets).
    pub async fn paired(
        &self,
        client: &Client,
        targets: &[Target],
        body: &Bytes,
    ) -> Vec<LoadResult> {
        let paths = targets.len().max(1);
        let DueTimes {
            start,
            mut rx,
            ticker,
        } = DueTimes::start(self.rate * paths as f64, self.duration);
        let before: Vec<CpuMark> = targets.iter().map(cpu_mark).collect();
        let accs: Vec<Arc<Mutex<Acc>>> = targets.iter().map(|_| Arc::default()).collect();
        let in_flight: Vec<Arc<AtomicUsize>> = targets.iter().map(|_| Arc::default()).collect();
        let mut tasks = JoinSet::new();
        let mut i = 0usize;
        while let Some(due) = rx.recv().await {
            let which = i % paths;
            i += 1;
            let Some(target) = targets.get(which) else {
                continue;
            };
            if in_flight[which].load(Ordering::Relaxed) >= self.max_in_flight {
                lock(&accs[which]).errors.add("client in-flight cap");
                continue;
            }
            in_flight[which].fetch_add(1, Ordering::Relaxed);
            let (client, target, body, acc, in_flight, timeout) = (
                client.clone(),
                target.clone(),
                body.clone(),
                accs[which].clone(),
                in_flight[which].clone(),
                self.timeout,
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
        targets
            .iter()
            .zip(before)
            .zip(accs)
            .map(|((target, before), acc)| {
                let acc = std::mem::take(&mut *lock(&acc));
                finish(target, before, acc, elapsed)
            })
            .collect()
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::client::ClientKind;
    use hyper::{Request, Response};

    /// A server answering 200 to every request, counting them and noting when each arrived.
    async fn counting_server() -> (Target, Arc<Mutex<Vec<Instant>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let log = seen.clone();
        let handle = move |_req: Request<hyper::body::Incoming>| {
            lock(&log).push(Instant::now());
            async {
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                    Bytes::new(),
                )))
            }
        };
        tokio::spawn(crate::upstream::serve_http1(listener, handle));
        let target = Target::new(&url, ("x-api-key", "k"), None, std::process::id()).unwrap();
        (target, seen)
    }

    /// Each path gets the rate, and the paths' requests alternate in time: the k-th request of path A is due before
    /// the k-th of path B, which is due before the (k+1)-th of A.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paired_paths_each_get_the_rate_in_turn() {
        let (a, seen_a) = counting_server().await;
        let (b, seen_b) = counting_server().await;
        let client = Client::new(ClientKind::Hyper).unwrap();
        let load = OpenLoop {
            rate: 100.0,
            duration: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
            max_in_flight: 1000,
        };
        let results = load
            .paired(&client, &[a, b], &Bytes::from_static(b"{}"))
            .await;
        assert_eq!(results.len(), 2);
        assert_eq!((results[0].ok, results[1].ok), (50, 50));
        assert_eq!(results[0].samples.len(), 50);
        let (seen_a, seen_b) = (lock(&seen_a).clone(), lock(&seen_b).clone());
        assert_eq!((seen_a.len(), seen_b.len()), (50, 50));
        // Due 5 ms apart (200 req/s in all): even with late wake-ups here and there, the arrivals interleave (one path
        // after the other would make 1 turn, a random order about 50).
        let mut all: Vec<(Instant, char)> = seen_a.iter().map(|t| (*t, 'a')).collect();
        all.extend(seen_b.iter().map(|t| (*t, 'b')));
        all.sort();
        let turns = all.windows(2).filter(|w| w[0].1 != w[1].1).count();
        assert!(
            turns >= 75,
            "{turns} turns between the paths in 100 requests"
        );
    }
}
