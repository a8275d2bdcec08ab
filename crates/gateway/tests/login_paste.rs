//! `claude-gateway login` when the browser callback cannot reach it: the local listener's port is taken, and the user
//! pastes `CODE#STATE` (or the whole callback URL) on standard input instead.
// The whole crate is test code, so the clippy.toml test allowances (unwrap, expect, panic) reach its helpers.
#![cfg(test)]
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use claude_gateway::store::sqlite::SqliteStore;
use claude_gateway::store::Store;
use common::*;
use simulator::Simulator;

/// A running `login` whose callback port is held by the test, so only pasting can complete it.
struct Login {
    _dir: TempDir,
    data: PathBuf,
    config: PathBuf,
    port: u16,
    _taken: std::net::TcpListener,
    child: Child,
    stdout: Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Login {
    fn start(sim: &Simulator) -> Login {
        let dir = TempDir::new();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let data = dir.0.join("data");
        let config = dir.0.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\n[upstream]\nbase_url = \"{}\"\n[oauth]\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\nprofile_url = \"{}\"\ncallback_port = {port}\n",
                data.display(),
                sim.base_url(),
                sim.token_url(),
                sim.authorize_url(),
                sim.profile_url()
            ),
        )
        .unwrap();
        let mut child = Command::new(bin())
            .args(["login", "--config"])
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut err, &mut s);
            s
        });
        Login {
            _dir: dir,
            data,
            config,
            port,
            _taken: taken,
            child,
            stdout,
            stderr: Some(stderr),
        }
    }

    /// Reads stdout up to the authorize URL; returns the lines before it and the URL.
    fn authorize_url(&self) -> (Vec<String>, String) {
        let mut before = Vec::new();
        loop {
            let line = self
                .stdout
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no authorize URL; stdout so far: {before:?}"));
            if line.starts_with("http") {
                return (before, line);
            }
            before.push(line);
        }
    }

    fn paste(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the process to exit; returns its status, the rest of stdout and all of stderr.
    fn finish(&mut self) -> (std::process::ExitStatus, Vec<String>, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("login did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = Vec::new();
        while let Ok(l) = self.stdout.recv_timeout(Duration::from_millis(500)) {
            rest.push(l);
        }
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status, rest, stderr)
    }
}

/// [`Login::finish`] off the async runtime; gives the login back (its temp dir lives as long as it).
async fn finish(mut login: Login) -> (Login, (std::process::ExitStatus, Vec<String>, String)) {
    tokio::task::spawn_blocking(move || {
        let r = login.finish();
        (login, r)
    })
    .await
    .unwrap()
}

/// Plays the browser: the simulator approves and answers 302 to the redirect URI with `code` and `state`.
async fn approve(url: &str, port: u16) -> reqwest::Url {
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap();
    let location = reqwest::Url::parse(location).unwrap();
    assert!(
        location
            .as_str()
            .starts_with(&format!("http://localhost:{port}/callback?")),
        "{location}"
    );
    location
}

fn query(url: &reqwest::Url, key: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {key} in {url}"))
}

fn list_accounts(config: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(bin())
        .args(["accounts", "list", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["accounts"].as_array().unwrap().clone()
}

/// Runs a login that completes with `paste(location)` on stdin, and checks the stored account.
async fn login_by_pasting(paste: impl Fn(&reqwest::Url) -> String) {
    let sim = Simulator::start().await.unwrap();
    let mut login = Login::start(&sim);
    let (before, url) = login.authorize_url();
    assert!(
        before
            .iter()
            .any(|l| l.contains("could not listen")
                && l.contains(&format!("127.0.0.1:{}", login.port))),
        "says the callback listener could not start: {before:?}"
    );
    let authorize = reqwest::Url::parse(&url).unwrap();
    assert!(url.starts_with(&sim.authorize_url()), "{url}");
    assert_eq!(query(&authorize, "code_challenge_method"), "S256");
    let location = approve(&url, login.port).await;
    assert_eq!(query(&location, "state"), query(&authorize, "state"));
    assert!(
        sim.token_calls().is_empty(),
        "nothing exchanged before the paste"
    );

    login.paste(&format!("{}\n", paste(&location)));
    let (login, (status, rest, stderr)) = finish(login).await;
    let (config, data) = (&login.config, &login.data);
    assert!(status.success(), "{status}\n{rest:?}\n{stderr}");

    let calls = sim.token_calls();
    assert_eq!(calls.len(), 1, "one token call");
    assert_eq!(calls[0].grant_type, "authorization_code");
    assert_eq!(calls[0].outcome, "ok");

    let accounts = list_accounts(config);
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let a = &accounts[0];
    let store = SqliteStore::open(data).await.unwrap();
    let stored = store.list_accounts().await.unwrap().remove(0);
    let email = sim
        .account_email(&stored.credential.secret)
        .expect("the stored access token is the simulator's");
    assert_eq!(a["email"], email.as_str());
    assert_eq!(a["name"], email.as_str(), "named after the email");
    assert_eq!(a["kind"], "oauth");
    assert_eq!(a["state"], "ready");
    assert!(a["expires_at"].is_string());
    assert_eq!(
        stored.credential.refresh_token.as_deref(),
        sim.current_refresh_token(&stored.credential.secret)
            .as_deref(),
        "the refresh token of the grant is stored"
    );
    assert!(
        rest.iter()
            .any(|l| l.starts_with("Added OAuth account ") && l.ends_with(&email)),
        "{rest:?}"
    );
}

#[tokio::test]
async fn login_completes_with_a_pasted_code_and_state() {
    login_by_pasting(|location| {
        format!("{}#{}", query(location, "code"), query(location, "state"))
    })
    .await;
}

#[tokio::test]
async fn login_completes_with_the_pasted_callback_url() {
    login_by_pasting(|location| location.to_string()).await;
}

#[tokio::test]
async fn a_pasted_state_that_does_not_match_stores_nothing() {
    let sim = Simulator::start().await.unwrap();
    let mut login = Login::start(&sim);
    let (_, url) = login.authorize_url();
    let location = approve(&url, login.port).await;
    let code = query(&location, "code");
    let state = query(&location, "state");
    login.paste(&format!("{code}#not-{state}\n"));
    let (login, (status, rest, stderr)) = finish(login).await;
    assert!(!status.success(), "{status}\n{rest:?}\n{stderr}");
    assert!(
        stderr.contains("state does not match"),
        "names the state: {stderr}"
    );
    assert!(sim.token_calls().is_empty(), "the code was never exchanged");
    assert!(list_accounts(&login.config).is_empty());
}
