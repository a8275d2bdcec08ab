//! One scenario runner: a load shape over several paths, in rounds that alternate between the paths (so that a burst
//! of noise from elsewhere on the machine lands on all of them), each path warmed up in the first round, the samples of
//! a path's rounds merged into one result.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::client::{Client, Target};
use crate::load::{self, LoadResult};
use crate::plan::Plan;
use crate::stream::{self, StreamResult};

/// Results of several runs of one load that merge into one.
pub trait Merge: Sized {
    fn merge(self, other: Self) -> Self;
}

impl Merge for LoadResult {
    fn merge(self, other: Self) -> Self {
        LoadResult::merge(self, other)
    }
}

impl Merge for StreamResult {
    fn merge(self, other: Self) -> Self {
        StreamResult::merge(self, other)
    }
}

/// How requests are sent.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Open loop at a constant rate (requests/s).
    Open(f64),
    /// Closed loop with this many workers.
    Closed(usize),
}

/// One measurement: a load shape on every path, `duration` per path in all, split into `rounds`.
pub struct Scenario<'a> {
    pub paths: &'a [Target],
    pub shape: Shape,
    pub body: &'a Bytes,
    pub duration: Duration,
    pub rounds: usize,
}

/// Runs `one(path, duration, warm)` for every path, `rounds` times in turn (`warm` in the first round), and merges each
/// path's results.
pub async fn in_rounds<T, F, Fut>(
    paths: usize,
    rounds: usize,
    duration: Duration,
    mut one: F,
) -> Vec<T>
where
    T: Merge + Default,
    F: FnMut(usize, Duration, bool) -> Fut,
    Fut: Future<Output = T>,
{
    let rounds = rounds.max(1);
    let slice = duration / rounds as u32;
    let mut acc: Vec<Option<T>> = (0..paths).map(|_| None).collect();
    for round in 0..rounds {
        for (i, slot) in acc.iter_mut().enumerate() {
            let r = one(i, slice, round == 0).await;
            *slot = Some(match slot.take() {
                Some(a) => a.merge(r),
                None => r,
            });
        }
    }
    acc.into_iter().map(Option::unwrap_or_default).collect()
}

/// One run of `shape` on `target` for `duration`.
pub async fn once(
    client: &Client,
    plan: &Plan,
    target: &Target,
    shape: Shape,
    body: &Bytes,
    duration: Duration,
) -> LoadResult {
    match shape {
        Shape::Open(rate) => {
            load::open_loop(
                client,
                target,
                body,
                rate,
                duration,
                plan.timeout,
                plan.max_in_flight,
            )
            .await
        }
        Shape::Closed(concurrency) => {
            load::closed_loop(client, target, body, concurrency, duration, plan.timeout).await
        }
    }
}

/// A scenario of JSON requests: one merged result per path, in the order of `s.paths`.
pub async fn measure(client: &Client, plan: &Plan, s: &Scenario<'_>) -> Vec<LoadResult> {
    in_rounds(s.paths.len(), s.rounds, s.duration, |i, dur, warm| {
        let target = &s.paths[i];
        async move {
            if warm {
                let _ = once(client, plan, target, s.shape, s.body, plan.warmup).await;
            }
            once(client, plan, target, s.shape, s.body, dur).await
        }
    })
    .await
}

/// Every path at `rate` requests/s at once, paired ([`load::OpenLoop::paired`]), after a paired warm-up: one merged
/// result per path, in the order of `paths`.
pub async fn paired(
    client: &Client,
    plan: &Plan,
    paths: &[Target],
    rate: f64,
    body: &Bytes,
    duration: Duration,
) -> Vec<LoadResult> {
    let load = |duration| load::OpenLoop {
        rate,
        duration,
        timeout: plan.timeout,
        max_in_flight: plan.max_in_flight,
    };
    let _ = load(plan.warmup).paired(client, paths, body).await;
    load(duration).paired(client, paths, body).await
}

/// Streams on every path at `rate` each, started in turn (stream `i` on path `i mod n`), so the paths are measured
/// side by side in the same moments; `expected` events per stream when given.
pub async fn streams(
    plan: &Plan,
    paths: &[Target],
    body: &Bytes,
    rate: f64,
    duration: Duration,
    expected: Option<usize>,
) -> Vec<StreamResult> {
    let timeout =
        plan.timeout + Duration::from_millis(plan.stream_delay_ms * plan.stream_events as u64);
    let all = rate * paths.len() as f64;
    let _ = stream::stream_load(paths, body, all, plan.warmup, expected, timeout).await;
    stream::stream_load(paths, body, all, duration, expected, timeout).await
}
