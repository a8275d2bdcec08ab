//! Configuration: one TOML file, every key documented in README.md.
//!
//! The top-level names (`listen`, `data_dir`, `store_url`, `client_keys`, `admin_key`, `[upstream] base_url`,
//! `[oauth] token_url`) are a contract that tests outside the repository rely on. Unknown keys and bad values are
//! rejected at start with a message naming the key and the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod validate;

/// The default config file `serve` looks for when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "claude-gateway.toml";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    /// When set, the dashboard and `/admin/*` are served on this address only (e.g. loopback), not on `listen`.
    pub dashboard_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// A PostgreSQL URL for a store shared by several replicas (not yet supported; see README).
    pub store_url: Option<String>,
    /// Keys clients present as `x-api-key` or `Authorization: Bearer`.
    pub client_keys: Vec<String>,
    /// A file holding the key that encrypts credentials in the store (`CLAUDE_GATEWAY_STORE_KEY` takes precedence).
    /// The key itself is never in the config file.
    pub store_key_file: Option<PathBuf>,
    /// Key for `/admin/*` (`Authorization: Bearer`). Without it the admin API answers 401 to everyone.
    pub admin_key: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// Log format: "text" or "json".
    pub log_format: LogFormat,
    /// Usage counters are written to the store in one batch this often (never a write per request).
    pub usage_flush_secs: f64,
    /// Browser origins (`scheme://host[:port]`) allowed to call the gateway (CORS). A request carrying any other
    /// `Origin` is refused before it reaches an account. Empty (the default) = no browser may call.
    pub cors_allowed_origins: Vec<String>,
    /// Host names accepted in the `Host` header besides loopback names and the `listen` address, checked when
    /// `client_keys` is empty (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Per-request usage rows are kept this many days; hourly rollups `usage_rollup_retention_days`.
    pub usage_retention_days: u32,
    pub usage_rollup_retention_days: u32,
    /// Model prices (USD per million tokens) replacing or adding to the shipped table (`prices.toml`).
    pub prices: std::collections::BTreeMap<String, ModelPrice>,
    pub upstream: UpstreamConfig,
    pub oauth: OAuthConfig,
    pub refresh: RefreshConfig,
    pub pool: PoolConfig,
    pub listener: ListenerConfig,
    pub alerts: AlertsConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub base_url: String,
    /// TCP+TLS connect timeout.
    pub connect_timeout_secs: f64,
    /// Longest silence tolerated between two reads of an upstream response (headers or body). There is deliberately no
    /// total deadline: a long stream is fine as long as it keeps moving.
    pub read_timeout_secs: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OAuthConfig {
    pub token_url: String,
    pub authorize_url: String,
    pub profile_url: String,
    pub client_id: String,
    pub scopes: String,
    /// Redirect URI registered for the client; `{port}` is replaced by `callback_port`.
    pub redirect_uri: String,
    pub callback_port: u16,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    /// Refresh this long before an access token expires (jittered by ±`lead_jitter` per account).
    pub lead_secs: u64,
    /// Fraction of `lead_secs` used as per-account jitter, so accounts do not refresh in step.
    pub lead_jitter: f64,
    /// How often the proactive refresher looks for tokens nearing expiry.
    pub scan_interval_secs: u64,
    /// Timeout of one token-endpoint call.
    pub call_timeout_secs: f64,
    /// Upper bound of one whole refresh (all attempts and the store write); no waiter waits longer.
    pub refresh_timeout_secs: f64,
    /// Token-endpoint calls per refresh for transient failures (5xx, network errors).
    pub max_attempts: u32,
    /// Base of the jittered exponential backoff between transient attempts and between failed refreshes.
    pub backoff_base_ms: u64,
    /// Base of the backoff after a token-endpoint 429 that carried no Retry-After.
    pub rate_limit_backoff_base_secs: u64,
    /// Cap of every computed backoff (a Retry-After from the token endpoint is honoured up to `max_retry_after_secs`).
    pub backoff_max_secs: u64,
    /// Longest Retry-After honoured as given; longer hints are clamped to this (never shortened below what was asked
    /// unless it exceeds this cap).
    pub max_retry_after_secs: u64,
    /// Refresh lease time-to-live (replicas sharing a store refresh one at a time). The holder renews it every third of
    /// this while its refresh runs; a holder that dies frees it after this.
    pub lease_secs: f64,
    /// Token-endpoint calls per second across every replica sharing the store (the endpoint limits the caller, not
    /// one account). Every call counts: request-driven and proactive refreshes, retries.
    pub max_calls_per_sec: f64,
    /// Calls that may go out at once after a quiet period (the bucket's depth).
    pub max_calls_burst: u32,
    /// What a token-endpoint 429 pauses: every refresh (`endpoint`, the default) or only that account's (`account`).
    pub rate_limit_scope: RateLimitScope,
}

