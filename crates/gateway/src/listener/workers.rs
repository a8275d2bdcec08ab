//! Connection workers: single-threaded tokio runtimes, each on its own thread, each serving its share of the client
//! connections.
//!
//! Why: on the shared multi-threaded runtime one request hops threads — the client connection's task, the upstream
//! connection's task and their wake-ups land on whichever worker is free — and every hop is a cross-thread wake-up
//! (futex, a second epoll) that costs more than the request's own work. On a connection worker the client connection,
//! the request's upstream call (through the worker's own upstream client, see `crate::proxy::Upstream`) and their
//! timers all stay on one thread.
//!
//! Invariants:
//! - The listener accepts on the shared runtime and hands each connection to the next worker in turn; the connection
//!   cap, the timeouts and the graceful drain are the listener's, whichever thread serves the connection.
//! - A worker's runtime lives until [`Workers`] is dropped, after the listener has drained and the refresh engine's
//!   tasks (flights started by requests run on the worker that served the request) have finished.
//! - A thread knows which worker it is ([`current`]); any other thread (the shared runtime, tests) is none.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

thread_local! {
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The connection worker this thread is, if it is one.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

/// The running workers; dropping it stops them.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` workers (at least one), named `gateway-worker-N`.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            handles.push(runtime.handle().clone());
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("gateway-worker-{i}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(Some(i)));
                    // Runs the connections handed to this runtime until told to stop.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
        }
        Ok(Workers {
            handles,
            stops,
            next: AtomicUsize::new(0),
        })
    }

    /// The worker to serve the next connection (round robin).
    pub fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len().max(1);
        &self.handles[i]
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_knows_itself_and_connections_go_round_robin() {
        let workers = Workers::start(2).unwrap();
        assert_eq!(current(), None);
        let mut seen = Vec::new();
        for _ in 0..4 {
            let (tx, rx) = std::sync::mpsc::channel();
            workers.next().spawn(async move {
                tx.send(current()).unwrap();
            });
            seen.push(rx.recv().unwrap());
        }
        assert_eq!(seen, [Some(0), Some(1), Some(0), Some(1)]);
    }
}
