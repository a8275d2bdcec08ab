//! The targets of issues 7, 12 and 16, each judged from one run's figures as a ratio or difference against a baseline
//! measured in the same run.

use crate::fmt::{dms, pct};
use crate::load::LoadResult;
use crate::plan::Plan;
use crate::results::{Paths, Results};
use crate::stream::StreamResult;

pub struct Target {
    pub what: String,
    pub measured: String,
    pub pass: bool,
    pub miss_by: String,
    /// The profile workload that explains this figure (`small`, `stream`, `large`), if any.
    pub phase: Option<&'static str>,
    /// More evidence for a miss.
    pub note: String,
}

impl Target {
    fn new(what: String, measured: String, pass: bool, miss_by: String) -> Target {
        Target {
            what,
            measured,
            pass,
            miss_by,
            phase: None,
            note: String::new(),
        }
    }

    fn phase(mut self, p: &'static str) -> Target {
        self.phase = Some(p);
        self
    }

    fn note(mut self, n: String) -> Target {
        self.note = n;
        self
    }
}

/// CPU microseconds per successful request of the proxy (`cpu_proxy`) or the upstream (`cpu_sim`).
pub fn us_per_request(cpu: f64, r: &LoadResult) -> f64 {
    if r.ok == 0 {
        0.0
    } else {
        cpu * 1e6 / r.ok as f64
    }
}

/// The latency run at `rate` requests/s, if there is one.
pub fn at_rate(runs: &[(f64, Paths<LoadResult>)], rate: f64) -> Option<&Paths<LoadResult>> {
    runs.iter()
        .find(|(r, _)| (*r - rate).abs() < 0.5)
        .map(|(_, p)| p)
}

fn added_p99(r: &Results) -> Option<Target> {
    let p = at_rate(&r.latency, 500.0)?;
    let added = p.gateway.latency.p99 as i64 - p.direct.latency.p99 as i64;
    // Beside the figure: the floor's own (nginx − direct) and the run's A/A noise at p99.
    let (one, other) = crate::stats::alternate_halves(&p.direct.samples);
    let nginx = p
        .nginx
        .as_ref()
        .map(|n| format!("nginx {}; ", dms(n.latency.p99, p.direct.latency.p99)))
        .unwrap_or_default();
    let aa = format!("A/A {}", dms(one.p99, other.p99));
    Some(
        Target::new(
            "added latency p99 < 0.3 ms at 500 req/s (paired)".into(),
            format!(
                "{} ({nginx}{aa})",
                dms(p.gateway.latency.p99, p.direct.latency.p99)
            ),
            added < 300 && p.gateway.errors.total() == 0,
            format!("{:.3} ms over", (added - 300) as f64 / 1000.0),
        )
        .phase("small"),
    )
}

fn cpu_vs_nginx(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    for (rate, p) in &r.cpu {
        let Some(n) = &p.nginx else { continue };
        let g = us_per_request(p.gateway.cpu_proxy, &p.gateway);
        let x = us_per_request(n.cpu_proxy, n);
        if x <= 0.0 {
            // Too short a run for a clock tick of nginx's CPU (smoke): no ratio to judge.
            continue;
        }
        let ratio = g / x.max(1e-9);
        out.push(
            Target::new(
                format!("CPU per request at {rate:.0} req/s ≤ 1.6× nginx's (stretch 1.2×)"),
                format!(
                    "{ratio:.2}× ({g:.0} vs {x:.0} µs){}",
                    if ratio <= 1.2 { ", stretch met" } else { "" }
                ),
                ratio <= 1.6 && p.gateway.errors.total() == 0,
                format!("{:.2}× over", ratio - 1.6),
            )
            .phase("fast")
            .note(format!(
                " Per request: gateway {g:.0} µs ({:.0} µs in the kernel), nginx {x:.0} µs ({:.0} µs), fast upstream \
                 {:.0} µs.",
                us_per_request(p.gateway.sys_proxy, &p.gateway),
                us_per_request(n.sys_proxy, n),
                us_per_request(p.gateway.cpu_sim, &p.gateway)
            )),
        );
    }
    out
}

fn throughput_vs_nginx(r: &Results, plan: &Plan) -> Option<Target> {
    let p = r.throughput.as_ref()?;
    let n = p.nginx.as_ref()?;
    let d = p.direct.rps().max(1e-9);
    let (g, x) = (p.gateway.rps() / d, n.rps() / d);
    let ratio = g / x.max(1e-9);
    Some(
        Target::new(
            format!(
                "throughput at concurrency {} ≥ 0.8× nginx's (each as a ratio to direct)",
                plan.concurrency
            ),
            format!(
                "{ratio:.2}× (gateway {} of direct, nginx {})",
                pct(g),
                pct(x)
            ),
            ratio >= 0.8 && p.gateway.errors.total() == 0,
            format!("{:.2} short", 0.8 - ratio),
        )
        .phase("fast")
        .note(format!(
            " Requests/s: direct {:.0}, nginx {:.0}, gateway {:.0}.",
            p.direct.rps(),
            n.rps(),
            p.gateway.rps()
        )),
    )
}