/// The scope of a token-endpoint 429.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitScope {
    /// The endpoint rate-limits the caller (client and address): a 429 pauses every account's refresh.
    Endpoint,
    /// The endpoint rate-limits per account: a 429 pauses only that account's refresh.
    Account,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Upstream attempts per client request (first try plus failovers).
    pub max_attempts: u32,
    /// Cooldown after a 529/5xx/connection failure (jittered).
    pub overload_cooldown_secs: f64,
    /// Base of the backoff after a 429 without Retry-After.
    pub rate_limit_backoff_base_secs: f64,
    /// Cap of computed cooldowns.
    pub max_cooldown_secs: f64,
    /// A cooling account gets one real request as a probe this often; success clears its cooldown, so a wrong reset
    /// hint costs one probe, not days.
    pub probe_interval_secs: f64,
    /// How long a request waits for a slot when every account is at its `max_concurrency`.
    pub queue_wait_ms: u64,
    /// Most requests waiting for a slot; more get 429 at once.
    pub max_queue: usize,
    /// No new failover attempt starts later than this after the request arrived.
    pub failover_deadline_secs: f64,
    /// Cooldown of an account whose 429 is not a rate limit (spend limit, no credits): it needs attention.
    pub attention_cooldown_secs: f64,
    /// Conversations remembered for prompt-cache affinity.
    pub affinity_capacity: usize,
    /// A conversation idle this long may move.
    pub affinity_ttl_secs: f64,
    /// Affinity yields when its account has more than this times its peers' average in flight (plus two).
    pub affinity_load_factor: f64,
    /// Request headers that name a conversation, tried in order before `metadata.user_id` and the prompt prefix.
    pub session_headers: Vec<String>,
    /// After a 401/403, the account's credential is checked alone (no client headers) at most this often; within the
    /// interval the last check's verdict stands.
    pub credential_check_interval_secs: f64,
}

/// Longest listener timeout accepted (a year): deadlines computed from it cannot overflow.
const MAX_LISTENER_TIMEOUT_SECS: f64 = 31_536_000.0;

/// The client-facing listener's limits (see `crate::listener`). The timeouts bound reads from the client only, never a
/// response in progress, so a long SSE stream is never cut by them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// A request head must arrive whole within this from its first byte.
    pub header_read_timeout_secs: f64,
    /// A keep-alive connection with no request in progress is closed after this.
    pub idle_timeout_secs: f64,
    /// A request body must arrive whole within this after its head (else 408).
    pub body_read_timeout_secs: f64,
    /// Most client connections open at once; at the cap new clients wait in the kernel's backlog.
    pub max_connections: usize,
    /// Most bytes of request bodies held in memory at once, all requests together (beyond it: 503 with retry-after).
    pub max_body_memory_bytes: u64,
    /// Connection workers: single-threaded runtimes, each serving its share of the client connections and their
    /// upstream calls on one thread (`crate::listener::workers`). Absent: one per CPU; 0: every connection on the
    /// shared multi-threaded runtime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

/// Most connection workers accepted.
const MAX_WORKERS: usize = 1024;

impl ListenerConfig {
    /// How many connection workers to start (0: none, connections on the shared runtime).
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            header_read_timeout_secs: 30.0,
            idle_timeout_secs: 120.0,
            body_read_timeout_secs: 120.0,
            max_connections: 1024,
            max_body_memory_bytes: 256 * 1024 * 1024,
            workers: None,
        }
    }
}

