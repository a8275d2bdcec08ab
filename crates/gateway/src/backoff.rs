//! Jittered exponential backoff.
//!
//! Delays we compute ourselves are capped at `max`; delays an upstream asked for (Retry-After) are not computed here
//! and are never shortened (see `ratelimit`).

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
        }
    }

    /// The delay before retry number `failures` (1 = after the first failure): `base * 2^(failures-1)` capped at `max`,
    /// then "equal jitter": uniformly in [delay/2, delay], so peers that failed together do not retry together.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.max);
        let factor: f64 = rand::rng().random_range(0.5..=1.0);
        raw.mul_f64(factor)
    }
}

/// A deterministic fraction in [-1, 1] for `key`, used to spread per-account schedules (refresh lead) without state.
pub fn spread(key: i64) -> f64 {
    // SplitMix64 finaliser: good avalanche, no dependency.
    let mut z = (key as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z as f64 / u64::MAX as f64) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..200 {
            let d1 = b.delay(1);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d3 = b.delay(3);
            assert!(
                d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
                "{d3:?}"
            );
            let d20 = b.delay(20);
            assert!(
                d20 >= Duration::from_millis(500) && d20 <= Duration::from_secs(1),
                "{d20:?}"
            );
        }
        let samples: std::collections::HashSet<_> = (0..50).map(|_| b.delay(2)).collect();
        assert!(samples.len() > 1, "jitter must vary");
    }

    #[test]
    fn spread_is_bounded_and_deterministic() {
        for k in -1000..1000 {
            let s = spread(k);
            assert!((-1.0..=1.0).contains(&s));
            assert_eq!(s, spread(k));
        }
    }
}
