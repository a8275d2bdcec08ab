//! Issue 11, "secrets at rest": credentials encrypted in SQLite and PostgreSQL with a key from a file or the
//! environment; `store encrypt` and `store rotate-key`; a clear error when the key is missing or wrong. Real binary
//! against the simulator (and a throwaway PostgreSQL).
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use claude_gateway::store::encryption::{Encryption, KEY_ENV};
use claude_gateway::store::sqlite::SqliteStore;
use claude_gateway::store::Store;
use common::postgres::Postgres;
use common::*;
use simulator::Simulator;

const KEY_A: &str = "4f1c0f8e2b7d4a3c9e6f5a1b2c3d4e5f60718293a4b5c6d7e8f9011223344556";
const KEY_B: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";

/// Writes a key file (0600) and returns its path.
fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// Every byte of the SQLite files in `data` (the database and its WAL).
fn database_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(data).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Runs `serve` with `config` and `env` until it says it listens (Ok(log)) or exits (Err(log)).
fn serve_outcome(config: &Path, env: &[(&str, &str)]) -> Result<String, String> {
    let mut child = Command::new(bin())
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env_remove(KEY_ENV)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut log = String::new();
    let mut listening = false;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening on http://") {
            listening = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    if listening {
        Ok(log)
    } else {
        Err(log)
    }
}

fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove(KEY_ENV)
        .output()
        .unwrap()
}

fn write_config(dir: &TempDir, sim: &Simulator, extra: &str) -> PathBuf {
    let path = dir.0.join("gateway.toml");
    std::fs::write(
        &path,
        config_text(&dir.0, &sim.base_url(), &sim.token_url(), extra),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn credentials_are_encrypted_at_rest_and_the_key_is_needed_to_start() {
    let sim = Simulator::start().await.unwrap();
    let api_key = sim.new_api_key();
    let dir = TempDir::new();
    let key = key_file(&dir.0, "store.key", KEY_A);
    let with_key = format!("store_key_file = \"{}\"", key.display());
    let config = write_config(&dir, &sim, &with_key);
    let out = cli(
        &config,
        &["accounts", "add-key", "--name", "work", &api_key],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An OAuth account written through the library with the same key.
    let store = SqliteStore::open(&dir.0.join("data"))
        .await
        .unwrap()
        .with_encryption(Encryption::from_file(&key).unwrap());
    store
        .insert_account(oauth_account(
            "me",
            "sk-ant-oat01-secret-access",
            "sk-ant-ort01-secret-refresh",
            chrono::Duration::hours(8),
        ))
        .await
        .unwrap();
    drop(store);

    // No credential is visible in the database files.
    let bytes = database_bytes(&dir.0.join("data"));
    for secret in [
        api_key.as_str(),
        "sk-ant-oat01-secret-access",
        "sk-ant-ort01-secret-refresh",
    ] {
        assert!(
            !contains(&bytes, secret),
            "{secret} is readable in the database file"
        );
    }
    assert!(contains(&bytes, "enc:v1:"));

    // With the key the gateway starts and uses the credential.
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(sim
        .requests()
        .iter()
        .any(|q| q.credential.as_deref() == Some(api_key.as_str())));
    let config = gw.config.clone();
    let dir_path = gw.dir.0.clone();
    drop(sim);

    // Without the key it refuses to start, and says why.
    let plain = dir_path.join("plain.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&with_key, "");
    std::fs::write(&plain, text).unwrap();
    let err = serve_outcome(&plain, &[]).unwrap_err();
    assert!(err.contains("encrypted") && err.contains(KEY_ENV), "{err}");
    // With another key too.
    let err = serve_outcome(&plain, &[(KEY_ENV, KEY_B)]).unwrap_err();
    assert!(err.contains("not with the configured key"), "{err}");
    // The key may come from the environment instead of a file.
    serve_outcome(&plain, &[(KEY_ENV, KEY_A)]).unwrap();
    // The key never appears in what the gateway says.
    let log = serve_outcome(&config, &[]).unwrap();
    assert!(!log.contains(KEY_A), "{log}");
    drop(gw);
}

#[tokio::test]
async fn store_encrypt_seals_a_plain_store_and_rotate_key_moves_it_to_a_new_key() {
    let sim = Simulator::start().await.unwrap();
    let api_key = sim.new_api_key();
    let dir = TempDir::new();
    seed(&dir, vec![api_key_account("work", &api_key)]).await;
    assert!(
        contains(&database_bytes(&dir.0.join("data")), &api_key),
        "plain text before"
    );
    let key_a = key_file(&dir.0, "a.key", KEY_A);
    let key_b = key_file(&dir.0, "b.key", KEY_B);
    let config_a = write_config(
        &dir,
        &sim,
        &format!("store_key_file = \"{}\"", key_a.display()),
    );

    let out = cli(&config_a, &["store", "encrypt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 account"),
        "{out:?}"
    );
    let bytes = database_bytes(&dir.0.join("data"));
    assert!(
        !contains(&bytes, &api_key),
        "no plain text left after store encrypt"
    );
    serve_outcome(&config_a, &[]).unwrap();

    let out = cli(
        &config_a,
        &[
            "store",
            "rotate-key",
            "--new-key-file",
            key_b.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = serve_outcome(&config_a, &[]).unwrap_err();
    assert!(err.contains("not with the configured key"), "{err}");
    let config_b = dir.0.join("b.toml");
    std::fs::write(
        &config_b,
        std::fs::read_to_string(&config_a)
            .unwrap()
            .replace("a.key", "b.key"),
    )
    .unwrap();
    serve_outcome(&config_b, &[]).unwrap();
    // And the credential still works with the new key.
    let store = SqliteStore::open(&dir.0.join("data"))
        .await
        .unwrap()
        .with_encryption(Encryption::from_file(&key_b).unwrap());
    assert_eq!(
        store.list_accounts().await.unwrap()[0].credential.secret,
        api_key
    );
    // A store command without a key says what is missing.
    let plain = dir.0.join("plain.toml");
    std::fs::write(
        &plain,
        config_text(&dir.0, &sim.base_url(), &sim.token_url(), ""),
    )
    .unwrap();
    let out = cli(&plain, &["store", "encrypt"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(KEY_ENV),
        "{out:?}"
    );
}

#[tokio::test]
async fn credentials_in_postgresql_are_encrypted_too() {
    let pg = Postgres::start();
    let url = pg.database("enc");
    let sim = Simulator::start().await.unwrap();
    let api_key = sim.new_api_key();
    let dir = TempDir::new();
    let key = key_file(&dir.0, "store.key", KEY_A);
    let config = write_config(
        &dir,
        &sim,
        &format!(
            "store_url = \"{url}\"\nstore_key_file = \"{}\"",
            key.display()
        ),
    );
    let out = cli(
        &config,
        &["accounts", "add-key", "--name", "work", &api_key],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = pg.query("enc", "SELECT secret FROM accounts");
    assert!(
        stored.contains("enc:v1:") && !stored.contains(&api_key),
        "{stored}"
    );
    let gw = Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), "");
    let r = post_messages(&client(), &gw, message_body("hi", false)).await;
    assert_eq!(r.status(), 200);
    assert!(sim
        .requests()
        .iter()
        .any(|q| q.credential.as_deref() == Some(api_key.as_str())));
}
