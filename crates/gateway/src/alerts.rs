//! Alerts: JSON webhooks when something needs an operator — an account needs a login or is banned, its refreshes keep
//! failing, every account of a priority tier is cooling, a client key used 80 % or 100 % of a budget. Conditions are read from the live pool every
//! [`CHECK_EVERY`] ([`watch`]); each fires **once per episode**: when it starts, not again while it lasts, and again only
//! after it ended and came back. Deliveries ([`webhook`]) are signed (HMAC-SHA256 of the body with `alerts.secret`),
//! retried with jittered exponential backoff, and queued in a bounded queue: when it is full, new alerts are dropped
//! and counted (`gateway_alerts_dropped_total`), never blocking the pool.
//!
//! Each replica alerts on what it sees; with several replicas, an episode may be reported once per replica (the
//! `replica` field says which).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

pub mod watch;
pub mod webhook;

use crate::config::AlertsConfig;

pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// One alert as delivered (the webhook body).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    /// Unique per alert (also in `x-gateway-delivery`).
    pub id: String,
    /// `account_needs_login`, `account_banned`, `refresh_failing`, `tier_cooling`, `key_budget_80` or
    /// `key_budget_100`.
    pub event: &'static str,
    pub at: String,
    pub replica: String,
    pub summary: String,
    pub account: Option<AlertAccount>,
    pub tier: Option<i32>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertAccount {
    pub id: i64,
    pub name: String,
}

/// A condition that holds now; `key` names its episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub key: String,
    pub event: &'static str,
    pub summary: String,
    pub account: Option<AlertAccount>,
    pub tier: Option<i32>,
    pub detail: Option<String>,
}

pub struct Alerts {
    config: AlertsConfig,
    http: reqwest::Client,
    queue: mpsc::Sender<Alert>,
    receiver: Mutex<Option<mpsc::Receiver<Alert>>>,
    /// Keys of the episodes in progress.
    active: Mutex<HashSet<String>>,
}

impl Alerts {
    pub fn new(config: AlertsConfig, http: reqwest::Client) -> Alerts {
        let (queue, receiver) = mpsc::channel(config.max_queue.max(1));
        Alerts {
            config,
            http,
            queue,
            receiver: Mutex::new(Some(receiver)),
            active: Mutex::new(HashSet::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.config.webhooks.is_empty()
    }

    /// The delivery queue's receiving end, once (for the delivery task).
    pub fn take_receiver(&self) -> Option<mpsc::Receiver<Alert>> {
        self.receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Starts delivering (on `tasks`, so shutdown waits for it) until `shutdown`. Does nothing without webhooks.
    pub fn start(
        &self,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        if !self.enabled() {
            return;
        }
        if let Some(rx) = self.take_receiver() {
            tasks.spawn(webhook::run(
                rx,
                self.http.clone(),
                self.config.clone(),
                shutdown,
            ));
        }
    }

    /// Compares what holds now with the episodes in progress: a new condition starts an episode and is queued; a
    /// condition gone ends its episode. Returns the alerts queued.
    pub fn observe(&self, now: Vec<Condition>, at: String, replica: &str) -> Vec<Alert> {
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let keys: HashSet<String> = now.iter().map(|c| c.key.clone()).collect();
        let mut fired = Vec::new();
        for c in now {
            if active.contains(&c.key) {
                continue;
            }
            let alert = Alert {
                id: format!(
                    "{:016x}{:016x}",
                    rand::random::<u64>(),
                    rand::random::<u64>()
                ),
                event: c.event,
                at: at.clone(),
                replica: replica.to_string(),
                summary: c.summary,
                account: c.account,
                tier: c.tier,
                detail: c.detail,
            };
            if self.enabled() {
                self.enqueue(alert.clone());
            }
            fired.push(alert);
        }
        *active = keys;
        fired
    }

    fn enqueue(&self, alert: Alert) {
        tracing::info!(event = alert.event, summary = %alert.summary, "alert");
        if let Err(e) = self.queue.try_send(alert) {
            metrics::counter!("gateway_alerts_dropped_total").increment(1);
            tracing::warn!(error = %e, "alert queue full or closed: alert dropped");
        }
    }
}

#[cfg(test)]
mod tests;