fn streaming(r: &Results, plan: &Plan) -> Vec<Target> {
    let Some(s) = &r.streaming else {
        return Vec::new();
    };
    let (g, d) = (&s.gateway, &s.direct);
    let added = g.ttfe.p90 as i64 - d.ttfe.p90 as i64;
    let (floor_name, floor) = shared_read_floor(s);
    let extra_shared = g.shared_read as i64 - floor as i64;
    let extra_chunk = g.not_own_chunk as i64 - d.not_own_chunk as i64;
    vec![
        Target::new(
            "streaming: added first-event latency p90 < 1 ms (paired)".into(),
            dms(g.ttfe.p90, d.ttfe.p90),
            added < 1000 && g.errors.total() == 0,
            format!("{:.3} ms over", (added - 1000) as f64 / 1000.0),
        )
        .phase("stream"),
        Target::new(
            "streaming: no coalescing (events sharing an HTTP chunk beyond direct's; sharing a read beyond a minimal \
             proxy's)"
                .into(),
            format!(
                "{} / {} of {} events (direct: {} / {} of {}; shared reads of {floor_name}: {floor})",
                g.shared_read, g.not_own_chunk, g.events, d.shared_read, d.not_own_chunk, d.events
            ),
            extra_shared <= 0 && extra_chunk <= 0,
            format!(
                "{} events in shared reads, {} not in their own chunk",
                extra_shared.max(0),
                extra_chunk.max(0)
            ),
        )
        .phase("stream")
        .note(format!(
            " Largest gap between two events: gateway {} vs direct {} (events are {} ms apart): events share a read \
             when the relay (or the client reading it) is held up for longer than the spacing.",
            crate::fmt::ms(g.gap.max),
            crate::fmt::ms(d.gap.max),
            plan.stream_delay_ms
        )),
    ]
}

/// The events in shared reads a hop of its own may show: the fewest of the minimal proxies' (nginx, the hyper proxy),
/// else direct's. Events share a client read when they arrive together, and any hop that is held up for longer than
/// their spacing (on this shared host, a burst of outside load does it to nginx as well) delivers them together; a
/// gateway that merged events itself would show above both floors, or in the chunk count.
fn shared_read_floor(s: &Paths<StreamResult>) -> (&'static str, u64) {
    [("nginx", &s.nginx), ("the hyper proxy", &s.hyper)]
        .into_iter()
        .filter_map(|(name, r)| r.as_ref().map(|r| (name, r.shared_read)))
        .min_by_key(|(_, n)| *n)
        .unwrap_or(("direct", s.direct.shared_read))
}

fn large(r: &Results) -> Option<Target> {
    let l = &r.large.as_ref()?.paths;
    let added = l.gateway.latency.p99 as i64 - l.direct.latency.p99 as i64;
    Some(
        Target::new(
            "700 KB bodies: added latency p99 < 5 ms".into(),
            dms(l.gateway.latency.p99, l.direct.latency.p99),
            added < 5000 && l.gateway.errors.total() == 0,
            format!("{:.3} ms over", (added - 5000) as f64 / 1000.0),
        )
        .phase("large"),
    )
}

/// The A/A noise floor at one percentile: how far two runs of the same configuration differ, at least 10 µs.
pub fn noise(a: u64, a2: u64) -> i64 {
    (a as i64 - a2 as i64).abs().max(10)
}

