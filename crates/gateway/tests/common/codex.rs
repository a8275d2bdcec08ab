//! Codex CLI (npm `@openai/codex`, a pinned version) installed once under the target directory, and run offline
//! against the gateway as a custom Responses provider. Fails the test loudly, never skips it, when npm cannot install.
#![allow(dead_code, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

use super::python::run;

/// The Codex CLI version the tests install (checked to work with the gateway).
pub const CODEX_VERSION: &str = "0.171.0";

/// `target/codex-npm/node_modules/.bin/codex`, installing the pinned version first when missing. Concurrent test
/// processes are safe: each installs into its own directory and publishes it with an atomic rename.
pub async fn codex() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let dir = target.join("codex-npm");
    let bin = |d: &Path| d.join("node_modules").join(".bin").join("codex");
    let marker = |d: &Path| d.join("codex-version");
    let complete = |d: &Path| {
        std::fs::read_to_string(marker(d)).ok().as_deref() == Some(CODEX_VERSION) && bin(d).exists()
    };
    if complete(&dir) {
        return bin(&dir);
    }
    let tmp = target.join(format!("codex-npm.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    run(
        tokio::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&tmp)
            .arg(format!("@openai/codex@{CODEX_VERSION}")),
        "npm install @openai/codex (install node and npm: .ci/setup)",
    )
    .await;
    std::fs::write(marker(&tmp), CODEX_VERSION).unwrap();
    if dir.exists() && !complete(&dir) {
        let old = target.join(format!("codex-npm.old-{}", std::process::id()));
        if std::fs::rename(&dir, &old).is_ok() {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp); // another process published first
    }
    assert!(complete(&dir), "no usable Codex at {}", dir.display());
    bin(&dir)
}

/// The exact `config.toml` the README documents, pointing Codex at `base_url` (`http://127.0.0.1:PORT/v1`).
pub fn config_toml(base_url: &str) -> String {
    format!(
        r#"model_provider = "gw"
model = "claude-sonnet-4-5"

[model_providers.gw]
name = "claude-gateway"
base_url = "{base_url}"
env_key = "CLAUDE_GATEWAY_KEY"
wire_api = "responses"
"#
    )
}

/// What the tests add to the documented config so Codex stays offline: no update check, no analytics, no plugin,
/// app or update syncs (this machine reaches nothing but the gateway on loopback).
pub const OFFLINE: &str = r#"check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
plugin_sharing = false
apps = false
in_app_updates = false
"#;

/// Runs `codex exec --skip-git-repo-check PROMPT` in `work` with `$HOME` = `home` (holding `.codex/config.toml`);
/// returns (success, stdout, stderr).
pub async fn exec(
    codex: &Path,
    home: &Path,
    work: &Path,
    key: &str,
    prompt: &str,
) -> (bool, String, String) {
    let out = tokio::process::Command::new(codex)
        .args([
            "exec",
            "--skip-git-repo-check",
            "--sandbox",
            "danger-full-access",
            prompt,
        ])
        .current_dir(work)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("CODEX_HOME", home.join(".codex"))
        .env("CLAUDE_GATEWAY_KEY", key)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("codex exec did not finish within 120 s")
        .expect("codex exec could not start");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
