//! BENCHMARKS.md: the machine, the command, the targets, and one table per scenario, every figure next to the direct
//! path's of the same run.

use std::fmt::Write as _;

use crate::fmt::{delta_cells, dist_cells, dms, ms, pct, secs, verdict};
use crate::load::LoadResult;
use crate::plan::{per_k, Plan};
use crate::results::{Paths, Results};
use crate::stats::{alternate_halves, Dist};
use crate::stream::StreamResult;
use crate::targets::us_per_request;

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

/// The whole report.
pub fn render(r: &Results, plan: &Plan, ctx: &Context) -> String {
    let mut o = String::new();
    header(&mut o, r, plan, ctx);
    targets(&mut o, r, plan);
    latency(&mut o, r, plan);
    throughput(&mut o, r, plan);
    cpu(&mut o, r, plan);
    streaming(&mut o, r, plan);
    large(&mut o, r, plan);
    features(&mut o, r, plan);
    pool(&mut o, r, plan);
    memory(&mut o, r, plan);
    stampede(&mut o, r, plan);
    tail(&mut o, r, plan);
    o
}

const FAST_UPSTREAM: &str = "the fast upstream (`claude-gateway-bench --serve-upstream`, a minimal hyper 1 responder with canned answers)";
const SIMULATOR: &str =
    "the in-repo simulator (`anthropic-simulator --accept-any-key --latency-ms 0`)";

