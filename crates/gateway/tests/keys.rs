//! Issue 12: client keys as tenants — managed keys, per-key limits, usage and cost per key, account and model. The
//! real binary against the simulator (SQLite here; PostgreSQL replicas in `keys_cluster.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use simulator::{Fault, FaultKind, Simulator};

/// Creates a key with the CLI; the key is the last line of stdout.
pub fn create_key(gw: &Gateway, args: &[&str]) -> String {
    let mut all = vec!["keys", "create"];
    all.extend_from_slice(args);
    let out = gw.cli(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("sk-gw-"), "{stdout}");
    key
}

/// Waits until the gateway accepts `key` (a bad body answers 400 after authentication, before anything upstream).
pub async fn wait_key_known(gw: &Gateway, key: &str) {
    for _ in 0..100 {
        let r = client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", key)
            .body("not json")
            .send()
            .await
            .unwrap();
        if r.status() != 401 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway never accepted the new key");
}

pub async fn send(gw: &Gateway, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/messages"))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

pub async fn send_openai(gw: &Gateway, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

pub fn msg(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

pub async fn admin_get(gw: &Gateway, path: &str) -> Value {
    let r = client()
        .get(gw.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// Sleeps past the last seconds of a minute, so a burst is not split by a minute boundary.
pub async fn not_near_a_minute_boundary() {
    let into = chrono::Utc::now().timestamp_millis() % 60_000;
    if into > 45_000 {
        tokio::time::sleep(Duration::from_millis((60_000 - into + 200) as u64)).await;
    }
}

fn message_requests(sim: &Simulator) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_to_five_requests_per_minute_gets_429_with_retry_after_on_the_sixth() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    let k = sim.new_api_key();
    seed(&dir, vec![api_key_account("a", &k)]).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let key = create_key(&gw, &["--name", "team", "--rpm", "5"]);
    wait_key_known(&gw, &key).await;
    not_near_a_minute_boundary().await;
    for i in 0..5 {
        let r = send(&gw, &key, &msg("claude-sonnet-4-5", "hi", false)).await;
        assert_eq!(r.status(), 200, "request {i}");
    }
    let r = send(&gw, &key, &msg("claude-sonnet-4-5", "hi", false)).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The sliding minute: the full minute ends, then a tenth of it must slide out (at most 66 s).
    assert!((1..=66).contains(&retry), "retry-after {retry}");
    assert_eq!(r.headers()["x-gateway-key-limit"], "rpm");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("5 requests per minute"), "{message}");
    // The OpenAI route refuses in its own shape, with the same retry-after.
    let r = send_openai(
        &gw,
        &key,
        &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    // Nothing went upstream for the refused requests; a static config key is not limited.
    assert_eq!(message_requests(&sim), 5);
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outside_the_keys_globs_is_refused_and_nothing_goes_upstream() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    let k = sim.new_api_key();
    seed(&dir, vec![api_key_account("a", &k)]).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let key = create_key(&gw, &["--name", "haiku-only", "--models", "claude-haiku-*"]);
    wait_key_known(&gw, &key).await;
    let r = send(&gw, &key, &msg("claude-sonnet-4-5", "hi", true)).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("claude-sonnet-4-5"));
    let r = send_openai(
        &gw,
        &key,
        &json!({"model": "claude-opus-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error", "{body}");
    assert_eq!(message_requests(&sim), 0, "nothing may go upstream");
    let r = send(&gw, &key, &msg("claude-haiku-4-5", "hi", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(message_requests(&sim), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_to_some_accounts_is_served_only_by_them() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    let (k1, k2) = (sim.new_api_key(), sim.new_api_key());
    seed(
        &dir,
        vec![
            api_key_account("team-a-1", &k1),
            api_key_account("team-b-1", &k2),
        ],
    )
    .await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let creds = |sim: &Simulator| -> Vec<Option<String>> {
        sim.requests()
            .into_iter()
            .filter(|r| r.path == "/v1/messages")
            .map(|r| r.credential)
            .collect()
    };
    // A static key uses every account…
    for i in 0..4 {
        let body = message_body(&format!("static conversation {i}"), false);
        assert_eq!(post_messages(&client(), &gw, body).await.status(), 200);
    }
    let seen = creds(&sim);
    assert!(
        seen.contains(&Some(k1.clone())) && seen.contains(&Some(k2.clone())),
        "{seen:?}"
    );
    // … a key limited to team B's accounts only those.
    let key = create_key(&gw, &["--name", "team-b", "--accounts", "team-b-*"]);
    wait_key_known(&gw, &key).await;
    for i in 0..6 {
        let body = msg("claude-sonnet-4-5", &format!("conversation {i}"), false);
        assert_eq!(send(&gw, &key, &body).await.status(), 200);
    }
    let seen = creds(&sim);
    assert_eq!(seen.len(), 10);
    assert!(
        seen[4..].iter().all(|c| c.as_deref() == Some(k2.as_str())),
        "served by another team's account"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_disabled_and_expired_keys_are_refused_without_a_restart() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    let k = sim.new_api_key();
    seed(&dir, vec![api_key_account("a", &k)]).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    // Created through the admin API: the key is in the answer, once.
    let r = client()
        .post(gw.url("/admin/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "ci", "note": "for CI", "rpm": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let id = created["id"].as_i64().unwrap();
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    wait_key_known(&gw, &key).await;
    assert_eq!(
        send(&gw, &key, &msg("claude-sonnet-4-5", "hi", false))
            .await
            .status(),
        200
    );

    // Disabled with the CLI: refused within a second.
    let out = gw.cli(&["keys", "set", "ci", "--disable"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = std::time::Instant::now();
    let refused = loop {
        let r = send(&gw, &key, &msg("claude-sonnet-4-5", "hi", false)).await;
        if r.status() == 401 {
            break r.json::<Value>().await.unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "still accepted after {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{refused}"
    );

    // Enabled again with an expiry in the past (PATCH), then revoked (DELETE).
    let r = client()
        .patch(gw.url(&format!("/admin/keys/{id}")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"enabled": true, "expires_at": "2020-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "expired");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = send(&gw, &key, &msg("claude-sonnet-4-5", "hi", false)).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("expired"));
    let r = client()
        .delete(gw.url(&format!("/admin/keys/{id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(admin_get(&gw, "/admin/keys").await["keys"], json!([]));
    // Bad input is a clear error, never a panic.
    let r = client()
        .post(gw.url("/admin/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "x", "usd_per_month": -3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .get(gw.url("/admin/usage?group_by=tenant"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_per_month_stops_a_key_once_exceeded() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    let k = sim.new_api_key();
    seed(&dir, vec![api_key_account("a", &k)]).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let key = create_key(&gw, &["--name", "budget", "--usd-per-month", "0.005"]);
    wait_key_known(&gw, &key).await;
    // 1,000 one-hour cache writes on Sonnet cost $0.006: over the budget after the first request.
    let r = send(
        &gw,
        &key,
        &msg("claude-sonnet-4-5", "sim_cache_1h=1000", true),
    )
    .await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await.unwrap();
    let r = send(&gw, &key, &msg("claude-sonnet-4-5", "hi", false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-gateway-key-limit"], "usd_per_month");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31 * 86400).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per month"),
        "{body}"
    );
    assert_eq!(message_requests(&sim), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_per_day_stop_a_key_until_the_next_utc_midnight() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("a", &sim.new_api_key())]).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let key = create_key(&gw, &["--name", "daily", "--tokens-per-day", "500"]);
    wait_key_known(&gw, &key).await;
    // Cache reads count too: 600 of them are over the day's 500 tokens.
    let body = json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "sim_cache_read=600"}]});
    let r = send_openai(&gw, &key, &body).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let r = send_openai(&gw, &key, &body).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = chrono::Utc::now();
    let midnight = (now + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let expected = u64::try_from((midnight - now).num_seconds()).unwrap();
    assert!(
        retry.abs_diff(expected) <= 2,
        "retry-after {retry}, midnight in {expected}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per day"),
        "{body}"
    );
    assert_eq!(message_requests(&sim), 1);
}

/// Usage the simulator reported in one recorded answer (JSON, or SSE events: cumulative, later values win).
fn sim_usage(resp: &[u8]) -> [u64; 5] {
    let mut t = [0u64; 5];
    let mut apply = |u: &Value| {
        let keys = ["input_tokens", "output_tokens", "cache_read_input_tokens"];
        for (i, k) in keys.iter().enumerate() {
            if let Some(v) = u.get(*k).and_then(Value::as_u64) {
                t[[0, 1, 4][i]] = v;
            }
        }
        if let Some(c) = u.get("cache_creation") {
            t[2] = c["ephemeral_5m_input_tokens"].as_u64().unwrap();
            t[3] = c["ephemeral_1h_input_tokens"].as_u64().unwrap();
        }
    };
    if let Ok(v) = serde_json::from_slice::<Value>(resp) {
        apply(&v["usage"]);
        return t;
    }
    for line in String::from_utf8_lossy(resp).lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        match v["type"].as_str() {
            Some("message_start") => apply(&v["message"]["usage"]),
            Some("message_delta") => apply(&v["usage"]),
            _ => {}
        }
    }
    t
}

fn add(a: &mut [u64; 5], b: [u64; 5]) {
    for i in 0..5 {
        a[i] += b[i];
    }
}

/// USD per million tokens of the shipped table: input, output, 5 m write, 1 h write, read.
fn price(model: &str) -> [f64; 5] {
    match model {
        "claude-sonnet-4-5" => [3.0, 15.0, 3.75, 6.0, 0.3],
        "claude-haiku-4-5" => [1.0, 5.0, 1.25, 2.0, 0.1],
        other => panic!("no price for {other}"),
    }
}

fn row_tokens(row: &Value) -> [u64; 5] {
    [
        row["input_tokens"].as_u64().unwrap(),
        row["output_tokens"].as_u64().unwrap(),
        row["cache_creation_5m_input_tokens"].as_u64().unwrap(),
        row["cache_creation_1h_input_tokens"].as_u64().unwrap(),
        row["cache_read_input_tokens"].as_u64().unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_per_key_account_and_model_equals_the_simulators_token_totals() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    let (k1, k2) = (sim.new_api_key(), sim.new_api_key());
    seed(
        &dir,
        vec![
            api_key_account("first", &k1),
            api_key_account("second", &k2),
        ],
    )
    .await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let alpha = create_key(&gw, &["--name", "alpha"]);
    let beta = create_key(&gw, &["--name", "beta", "--models", "claude-*"]);
    wait_key_known(&gw, &alpha).await;
    wait_key_known(&gw, &beta).await;

    let mut sent = 0;
    for (i, key) in [&alpha, &beta, &alpha.clone()].iter().enumerate() {
        let cache = format!(
            "sim_cache_5m={} sim_cache_1h={} sim_cache_read={}",
            100 + i,
            200 * i,
            7 + i
        );
        // Non-stream and stream on the Anthropic route, two models.
        let r = send(&gw, key, &msg("claude-sonnet-4-5", &cache, false)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        let r = send(&gw, key, &msg("claude-haiku-4-5", &cache, true)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        // The OpenAI route, stream and not.
        let body =
            json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": cache}]});
        let r = send_openai(&gw, key, &body).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        let body = json!({"model": "claude-sonnet-4-5", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": cache}]});
        let r = send_openai(&gw, key, &body).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        sent += 4;
    }
    // Failover: the first attempt gets a 529 (no usage), the other account answers.
    sim.push_fault(Fault::once(FaultKind::Status {
        status: 529,
        error_type: "overloaded_error".into(),
        message: "Overloaded".into(),
        headers: vec![],
    }));
    let r = send(
        &gw,
        &alpha,
        &msg("claude-sonnet-4-5", "sim_cache_1h=50 failover", true),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    sent += 1;
    // Abandoned: the client leaves after the first bytes of a slow stream.
    let mut slow = msg("claude-haiku-4-5", "sim_cache_5m=30 abandoned", true);
    slow["sim"] = json!({"delay_ms": 3000});
    let mut r = send(&gw, &beta, &slow).await;
    assert_eq!(r.status(), 200);
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(r);
    assert!(sim.wait_for_disconnects(1, Duration::from_secs(5)).await);
    sent += 1;
    // The static config key is a tenant too.
    let r = post_messages(
        &client(),
        &gw,
        message_body("sim_cache_read=11 static", false),
    )
    .await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    sent += 1;

    // What the simulator reported, per credential (account) and per model; per key from the request order.
    let answered: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages" && r.status == 200)
        .collect();
    assert_eq!(answered.len(), sent);
    let mut by_account: std::collections::BTreeMap<String, [u64; 5]> = Default::default();
    let mut by_model: std::collections::BTreeMap<String, [u64; 5]> = Default::default();
    let mut total = [0u64; 5];
    for r in &answered {
        let u = sim_usage(&r.response);
        let account = if r.credential.as_deref() == Some(k1.as_str()) {
            "first"
        } else {
            "second"
        };
        add(by_account.entry(account.into()).or_default(), u);
        let model = r.json().unwrap()["model"].as_str().unwrap().to_string();
        add(by_model.entry(model).or_default(), u);
        add(&mut total, u);
    }
    assert!(
        total[2] > 0 && total[3] > 0 && total[4] > 0,
        "the mix must exercise every cache kind: {total:?}"
    );

    // The gateway's records reach the store within a flush.
    let mut rows = Value::Null;
    for _ in 0..100 {
        rows = admin_get(&gw, "/admin/usage?group_by=model").await;
        let n: u64 = rows["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["requests"].as_u64().unwrap())
            .sum();
        if n == sent as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut model_total = [0u64; 5];
    for row in rows["rows"].as_array().unwrap() {
        let model = row["model"].as_str().unwrap();
        assert_eq!(row_tokens(row), by_model[model], "model {model}: {row}");
        add(&mut model_total, row_tokens(row));
        // Cost is the price table's arithmetic, both cache-write lifetimes included.
        let p = price(model);
        let t = by_model[model];
        let expected: f64 = (0..5).map(|i| t[i] as f64 * p[i] / 1e6).sum();
        let cost = row["cost_usd"].as_f64().unwrap();
        assert!(
            (cost - expected).abs() < 1e-9,
            "model {model}: cost {cost}, expected {expected}"
        );
    }
    assert_eq!(model_total, total);
    let accounts = admin_get(&gw, "/admin/usage?group_by=account").await;
    for row in accounts["rows"].as_array().unwrap() {
        let name = row["account"].as_str().unwrap();
        assert_eq!(row_tokens(row), by_account[name], "account {name}: {row}");
    }
    assert_eq!(accounts["rows"].as_array().unwrap().len(), by_account.len());
    let keys = admin_get(&gw, "/admin/usage?group_by=key&bucket=hour").await;
    let mut key_total = [0u64; 5];
    let names: Vec<&str> = keys["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    for row in keys["rows"].as_array().unwrap() {
        assert!(
            row["bucket"].as_str().unwrap().ends_with(":00:00Z"),
            "{row}"
        );
        add(&mut key_total, row_tokens(row));
    }
    assert!(
        names.contains(&"alpha") && names.contains(&"beta") && names.contains(&"config"),
        "{names:?}"
    );
    assert_eq!(key_total, total);

    // The request log: metadata per request, the abandoned stream and the failover named as such.
    let log = admin_get(&gw, "/admin/requests?key=beta&limit=100").await;
    let beta_rows = log["requests"].as_array().unwrap();
    assert!(
        beta_rows.iter().any(|r| r["error_type"] == "client_gone"),
        "{log}"
    );
    assert!(beta_rows.iter().all(|r| r["key"] == "beta"));
    let log = admin_get(&gw, "/admin/requests?account=second&limit=100").await;
    assert!(log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["route"] == "/v1/chat/completions"));

    // The CLI table and Prometheus by key name.
    let out = gw.cli(&["usage", "--by", "model", "--since", "1h"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("claude-haiku-4-5") && table.contains("CACHE_W_1H"),
        "{table}"
    );
    let metrics = gw.metrics().await;
    for series in [
        "gateway_key_requests_total{key=\"alpha\"}",
        "gateway_key_tokens_total{key=\"alpha\",kind=\"input\"}",
        "gateway_key_tokens_total{key=\"alpha\",kind=\"output\"}",
        "gateway_key_cost_nanodollars_total{key=\"alpha\"}",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }

    // The raw keys appear nowhere: not in the database file, the logs or the admin API.
    let listed = admin_get(&gw, "/admin/keys").await.to_string();
    let requests = admin_get(&gw, "/admin/requests?limit=1000")
        .await
        .to_string();
    let out = gw.cli(&["keys", "list", "--json"]);
    let cli_list = String::from_utf8(out.stdout).unwrap();
    assert!(cli_list.contains("alpha"));
    let mut db = Vec::new();
    for f in ["gateway.db", "gateway.db-wal"] {
        if let Ok(b) = std::fs::read(gw.dir.0.join("data").join(f)) {
            db.extend(b);
        }
    }
    assert!(!db.is_empty());
    for secret in [&alpha, &beta] {
        let tail = &secret[12..];
        assert!(!listed.contains(tail) && !requests.contains(tail) && !cli_list.contains(tail));
        assert!(!gw.logs().contains(tail));
        assert!(
            !db.windows(tail.len()).any(|w| w == tail.as_bytes()),
            "a key is in the database file"
        );
    }
}

// === several replicas on PostgreSQL ===

/// Starts `n` replicas sharing `url`.
fn replicas(sim: &Simulator, url: &str, n: usize) -> Vec<Gateway> {
    (0..n)
        .map(|_| {
            Gateway::start_in(
                TempDir::new(),
                &sim.base_url(),
                &sim.token_url(),
                &format!("store_url = \"{url}\"\n"),
            )
        })
        .collect()
}

async fn seed_pg(url: &str, accounts: Vec<claude_gateway::account::NewAccount>) {
    use claude_gateway::store::Store;
    let store = claude_gateway::store::postgres::PostgresStore::connect(url)
        .await
        .unwrap();
    for a in accounts {
        store.insert_account(a).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_holds_across_replicas_and_a_burst_overshoots_by_at_most_one_limit_per_other_replica() {
    let pg = common::postgres::Postgres::start();
    let url = pg.database("keys_rpm");
    let sim = Simulator::start().await.unwrap();
    seed_pg(&url, vec![api_key_account("a", &sim.new_api_key())]).await;
    let gws = replicas(&sim, &url, 2);
    let key = create_key(&gws[0], &["--name", "team", "--rpm", "5"]);
    let burst = create_key(&gws[0], &["--name", "burst", "--rpm", "5"]);
    for gw in &gws {
        wait_key_known(gw, &key).await;
        wait_key_known(gw, &burst).await;
    }
    not_near_a_minute_boundary().await;
    // Five requests spread over both replicas; after one flush (1 s) the sixth is refused on either.
    for i in 0..5 {
        let r = send(&gws[i % 2], &key, &msg("claude-sonnet-4-5", "hi", false)).await;
        assert_eq!(r.status(), 200, "request {i}");
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    for gw in &gws {
        let r = send(gw, &key, &msg("claude-sonnet-4-5", "hi", false)).await;
        assert_eq!(r.status(), 429, "the sixth is refused on every replica");
        assert!(r.headers().contains_key("retry-after"));
    }
    assert_eq!(message_requests(&sim), 5);

    // A burst faster than a flush: each replica admits at most the limit by itself (README: overshoot bound).
    let before = message_requests(&sim);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = gws[i % 2].url("/v1/messages");
        let burst = burst.clone();
        tasks.push(tokio::spawn(async move {
            client()
                .post(url)
                .header("x-api-key", burst)
                .body(msg("claude-sonnet-4-5", "hi", false).to_string())
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 200 || s == 429, "{s}");
        ok += usize::from(s == 200);
    }
    assert!(
        (5..=10).contains(&ok),
        "admitted {ok} of a 5 rpm key over 2 replicas"
    );
    assert_eq!(message_requests(&sim) - before, ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_on_every_replica_within_a_second() {
    let pg = common::postgres::Postgres::start();
    let url = pg.database("keys_revoke");
    let sim = Simulator::start().await.unwrap();
    seed_pg(&url, vec![api_key_account("a", &sim.new_api_key())]).await;
    let gws = replicas(&sim, &url, 3);
    let key = create_key(&gws[0], &["--name", "leaving"]);
    for gw in &gws {
        wait_key_known(gw, &key).await;
        assert_eq!(
            send(gw, &key, &msg("claude-sonnet-4-5", "hi", false))
                .await
                .status(),
            200
        );
    }
    let out = gws[1].cli(&["keys", "revoke", "leaving"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked = std::time::Instant::now();
    for gw in &gws {
        loop {
            let r = send(gw, &key, &msg("claude-sonnet-4-5", "hi", false)).await;
            if r.status() == 401 {
                break;
            }
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "replica still accepts the revoked key after {:?}",
                revoked.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(revoked.elapsed() < Duration::from_secs(1));
    // Usage of every replica lands in the one store.
    let mut n = 0;
    for _ in 0..50 {
        let v = admin_get(&gws[2], "/admin/usage?group_by=key").await;
        n = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["key"] == "leaving")
            .map(|r| r["requests"].as_u64().unwrap())
            .sum();
        if n >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(n >= 3, "usage rows of all replicas: {n}");
}

// === the store's usage tables ===

fn record(
    at: &str,
    key: &str,
    model: &str,
    input: u64,
    cost: Option<i64>,
) -> claude_gateway::store::tenants::RequestRecord {
    claude_gateway::store::tenants::RequestRecord {
        at: chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .with_timezone(&chrono::Utc),
        key_id: 1,
        key: key.into(),
        account_id: 1,
        account: "a".into(),
        model: model.into(),
        route: "/v1/messages".into(),
        stream: false,
        status: 200,
        error_type: None,
        tokens: claude_gateway::store::tenants::Tokens {
            input,
            output: 1,
            cache_creation_5m: 2,
            cache_creation_1h: 3,
            cache_read: 4,
        },
        latency_ms: 10,
        ttfb_ms: Some(5),
        cost_nanos: cost,
    }
}

#[tokio::test]
async fn rollups_sum_by_hour_and_day_count_unknown_costs_apart_and_expire_after_retention() {
    use claude_gateway::store::tenants::{Bucket, GroupBy, RequestQuery, UsageBatch, UsageQuery};
    use claude_gateway::store::Store;
    let dir = TempDir::new();
    let store = claude_gateway::store::sqlite::SqliteStore::open(&dir.0.join("data"))
        .await
        .unwrap();
    let t = store.tenants().unwrap();
    let rows = vec![
        record(
            "2026-03-01T10:05:00Z",
            "k",
            "claude-sonnet-4-5",
            10,
            Some(100),
        ),
        record(
            "2026-03-01T10:55:00Z",
            "k",
            "claude-sonnet-4-5",
            20,
            Some(200),
        ),
        record("2026-03-01T11:00:00Z", "k", "unpriced-model", 30, None),
        record(
            "2026-03-02T09:00:00Z",
            "k",
            "claude-sonnet-4-5",
            40,
            Some(400),
        ),
    ];
    t.record_usage(&UsageBatch {
        requests: rows,
        ..UsageBatch::default()
    })
    .await
    .unwrap();
    let q = |bucket, from: &str, to: &str| UsageQuery {
        group_by: GroupBy::Model,
        from: at(from),
        to: at(to),
        bucket,
    };
    let hours = t
        .usage(q(
            Some(Bucket::Hour),
            "2026-03-01T00:00:00Z",
            "2026-03-03T00:00:00Z",
        ))
        .await
        .unwrap();
    let sonnet_10h = hours
        .iter()
        .find(|r| r.bucket.as_deref() == Some("2026-03-01T10:00:00Z"))
        .unwrap();
    assert_eq!(
        (
            sonnet_10h.requests,
            sonnet_10h.tokens.input,
            sonnet_10h.cost_nanos
        ),
        (2, 30, 300)
    );
    let days = t
        .usage(q(
            Some(Bucket::Day),
            "2026-03-01T00:00:00Z",
            "2026-03-03T00:00:00Z",
        ))
        .await
        .unwrap();
    assert_eq!(days.len(), 3, "{days:?}");
    let unknown = days.iter().find(|r| r.name == "unpriced-model").unwrap();
    assert_eq!((unknown.cost_nanos, unknown.cost_unknown_requests), (0, 1));
    let all = t
        .usage(q(None, "2026-03-01T00:00:00Z", "2026-03-03T00:00:00Z"))
        .await
        .unwrap();
    let sonnet = all.iter().find(|r| r.name == "claude-sonnet-4-5").unwrap();
    assert_eq!(
        (
            sonnet.requests,
            sonnet.tokens.input,
            sonnet.tokens.cache_creation_1h,
            sonnet.cost_nanos
        ),
        (3, 70, 9, 700)
    );
    assert_eq!(sonnet.bucket, None);
    // Retention: request rows before the first cut go, rollups before the second.
    t.prune_usage(
        at("2026-03-02T00:00:00Z"),
        at("2026-03-01T11:00:00Z"),
        at("2026-03-02T10:00:00Z"),
    )
    .await
    .unwrap();
    let left = t
        .recent_requests(RequestQuery {
            limit: 100,
            ..RequestQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].tokens.input, 40);
    let all = t
        .usage(q(None, "2026-03-01T00:00:00Z", "2026-03-03T00:00:00Z"))
        .await
        .unwrap();
    let n: u64 = all.iter().map(|r| r.requests).sum();
    assert_eq!(
        n, 2,
        "the 10:00 rollup is gone, 11:00 and the next day stay: {all:?}"
    );
}

/// A flush bigger than one insert statement (the request log is written `INSERT_CHUNK` rows per statement).
async fn write_and_count_many(t: &dyn claude_gateway::store::tenants::TenantStore) {
    use claude_gateway::store::tenants::{GroupBy, RequestQuery, UsageBatch, UsageQuery};
    let n = 1_234u64;
    let rows = (0..n)
        .map(|i| {
            let mut r = record("2026-03-01T10:05:00Z", "k", "claude-sonnet-4-5", i, Some(1));
            r.error_type = (i % 7 == 0).then(|| "overloaded_error".to_string());
            r
        })
        .collect();
    t.record_usage(&UsageBatch {
        requests: rows,
        ..UsageBatch::default()
    })
    .await
    .unwrap();
    let all = t
        .usage(UsageQuery {
            group_by: GroupBy::Model,
            from: at("2026-03-01T00:00:00Z"),
            to: at("2026-03-02T00:00:00Z"),
            bucket: None,
        })
        .await
        .unwrap();
    let requests: u64 = all.iter().map(|r| r.requests).sum();
    let input: u64 = all.iter().map(|r| r.tokens.input).sum();
    assert_eq!((requests, input), (n, n * (n - 1) / 2));
    let recent = t
        .recent_requests(RequestQuery {
            limit: 50,
            ..RequestQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 50);
    for r in &recent {
        assert_eq!(r.error_type.is_some(), r.tokens.input % 7 == 0, "{r:?}");
        assert_eq!(
            (r.ttfb_ms, r.latency_ms, r.cost_nanos),
            (Some(5), 10, Some(1))
        );
    }
}

#[tokio::test]
async fn a_flush_bigger_than_one_insert_statement_keeps_every_record_on_sqlite_and_postgres() {
    use claude_gateway::store::Store;
    let dir = TempDir::new();
    let sqlite = claude_gateway::store::sqlite::SqliteStore::open(&dir.0.join("data"))
        .await
        .unwrap();
    write_and_count_many(sqlite.tenants().unwrap()).await;
    let pg = common::postgres::Postgres::start();
    let url = pg.database("keys_many_records");
    let postgres = claude_gateway::store::postgres::PostgresStore::connect(&url)
        .await
        .unwrap();
    write_and_count_many(postgres.tenants().unwrap()).await;
}

/// Records that differ in every column, with more distinct texts per column than a flush's insert shares at once (keys,
/// accounts, models, routes and error types interleaved; quotes, backslashes and non-ASCII among them), counts past
/// 32 bits, and each optional column both set and empty.
fn varied_records(from: u64, n: u64) -> Vec<claude_gateway::store::tenants::RequestRecord> {
    const KEYS: [&str; 6] = ["k", "k-\"quoted\"", "k\\back", "ключ", "k🙂", "k6"];
    const MODELS: [&str; 7] = [
        "claude-sonnet-4-5",
        "claude-opus-4-1",
        "m'odel",
        "unpriced",
        "x",
        "y",
        "z",
    ];
    const ROUTES: [&str; 3] = ["/v1/messages", "/v1/chat/completions", "/v1/responses"];
    (from..from + n)
        .map(|i| {
            let k = usize::try_from(i % 6).unwrap();
            let signed = i64::try_from(i).unwrap();
            claude_gateway::store::tenants::RequestRecord {
                at: at("2026-03-01T10:00:00Z") + chrono::Duration::milliseconds(signed * 99_997),
                key_id: i64::try_from(k).unwrap() + 1,
                key: KEYS[k].into(),
                account_id: signed % 5,
                account: format!("acct-{}@example.com", i % 5),
                model: MODELS[usize::try_from(i % 7).unwrap()].into(),
                route: ROUTES[usize::try_from(i % 3).unwrap()].into(),
                stream: i % 2 == 0,
                status: [200, 429, 529, 400][usize::try_from(i % 4).unwrap()],
                error_type: (i % 3 == 0).then(|| format!("error_{}", i % 5)),
                tokens: claude_gateway::store::tenants::Tokens {
                    input: i,
                    output: (1 << 40) + i,
                    cache_creation_5m: i % 11,
                    cache_creation_1h: i % 13,
                    cache_read: 3 * i,
                },
                latency_ms: 7 * i,
                ttfb_ms: (i % 4 != 0).then_some(i),
                cost_nanos: (i % 5 != 0).then_some(1_000 * signed),
            }
        })
        .collect()
}

/// Flushes of sizes around the insert's chunk boundaries write every record as it was, in order, and roll them up per
/// key and hour with the same sums.
async fn every_row_as_recorded(t: &dyn claude_gateway::store::tenants::TenantStore) {
    use claude_gateway::store::tenants::{
        Bucket, GroupBy, RequestQuery, Tokens, UsageBatch, UsageQuery,
    };
    let mut written = Vec::new();
    // The chunk is 64 rows (`store::tenants_sql::INSERT_CHUNK`): one short of it, it, one past it, and past two.
    for n in [1, 16, 17, 63, 64, 65, 129, 100] {
        let rows = varied_records(written.len() as u64, n);
        t.record_usage(&UsageBatch {
            requests: rows.clone(),
            ..UsageBatch::default()
        })
        .await
        .unwrap();
        written.extend(rows);
    }
    let mut back = t
        .recent_requests(RequestQuery {
            limit: 1_000,
            ..RequestQuery::default()
        })
        .await
        .unwrap();
    back.reverse();
    assert_eq!(back.len(), written.len());
    for (got, want) in back.iter().zip(&written) {
        assert_eq!(got, want);
    }
    let mut sums: std::collections::BTreeMap<(String, String), (u64, Tokens, i64, u64)> =
        Default::default();
    for r in &written {
        let hour = r.at.timestamp_millis().div_euclid(3_600_000) * 3_600_000;
        let hour = chrono::DateTime::from_timestamp_millis(hour)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let s = sums.entry((r.key.clone(), hour)).or_default();
        s.0 += 1;
        s.1.add(&r.tokens);
        match r.cost_nanos {
            Some(c) => s.2 += c,
            None => s.3 += 1,
        }
    }
    let rollups = t
        .usage(UsageQuery {
            group_by: GroupBy::Key,
            from: at("2026-03-01T00:00:00Z"),
            to: at("2026-03-03T00:00:00Z"),
            bucket: Some(Bucket::Hour),
        })
        .await
        .unwrap();
    let got: std::collections::BTreeMap<(String, String), (u64, Tokens, i64, u64)> = rollups
        .into_iter()
        .map(|r| {
            (
                (r.name, r.bucket.unwrap()),
                (r.requests, r.tokens, r.cost_nanos, r.cost_unknown_requests),
            )
        })
        .collect();
    assert_eq!(got, sums);
}

#[tokio::test]
async fn every_request_row_and_rollup_is_written_as_recorded_on_sqlite_and_postgres() {
    use claude_gateway::store::Store;
    let dir = TempDir::new();
    let sqlite = claude_gateway::store::sqlite::SqliteStore::open(&dir.0.join("data"))
        .await
        .unwrap();
    every_row_as_recorded(sqlite.tenants().unwrap()).await;
    let pg = common::postgres::Postgres::start();
    let url = pg.database("keys_rows_as_recorded");
    let postgres = claude_gateway::store::postgres::PostgresStore::connect(&url)
        .await
        .unwrap();
    every_row_as_recorded(postgres.tenants().unwrap()).await;
}

/// An RFC 3339 instant in UTC.
fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&chrono::Utc)
}
