//! A callgrind profile of the gateway (and of the simulator, for scale) under each kind of load: instructions per
//! request, and where the gateway's go. Instruction counts do not depend on what else the machine is doing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

use crate::client::{Client, ClientKind, Target};
use crate::plan::{body, Setup};
use crate::procs::{FastUpstream, Gateway, GatewayDir, Sim, CLIENT_KEY};
use crate::stream;

/// The heap of a gateway loading many accounts, from valgrind's massif.
#[derive(Debug, Clone, Default)]
pub struct Heap {
    pub accounts: usize,
    /// Largest heap (useful + allocator overhead) seen, bytes.
    pub peak: u64,
    /// Heap at the last snapshot (idle, accounts loaded), bytes.
    pub last: u64,
}

/// `(peak, last)` heap bytes (useful + allocator overhead) of a massif output.
fn parse_massif(text: &str) -> Option<(u64, u64)> {
    let (mut peak, mut last, mut cur) = (0u64, None, 0u64);
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("mem_heap_B=") {
            cur = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("mem_heap_extra_B=") {
            let total = cur + v.trim().parse::<u64>().ok()?;
            peak = peak.max(total);
            last = Some(total);
        }
    }
    last.map(|l| (peak, l))
}

/// Starts a gateway with `accounts` API keys under massif, lets it load them and idle, stops it gracefully, and reads
/// its heap profile.
pub async fn heap(setup: &Setup, dir: &Path, sim: &Sim) -> anyhow::Result<Heap> {
    let accounts = setup.plan.accounts;
    let gdir = GatewayDir::new(crate::memory::fast_tmp().as_deref(), "massif", sim)?;
    crate::memory::seed_api_keys(&gdir.data_dir(), accounts).await?;
    let out = dir.join("massif.out");
    let _ = std::fs::remove_file(&out);
    let wrapper = vec![
        "valgrind".to_string(),
        "--tool=massif".to_string(),
        "-q".to_string(),
        format!("--massif-out-file={}", out.display()),
    ];
    let mut gw = Gateway::start_wrapped(&wrapper, &setup.gateway_bin, &gdir)?;
    gw.wait_accounts(accounts, Duration::from_secs(120)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The idle heap, accounts loaded: a snapshot asked through valgrind's gdbserver.
    let snap = dir.join("massif.idle");
    let _ = std::fs::remove_file(&snap);
    let status = Command::new("vgdb")
        .arg(format!("--pid={}", gw.proc.pid()))
        .arg("snapshot")
        .arg(&snap)
        .output()
        .context("running vgdb")?;
    if !status.status.success() {
        bail!(
            "vgdb snapshot failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    // SIGINT: the gateway shuts down gracefully and massif writes its file (for the peak).
    let _ = Command::new("kill")
        .args(["-INT", &gw.proc.pid().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gw.proc.exited() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let (peak, _) =
        parse_massif(&read(&out)?).ok_or_else(|| anyhow!("no snapshots in {}", out.display()))?;
    let (_, last) =
        parse_massif(&read(&snap)?).ok_or_else(|| anyhow!("no snapshot in {}", snap.display()))?;
    eprintln!(
        "[bench] heap with {accounts} accounts: peak {:.1} MB while loading, {:.1} MB after",
        peak as f64 / 1e6,
        last as f64 / 1e6
    );
    Ok(Heap {
        accounts,
        peak,
        last,
    })
}

/// One workload measured under callgrind.
#[derive(Debug, Clone)]
pub struct Phase {
    pub key: &'static str,
    pub name: String,
    pub requests: u64,
    pub gateway_ir: u64,
    /// The simulator's instructions, when it was the upstream (the fast upstream runs outside callgrind).
    pub sim_ir: Option<u64>,
    /// Largest self costs of the gateway: (Ir, function).
    pub top: Vec<(u64, String)>,
    /// Self cost of the gateway by crate (first path segment of the function; the library for C symbols).
    pub crates: Vec<(String, u64)>,
}

impl Phase {
    pub fn gateway_per_request(&self) -> u64 {
        self.gateway_ir / self.requests.max(1)
    }
    pub fn sim_per_request(&self) -> Option<u64> {
        self.sim_ir.map(|s| s / self.requests.max(1))
    }
}

fn callgrind(dir: &Path, who: &str) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "-q".into(),
        format!("--callgrind-out-file={}/{who}.%p.out", dir.display()),
    ]
}

fn control(args: &[&str], pid: u32) -> anyhow::Result<()> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control")?;
    if !out.status.success() {
        bail!(
            "callgrind_control {args:?} {pid}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The newest dump of `who`'s process `pid` (callgrind writes `who.PID.out.N` on each dump).
fn newest_dump(dir: &Path, who: &str, pid: u32) -> anyhow::Result<PathBuf> {
    let prefix = format!("{who}.{pid}.out.");
    let mut best: Option<(u64, PathBuf)> = None;
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix(&prefix)
            .and_then(|n| n.parse::<u64>().ok())
        {
            if best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, e.path()));
            }
        }
    }
    best.map(|(_, p)| p)
        .ok_or_else(|| anyhow!("no callgrind dump {prefix}* in {}", dir.display()))
}

/// `(total Ir, self costs (Ir, function, object))` of a callgrind dump. Parsed here rather than with
/// `callgrind_annotate`, which counts the inclusive cost of calls still active at the dump (`calls=0`) as the caller's
/// own.
fn annotate(file: &Path) -> anyhow::Result<(u64, Vec<SelfCost>)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    parse_callgrind(&text).ok_or_else(|| anyhow!("{} holds no callgrind totals", file.display()))
}

