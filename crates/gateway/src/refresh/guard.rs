//! A flight's drop guard: however the flight's task ends — its result, a panic, the runtime dropping it — the cell is
//! settled (the flight cleared, waiters answered) and a rotation the flight obtained is kept.

use std::sync::Arc;

use tokio::sync::watch;

use super::cell::FlightResult;
use super::flight::Outcome;
use super::*;

pub(super) struct FlightGuard {
    engine: RefreshEngine,
    cell: Arc<CredentialCell>,
    tx: Option<watch::Sender<FlightResult>>,
}

impl FlightGuard {
    pub(super) fn new(
        engine: RefreshEngine,
        cell: Arc<CredentialCell>,
        tx: watch::Sender<FlightResult>,
    ) -> FlightGuard {
        FlightGuard {
            engine,
            cell,
            tx: Some(tx),
        }
    }

    pub(super) fn engine(&self) -> &RefreshEngine {
        &self.engine
    }

    /// Settles the cell with the flight's outcome and publishes it to the waiters.
    pub(super) fn finish(mut self, outcome: Outcome) {
        self.publish(outcome);
    }

    fn publish(&mut self, outcome: Outcome) {
        if let Some(tx) = self.tx.take() {
            let result = self.engine.settle(&self.cell, outcome);
            let _ = tx.send(Some(result));
        }
    }
}

impl Drop for FlightGuard {
    /// The flight ended without a result (its task panicked or was dropped). A rotation it obtained is in the
    /// journal (written before anything else): the cell holds it as pending, to be persisted without a new exchange.
    fn drop(&mut self) {
        if self.tx.is_none() {
            return;
        }
        let id = self.cell.account().id;
        let outcome = match self.engine.inner.journal.rotation(id) {
            Some(rotation) => Outcome::Held {
                tokens: rotation.tokens(self.engine.now()),
                cause: "the refresh task failed after the endpoint rotated the token".into(),
            },
            None => Outcome::Transient {
                attempts: 0,
                cause: "the refresh task failed unexpectedly".into(),
            },
        };
        tracing::error!(
            account = id,
            "refresh task ended without a result; its cell is settled by the guard"
        );
        self.publish(outcome);
    }
}
