//! Shared harness of the integration tests: a temp dir, a config, the real `claude-gateway` binary on port 0 against
//! the in-repo simulator.
#![allow(dead_code, clippy::disallowed_methods)]

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use claude_gateway::account::{Account, AccountKind, Credential, NewAccount};
use claude_gateway::store::sqlite::SqliteStore;
use claude_gateway::store::Store;
use simulator::Simulator;

pub mod codex;
pub mod postgres;
pub mod python;

pub const CLIENT_KEY: &str = "sk-gw-test-client";
pub const ADMIN_KEY: &str = "test-admin-key";

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "cgw-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A config text pointing at `sim`, with `extra` appended (TOML; `client_keys` there replaces the default).
pub fn config_text(dir: &Path, upstream: &str, token_url: &str, extra: &str) -> String {
    let client_keys = if extra.contains("client_keys") {
        String::new()
    } else {
        format!("client_keys = [\"{CLIENT_KEY}\"]")
    };
    format!(
        r#"listen = "127.0.0.1:0"
data_dir = "{data}"
{client_keys}
admin_key = "{ADMIN_KEY}"
{extra}
[upstream]
base_url = "{upstream}"
connect_timeout_secs = 2
read_timeout_secs = 5
[oauth]
token_url = "{token_url}"
"#,
        data = dir.join("data").display()
    )
}

pub struct Gateway {
    pub dir: TempDir,
    pub config: PathBuf,
    pub addr: SocketAddr,
    child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
    env: Vec<(String, String)>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_claude-gateway")
}

impl Gateway {
    /// Writes the config (`extra` goes at the top level; sections may follow as long as they are not [upstream] or
    /// [oauth]) and starts the binary.
    pub fn start(sim: &Simulator, extra: &str) -> Gateway {
        let dir = TempDir::new();
        Gateway::start_in(dir, &sim.base_url(), &sim.token_url(), extra)
    }

    pub fn start_in(dir: TempDir, upstream: &str, token_url: &str, extra: &str) -> Gateway {
        Gateway::start_in_env(dir, upstream, token_url, extra, &[])
    }

    /// [`Gateway::start_in`] with extra environment variables for the process (kept for restarts).
    pub fn start_in_env(
        dir: TempDir,
        upstream: &str,
        token_url: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        let config = dir.0.join("gateway.toml");
        if !config.exists() {
            std::fs::write(&config, config_text(&dir.0, upstream, token_url, extra)).unwrap();
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (child, addr, log) = spawn(&config, &env);
        Gateway {
            dir,
            config,
            addr,
            child,
            log,
            env,
        }
    }

    /// The process id of the running gateway (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit on its own; `None` if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.dir.0.join("data")).await.unwrap()
    }

    /// Runs a CLI command against this gateway's config.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// Kills the process with SIGKILL (no graceful shutdown) and starts it again on a new port.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Kills the process with SIGKILL (no graceful shutdown); [`Self::start_again`] starts a new one.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new process on the same config and data dir, on a new port.
    pub fn start_again(&mut self) {
        let (child, addr, log) = spawn(&self.config, &self.env);
        self.child = child;
        self.addr = addr;
        self.log = log;
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until the gateway's pool has picked up store changes (it polls the store every second).
    pub async fn wait_accounts(&self, n: usize) {
        let client = reqwest::Client::new();
        for _ in 0..100 {
            let v: serde_json::Value = client
                .get(self.url("/admin/accounts"))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["accounts"].as_array().map(Vec::len) == Some(n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway never saw {n} accounts");
    }

    pub async fn admin_accounts(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(self.url("/admin/accounts"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn spawn(config: &Path, env: &[(String, String)]) -> (Child, SocketAddr, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(bin())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("CLAUDE_GATEWAY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(i) = line.find("listening on http://") {
                let rest = &line[i + "listening on http://".len()..];
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
            log2.lock().unwrap().push(line);
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(a) => a.parse().unwrap(),
        Err(_) => {
            let _ = child.kill();
            panic!("gateway did not start: {}", log.lock().unwrap().join("\n"));
        }
    };
    (child, addr, log)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn api_key_account(name: &str, key: &str) -> NewAccount {
    NewAccount::api_key(name.into(), key.into())
}

pub fn oauth_account(
    name: &str,
    access: &str,
    refresh: &str,
    expires_in: chrono::Duration,
) -> NewAccount {
    NewAccount {
        name: name.into(),
        kind: AccountKind::Oauth,
        credential: Credential {
            secret: access.into(),
            refresh_token: Some(refresh.into()),
            expires_at: Some(chrono::Utc::now() + expires_in),
        },
        identity: Default::default(),
        priority: 0,
        weight: 1,
        disabled: false,
    }
}

/// Creates the data dir's store with these accounts before the gateway starts.
pub async fn seed(dir: &TempDir, accounts: Vec<NewAccount>) -> Vec<Account> {
    let store = SqliteStore::open(&dir.0.join("data")).await.unwrap();
    let mut out = Vec::new();
    for a in accounts {
        out.push(store.insert_account(a).await.unwrap());
    }
    out
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

pub fn message_body(text: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"{text}"}}]}}"#
    )
}

/// Sends a messages request with the client key.
pub async fn post_messages(
    client: &reqwest::Client,
    gw: &Gateway,
    body: String,
) -> reqwest::Response {
    client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}
