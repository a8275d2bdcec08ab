//! Issue 10: only a credential's own fault takes it out of the pool; browsers, request-caused refusals, bans and
//! local faults each get the scope of what was actually wrong. The real binary against the simulator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::time::Duration;

use common::*;
use simulator::Simulator;

const CHAT_ORIGIN: &str = "http://chat.example";

fn messages_requests(sim: &Simulator) -> Vec<simulator::RecordedRequest> {
    sim.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect()
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