/// (Ir, function, object).
type SelfCost = (u64, String, String);

/// `(id) name` defines a compressed name, `(id)` refers to one.
fn name_of(spec: &str, table: &mut BTreeMap<String, String>) -> String {
    let spec = spec.trim();
    match spec.strip_prefix('(').and_then(|r| r.split_once(')')) {
        Some((id, rest)) => {
            let rest = rest.trim();
            if rest.is_empty() {
                table.get(id).cloned().unwrap_or_default()
            } else {
                table.insert(id.to_string(), rest.to_string());
                rest.to_string()
            }
        }
        None => spec.to_string(),
    }
}

fn parse_callgrind(text: &str) -> Option<(u64, Vec<SelfCost>)> {
    let mut fns: BTreeMap<String, String> = BTreeMap::new();
    let mut objs: BTreeMap<String, String> = BTreeMap::new();
    let mut self_cost: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut total = None;
    let mut object = String::new();
    let mut function = String::new();
    let mut after_call = false;
    for line in text.lines() {
        let first = line.bytes().next().unwrap_or(b' ');
        if first.is_ascii_digit() || first == b'+' || first == b'-' || first == b'*' {
            if after_call {
                after_call = false;
                continue;
            }
            let ir = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            *self_cost
                .entry((function.clone(), object.clone()))
                .or_insert(0) += ir;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            if let Some(v) = line
                .strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
            {
                total = total.or_else(|| v.trim().parse::<u64>().ok());
            }
            continue;
        };
        match key {
            "ob" => object = name_of(value, &mut objs),
            "cob" => {
                name_of(value, &mut objs);
            }
            "fn" => function = name_of(value, &mut fns),
            "cfn" => {
                name_of(value, &mut fns);
            }
            "calls" => after_call = true,
            _ => {}
        }
    }
    let total = total?;
    let mut rows: Vec<SelfCost> = self_cost
        .into_iter()
        .filter(|(_, ir)| *ir > 0)
        .map(|((f, o), ir)| (ir, f, o))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    Some((total, rows))
}

fn crate_of(function: &str, object: &str) -> String {
    let f = function
        .trim_start_matches(['<', '&', '*'])
        .trim_start_matches("dyn ")
        .trim_start_matches("mut ");
    match f.split_once("::") {
        Some((head, _)) if !head.is_empty() && !head.contains(' ') => {
            let head = head.split('<').next().unwrap_or(head);
            match head {
                "core" | "alloc" | "std" => "std (core, alloc)".to_string(),
                h => h.to_string(),
            }
        }
        _ => {
            let lib = object.rsplit('/').next().unwrap_or(object);
            let lib = lib.split(".so").next().unwrap_or(lib);
            if lib.starts_with("libc") {
                "libc (malloc, memcpy, syscalls)".to_string()
            } else if lib.is_empty() {
                "other".to_string()
            } else {
                format!("{lib} (symbols without a path)")
            }
        }
    }
}

