//! Pool scale (issue 16): `accounts import` of N credential files, start-up to ready with them, and what choosing
//! among N accounts adds per request, against a gateway with one imported account, both in front of the fast upstream
//! (direct, one account and N accounts at once, paired: see `crate::load::OpenLoop::paired`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::{Client, Target};
use crate::load::LoadResult;
use crate::plan::{body, say, Plan, Setup, UPSTREAM_KEY};
use crate::procs::{FastUpstream, Gateway, GatewayDir, TempDir, CLIENT_KEY};
use crate::runner;

#[derive(Debug, Clone, Default)]
pub struct Pool {
    pub accounts: usize,
    pub rate: f64,
    /// `accounts import` of 1 and of N files, seconds.
    pub import_one_secs: f64,
    pub import_secs: f64,
    /// From `serve` to `/readyz` answering 200, seconds, with 1 and N accounts.
    pub startup_one_secs: f64,
    pub startup_secs: f64,
    pub direct: LoadResult,
    pub one: LoadResult,
    pub many: LoadResult,
}

/// Writes `n` CLIProxyAPI credential files (OAuth, expiring in 2099) into `dir`.
fn write_files(dir: &Path, n: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..n {
        let v = serde_json::json!({
            "type": "claude",
            "access_token": format!("sk-ant-oat01-bench-{i}"),
            "refresh_token": format!("sk-ant-ort01-bench-{i}"),
            "email": format!("bench{i}@example.com"),
            "account_uuid": format!("00000000-0000-4000-8000-{i:012}"),
            "expired": "2099-01-01T00:00:00Z",
        });
        std::fs::write(dir.join(format!("claude-{i}.json")), v.to_string())?;
    }
    Ok(())
}

/// A gateway whose store got `n` accounts by `accounts import`: (dir, gateway, import seconds, start-up seconds).
async fn imported(
    setup: &Setup,
    up: &FastUpstream,
    token_url: &str,
    n: usize,
) -> anyhow::Result<(GatewayDir, Gateway, f64, f64)> {
    let files = TempDir::new(None, "pool-files")?;
    write_files(files.path(), n)?;
    let dir = GatewayDir::with_upstream(None, &format!("pool-{n}"), &up.base_url, token_url)?;
    let t0 = Instant::now();
    let arg = files.path().to_string_lossy().to_string();
    dir.cli(&setup.gateway_bin, &["accounts", "import", &arg])?;
    let import = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let gw = Gateway::start(&setup.gateway_bin, &dir)?;
    ready(&gw).await?;
    let startup = t0.elapsed().as_secs_f64();
    gw.wait_accounts(n, Duration::from_secs(30)).await?;
    Ok((dir, gw, import, startup))
}

async fn ready(gw: &Gateway) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ok = http
            .get(format!("{}/readyz", gw.base_url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the gateway never became ready")
}

/// The pool scenario on the fast upstream `up` (the simulator's token endpoint is never called: tokens expire in
/// 2099).
pub async fn run(
    setup: &Setup,
    client: &Client,
    up: &FastUpstream,
    token_url: &str,
) -> anyhow::Result<Pool> {
    let plan: &Plan = &setup.plan;
    let (_d1, one, import_one_secs, startup_one_secs) = imported(setup, up, token_url, 1).await?;
    let (_dn, many, import_secs, startup_secs) =
        imported(setup, up, token_url, plan.accounts).await?;
    let up_pid = up.proc.pid();
    let paths = [
        Target::new(&up.base_url, ("x-api-key", UPSTREAM_KEY), None, up_pid)?,
        Target::new(
            &one.base_url,
            ("x-api-key", CLIENT_KEY),
            Some(one.proc.pid()),
            up_pid,
        )?,
        Target::new(
            &many.base_url,
            ("x-api-key", CLIENT_KEY),
            Some(many.proc.pid()),
            up_pid,
        )?,
    ];
    let small = body(plan.body_bytes, false, None);
    let (rate, duration) = (plan.accounts_rate, plan.pool_duration);
    let mut v = runner::paired(client, plan, &paths, rate, &small, duration).await;
    let (many_r, one_r, direct) = (
        v.pop().unwrap_or_default(),
        v.pop().unwrap_or_default(),
        v.pop().unwrap_or_default(),
    );
    say(format!(
        "pool: import of {} files {import_secs:.2} s, start-up {startup_secs:.2} s; p99 direct {} one {} many {} µs",
        plan.accounts, direct.latency.p99, one_r.latency.p99, many_r.latency.p99
    ));
    Ok(Pool {
        accounts: plan.accounts,
        rate: plan.accounts_rate,
        import_one_secs,
        import_secs,
        startup_one_secs,
        startup_secs,
        direct,
        one: one_r,
        many: many_r,
    })
}
