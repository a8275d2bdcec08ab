//! BENCHMARKS.md: the machine, the command, the targets, and one table per scenario, every figure next to the direct
//! path's of the same run.

use std::fmt::Write as _;

use crate::load::LoadResult;
use crate::scenarios::{per_k, Plan, Results, Trio};
use crate::stats::Dist;
use crate::stream::StreamResult;

/// What the report says about where it was made.
pub struct Context {
    pub date: String,
    pub command: String,
    pub machine: String,
    pub build: String,
}

/// The machine: CPUs, CPU model, memory, kernel.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs (`nproc`), {model}, {:.1} GiB memory, Linux {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// A duration in seconds, as short as it can be said.
fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 || s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// Microseconds as milliseconds.
fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// A signed difference in milliseconds.
fn dms(a: u64, b: u64) -> String {
    let d = a as f64 - b as f64;
    format!(
        "{}{:.3} ms",
        if d >= 0.0 { "+" } else { "−" },
        d.abs() / 1000.0
    )
}

fn pct(ratio: f64) -> String {
    format!("{:.0} %", ratio * 100.0)
}

fn verdict(pass: bool) -> &'static str {
    if pass {
        "**pass**"
    } else {
        "**MISS**"
    }
}

fn dist_cells(d: &Dist) -> String {
    d.percentiles()
        .iter()
        .map(|v| ms(*v))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn delta_cells(a: &Dist, b: &Dist) -> String {
    a.percentiles()
        .iter()
        .zip(b.percentiles())
        .map(|(x, y)| dms(*x, y))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Latency table rows: direct, gateway, Δ, then LiteLLM and Δ when present.
fn latency_rows(out: &mut String, t: &Trio<LoadResult>, extra: impl Fn(&LoadResult) -> String) {
    let d = &t.direct;
    let _ = writeln!(
        out,
        "| direct | {} | {} | {} |",
        dist_cells(&d.latency),
        d.errors.describe(),
        extra(d)
    );
    let g = &t.gateway;
    let _ = writeln!(
        out,
        "| gateway | {} | {} | {} |",
        dist_cells(&g.latency),
        g.errors.describe(),
        extra(g)
    );
    let _ = writeln!(
        out,
        "| **gateway − direct** | {} | | |",
        delta_cells(&g.latency, &d.latency)
    );
    if let Some(l) = &t.litellm {
        let _ = writeln!(
            out,
            "| LiteLLM | {} | {} | {} |",
            dist_cells(&l.latency),
            l.errors.describe(),
            extra(l)
        );
        let _ = writeln!(
            out,
            "| LiteLLM − direct | {} | | |",
            delta_cells(&l.latency, &d.latency)
        );
    }
}

struct Target {
    what: String,
    measured: String,
    pass: bool,
    miss_by: String,
    /// The profile workload that explains this figure (`small`, `stream`, `large`), if any.
    phase: Option<&'static str>,
    /// More evidence for a miss.
    note: String,
}

/// The latency run the target names (500 requests/s), else the first one.
fn target_rate(r: &Results) -> Option<&(f64, Trio<LoadResult>)> {
    r.latency
        .iter()
        .find(|(rate, _)| (*rate - 500.0).abs() < 0.5)
        .or_else(|| r.latency.first())
}

fn targets(r: &Results, plan: &Plan) -> Vec<Target> {
    let mut out = Vec::new();
    if let Some((rate, t)) = target_rate(r) {
        let added = t.gateway.latency.p99 as i64 - t.direct.latency.p99 as i64;
        out.push(Target {
            what: format!("added latency p99 < 1 ms at {rate:.0} req/s"),
            measured: dms(t.gateway.latency.p99, t.direct.latency.p99),
            pass: added < 1000 && t.gateway.errors.total() == 0,
            miss_by: format!("{:.3} ms over", (added - 1000) as f64 / 1000.0),
            phase: Some("small"),
            note: String::new(),
        });
    }
    if let Some(t) = &r.throughput {
        let ratio = t.gateway.rps() / t.direct.rps().max(1e-9);
        let g = &t.gateway;
        let us = |cpu: f64| per_k(cpu, g.ok) * 1000.0;
        out.push(Target {
            what: format!("throughput ≥ 60 % of direct (concurrency {})", plan.concurrency),
            measured: format!("{} ({:.0} vs {:.0} req/s)", pct(ratio), t.gateway.rps(), t.direct.rps()),
            pass: ratio >= 0.6 && t.gateway.errors.total() == 0,
            miss_by: format!("{:.0} points short", (0.6 - ratio) * 100.0),
            phase: Some("small"),
            note: format!(
                " CPU per request (section 2): gateway {:.0} µs ({:.0} µs in the kernel), simulator {:.0} µs ({:.0} µs), \
                 client {:.0} µs, all on the same CPUs.",
                us(g.cpu_proxy),
                us(g.sys_proxy),
                us(g.cpu_sim),
                us(g.sys_sim),
                us(g.cpu_client)
            ),
        });
    }
    if let Some(s) = &r.streaming {
        let added = s.gateway.ttfe.p99 as i64 - s.direct.ttfe.p99 as i64;
        out.push(Target {
            what: "streaming: added first-event latency p99 < 1 ms".into(),
            measured: dms(s.gateway.ttfe.p99, s.direct.ttfe.p99),
            pass: added < 1000 && s.gateway.errors.total() == 0,
            miss_by: format!("{:.3} ms over", (added - 1000) as f64 / 1000.0),
            phase: Some("stream"),
            note: String::new(),
        });
        let extra_shared = s.gateway.shared_read as i64 - s.direct.shared_read as i64;
        let extra_chunk = s.gateway.not_own_chunk as i64 - s.direct.not_own_chunk as i64;
        out.push(Target {
            what:
                "streaming: no coalescing (events sharing a read / an HTTP chunk, beyond direct's)"
                    .into(),
            measured: format!(
                "{} / {} of {} events (direct: {} / {} of {})",
                s.gateway.shared_read,
                s.gateway.not_own_chunk,
                s.gateway.events,
                s.direct.shared_read,
                s.direct.not_own_chunk,
                s.direct.events
            ),
            pass: extra_shared <= 0 && extra_chunk <= 0,
            miss_by: format!(
                "{} events in shared reads, {} not in their own chunk",
                extra_shared.max(0),
                extra_chunk.max(0)
            ),
            phase: Some("stream"),
            note: format!(
                " Largest gap between two events: gateway {} vs direct {} (events are {} ms apart): events share a read \
                 when the relay (or the client reading it) is held up for longer than the spacing.",
                ms(s.gateway.gap.max),
                ms(s.direct.gap.max),
                plan.stream_delay_ms
            ),
        });
    }
    if let Some(l) = &r.large {
        let added = l.gateway.latency.p99 as i64 - l.direct.latency.p99 as i64;
        out.push(Target {
            what: "700 KB bodies: added latency p99 < 5 ms".into(),
            measured: dms(l.gateway.latency.p99, l.direct.latency.p99),
            pass: added < 5000 && l.gateway.errors.total() == 0,
            miss_by: format!("{:.3} ms over", (added - 5000) as f64 / 1000.0),
            phase: Some("large"),
            note: String::new(),
        });
    }
    if let Some(m) = &r.memory {
        for (what, v, limit) in [
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
        ] {
            out.push(Target {
                what,
                measured: format!("{v:.1} MB"),
                pass: v < limit,
                miss_by: format!("{:.1} MB over", v - limit),
                phase: None,
                note: String::new(),
            });
        }
        if m.streams_open < m.streams_requested {
            out.push(Target {
                what: format!("{} streams open at once", m.streams_requested),
                measured: format!(
                    "{} open, errors {}",
                    m.streams_open,
                    m.streams_errors.describe()
                ),
                pass: false,
                miss_by: format!("{} streams failed", m.streams_requested - m.streams_open),
                phase: None,
                note: String::new(),
            });
        }
    }
    if let Some(s) = &r.stampede {
        out.push(Target {
            what: format!(
                "refresh stampede: {} concurrent requests cause exactly 1 token call",
                s.n
            ),
            measured: format!(
                "{} call(s), {} errors",
                s.token_calls,
                s.stampede.errors.total()
            ),
            pass: s.token_calls == 1 && s.stampede.errors.total() == 0,
            miss_by: format!("{} calls", s.token_calls),
            phase: None,
            note: String::new(),
        });
    }
    out
}

/// Figures outside the targets that still deserve a line: a large added latency with many accounts.
fn other_findings(r: &Results, plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((d, g)) = r.memory.as_ref().and_then(|m| m.accounts_latency.as_ref()) {
        let added = g.latency.p99 as i64 - d.latency.p99 as i64;
        if added >= 1000 || g.errors.total() > 0 {
            let profile = match r.profile.iter().find(|p| p.key == "accounts") {
                Some(p) => format!(" Profile: {}.", crate::profile::summary(p)),
                None => String::new(),
            };
            out.push(format!(
                "**With {} accounts loaded the gateway adds {} at p99 ({} at p50) at {:.0} requests/s** (errors {}), \
                 against {} with one account (section 5).{profile}",
                r.memory.as_ref().map_or(0, |m| m.accounts),
                dms(g.latency.p99, d.latency.p99),
                dms(g.latency.p50, d.latency.p50),
                plan.accounts_rate,
                g.errors.describe(),
                target_rate(r)
                    .map(|(_, t)| dms(t.gateway.latency.p99, t.direct.latency.p99))
                    .unwrap_or_default()
            ));
        }
    }
    out
}

/// The targets that were missed (for the summary printed at the end).
pub fn misses(r: &Results, plan: &Plan) -> Vec<String> {
    targets(r, plan)
        .into_iter()
        .filter(|t| !t.pass)
        .map(|t| format!("{}: {} ({})", t.what, t.measured, t.miss_by))
        .collect()
}

pub fn render(r: &Results, plan: &Plan, ctx: &Context) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Benchmarks\n");
    if plan.smoke {
        let _ = writeln!(o, "> **Smoke run**: every scenario ran for a moment at tiny rates. These figures prove only that the suite runs; they measure nothing.\n");
    }
    let _ = writeln!(
        o,
        "What the gateway adds, measured side by side with the direct path (client → simulator) in the same run, so that \
         noise on a shared machine cancels out: every figure below is a difference (`gateway − direct`) or a ratio \
         against the direct path.\n"
    );
    let _ = writeln!(o, "- **Date:** {}", ctx.date);
    let _ = writeln!(o, "- **Command:** `{}`", ctx.command);
    let _ = writeln!(o, "- **Machine:** {}", ctx.machine);
    let _ = writeln!(o, "- **Build:** {}", ctx.build);
    let _ = writeln!(
        o,
        "- **Upstream:** `anthropic-simulator --accept-any-key --latency-ms 0` (in-repo), one process shared by all paths"
    );
    match &r.litellm_version {
        Some(v) => {
            let _ = writeln!(o, "- **Peer:** LiteLLM proxy {v} (PyPI, pinned by `bench/run.sh`, one worker), `anthropic/` provider with `api_base` at the same simulator, clients on its `/v1/messages`");
        }
        None => {
            let _ = writeln!(
                o,
                "- **Peer:** LiteLLM was not measured: {}",
                r.litellm_absent
            );
        }
    }
    if let Some(c) = &r.client_cmp {
        let _ = writeln!(
            o,
            "- **Load client:** {} (same closed loop on the direct path: hyper-util {:.0} req/s at {:.3} client CPU s per 1,000 requests; reqwest {:.0} req/s at {:.3})",
            r.client_kind,
            c.hyper.rps(),
            per_k(c.hyper.cpu_client, c.hyper.ok),
            c.reqwest.rps(),
            per_k(c.reqwest.cpu_client, c.reqwest.ok)
        );
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "## Targets\n");
    let _ = writeln!(o, "| target | measured | result |");
    let _ = writeln!(o, "|---|---|---|");
    for t in targets(r, plan) {
        let res = if t.pass {
            verdict(true).to_string()
        } else {
            format!("{} by {}", verdict(false), t.miss_by)
        };
        let _ = writeln!(o, "| {} | {} | {} |", t.what, t.measured, res);
    }
    let _ = writeln!(o);
    let missed: Vec<Target> = targets(r, plan).into_iter().filter(|t| !t.pass).collect();
    if !missed.is_empty() {
        let _ = writeln!(o, "### Misses\n");
        for t in &missed {
            let why = match t.phase.and_then(|k| r.profile.iter().find(|p| p.key == k)) {
                Some(p) => format!("Profile: {}.", crate::profile::summary(p)),
                None if t.phase.is_some() => format!(
                    "No profile: {}.",
                    r.profile_note.as_deref().unwrap_or("not requested")
                ),
                None => {
                    "A memory or correctness figure: the CPU profile below does not explain it."
                        .to_string()
                }
            };
            let _ = writeln!(
                o,
                "- **{}**: measured {}, missed by {}.{} {}",
                t.what, t.measured, t.miss_by, t.note, why
            );
        }
        let _ = writeln!(o);
    }
    let findings = other_findings(r, plan);
    if !findings.is_empty() {
        let _ = writeln!(o, "### Other findings\n");
        for f in findings {
            let _ = writeln!(o, "- {f}");
        }
        let _ = writeln!(o);
    }

    let hdr = "| path | p50 | p90 | p99 | p99.9 | errors |";
    let _ = writeln!(
        o,
        "## 1. Latency, non-stream, {} B requests, open loop\n",
        plan.body_bytes
    );
    let _ = writeln!(
        o,
        "Requests are due at fixed intervals whatever happened to earlier ones; latency counts from the due time \
         (no coordinated omission). {} per path after {} of warm-up.\n",
        secs(plan.latency_duration),
        secs(plan.warmup)
    );
    for (rate, t) in &r.latency {
        let _ = writeln!(o, "**{rate:.0} requests/s**\n");
        let _ = writeln!(o, "{hdr} achieved |");
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        latency_rows(&mut o, t, |x| format!("{:.0} req/s", x.rps()));
        let _ = writeln!(o);
    }

    if let Some(t) = &r.throughput {
        let _ = writeln!(
            o,
            "## 2. Maximum throughput, closed loop, concurrency {}\n",
            plan.concurrency
        );
        let _ = writeln!(o, "| path | requests/s | vs direct | p50 | p99 | errors | proxy CPU s / 1k req (kernel part) | simulator CPU s / 1k req (kernel part) | client CPU s / 1k req |");
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
        let d = t.direct.rps().max(1e-9);
        let mut row = |name: &str, x: &LoadResult| {
            let proxy = if name == "direct" {
                "—".to_string()
            } else {
                format!(
                    "{:.3} ({:.3})",
                    per_k(x.cpu_proxy, x.ok),
                    per_k(x.sys_proxy, x.ok)
                )
            };
            let _ = writeln!(
                o,
                "| {name} | {:.0} | {} | {} | {} | {} | {proxy} | {:.3} ({:.3}) | {:.3} |",
                x.rps(),
                pct(x.rps() / d),
                ms(x.latency.p50),
                ms(x.latency.p99),
                x.errors.describe(),
                per_k(x.cpu_sim, x.ok),
                per_k(x.sys_sim, x.ok),
                per_k(x.cpu_client, x.ok)
            );
        };
        row("direct", &t.direct);
        row("gateway", &t.gateway);
        if let Some(l) = &t.litellm {
            row("LiteLLM", l);
        }
        let us = |cpu: f64, ok: u64| per_k(cpu, ok) * 1000.0;
        let g = &t.gateway;
        let (gw, gw_sys) = (us(g.cpu_proxy, g.ok), us(g.sys_proxy, g.ok));
        let (sim, sim_sys) = (us(g.cpu_sim, g.ok), us(g.sys_sim, g.ok));
        let (cl_g, cl_d) = (us(g.cpu_client, g.ok), us(t.direct.cpu_client, t.direct.ok));
        let sim_d = us(t.direct.cpu_sim, t.direct.ok);
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let ceil_g = cpus * 1e6 / (cl_g + gw + sim).max(1e-9);
        let ceil_d = cpus * 1e6 / (cl_d + sim_d).max(1e-9);
        let _ = writeln!(
            o,
            "\nCPU seconds from `/proc/<pid>/stat` (utime + stime) over the measured window. Per request the gateway \
             uses {gw:.0} µs of CPU ({gw_sys:.0} µs of it in the kernel), **{:.2}×** the simulator's {sim:.0} µs \
             ({sim_sys:.0} µs kernel). The client, the gateway and the simulator share {cpus:.0} CPUs, so CPU cost alone \
             caps the gateway path at about {cpus:.0} s ÷ ({cl_g:.0} + {gw:.0} + {sim:.0}) µs ≈ {ceil_g:.0} req/s and \
             the direct path at {cpus:.0} s ÷ ({cl_d:.0} + {sim_d:.0}) µs ≈ {ceil_d:.0} req/s: an expected ratio of \
             {} (measured {}).\n",
            gw / sim.max(1e-9),
            pct(ceil_g / ceil_d.max(1e-9)),
            pct(t.gateway.rps() / d)
        );
    }

    if let Some(s) = &r.streaming {
        let _ = writeln!(
            o,
            "## 3. Streaming, {} SSE events per response, {} ms apart\n",
            plan.stream_events, plan.stream_delay_ms
        );
        let _ = writeln!(
            o,
            "A new stream every {:.0} ms for {}, read by a raw HTTP/1.1 client that timestamps every `read()`: \
             time to the first byte and to the end of the first event (from the due time), and the gap between \
             consecutive events. An event *shares a read* when the read that completed it completed another event too, \
             and is *not in its own chunk* when its HTTP chunk held anything else.\n",
            1000.0 / plan.stream_rate,
            secs(plan.stream_duration)
        );
        let _ = writeln!(o, "| path | streams | first byte p50 | first byte p99 | first event p50 | p90 | p99 | p99.9 | gap p50 | gap p99 | gap max | events | in a shared read | not in own chunk | errors |");
        let _ = writeln!(
            o,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        let row = |o: &mut String, name: &str, x: &StreamResult| {
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                x.streams_ok,
                ms(x.ttfb.p50),
                ms(x.ttfb.p99),
                ms(x.ttfe.p50),
                ms(x.ttfe.p90),
                ms(x.ttfe.p99),
                ms(x.ttfe.p999),
                ms(x.gap.p50),
                ms(x.gap.p99),
                ms(x.gap.max),
                x.events,
                x.shared_read,
                x.not_own_chunk,
                x.errors.describe()
            );
        };
        let drow = |o: &mut String, name: &str, x: &StreamResult, d: &StreamResult| {
            let _ = writeln!(
                o,
                "| **{name}** | | {} | {} | {} | {} | {} | {} | {} | {} | {} | | {:+} | {:+} | |",
                dms(x.ttfb.p50, d.ttfb.p50),
                dms(x.ttfb.p99, d.ttfb.p99),
                dms(x.ttfe.p50, d.ttfe.p50),
                dms(x.ttfe.p90, d.ttfe.p90),
                dms(x.ttfe.p99, d.ttfe.p99),
                dms(x.ttfe.p999, d.ttfe.p999),
                dms(x.gap.p50, d.gap.p50),
                dms(x.gap.p99, d.gap.p99),
                dms(x.gap.max, d.gap.max),
                x.shared_read as i64 - d.shared_read as i64,
                x.not_own_chunk as i64 - d.not_own_chunk as i64,
            );
        };
        row(&mut o, "direct", &s.direct);
        row(&mut o, "gateway", &s.gateway);
        drow(&mut o, "gateway − direct", &s.gateway, &s.direct);
        if let Some(l) = &s.litellm {
            row(&mut o, "LiteLLM", l);
            drow(&mut o, "LiteLLM − direct", l, &s.direct);
        }
        let _ = writeln!(
            o,
            "\nProxy CPU during the streams: gateway {:.2} s{}; simulator {:.2} s.\n",
            s.gateway.cpu_proxy,
            s.litellm
                .as_ref()
                .map(|l| format!(", LiteLLM {:.2} s", l.cpu_proxy))
                .unwrap_or_default(),
            s.direct.cpu_sim
        );
    }

    if let Some(l) = &r.large {
        let _ = writeln!(
            o,
            "## 4. Large bodies: {} KB requests at {:.0} requests/s, open loop\n",
            plan.large_bytes / 1024,
            plan.large_rate
        );
        let _ = writeln!(o, "{hdr}");
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        let _ = writeln!(
            o,
            "| direct | {} | {} |",
            dist_cells(&l.direct.latency),
            l.direct.errors.describe()
        );
        let _ = writeln!(
            o,
            "| gateway | {} | {} |",
            dist_cells(&l.gateway.latency),
            l.gateway.errors.describe()
        );
        let _ = writeln!(
            o,
            "| **gateway − direct** | {} | |",
            delta_cells(&l.gateway.latency, &l.direct.latency)
        );
        let _ = writeln!(
            o,
            "\nGateway RSS: {:.1} MB before, **{:.1} MB peak** during (sampled every 20 ms), {:.1} MB after.\n",
            l.rss_before_mb, l.rss_peak_mb, l.rss_after_mb
        );
    }

    if let Some(m) = &r.memory {
        let _ = writeln!(
            o,
            "## 5. Memory (VmRSS from `/proc/<pid>/status`, fresh gateway each)\n"
        );
        let _ = writeln!(
            o,
            "| state | gateway RSS | target | simulator RSS (same moment) |"
        );
        let _ = writeln!(o, "|---|---|---|---|");
        let _ = writeln!(
            o,
            "| idle, 1 account, {} after start | {:.1} MB | < 30 MB | {:.1} MB |",
            secs(plan.idle_wait),
            m.idle_mb,
            m.sim_idle_mb
        );
        let _ = writeln!(
            o,
            "| {} API-key accounts loaded | {:.1} MB | < 100 MB | |",
            m.accounts, m.accounts_mb
        );
        let _ = writeln!(
            o,
            "| {} of {} streams open ({} events {} ms apart, held open) | {:.1} MB | < 250 MB | {:.1} MB |",
            m.streams_open, m.streams_requested, 200, plan.open_stream_delay_ms, m.streams_mb, m.streams_sim_mb
        );
        let _ = writeln!(
            o,
            "\nWith the streams: {:.1} MB before they opened, {:.1} MB once they had closed; stream errors: {}. \
             Seeding {} accounts into the SQLite store took {:.1} s.\n",
            m.streams_before_mb,
            m.streams_after_close_mb,
            m.streams_errors.describe(),
            m.accounts,
            m.seed_secs
        );
        if let Some(h) = &r.heap {
            let _ = writeln!(
                o,
                "Heap of a gateway loading {} accounts (valgrind massif, same binary): **{:.1} MB at the peak while \
                 loading them, {:.1} MB live once loaded and idle**; the rest of the RSS above is memory the allocator \
                 (glibc malloc, per-thread arenas) keeps after the load.\n",
                h.accounts,
                h.peak as f64 / 1e6,
                h.last as f64 / 1e6
            );
        }
        if let Some((d, g)) = &m.accounts_latency {
            let _ = writeln!(o, "Latency with {} accounts loaded, {:.0} requests/s, open loop (account selection scans the pool):\n", m.accounts, plan.accounts_rate);
            let _ = writeln!(o, "{hdr}");
            let _ = writeln!(o, "|---|---|---|---|---|---|");
            let _ = writeln!(
                o,
                "| direct | {} | {} |",
                dist_cells(&d.latency),
                d.errors.describe()
            );
            let _ = writeln!(
                o,
                "| gateway, {} accounts | {} | {} |",
                m.accounts,
                dist_cells(&g.latency),
                g.errors.describe()
            );
            let _ = writeln!(
                o,
                "| **gateway − direct** | {} | |\n",
                delta_cells(&g.latency, &d.latency)
            );
        }
    }

    if let Some(s) = &r.stampede {
        let _ = writeln!(o, "## 6. Refresh stampede: {} concurrent requests on an expired OAuth account, token endpoint {} ms\n", s.n, plan.token_latency_ms);
        let _ = writeln!(
            o,
            "Token-endpoint calls during the stampede: **{}** (counted by the simulator; the gateway's \
             `gateway_refresh_attempts_total` says {}). The refresh itself — one token-endpoint call made directly — \
             took {}.\n",
            s.token_calls,
            s.refresh_attempts_metric,
            ms(s.token_call_us)
        );
        let _ = writeln!(
            o,
            "| burst of {} simultaneous requests | p50 | p90 | p99 | p99.9 | max | errors |",
            s.n
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        let row = |o: &mut String, name: &str, x: &LoadResult| {
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} |",
                dist_cells(&x.latency),
                ms(x.latency.max),
                x.errors.describe()
            );
        };
        row(&mut o, "direct", &s.direct_burst);
        row(&mut o, "gateway, API key (no refresh)", &s.gateway_burst);
        row(&mut o, "gateway, expired OAuth (stampede)", &s.stampede);
        let minus = |d: &Dist, by: u64| Dist {
            n: d.n,
            p50: d.p50.saturating_sub(by),
            p90: d.p90.saturating_sub(by),
            p99: d.p99.saturating_sub(by),
            p999: d.p999.saturating_sub(by),
            max: d.max.saturating_sub(by),
        };
        let beyond = minus(&s.stampede.latency, s.token_call_us);
        let _ = writeln!(
            o,
            "| **waiters beyond the refresh** (stampede − refresh) | {} | {} | |",
            dist_cells(&beyond),
            ms(beyond.max)
        );
        let _ = writeln!(
            o,
            "| added by waiting (stampede − refresh − gateway burst) | {} | {} | |",
            delta_cells(&beyond, &s.gateway_burst.latency),
            dms(beyond.max, s.gateway_burst.latency.max)
        );
        let _ = writeln!(
            o,
            "| gateway burst − direct burst | {} | {} | |",
            delta_cells(&s.gateway_burst.latency, &s.direct_burst.latency),
            dms(s.gateway_burst.latency.max, s.direct_burst.latency.max)
        );
        let _ = writeln!(
            o,
            "\nThe stampede runs on the gateway that served the API-key burst just before (the key is then disabled and \
             the expired OAuth account added to its store), so both bursts find warm connections on both sides. Beyond \
             the refresh itself, a waiter needs what any request of a burst of {} needs; the second-to-last row is what \
             waiting on the refresh added to that (negative where accepting and parsing the burst overlapped the \
             refresh).\n",
            s.n
        );
    }

    if !r.notes.is_empty() {
        let _ = writeln!(o, "## Notes\n");
        for n in &r.notes {
            let _ = writeln!(o, "- {n}");
        }
        let _ = writeln!(o);
    }
    if r.profile.is_empty() {
        let _ = writeln!(
            o,
            "## Profile\n\nNo profile in this run: {}.\n",
            r.profile_note.as_deref().unwrap_or("not requested")
        );
    } else {
        let _ = writeln!(o, "{}", crate::profile::render(&r.profile).trim_end());
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "## Method\n");
    let _ = writeln!(
        o,
        "- One `anthropic-simulator` serves every path; the gateway runs with its default logging (`info`), one API-key \
         account, a config in a temp dir and its SQLite store there. Processes are restarted between memory states.\n\
         - Non-stream requests use a pooled HTTP/1.1 client (keep-alive); streaming and the open-streams state use a \
         raw socket client (one connection per stream).\n\
         - Percentiles are exact (nearest rank over every sample); errors are non-200 answers, transport errors, \
         timeouts ({:.0} s) and due requests the client could not send because {} were already outstanding.\n\
         - Everything (client, gateway, simulator, peer) shares the machine's CPUs, so absolute figures include \
         contention; the differences against the direct path are the point.",
        plan.timeout.as_secs_f64(),
        plan.max_in_flight
    );
    o
}