fn short(function: &str) -> String {
    let f: String = function.chars().take(110).collect();
    if f.len() < function.len() {
        format!("{f}…")
    } else {
        f
    }
}

/// Runs the callgrind profile; returns the phases and the simulator (still running, under callgrind).
/// Removes the dumps of an earlier profile from `dir`.
fn clean(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_name().to_string_lossy().contains(".out") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Profiles the gateway under each workload and returns the phases and the (callgrind-wrapped) simulator, which the
/// heap profile reuses.
pub async fn run(setup: &Setup, dir: &Path) -> anyhow::Result<(Vec<Phase>, Sim)> {
    clean(dir)?;
    let plan = &setup.plan;
    let text_events = plan.stream_events.saturating_sub(6).max(1);
    let sim = Sim::start_wrapped(
        &callgrind(dir, "simulator"),
        &setup.simulator_bin,
        &[
            "--stream-events".into(),
            text_events.to_string(),
            "--event-delay-ms".into(),
            plan.stream_delay_ms.to_string(),
        ],
        Duration::from_secs(120),
    )?;
    let client = Client::new(ClientKind::Hyper)?;
    let mut phases = one_account(setup, dir, &sim, &client).await?;
    phases.push(fast_upstream(setup, dir, &sim, &client).await?);
    phases.push(many_accounts(setup, dir, &sim, &client).await?);
    Ok((phases, sim))
}

/// A gateway under callgrind in `gdir` with one API-key account, and the target of its Messages route (`upstream_pid`:
/// the process that answers it).
fn one_key_gateway(
    setup: &Setup,
    dir: &Path,
    gdir: &GatewayDir,
    upstream_pid: u32,
) -> anyhow::Result<(Gateway, Target)> {
    gdir.cli(
        &setup.gateway_bin,
        &[
            "accounts",
            "add-key",
            "--name",
            "bench",
            "sk-ant-api03-bench-profile",
        ],
    )?;
    let gw = Gateway::start_wrapped(&callgrind(dir, "gateway"), &setup.gateway_bin, gdir)?;
    let target = Target::new(
        &gw.base_url,
        ("x-api-key", CLIENT_KEY),
        Some(gw.proc.pid()),
        upstream_pid,
    )?;
    Ok((gw, target))
}

/// Small requests, streams and large requests through a gateway with one account.
async fn one_account(
    setup: &Setup,
    dir: &Path,
    sim: &Sim,
    client: &Client,
) -> anyhow::Result<Vec<Phase>> {
    let plan = &setup.plan;
    let text_events = plan.stream_events.saturating_sub(6).max(1);
    let gdir = GatewayDir::new(None, "profile", sim)?;
    let (gw, target) = one_key_gateway(setup, dir, &gdir, sim.proc.pid())?;
    let (n_small, n_large, n_streams) = if plan.smoke {
        (50, 4, 4)
    } else {
        (2000, 60, 30)
    };
    let small = body(plan.body_bytes, false, None);
    let large = body(plan.large_bytes, false, None);
    let sbody = body(
        plan.body_bytes,
        true,
        Some((text_events, plan.stream_delay_ms)),
    );
    // The OpenAI routes, with the bodies the features scenario sends (section 6 of BENCHMARKS.md).
    let bearer = format!("Bearer {CLIENT_KEY}");
    let route = |path: &str| {
        Target::at(
            &gw.base_url,
            path,
            ("authorization", &bearer),
            Some(gw.proc.pid()),
            sim.proc.pid(),
        )
    };
    let (chat, responses) = (route("/v1/chat/completions")?, route("/v1/responses")?);
    let chat_body = crate::features::chat_body(plan.body_bytes);
    let responses_body = crate::features::responses_body(plan.body_bytes);
    let n_routes = n_small / 2;
    // Warm up (lazy initialisation, connection pools, the store's statements) before anything is counted.
    run_closed(client, &target, &small, 50, 4).await?;
    run_closed(client, &chat, &chat_body, 20, 4).await?;
    run_closed(client, &responses, &responses_body, 20, 4).await?;
    let specs: [(&'static str, String, u64); 5] = [
        (
            "small",
            format!("non-stream, {} B requests, concurrency 8", plan.body_bytes),
            n_small,
        ),
        (
            "stream",
            format!("streams of {} events, 5 at a time", plan.stream_events),
            n_streams,
        ),
        (
            "large",
            format!(
                "non-stream, {} KB requests, concurrency 2",
                plan.large_bytes / 1024
            ),
            n_large,
        ),
        (
            "chat",
            format!(
                "`/v1/chat/completions`, non-stream, {} B requests, concurrency 8",
                plan.body_bytes
            ),
            n_routes,
        ),
        (
            "responses",
            format!(
                "`/v1/responses`, non-stream, {} B requests (stored), concurrency 8",
                plan.body_bytes
            ),
            n_routes,
        ),
    ];
    let mut phases = Vec::new();
    for (key, name, n) in specs {
        let phase = measure(dir, &gw, Some(sim), key, name, n, || async {
            match key {
                "small" => run_closed(client, &target, &small, n, 8).await,
                "large" => run_closed(client, &target, &large, n, 2).await,
                "chat" => run_closed(client, &chat, &chat_body, n, 8).await,
                "responses" => run_closed(client, &responses, &responses_body, n, 8).await,
                _ => run_streams(&target, &sbody, n, 5).await,
            }
        })
        .await?;
        phases.push(phase);
    }
    Ok(phases)
}

/// Small requests through a gateway in front of the fast upstream, as in the CPU and throughput scenarios: a short
/// answer with two headers (no rate-limit headers to read), so this is the profile of those scenarios' figures.
async fn fast_upstream(
    setup: &Setup,
    dir: &Path,
    sim: &Sim,
    client: &Client,
) -> anyhow::Result<Phase> {
    let plan = &setup.plan;
    let up = FastUpstream::start(
        plan.upstream_threads,
        plan.stream_events,
        plan.stream_delay_ms,
    )?;
    let gdir = GatewayDir::with_upstream(None, "profile-fast", &up.base_url, &sim.token_url())?;
    let (gw, target) = one_key_gateway(setup, dir, &gdir, up.proc.pid())?;
    let small = body(plan.body_bytes, false, None);
    let n = if plan.smoke { 50 } else { 2000 };
    run_closed(client, &target, &small, 50, 4).await?;
    measure(
        dir,
        &gw,
        None,
        "fast",
        format!(
            "non-stream, {} B requests, concurrency 8, fast upstream",
            plan.body_bytes
        ),
        n,
        || run_closed(client, &target, &small, n, 8),
    )
    .await
}

/// A gateway with the many accounts of the memory scenario: what choosing among them costs.
async fn many_accounts(
    setup: &Setup,
    dir: &Path,
    sim: &Sim,
    client: &Client,
) -> anyhow::Result<Phase> {
    let plan = &setup.plan;
    let small = body(plan.body_bytes, false, None);
    let adir = GatewayDir::new(
        crate::memory::fast_tmp().as_deref(),
        "profile-accounts",
        sim,
    )?;
    crate::memory::seed_api_keys(&adir.data_dir(), plan.accounts).await?;
    let agw = Gateway::start_wrapped(&callgrind(dir, "gateway"), &setup.gateway_bin, &adir)?;
    agw.wait_accounts(plan.accounts, Duration::from_secs(120))
        .await?;
    let atarget = Target::new(
        &agw.base_url,
        ("x-api-key", CLIENT_KEY),
        Some(agw.proc.pid()),
        sim.proc.pid(),
    )?;
    run_closed(client, &atarget, &small, 4, 2).await?;
    let n_accounts = if plan.smoke { 10 } else { 100 };
    measure(
        dir,
        &agw,
        Some(sim),
        "accounts",
        format!(
            "non-stream, {} B requests, {} accounts, concurrency 2",
            plan.body_bytes, plan.accounts
        ),
        n_accounts,
        || run_closed(client, &atarget, &small, n_accounts, 2),
    )
    .await
}

/// Zeroes both processes' counters, runs `work`, dumps them, and reads the dumps.
async fn measure<F, Fut>(
    dir: &Path,
    gw: &Gateway,
    sim: Option<&Sim>,
    key: &'static str,
    name: String,
    n: u64,
    work: F,
) -> anyhow::Result<Phase>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let pids: Vec<u32> = std::iter::once(gw.proc.pid())
        .chain(sim.map(|s| s.proc.pid()))
        .collect();
    for pid in &pids {
        control(&["--zero"], *pid)?;
    }
    let t0 = Instant::now();
    work().await?;
    let dump = format!("--dump={key}");
    for pid in &pids {
        control(&[&dump], *pid)?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (gateway_ir, rows) = annotate(&newest_dump(dir, "gateway", gw.proc.pid())?)?;
    let sim_ir = match sim {
        Some(sim) => Some(annotate(&newest_dump(dir, "simulator", sim.proc.pid())?)?.0),
        None => None,
    };
    let mut crates: BTreeMap<String, u64> = BTreeMap::new();
    for (ir, f, o) in &rows {
        *crates.entry(crate_of(f, o)).or_insert(0) += ir;
    }
    let mut crates: Vec<(String, u64)> = crates.into_iter().collect();
    crates.sort_by_key(|c| std::cmp::Reverse(c.1));
    let mut top: Vec<(u64, String)> = rows.into_iter().map(|(ir, f, _)| (ir, f)).collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.0));
    top.truncate(12);
    eprintln!(
        "[bench] profile {key}: {n} requests in {:.0} s, gateway {} Ir/request, simulator {} Ir/request",
        t0.elapsed().as_secs_f64(),
        gateway_ir / n.max(1),
        sim_ir.map_or("-".to_string(), |s| (s / n.max(1)).to_string())
    );
    Ok(Phase {
        key,
        name,
        requests: n,
        gateway_ir,
        sim_ir,
        top,
        crates,
    })
}

