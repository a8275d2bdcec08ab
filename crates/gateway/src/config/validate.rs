//! Validation of a parsed configuration, one check per section. Each check answers with the first key it refuses and
//! why; `Config::validate` names the file. A bad value is refused at start, never found at run time.

use super::{is_origin, redact_url, Config, ConfigError, MAX_LISTENER_TIMEOUT_SECS, MAX_WORKERS};

/// A refused key and why.
type Refusal = (&'static str, String);

fn refuse(key: &'static str, why: impl Into<String>) -> Result<(), Refusal> {
    Err((key, why.into()))
}

fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "http" || u.scheme() == "https")
}

impl Config {
    /// Checks every section; the error names `origin` (the file, or the built-in defaults) and the key.
    pub(super) fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        self.check_endpoints()
            .and_then(|()| self.check_access())
            .and_then(|()| self.check_durations())
            .and_then(|()| self.check_refresh())
            .and_then(|()| self.check_alerts())
            .and_then(|()| self.check_pool())
            .and_then(|()| self.check_listener())
            .and_then(|()| self.check_browsers())
            .map_err(|(key, why)| ConfigError::Invalid {
                path: origin.to_string(),
                message: format!("`{key}`: {why}"),
            })
    }

    /// The upstream and OAuth URLs, and the store URL.
    fn check_endpoints(&self) -> Result<(), Refusal> {
        for (key, url) in [
            ("upstream.base_url", &self.upstream.base_url),
            ("oauth.token_url", &self.oauth.token_url),
            ("oauth.authorize_url", &self.oauth.authorize_url),
            ("oauth.profile_url", &self.oauth.profile_url),
        ] {
            if !is_http_url(url) {
                return refuse(key, format!("{url:?} is not an http(s) URL"));
            }
        }
        if let Some(url) = &self.store_url {
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                return refuse("store_url", "must be a postgres:// URL");
            }
        }
        Ok(())
    }

    /// Client and admin keys: none empty, and none at all only on a loopback address.
    fn check_access(&self) -> Result<(), Refusal> {
        if self.client_keys.iter().any(|k| k.trim().is_empty()) {
            return refuse("client_keys", "keys must not be empty");
        }
        if self
            .admin_key
            .as_deref()
            .is_some_and(|k| k.trim().is_empty())
        {
            return refuse(
                "admin_key",
                "must not be empty (leave it out to disable the admin API)",
            );
        }
        if self.client_keys.is_empty() && !self.listen.ip().is_loopback() {
            return refuse(
                "client_keys",
                "is empty while `listen` is not a loopback address: anyone could use your accounts; add client keys",
            );
        }
        Ok(())
    }

    /// Every duration in seconds, whichever section it is in: a positive, finite number (a flat table).
    fn check_durations(&self) -> Result<(), Refusal> {
        let (u, r, p, l) = (&self.upstream, &self.refresh, &self.pool, &self.listener);
        for (key, v) in [
            ("upstream.connect_timeout_secs", u.connect_timeout_secs),
            ("upstream.read_timeout_secs", u.read_timeout_secs),
            ("refresh.call_timeout_secs", r.call_timeout_secs),
            ("refresh.refresh_timeout_secs", r.refresh_timeout_secs),
            ("refresh.lease_secs", r.lease_secs),
            ("usage_flush_secs", self.usage_flush_secs),
            ("pool.overload_cooldown_secs", p.overload_cooldown_secs),
            (
                "pool.rate_limit_backoff_base_secs",
                p.rate_limit_backoff_base_secs,
            ),
            ("pool.max_cooldown_secs", p.max_cooldown_secs),
            ("pool.probe_interval_secs", p.probe_interval_secs),
            ("pool.failover_deadline_secs", p.failover_deadline_secs),
            ("pool.attention_cooldown_secs", p.attention_cooldown_secs),
            ("pool.affinity_ttl_secs", p.affinity_ttl_secs),
            ("pool.affinity_load_factor", p.affinity_load_factor),
            (
                "pool.credential_check_interval_secs",
                p.credential_check_interval_secs,
            ),
            (
                "listener.header_read_timeout_secs",
                l.header_read_timeout_secs,
            ),
            ("listener.idle_timeout_secs", l.idle_timeout_secs),
            ("listener.body_read_timeout_secs", l.body_read_timeout_secs),
            ("alerts.timeout_secs", self.alerts.timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return refuse(key, "must be a positive number of seconds");
            }
        }
        Ok(())
    }

    /// `[refresh]`: the jitter, the lease, the token-endpoint budget, attempts and the scan.
    fn check_refresh(&self) -> Result<(), Refusal> {
        let r = &self.refresh;
        if !(0.0..=1.0).contains(&r.lead_jitter) {
            return refuse("refresh.lead_jitter", "must be between 0 and 1");
        }
        if r.lease_secs < 1.0 {
            return refuse("refresh.lease_secs", "must be at least 1 second");
        }
        if !(r.max_calls_per_sec.is_finite() && r.max_calls_per_sec > 0.0) {
            return refuse(
                "refresh.max_calls_per_sec",
                "must be a positive number of calls per second",
            );
        }
        for (key, v) in [
            ("refresh.max_calls_burst", u64::from(r.max_calls_burst)),
            ("refresh.max_attempts", u64::from(r.max_attempts)),
            ("refresh.scan_interval_secs", r.scan_interval_secs),
        ] {
            if v == 0 {
                return refuse(key, "must be at least 1");
            }
        }
        Ok(())
    }

    /// `[alerts]`: webhooks are http(s) URLs (shown redacted) and need the signing secret; the queue is not empty.
    fn check_alerts(&self) -> Result<(), Refusal> {
        let a = &self.alerts;
        if let Some(url) = a.webhooks.iter().find(|u| !is_http_url(u)) {
            return refuse(
                "alerts.webhooks",
                format!("{:?} is not an http(s) URL", redact_url(url)),
            );
        }
        if !a.webhooks.is_empty() && a.secret.as_deref().is_none_or(|s| s.trim().is_empty()) {
            return refuse(
                "alerts.secret",
                "is required with alerts.webhooks (alerts are signed with it)",
            );
        }
        if a.max_attempts == 0 || a.max_queue == 0 {
            return refuse(
                "alerts.max_attempts",
                "and alerts.max_queue must be at least 1",
            );
        }
        Ok(())
    }

    /// `[pool]`: the affinity map holds two generations; a request makes at least one attempt.
    fn check_pool(&self) -> Result<(), Refusal> {
        if self.pool.affinity_capacity < 2 {
            return refuse("pool.affinity_capacity", "must be at least 2");
        }
        if self.pool.max_attempts == 0 {
            return refuse("pool.max_attempts", "must be at least 1");
        }
        Ok(())
    }

    /// `[listener]` and `max_body_bytes`: timeouts at most a year, connections and body memory enough for one body.
    fn check_listener(&self) -> Result<(), Refusal> {
        let l = &self.listener;
        if self.max_body_bytes == 0 {
            return refuse("max_body_bytes", "must be greater than 0");
        }
        for (key, v) in [
            (
                "listener.header_read_timeout_secs",
                l.header_read_timeout_secs,
            ),
            ("listener.idle_timeout_secs", l.idle_timeout_secs),
            ("listener.body_read_timeout_secs", l.body_read_timeout_secs),
        ] {
            if v > MAX_LISTENER_TIMEOUT_SECS {
                return refuse(key, "must be at most 31536000 (a year)");
            }
        }
        if l.workers.is_some_and(|n| n > MAX_WORKERS) {
            return refuse("listener.workers", format!("must be at most {MAX_WORKERS}"));
        }
        if l.max_connections == 0 {
            return refuse("listener.max_connections", "must be at least 1");
        }
        if l.max_body_memory_bytes < self.max_body_bytes {
            return refuse(
                "listener.max_body_memory_bytes",
                "must be at least max_body_bytes (or no body of the largest size could ever be read)",
            );
        }
        Ok(())
    }

    /// `cors_allowed_origins` and `allowed_hosts`: origins and host names, nothing more.
    fn check_browsers(&self) -> Result<(), Refusal> {
        if let Some(o) = self.cors_allowed_origins.iter().find(|o| !is_origin(o)) {
            return refuse(
                "cors_allowed_origins",
                format!("{o:?} is not an origin like \"https://chat.example.com\" (scheme, host, optional port; no path)"),
            );
        }
        if let Some(h) = self
            .allowed_hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(['/', ':', ' ']))
        {
            return refuse(
                "allowed_hosts",
                format!("{h:?} is not a host name (no scheme, port or path)"),
            );
        }
        Ok(())
    }
}
