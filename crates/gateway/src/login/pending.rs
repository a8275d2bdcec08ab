//! OAuth logins started from the admin API (or the dashboard) and not yet completed: the PKCE verifier waits here,
//! keyed by the login's `state`, until the operator pastes the code.
//!
//! Bounded (at most [`MAX_PENDING`], the oldest dropped first) and short-lived ([`PENDING_TTL`]). Kept in the replica
//! that started the login: the code must be pasted into the same replica (the dashboard's listener).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::oauth::Pkce;

pub const MAX_PENDING: usize = 32;
pub const PENDING_TTL: Duration = Duration::from_secs(15 * 60);

struct Pending {
    pkce: Pkce,
    name: Option<String>,
    started: Instant,
}

#[derive(Default)]
pub struct PendingLogins {
    map: Mutex<HashMap<String, Pending>>,
}

impl PendingLogins {
    /// Remembers a new login; returns its `state`.
    pub fn start(&self, pkce: Pkce, name: Option<String>) -> String {
        let state = pkce.state.clone();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, p| now.duration_since(p.started) < PENDING_TTL);
        while map.len() >= MAX_PENDING {
            let oldest = map
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            state.clone(),
            Pending {
                pkce,
                name,
                started: now,
            },
        );
        state
    }

    /// Takes the login with this `state` (once): its PKCE pair and the name asked for.
    pub fn take(&self, state: &str) -> Option<(Pkce, Option<String>)> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let p = map.remove(state)?;
        (p.started.elapsed() < PENDING_TTL).then_some((p.pkce, p.name))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_login_is_taken_once_expires_and_the_map_is_bounded() {
        let logins = PendingLogins::default();
        let state = logins.start(Pkce::generate(), Some("me".into()));
        let (_, name) = logins.take(&state).unwrap();
        assert_eq!(name.as_deref(), Some("me"));
        assert!(logins.take(&state).is_none(), "a code is exchanged once");

        let state = logins.start(Pkce::generate(), None);
        tokio::time::advance(PENDING_TTL + Duration::from_secs(1)).await;
        assert!(logins.take(&state).is_none(), "expired");

        for _ in 0..(MAX_PENDING * 3) {
            logins.start(Pkce::generate(), None);
        }
        assert_eq!(logins.len(), MAX_PENDING);
    }
}
