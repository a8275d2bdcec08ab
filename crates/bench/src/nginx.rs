//! nginx as the minimal-proxy floor: one worker, `proxy_pass` to the fast upstream over pooled keep-alive connections,
//! no logging, run unprivileged in the foreground with a generated config and every path in a temp dir. The suite
//! installs nothing: without nginx its rows are skipped with a note saying how to install it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procs::{free_port, Proc, TempDir};

/// Where Debian's package puts it.
pub const DEFAULT_BIN: &str = "/usr/sbin/nginx";

/// nginx's binary, or why it is absent (for the report).
pub fn find(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => vec![
            PathBuf::from(DEFAULT_BIN),
            PathBuf::from("/usr/local/sbin/nginx"),
        ],
    };
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "nginx is not installed (`apt-get install nginx` adds the minimal-proxy floor)".into()
    })
}

/// The configuration: one process (`master_process off`: the worker is the process we start, so killing it leaves no
/// orphaned worker behind holding inherited descriptors, and its CPU is that process's), an `upstream` block with keep-alive, HTTP/1.1 to the upstream, no buffering (SSE
/// events pass as they come; a small JSON answer is one read either way), no access log.
pub fn config(dir: &Path, port: u16, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 64m;
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream fast {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://fast;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"#
    )
}

/// A running nginx.
pub struct Nginx {
    pub proc: Proc,
    pub base_url: String,
    pub version: String,
    _dir: TempDir,
}

impl Nginx {
    pub async fn start(bin: &Path, upstream: SocketAddr) -> anyhow::Result<Nginx> {
        let dir = TempDir::new(None, "nginx")?;
        let port = free_port()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), port, upstream))
            .with_context(|| format!("writing {}", conf.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf);
        let (mut proc, _) = Proc::spawn("nginx", cmd, &[], Duration::from_secs(5))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if proc.exited() || Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                bail!(
                    "nginx did not start listening on {addr}: {}{log}",
                    proc.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Nginx {
            proc,
            base_url: format!("http://{addr}"),
            version: version(bin),
            _dir: dir,
        })
    }
}

/// `1.22.1` from `nginx -v` (which writes `nginx version: nginx/1.22.1` on stderr).
fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-v")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stderr).to_string();
            text.split('/')
                .nth(1)
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_floor_settings() {
        let c = config(Path::new("/tmp/x"), 8081, "127.0.0.1:9000".parse().unwrap());
        for needle in [
            "daemon off;",
            "worker_processes 1;",
            "server 127.0.0.1:9000;",
            "keepalive 256;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_buffering off;",
            "access_log off;",
            "pid /tmp/x/nginx.pid;",
            "listen 127.0.0.1:8081;",
        ] {
            assert!(c.contains(needle), "{needle} missing from\n{c}");
        }
    }
}
