//! The processes under test (simulator, gateway, LiteLLM), their start-up, and what `/proc` says about them.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};

/// Linux reports process CPU times in clock ticks of `USER_HZ`, which is 100 on every architecture it supports.
const TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU time of one process, in seconds.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let (user, sys) = cpu_times(pid)?;
    Ok(user + sys)
}

/// (user, system) CPU time of one process, in seconds.
pub fn cpu_times(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) … utime(14) stime(15), i.e. indexes 11 and 12 here.
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?
            .parse::<u64>()
            .map_err(|e| anyhow!("/proc/{pid}/stat: {e}"))
    };
    Ok((
        field(11)? as f64 / TICKS_PER_SEC,
        field(12)? as f64 / TICKS_PER_SEC,
    ))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and all of its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                if let Some(pp) = parent_of(p) {
                    all.push((p, pp));
                }
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// (user, system) CPU seconds of a process and its descendants (LiteLLM may fork workers).
pub fn tree_cpu_times(pid: u32) -> anyhow::Result<(f64, f64)> {
    let (mut user, mut sys) = cpu_times(pid)?;
    for p in tree(pid).into_iter().skip(1) {
        let (u, s) = cpu_times(p).unwrap_or((0.0, 0.0));
        user += u;
        sys += s;
    }
    Ok((user, sys))
}

/// A `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// Resident set size in MB (10^6 bytes; the kernel's "kB" are KiB).
pub fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    Ok(kib_to_mb(status_kb(pid, "VmRSS")?))
}

pub fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory under `base` (the system temp dir when `None`).
    pub fn new(base: Option<&Path>, label: &str) -> anyhow::Result<TempDir> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = base
            .map(Path::to_path_buf)
            .unwrap_or_else(std::env::temp_dir);
        let p = base.join(format!(
            "cgw-bench-{}-{}-{label}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) when dropped, with the last lines of its output kept for error messages.
pub struct Proc {
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
}

const TAIL_LINES: usize = 40;

impl Proc {
    /// Spawns `cmd` (its stdout and stderr are piped) and waits until one of its output lines contains every one of
    /// `markers`; returns the process and, for each marker, the rest of the first line that held it.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        markers: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<(Proc, Vec<String>)> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(out) = child.stdout.take() {
            pump(out, tail.clone(), tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, tail.clone(), tx);
        }
        let mut proc = Proc { child, tail };
        let mut found: Vec<Option<String>> = vec![None; markers.len()];
        let deadline = Instant::now() + timeout;
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    for (i, m) in markers.iter().enumerate() {
                        if found[i].is_none() {
                            if let Some(pos) = line.find(m) {
                                found[i] = Some(line[pos + m.len()..].trim().to_string());
                            }
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "{name} did not say {markers:?} within {timeout:?}; its output:\n{}",
                        proc.tail()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = proc.child.wait().ok();
                    bail!(
                        "{name} exited ({status:?}) before saying {markers:?}; its output:\n{}",
                        proc.tail()
                    )
                }
            }
        }
        let _ = proc.child.try_wait();
        Ok((proc, found.into_iter().flatten().collect()))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has it exited (and been reaped)?
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The last lines it printed.
    pub fn tail(&self) -> String {
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads lines of `from` into `tail` (bounded) and sends them to `tx` while anyone listens.
fn pump(
    from: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    {
                        let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                        if t.len() >= TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(line.clone());
                    }
                    let _ = tx.send(line);
                }
            }
        }
    });
}

/// `bin`, or `wrapper[0] wrapper[1..] bin`.
fn wrapped(wrapper: &[String], bin: &Path) -> Command {
    match wrapper.split_first() {
        None => Command::new(bin),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
    }
}

/// A running `anthropic-simulator`.
pub struct Sim {
    pub proc: Proc,
    pub base_url: String,
    pub stats_url: String,
}

impl Sim {
    /// Starts the simulator on a free loopback port with `--accept-any-key --latency-ms 0`, its stats listener, and
    /// `extra` arguments.
    pub fn start(bin: &Path, extra: &[String]) -> anyhow::Result<Sim> {
        Sim::start_wrapped(&[], bin, extra, Duration::from_secs(20))
    }