async fn run_closed(
    client: &Client,
    target: &Target,
    body: &bytes::Bytes,
    n: u64,
    concurrency: u64,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for per in shares(n, concurrency) {
        let (client, target, body) = (client.clone(), target.clone(), body.clone());
        tasks.spawn(async move {
            for _ in 0..per {
                let a = client.messages(&target, &body).await?;
                if a.status != 200 {
                    bail!("HTTP {}", a.status);
                }
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

async fn run_streams(target: &Target, body: &[u8], n: u64, concurrency: u64) -> anyhow::Result<()> {
    let request = stream::request_bytes(target, body);
    let mut tasks = tokio::task::JoinSet::new();
    for per in shares(n, concurrency) {
        let (request, addr) = (request.clone(), target.addr);
        tasks.spawn(async move {
            for _ in 0..per {
                let o = stream::one_stream(addr, request.clone(), Instant::now()).await?;
                if o.status != 200 || !o.saw_stop {
                    bail!("stream: HTTP {}, {} events", o.status, o.events);
                }
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// `n` split over `workers` as evenly as possible (no empty shares).
fn shares(n: u64, workers: u64) -> Vec<u64> {
    let w = workers.clamp(1, n.max(1));
    (0..w)
        .map(|i| n / w + u64::from(i < n % w))
        .filter(|s| *s > 0)
        .collect()
}

fn ir(n: u64) -> String {
    if n >= 10_000_000 {
        format!("{:.1} M", n as f64 / 1e6)
    } else {
        format!("{:.0} k", n as f64 / 1e3)
    }
}

/// The profile as markdown.
pub fn render(phases: &[Phase]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Profile (callgrind)\n");
    let _ = writeln!(
        o,
        "The release gateway and simulator run under `valgrind --tool=callgrind`; counters are zeroed before each \
         workload and dumped after it (`callgrind_control`). Ir = instructions executed, including the gateway's \
         background work during the interval (store polling every second).\n"
    );
    let _ = writeln!(o, "| workload | requests | gateway Ir / request | simulator Ir / request | gateway ÷ simulator |");
    let _ = writeln!(o, "|---|---|---|---|---|");
    for p in phases {
        let (sim, ratio) = match p.sim_ir {
            Some(s) => (
                ir(p.sim_per_request().unwrap_or(0)),
                format!("{:.2}×", p.gateway_ir as f64 / s.max(1) as f64),
            ),
            None => ("— (fast upstream)".to_string(), "—".to_string()),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {sim} | {ratio} |",
            p.name,
            p.requests,
            ir(p.gateway_per_request()),
        );
    }
    let _ = writeln!(o);
    for p in phases {
        let _ = writeln!(o, "**Gateway, {}: self cost by crate**\n", p.name);
        let _ = writeln!(o, "| crate | share | Ir / request |");
        let _ = writeln!(o, "|---|---|---|");
        for (c, v) in p.crates.iter().take(10) {
            let _ = writeln!(
                o,
                "| {c} | {:.1} % | {} |",
                *v as f64 * 100.0 / p.gateway_ir.max(1) as f64,
                ir(v / p.requests.max(1))
            );
        }
        let _ = writeln!(o, "\n**Gateway, {}: top functions by self cost**\n", p.name);
        let _ = writeln!(o, "| share | function |");
        let _ = writeln!(o, "|---|---|");
        for (v, f) in &p.top {
            let _ = writeln!(
                o,
                "| {:.1} % | `{}` |",
                *v as f64 * 100.0 / p.gateway_ir.max(1) as f64,
                short(f).replace('|', "\\|").replace('`', "'")
            );
        }
        let _ = writeln!(o);
    }
    o
}

/// One line per phase for the misses list: instructions per request and the three largest crates.
pub fn summary(p: &Phase) -> String {
    let crates: Vec<String> = p
        .crates
        .iter()
        .take(4)
        .map(|(c, v)| {
            format!(
                "{c} {:.0} %",
                *v as f64 * 100.0 / p.gateway_ir.max(1) as f64
            )
        })
        .collect();
    let top: Vec<String> = p
        .top
        .iter()
        .take(3)
        .map(|(v, f)| {
            format!(
                "`{}` {:.1} %",
                short(f).replace('`', "'"),
                *v as f64 * 100.0 / p.gateway_ir.max(1) as f64
            )
        })
        .collect();
    let scale = match p.sim_ir {
        Some(s) => format!(
            ", {:.2}× the simulator's {}",
            p.gateway_ir as f64 / s.max(1) as f64,
            ir(p.sim_per_request().unwrap_or(0))
        ),
        None => String::new(),
    };
    format!(
        "under callgrind ({}) the gateway executes {} instructions per request{scale}; its self cost goes to {}; \
         largest functions: {}",
        p.name,
        ir(p.gateway_per_request()),
        crates.join(", "),
        top.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn massif_peak_and_last() {
        let text = "snapshot=0\ntime=0\nmem_heap_B=0\nmem_heap_extra_B=0\nsnapshot=1\ntime=10\nmem_heap_B=100\n\
                    mem_heap_extra_B=20\nsnapshot=2\ntime=20\nmem_heap_B=50\nmem_heap_extra_B=5\nsnapshot=3\ntime=30\n\
                    mem_heap_B=1\nmem_heap_extra_B=0\n";
        assert_eq!(parse_massif(text), Some((120, 1)));
        assert_eq!(parse_massif(""), None);
    }

    #[test]
    fn self_costs_skip_call_costs() {
        let text = "events: Ir\nsummary: 1000\nob=(1) /bin/x\nfl=(1) a.rs\nfn=(1) x::main\n3 10\ncfn=(2) x::work\n\
                    calls=0 5\n4 900\nfn=(2)\n5 880\n+1 10\nob=(2) /usr/lib/libc.so.6\nfn=(3) memcpy\n1 100\n";
        let (total, rows) = parse_callgrind(text).unwrap_or_default();
        assert_eq!(total, 1000);
        assert_eq!(
            rows,
            vec![
                (890, "x::work".to_string(), "/bin/x".to_string()),
                (100, "memcpy".to_string(), "/usr/lib/libc.so.6".to_string()),
                (10, "x::main".to_string(), "/bin/x".to_string()),
            ]
        );
        assert_eq!(
            crate_of("memcpy", "/usr/lib/libc.so.6"),
            "libc (malloc, memcpy, syscalls)"
        );
        assert_eq!(crate_of("<hyper::proto::X as core::Y>::poll", ""), "hyper");
        assert_eq!(
            crate_of("core::ptr::drop_in_place<a::B>", ""),
            "std (core, alloc)"
        );
        assert_eq!(shares(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(shares(4, 5), vec![1, 1, 1, 1]);
        assert_eq!(shares(0, 5), Vec::<u64>::new());
    }
}