/// Alert webhooks (`[alerts]`): see `crate::alerts`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// URLs that receive every alert as a JSON POST.
    pub webhooks: Vec<String>,
    /// Key of the HMAC-SHA256 signature in `x-gateway-signature` (required with webhooks).
    pub secret: Option<String>,
    /// Alerts waiting for delivery; more are dropped (and counted).
    pub max_queue: usize,
    /// Deliveries per alert and URL (first try plus retries).
    pub max_attempts: u32,
    /// Base of the jittered exponential backoff between attempts.
    pub backoff_base_ms: u64,
    /// Timeout of one delivery.
    pub timeout_secs: f64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhooks: Vec::new(),
            secret: None,
            max_queue: 256,
            max_attempts: 5,
            backoff_base_ms: 1000,
            timeout_secs: 10.0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dashboard_listen: None,
            data_dir: PathBuf::from("./data"),
            store_url: None,
            client_keys: Vec::new(),
            admin_key: None,
            store_key_file: None,
            max_body_bytes: 32 * 1024 * 1024,
            log_format: LogFormat::Text,
            usage_flush_secs: 5.0,
            cors_allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            usage_retention_days: 30,
            usage_rollup_retention_days: 400,
            prices: std::collections::BTreeMap::new(),
            upstream: UpstreamConfig::default(),
            oauth: OAuthConfig::default(),
            refresh: RefreshConfig::default(),
            pool: PoolConfig::default(),
            listener: ListenerConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base_url: "https://api.anthropic.com".into(),
            connect_timeout_secs: 10.0,
            read_timeout_secs: 300.0,
        }
    }
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig {
            token_url: "https://platform.claude.com/v1/oauth/token".into(),
            authorize_url: "https://claude.ai/oauth/authorize".into(),
            profile_url: "https://api.anthropic.com/api/oauth/profile".into(),
            client_id: "9d1c250a-e61b-44d9-88ed-5944d1962f5e".into(),
            scopes: "user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload".into(),
            redirect_uri: "http://localhost:{port}/callback".into(),
            callback_port: 54545,
        }
    }
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            lead_secs: 600,
            lead_jitter: 0.25,
            scan_interval_secs: 15,
            call_timeout_secs: 20.0,
            refresh_timeout_secs: 60.0,
            max_attempts: 3,
            backoff_base_ms: 500,
            rate_limit_backoff_base_secs: 30,
            backoff_max_secs: 1800,
            max_retry_after_secs: 86_400,
            lease_secs: 30.0,
            max_calls_per_sec: 2.0,
            max_calls_burst: 2,
            rate_limit_scope: RateLimitScope::Endpoint,
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_attempts: 3,
            overload_cooldown_secs: 5.0,
            rate_limit_backoff_base_secs: 5.0,
            max_cooldown_secs: 600.0,
            probe_interval_secs: 60.0,
            queue_wait_ms: 5000,
            max_queue: 1000,
            failover_deadline_secs: 60.0,
            attention_cooldown_secs: 3600.0,
            affinity_capacity: 100_000,
            affinity_ttl_secs: 3600.0,
            affinity_load_factor: 2.0,
            session_headers: vec!["x-claude-code-session-id".into(), "x-session-id".into()],
            credential_check_interval_secs: 60.0,
        }
    }
}

/// A configuration problem, always naming the file (or "built-in defaults") and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    /// Loads `path`, or `./claude-gateway.toml` when present, or the built-in defaults.
    pub fn load(path: Option<&Path>) -> Result<(Config, String), ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                if !default.exists() {
                    let config = Config::default();
                    config.validate("built-in defaults")?;
                    return Ok((config, "built-in defaults".into()));
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let name = path.display().to_string();
        let config = Config::parse(&text, &name)?;
        Ok((config, name))
    }

    /// Parses and validates a config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The effective configuration as JSON with every secret replaced by a non-reversible label: the admin key,
    /// client keys, the store URL's password (and whatever a later section marks secret there).
    pub fn redacted(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(obj) = v.as_object_mut() {
            if self.admin_key.is_some() {
                obj.insert("admin_key".into(), "<redacted>".into());
            }
            let keys: Vec<serde_json::Value> = self
                .client_keys
                .iter()
                .map(|k| crate::account::redact(k).into())
                .collect();
            obj.insert("client_keys".into(), keys.into());
            if let Some(url) = &self.store_url {
                obj.insert("store_url".into(), without_password(url).into());
            }
            if let Some(alerts) = obj.get_mut("alerts").and_then(|a| a.as_object_mut()) {
                if self.alerts.secret.is_some() {
                    alerts.insert("secret".into(), "<redacted>".into());
                }
                // A webhook URL often is its own credential (a token in the path): scheme and host only.
                let hooks: Vec<serde_json::Value> = self
                    .alerts
                    .webhooks
                    .iter()
                    .map(|u| redact_url(u).into())
                    .collect();
                alerts.insert("webhooks".into(), hooks.into());
            }
        }
        v
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("gateway.db")
    }
}

