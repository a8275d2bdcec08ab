//! `serve`: the listener, the background loops and graceful shutdown.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::store::SharedStore;

pub(super) async fn serve(
    config: Config,
    origin: String,
    store: SharedStore,
) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .ok();
    let listen = config.listen;
    // Rotations a previous process obtained but could not store are in the journal; `sync` replays them first.
    let journal = crate::refresh::Journal::open(&config.data_dir).with_context(|| {
        format!(
            "opening the rotation journal in {}",
            config.data_dir.display()
        )
    })?;
    let state = crate::state::build_state(
        config,
        store.clone(),
        Arc::new(SystemClock),
        metrics,
        journal,
    )?;
    state.pool().sync().await.context("loading accounts")?;
    state.sync_keys().await.context("loading client keys")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // Started before saying "listening": the first connection accepted has its worker.
    let workers = match state.config.listener.worker_count() {
        0 => None,
        n => Some(crate::listener::Workers::start(n).context("starting the connection workers")?),
    };
    let accounts = state.pool().entries().len();
    tracing::info!(config = %origin, store = %store.describe(), accounts, "listening on http://{addr}");
    if state.keys().is_open() {
        tracing::warn!("no client_keys configured: any local client may use the gateway (allowed on loopback only)");
    }
    if accounts == 0 {
        tracing::warn!(
            "no upstream accounts yet. Add one with:\n  claude-gateway accounts add-key --name NAME sk-ant-api03-…\n  claude-gateway login\n  claude-gateway accounts import ~/.claude/.credentials.json"
        );
    }
    let shutdown = CancellationToken::new();
    #[allow(clippy::disallowed_methods)] // awaited below at shutdown
    let background = tokio::spawn(crate::server::background(state.clone(), shutdown.clone()));
    let engine = state.pool().engine().clone();
    let dashboard = match state.config.dashboard_listen {
        Some(at) => Some(dashboard_listener(at, state.clone(), shutdown.clone()).await?),
        None => None,
    };
    let limits = crate::listener::ListenerSettings::from(&state.config.listener);
    let app = crate::dispatch::App::new(crate::server::router(state.clone()), Some(state));
    crate::listener::serve(listener, app, limits, workers.as_ref(), async {
        wait_for_signal().await;
        tracing::info!("shutting down");
    })
    .await;
    // Every connection has drained: only now does the background loop stop and write the last usage batch, so the
    // usage of streams that were still running at the signal is kept.
    shutdown.cancel();
    if let Some(d) = dashboard {
        let _ = d.await;
    }
    let _ = background.await;
    // A refresh in flight must finish (and persist its rotation) before the process exits.
    engine.tasks().close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), engine.tasks().wait()).await;
    // Only now: the workers ran the connections and the flights their requests started.
    drop(workers);
    Ok(())
}

/// Serves the dashboard and the admin API on their own address until `shutdown`.
async fn dashboard_listener(
    at: std::net::SocketAddr,
    state: crate::state::AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("binding dashboard_listen {at}"))?;
    let addr = listener.local_addr()?;
    tracing::info!("dashboard on http://{addr}/dashboard");
    let limits = crate::listener::ListenerSettings::from(&state.config.listener);
    let app = crate::dispatch::App::new(crate::server::dashboard_router(state), None);
    #[allow(clippy::disallowed_methods)] // awaited at shutdown
    Ok(tokio::spawn(crate::listener::serve(
        listener,
        app,
        limits,
        None,
        async move { shutdown.cancelled().await },
    )))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
