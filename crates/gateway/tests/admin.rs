//! Issue 13: the admin API under the dashboard, against the real binary and the simulator — every endpoint refuses
//! the unauthenticated, account actions, credential import, an OAuth login, sessions with CSRF and a login throttle,
//! the audit log, the cluster view, the redacted configuration, the overview and a separate dashboard listener.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use simulator::Simulator;

/// Every admin route (method, path with `1` for ids). The OpenAPI test checks each is documented.
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/admin/accounts"),
    ("POST", "/admin/accounts"),
    ("POST", "/admin/accounts/import"),
    ("GET", "/admin/accounts/1"),
    ("PATCH", "/admin/accounts/1"),
    ("DELETE", "/admin/accounts/1"),
    ("POST", "/admin/accounts/1/enable"),
    ("POST", "/admin/accounts/1/disable"),
    ("POST", "/admin/accounts/1/reset"),
    ("POST", "/admin/accounts/1/refresh"),
    ("POST", "/admin/oauth/start"),
    ("POST", "/admin/oauth/complete"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/cluster"),
    ("GET", "/admin/config"),
    ("GET", "/admin/overview"),
    ("GET", "/admin/session"),
    ("DELETE", "/admin/session"),
    ("GET", "/admin/openapi.json"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys"),
    ("PATCH", "/admin/keys/1"),
    ("DELETE", "/admin/keys/1"),
    ("GET", "/admin/usage"),
    ("GET", "/admin/requests"),
    ("GET", "/admin/refresh"),
];

/// Calls the admin API with the admin key.
async fn admin(
    gw: &Gateway,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = client()
        .request(method, gw.url(path))
        .bearer_auth(ADMIN_KEY);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn audit(gw: &Gateway) -> Vec<Value> {
    let (s, v) = admin(gw, Method::GET, "/admin/audit", None).await;
    assert_eq!(s, 200, "{v}");
    v["entries"].as_array().unwrap().clone()
}

fn route_template(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg == "1" { "{id}" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_endpoint_refuses_callers_without_the_key_or_a_session_and_is_documented() {
    let sim = Simulator::start().await.unwrap();
    let gw = Gateway::start(&sim, "");
    let (s, doc) = admin(&gw, Method::GET, "/admin/openapi.json", None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in ENDPOINTS {
        let op = &doc["paths"][route_template(path)][method.to_lowercase()];
        assert!(
            op.is_object(),
            "{method} {path} is not in /admin/openapi.json"
        );
        assert!(op["summary"].is_string(), "{method} {path} has no summary");
    }

    let c = client();
    for (wrong_keys, (method, path)) in ENDPOINTS.iter().enumerate() {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let none = c.request(m.clone(), gw.url(path)).send().await.unwrap();
        assert_eq!(none.status(), 401, "{method} {path} without credentials");
        let wrong = c
            .request(m.clone(), gw.url(path))
            .bearer_auth("not-the-admin-key")
            .send()
            .await
            .unwrap();
        // Wrong keys count as failed logins: after five from this address, the address waits.
        let expected = if wrong_keys < 5 { 401 } else { 429 };
        assert_eq!(wrong.status(), expected, "{method} {path} with a wrong key");
        let body: Value = wrong.json().await.unwrap();
        let kind = if expected == 401 {
            "authentication_error"
        } else {
            "rate_limit_error"
        };
        assert_eq!(body["error"]["type"], kind);
        let stale = c
            .request(m, gw.url(path))
            .header("cookie", "cgw_session=made-up")
            .send()
            .await
            .unwrap();
        assert_eq!(
            stale.status(),
            401,
            "{method} {path} with an unknown session"
        );
    }
    // A client key is not an admin key (and this address is throttled by now).
    let r = c
        .get(gw.url("/admin/accounts"))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_actions_change_the_pool_are_audited_and_never_show_the_key() {
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let gw = Gateway::start(&sim, "");

    let (s, a) = admin(
        &gw,
        Method::POST,
        "/admin/accounts",
        Some(json!({"name": "work", "key": key, "priority": 2, "weight": 3, "tags": ["team-a", "eu"]})),
    )
    .await;
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_i64().unwrap();
    assert_eq!(a["state"], "ready");
    assert_eq!(a["kind"], "api_key");
    assert_eq!(
        (a["priority"].as_i64(), a["weight"].as_i64()),
        (Some(2), Some(3))
    );
    assert_eq!(a["tags"], json!(["team-a", "eu"]));
    assert!(!a.to_string().contains(&key), "the key is never shown");

    // It serves at once.
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 200);

    let path = format!("/admin/accounts/{id}");
    let (s, d) = admin(&gw, Method::GET, &path, None).await;
    assert_eq!(s, 200);
    assert_eq!(d["name"], "work");

    let (s, d) = admin(
        &gw,
        Method::PATCH,
        &path,
        Some(json!({"name": "work-2", "priority": 1, "weight": 5, "max_concurrency": 4, "tags": ["b"]})),
    )
    .await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(
        (
            &d["name"],
            &d["priority"],
            &d["weight"],
            &d["max_concurrency"],
            &d["tags"]
        ),
        (
            &json!("work-2"),
            &json!(1),
            &json!(5),
            &json!(4),
            &json!(["b"])
        )
    );
    let (_, d) = admin(
        &gw,
        Method::PATCH,
        &path,
        Some(json!({"max_concurrency": null})),
    )
    .await;
    assert_eq!(d["max_concurrency"], Value::Null, "null makes it unlimited");
    assert_eq!(d["name"], "work-2", "absent fields are kept");

    let (s, d) = admin(&gw, Method::POST, &format!("{path}/disable"), None).await;
    assert_eq!((s, d["state"].as_str()), (StatusCode::OK, Some("disabled")));
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 503, "a disabled account does not serve");
    let (s, d) = admin(&gw, Method::POST, &format!("{path}/enable"), None).await;
    assert_eq!((s, d["state"].as_str()), (StatusCode::OK, Some("ready")));
    let (s, _) = admin(&gw, Method::POST, &format!("{path}/reset"), None).await;
    assert_eq!(s, 200);
    let (s, v) = admin(&gw, Method::POST, &format!("{path}/refresh"), None).await;
    assert_eq!(s, 400, "an API key cannot be refreshed: {v}");

    // Bad input: a clear 4xx naming the problem.
    for (body, status, needle) in [
        (json!({"weight": 0}), 400, "weight"),
        (json!({"colour": "red"}), 400, "colour"),
        (json!({"name": " "}), 400, "name"),
    ] {
        let (s, v) = admin(&gw, Method::PATCH, &path, Some(body)).await;
        assert_eq!(s.as_u16(), status, "{v}");
        assert!(v.to_string().contains(needle), "{v}");
    }
    let (s, v) = admin(
        &gw,
        Method::POST,
        "/admin/accounts",
        Some(json!({"name": "work-2", "key": "sk-x"})),
    )
    .await;
    assert_eq!(s, 409, "a taken name: {v}");
    let (s, _) = admin(
        &gw,
        Method::POST,
        "/admin/accounts",
        Some(json!({"name": "x", "key": ""})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = admin(&gw, Method::GET, "/admin/accounts/999", None).await;
    assert_eq!(s, 404);
    let (s, _) = admin(&gw, Method::PATCH, "/admin/accounts/nope", Some(json!({}))).await;
    assert_eq!(s, 404);

    let (s, v) = admin(&gw, Method::DELETE, &path, None).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = admin(&gw, Method::GET, &path, None).await;
    assert_eq!(s, 404);
    assert_eq!(
        gw.admin_accounts().await["accounts"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let entries = audit(&gw).await;
    let actions: Vec<(String, Option<String>, u64)> = entries
        .iter()
        .rev()
        .map(|e| {
            assert_eq!(e["actor"], "admin_key");
            assert!(e["at"].as_str().unwrap().ends_with('Z'));
            (
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().map(str::to_string),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let sid = Some(id.to_string());
    let expected_prefix = [
        ("POST /admin/accounts".to_string(), None, 201),
        ("PATCH /admin/accounts/{id}".to_string(), sid.clone(), 200),
        ("PATCH /admin/accounts/{id}".to_string(), sid.clone(), 200),
        (
            "POST /admin/accounts/{id}/disable".to_string(),
            sid.clone(),
            200,
        ),
        (
            "POST /admin/accounts/{id}/enable".to_string(),
            sid.clone(),
            200,
        ),
        (
            "POST /admin/accounts/{id}/reset".to_string(),
            sid.clone(),
            200,
        ),
        (
            "POST /admin/accounts/{id}/refresh".to_string(),
            sid.clone(),
            400,
        ),
    ];
    assert_eq!(
        actions[..expected_prefix.len()],
        expected_prefix[..],
        "{actions:?}"
    );
    let last = actions.last().unwrap();
    assert_eq!(last, &("DELETE /admin/accounts/{id}".to_string(), sid, 200));
    assert!(
        entries.iter().all(|e| e["action"] != "GET /admin/accounts"),
        "reads are not audited"
    );
    let first = entries.last().unwrap();
    assert!(
        first["detail"].as_str().unwrap().contains("work"),
        "{first}"
    );
    assert!(!serde_json::to_string(&entries).unwrap().contains(&key));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_files_in_the_body_are_imported_like_accounts_import() {
    let sim = Simulator::start().await.unwrap();
    let gw = Gateway::start(&sim, "");
    let pair = sim.issue_oauth(Duration::from_secs(3600));
    let expires = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let claude_code = json!({"claudeAiOauth": {
        "accessToken": pair.access_token, "refreshToken": pair.refresh_token,
        "expiresAt": expires, "subscriptionType": "max"}});
    let (s, v) = admin(
        &gw,
        Method::POST,
        "/admin/accounts/import",
        Some(json!({"files": [claude_code.clone(), {"type": "gemini", "access_token": "x"}]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0]["saved"], "created");
    assert_eq!(results[0]["account"]["kind"], "oauth");
    assert_eq!(results[0]["account"]["state"], "ready");
    assert!(
        results[1]["error"].as_str().unwrap().contains("gemini"),
        "{v}"
    );
    assert!(!v.to_string().contains(&pair.access_token));
    assert!(!v.to_string().contains(&pair.refresh_token));

    // It serves through the gateway, and importing it again updates it.
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 200);
    let (s, v) = admin(
        &gw,
        Method::POST,
        "/admin/accounts/import",
        Some(json!({"files": [claude_code]})),
    )
    .await;
    assert_eq!(
        (s, v["results"][0]["saved"].as_str()),
        (StatusCode::OK, Some("updated"))
    );

    let (s, v) = admin(
        &gw,
        Method::POST,
        "/admin/accounts/import",
        Some(json!({"files": []})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = admin(
        &gw,
        Method::POST,
        "/admin/accounts/import",
        Some(json!({"files": ["nope"]})),
    )
    .await;
    assert_eq!(s, 400, "nothing imported: {v}");
    let entries = audit(&gw).await;
    assert_eq!(entries.len(), 4);
    assert!(entries
        .iter()
        .all(|e| e["action"] == "POST /admin/accounts/import"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_login_is_started_and_completed_with_the_pasted_code() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    let mut text = config_text(&dir.0, &sim.base_url(), &sim.token_url(), "");
    text.push_str(&format!(
        "authorize_url = \"{}\"\nprofile_url = \"{}\"\n",
        sim.authorize_url(),
        sim.profile_url()
    ));
    std::fs::write(dir.0.join("gateway.toml"), text).unwrap();
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");

    let (s, v) = admin(
        &gw,
        Method::POST,
        "/admin/oauth/start",
        Some(json!({"name": "me"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let url = v["authorize_url"].as_str().unwrap();
    assert!(url.starts_with(&sim.authorize_url()), "{url}");
    assert!(url.contains("code_challenge_method=S256"));
    // The browser's part: the simulator approves and redirects with code and state.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let callback = r.headers()["location"].to_str().unwrap().to_string();

    let (s, v) = admin(
        &gw,
        Method::POST,
        "/admin/oauth/complete",
        Some(json!({"code": "garbage"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = admin(
        &gw,
        Method::POST,
        "/admin/oauth/complete",
        Some(json!({"code": callback})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["saved"], "created");
    assert_eq!(v["account"]["name"], "me");
    assert_eq!(v["account"]["kind"], "oauth");
    assert!(
        v["account"]["email"]
            .as_str()
            .is_some_and(|e| e.contains('@')),
        "{v}"
    );
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 200);
    let (s, _) = admin(
        &gw,
        Method::POST,
        "/admin/oauth/complete",
        Some(json!({"code": callback})),
    )
    .await;
    assert_eq!(s, 400, "a login completes once");

    let entries = audit(&gw).await;
    let complete: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "POST /admin/oauth/complete" && e["status"] == 200)
        .collect();
    assert_eq!(complete.len(), 1);
    assert!(complete[0]["detail"].as_str().unwrap().contains("me"));
}

/// Logs in with the admin key; returns the session cookie pair and the CSRF token.
async fn login(gw: &Gateway) -> (String, String) {
    let r = client()
        .post(gw.url("/admin/session"))
        .json(&json!({"admin_key": ADMIN_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    (
        cookie.split(';').next().unwrap().to_string(),
        v["csrf_token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_session_needs_its_csrf_token_to_change_anything_and_ends_at_logout() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    let accounts = seed(&dir, vec![api_key_account("a", &sim.new_api_key())]).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let c = client();

    let r = c
        .post(gw.url("/admin/session"))
        .json(&json!({"admin_key": ADMIN_KEY}))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains(ADMIN_KEY));
    // A form post (what a cross-site page could send) is refused.
    let r = c
        .post(gw.url("/admin/session"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("admin_key={ADMIN_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let (cookie, csrf) = login(&gw).await;
    assert!(!set_cookie.contains("Secure") || !cookie.is_empty());
    let r = c
        .get(gw.url("/admin/accounts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(gw.url("/admin/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let who: Value = r.json().await.unwrap();
    assert_eq!(who["csrf_token"], csrf.as_str());
    let actor = who["actor"].as_str().unwrap().to_string();
    assert!(actor.starts_with("session:"), "{actor}");

    let disable = gw.url(&format!("/admin/accounts/{}/disable", accounts[0].id));
    for token in [None, Some("wrong")] {
        let mut req = c.post(&disable).header("cookie", &cookie);
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "CSRF token {token:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "permission_error");
    }
    assert_eq!(
        gw.admin_accounts().await["accounts"][0]["state"],
        "ready",
        "refused calls change nothing"
    );
    // Another site's page cannot call in even with the token; the gateway's own page (same origin) can.
    let r = c
        .post(&disable)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(&disable)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("origin", format!("http://{}", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        gw.admin_accounts().await["accounts"][0]["state"],
        "disabled"
    );

    let r = c
        .delete(gw.url("/admin/session"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let r = c
        .get(gw.url("/admin/accounts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the session ended at logout");

    let entries = audit(&gw).await;
    let by_session: Vec<&str> = entries
        .iter()
        .filter(|e| e["actor"] == actor.as_str())
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        by_session,
        [
            "DELETE /admin/session",
            "POST /admin/accounts/{id}/disable",
            "POST /admin/session"
        ],
        "refused CSRF calls never ran, so they are not actions: {entries:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_throttled_after_repeated_failures() {
    let sim = Simulator::start().await.unwrap();
    let gw = Gateway::start(&sim, "");
    let c = client();
    for i in 0..5 {
        let r = c
            .post(gw.url("/admin/session"))
            .json(&json!({"admin_key": format!("guess-{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "attempt {i}");
    }
    // Now even the right key waits, and so does a guessed Bearer key.
    let r = c
        .post(gw.url("/admin/session"))
        .json(&json!({"admin_key": ADMIN_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let r = c
        .get(gw.url("/admin/accounts"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c
        .post(gw.url("/admin/session"))
        .json(&json!({"admin_key": ADMIN_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "after the wait the right key works");
    let entries = audit(&gw).await;
    assert_eq!(
        entries.iter().filter(|e| e["status"] == 401).count(),
        5,
        "failed logins are audited"
    );
    assert!(
        entries.iter().all(|e| !e.to_string().contains("guess")),
        "guesses are not written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_config_and_overview_show_replicas_redacted_secrets_and_live_figures() {
    let sim = Simulator::start().await.unwrap();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("a", &sim.new_api_key())]).await;
    let data = dir.0.join("data");
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    // A second replica on the same store.
    let dir2 = TempDir::new();
    let mut text = config_text(&dir2.0, &sim.base_url(), &sim.token_url(), "");
    text = text.replace(
        &dir2.0.join("data").display().to_string(),
        &data.display().to_string(),
    );
    std::fs::write(dir2.0.join("gateway.toml"), text).unwrap();
    let gw2 = Gateway::start_in(dir2, &sim.base_url(), &sim.token_url(), "");

    let mut cluster = Value::Null;
    for _ in 0..100 {
        cluster = admin(&gw, Method::GET, "/admin/cluster", None).await.1;
        if cluster["alive"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster["alive"], 2, "{cluster}");
    assert_eq!(cluster["store"]["state"], "ok");
    let replicas = cluster["replicas"].as_array().unwrap();
    assert_eq!(replicas[0]["this"], true);
    assert_ne!(replicas[0]["id"], replicas[1]["id"]);
    for r in replicas {
        assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(r["detail"]["accounts"], 1, "{r}");
    }
    drop(gw2);

    let (s, config) = admin(&gw, Method::GET, "/admin/config", None).await;
    assert_eq!(s, 200);
    let text = config.to_string();
    assert!(
        !text.contains(ADMIN_KEY) && !text.contains(CLIENT_KEY),
        "{text}"
    );
    assert_eq!(config["upstream"]["base_url"], sim.base_url().as_str());
    assert_eq!(config["admin_key"], "<redacted>");

    let c = client();
    for _ in 0..4 {
        assert_eq!(
            post_messages(&c, &gw, message_body("hi", false))
                .await
                .status(),
            200
        );
    }
    sim.push_fault(simulator::Fault::once(simulator::FaultKind::Overloaded));
    let r = post_messages(&c, &gw, message_body("hi", false)).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    let (s, o) = admin(&gw, Method::GET, "/admin/overview", None).await;
    assert_eq!(s, 200);
    let req = &o["requests"];
    assert!(req["requests_per_minute"].as_f64().unwrap() > 0.0, "{o}");
    assert_eq!(req["error_rate"].as_f64().unwrap(), 0.2, "{o}");
    assert!(req["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(req["p99_ms"].as_f64().unwrap() >= req["p50_ms"].as_f64().unwrap());
    assert_eq!(o["accounts_by_state"]["cooling_down"], 1, "{o}");
    // Today's usage comes from the request records, written once a second.
    let mut today = Value::Null;
    for _ in 0..50 {
        today = admin(&gw, Method::GET, "/admin/overview", None).await.1["today"].clone();
        if today["requests"].as_u64() >= Some(4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(today["tokens"].as_u64().unwrap() > 0, "{today}");
    assert!(today["cost_usd"].as_f64().unwrap() > 0.0, "{today}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_listen_puts_the_dashboard_and_admin_api_on_their_own_listener() {
    let sim = Simulator::start().await.unwrap();
    let gw = Gateway::start(&sim, "dashboard_listen = \"127.0.0.1:0\"");
    let mut dash = None;
    for _ in 0..100 {
        if let Some(line) = gw
            .logs()
            .lines()
            .find(|l| l.contains("dashboard on http://"))
        {
            let rest = &line[line.find("http://").unwrap() + 7..];
            dash = Some(rest.split('/').next().unwrap().to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dash = dash.expect("the dashboard listener's address is logged");
    let c = client();
    let r = c
        .get(gw.url("/admin/accounts"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no admin API on the client listener");
    let r = c.get(gw.url("/dashboard")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(format!("http://{dash}/admin/accounts"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("http://{dash}/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(format!("http://{dash}/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .body(message_body("hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no client API on the dashboard listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_a_strict_content_security_policy_and_no_inline_script() {
    let sim = Simulator::start().await.unwrap();
    let gw = Gateway::start(&sim, "");
    let c = client();
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let r = c.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind));
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    let html = c
        .get(gw.url("/dashboard"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for tag in html.split("<script").skip(1) {
        let open = &tag[..tag.find('>').unwrap()];
        assert!(open.contains("src="), "inline script: <script{open}>");
    }
    assert!(!html.contains(" onclick=") && !html.contains(" onload=") && !html.contains("style="));
    let js = c
        .get(gw.url("/dashboard/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for forbidden in ["localStorage", "sessionStorage", "eval(", "innerHTML"] {
        assert!(!js.contains(forbidden), "app.js uses {forbidden}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_every_replica_sees_the_others_and_the_audit_log() {
    let sim = Simulator::start().await.unwrap();
    let pg = common::postgres::Postgres::start();
    let url = pg.database("admin_ops");
    let start = || {
        let dir = TempDir::new();
        Gateway::start_in(
            dir,
            &sim.base_url(),
            &sim.token_url(),
            &format!("store_url = \"{url}\""),
        )
    };
    let (a, b) = (start(), start());
    let (s, v) = admin(
        &a,
        Method::POST,
        "/admin/accounts",
        Some(json!({"name": "shared", "key": sim.new_api_key(), "tags": ["pg"]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["tags"], json!(["pg"]));
    // The other replica sees the action in the shared audit log, and both replicas alive.
    let entries = audit(&b).await;
    assert_eq!(entries[0]["action"], "POST /admin/accounts");
    let mut cluster = Value::Null;
    for _ in 0..100 {
        cluster = admin(&b, Method::GET, "/admin/cluster", None).await.1;
        if cluster["alive"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cluster["alive"], 2, "{cluster}");
    assert_eq!(cluster["store"]["state"], "ok");
    let (s, older) = admin(
        &b,
        Method::GET,
        &format!("/admin/audit?before={}", entries[0]["id"]),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(older["entries"].as_array().unwrap().is_empty());
}
