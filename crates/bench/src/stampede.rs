//! The refresh stampede: a burst of simultaneous requests on an expired OAuth account must cause exactly one call to
//! the token endpoint (the simulator's, slowed down), next to the same burst on the direct path and on an API key.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use claude_gateway::account::{AccountKind, Credential, NewAccount};
use claude_gateway::store::sqlite::SqliteStore;
use claude_gateway::store::Store;

use crate::client::{Client, Target};
use crate::load::{self, LoadResult};
use crate::plan::{body, say, Setup, UPSTREAM_KEY};
use crate::procs::{Gateway, GatewayDir, Sim, CLIENT_KEY};

const REFRESH_TOKEN: &str = "sk-ant-ort01-bench-stampede-refresh-token";

#[derive(Debug, Clone, Default)]
pub struct Stampede {
    pub n: usize,
    pub token_calls: u64,
    pub refresh_attempts_metric: f64,
    /// One token-endpoint call made directly (the refresh itself).
    pub token_call_us: u64,
    pub direct_burst: LoadResult,
    pub gateway_burst: LoadResult,
    pub stampede: LoadResult,
}

/// The refresh itself: one token-endpoint call (an unknown refresh token: same delay, no rotation).
async fn token_call(sim: &Sim) -> anyhow::Result<u64> {
    let t0 = Instant::now();
    let _ = reqwest::Client::new()
        .post(sim.token_url())
        .json(&serde_json::json!({"grant_type": "refresh_token", "refresh_token": "sk-ant-ort01-unknown", "client_id": "bench"}))
        .send()
        .await?
        .bytes()
        .await?;
    Ok(load::micros(t0.elapsed()))
}

/// Disables the API key and adds an OAuth account whose access token expired an hour ago to the running gateway's
/// store (so no start-up scan refreshes it first); waits until the gateway shows both.
async fn expire(setup: &Setup, dir: &GatewayDir, gw: &Gateway) -> anyhow::Result<()> {
    dir.cli(&setup.gateway_bin, &["accounts", "disable", "warm-key"])?;
    let store = SqliteStore::open(&dir.data_dir())
        .await
        .map_err(|e| anyhow!("opening the store: {e}"))?;
    store
        .insert_account(NewAccount {
            name: "expired-oauth".into(),
            kind: AccountKind::Oauth,
            credential: Credential {
                secret: "sk-ant-oat01-bench-expired-access-token".into(),
                refresh_token: Some(REFRESH_TOKEN.into()),
                expires_at: Some(chrono::Utc::now() - chrono::Duration::hours(1)),
            },
            identity: Default::default(),
            priority: 0,
            weight: 1,
            disabled: false,
        })
        .await
        .map_err(|e| anyhow!("seeding the OAuth account: {e}"))?;
    let state =
        |a: &serde_json::Value, k: &str| a.get(k).and_then(|v| v.as_str()).map(str::to_string);
    gw.wait_until(
        "the API key disabled and the OAuth account loaded",
        Duration::from_secs(10),
        |accounts| {
            accounts.len() == 2
                && accounts
                    .iter()
                    .any(|a| state(a, "kind").as_deref() == Some("oauth"))
                && accounts
                    .iter()
                    .any(|a| state(a, "state").as_deref() == Some("disabled"))
        },
    )
    .await
}

/// The direct burst, the gateway's burst on an API key, then the stampede on the same warm gateway.
pub async fn run(setup: &Setup, client: &Client) -> anyhow::Result<Stampede> {
    let plan = &setup.plan;
    let n = plan.stampede;
    let sim = Sim::start(
        &setup.simulator_bin,
        &[
            "--token-latency-ms".into(),
            plan.token_latency_ms.to_string(),
            "--refresh-token".into(),
            REFRESH_TOKEN.into(),
        ],
    )?;
    let small = body(plan.body_bytes, false, None);
    let mut s = Stampede {
        n,
        token_call_us: token_call(&sim).await?,
        ..Stampede::default()
    };
    // The same burst on the direct path (connections opened beforehand).
    let direct = Target::new(
        &sim.base_url,
        ("x-api-key", UPSTREAM_KEY),
        None,
        sim.proc.pid(),
    )?;
    load::prewarm(client, &format!("{}/v1/models", sim.base_url), n).await;
    s.direct_burst = load::burst(client, &direct, &small, n, plan.timeout).await;
    // Through the gateway on an API key: one burst opens the connections on both sides, the next one is measured.
    let dir = GatewayDir::new(None, "stampede", &sim)?;
    dir.cli(
        &setup.gateway_bin,
        &["accounts", "add-key", "--name", "warm-key", UPSTREAM_KEY],
    )?;
    let gw = Gateway::start(&setup.gateway_bin, &dir)?;
    let target = Target::new(
        &gw.base_url,
        ("x-api-key", CLIENT_KEY),
        Some(gw.proc.pid()),
        sim.proc.pid(),
    )?;
    load::prewarm(client, &format!("{}/healthz", gw.base_url), n).await;
    let _ = load::burst(client, &target, &small, n, plan.timeout).await;
    s.gateway_burst = load::burst(client, &target, &small, n, plan.timeout).await;
    // The stampede.
    expire(setup, &dir, &gw).await?;
    load::prewarm(client, &format!("{}/healthz", gw.base_url), n).await;
    let calls_before = sim.token_calls().await?;
    s.stampede = load::burst(client, &target, &small, n, plan.timeout).await;
    s.token_calls = sim.token_calls().await? - calls_before;
    s.refresh_attempts_metric = gw
        .metric("gateway_refresh_attempts_total")
        .await
        .context("reading the gateway's metrics")?;
    say(format!(
        "stampede: {} requests, {} token calls, p50 {} µs, p99 {} µs, errors {}",
        n,
        s.token_calls,
        s.stampede.latency.p50,
        s.stampede.latency.p99,
        s.stampede.errors.describe()
    ));
    Ok(s)
}
