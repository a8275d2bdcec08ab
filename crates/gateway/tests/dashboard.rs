//! Issue 13: the dashboard in headless Chromium (Debian's `chromium`, driven by Playwright for Python with the system
//! browser — no browser download): log in, add an API-key account, create a client key and read it once, send
//! traffic, see the overview, the usage chart and the request log fill, see the account flip to "needs login" when the
//! simulator revokes its key, revoke the client key and see its requests refused. Screenshots of each page go to
//! `target/dashboard-screenshots` (the ones in `docs/` were taken by this test).
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use simulator::Simulator;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The Playwright release whose driver speaks to the system Chromium (installed once into `target/playwright-venv`).
const PLAYWRIGHT: &str = "1.65.2";
const CHROMIUM: &str = "/usr/bin/chromium";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_runs_the_pool_from_the_dashboard_in_headless_chromium() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run .ci/setup (it installs Debian's chromium)"
    );
    let python = python::venv("playwright-venv", &[("playwright", PLAYWRIGHT)]).await;
    let sim = Simulator::start().await.unwrap();
    let upstream_key = sim.new_api_key();
    let gw = Gateway::start(&sim, "");
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap();
    let shots = target.join("dashboard-screenshots");
    let profile = TempDir::new();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard/browser.py");

    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(gw.url(""))
        .arg(ADMIN_KEY)
        .arg(&upstream_key)
        .arg(&shots)
        .arg(&profile.0)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut steps = Vec::new();
    let run = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line == "NEED revoke" {
                sim.revoke_api_key(&upstream_key);
                stdin.write_all(b"OK\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
            steps.push(line);
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test did not finish in 4 minutes");
    let stderr = errors.await.unwrap();
    assert!(
        status.success() && steps.last().map(String::as_str) == Some("DONE"),
        "the browser test failed after {steps:?}:\n{stderr}\ngateway log:\n{}",
        gw.logs()
    );

    // What the page did is what the admin API saw, done by a session.
    let audit: serde_json::Value = client()
        .get(gw.url("/admin/audit"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_session: Vec<String> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["actor"].as_str().unwrap().starts_with("session:")
                && e["status"].as_u64().unwrap() < 300
        })
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for action in [
        "POST /admin/accounts",
        "POST /admin/keys",
        "DELETE /admin/keys/{id}",
        "DELETE /admin/session",
    ] {
        assert!(
            by_session.iter().any(|a| a == action),
            "{action} not audited as the session: {by_session:?}"
        );
    }
    for page in [
        "overview", "accounts", "keys", "usage", "requests", "audit", "cluster", "phone",
    ] {
        let shot = shots.join(format!("dashboard-{page}.png"));
        assert!(
            std::fs::metadata(&shot)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "no screenshot {}",
            shot.display()
        );
    }
}
