//! Issue 10: only a credential's own fault takes it out of the pool; browsers, request-caused refusals, bans and
//! local faults each get the scope of what was actually wrong. The real binary against the simulator.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use simulator::{Fault, FaultKind, Simulator, TokenFault};

const CHAT_ORIGIN: &str = "http://chat.example";

fn messages_requests(sim: &Simulator) -> Vec<simulator::RecordedRequest> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect()
}

fn checks(sim: &Simulator, credential: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.path == "/v1/models" && r.credential.as_deref() == Some(credential))
        .count()
}

fn account<'a>(admin: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    admin["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap()
}

fn refusal(status: u16, kind: &str, message: &str) -> FaultKind {
    FaultKind::Status {
        status,
        error_type: kind.into(),
        message: message.into(),
        headers: vec![],
    }
}

fn states(admin: &serde_json::Value) -> Vec<String> {
    admin["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap().to_string())
        .collect()
}

/// One API-key account and one OAuth account, both valid.
async fn two_account_gateway(sim: &Simulator, extra: &str) -> (Gateway, String, String) {
    let key = sim.new_api_key();
    let pair = sim.issue_oauth(Duration::from_secs(7200));
    let dir = TempDir::new();
    seed(
        &dir,
        vec![
            api_key_account("key", &key),
            oauth_account(
                "oauth",
                &pair.access_token,
                &pair.refresh_token,
                chrono::Duration::hours(2),
            ),
        ],
    )
    .await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), extra);
    (gw, key, pair.access_token)
}

async fn post_from_browser(
    c: &reqwest::Client,
    gw: &Gateway,
    origin: &str,
    text: &str,
) -> reqwest::Response {
    c.post(gw.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .header("content-type", "application/json")
        .header("origin", origin)
        .header("referer", format!("{origin}/chat/1"))
        .header("sec-fetch-mode", "cors")
        .header("sec-ch-ua", "\"Chromium\";v=\"130\"")
        .header("x-forwarded-for", "10.1.2.3")
        .header("cf-connecting-ip", "10.1.2.3")
        .header("x-stainless-lang", "js")
        .header("anthropic-dangerous-direct-browser-access", "true")
        .body(message_body(text, false))
        .send()
        .await
        .unwrap()
}

// === 4. Headers and browsers ===

#[tokio::test]
async fn browser_requests_from_an_allowed_origin_are_served_without_their_browser_headers() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _, _) = two_account_gateway(
        &sim,
        &format!("cors_allowed_origins = [\"{CHAT_ORIGIN}\"]\n"),
    )
    .await;
    let c = client();
    for i in 0..6 {
        let r = post_from_browser(&c, &gw, CHAT_ORIGIN, &format!("browser {i}")).await;
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
        assert_eq!(r.headers()["access-control-allow-origin"], CHAT_ORIGIN);
    }
    for r in messages_requests(&sim) {
        for h in [
            "origin",
            "referer",
            "sec-fetch-mode",
            "sec-ch-ua",
            "x-forwarded-for",
            "cf-connecting-ip",
        ] {
            assert!(r.header(h).is_none(), "{h} reached upstream");
        }
        assert_eq!(
            r.header("x-stainless-lang"),
            Some("js"),
            "the client's own headers pass"
        );
        assert_eq!(
            r.header("anthropic-dangerous-direct-browser-access"),
            Some("true")
        );
    }
    assert_eq!(states(&gw.admin_accounts().await), ["ready", "ready"]);
}

