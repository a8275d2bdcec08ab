//! `anthropic-simulator`: run the simulator as a standalone server (benchmarks, manual tests).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

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
    let sim = Simulator::bind(args.listen, cfg).await?;
    sim.set_recording(args.record);
    for key in &args.api_keys {
        sim.add_api_key(key);
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", sim.base_url())?;
        out.flush()?;
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
