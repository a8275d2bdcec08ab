//! Issue 3: OAuth accounts and the refresh engine, against the real binary and the simulator's rotating token endpoint.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use simulator::{SimConfig, Simulator, TokenFault};

fn fixtures() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

async fn oauth_gateway(
    sim: &Simulator,
    expires_in: chrono::Duration,
    extra_accounts: Vec<claude_gateway::account::NewAccount>,
) -> (Gateway, simulator::TokenPair) {
    let pair = sim.issue_oauth(Duration::from_secs(expires_in.num_seconds().max(0) as u64));
    let dir = TempDir::new();
    let mut accounts = vec![oauth_account(
        "oauth-1",
        &pair.access_token,
        &pair.refresh_token,
        expires_in,
    )];
    accounts.extend(extra_accounts);
    seed(&dir, accounts).await;
    (
        Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), ""),
        pair,
    )
}

fn messages_requests(sim: &Simulator) -> Vec<simulator::RecordedRequest> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_requests_on_an_expired_token_make_one_token_call() {
    let sim = Simulator::start_with(SimConfig {
        token_latency: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .unwrap();
    let (gw, old) = oauth_gateway(&sim, chrono::Duration::seconds(-60), vec![]).await;
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let (c, url) = (c.clone(), gw.url("/v1/messages"));
        tasks.push(tokio::spawn(async move {
            c.post(url)
                .header("x-api-key", CLIENT_KEY)
                .header("anthropic-beta", "tools-2024,oauth-2025-04-20")
                .body(message_body(&format!("request {i}"), false))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 200);
    }
    assert_eq!(sim.token_call_count(), 1, "{:?}", sim.token_calls());
    let call = &sim.token_calls()[0];
    assert_eq!(
        call.refresh_token.as_deref(),
        Some(old.refresh_token.as_str())
    );
    let new_refresh = sim.current_refresh_token(&old.refresh_token).unwrap();
    let msgs = messages_requests(&sim);
    assert_eq!(msgs.len(), 500);
    let new_access = msgs[0].credential.clone().unwrap();
    assert_ne!(new_access, old.access_token);
    for r in &msgs {
        assert_eq!(r.credential.as_deref(), Some(new_access.as_str()));
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {new_access}").as_str())
        );
        assert_eq!(
            r.header("anthropic-beta"),
            Some("tools-2024,oauth-2025-04-20"),
            "merged without duplicates"
        );
        assert_eq!(r.header("x-api-key"), None);
    }
    // Later requests use the new token and start no refresh.
    assert_eq!(
        post_messages(&c, &gw, message_body("later", false))
            .await
            .status(),
        200
    );
    assert_eq!(sim.token_call_count(), 1);
    // The rotation was persisted.
    let stored = gw.store().await;
    use claude_gateway::store::Store;
    assert_eq!(
        stored.list_accounts().await.unwrap()[0]
            .credential
            .refresh_token
            .as_deref(),
        Some(new_refresh.as_str())
    );
    // Logs name the account, never a token.
    let logs = gw.logs();
    assert!(logs.contains("oauth-1"));
    for secret in [
        &old.access_token,
        &old.refresh_token,
        &new_access,
        &new_refresh,
    ] {
        assert!(
            !logs.contains(secret.as_str()),
            "a token leaked into the logs"
        );
    }
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"gateway_refresh_attempts_total{outcome="ok"} 1"#),
        "{m}"
    );
    assert!(!m.contains(&new_access));
}

#[tokio::test]
async fn oauth_requests_carry_bearer_and_the_oauth_beta() {
    let sim = Simulator::start().await.unwrap();
    let (gw, pair) = oauth_gateway(&sim, chrono::Duration::hours(2), vec![]).await;
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 200);
    let rec = &messages_requests(&sim)[0];
    assert_eq!(
        rec.header("authorization"),
        Some(format!("Bearer {}", pair.access_token).as_str())
    );
    assert_eq!(rec.header("anthropic-beta"), Some("oauth-2025-04-20"));
    assert_eq!(sim.token_call_count(), 0, "a valid token is not refreshed");
}

