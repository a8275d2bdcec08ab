//! Whose fault is a refusal? A 401 or 403 from upstream does not say whether the credential or the request is refused:
//! Anthropic answers a request carrying `Origin` with 401 whatever the credential, and a beta flag or model the
//! organization may not use with 403. Taking the account out of the pool for those would let any client empty the pool.
//!
//! So before an account is quarantined, its credential is checked alone: one cheap authenticated call
//! (`GET /v1/models?limit=1`) with the credential and nothing of the client's request. Only a failing check
//! quarantines: a 401/403 makes the account `needs_reauth`, a ban message (see [`is_ban`]) makes it `banned`. A check
//! that passes says the request was refused, and the client gets upstream's answer as it was, with no failover and no
//! cooldown; a check that cannot tell (429, 5xx, network) quarantines nobody. Checks are single-flight per account
//! and at most one per `pool.credential_check_interval_secs` (`crate::pool::CheckSlot`).

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use tokio_util::task::TaskTracker;

use crate::account::Account;
use crate::pool::{secret_id, AccountEntry, Checked, Verdict};

/// Longest a credential check may take (the request that asked waits for it).
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest answer body read from a check.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// Runs credential checks against the upstream.
#[derive(Debug, Clone)]
pub struct Attribution {
    http: reqwest::Client,
    url: String,
    interval: Duration,
    tasks: TaskTracker,
}

impl Attribution {
    /// `base_url` without a trailing slash; checks run on `tasks` so a client that goes away does not cancel them.
    pub fn new(
        http: reqwest::Client,
        base_url: &str,
        interval: Duration,
        tasks: TaskTracker,
    ) -> Self {
        Attribution {
            http,
            url: format!("{base_url}/v1/models?limit=1"),
            interval,
            tasks,
        }
    }

    /// Whether a check within the interval found that `secret` works on its own: a refusal of it is then about the
    /// request, and neither a refresh nor another check is needed.
    pub fn vouched(&self, entry: &AccountEntry, secret: &str) -> bool {
        entry.check.vouches(secret_id(secret), self.interval)
    }

    /// Checks the credential the entry holds now, alone. Returns that account row and the verdict (which may be an
    /// earlier check's, within the interval: compare `secret_id` before acting on it).
    pub async fn check(&self, entry: &AccountEntry) -> (Arc<Account>, Checked) {
        let account = entry.cell.account();
        let id = secret_id(&account.credential.secret);
        let headers = crate::headers::upstream_request(&HeaderMap::new(), &account);
        let request = self.http.get(&self.url).headers(headers);
        let checked = entry
            .check
            .check(self.interval, &self.tasks, move || probe(request, id))
            .await;
        (account, checked)
    }
}

async fn probe(request: reqwest::RequestBuilder, secret_id: u64) -> Checked {
    let verdict = match tokio::time::timeout(CHECK_TIMEOUT, answer(request)).await {
        Ok(Some((status, body))) => classify(status, &body),
        Ok(None) | Err(_) => Verdict::Unknown,
    };
    tracing::info!(verdict = ?verdict, "credential checked alone");
    Checked { verdict, secret_id }
}

async fn answer(request: reqwest::RequestBuilder) -> Option<(u16, Vec<u8>)> {
    let mut response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk[..chunk.len().min(MAX_CHECK_BODY - body.len())]);
        if body.len() >= MAX_CHECK_BODY {
            break;
        }
    }
    Some((status, body))
}

/// The verdict of a check's answer.
pub fn classify(status: u16, body: &[u8]) -> Verdict {
    let message = crate::error::AnthropicError::message_of(body);
    match status {
        200..=299 => Verdict::Works,
        400 | 401 | 403 if is_ban(&message) => Verdict::Banned(message),
        401 | 403 => Verdict::Rejected(format!(
            "upstream answered {status} to the credential alone: {message}"
        )),
        _ => Verdict::Unknown,
    }
}

/// Whether an upstream message is a permanent refusal of the organization rather than of one token: "OAuth
/// authentication is currently not allowed for this organization." (401/403), "This organization has been disabled."
/// (400/403) and the like. Messages about CORS are about the request, never a ban.
pub fn is_ban(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    if m.contains("cors") {
        return false;
    }
    m.contains("not allowed for this organization")
        || m.contains("organization has been disabled")
        || m.contains("account has been disabled")
        || m.contains("organization has been suspended")
}

/// Whether an upstream error answer may be the credential's fault and must be attributed before anything is done
/// about it: every 401 and 403, and a 400 that carries a ban message.
pub fn needs_attribution(status: u16, message: &str) -> bool {
    matches!(status, 401 | 403) || (status == 400 && is_ban(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: &str, message: &str) -> Vec<u8> {
        serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn checks_are_classified_by_status_and_message() {
        assert_eq!(classify(200, b"{}"), Verdict::Works);
        let oauth_banned = "OAuth authentication is currently not allowed for this organization.";
        assert_eq!(
            classify(403, &body("permission_error", oauth_banned)),
            Verdict::Banned(oauth_banned.into())
        );
        assert_eq!(
            classify(401, &body("authentication_error", oauth_banned)),
            Verdict::Banned(oauth_banned.into())
        );
        let disabled = "This organization has been disabled.";
        assert_eq!(
            classify(400, &body("invalid_request_error", disabled)),
            Verdict::Banned(disabled.into())
        );
        assert!(matches!(
            classify(401, &body("authentication_error", "invalid x-api-key")),
            Verdict::Rejected(m) if m.contains("401") && m.contains("invalid x-api-key")
        ));
        assert_eq!(
            classify(429, &body("rate_limit_error", "slow down")),
            Verdict::Unknown
        );
        assert_eq!(
            classify(529, &body("overloaded_error", "Overloaded")),
            Verdict::Unknown
        );
        assert_eq!(
            classify(400, &body("invalid_request_error", "max_tokens: required")),
            Verdict::Unknown
        );
    }

    #[test]
    fn cors_refusals_are_never_bans() {
        assert!(!is_ban(
            "CORS requests are not allowed for this Organization because of its settings."
        ));
        assert!(!is_ban(
            "CORS requests must set 'anthropic-dangerous-direct-browser-access' header"
        ));
        assert!(needs_attribution(
            401,
            "CORS requests must set 'anthropic-dangerous-direct-browser-access' header"
        ));
        assert!(needs_attribution(
            400,
            "This organization has been disabled."
        ));
        assert!(!needs_attribution(400, "messages: field required"));
    }
}
