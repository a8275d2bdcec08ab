//! `claude-gateway-bench`: measures what the gateway adds to latency, CPU per request, throughput, streaming, large
//! bodies, memory, pool scale and a refresh stampede, side by side with the direct path (client → a fast upstream),
//! nginx (the minimal-proxy floor) and a peer (LiteLLM), and writes BENCHMARKS.md. `bench/run.sh` builds everything in
//! release mode, installs the peer and runs this. With `--serve-upstream ADDR` it is the fast upstream itself.
//!
//! It prints its summary on stdout; progress goes to stderr.
#![allow(clippy::print_stdout)]

mod client;
mod env;
mod features;
mod fmt;
mod hyperproxy;
mod load;
mod memory;
mod nginx;
mod plan;
mod pool;
mod procs;
mod profile;
mod report;
mod results;
mod runner;
mod scenarios;
mod stampede;
mod stats;
mod stream;
mod targets;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Parser;

use crate::client::ClientKind;
use crate::plan::{Plan, Setup};

#[derive(Debug, Parser)]
#[command(
    name = "claude-gateway-bench",
    about = "Benchmarks the gateway against the direct path and LiteLLM; writes BENCHMARKS.md"
)]
struct Args {
    /// Run every scenario for a moment at tiny rates (checks that the suite runs and reports; measures nothing).
    #[arg(long)]
    smoke: bool,
    /// The `claude-gateway` binary (default: next to this one).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// The `anthropic-simulator` binary (default: next to this one).
    #[arg(long)]
    simulator_bin: Option<PathBuf>,
    /// The `litellm` executable of the peer's virtual environment; without it the peer is not measured.
    #[arg(long)]
    litellm: Option<PathBuf>,
    /// Why the peer is absent (e.g. its installation failed), written into the report.
    #[arg(long)]
    litellm_note: Option<String>,
    /// Where to write the report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// The command line to print in the report (default: this program's arguments).
    #[arg(long)]
    command: Option<String>,
    /// How the binaries were built, for the report.
    #[arg(long, default_value = "release (`cargo build --release --workspace`)")]
    build: String,
    /// Profile the gateway under callgrind after the scenarios, keeping the dumps in this directory.
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Only the profile, no scenarios (while working on the gateway's hot path).
    #[arg(long, requires = "profile")]
    profile_only: bool,
    /// Why there is no profile, written into the report.
    #[arg(long)]
    profile_note: Option<String>,
    /// nginx's binary (default: /usr/sbin/nginx when it exists); without one the nginx rows are skipped.
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// Run only these sections (comma-separated: latency, throughput, cpu, streaming, large, keys, routes, pool, memory,
    /// stampede), e.g. `--only cpu,throughput` while working on the hot path.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// The load client for non-stream requests.
    #[arg(long, value_enum, default_value = "hyper")]
    client: ClientKind,
    /// Run only the fast upstream (a minimal hyper responder, see `upstream.rs`) on this address, until killed.
    #[arg(long, value_name = "ADDR")]
    serve_upstream: Option<std::net::SocketAddr>,
    /// Run only the minimal hyper reverse proxy (see `hyperproxy.rs`) on this address, forwarding to --proxy-to.
    #[arg(long, value_name = "ADDR", requires = "proxy_to")]
    serve_proxy: Option<std::net::SocketAddr>,
    /// The upstream of --serve-proxy (`http://host:port`).
    #[arg(long, value_name = "URL")]
    proxy_to: Option<String>,
    /// The fast upstream's worker threads (0: a current-thread runtime).
    #[arg(long, default_value_t = 0)]
    upstream_threads: usize,
    /// The fast upstream's SSE events per stream (frame included) when a request does not say.
    #[arg(long, default_value_t = 200)]
    upstream_stream_events: usize,
    /// The fast upstream's delay between SSE events when a request does not say.
    #[arg(long, default_value_t = 5)]
    upstream_event_delay_ms: u64,
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("no directory around {}", exe.display()))?;
    Ok(dir.join(name))
}

