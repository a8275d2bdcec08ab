//! The token-endpoint budget: the endpoint rate-limits the caller (client and address), not one account, so every
//! token call of every account takes a turn from one budget shared through the store (at most
//! `refresh.max_calls_per_sec`, bursts of `refresh.max_calls_burst`), and a 429 pauses every refresh until its
//! Retry-After (`rate_limit_scope = "endpoint"`).
//!
//! Turns are taken in the store (one atomic statement; PostgreSQL makes it cluster-wide). Inside one process a
//! turnstile lets one flight at a time ask the store, and refreshes a waiting request needs go before proactive ones;
//! across processes proactive refreshes may not take the last call of the burst, which stays for requests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::store::TokenCallSlot;

use super::flight::Outcome;
use super::*;

/// Longest sleep between two looks at the budget (a proactive flight may have become urgent meanwhile).
const TURN_POLL: Duration = Duration::from_millis(250);

/// The process-local side of the budget: the mirror of the endpoint's pause and who is waiting.
#[derive(Debug, Default)]
pub(super) struct Budget {
    pause: Mutex<Option<Pause>>,
    urgent_waiting: AtomicUsize,
    ahead_waiting: AtomicUsize,
    /// Proactive flights started and not yet ended (the scan starts no more than the budget can serve).
    ahead_flights: Arc<AtomicUsize>,
    turnstile: tokio::sync::Mutex<()>,
    urgent_done: Notify,
}

#[derive(Debug, Clone)]
pub(super) struct Pause {
    pub(super) until: Instant,
    pub(super) until_wall: DateTime<Utc>,
    pub(super) reason: String,
}

/// Why a flight gets no turn.
#[derive(Debug)]
pub(super) enum NoTurn {
    /// The endpoint is paused (a 429) until then.
    Paused {
        until: DateTime<Utc>,
        reason: String,
    },
    /// The store could not be asked.
    Store(String),
}

impl From<NoTurn> for Outcome {
    fn from(e: NoTurn) -> Outcome {
        match e {
            NoTurn::Paused { until, reason } => Outcome::Blocked { until, reason },
            NoTurn::Store(cause) => Outcome::StoreDown(cause),
        }
    }
}

/// What the admin API shows about the token endpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BudgetView {
    pub max_calls_per_sec: f64,
    pub max_calls_burst: u32,
    pub rate_limit_scope: &'static str,
    /// Refreshes waiting for their turn that a request needs …
    pub waiting_for_requests: usize,
    /// … and proactive ones.
    pub waiting_proactive: usize,
    pub proactive_in_flight: usize,
    pub paused_until: Option<String>,
    pub pause_reason: Option<String>,
}

/// Counts a flight as waiting for its turn while alive.
struct Waiting<'a> {
    budget: &'a Budget,
    urgent: bool,
}

impl<'a> Waiting<'a> {
    fn new(budget: &'a Budget, urgent: bool) -> Self {
        budget.counter(urgent).fetch_add(1, Ordering::SeqCst);
        budget.publish_waiting();
        Waiting { budget, urgent }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let left = self
            .budget
            .counter(self.urgent)
            .fetch_sub(1, Ordering::SeqCst)
            - 1;
        if self.urgent && left == 0 {
            self.budget.urgent_done.notify_waiters();
        }
        self.budget.publish_waiting();
    }
}

/// Counts a proactive flight while alive (moved into the flight's task).
pub(super) struct AheadFlight(Arc<AtomicUsize>);

impl Drop for AheadFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Budget {
    fn counter(&self, urgent: bool) -> &AtomicUsize {
        if urgent {
            &self.urgent_waiting
        } else {
            &self.ahead_waiting
        }
    }

    fn publish_waiting(&self) {
        let n = |c: &AtomicUsize| c.load(Ordering::SeqCst) as f64;
        metrics::gauge!("gateway_refresh_waiting", "priority" => "request")
            .set(n(&self.urgent_waiting));
        metrics::gauge!("gateway_refresh_waiting", "priority" => "proactive")
            .set(n(&self.ahead_waiting));
    }
}

// === impl RefreshEngine: the budget ===

impl RefreshEngine {
    /// The endpoint's pause this process knows of, while it lasts.
    pub(super) fn endpoint_pause(&self) -> Option<Pause> {
        let pause = self
            .inner
            .budget
            .pause
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        pause.clone().filter(|p| p.until > Instant::now())
    }

    /// Adopts a pause of the whole endpoint (learned here or read from the store); never shortens one.
    pub(super) fn note_pause(&self, until_wall: DateTime<Utc>, reason: &str) {
        let left = (until_wall - self.inner.clock.now())
            .to_std()
            .unwrap_or_default();
        if left.is_zero() {
            return;
        }
        let until = Instant::now() + left;
        let mut pause = self
            .inner
            .budget
            .pause
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pause.as_ref().is_none_or(|p| p.until < until) {
            *pause = Some(Pause {
                until,
                until_wall,
                reason: reason.to_string(),
            });
            metrics::gauge!("gateway_token_endpoint_paused_until_seconds")
                .set(until_wall.timestamp() as f64);
            tracing::warn!(until = %crate::clock::rfc3339(until_wall), reason, "every token refresh paused");
        }
    }