/// The managed key against the static one: B − mean(A, A2) at p50, p90 and p99, each within that percentile's A/A
/// noise.
fn keys(r: &Results) -> Option<Target> {
    let k = r.keys.as_ref()?;
    let (a, b, a2) = (&k.a.latency, &k.b.latency, &k.a2.latency);
    let cells = [
        (a.p50, b.p50, a2.p50),
        (a.p90, b.p90, a2.p90),
        (a.p99, b.p99, a2.p99),
    ];
    let added: Vec<i64> = cells
        .iter()
        .map(|(a, b, a2)| *b as i64 - (*a as i64 + *a2 as i64) / 2)
        .collect();
    let floor: Vec<i64> = cells.iter().map(|(a, _, a2)| noise(*a, *a2)).collect();
    let worst = added
        .iter()
        .zip(&floor)
        .map(|(x, n)| x - n)
        .max()
        .unwrap_or(0);
    let say = |v: &[i64]| {
        v.iter()
            .map(|x| format!("{:+.3}", *x as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    Some(Target::new(
        format!(
            "managed key with every limit: added latency at {:.0} req/s within the A/A noise (p50 / p90 / p99)",
            k.rate
        ),
        format!("{} ms vs noise ±{} ms", say(&added), say(&floor).replace('+', "")),
        worst <= 0 && k.b.errors.total() == 0,
        format!("{:.3} ms beyond the noise", worst as f64 / 1000.0),
    ))
}

/// Issue 16's pool targets: choosing among N accounts adds at most 0.1 ms at p99 to one account's; import of N files
/// under 10 s; start-up with them under 2 s.
fn pool(r: &Results) -> Vec<Target> {
    let Some(p) = &r.pool else {
        return Vec::new();
    };
    let added = p.many.latency.p99 as i64 - p.one.latency.p99 as i64;
    // Beside the figure: the run's A/A noise at p99, from the 1-account gateway's alternate halves.
    let (one, other) = crate::stats::alternate_halves(&p.one.samples);
    vec![
        Target::new(
            format!(
                "added p99 with {} accounts within +0.1 ms of one account's ({:.0} req/s, paired)",
                p.accounts, p.rate
            ),
            format!(
                "{} (A/A {})",
                dms(p.many.latency.p99, p.one.latency.p99),
                dms(one.p99, other.p99)
            ),
            added <= 100 && p.many.errors.total() == 0,
            format!("{:.3} ms over", (added - 100) as f64 / 1000.0),
        ),
        Target::new(
            format!("`accounts import` of {} files < 10 s", p.accounts),
            format!("{:.2} s", p.import_secs),
            p.import_secs < 10.0,
            format!("{:.2} s over", p.import_secs - 10.0),
        ),
        Target::new(
            format!("start-up with {} accounts < 2 s", p.accounts),
            format!("{:.2} s", p.startup_secs),
            p.startup_secs < 2.0,
            format!("{:.2} s over", p.startup_secs - 2.0),
        ),
    ]
}

fn memory(r: &Results) -> Vec<Target> {
    let Some(m) = &r.memory else {
        return Vec::new();
    };
    let mut out: Vec<Target> = [
        ("RSS idle < 30 MB".to_string(), m.idle_mb, 30.0),
        (
            format!("RSS with {} accounts < 100 MB", m.accounts),
            m.accounts_mb,
            100.0,
        ),
        (
            format!("RSS with {} open streams < 250 MB", m.streams_requested),
            m.streams_mb,
            250.0,
        ),
    ]
    .into_iter()
    .map(|(what, v, limit)| {
        Target::new(
            what,
            format!("{v:.1} MB"),
            v < limit,
            format!("{:.1} MB over", v - limit),
        )
    })
    .collect();
    if m.streams_open < m.streams_requested {
        out.push(Target::new(
            format!("{} streams open at once", m.streams_requested),
            format!(
                "{} open, errors {}",
                m.streams_open,
                m.streams_errors.describe()
            ),
            false,
            format!("{} streams failed", m.streams_requested - m.streams_open),
        ));
    }
    out
}

fn stampede(r: &Results) -> Option<Target> {
    let s = r.stampede.as_ref()?;
    Some(Target::new(
        format!(
            "refresh stampede: {} concurrent requests cause exactly 1 token call",
            s.n
        ),
        format!(
            "{} call(s), {} errors",
            s.token_calls,
            s.stampede.errors.total()
        ),
        s.token_calls == 1 && s.stampede.errors.total() == 0,
        format!("{} calls", s.token_calls),
    ))
}

/// Every target the run has figures for.
pub fn all(r: &Results, plan: &Plan) -> Vec<Target> {
    let mut out = Vec::new();
    out.extend(added_p99(r));
    out.extend(cpu_vs_nginx(r));
    out.extend(throughput_vs_nginx(r, plan));
    out.extend(streaming(r, plan));
    out.extend(large(r));
    out.extend(keys(r));
    out.extend(pool(r));
    out.extend(memory(r));
    out.extend(stampede(r));
    out
}

/// The targets that were missed (for the summary printed at the end).
pub fn misses(r: &Results, plan: &Plan) -> Vec<String> {
    all(r, plan)
        .into_iter()
        .filter(|t| !t.pass)
        .map(|t| format!("{}: {} ({})", t.what, t.measured, t.miss_by))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(n: u64) -> StreamResult {
        StreamResult {
            shared_read: n,
            ..StreamResult::default()
        }
    }

    #[test]
    fn the_shared_read_floor_is_the_fewest_of_the_minimal_proxies_else_direct() {
        let mut p = Paths {
            direct: reads(68),
            nginx: Some(reads(150)),
            hyper: Some(reads(100)),
            gateway: reads(76),
            litellm: Some(reads(5)),
        };
        assert_eq!(shared_read_floor(&p), ("the hyper proxy", 100));
        p.hyper = None;
        assert_eq!(shared_read_floor(&p), ("nginx", 150));
        p.nginx = None;
        assert_eq!(shared_read_floor(&p), ("direct", 68));
    }
}
