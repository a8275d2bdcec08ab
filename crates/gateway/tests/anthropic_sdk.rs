//! The gateway end to end with the official `anthropic` Python SDK (tests/python/anthropic_sdk_e2e.py): messages
//! non-stream and streamed, tool use, count_tokens, models, errors, and configuration through ANTHROPIC_BASE_URL /
//! ANTHROPIC_API_KEY, against the real binary and the simulator.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};

use common::python::run;
use common::*;
use simulator::{Fault, FaultKind, Simulator};

/// The `anthropic` package the test installs (checked to install and work with the gateway).
const ANTHROPIC_SDK_VERSION: &str = "2.14.0";

/// A virtual environment with the pinned `anthropic` package under `target/anthropic-venv`, created once and reused.
async fn anthropic_venv() -> PathBuf {
    common::python::venv("anthropic-venv", &[("anthropic", ANTHROPIC_SDK_VERSION)]).await
}

/// The script run by `python` in phase `phase`, with no ANTHROPIC_* variables from the test's environment (an
/// ANTHROPIC_AUTH_TOKEN, a profile or custom headers there would change what the SDK sends).
fn script(python: &Path, phase: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/anthropic_sdk_e2e.py"))
        .arg(phase)
        .args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("ANTHROPIC_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn assert_steps(out: &str, steps: &[&str]) {
    for step in steps {
        assert!(
            out.lines().any(|l| l == format!("ok {step}")),
            "ok {step} missing:\n{out}"
        );
    }
}

#[tokio::test]
async fn anthropic_python_sdk_end_to_end() {
    let python = anthropic_venv().await;
    let sim = Simulator::start().await.unwrap();
    let key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("key-1", &key)]).await;
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let base = gw.url("");

    let out = run(
        &mut script(&python, "main", &[&base, CLIENT_KEY]),
        "anthropic SDK script (main)",
    )
    .await;
    assert_steps(
        &out,
        &[
            "models",
            "non-stream",
            "stream helper",
            "stream events",
            "tools",
            "count_tokens",
            "auth error",
        ],
    );
    let version = out
        .lines()
        .find_map(|l| l.strip_prefix("anthropic-version "))
        .unwrap();
    let recs = sim.requests();
    let paths: Vec<&str> = recs.iter().map(|r| r.path.as_str()).collect();
    assert!(
        paths.contains(&"/v1/messages/count_tokens")
            && paths.contains(&"/v1/models")
            && paths.contains(&"/v1/models/claude-sonnet-4-5")
            && paths.contains(&"/v1/models/claude-no-such-model"),
        "{paths:?}"
    );
    for r in &recs {
        assert_eq!(r.credential.as_deref(), Some(key.as_str()), "{}", r.path);
        assert_eq!(
            r.header("anthropic-version"),
            Some(version),
            "the SDK's API version is forwarded"
        );
        assert_eq!(
            r.header("x-stainless-lang"),
            Some("python"),
            "SDK headers pass"
        );
        assert!(
            r.headers.iter().all(|(_, v)| !v.contains(CLIENT_KEY)),
            "client key never reaches upstream"
        );
    }
    assert!(
        recs.iter()
            .all(|r| r.credential.as_deref() != Some("sk-gw-wrong")),
        "wrong-key requests never reached upstream"
    );
    let streamed = recs
        .iter()
        .filter(|r| r.json().is_some_and(|v| v["stream"] == true))
        .count();
    assert_eq!(streamed, 3, "stream helper ×2 and create(stream=True)");

    // An upstream 400 reaches the SDK as BadRequestError, with the upstream message and a request id.
    sim.push_fault(Fault::once(FaultKind::Status {
        status: 400,
        error_type: "invalid_request_error".into(),
        message: "stop_sequences: each stop sequence must contain non-whitespace".into(),
        headers: vec![],
    }));
    let out = run(
        &mut script(&python, "bad_request", &[&base, CLIENT_KEY]),
        "anthropic SDK script (bad_request)",
    )
    .await;
    assert_steps(&out, &["bad request"]);

    // An upstream `event: error` after text reaches the SDK as an APIStatusError mid-stream.
    sim.push_fault(Fault::once(FaultKind::StreamError { after_events: 4 }));
    let out = run(
        &mut script(&python, "stream_error", &[&base, CLIENT_KEY]),
        "anthropic SDK script (stream_error)",
    )
    .await;
    assert_steps(&out, &["stream error"]);

    // The way Claude Code and most tools are pointed at the gateway: environment variables only.
    let config_dir = TempDir::new();
    let out = run(
        script(&python, "env", &[])
            .env("ANTHROPIC_BASE_URL", &base)
            .env("ANTHROPIC_API_KEY", CLIENT_KEY)
            // No credentials profile on disk may take part.
            .env("ANTHROPIC_CONFIG_DIR", &config_dir.0),
        "anthropic SDK script (env)",
    )
    .await;
    assert_steps(&out, &["env"]);
    let last = sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/messages")
        .unwrap();
    assert_eq!(last.credential.as_deref(), Some(key.as_str()));
    assert!(String::from_utf8_lossy(&last.body).contains("from env"));
}