#[tokio::test]
async fn preflights_are_answered_here_and_other_origins_reach_no_account() {
    let sim = Simulator::start().await.unwrap();
    let (gw, _, _) = two_account_gateway(
        &sim,
        &format!("cors_allowed_origins = [\"{CHAT_ORIGIN}\"]\n"),
    )
    .await;
    let c = client();
    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/v1/messages"))
        .header("origin", CHAT_ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "x-api-key, content-type, anthropic-version",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], CHAT_ORIGIN);
    assert!(r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert_eq!(
        r.headers()["access-control-allow-headers"],
        "x-api-key, content-type, anthropic-version"
    );
    for _ in 0..5 {
        let r = post_from_browser(&c, &gw, "http://evil.example", "x").await;
        assert_eq!(r.status(), 403);
        assert!(r.headers().get("access-control-allow-origin").is_none());
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "permission_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("cors_allowed_origins"),
            "{v}"
        );
    }
    let r = c
        .request(reqwest::Method::OPTIONS, gw.url("/v1/messages"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(sim.requests().is_empty(), "nothing reached upstream");
    assert_eq!(states(&gw.admin_accounts().await), ["ready", "ready"]);
}

#[tokio::test]
async fn an_open_gateway_answers_only_to_its_own_host_names() {
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("key", &key)]).await;
    std::fs::write(
        dir.0.join("gateway.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nallowed_hosts = [\"gw.internal\"]\n[upstream]\nbase_url = \"{}\"\n",
            dir.0.join("data").display(),
            sim.base_url()
        ),
    )
    .unwrap();
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let c = client();
    let send = |host: &str| {
        c.post(gw.url("/v1/messages"))
            .header("host", host)
            .header("content-type", "application/json")
            .body(message_body("x", false))
            .send()
    };
    let port = gw.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("gw.internal:{port}"),
    ] {
        assert_eq!(send(&host).await.unwrap().status(), 200, "{host}");
    }
    // A page on a name rebound to 127.0.0.1 sends its own name as Host.
    let r = send(&format!("rebound.evil.example:{port}")).await.unwrap();
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed_hosts"),
        "{v}"
    );
    assert_eq!(messages_requests(&sim).len(), 3);
}

// === 1. Attribution of 401/403 ===

const FORBIDDEN_BETA: &str = "sim-org-restricted-2025-01-01";

#[tokio::test]
async fn browsers_and_forbidden_betas_interleaved_with_normal_requests_take_no_account_out_of_the_pool(
) {
    let sim = Simulator::start().await.unwrap();
    sim.forbid_beta(FORBIDDEN_BETA);
    let (gw, key, oauth) = two_account_gateway(
        &sim,
        &format!("cors_allowed_origins = [\"{CHAT_ORIGIN}\"]\n"),
    )
    .await;
    let c = client();
    let (mut forbidden, mut normal) = (0, 0);
    for i in 0..20 {
        let r = post_messages(&c, &gw, message_body(&format!("normal a{i}"), false)).await;
        assert_eq!(r.status(), 200, "normal request {i}");
        normal += 1;
        // Without the opt-in header: were Origin forwarded, Anthropic would answer 401 whatever the credential.
        let r = c
            .post(gw.url("/v1/messages"))
            .header("x-api-key", CLIENT_KEY)
            .header("origin", CHAT_ORIGIN)
            .body(message_body(&format!("browser {i}"), false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "browser request {i}");
        let r = post_messages(&c, &gw, message_body(&format!("normal b{i}"), false)).await;
        assert_eq!(r.status(), 200, "normal request {i}");
        normal += 1;
        let r = c
            .post(gw.url("/v1/messages"))
            .header("x-api-key", CLIENT_KEY)
            .header("anthropic-beta", FORBIDDEN_BETA)
            .body(message_body(&format!("beta {i}"), false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "upstream's answer, relayed");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "permission_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(FORBIDDEN_BETA),
            "{v}"
        );
        forbidden += 1;
    }
    assert_eq!((normal, forbidden), (40, 20));
    let refused: Vec<_> = messages_requests(&sim)
        .into_iter()
        .filter(|r| r.status == 403)
        .collect();
    assert_eq!(
        refused.len(),
        20,
        "no failover: one upstream attempt per refused request"
    );
    assert!(
        checks(&sim, &key) <= 1 && checks(&sim, &oauth) <= 1,
        "at most one check per account"
    );
    assert!(
        checks(&sim, &key) + checks(&sim, &oauth) >= 1,
        "the refusals were checked"
    );
    assert_eq!(sim.token_call_count(), 0, "a 403 is no reason to refresh");
    assert_eq!(states(&gw.admin_accounts().await), ["ready", "ready"]);
}

#[tokio::test]
async fn a_401_the_check_does_not_reproduce_is_relayed_and_the_account_stays() {
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("key", &key)]).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    sim.push_fault(Fault::times(
        refusal(401, "authentication_error", "something about this request"),
        3,
    ));
    let c = client();
    for i in 0..3 {
        let r = post_messages(&c, &gw, message_body(&format!("k{i}"), false)).await;
        assert_eq!(r.status(), 401, "upstream's answer, relayed");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["message"], "something about this request");
    }
    assert_eq!(
        checks(&sim, &key),
        1,
        "one check; its verdict stands for the interval"
    );
    assert_eq!(messages_requests(&sim).len(), 3, "no retry, no failover");
    assert_eq!(
        post_messages(&c, &gw, message_body("after", false))
            .await
            .status(),
        200
    );
    assert_eq!(states(&gw.admin_accounts().await), ["ready"]);
}