    /// Like [`Sim::start`], run under `wrapper` (e.g. valgrind and its options) when it is not empty.
    pub fn start_wrapped(
        wrapper: &[String],
        bin: &Path,
        extra: &[String],
        timeout: Duration,
    ) -> anyhow::Result<Sim> {
        let mut cmd = wrapped(wrapper, bin);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--accept-any-key",
            "--latency-ms",
            "0",
            "--stats-listen",
            "127.0.0.1:0",
        ])
        .args(extra);
        let (proc, found) = Proc::spawn(
            "anthropic-simulator",
            cmd,
            &["listening on ", "stats on "],
            timeout,
        )
        .context(
            "the simulator binary may be stale (it needs --stats-listen): rebuild the workspace",
        )?;
        let base_url = found.first().cloned().unwrap_or_default();
        let stats_url = found.get(1).cloned().unwrap_or_default();
        host_port(&base_url)?;
        Ok(Sim {
            proc,
            base_url,
            stats_url,
        })
    }

    pub fn token_url(&self) -> String {
        format!("{}/v1/oauth/token", self.base_url)
    }

    /// `GET /_sim/stats`.
    pub async fn stats(&self) -> anyhow::Result<serde_json::Value> {
        let v = reqwest::get(&self.stats_url)
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(v)
    }

    pub async fn token_calls(&self) -> anyhow::Result<u64> {
        self.stats()
            .await?
            .get("token_calls")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| anyhow!("stats without token_calls"))
    }
}

/// `127.0.0.1:PORT` of `http://127.0.0.1:PORT[/…]`.
pub fn host_port(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {url}"))?;
    let hp = rest.split('/').next().unwrap_or(rest);
    hp.parse()
        .map_err(|e| anyhow!("bad address in {url:?}: {e}"))
}

pub const CLIENT_KEY: &str = "sk-gw-bench-client";
pub const ADMIN_KEY: &str = "bench-admin-key";

/// A gateway configuration in its own directory.
pub struct GatewayDir {
    pub dir: TempDir,
    pub config: PathBuf,
}

impl GatewayDir {
    /// Writes `gateway.toml` pointing at `sim` (store in `dir/data`); the proactive refresher scans once an hour so
    /// that only requests trigger refreshes.
    pub fn new(base: Option<&Path>, label: &str, sim: &Sim) -> anyhow::Result<GatewayDir> {
        GatewayDir::with_upstream(base, label, &sim.base_url, &sim.token_url())
    }

