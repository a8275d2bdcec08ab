//! Dashboard sessions and the login throttle.
//!
//! The admin key is exchanged once (`POST /admin/session`) for a random session token sent back only as an
//! `HttpOnly; SameSite=Strict` cookie, and a CSRF token the page keeps in memory and sends as `x-csrf-token` on every
//! state-changing call. The map holds SHA-256 digests of tokens, never the tokens.
//!
//! Invariants: the number of sessions and of throttled addresses is bounded (the oldest are dropped first); a session
//! ends at its expiry or logout, whichever comes first; after [`FREE_FAILURES`] failed logins from one address, each
//! further attempt waits twice as long as the one before (capped at [`MAX_BLOCK`]), and a success clears it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use sha2::Digest;
use tokio::time::Instant;

pub const COOKIE: &str = "cgw_session";
pub const MAX_SESSIONS: usize = 256;
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
pub const FREE_FAILURES: u32 = 5;
pub const MAX_BLOCK: Duration = Duration::from_secs(15 * 60);
const MAX_THROTTLED: usize = 4096;

/// A live session, as the auth middleware sees it.
#[derive(Debug, Clone)]
pub struct Session {
    /// A short, non-secret label for the audit log.
    pub label: String,
    pub csrf: String,
    pub expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn digest(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Sessions {
    /// Opens a session; returns its token (for the cookie only) and the session.
    pub fn create(&self) -> (String, Session) {
        let token = random_token();
        let session = Session {
            label: format!("session:{}", &hex(&digest(&token))[..8]),
            csrf: random_token(),
            expires: Instant::now() + SESSION_TTL,
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        while map.len() >= MAX_SESSIONS {
            let oldest = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k);
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(digest(&token), session.clone());
        (token, session)
    }

    pub fn get(&self, token: &str) -> Option<Session> {
        let key = digest(token);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, token: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&digest(token));
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The session token in a request's `Cookie` header.
pub fn cookie_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value for a session token (`None` = remove the cookie). `Secure` when the client reached us over
/// TLS (a TLS-terminating proxy says so in `X-Forwarded-Proto`).
pub fn set_cookie(token: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match token {
        Some(t) => format!(
            "{COOKIE}={t}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Whether the client reached the gateway over TLS.
pub fn over_tls(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

// === impl LoginThrottle ===

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    blocked_until: Option<Instant>,
    last: Instant,
}

/// Failed admin-key attempts per client address.
#[derive(Default)]
pub struct LoginThrottle {
    map: Mutex<HashMap<IpAddr, Failures>>,
}

impl LoginThrottle {
    /// `Err(wait)` while `ip` must wait before trying again.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&ip).and_then(|f| f.blocked_until) {
            Some(until) if until > Instant::now() => Err(until - Instant::now()),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_THROTTLED && !map.contains_key(&ip) {
            let oldest = map.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k);
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            blocked_until: None,
            last: now,
        });
        f.count += 1;
        f.last = now;
        if f.count >= FREE_FAILURES {
            let doublings = (f.count - FREE_FAILURES).min(20);
            let wait = Duration::from_secs(1u64 << doublings).min(MAX_BLOCK);
            f.blocked_until = Some(now + wait);
        }
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_end_at_logout_and_are_bounded() {
        let s = Sessions::default();
        let (token, session) = s.create();
        assert!(s.get(&token).is_some());
        assert!(session.label.starts_with("session:") && !session.label.contains(&token));
        s.remove(&token);
        assert!(s.get(&token).is_none(), "logout ends it");

        let (token, _) = s.create();
        tokio::time::advance(SESSION_TTL + Duration::from_secs(1)).await;
        assert!(s.get(&token).is_none(), "expired");

        let first = s.create().0;
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..MAX_SESSIONS {
            s.create();
        }
        assert!(s.map.lock().unwrap().len() <= MAX_SESSIONS);
        assert!(s.get(&first).is_none(), "the oldest is dropped first");
    }

    #[tokio::test(start_paused = true)]
    async fn logins_are_throttled_after_failures_with_doubling_waits() {
        let t = LoginThrottle::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed(ip);
            assert!(t.check(ip).is_ok());
        }
        t.failed(ip);
        assert_eq!(t.check(ip), Err(Duration::from_secs(1)));
        assert!(t.check(other).is_ok(), "per address");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(t.check(ip).is_ok());
        t.failed(ip);
        assert_eq!(t.check(ip), Err(Duration::from_secs(2)));
        for _ in 0..40 {
            t.failed(ip);
        }
        assert_eq!(t.check(ip), Err(MAX_BLOCK));
        t.succeeded(ip);
        assert!(t.check(ip).is_ok());
    }

    #[test]
    fn cookie_attributes() {
        let c = set_cookie(Some("tok"), true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("; Secure"));
        assert!(!set_cookie(Some("tok"), false).contains("Secure"));
        let mut h = axum::http::HeaderMap::new();
        h.insert("cookie", "a=b; cgw_session=xyz; c=d".parse().unwrap());
        assert_eq!(cookie_token(&h), Some("xyz"));
    }
}
