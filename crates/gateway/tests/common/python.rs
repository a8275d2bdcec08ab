//! Python virtual environments with pinned SDKs for the end-to-end tests (`openai`, `anthropic`), created once under
//! the target directory and reused. They fail the test loudly, never skip it, when Python or pip cannot make one.
#![allow(dead_code, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

/// Runs a command to completion, failing the test loudly with its output if it does not succeed; returns its stdout.
pub async fn run(cmd: &mut tokio::process::Command, what: &str) -> String {
    let out = cmd
        .output()
        .await
        .unwrap_or_else(|e| panic!("{what}: could not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A virtual environment `target/{name}` with each `(package, version)` of `packages` installed; returns its python.
///
/// Concurrent test processes are safe: each builds in its own temporary directory and publishes it with an atomic
/// rename; a loser discards its copy and uses the winner's. The directory holds a `{package}-version` file per
/// package only once complete, so a venv with other versions (or an unfinished copy) is replaced.
pub async fn venv(name: &str, packages: &[(&str, &str)]) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let venv = target.join(name);
    let complete = |dir: &Path| {
        packages.iter().all(|(pkg, version)| {
            std::fs::read_to_string(dir.join(format!("{pkg}-version")))
                .ok()
                .as_deref()
                == Some(*version)
        })
    };
    if complete(&venv) {
        return venv.join("bin").join("python");
    }
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let tmp = target.join(format!("{name}.tmp-{nonce}"));
    run(
        tokio::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&tmp),
        "python3 -m venv (install python3 and python3-venv)",
    )
    .await;
    let specs: Vec<String> = packages
        .iter()
        .map(|(pkg, version)| format!("{pkg}=={version}"))
        .collect();
    run(
        tokio::process::Command::new(tmp.join("bin").join("python"))
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(&specs),
        &format!("pip install {}", specs.join(" ")),
    )
    .await;
    for (pkg, version) in packages {
        std::fs::write(tmp.join(format!("{pkg}-version")), version).unwrap();
    }
    if venv.exists() && !complete(&venv) {
        // Other versions (or an unfinished copy): move it aside, then remove it.
        let old = target.join(format!("{name}.old-{nonce}"));
        if std::fs::rename(&venv, &old).is_ok() {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    if std::fs::rename(&tmp, &venv).is_err() {
        let _ = std::fs::remove_dir_all(&tmp); // another process published first
    }
    assert!(complete(&venv), "no usable venv at {}", venv.display());
    venv.join("bin").join("python")
}