    /// Like [`GatewayDir::new`], for any upstream (`upstream` serves the Messages API, `token_url` OAuth refreshes).
    pub fn with_upstream(
        base: Option<&Path>,
        label: &str,
        upstream: &str,
        token_url: &str,
    ) -> anyhow::Result<GatewayDir> {
        let dir = TempDir::new(base, label)?;
        let config = dir.path().join("gateway.toml");
        let text = format!(
            r#"listen = "127.0.0.1:0"
data_dir = "{data}"
client_keys = ["{CLIENT_KEY}"]
admin_key = "{ADMIN_KEY}"

[upstream]
base_url = "{upstream}"

[oauth]
token_url = "{token_url}"

[refresh]
scan_interval_secs = 3600

# The load client's own pool can hold more connections than a burst's size (it opens one when no idle one is back
# yet): with the default cap (1024) a 1000-request burst could fill the gateway's slots with the client's idle
# keep-alive connections, and the next connection (an admin or metrics read) then waits in the backlog past its
# connect timeout. The cap is not what these scenarios measure.
[listener]
max_connections = 4096
"#,
            data = dir.path().join("data").display(),
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        Ok(GatewayDir { dir, config })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a `claude-gateway` CLI command against this config.
    pub fn cli(&self, bin: &Path, args: &[&str]) -> anyhow::Result<()> {
        self.cli_output(bin, args).map(|_| ())
    }

    /// Runs a `claude-gateway` CLI command against this config and returns its stdout.
    pub fn cli_output(&self, bin: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(bin)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} {args:?}", bin.display()))?;
        if !out.status.success() {
            bail!(
                "claude-gateway {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A running gateway.
pub struct Gateway {
    pub proc: Proc,
    pub base_url: String,
}

impl Gateway {
    pub fn start(bin: &Path, dir: &GatewayDir) -> anyhow::Result<Gateway> {
        Gateway::start_wrapped(&[], bin, dir)
    }

    /// Like [`Gateway::start`], run under `wrapper` when it is not empty.
    pub fn start_wrapped(
        wrapper: &[String],
        bin: &Path,
        dir: &GatewayDir,
    ) -> anyhow::Result<Gateway> {
        let mut cmd = wrapped(wrapper, bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(&dir.config)
            .env("CLAUDE_GATEWAY_LOG", "info");
        let (proc, found) = Proc::spawn(
            "claude-gateway",
            cmd,
            &["listening on http://"],
            Duration::from_secs(120),
        )?;
        let hp = found
            .first()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        let base_url = format!("http://{hp}");
        host_port(&base_url)?;
        Ok(Gateway { proc, base_url })
    }

    /// Waits until the admin API lists `n` accounts (the gateway reloads the store every second).
    pub async fn wait_accounts(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        self.wait_until(&format!("{n} accounts"), timeout, |a| a.len() == n)
            .await
    }

    /// Waits until `GET /admin/accounts` gives an account list for which `ok` holds.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        ok: impl Fn(&[serde_json::Value]) -> bool,
    ) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            let v: serde_json::Value = client
                .get(format!("{}/admin/accounts", self.base_url))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await?
                .json()
                .await?;
            let accounts = v
                .get("accounts")
                .and_then(serde_json::Value::as_array)
                .cloned()
                .unwrap_or_default();
            if ok(&accounts) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the gateway never showed {what}; its accounts: {}",
                    serde_json::Value::Array(accounts)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of one Prometheus sample line (`name{labels}`), summed over matching lines.
    pub async fn metric(&self, prefix: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("{}/metrics", self.base_url))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

/// A free loopback port (bound then released; LiteLLM takes a port number, not 0).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A running LiteLLM proxy.
pub struct LiteLlm {
    pub proc: Proc,
    pub base_url: String,
    pub version: String,
    _dir: TempDir,
}

impl LiteLlm {
    /// Starts `litellm` with one model routed to the simulator's Messages API and waits for its liveness probe.
    pub async fn start(exe: &Path, upstream: &str, model: &str) -> anyhow::Result<LiteLlm> {
        let dir = TempDir::new(None, "litellm")?;
        let config = dir.path().join("litellm.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n  - model_name: {model}\n    litellm_params:\n      model: anthropic/{model}\n      \
                 api_base: {base}\n      api_key: sk-ant-bench-upstream\nlitellm_settings:\n  telemetry: false\n  \
                 drop_params: false\n",
                base = upstream
            ),
        )?;
        let port = free_port()?;
        let mut cmd = Command::new(exe);
        cmd.arg("--config")
            .arg(&config)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--num_workers", "1"])
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_LOG", "ERROR")
            .env("LITELLM_TELEMETRY", "False")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("DATABASE_URL")
            .current_dir(dir.path());
        let (proc, _) = Proc::spawn(
            "litellm",
            cmd,
            &["Uvicorn running on"],
            Duration::from_secs(180),
        )?;
        let base_url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = client
                .get(format!("{base_url}/health/liveliness"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "LiteLLM's liveness probe never answered; its output:\n{}",
                    proc.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let version = exe
            .parent()
            .map(|bin| bin.join("python"))
            .and_then(|py| {
                Command::new(py)
                    .args([
                        "-c",
                        "import importlib.metadata as m; print(m.version('litellm'))",
                    ])
                    .output()
                    .ok()
            })
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Ok(LiteLlm {
            proc,
            base_url,
            version,
            _dir: dir,
        })
    }
}

/// A running fast upstream (`claude-gateway-bench --serve-upstream`, see `upstream.rs`).
pub struct FastUpstream {
    pub proc: Proc,
    pub base_url: String,
}

impl FastUpstream {
    /// Starts this program as the fast upstream on a free loopback port, `threads` workers (0: current-thread), with
    /// streams of `stream_events` events `delay_ms` apart unless a request says otherwise.
    pub fn start(
        threads: usize,
        stream_events: usize,
        delay_ms: u64,
    ) -> anyhow::Result<FastUpstream> {
        let (proc, base_url) = serve_self(
            "fast upstream",
            &[
                "--serve-upstream".into(),
                "127.0.0.1:0".into(),
                "--upstream-threads".into(),
                threads.to_string(),
                "--upstream-stream-events".into(),
                stream_events.to_string(),
                "--upstream-event-delay-ms".into(),
                delay_ms.to_string(),
            ],
        )?;
        Ok(FastUpstream { proc, base_url })
    }
}

/// A running minimal hyper reverse proxy (`claude-gateway-bench --serve-proxy`, see `hyperproxy.rs`).
pub struct HyperProxy {
    pub proc: Proc,
    pub base_url: String,
}

impl HyperProxy {
    /// Starts this program as the minimal hyper proxy on a free loopback port, in front of `upstream`.
    pub fn start(upstream: &str) -> anyhow::Result<HyperProxy> {
        let (proc, base_url) = serve_self(
            "hyper proxy",
            &[
                "--serve-proxy".into(),
                "127.0.0.1:0".into(),
                "--proxy-to".into(),
                upstream.into(),
            ],
        )?;
        Ok(HyperProxy { proc, base_url })
    }
}

/// Starts this program in one of its serving modes (`args`) and waits for its `listening on URL` line: the process
/// and the URL.
fn serve_self(name: &str, args: &[String]) -> anyhow::Result<(Proc, String)> {
    let exe = std::env::current_exe().context("locating this program")?;
    let mut cmd = Command::new(exe);
    cmd.args(args);
    let (proc, found) = Proc::spawn(name, cmd, &["listening on "], Duration::from_secs(10))?;
    let base_url = found.first().cloned().unwrap_or_default();
    host_port(&base_url)?;
    Ok((proc, base_url))
}
