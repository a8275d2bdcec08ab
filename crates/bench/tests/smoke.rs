//! The benchmark suite's smoke mode: every scenario for a moment at tiny rates against the workspace's debug binaries.
//! It asserts only that the suite runs and writes a complete report (no LiteLLM, no network).
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>`: this test runs as `target/<profile>/deps/smoke-<hash>`, next to which cargo puts the workspace's
/// binaries (`cargo test --workspace` builds them all before running any test).
fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable without a target directory")
        .to_path_buf()
}

#[test]
fn smoke_runs_every_scenario_and_reports() {
    let dir = binaries_dir();
    let gateway = dir.join("claude-gateway");
    let simulator = dir.join("anthropic-simulator");
    for bin in [&gateway, &simulator] {
        assert!(
            bin.is_file(),
            "{} is missing: build the workspace's binaries first (`cargo test --workspace` does, or \
             `cargo build -p claude-gateway -p claude-gateway-simulator`)",
            bin.display()
        );
    }
    let tmp = std::env::temp_dir().join(format!("cgw-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let out = tmp.join("BENCHMARKS.smoke.md");

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_claude-gateway-bench"))
        .arg("--smoke")
        .arg("--gateway-bin")
        .arg(&gateway)
        .arg("--simulator-bin")
        .arg(&simulator)
        .arg("--out")
        .arg(&out)
        .args([
            "--build",
            "debug (smoke test)",
            "--command",
            "cargo test -p claude-gateway-bench",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the smoke run did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.success(),
        "the smoke run failed ({status}); if the simulator rejects --stats-listen its binary is stale, rebuild the \
         workspace.\n{stderr}"
    );
    let elapsed = started.elapsed();

    let report = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
    let mut headings = vec![
        "**Smoke run**",
        "- **Machine:**",
        "- **Command:** `cargo test -p claude-gateway-bench`",
        "- **Upstreams:** sections 1–7 use the fast upstream",
        "## Targets",
        "## 1. Latency",
        "The paths are measured at once, paired",
        "| A/A: direct's alternate halves |",
        "## 2. Maximum throughput",
        "## 3. CPU per request at fixed rates",
        "## 4. Streaming",
        "## 5. Large bodies",
        "## 6. What the newer features cost",
        "**Managed keys (issue 12)",
        "| A2 − A (the noise floor) |",
        "| **Chat Completions − Messages** |",
        "| **Responses − Messages** |",
        "## 7. Pool scale",
        "accounts − 1 account** |",
        "| A/A: the 1-account gateway's alternate halves |",
        "## 8. Memory",
        "## 9. Refresh stampede",
        "**gateway − direct**",
        "| hyper proxy − direct |",
        "Token-endpoint calls during the stampede:",
    ];
    // nginx is the floor when it is installed (`.ci/setup` installs it); without it the report says how to get it.
    if std::path::Path::new("/usr/sbin/nginx").is_file() {
        headings.extend(["- **Floor:** nginx ", "| nginx − direct |", "÷ nginx"]);
    } else {
        headings.push("`apt-get install nginx`");
    }
    for heading in headings {
        assert!(
            report.contains(heading),
            "the report lacks {heading:?}:\n{report}"
        );
    }
    // The managed key's requests reach the store's usage rollups.
    let counted: u64 = report
        .split("The store's rollups count **")
        .nth(1)
        .and_then(|rest| rest.split("**").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        counted > 0,
        "no usage recorded for the managed key:\n{report}"
    );
    assert!(
        elapsed < Duration::from_secs(30),
        "the smoke run took {elapsed:?}: keep it well under 30 s"
    );
}
