//! A memo of the digests of keys that authenticated lately, one per thread: every request's key is hashed
//! (SHA-256) to look it up, and that digest was the largest single cost of authenticating a request (about 2,400
//! instructions, callgrind).
//!
//! What it holds: the keys themselves, as the request buffers do, only longer. At most [`CAPACITY`] per thread
//! (when full it starts over), only keys that matched a known key (an unknown key, a guesser's, costs a digest every
//! time and never enters), and only while the key table stays the same: each load of the table takes a new
//! [`Generation`], and a memo filled under another one is emptied on its next use (each thread's next
//! authentication after the reload), so a deleted key's text does not stay in memory past that.
//!
//! It memoizes a pure function (key → digest): whether the key is still valid, enabled or expired is decided from
//! the key table on every request, so nothing here can let a revoked key in.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::KeyHash;

/// Most keys one thread remembers.
pub const CAPACITY: usize = 64;

/// Longest key remembered (a generated key has 48 characters; a static one is the operator's choice).
const MAX_KEY_LEN: usize = 256;

/// Which load of a key table a memo entry belongs to (unique in the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

impl Generation {
    /// A generation no memo has seen.
    pub fn next() -> Generation {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Generation(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub fn raw(self) -> u64 {
        self.0
    }

    pub fn from_raw(raw: u64) -> Generation {
        Generation(raw)
    }
}

#[derive(Default)]
struct Memo {
    generation: u64,
    digests: HashMap<Box<str>, KeyHash, foldhash::fast::RandomState>,
}

impl Memo {
    /// The memo of `generation`: emptied first when it was filled under another one.
    fn of(&mut self, generation: Generation) -> &mut Self {
        if self.generation != generation.0 {
            self.digests.clear();
            self.generation = generation.0;
        }
        self
    }
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// The digest of `presented`, and whether it came from the memo.
pub fn digest(presented: &str, generation: Generation) -> (KeyHash, bool) {
    let hit = MEMO.with_borrow_mut(|m| m.of(generation).digests.get(presented).copied());
    match hit {
        Some(h) => (h, true),
        None => (KeyHash::of(presented), false),
    }
}

/// Remembers the digest of a key that matched a key of the table loaded as `generation`.
pub fn remember(presented: &str, digest: &KeyHash, generation: Generation) {
    if presented.len() > MAX_KEY_LEN {
        return;
    }
    MEMO.with_borrow_mut(|m| {
        let m = m.of(generation);
        if m.digests.len() >= CAPACITY {
            m.digests.clear();
        }
        m.digests.insert(presented.into(), *digest);
    });
}

/// Whether this thread remembers `presented` (and has seen no other generation since).
#[cfg(test)]
pub fn remembers(presented: &str) -> bool {
    MEMO.with_borrow(|m| m.digests.contains_key(presented))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_key_has_its_own_digest_and_the_memo_stays_bounded() {
        let g = Generation::next();
        let (h, hit) = digest("sk-memo-a", g);
        assert!(!hit);
        assert_eq!(h.as_str(), KeyHash::of("sk-memo-a").as_str());
        remember("sk-memo-a", &h, g);
        let (again, hit) = digest("sk-memo-a", g);
        assert!(hit);
        assert_eq!(again.as_str(), h.as_str());
        // Another key is not answered with a remembered digest.
        let (other, hit) = digest("sk-memo-b", g);
        assert!(!hit);
        assert_eq!(other.as_str(), KeyHash::of("sk-memo-b").as_str());

        for i in 0..3 * CAPACITY {
            let k = format!("sk-memo-{i}");
            remember(&k, &KeyHash::of(&k), g);
            assert!(MEMO.with_borrow(|m| m.digests.len()) <= CAPACITY);
        }
        let long = "k".repeat(MAX_KEY_LEN + 1);
        remember(&long, &KeyHash::of(&long), g);
        assert!(!remembers(&long));
    }

    #[test]
    fn a_new_generation_forgets_what_the_last_one_remembered() {
        let first = Generation::next();
        remember("sk-memo-old", &KeyHash::of("sk-memo-old"), first);
        assert!(digest("sk-memo-old", first).1);
        let second = Generation::next();
        assert_ne!(first, second);
        assert!(!digest("sk-memo-old", second).1);
        assert!(!remembers("sk-memo-old"));
    }
}
