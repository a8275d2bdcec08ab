//! A throwaway PostgreSQL for tests, from the system's binaries (`initdb`, `postgres`), in a temp dir on a free port.
//! When running as root it runs as the `postgres` OS user. It fails loudly when PostgreSQL cannot start.
#![allow(dead_code, clippy::disallowed_methods)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

pub struct Postgres {
    pub dir: TempDir,
    pub port: u16,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    child: Option<Child>,
}

fn bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some(p) = versions.pop() {
        return p;
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        if Path::new(dir).join("initdb").exists() {
            return PathBuf::from(dir);
        }
    }
    panic!("PostgreSQL server binaries (initdb, postgres) not found: install them (apt-get install postgresql); .ci/setup does");
}

fn id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no `postgres` OS user to run PostgreSQL as root"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = TempDir::new();
        let bin = bin_dir();
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let user = is_root.then(|| (id("-u"), id("-g")));
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid)).unwrap();
        }
        let mut pg = Postgres {
            dir,
            port: free_port(),
            bin,
            user,
            child: None,
        };
        let out = pg
            .command("initdb")
            .args([
                "-U",
                "gateway",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(pg.data())
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        pg.launch();
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.0.join("pgdata")
    }

    fn command(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        if let Some((uid, gid)) = self.user {
            c.uid(uid).gid(gid);
        }
        c.env("LC_ALL", "C");
        c
    }

    fn launch(&mut self) {
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir.0)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self
                .command("pg_isready")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "gateway",
                ])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("postgres exited at start: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not become ready in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A fresh database; returns its URL.
    pub fn database(&self, name: &str) -> String {
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "gateway",
                "-d",
                "postgres",
                "-c",
            ])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://gateway@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs one SQL statement and returns its single value as text.
    pub fn query(&self, db: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "gateway",
                "-d",
                db,
                "-tA",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server abruptly (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        // Children of a killed postmaster exit on their own; wait until the port is free.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    pub fn restart(&mut self) {
        self.launch();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Inserts accounts straight into a PostgreSQL store.
pub async fn seed_pg(
    url: &str,
    accounts: Vec<claude_gateway::account::NewAccount>,
) -> Vec<claude_gateway::account::Account> {
    let store = claude_gateway::store::postgres::PostgresStore::connect(url)
        .await
        .unwrap();
    let mut out = Vec::new();
    for a in accounts {
        out.push(
            claude_gateway::store::Store::insert_account(&store, a)
                .await
                .unwrap(),
        );
    }
    out
}

/// Polls `check` (every 50 ms, up to `secs`) until it holds.
pub async fn eventually<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(
    secs: u64,
    what: &str,
    mut check: F,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}
