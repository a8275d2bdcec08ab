//! Delivering alerts: a JSON POST to every configured URL, signed with `x-gateway-signature: sha256=<hex>` (HMAC-SHA256
//! of the exact body with `alerts.secret`), with `x-gateway-event` and `x-gateway-delivery` (the alert's id, the same
//! on every retry so receivers can drop duplicates).
//!
//! A delivery is retried on connection errors, timeouts, 408, 429 and 5xx, up to `alerts.max_attempts` times, waiting
//! `backoff_base_ms × 2^n` (jittered, at most a minute) in between; other 4xx answers are final.

use std::time::Duration;

use sha2::Digest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Alert;
use crate::config::AlertsConfig;

/// HMAC-SHA256 (RFC 2104) of `message` with `key`, as lowercase hex.
pub fn sign(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = sha2::Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = sha2::Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes alerts off the queue and delivers them, one at a time, until `shutdown`.
pub async fn run(
    mut queue: mpsc::Receiver<Alert>,
    http: reqwest::Client,
    config: AlertsConfig,
    shutdown: CancellationToken,
) {
    loop {
        let alert = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = queue.recv() => match a {
                Some(a) => a,
                None => return,
            },
        };
        let Ok(body) = serde_json::to_vec(&alert) else {
            continue;
        };
        for url in &config.webhooks {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = deliver(&http, url, &config, &alert, &body) => {}
            }
        }
    }
}

/// Whether a failed delivery may succeed when tried again.
fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429
}

async fn deliver(
    http: &reqwest::Client,
    url: &str,
    config: &AlertsConfig,
    alert: &Alert,
    body: &[u8],
) {
    let signature = format!(
        "sha256={}",
        sign(config.secret.as_deref().unwrap_or("").as_bytes(), body)
    );
    let attempts = config.max_attempts.max(1);
    for attempt in 0..attempts {
        let sent = http
            .post(url)
            .timeout(Duration::from_secs_f64(config.timeout_secs))
            .header("content-type", "application/json")
            .header("x-gateway-event", alert.event)
            .header("x-gateway-delivery", &alert.id)
            .header("x-gateway-signature", &signature)
            .body(body.to_vec())
            .send()
            .await;
        let outcome = match sent {
            Ok(r) if r.status().is_success() => {
                metrics::counter!("gateway_alerts_delivered_total").increment(1);
                return;
            }
            Ok(r) if !retryable(r.status()) => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    event = alert.event,
                    "webhook refused the alert; not retried"
                );
                metrics::counter!("gateway_alerts_failed_total").increment(1);
                return;
            }
            Ok(r) => format!("status {}", r.status().as_u16()),
            Err(e) => crate::error::error_chain(&e),
        };
        if attempt + 1 == attempts {
            tracing::warn!(event = alert.event, last = %outcome, "webhook delivery failed after {attempts} attempts");
            metrics::counter!("gateway_alerts_failed_total").increment(1);
            return;
        }
        tokio::time::sleep(backoff(config.backoff_base_ms, attempt)).await;
    }
}

fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.min(16)).min(60_000);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    Duration::from_millis((exp as f64 * jitter) as u64)
}
