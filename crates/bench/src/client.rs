//! The load client for JSON (non-stream) requests: hyper-util's pooled HTTP/1.1 client, or reqwest for comparison.

use std::net::SocketAddr;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// One path under test: where requests go, how they authenticate, and which processes serve them.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub auth: (HeaderName, HeaderValue),
    /// The proxy process (gateway or LiteLLM); `None` for the direct path.
    pub proxy_pid: Option<u32>,
    pub sim_pid: u32,
    messages: hyper::Uri,
}

impl Target {
    pub fn new(
        base_url: &str,
        auth: (&'static str, &str),
        proxy_pid: Option<u32>,
        sim_pid: u32,
    ) -> anyhow::Result<Target> {
        Target::at(base_url, "/v1/messages", auth, proxy_pid, sim_pid)
    }

    /// A target whose requests go to `path` (`/v1/chat/completions`, `/v1/responses`) instead of `/v1/messages`.
    pub fn at(
        base_url: &str,
        path: &str,
        auth: (&'static str, &str),
        proxy_pid: Option<u32>,
        sim_pid: u32,
    ) -> anyhow::Result<Target> {
        let messages: hyper::Uri = format!("{base_url}{path}")
            .parse()
            .context("messages URL")?;
        Ok(Target {
            addr: crate::procs::host_port(base_url)?,
            auth: (
                HeaderName::from_static(auth.0),
                HeaderValue::from_str(auth.1).context("auth header")?,
            ),
            proxy_pid,
            sim_pid,
            messages,
        })
    }

    /// The request path (`/v1/messages`, …).
    pub fn path(&self) -> &str {
        self.messages.path()
    }

    /// CPU seconds of the proxy process tree (0 for the direct path) and of the simulator.
    pub fn cpu(&self) -> (f64, f64) {
        let ((pu, ps), (su, ss)) = self.cpu_times();
        (pu + ps, su + ss)
    }

    /// (user, system) CPU seconds of the proxy process tree and of the simulator.
    pub fn cpu_times(&self) -> ((f64, f64), (f64, f64)) {
        let proxy = self.proxy_pid.map_or((0.0, 0.0), |p| {
            crate::procs::tree_cpu_times(p).unwrap_or((0.0, 0.0))
        });
        let sim = crate::procs::cpu_times(self.sim_pid).unwrap_or((0.0, 0.0));
        (proxy, sim)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    Hyper,
    Reqwest,
}

#[derive(Clone, Debug)]
pub enum Client {
    Hyper(Box<hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>>),
    Reqwest(reqwest::Client),
}

/// What one request gave (after its whole body was read).
pub struct Answer {
    pub status: u16,
}

impl Client {
    pub fn new(kind: ClientKind) -> anyhow::Result<Client> {
        Ok(match kind {
            ClientKind::Hyper => {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                Client::Hyper(Box::new(
                    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                        .pool_max_idle_per_host(usize::MAX)
                        .build(http),
                ))
            }
            ClientKind::Reqwest => Client::Reqwest(
                reqwest::Client::builder()
                    .tcp_nodelay(true)
                    .pool_max_idle_per_host(usize::MAX)
                    .build()?,
            ),
        })
    }

    /// `POST /v1/messages` with `body`, reading the whole answer.
    pub async fn messages(&self, target: &Target, body: &Bytes) -> anyhow::Result<Answer> {
        match self {
            Client::Hyper(c) => {
                let req = hyper::Request::post(target.messages.clone())
                    .header("content-type", "application/json")
                    .header("anthropic-version", "2023-06-01")
                    .header(target.auth.0.clone(), target.auth.1.clone())
                    .body(Full::new(body.clone()))?;
                let resp = c.request(req).await.map_err(|e| anyhow!(chain(&e)))?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await?;
                Ok(Answer { status })
            }
            Client::Reqwest(c) => {
                let resp = c
                    .post(target.messages.to_string())
                    .header("content-type", "application/json")
                    .header("anthropic-version", "2023-06-01")
                    .header(target.auth.0.clone(), target.auth.1.clone())
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| anyhow!(chain(&e)))?;
                let status = resp.status().as_u16();
                resp.bytes().await?;
                Ok(Answer { status })
            }
        }
    }

    /// `GET base_url + path`, reading the whole answer (used to open pooled connections ahead of a burst).
    pub async fn get(&self, url: &str) -> anyhow::Result<Answer> {
        match self {
            Client::Hyper(c) => {
                let resp = c.get(url.parse()?).await.map_err(|e| anyhow!(chain(&e)))?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await?;
                Ok(Answer { status })
            }
            Client::Reqwest(c) => {
                let resp = c.get(url).send().await?;
                let status = resp.status().as_u16();
                resp.bytes().await?;
                Ok(Answer { status })
            }
        }
    }
}

/// An error and its sources, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// A short error kind for the error tally: the status, or the first words of a transport error.
pub fn error_kind(e: &anyhow::Error) -> String {
    let s = e.to_string();
    let s = s.rsplit(": ").next().unwrap_or(&s);
    s.chars().take(60).collect()
}
