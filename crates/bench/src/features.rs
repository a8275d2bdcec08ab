//! What the newer features cost on the request path (issues 12 and 16): a managed key with every limit set against a
//! static config key, with an A/A run of the static key as the noise floor; and the OpenAI Chat Completions and
//! Responses routes against the Messages route. All on the main gateway, in front of the fast upstream.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::Bytes;

use crate::client::{Client, Target};
use crate::load::LoadResult;
use crate::plan::{Plan, MODEL, UPSTREAM_KEY};
use crate::procs::{Gateway, GatewayDir, ADMIN_KEY, CLIENT_KEY};
use crate::runner::{self, Shape};

/// The managed key's name and limits (every limit set, none reached by the scenario's load).
pub const KEY_NAME: &str = "bench-managed";
pub const KEY_LIMITS: &[&str] = &[
    "--models",
    "claude-*",
    "--rpm",
    "100000000",
    "--concurrency",
    "100000",
    "--tokens-per-day",
    "1000000000000",
    "--usd-per-month",
    "1000000",
];

/// A: the static config key, B: the managed key, A2: the static key again (A/A: the noise floor).
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub rate: f64,
    pub a: LoadResult,
    pub b: LoadResult,
    pub a2: LoadResult,
    /// Requests the store's usage rollups count for the managed key after the run (None: the query failed).
    pub recorded: Option<u64>,
}

/// Messages, Chat Completions and Responses requests on the same gateway, and the direct path for reference.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub rate: f64,
    pub direct: LoadResult,
    pub messages: LoadResult,
    pub chat: LoadResult,
    pub responses: LoadResult,
}

/// Creates the managed key on the running gateway and waits until it is accepted (the gateway reloads keys within a
/// second); returns the key.
async fn managed_key(
    bin: &Path,
    dir: &GatewayDir,
    gw: &Gateway,
    client: &Client,
    small: &Bytes,
) -> anyhow::Result<String> {
    let mut args = vec!["keys", "create", "--name", KEY_NAME];
    args.extend_from_slice(KEY_LIMITS);
    let out = dir.cli_output(bin, &args)?;
    let key = out
        .lines()
        .last()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| anyhow!("`keys create` printed no key"))?
        .to_string();
    let target = key_target(gw, &key)?;
    for _ in 0..100 {
        if client
            .messages(&target, small)
            .await
            .is_ok_and(|a| a.status == 200)
        {
            return Ok(key);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the gateway never accepted the managed key")
}

fn key_target(gw: &Gateway, key: &str) -> anyhow::Result<Target> {
    Target::new(&gw.base_url, ("x-api-key", key), Some(gw.proc.pid()), 0)
}

/// The keys scenario: A, B and A2 in alternating rounds at `plan.keys_rate`, open loop.
pub async fn keys(
    bin: &Path,
    dir: &GatewayDir,
    gw: &Gateway,
    client: &Client,
    plan: &Plan,
    static_key: &Target,
    small: &Bytes,
) -> anyhow::Result<Keys> {
    let key = managed_key(bin, dir, gw, client, small).await?;
    let mut managed = key_target(gw, &key)?;
    managed.sim_pid = static_key.sim_pid;
    let paths = [static_key.clone(), managed, static_key.clone()];
    let s = runner::Scenario {
        paths: &paths,
        shape: Shape::Open(plan.keys_rate),
        body: small,
        duration: plan.keys_duration,
        rounds: plan.keys_rounds,
    };
    let mut v = runner::measure(client, plan, &s).await;
    // Usage is written once a second, the rollups with it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let recorded = recorded(gw).await.ok();
    let a2 = v.pop().unwrap_or_default();
    let b = v.pop().unwrap_or_default();
    let a = v.pop().unwrap_or_default();
    crate::plan::say(format!(
        "keys at {} req/s: p99 static {} µs, managed {} µs, static again {} µs; the store counts {recorded:?} requests \
         of the managed key",
        plan.keys_rate, a.latency.p99, b.latency.p99, a2.latency.p99
    ));
    Ok(Keys {
        rate: plan.keys_rate,
        a,
        b,
        a2,
        recorded,
    })
}

/// Requests of the managed key in the usage rollups.
async fn recorded(gw: &Gateway) -> anyhow::Result<u64> {
    let v: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/admin/usage?group_by=key", gw.base_url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let rows = v
        .get("rows")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(rows
        .iter()
        .filter(|r| r.get("key").and_then(serde_json::Value::as_str) == Some(KEY_NAME))
        .filter_map(|r| r.get("requests").and_then(serde_json::Value::as_u64))
        .sum())
}

/// A Chat Completions body (`messages` with a string content, as OpenAI clients send it) of about `size` bytes.
pub fn chat_body(size: usize) -> Bytes {
    crate::plan::body(size, false, None)
}

/// A Responses body (`input` as a string) of about `size` bytes.
pub fn responses_body(size: usize) -> Bytes {
    let text: String = "the quick brown fox jumps over the lazy dog "
        .chars()
        .cycle()
        .take(size.saturating_sub(80))
        .collect();
    Bytes::from(format!(
        r#"{{"model":"{MODEL}","max_output_tokens":256,"stream":false,"input":"{text}"}}"#
    ))
}

/// The routes scenario: direct, Messages, Chat Completions and Responses in alternating rounds at
/// `plan.routes_rate`.
pub async fn routes(
    client: &Client,
    plan: &Plan,
    gw: &Gateway,
    direct_url: &str,
    upstream_pid: u32,
) -> anyhow::Result<Routes> {
    let pid = Some(gw.proc.pid());
    let bearer = format!("Bearer {CLIENT_KEY}");
    let paths = [
        Target::new(direct_url, ("x-api-key", UPSTREAM_KEY), None, upstream_pid)?,
        Target::new(&gw.base_url, ("x-api-key", CLIENT_KEY), pid, upstream_pid)?,
        Target::at(
            &gw.base_url,
            "/v1/chat/completions",
            ("authorization", &bearer),
            pid,
            upstream_pid,
        )?,
        Target::at(
            &gw.base_url,
            "/v1/responses",
            ("authorization", &bearer),
            pid,
            upstream_pid,
        )?,
    ];
    let messages = crate::plan::body(plan.body_bytes, false, None);
    let bodies = [
        messages.clone(),
        messages,
        chat_body(plan.body_bytes),
        responses_body(plan.body_bytes),
    ];
    for (t, b) in paths.iter().zip(&bodies) {
        let a = client.messages(t, b).await?;
        if a.status != 200 {
            bail!("POST {} answered HTTP {}", t.path(), a.status);
        }
    }
    let shape = Shape::Open(plan.routes_rate);
    let mut v = runner::in_rounds(
        paths.len(),
        plan.rounds,
        plan.routes_duration,
        |i, dur, warm| {
            let (t, b) = (&paths[i], &bodies[i]);
            async move {
                if warm {
                    let _ = runner::once(client, plan, t, shape, b, plan.warmup).await;
                }
                runner::once(client, plan, t, shape, b, dur).await
            }
        },
    )
    .await;
    let responses = v.pop().unwrap_or_default();
    let chat = v.pop().unwrap_or_default();
    let messages = v.pop().unwrap_or_default();
    let direct = v.pop().unwrap_or_default();
    crate::plan::say(format!(
        "routes at {} req/s: p99 direct {} messages {} chat {} responses {} µs",
        plan.routes_rate,
        direct.latency.p99,
        messages.latency.p99,
        chat.latency.p99,
        responses.latency.p99
    ));
    Ok(Routes {
        rate: plan.routes_rate,
        direct,
        messages,
        chat,
        responses,
    })
}