    /// A token-endpoint 429 under `rate_limit_scope = "endpoint"`: pause every refresh here and, before the lease is
    /// released, in the store (so no process calls before `until`).
    pub(super) async fn pause_endpoint(&self, until_wall: DateTime<Utc>, reason: &str) {
        if !self.inner.settings.endpoint_scope {
            return;
        }
        self.note_pause(until_wall, reason);
        if let Err(e) = self
            .inner
            .store
            .pause_token_endpoint(until_wall, reason)
            .await
        {
            tracing::warn!(error = %e, "could not record the token endpoint's pause in the store");
        }
    }

    /// Waits for this flight's turn to call the token endpoint. `urgent`: a request waits for this refresh (it may
    /// become so while waiting). Fails when the endpoint is paused or the store cannot be asked.
    pub(super) async fn take_turn(&self, urgent: &AtomicBool) -> Result<(), NoTurn> {
        let budget = &self.inner.budget;
        loop {
            self.paused_outcome()?;
            let is_urgent = urgent.load(Ordering::SeqCst);
            let _waiting = Waiting::new(budget, is_urgent);
            if !is_urgent && budget.urgent_waiting.load(Ordering::SeqCst) > 0 {
                let _ = tokio::time::timeout(TURN_POLL, budget.urgent_done.notified()).await;
                continue;
            }
            let _turn = budget.turnstile.lock().await;
            if self.ask_store_until_granted(urgent, is_urgent).await? {
                metrics::counter!("gateway_token_calls_total").increment(1);
                return Ok(());
            }
        }
    }

    /// With the turnstile held: asks the store for a call until it grants one (`true`), or until a proactive flight
    /// must let a request's refresh go first (`false`).
    async fn ask_store_until_granted(
        &self,
        urgent: &AtomicBool,
        is_urgent: bool,
    ) -> Result<bool, NoTurn> {
        let (inner, budget) = (&self.inner, &self.inner.budget);
        let s = &inner.settings;
        let burst = if is_urgent {
            s.call_burst
        } else {
            s.call_burst.saturating_sub(1).max(1)
        };
        let window = s.call_interval.saturating_mul(burst);
        loop {
            self.paused_outcome()?;
            if !is_urgent
                && (urgent.load(Ordering::SeqCst)
                    || budget.urgent_waiting.load(Ordering::SeqCst) > 0)
            {
                return Ok(false);
            }
            let now = inner.clock.now();
            match inner
                .store
                .take_token_call(now, s.call_interval, window)
                .await
            {
                Ok(TokenCallSlot::Granted) => return Ok(true),
                Ok(TokenCallSlot::Wait {
                    until,
                    paused: Some(reason),
                }) => self.note_pause(until, &reason),
                Ok(TokenCallSlot::Wait {
                    until,
                    paused: None,
                }) => {
                    let left = (until - now).to_std().unwrap_or_default();
                    tokio::time::sleep(left.clamp(Duration::from_millis(1), TURN_POLL)).await;
                }
                Err(e) => return Err(NoTurn::Store(e.to_string())),
            }
        }
    }

    fn paused_outcome(&self) -> Result<(), NoTurn> {
        match self.endpoint_pause() {
            Some(p) => Err(NoTurn::Paused {
                until: p.until_wall,
                reason: p.reason,
            }),
            None => Ok(()),
        }
    }

    /// Proactive flights the scan may start now: what the budget serves until the next scan, less those running.
    pub(super) fn ahead_quota(&self) -> usize {
        let s = &self.inner.settings;
        let per_scan = (s.scan_interval.as_secs_f64() / s.call_interval.as_secs_f64()).ceil();
        let per_scan = if per_scan.is_finite() {
            per_scan.max(1.0) as usize
        } else {
            1
        };
        per_scan.saturating_sub(self.inner.budget.ahead_flights.load(Ordering::SeqCst))
    }

    /// Counts a proactive flight until the returned guard is dropped.
    pub(super) fn ahead_flight(&self) -> AheadFlight {
        self.inner
            .budget
            .ahead_flights
            .fetch_add(1, Ordering::SeqCst);
        AheadFlight(self.inner.budget.ahead_flights.clone())
    }

    /// The token endpoint's budget and pause, for the admin API (the pause as the store has it, else as known here).
    pub async fn budget_view(&self) -> BudgetView {
        let (inner, budget) = (&self.inner, &self.inner.budget);
        let s = &inner.settings;
        let now = inner.clock.now();
        let stored = inner.store.token_endpoint_state().await.ok();
        let (mut until, mut reason) = stored
            .and_then(|st| {
                st.paused_until
                    .filter(|p| *p > now)
                    .map(|p| (Some(p), st.pause_reason))
            })
            .unwrap_or((None, None));
        if until.is_none() {
            if let Some(p) = self.endpoint_pause() {
                (until, reason) = (Some(p.until_wall), Some(p.reason));
            }
        }
        BudgetView {
            max_calls_per_sec: 1.0 / s.call_interval.as_secs_f64(),
            max_calls_burst: s.call_burst,
            rate_limit_scope: if s.endpoint_scope {
                "endpoint"
            } else {
                "account"
            },
            waiting_for_requests: budget.urgent_waiting.load(Ordering::SeqCst),
            waiting_proactive: budget.ahead_waiting.load(Ordering::SeqCst),
            proactive_in_flight: budget.ahead_flights.load(Ordering::SeqCst),
            paused_until: until.map(crate::clock::rfc3339),
            pause_reason: reason,
        }
    }
}
