//! `anthropic-simulator`: run the simulator as a standalone server (benchmarks, manual tests).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use simulator::{SimConfig, Simulator};

#[derive(Parser, Debug)]
#[command(name = "anthropic-simulator", about = "An Anthropic API simulator")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Accept any credential.
    #[arg(long)]
    accept_any_key: bool,
    /// Delay before answering messages, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Delay between SSE events, in milliseconds.
    #[arg(long, default_value_t = 0)]
    event_delay_ms: u64,
    /// Number of text delta events in a stream.
    #[arg(long, default_value_t = 8)]
    stream_events: usize,
    /// Delay of the OAuth token endpoint, in milliseconds.
    #[arg(long, default_value_t = 0)]
    token_latency_ms: u64,
    /// An API key to accept (repeatable).
    #[arg(long = "api-key")]
    api_keys: Vec<String>,
    /// Record requests in memory (off by default: nobody can read them from outside).
    #[arg(long)]
    record: bool,
    /// Make TOKEN the current refresh token of a new OAuth account the token endpoint knows (repeatable).
    #[arg(long = "refresh-token")]
    refresh_tokens: Vec<String>,
    /// Also serve `GET /_sim/stats` (token-endpoint calls, in-flight requests, disconnects) as JSON on this separate
    /// address, away from the Anthropic API paths; its URL is printed as `stats on http://…`.
    #[arg(long)]
    stats_listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = SimConfig {
        accept_any_key: args.accept_any_key,
        stream_events: args.stream_events,
        event_delay: Duration::from_millis(args.event_delay_ms),
        latency: Duration::from_millis(args.latency_ms),
        token_latency: Duration::from_millis(args.token_latency_ms),
        ..SimConfig::default()
    };
    let sim = Arc::new(Simulator::bind(args.listen, cfg).await?);
    sim.set_recording(args.record);
    for key in &args.api_keys {
        sim.add_api_key(key);
    }
    for token in &args.refresh_tokens {
        sim.add_refresh_token(token);
    }
    let stats = match args.stats_listen {
        Some(addr) => Some(serve_stats(addr, sim.clone()).await?),
        None => None,
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", sim.base_url())?;
        if let Some(addr) = stats {
            writeln!(out, "stats on http://{addr}/_sim/stats")?;
        }
        out.flush()?;
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// Serves the simulator's counters on their own listener (benchmarks read the token-endpoint call count from it).
async fn serve_stats(addr: SocketAddr, sim: Arc<Simulator>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new().route(
        "/_sim/stats",
        get(move || {
            let sim = sim.clone();
            async move {
                Json(serde_json::json!({
                    "token_calls": sim.token_call_count(),
                    "in_flight": sim.in_flight(),
                    "disconnects": sim.disconnects(),
                }))
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("stats server ended: {e}");
        }
    });
    Ok(local)
}