#[tokio::test]
async fn token_endpoint_429_blocks_refresh_until_retry_after_while_traffic_fails_over() {
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let (gw, _) = oauth_gateway(
        &sim,
        chrono::Duration::seconds(-60),
        vec![api_key_account("backup", &key)],
    )
    .await;
    let until = std::time::SystemTime::now() + Duration::from_secs(3);
    sim.push_token_fault(TokenFault::RateLimited {
        retry_after: Some(httpdate::fmt_http_date(until)),
        retry_after_ms: None,
    });
    let c = client();
    for _ in 0..10 {
        assert_eq!(
            post_messages(&c, &gw, message_body("x", false))
                .await
                .status(),
            200
        );
    }
    assert_eq!(sim.token_call_count(), 1);
    assert!(
        messages_requests(&sim)
            .iter()
            .all(|r| r.credential.as_deref() == Some(key.as_str())),
        "served by the API key"
    );
    let admin = gw.admin_accounts().await;
    let a = admin["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "oauth-1")
        .unwrap()
        .clone();
    assert_eq!(a["state"], "refresh_backoff", "{a}");
    assert!(a["last_error"].as_str().unwrap().contains("429"));
    // The admin path is refused too.
    let r = c
        .post(gw.url(&format!("/admin/accounts/{}/refresh", a["id"])))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(sim.token_call_count(), 1);

    // After the wait: exactly one more call, then the OAuth account serves again.
    while std::time::SystemTime::now() < until + Duration::from_millis(1100) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (c, url) = (c.clone(), gw.url("/v1/messages"));
        tasks.push(tokio::spawn(async move {
            c.post(url)
                .header("x-api-key", CLIENT_KEY)
                .body(message_body("y", false))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(sim.token_call_count(), 2, "{:?}", sim.token_calls());
}

#[tokio::test]
async fn with_no_other_account_a_token_429_answers_429_with_retry_after() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = oauth_gateway(&sim, chrono::Duration::seconds(-60), vec![]).await;
    sim.push_token_fault(TokenFault::RateLimited {
        retry_after: None,
        retry_after_ms: Some(30_000),
    });
    let c = client();
    for _ in 0..3 {
        let r = post_messages(&c, &gw, message_body("x", false)).await;
        assert_eq!(r.status(), 429);
        let secs: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((25..=30).contains(&secs), "{secs}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
    }
    assert_eq!(sim.token_call_count(), 1);
}

#[tokio::test]
async fn invalid_grant_marks_needs_reauth_until_reimported() {
    let sim = Simulator::start().await.unwrap();
    let (gw, pair) = oauth_gateway(&sim, chrono::Duration::seconds(-60), vec![]).await;
    sim.push_token_fault(TokenFault::InvalidGrant);
    let c = client();
    let r = post_messages(&c, &gw, message_body("x", false)).await;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("re-authentication"),
        "{v}"
    );
    for _ in 0..3 {
        assert_eq!(
            post_messages(&c, &gw, message_body("x", false))
                .await
                .status(),
            503
        );
    }
    assert_eq!(sim.token_call_count(), 1, "never retried");
    let a = gw.admin_accounts().await["accounts"][0].clone();
    assert_eq!(a["state"], "needs_reauth");
    assert!(
        a["last_error"].as_str().unwrap().contains("invalid_grant"),
        "{a}"
    );
    // Survives a restart.
    let mut gw = gw;
    gw.kill_and_restart();
    assert_eq!(
        gw.admin_accounts().await["accounts"][0]["state"],
        "needs_reauth"
    );
    assert_eq!(
        post_messages(&c, &gw, message_body("x", false))
            .await
            .status(),
        503
    );
    assert_eq!(sim.token_call_count(), 1);

    // Re-import a fresh credential for the same token family: the flag clears and the account serves.
    let fresh = sim.issue_oauth(Duration::from_secs(3600));
    let file = gw.dir.0.join("creds.json");
    let expires = chrono::Utc::now().timestamp_millis() + 3_600_000;
    std::fs::write(
        &file,
        format!(r#"{{"claudeAiOauth":{{"accessToken":"{}","refreshToken":"{}","expiresAt":{expires}}}}}"#, pair.access_token, fresh.refresh_token),
    )
    .unwrap();
    let out = gw.cli(&["accounts", "import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Updated"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = gw.admin_accounts().await["accounts"].clone();
    assert_eq!(
        a.as_array().unwrap().len(),
        1,
        "re-import updates, does not duplicate"
    );
    assert_eq!(a[0]["state"], "ready", "{a}");
}

#[tokio::test]
async fn a_401_with_a_token_we_think_valid_triggers_one_refresh_and_one_retry() {
    let sim = Simulator::start().await.unwrap();
    let (gw, pair) = oauth_gateway(&sim, chrono::Duration::hours(2), vec![]).await;
    sim.revoke_access_token(&pair.access_token);
    let r = post_messages(&client(), &gw, message_body("x", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(sim.token_call_count(), 1);
    let msgs = messages_requests(&sim);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].status, 401);
    assert_eq!(msgs[1].status, 200);
    assert_ne!(msgs[1].credential, msgs[0].credential);
}

#[tokio::test]
async fn a_process_killed_right_after_a_refresh_restarts_with_the_new_refresh_token() {
    let sim = Simulator::start().await.unwrap();
    let (mut gw, old) = oauth_gateway(&sim, chrono::Duration::seconds(-60), vec![]).await;
    assert_eq!(
        post_messages(&client(), &gw, message_body("x", false))
            .await
            .status(),
        200
    );
    gw.kill_and_restart(); // SIGKILL: no graceful shutdown
    let rotated = sim.current_refresh_token(&old.refresh_token).unwrap();
    let new_access = messages_requests(&sim)[0].credential.clone().unwrap();
    // Force another refresh after the restart: it must present the rotated token, not the one we started with.
    sim.revoke_access_token(&new_access);
    assert_eq!(
        post_messages(&client(), &gw, message_body("y", false))
            .await
            .status(),
        200
    );
    let calls = sim.token_calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].refresh_token.as_deref(), Some(rotated.as_str()));
    assert_eq!(calls[1].outcome, "ok");
    assert!(calls.iter().all(|c| c.outcome != "invalid_grant"));
}

#[tokio::test]
async fn a_lost_refresh_answer_retries_once_and_then_asks_for_reauth() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _) = oauth_gateway(&sim, chrono::Duration::seconds(-60), vec![]).await;
    sim.push_token_fault(TokenFault::RotateThenDrop);
    assert_eq!(
        post_messages(&client(), &gw, message_body("x", false))
            .await
            .status(),
        503
    );
    let calls = sim.token_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[0].refresh_token, calls[1].refresh_token,
        "the same token, tried exactly once more"
    );
    assert_eq!(calls[1].outcome, "invalid_grant");
    let a = gw.admin_accounts().await["accounts"][0].clone();
    assert_eq!(a["state"], "needs_reauth");
    assert!(a["last_error"].as_str().unwrap().contains("lost"), "{a}");
}

#[tokio::test]
async fn import_reads_all_formats_and_updates_instead_of_duplicating() {
    let sim = Simulator::start().await.unwrap();
    let gw = Gateway::start(&sim, "");
    let out = gw.cli(&["accounts", "import", fixtures().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("Imported").count(), 3, "{stdout}");
    assert!(stdout.contains("setup-token"), "{stdout}");
    assert!(!stdout.contains("sk-ant-"), "no secrets printed");
    let again = gw.cli(&[
        "accounts",
        "import",
        fixtures()
            .join("cliproxyapi-claude-user@example.com.json")
            .to_str()
            .unwrap(),
        fixtures()
            .join("claude-code-credentials.json")
            .to_str()
            .unwrap(),
    ]);
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .matches("Updated")
            .count(),
        2
    );
    let v: serde_json::Value =
        serde_json::from_slice(&gw.cli(&["accounts", "list", "--json"]).stdout).unwrap();
    let accounts = v["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 3);
    let cp = accounts
        .iter()
        .find(|a| a["email"] == "user@example.com")
        .unwrap();
    assert_eq!(cp["name"], "user@example.com");
    assert_eq!(cp["organization"], "Example Org");
    assert_eq!(cp["expires_at"], "2025-11-24T18:00:00Z");
    let bad = gw.cli(&["accounts", "import", "/nonexistent/file.json"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/file.json"));
}

/// A CLIProxyAPI auth file for account `n`, with token generation `g`.
fn cliproxy_file(dir: &std::path::Path, n: usize, g: usize) {
    let body = serde_json::json!({
        "type": "claude",
        "access_token": format!("sk-ant-oat01-access-{n}-{g}"),
        "refresh_token": format!("sk-ant-ort01-refresh-{n}-{g}"),
        "email": format!("user{n}@example.com"),
        "account_uuid": format!("00000000-0000-4000-8000-{n:012}"),
        "expired": format!("2030-01-01T00:{:02}:00Z", g % 60),
        "disabled": false,
    });
    std::fs::write(dir.join(format!("claude-{n}-{g}.json")), body.to_string()).unwrap();
}

/// Many files in one import: one listing, one batched write, the same result as saving them one by one — new accounts
/// created once each, known ones updated in place (a later file for the same account wins), nothing duplicated.
#[tokio::test]
async fn importing_many_files_creates_each_account_once_and_updates_known_ones() {
    let sim = Simulator::start().await.unwrap();
    let gw = Gateway::start(&sim, "");
    let first = TempDir::new();
    for n in 0..300 {
        cliproxy_file(&first.0, n, 0);
    }
    let out = gw.cli(&["accounts", "import", first.0.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("Imported")
            .count(),
        300
    );

    // 100 known accounts with new tokens (account 7 twice: generation 2 comes after 1), and 50 new ones.
    let second = TempDir::new();
    for n in 200..350 {
        cliproxy_file(&second.0, n, 1);
    }
    cliproxy_file(&second.0, 7, 1);
    cliproxy_file(&second.0, 7, 2);
    let out = gw.cli(&["accounts", "import", second.0.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("Imported").count(), 50, "{stdout}");
    assert_eq!(stdout.matches("Updated").count(), 102, "{stdout}");

    let store = gw.store().await;
    let accounts = claude_gateway::store::Store::list_accounts(&store)
        .await
        .unwrap();
    assert_eq!(accounts.len(), 350);
    let by_email = |n: usize| {
        accounts
            .iter()
            .find(|a| a.identity.email.as_deref() == Some(&format!("user{n}@example.com")))
            .unwrap()
    };
    assert_eq!(by_email(7).credential.secret, "sk-ant-oat01-access-7-2");
    assert_eq!(by_email(250).credential.secret, "sk-ant-oat01-access-250-1");
    assert_eq!(by_email(100).credential.secret, "sk-ant-oat01-access-100-0");
    assert_eq!(by_email(340).credential.secret, "sk-ant-oat01-access-340-1");
    let names: std::collections::HashSet<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names.len(), 350, "names stay unique");
}

#[tokio::test]
async fn admin_api_needs_the_admin_key_and_shows_the_contract_shape() {
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let (gw, _) = oauth_gateway(
        &sim,
        chrono::Duration::hours(1),
        vec![api_key_account("k", &key)],
    )
    .await;
    let c = client();
    assert_eq!(
        c.get(gw.url("/admin/accounts"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(gw.url("/admin/accounts"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let v = gw.admin_accounts().await;
    let accounts = v["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 2);
    for a in accounts {
        for field in [
            "id",
            "name",
            "kind",
            "state",
            "expires_at",
            "cooldown_until",
            "last_error",
        ] {
            assert!(a.get(field).is_some(), "missing {field} in {a}");
        }
        assert_eq!(a["state"], "ready");
    }
    let oauth = accounts.iter().find(|a| a["kind"] == "oauth").unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(oauth["expires_at"].as_str().unwrap()).is_ok());
    assert!(accounts
        .iter()
        .any(|a| a["kind"] == "api_key" && a["expires_at"].is_null()));
    assert!(!v.to_string().contains(&key), "no secrets in the admin API");
}

#[tokio::test]
async fn login_with_pkce_through_the_browser_callback() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = dir.0.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[upstream]\nbase_url = \"{}\"\n[oauth]\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\nprofile_url = \"{}\"\ncallback_port = {port}\n",
            dir.0.join("data").display(),
            sim.base_url(),
            sim.token_url(),
            sim.authorize_url(),
            sim.profile_url()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(bin())
        .args(["login", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        if line.starts_with("http") {
            break line;
        }
    };
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );
    // The "browser": the simulator approves and redirects to the local callback.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("http://localhost:{port}/callback")),
        "{location}"
    );
    let page = reqwest::get(location.replace("localhost", "127.0.0.1"))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let mut rest = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
        rest.push(l);
    }
    assert!(
        rest.iter()
            .any(|l| l.starts_with("Added OAuth account sim-user-")),
        "{rest:?}"
    );
    let calls = sim.token_calls();
    assert_eq!(calls[0].grant_type, "authorization_code");
    assert_eq!(calls[0].outcome, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_that_triggered_a_refresh_leaving_does_not_cancel_it() {
    let sim = Simulator::start_with(SimConfig {
        token_latency: Duration::from_millis(800),
        ..Default::default()
    })
    .await
    .unwrap();
    let (gw, old) = oauth_gateway(&sim, chrono::Duration::seconds(-60), vec![]).await;
    // The first client starts the refresh, then goes away long before the token endpoint answers.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let err = impatient
        .post(gw.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .body(message_body("first", false))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    // A second client arrives while the refresh is still running and gets its result.
    let r = post_messages(&client(), &gw, message_body("second", false)).await;
    assert_eq!(r.status(), 200);
    let calls = sim.token_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].outcome, "ok",
        "the refresh completed although its client left"
    );
    let rotated = sim.current_refresh_token(&old.refresh_token).unwrap();
    use claude_gateway::store::Store;
    let stored = gw.store().await.list_accounts().await.unwrap();
    assert_eq!(
        stored[0].credential.refresh_token.as_deref(),
        Some(rotated.as_str())
    );
}