#[tokio::test]
async fn an_oauth_401_is_refreshed_once_then_checked_and_relayed_when_the_token_works() {
    let sim = Simulator::start().await.unwrap();
    let pair = sim.issue_oauth(Duration::from_secs(7200));
    let dir = TempDir::new();
    seed(
        &dir,
        vec![oauth_account(
            "oauth",
            &pair.access_token,
            &pair.refresh_token,
            chrono::Duration::hours(2),
        )],
    )
    .await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let cors = "CORS requests must set 'anthropic-dangerous-direct-browser-access' header";
    sim.push_fault(Fault::times(refusal(401, "authentication_error", cors), 4));
    let c = client();
    let r = post_messages(&c, &gw, message_body("first", false)).await;
    assert_eq!(r.status(), 401);
    let msgs = messages_requests(&sim);
    assert_eq!(msgs.len(), 2, "one retry after the forced refresh");
    assert_eq!(sim.token_call_count(), 1);
    let new_token = msgs[1].credential.clone().unwrap();
    assert_ne!(msgs[0].credential.as_deref(), Some(new_token.as_str()));
    assert_eq!(checks(&sim, &new_token), 1);
    // Within the interval the token is vouched for: no refresh, no check, the refusal goes straight back.
    for i in 0..2 {
        assert_eq!(
            post_messages(&c, &gw, message_body(&format!("again {i}"), false))
                .await
                .status(),
            401
        );
    }
    assert_eq!(sim.token_call_count(), 1, "no refresh storm");
    assert_eq!(messages_requests(&sim).len(), 4);
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.path == "/v1/models")
            .count(),
        1
    );
    assert_eq!(
        post_messages(&c, &gw, message_body("after", false))
            .await
            .status(),
        200
    );
    assert_eq!(states(&gw.admin_accounts().await), ["ready"]);
}

#[tokio::test]
async fn a_credential_that_fails_its_check_leaves_the_pool_and_the_request_fails_over() {
    let sim = Simulator::start().await.unwrap();
    let (gw, key, _) = two_account_gateway(&sim, "").await;
    sim.remove_api_key(&key);
    let c = client();
    for i in 0..4 {
        let r = post_messages(&c, &gw, message_body(&format!("x{i}"), false)).await;
        assert_eq!(r.status(), 200, "failed over to the OAuth account");
    }
    let admin = gw.admin_accounts().await;
    let a = account(&admin, "key");
    assert_eq!(a["state"], "needs_reauth");
    assert!(
        a["last_error"]
            .as_str()
            .unwrap()
            .contains("invalid x-api-key"),
        "{a}"
    );
    assert_eq!(account(&admin, "oauth")["state"], "ready");
    assert_eq!(checks(&sim, &key), 1);
}

// === 2. A rejection is about the token that was sent ===

#[tokio::test]
async fn a_refusal_of_a_token_a_concurrent_refresh_replaced_does_not_mark_the_account() {
    let sim = Simulator::start().await.unwrap();
    let pair = sim.issue_oauth(Duration::from_secs(7200));
    let dir = TempDir::new();
    let accounts = seed(
        &dir,
        vec![oauth_account(
            "oauth",
            &pair.access_token,
            &pair.refresh_token,
            chrono::Duration::hours(2),
        )],
    )
    .await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    sim.push_fault(Fault::for_credential(
        FaultKind::Delayed(
            Duration::from_millis(500),
            Box::new(refusal(403, "permission_error", "Permission denied")),
        ),
        &pair.access_token,
        1,
    ));
    let c = client();
    let request = tokio::spawn({
        let (c, url) = (c.clone(), gw.url("/v1/messages"));
        async move {
            c.post(url)
                .header("x-api-key", CLIENT_KEY)
                .body(message_body("slow", false))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = c
        .post(gw.url(&format!("/admin/accounts/{}/refresh", accounts[0].id)))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(
        request.await.unwrap(),
        200,
        "retried with the token that replaced the refused one"
    );
    let msgs = messages_requests(&sim);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].status, 403);
    assert_ne!(
        msgs[1].credential.as_deref(),
        Some(pair.access_token.as_str())
    );
    assert_eq!(states(&gw.admin_accounts().await), ["ready"]);
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.path == "/v1/models")
            .count(),
        0,
        "nothing to check"
    );
}

