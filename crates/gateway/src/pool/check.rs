//! One account's credential check: when upstream refuses a request (401/403) the gateway asks, with the credential
//! alone, whether it is the credential that is refused (see `crate::attribution`). This is the bookkeeping of those
//! checks, kept with the account's entry.
//!
//! Promises: at most one check per account is in flight (callers that arrive meanwhile join it), and at most one
//! starts per `interval` — within it the last verdict stands, however many refusals arrive. A caller that goes away
//! does not cancel the check (it runs on the engine's task tracker). Memory: one receiver per account.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// What a check with the credential alone found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The credential works on its own: the refusal was about the request (its headers, model or beta flags).
    Works,
    /// Upstream refuses the credential itself (401/403, upstream's message): it needs a new login or key.
    Rejected(String),
    /// Upstream refuses the organization permanently (banned, disabled, OAuth not allowed; upstream's message).
    Banned(String),
    /// The check could not tell (429, 5xx, a network failure, a timeout): nobody is quarantined on a guess.
    Unknown,
}

/// A verdict and the credential it is about (a hash of the secret, never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub verdict: Verdict,
    pub secret_id: u64,
}

type Published = Option<Checked>;

#[derive(Debug, Default)]
struct Slot {
    /// When the latest check started.
    started: Option<Instant>,
    /// The latest check: running (`None` published yet) or done (its result).
    latest: Option<watch::Receiver<Published>>,
}

#[derive(Debug, Default)]
pub struct CheckSlot {
    slot: Mutex<Slot>,
}

/// A stable, non-reversible id of a secret, so verdicts can name the credential they are about.
pub fn secret_id(secret: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    secret.hash(&mut h);
    h.finish()
}

impl CheckSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a check within `interval` found that the credential `secret_id` works.
    pub fn vouches(&self, secret_id: u64, interval: Duration) -> bool {
        let st = self.lock();
        let recent = st.started.is_some_and(|t| Instant::now() < t + interval);
        recent
            && st.latest.as_ref().is_some_and(|rx| {
                rx.borrow()
                    .as_ref()
                    .is_some_and(|c| c.verdict == Verdict::Works && c.secret_id == secret_id)
            })
    }

    /// The latest verdict when a check started within `interval` (joining it while it runs), else the verdict of a new
    /// check `run()` started on `tasks`. `run` is only called when a check starts.
    pub async fn check<F, Fut>(&self, interval: Duration, tasks: &TaskTracker, run: F) -> Checked
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Checked> + Send + 'static,
    {
        let mut rx = {
            let mut st = self.lock();
            let now = Instant::now();
            let due = st.started.is_none_or(|t| now >= t + interval);
            let running = st.latest.as_ref().is_some_and(|rx| rx.borrow().is_none());
            match &st.latest {
                Some(rx) if !due || running => rx.clone(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    let work = run();
                    tasks.spawn(async move {
                        let _ = tx.send(Some(work.await));
                    });
                    st.started = Some(now);
                    st.latest = Some(rx.clone());
                    metrics::counter!("gateway_credential_checks_total").increment(1);
                    rx
                }
            }
        };
        let published = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|p| p.clone());
        // No result only when the task ended without one (the runtime shuts down).
        published.unwrap_or(Checked {
            verdict: Verdict::Unknown,
            secret_id: 0,
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests spawn concurrent callers on the test runtime
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    const INTERVAL: Duration = Duration::from_secs(60);

    fn counting(
        calls: &Arc<AtomicUsize>,
        verdict: Verdict,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Checked> + Send>> {
        let calls = calls.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Checked {
                    verdict,
                    secret_id: 7,
                }
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_storm_of_refusals_costs_one_check_per_interval() {
        let slot = Arc::new(CheckSlot::default());
        let tasks = TaskTracker::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut waiters = Vec::new();
        for _ in 0..100 {
            let (slot, tasks, calls) = (slot.clone(), tasks.clone(), calls.clone());
            waiters.push(tokio::spawn(async move {
                slot.check(INTERVAL, &tasks, counting(&calls, Verdict::Works))
                    .await
            }));
        }
        for w in waiters {
            assert_eq!(w.await.unwrap().verdict, Verdict::Works);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one check in flight, joined by all"
        );
        assert!(slot.vouches(7, INTERVAL));
        assert!(
            !slot.vouches(8, INTERVAL),
            "about another secret it says nothing"
        );

        tokio::time::advance(INTERVAL - Duration::from_secs(1)).await;
        let again = slot
            .check(INTERVAL, &tasks, counting(&calls, Verdict::Unknown))
            .await;
        assert_eq!(
            again.verdict,
            Verdict::Works,
            "within the interval the verdict stands"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            !slot.vouches(7, INTERVAL),
            "a verdict does not outlive its interval"
        );
        let later = slot
            .check(
                INTERVAL,
                &tasks,
                counting(&calls, Verdict::Rejected("no".into())),
            )
            .await;
        assert_eq!(later.verdict, Verdict::Rejected("no".into()));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "one more check once the interval passed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_goes_away_does_not_cancel_the_check() {
        let slot = Arc::new(CheckSlot::default());
        let tasks = TaskTracker::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let first = {
            let (slot, tasks, calls) = (slot.clone(), tasks.clone(), calls.clone());
            tokio::spawn(async move {
                slot.check(INTERVAL, &tasks, counting(&calls, Verdict::Works))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        first.abort();
        let joined = slot
            .check(INTERVAL, &tasks, counting(&calls, Verdict::Unknown))
            .await;
        assert_eq!(joined.verdict, Verdict::Works);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