fn header(o: &mut String, r: &Results, plan: &Plan, ctx: &Context) {
    let _ = writeln!(o, "# Benchmarks\n");
    if plan.smoke {
        let _ = writeln!(o, "> **Smoke run**: every scenario ran for a moment at tiny rates. These figures prove only that the suite runs; they measure nothing.\n");
    }
    let _ = writeln!(
        o,
        "What the gateway adds, measured side by side with the direct path (client → upstream) and with nginx as the \
         minimal-proxy floor, in the same run, so that noise on a shared machine cancels out: every figure below is a \
         difference (`gateway − direct`) or a ratio against a baseline measured in the same run.\n"
    );
    let _ = writeln!(o, "- **Date:** {}", ctx.date);
    let _ = writeln!(o, "- **Command:** `{}`", ctx.command);
    let _ = writeln!(o, "- **Machine:** {}", ctx.machine);
    let _ = writeln!(o, "- **Build:** {}", ctx.build);
    let runtime = match r.upstream_threads {
        0 => "current-thread runtime".to_string(),
        n => format!("multi-thread runtime, {n} workers"),
    };
    let _ = writeln!(
        o,
        "- **Upstreams:** sections 1–7 use {FAST_UPSTREAM}, {runtime}, one process shared by all paths; sections 8–9 \
         use {SIMULATOR}, which models the token endpoint and Anthropic's behaviour"
    );
    match &r.nginx_version {
        Some(v) => {
            let _ = writeln!(o, "- **Floor:** nginx {v}, one worker, `proxy_pass` to the same fast upstream through an `upstream` block with `keepalive`, HTTP/1.1, no buffering, no access log; and a second floor, the minimal hyper 1 reverse proxy (`claude-gateway-bench --serve-proxy`: a server and a pooled client on one current-thread runtime, no gateway work)");
        }
        None => {
            let _ = writeln!(o, "- **Floor:** nginx was not measured: {}; the minimal hyper 1 reverse proxy (`claude-gateway-bench --serve-proxy`, one current-thread runtime, no gateway work) was", r.nginx_absent);
        }
    }
    match &r.litellm_version {
        Some(v) => {
            let _ = writeln!(o, "- **Peer:** LiteLLM proxy {v} (PyPI, pinned by `bench/run.sh`, one worker), `anthropic/` provider with `api_base` at the same fast upstream, clients on its `/v1/messages`");
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
}

fn targets(o: &mut String, r: &Results, plan: &Plan) {
    let all = crate::targets::all(r, plan);
    let _ = writeln!(o, "## Targets\n");
    let _ = writeln!(o, "| target | measured | result |");
    let _ = writeln!(o, "|---|---|---|");
    for t in &all {
        let res = if t.pass {
            verdict(true).to_string()
        } else {
            format!("{} by {}", verdict(false), t.miss_by)
        };
        let _ = writeln!(o, "| {} | {} | {} |", t.what, t.measured, res);
    }
    let _ = writeln!(o);
    let missed: Vec<_> = all.iter().filter(|t| !t.pass).collect();
    if missed.is_empty() {
        return;
    }
    let _ = writeln!(o, "### Misses\n");
    for t in missed {
        let why = match t.phase.and_then(|k| r.profile.iter().find(|p| p.key == k)) {
            Some(p) => format!("Profile: {}.", crate::profile::summary(p)),
            None if t.phase.is_some() => format!(
                "No profile: {}.",
                r.profile_note.as_deref().unwrap_or("not requested")
            ),
            None => "The callgrind profile below does not isolate this figure.".to_string(),
        };
        let _ = writeln!(
            o,
            "- **{}**: measured {}, missed by {}.{} {}",
            t.what, t.measured, t.miss_by, t.note, why
        );
    }
    let _ = writeln!(o);
}

const LATENCY_HEADER: &str = "| path | p50 | p90 | p99 | p99.9 | errors |";

/// Rows of a latency table: each path, and its difference from direct after it.
fn latency_rows(o: &mut String, p: &Paths<LoadResult>, extra: impl Fn(&LoadResult) -> String) {
    for (name, x) in p.named() {
        let _ = writeln!(
            o,
            "| {name} | {} | {} |{}",
            dist_cells(&x.latency),
            x.errors.describe(),
            extra(x)
        );
        if name != "direct" {
            let bold = if name == "gateway" { "**" } else { "" };
            let _ = writeln!(
                o,
                "| {bold}{name} − direct{bold} | {} | |{}",
                delta_cells(&x.latency, &p.direct.latency),
                if extra(x).is_empty() { "" } else { " |" }
            );
        }
    }
}

fn latency(o: &mut String, r: &Results, plan: &Plan) {
    if r.latency.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## 1. Latency, non-stream, {} B requests, open loop (fast upstream)\n",
        plan.body_bytes
    );
    let _ = writeln!(
        o,
        "Requests are due at fixed intervals whatever happened to earlier ones; latency counts from the due time \
         (no coordinated omission). The paths are measured at once, paired: one sequence of due times at the rate \
         times the number of paths, request i going to path i mod n, so each path gets the rate and a burst of noise \
         from elsewhere on the machine falls on every path in the same moments (the machine carries the paths' \
         requests together). {} per path after {} of warm-up; LiteLLM after them, alone, for {}. The A/A row is the \
         noise floor: direct's requests taken alternately into two halves, one half's percentiles minus the other's.\n",
        secs(plan.latency_duration),
        secs(plan.warmup),
        secs(plan.peer_duration)
    );
    for (rate, p) in &r.latency {
        let _ = writeln!(o, "**{rate:.0} requests/s**\n");
        let _ = writeln!(o, "{LATENCY_HEADER} achieved |");
        let _ = writeln!(o, "|---|---|---|---|---|---|---|");
        latency_rows(o, p, |x| format!(" {:.0} req/s |", x.rps()));
        let (one, other) = alternate_halves(&p.direct.samples);
        let _ = writeln!(
            o,
            "| A/A: direct's alternate halves | {} | | |",
            delta_cells(&one, &other)
        );
        let _ = writeln!(o);
    }
}

fn throughput(o: &mut String, r: &Results, plan: &Plan) {
    let Some(p) = &r.throughput else { return };
    let _ = writeln!(
        o,
        "## 2. Maximum throughput, closed loop, concurrency {} (fast upstream)\n",
        plan.concurrency
    );
    let _ = writeln!(o, "| path | requests/s | vs direct | vs nginx's | p50 | p99 | errors | proxy CPU µs / req (kernel part) | upstream CPU µs / req | client CPU µs / req |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
    let d = p.direct.rps().max(1e-9);
    let n = p.nginx.as_ref().map(|n| n.rps() / d);
    for (name, x) in p.named() {
        let proxy = if name == "direct" {
            "—".to_string()
        } else {
            format!(
                "{:.0} ({:.0})",
                us_per_request(x.cpu_proxy, x),
                us_per_request(x.sys_proxy, x)
            )
        };
        let vs_nginx = match (name, n) {
            ("direct", _) | (_, None) => "—".to_string(),
            (_, Some(n)) => format!("{:.2}×", x.rps() / d / n.max(1e-9)),
        };
        let _ = writeln!(
            o,
            "| {name} | {:.0} | {} | {vs_nginx} | {} | {} | {} | {proxy} | {:.0} | {:.0} |",
            x.rps(),
            pct(x.rps() / d),
            ms(x.latency.p50),
            ms(x.latency.p99),
            x.errors.describe(),
            us_per_request(x.cpu_sim, x),
            us_per_request(x.cpu_client, x)
        );
    }
    let _ = writeln!(
        o,
        "\nCPU from `/proc/<pid>/stat` (utime + stime of the process tree) over the measured window, divided by the \
         requests answered. The client, the proxy and the upstream share the machine's CPUs, so a proxy's ratio to \
         direct is bounded by what the client and the upstream leave it; \"vs nginx's\" divides each proxy's ratio to \
         direct by nginx's.\n"
    );
}

fn cpu(o: &mut String, r: &Results, plan: &Plan) {
    if r.cpu.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## 3. CPU per request at fixed rates, non-stream, open loop (fast upstream)\n"
    );
    let _ = writeln!(
        o,
        "{} per path in {} alternating rounds. CPU (utime + stime from `/proc/<pid>/stat`) over the measured window \
         divided by the requests answered; the proxy's figure excludes the upstream's.\n",
        secs(plan.cpu_duration),
        plan.cpu_rounds
    );
    let _ = writeln!(o, "| rate | path | proxy CPU µs / req | kernel part | ÷ nginx | upstream CPU µs / req | p50 | p99 | errors | achieved |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
    for (rate, p) in &r.cpu {
        let nginx = p.nginx.as_ref().map(|n| us_per_request(n.cpu_proxy, n));
        for (name, x) in p.named() {
            let us = us_per_request(x.cpu_proxy, x);
            let (proxy, kernel, vs) = if name == "direct" {
                ("—".to_string(), "—".to_string(), "—".to_string())
            } else {
                (
                    format!("{us:.1}"),
                    format!("{:.1}", us_per_request(x.sys_proxy, x)),
                    nginx
                        .filter(|n| *n > 0.0)
                        .map_or("—".into(), |n| format!("{:.2}×", us / n)),
                )
            };
            let _ = writeln!(
                o,
                "| {rate:.0} req/s | {name} | {proxy} | {kernel} | {vs} | {:.1} | {} | {} | {} | {:.0} req/s |",
                us_per_request(x.cpu_sim, x),
                ms(x.latency.p50),
                ms(x.latency.p99),
                x.errors.describe(),
                x.rps()
            );
        }
    }
    let _ = writeln!(o);
}

fn stream_row(o: &mut String, name: &str, x: &StreamResult) {
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
}

fn stream_delta(o: &mut String, name: &str, x: &StreamResult, d: &StreamResult) {
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
}

fn streaming(o: &mut String, r: &Results, plan: &Plan) {
    let Some(s) = &r.streaming else { return };
    let _ = writeln!(
        o,
        "## 4. Streaming, {} SSE events per response, {} ms apart (fast upstream)\n",
        plan.stream_events, plan.stream_delay_ms
    );
    let _ = writeln!(
        o,
        "{:.0} new streams per second per path for {}, started in turn on direct, nginx, the hyper proxy and the gateway (paired: the \
         paths share the same moments), read by a raw HTTP/1.1 client that timestamps every `read()`: time to the \
         first byte and to the end of the first event (from the due time), and the gap between consecutive events. \
         An event *shares a read* when the read that completed it completed another event too, and is *not in its \
         own chunk* when its HTTP chunk held anything else. LiteLLM's streams run after them.\n",
        plan.stream_rate,
        secs(plan.stream_duration)
    );
    let _ = writeln!(o, "| path | streams | first byte p50 | first byte p99 | first event p50 | p90 | p99 | p99.9 | gap p50 | gap p99 | gap max | events | in a shared read | not in own chunk | errors |");
    let _ = writeln!(
        o,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (name, x) in s.named() {
        stream_row(o, name, x);
        if name != "direct" {
            stream_delta(o, &format!("{name} − direct"), x, &s.direct);
        }
    }
    let cpu: Vec<String> = s
        .named()
        .into_iter()
        .filter(|(n, _)| *n != "direct")
        .map(|(n, x)| format!("{n} {:.2} s", x.cpu_proxy))
        .collect();
    let _ = writeln!(o, "\nProxy CPU during the streams: {}.\n", cpu.join(", "));
}

fn large(o: &mut String, r: &Results, plan: &Plan) {
    let Some(l) = &r.large else { return };
    let _ = writeln!(
        o,
        "## 5. Large bodies: {} KB requests at {:.0} requests/s, open loop (fast upstream)\n",
        plan.large_bytes / 1024,
        plan.large_rate
    );
    let _ = writeln!(o, "{LATENCY_HEADER}");
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    latency_rows(o, &l.paths, |_| String::new());
    let _ = writeln!(
        o,
        "\nGateway RSS: {:.1} MB before, **{:.1} MB peak** during (sampled every 20 ms), {:.1} MB after.\n",
        l.rss_before_mb, l.rss_peak_mb, l.rss_after_mb
    );
}

/// A latency row with the proxy's CPU per request.
fn cpu_row(o: &mut String, name: &str, x: &LoadResult) {
    let _ = writeln!(
        o,
        "| {name} | {} | {} | {:.1} |",
        dist_cells(&x.latency),
        x.errors.describe(),
        us_per_request(x.cpu_proxy, x)
    );
}

fn features(o: &mut String, r: &Results, plan: &Plan) {
    if r.keys.is_none() && r.routes.is_none() {
        return;
    }
    let _ = writeln!(o, "## 6. What the newer features cost (fast upstream)\n");
    if let Some(k) = &r.keys {
        keys(o, k, plan);
    }
    if let Some(rt) = &r.routes {
        routes(o, rt, plan);
    }
}

fn keys(o: &mut String, k: &crate::features::Keys, plan: &Plan) {
    let _ = writeln!(
        o,
        "**Managed keys (issue 12), {:.0} requests/s, open loop.** One gateway; A is its static config key, B a \
         managed key created with `claude-gateway keys create --name {} {}`, A2 the static key again. A, B and A2 \
         alternate in {} rounds ({} each in all). Both keys' requests leave usage rows in the store (written once a \
         second, off the request path); B's also pass every limit check. The store's rollups count **{}** requests \
         of B ({} answered in the measured windows, the rest in its warm-up).\n",
        k.rate,
        crate::features::KEY_NAME,
        crate::features::KEY_LIMITS.join(" "),
        plan.keys_rounds,
        secs(plan.keys_duration),
        k.recorded.map_or("(query failed)".to_string(), |n| n.to_string()),
        k.b.ok
    );
    let _ = writeln!(
        o,
        "| run | p50 | p90 | p99 | p99.9 | errors | gateway CPU µs / req |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    cpu_row(o, "A: static key", &k.a);
    cpu_row(o, "B: managed key, every limit", &k.b);
    cpu_row(o, "A2: static key again", &k.a2);
    let _ = writeln!(
        o,
        "| **B − A** | {} | | |",
        delta_cells(&k.b.latency, &k.a.latency)
    );
    let _ = writeln!(
        o,
        "| **B − A2** | {} | | |",
        delta_cells(&k.b.latency, &k.a2.latency)
    );
    let _ = writeln!(
        o,
        "| A2 − A (the noise floor) | {} | | |\n",
        delta_cells(&k.a2.latency, &k.a.latency)
    );
}

fn routes(o: &mut String, rt: &crate::features::Routes, plan: &Plan) {
    let _ = writeln!(
        o,
        "**The OpenAI routes, {:.0} requests/s, open loop.** The same gateway and static key; `/v1/chat/completions` \
         and `/v1/responses` translate to a Messages request and the answer back. Direct, Messages, Chat Completions \
         and Responses alternate in {} rounds ({} each in all).\n",
        rt.rate,
        plan.rounds,
        secs(plan.routes_duration)
    );
    let _ = writeln!(
        o,
        "| route | p50 | p90 | p99 | p99.9 | errors | gateway CPU µs / req |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        o,
        "| direct | {} | {} | — |",
        dist_cells(&rt.direct.latency),
        rt.direct.errors.describe()
    );
    cpu_row(o, "`/v1/messages`", &rt.messages);
    cpu_row(o, "`/v1/chat/completions`", &rt.chat);
    cpu_row(o, "`/v1/responses`", &rt.responses);
    let m = us_per_request(rt.messages.cpu_proxy, &rt.messages);
    for (name, x) in [("Chat Completions", &rt.chat), ("Responses", &rt.responses)] {
        let _ = writeln!(
            o,
            "| **{name} − Messages** | {} | | {:+.1} ({:.2}×) |",
            delta_cells(&x.latency, &rt.messages.latency),
            us_per_request(x.cpu_proxy, x) - m,
            us_per_request(x.cpu_proxy, x) / m.max(1e-9)
        );
    }
    let _ = writeln!(
        o,
        "| Messages − direct | {} | | |\n",
        delta_cells(&rt.messages.latency, &rt.direct.latency)
    );
}

fn memory(o: &mut String, r: &Results, plan: &Plan) {
    let Some(m) = &r.memory else { return };
    let _ = writeln!(
        o,
        "## 8. Memory (VmRSS from `/proc/<pid>/status`, fresh gateway each; simulator)\n"
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
             keeps after the load.\n",
            h.accounts,
            h.peak as f64 / 1e6,
            h.last as f64 / 1e6
        );
    }
}

fn pool(o: &mut String, r: &Results, plan: &Plan) {
    let Some(p) = &r.pool else { return };
    let _ = writeln!(
        o,
        "## 7. Pool scale: {} accounts (fast upstream)\n",
        p.accounts
    );
    let _ = writeln!(
        o,
        "Two gateways whose stores got their accounts from `claude-gateway accounts import` of CLIProxyAPI files \
         (OAuth, expiring in 2099): one with 1 account, one with {}. Start-up counts from `serve` to `/readyz` \
         answering 200. Then {:.0} requests/s, open loop, on direct, the 1-account gateway and the {}-account \
         gateway at once, paired as in section 1 ({} each); the A/A row is the noise floor, as there.\n",
        p.accounts,
        p.rate,
        p.accounts,
        secs(plan.pool_duration)
    );
    let _ = writeln!(o, "| accounts | `accounts import` | start-up to ready |");
    let _ = writeln!(o, "|---|---|---|");
    let _ = writeln!(
        o,
        "| 1 | {:.2} s | {:.2} s |",
        p.import_one_secs, p.startup_one_secs
    );
    let _ = writeln!(
        o,
        "| {} | **{:.2} s** | **{:.2} s** |\n",
        p.accounts, p.import_secs, p.startup_secs
    );
    let _ = writeln!(o, "{LATENCY_HEADER} gateway CPU µs / req |");
    let _ = writeln!(o, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        o,
        "| direct | {} | {} | — |",
        dist_cells(&p.direct.latency),
        p.direct.errors.describe()
    );
    cpu_row(o, "gateway, 1 account", &p.one);
    cpu_row(o, &format!("gateway, {} accounts", p.accounts), &p.many);
    let _ = writeln!(
        o,
        "| gateway, 1 account − direct | {} | | |",
        delta_cells(&p.one.latency, &p.direct.latency)
    );
    let _ = writeln!(
        o,
        "| gateway, {} accounts − direct | {} | | |",
        p.accounts,
        delta_cells(&p.many.latency, &p.direct.latency)
    );
    let _ = writeln!(
        o,
        "| **{} accounts − 1 account** | {} | | |",
        p.accounts,
        delta_cells(&p.many.latency, &p.one.latency)
    );
    let (one, other) = alternate_halves(&p.one.samples);
    let _ = writeln!(
        o,
        "| A/A: the 1-account gateway's alternate halves | {} | | |\n",
        delta_cells(&one, &other)
    );
}

fn minus(d: &Dist, by: u64) -> Dist {
    Dist {
        n: d.n,
        p50: d.p50.saturating_sub(by),
        p90: d.p90.saturating_sub(by),
        p99: d.p99.saturating_sub(by),
        p999: d.p999.saturating_sub(by),
        max: d.max.saturating_sub(by),
    }
}

fn stampede(o: &mut String, r: &Results, plan: &Plan) {
    let Some(s) = &r.stampede else { return };
    let _ = writeln!(o, "## 9. Refresh stampede: {} concurrent requests on an expired OAuth account, token endpoint {} ms (simulator)\n", s.n, plan.token_latency_ms);
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
    for (name, x) in [
        ("direct", &s.direct_burst),
        ("gateway, API key (no refresh)", &s.gateway_burst),
        ("gateway, expired OAuth (stampede)", &s.stampede),
    ] {
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} |",
            dist_cells(&x.latency),
            ms(x.latency.max),
            x.errors.describe()
        );
    }
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

/// Notes, the profile and the method.
fn tail(o: &mut String, r: &Results, plan: &Plan) {
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
        "- The gateway runs with its default logging (`info`), one API-key account, a config in a temp dir and its \
         SQLite store there. Processes are restarted between memory states.\n\
         - The fast upstream accepts any credential and answers from canned bytes (see `crates/bench/src/upstream.rs`): \
         it is a floor to measure against, so that the direct path is not the bottleneck; the simulator stays the \
         upstream where its behaviour is needed (token endpoint, stampede, memory).\n\
         - Non-stream requests use a pooled HTTP/1.1 client (keep-alive); streaming and the open-streams state use a \
         raw socket client (one connection per stream).\n\
         - Percentiles are exact (nearest rank over every sample); errors are non-200 answers, transport errors, \
         timeouts ({:.0} s) and due requests the client could not send because {} were already outstanding.\n\
         - Everything (client, proxies, upstreams, peer) shares the machine's CPUs, so absolute figures include \
         contention; the differences and ratios against baselines of the same run are the point.",
        plan.timeout.as_secs_f64(),
        plan.max_in_flight
    );
}