/// The absolute path of an existing file (children run in other directories).
fn existing(p: PathBuf, what: &str) -> anyhow::Result<PathBuf> {
    if p.is_file() {
        Ok(std::fs::canonicalize(&p).unwrap_or(p))
    } else {
        Err(anyhow!(
            "{what} not found at {} (build the workspace, or pass its path)",
            p.display()
        ))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let (Some(listen), Some(to)) = (args.serve_proxy, args.proxy_to.clone()) {
        return match hyperproxy::serve(listen, to) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(listen) = args.serve_upstream {
        let config = upstream::UpstreamConfig {
            threads: args.upstream_threads,
            stream_events: args.upstream_stream_events,
            event_delay_ms: args.upstream_event_delay_ms,
        };
        return match upstream::serve(listen, config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The plan for this run: full or smoke, with the command line's overrides.
fn plan(args: &Args) -> anyhow::Result<Plan> {
    let mut plan = if args.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    plan.upstream_threads = args.upstream_threads;
    if let Some(only) = &args.only {
        if let Some(bad) = only.iter().find(|s| !plan::SECTIONS.contains(&s.as_str())) {
            return Err(anyhow!(
                "--only: unknown section {bad:?} (one of {})",
                plan::SECTIONS.join(", ")
            ));
        }
        plan.only = Some(only.clone());
    }
    Ok(plan)
}

fn setup(args: &Args, plan: Plan) -> anyhow::Result<Setup> {
    Ok(Setup {
        plan,
        gateway_bin: existing(
            args.gateway_bin
                .clone()
                .map_or_else(|| sibling("claude-gateway"), Ok)?,
            "claude-gateway",
        )?,
        simulator_bin: existing(
            args.simulator_bin
                .clone()
                .map_or_else(|| sibling("anthropic-simulator"), Ok)?,
            "anthropic-simulator",
        )?,
        litellm: match &args.litellm {
            Some(p) => Some(existing(p.clone(), "litellm")?),
            None => None,
        },
        nginx: nginx::find(args.nginx.as_deref()),
        client: args.client,
    })
}

/// The callgrind and massif profiles, when asked for, into `results`.
async fn profiles(args: &Args, setup: &Setup, results: &mut results::Results) {
    let Some(dir) = &args.profile else {
        results.profile_note = Some(
            args.profile_note
                .clone()
                .unwrap_or_else(|| "not requested (pass --profile DIR)".into()),
        );
        return;
    };
    eprintln!(
        "[bench] profiling under callgrind (dumps in {})",
        dir.display()
    );
    match profile::run(setup, dir).await {
        Ok((phases, sim)) => {
            results.profile = phases;
            match profile::heap(setup, dir, &sim).await {
                Ok(h) => results.heap = Some(h),
                Err(e) => eprintln!("[bench] heap profile failed: {e:#}"),
            }
        }
        Err(e) => {
            eprintln!("[bench] profile failed: {e:#}");
            results.profile_note = Some(format!("the callgrind profile failed: {e:#}"));
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    let setup = setup(&args, plan.clone())?;
    let started = std::time::Instant::now();
    let mut results = if args.profile_only {
        results::Results::default()
    } else {
        scenarios::run(&setup).await?
    };
    if args.litellm.is_none() {
        if let Some(note) = &args.litellm_note {
            results.litellm_absent = note.clone();
        }
    }
    profiles(&args, &setup, &mut results).await;
    let ctx = report::Context {
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        command: args.command.clone().unwrap_or_else(|| {
            std::env::args()
                .map(|a| shell_quote(&a))
                .collect::<Vec<_>>()
                .join(" ")
        }),
        machine: report::machine(),
        build: args.build.clone(),
    };
    let text = report::render(&results, &plan, &ctx);
    std::fs::write(&args.out, &text).with_context(|| format!("writing {}", args.out.display()))?;
    let misses = targets::misses(&results, &plan);
    println!(
        "wrote {} in {:.0} s: {} target(s) missed",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        misses.len()
    );
    for m in misses {
        println!("  miss: {m}");
    }
    Ok(())
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
