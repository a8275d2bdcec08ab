//! Prompt-cache affinity: requests of one conversation go to the same account, so Anthropic's prompt cache (which is
//! per organization) keeps hitting.
//!
//! The map is bounded in both size and age: two generations of at most `capacity / 2` entries each; when the current
//! generation fills up or grows older than the TTL it becomes the previous one and the old previous is dropped. A
//! lookup that hits the previous generation promotes the entry. So memory never exceeds `capacity` entries whatever
//! keys clients send, and an idle conversation is forgotten after at most two TTLs.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::account::AccountId;

#[derive(Debug)]
pub struct AffinityMap {
    inner: Mutex<Generations>,
    half: usize,
    ttl: Duration,
}

#[derive(Debug)]
struct Generations {
    current: HashMap<u64, AccountId>,
    previous: HashMap<u64, AccountId>,
    started: Instant,
}

impl AffinityMap {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        AffinityMap {
            inner: Mutex::new(Generations {
                current: HashMap::new(),
                previous: HashMap::new(),
                started: Instant::now(),
            }),
            half: (capacity / 2).max(1),
            ttl,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rotate_if_due(&self, g: &mut Generations) {
        if g.current.len() >= self.half || g.started.elapsed() >= self.ttl {
            g.previous = std::mem::take(&mut g.current);
            g.started = Instant::now();
        }
    }

    pub fn get(&self, key: u64) -> Option<AccountId> {
        let mut g = self.lock();
        if g.started.elapsed() >= self.ttl.saturating_mul(2) {
            g.current.clear();
            g.previous.clear();
            g.started = Instant::now();
            return None;
        }
        if let Some(id) = g.current.get(&key) {
            return Some(*id);
        }
        let id = g.previous.remove(&key)?;
        self.rotate_if_due(&mut g);
        g.current.insert(key, id);
        Some(id)
    }

    pub fn put(&self, key: u64, id: AccountId) {
        let mut g = self.lock();
        if g.current.get(&key) == Some(&id) {
            return;
        }
        self.rotate_if_due(&mut g);
        g.previous.remove(&key);
        g.current.insert(key, id);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const AFFINITY_SAMPLE: usize = 4096;

/// The conversation key of a request: an explicit session id wins, then `metadata.user_id`, then the cacheable prefix
/// (system prompt, tools and the first message), which is what Anthropic's prompt cache keys on.
pub fn conversation_key(
    session: Option<&str>,
    user_id: Option<&str>,
    prefix: &[Option<&str>],
) -> Option<u64> {
    // Not SipHash: this hashes kilobytes per request, and the keys are not a hash table's (a crafted collision only
    // makes two conversations prefer the same account).
    let mut h = std::hash::BuildHasher::build_hasher(&foldhash::quality::FixedState::with_seed(0));
    if let Some(s) = session.filter(|s| !s.is_empty()) {
        ("session", s).hash(&mut h);
    } else if let Some(u) = user_id.filter(|u| !u.is_empty()) {
        ("user", u).hash(&mut h);
    } else if prefix.iter().any(Option::is_some) {
        "prefix".hash(&mut h);
        for part in prefix {
            match part {
                // Each part's length and its first and last 4 KiB: request bodies reach megabytes and the whole
                // prefix need not be hashed on every request; two conversations that differ only in the middle of a
                // huge first message merely share an account.
                Some(p) => {
                    let b = p.as_bytes();
                    (1u8, b.len()).hash(&mut h);
                    if b.len() <= AFFINITY_SAMPLE {
                        // The sample is the whole part: hashed once.
                        b.hash(&mut h);
                    } else {
                        b[..AFFINITY_SAMPLE].hash(&mut h);
                        b[b.len() - AFFINITY_SAMPLE..].hash(&mut h);
                    }
                }
                None => 0u8.hash(&mut h),
            }
        }
    } else {
        return None;
    }
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stays_bounded_and_forgets_idle_keys() {
        let m = AffinityMap::new(1000, Duration::from_secs(60));
        for k in 0..100_000u64 {
            m.put(k, 1);
            assert!(m.len() <= 1000);
        }
        // Recent keys are still there.
        assert_eq!(m.get(99_999), Some(1));
        m.put(7, 2);
        assert_eq!(m.get(7), Some(2));
        tokio::time::advance(Duration::from_secs(121)).await;
        assert_eq!(m.get(7), None);
        assert!(m.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_in_use_survives_rotation() {
        let m = AffinityMap::new(10, Duration::from_secs(60));
        m.put(1, 9);
        for round in 0..20u64 {
            for k in 0..4 {
                m.put(100 + round * 10 + k, 1);
            }
            assert_eq!(m.get(1), Some(9), "round {round}");
        }
    }

    #[test]
    fn key_precedence() {
        let p = [Some("sys"), None, Some("first")];
        let a = conversation_key(Some("s1"), Some("u"), &p);
        assert_eq!(a, conversation_key(Some("s1"), None, &[]));
        assert_ne!(a, conversation_key(Some("s2"), Some("u"), &p));
        assert_eq!(
            conversation_key(None, Some("u"), &p),
            conversation_key(None, Some("u"), &[])
        );
        assert_eq!(
            conversation_key(None, None, &p),
            conversation_key(None, None, &p)
        );
        assert_ne!(
            conversation_key(None, None, &p),
            conversation_key(None, None, &[Some("sys"), None, Some("other")])
        );
        assert_eq!(conversation_key(None, None, &[None, None]), None);
        // Long prefixes: the head, the tail and the length decide.
        let long_a = format!("{}{}", "a".repeat(10_000), "end-1");
        let long_b = format!("{}{}", "a".repeat(10_000), "end-2");
        assert_ne!(
            conversation_key(None, None, &[Some(&long_a)]),
            conversation_key(None, None, &[Some(&long_b)])
        );
        assert_eq!(
            conversation_key(None, None, &[Some(&long_a)]),
            conversation_key(None, None, &[Some(&long_a.clone())])
        );
    }
}