// === 3. Bans are not expiries ===

#[tokio::test]
async fn banned_organizations_get_their_own_state_with_upstreams_message() {
    let sim = Simulator::start().await.unwrap();
    let (mut gw, key, oauth) = two_account_gateway(&sim, "").await;
    let oauth_ban = "OAuth authentication is currently not allowed for this organization.";
    let disabled = "This organization has been disabled.";
    sim.ban(&oauth, 403, "permission_error", oauth_ban);
    sim.ban(&key, 400, "invalid_request_error", disabled);
    let c = client();
    let r = post_messages(&c, &gw, message_body("x", false)).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(
        status == 400 || status == 403,
        "the last refusal is relayed when no account is left: {status} {body}"
    );
    let admin = gw.admin_accounts().await;
    assert_eq!(account(&admin, "oauth")["state"], "banned");
    assert_eq!(account(&admin, "oauth")["last_error"], oauth_ban);
    assert_eq!(account(&admin, "key")["state"], "banned");
    assert_eq!(account(&admin, "key")["last_error"], disabled);
    assert_eq!(
        sim.token_call_count(),
        0,
        "a ban is not an expiry: no refresh"
    );

    // Nothing reaches upstream any more; the client learns how many accounts are in which state, not which.
    sim.reset_records();
    let r = post_messages(&c, &gw, message_body("y", false)).await;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("2 refused by Anthropic"), "{message}");
    for secret_ish in [
        "oauth",
        "key",
        "sim-user",
        "@example.com",
        "organization has been disabled",
    ] {
        assert!(!message.contains(secret_ish), "{secret_ish:?} in {message}");
    }
    assert!(sim.requests().is_empty());

    // Survives a restart; `accounts list` shows it; `accounts enable` clears it.
    // The ban is written to the store in the background: wait for it before killing the process.
    let store = gw.store().await;
    for _ in 0..100 {
        use claude_gateway::store::Store;
        if store
            .list_accounts()
            .await
            .unwrap()
            .iter()
            .all(|a| a.banned.is_some())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.kill_and_restart();
    let out = gw.cli(&["accounts", "list"]);
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.matches("banned").count(), 2, "{list}");
    let v: serde_json::Value =
        serde_json::from_slice(&gw.cli(&["accounts", "list", "--json"]).stdout).unwrap();
    assert!(
        v["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "banned"),
        "{v}"
    );
    assert_eq!(states(&gw.admin_accounts().await), ["banned", "banned"]);
    assert!(gw.cli(&["accounts", "enable", "key"]).status.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(account(&gw.admin_accounts().await, "key")["state"], "ready");
}

// === 5. Scopes of cooldowns ===

#[tokio::test]
async fn a_401_whose_refresh_is_backing_off_cools_the_account_instead_of_resending_the_token() {
    let sim = Simulator::start().await.unwrap();
    let pair = sim.issue_oauth(Duration::from_secs(7200));
    let dir = TempDir::new();
    seed(
        &dir,
        vec![oauth_account(
            "oauth",
            &pair.access_token,
            &pair.refresh_token,
            chrono::Duration::hours(2),
        )],
    )
    .await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    sim.revoke_access_token(&pair.access_token);
    sim.push_token_fault(TokenFault::RateLimited {
        retry_after: Some("120".into()),
        retry_after_ms: None,
    });
    let c = client();
    let first = post_messages(&c, &gw, message_body("x", false)).await;
    assert_eq!(
        first.status(),
        401,
        "upstream's answer when nothing else can serve"
    );
    for _ in 0..5 {
        let r = post_messages(&c, &gw, message_body("y", false)).await;
        assert_eq!(r.status(), 429);
        let secs: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((100..=120).contains(&secs), "{secs}");
    }
    assert_eq!(
        messages_requests(&sim).len(),
        1,
        "the rejected token was sent once"
    );
    assert_eq!(
        sim.token_call_count(),
        1,
        "the token endpoint's 429 is honoured"
    );
    let a = gw.admin_accounts().await;
    assert_ne!(a["accounts"][0]["state"], "needs_reauth", "{a}");
}

// === 5. Scopes of cooldowns, across replicas ===

async fn seed_pg(url: &str, accounts: Vec<claude_gateway::account::NewAccount>) {
    use claude_gateway::store::Store;
    let store = claude_gateway::store::postgres::PostgresStore::connect(url)
        .await
        .unwrap();
    for a in accounts {
        store.insert_account(a).await.unwrap();
    }
}

fn replica(upstream: &str, token_url: &str, url: &str, extra: &str) -> Gateway {
    Gateway::start_in(
        TempDir::new(),
        upstream,
        token_url,
        &format!("store_url = \"{url}\"\n{extra}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_reach_upstream_cools_accounts_only_for_itself() {
    let pg = common::postgres::Postgres::start();
    let url = pg.database("local_faults");
    let sim = Simulator::start().await.unwrap();
    let pair = sim.issue_oauth(Duration::from_secs(7200));
    seed_pg(
        &url,
        vec![
            api_key_account("key", &sim.new_api_key()),
            oauth_account(
                "oauth",
                &pair.access_token,
                &pair.refresh_token,
                chrono::Duration::hours(2),
            ),
        ],
    )
    .await;
    // Replica A's upstream URL points at a closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let a = replica(&format!("http://{closed}"), &sim.token_url(), &url, "");
    let b = replica(&sim.base_url(), &sim.token_url(), &url, "");
    let c = client();
    let r = post_messages(&c, &a, message_body("x", false)).await;
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(
        !body.contains(&closed.to_string()),
        "the gateway's own errors never name upstream URLs: {body}"
    );
    assert!(states(&a.admin_accounts().await)
        .iter()
        .all(|s| s == "cooling_down"));
    // Several store syncs later, B still serves with every account ready.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for i in 0..6 {
        assert_eq!(
            post_messages(&c, &b, message_body(&format!("b{i}"), false))
                .await
                .status(),
            200
        );
    }
    assert_eq!(states(&b.admin_accounts().await), ["ready", "ready"]);
    assert_eq!(messages_requests(&sim).len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_probe_ends_a_shared_cooldown_in_the_store_too() {
    use claude_gateway::store::Store;
    let pg = common::postgres::Postgres::start();
    let url = pg.database("probe_clears");
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    seed_pg(&url, vec![api_key_account("key", &key)]).await;
    let extra = "[pool]\nprobe_interval_secs = 1\n";
    let a = replica(&sim.base_url(), &sim.token_url(), &url, extra);
    sim.push_fault(Fault::for_credential(
        FaultKind::RateLimited {
            retry_after: Some("600".into()),
            retry_after_ms: None,
            headers: vec![],
        },
        &key,
        1,
    ));
    let c = client();
    assert_eq!(
        post_messages(&c, &a, message_body("x", false))
            .await
            .status(),
        429
    );
    let store = claude_gateway::store::postgres::PostgresStore::connect(&url)
        .await
        .unwrap();
    let now = chrono::Utc::now();
    for _ in 0..100 {
        if !store.list_cooldowns(now).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        store.list_cooldowns(now).await.unwrap().len(),
        1,
        "the 429's cooldown is shared"
    );
    // After the probe interval the next request is the half-open probe; it succeeds.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        post_messages(&c, &a, message_body("probe", false))
            .await
            .status(),
        200
    );
    // Several syncs later, neither this replica nor a new one parks the account again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        store
            .list_cooldowns(chrono::Utc::now())
            .await
            .unwrap()
            .is_empty(),
        "the store forgot it"
    );
    let admin = a.admin_accounts().await;
    assert_eq!(states(&admin), ["ready"], "{admin}");
    assert!(
        admin["accounts"][0]["model_cooldowns"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{admin}"
    );
    let b = replica(&sim.base_url(), &sim.token_url(), &url, extra);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(states(&b.admin_accounts().await), ["ready"]);
    for i in 0..3 {
        assert_eq!(
            post_messages(&c, &a, message_body(&format!("a{i}"), false))
                .await
                .status(),
            200
        );
        assert_eq!(
            post_messages(&c, &b, message_body(&format!("b{i}"), false))
                .await
                .status(),
            200
        );
    }
}