/// The store URL without its password, for logs, errors and the redacted view.
pub(crate) fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "postgres (unparseable url)".into(),
    }
}

/// A URL reduced to its scheme and host, for showing it without the secrets paths and queries carry.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "(not a URL)".into(),
    }
}

impl UpstreamConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_secs)
    }
    pub fn read_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.read_timeout_secs)
    }
}

impl OAuthConfig {
    pub fn redirect_uri(&self) -> String {
        self.redirect_uri
            .replace("{port}", &self.callback_port.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_keys_parse() {
        let c = Config::parse(
            r#"
listen = "127.0.0.1:9000"
data_dir = "/tmp/x"
client_keys = ["sk-gw-1"]
admin_key = "adm"
[upstream]
base_url = "http://127.0.0.1:1234"
[oauth]
token_url = "http://127.0.0.1:1234/v1/oauth/token"
"#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.client_keys, vec!["sk-gw-1"]);
        assert_eq!(c.oauth.token_url, "http://127.0.0.1:1234/v1/oauth/token");
        assert_eq!(c.refresh.max_attempts, 3);
    }

    #[test]
    fn the_redacted_config_holds_no_secret() {
        let c = Config::parse(
            "client_keys = [\"sk-gw-SECRETCLIENT\"]\nadmin_key = \"ADMINSECRET\"\n\
             store_url = \"postgres://u:PGSECRET@db/x\"\n\
             [alerts]\nwebhooks = [\"https://hooks.example/T0/HOOKSECRET\"]\nsecret = \"SIGNSECRET\"\n",
            "t.toml",
        )
        .unwrap();
        let text = c.redacted().to_string();
        for secret in [
            "SECRETCLIENT",
            "ADMINSECRET",
            "PGSECRET",
            "HOOKSECRET",
            "SIGNSECRET",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("\"listen\""), "{text}");
        assert_eq!(c.redacted()["pool"]["max_attempts"], 3);
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = Config::parse("listen = \"127.0.0.1:1\"\nlisten_port = 3\n", "my.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("my.toml"), "{err}");
        assert!(err.contains("listen_port"), "{err}");
        let err = Config::parse("[upstream]\nbase_ur = \"x\"\n", "my.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("base_ur"), "{err}");
    }

    #[test]
    fn listener_workers_default_to_one_per_cpu_and_are_bounded() {
        let c = Config::parse("", "f.toml").unwrap();
        assert_eq!(c.listener.workers, None);
        assert!(c.listener.worker_count() >= 1);
        let c = Config::parse("[listener]\nworkers = 0\n", "f.toml").unwrap();
        assert_eq!(c.listener.worker_count(), 0);
        let err = Config::parse("[listener]\nworkers = 100000\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listener.workers"), "{err}");
    }

    #[test]
    fn bad_values_name_key() {
        let err = Config::parse("listen = \"nope\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen") && err.contains("f.toml"), "{err}");
        let err = Config::parse("[upstream]\nbase_url = \"ftp://x\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.base_url"), "{err}");
        let err = Config::parse("listen = \"0.0.0.0:80\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("client_keys"), "{err}");
        let err = Config::parse(
            "cors_allowed_origins = [\"http://a.example/path\"]\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cors_allowed_origins"), "{err}");
        let err = Config::parse("allowed_hosts = [\"gw.example:8080\"]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed_hosts"), "{err}");
        let err = Config::parse("[refresh]\nmax_attempts = 0\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("refresh.max_attempts"), "{err}");
    }

    #[test]
    fn every_rule_of_every_section_names_its_key_and_why() {
        for (text, message) in [
            (
                "[oauth]\ntoken_url = \"nope\"",
                "`oauth.token_url`: \"nope\" is not an http(s) URL",
            ),
            (
                "store_url = \"mysql://x\"",
                "`store_url`: must be a postgres:// URL",
            ),
            (
                "client_keys = [\" \"]",
                "`client_keys`: keys must not be empty",
            ),
            ("admin_key = \"\"", "`admin_key`: must not be empty"),
            (
                "usage_flush_secs = 0",
                "`usage_flush_secs`: must be a positive number of seconds",
            ),
            (
                "[pool]\nmax_cooldown_secs = nan",
                "`pool.max_cooldown_secs`: must be a positive",
            ),
            (
                "[alerts]\ntimeout_secs = -1",
                "`alerts.timeout_secs`: must be a positive number of seconds",
            ),
            (
                "[refresh]\nlead_jitter = 1.5",
                "`refresh.lead_jitter`: must be between 0 and 1",
            ),
            (
                "[refresh]\nlease_secs = 0.5",
                "`refresh.lease_secs`: must be at least 1 second",
            ),
            (
                "[refresh]\nscan_interval_secs = 0",
                "`refresh.scan_interval_secs`: must be at least 1",
            ),
            (
                "[alerts]\nwebhooks = [\"ftp://h/T\"]\nsecret = \"s\"",
                "`alerts.webhooks`: \"ftp://h/…\" is not",
            ),
            (
                "[alerts]\nwebhooks = [\"https://h/T\"]",
                "`alerts.secret`: is required with alerts.webhooks",
            ),
            (
                "[alerts]\nmax_queue = 0",
                "`alerts.max_attempts`: and alerts.max_queue must be at least 1",
            ),
            (
                "[pool]\naffinity_capacity = 1",
                "`pool.affinity_capacity`: must be at least 2",
            ),
            (
                "[pool]\nmax_attempts = 0",
                "`pool.max_attempts`: must be at least 1",
            ),
            (
                "max_body_bytes = 0",
                "`max_body_bytes`: must be greater than 0",
            ),
            (
                "[listener]\nidle_timeout_secs = 4e7",
                "`listener.idle_timeout_secs`: must be at most 31536000",
            ),
            (
                "[listener]\nmax_connections = 0",
                "`listener.max_connections`: must be at least 1",
            ),
            (
                "max_body_bytes = 10\n[listener]\nmax_body_memory_bytes = 9",
                "`listener.max_body_memory_bytes`: must be at least",
            ),
        ] {
            let err = Config::parse(&format!("{text}\n"), "f.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("f.toml") && err.contains(message),
                "{text}: {err}"
            );
        }
        Config::default().validate("built-in defaults").unwrap();
    }

    #[test]
    fn the_token_endpoint_budget_and_the_429_scope_are_read_and_checked() {
        let c = Config::parse(
            "[refresh]\nmax_calls_per_sec = 0.5\nrate_limit_scope = \"account\"\n",
            "f.toml",
        )
        .unwrap();
        assert_eq!(c.refresh.max_calls_per_sec, 0.5);
        assert_eq!(c.refresh.rate_limit_scope, RateLimitScope::Account);
        assert_eq!(
            Config::default().refresh.rate_limit_scope,
            RateLimitScope::Endpoint
        );
        for (text, key) in [
            ("max_calls_per_sec = 0", "refresh.max_calls_per_sec"),
            ("max_calls_per_sec = -1.5", "refresh.max_calls_per_sec"),
            ("max_calls_burst = 0", "refresh.max_calls_burst"),
            ("rate_limit_scope = \"cluster\"", "rate_limit_scope"),
        ] {
            let err = Config::parse(&format!("[refresh]\n{text}\n"), "f.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}

/// One model's prices in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    pub cache_write_5m: f64,
    pub cache_write_1h: f64,
    pub cache_read: f64,
}

/// Whether `s` is a serialized origin (`scheme://host[:port]`, http or https, no path), as browsers send it.
pub fn is_origin(s: &str) -> bool {
    match reqwest::Url::parse(s) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            u.origin().ascii_serialization() == s.to_ascii_lowercase()
        }
        _ => false,
    }
}
