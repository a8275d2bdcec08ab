//! Exact percentiles of recorded samples (microseconds). Runs are short enough to keep every sample.

use std::collections::BTreeMap;

/// A latency distribution, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Dist {
    pub n: usize,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Dist {
    pub fn of(mut samples: Vec<u64>) -> Dist {
        samples.sort_unstable();
        Dist {
            n: samples.len(),
            p50: rank(&samples, 0.50),
            p90: rank(&samples, 0.90),
            p99: rank(&samples, 0.99),
            p999: rank(&samples, 0.999),
            max: samples.last().copied().unwrap_or(0),
        }
    }

    /// The four reported percentiles, in order.
    pub fn percentiles(&self) -> [u64; 4] {
        [self.p50, self.p90, self.p99, self.p999]
    }
}

/// The A/A split of one path's samples: its requests taken alternately into two halves (one, other, one, …, in the
/// order they were recorded), each half's distribution. Both halves saw the same moments of the run, so how far their
/// percentiles differ is the run's noise at each percentile (larger than a whole path's, having half the samples).
pub fn alternate_halves(samples: &[u64]) -> (Dist, Dist) {
    let one = samples.iter().step_by(2).copied().collect();
    let other = samples.iter().skip(1).step_by(2).copied().collect();
    (Dist::of(one), Dist::of(other))
}

/// Nearest-rank percentile of sorted samples (0 when empty).
fn rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Errors of a run by kind ("HTTP 503", "timeout", …).
#[derive(Debug, Clone, Default)]
pub struct Errors(pub BTreeMap<String, u64>);

impl Errors {
    pub fn add(&mut self, kind: impl Into<String>) {
        *self.0.entry(kind.into()).or_insert(0) += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn merge(&mut self, other: &Errors) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// `0`, or `12 (timeout 10, HTTP 503 2)`.
    pub fn describe(&self) -> String {
        let total = self.total();
        if total == 0 {
            return "0".into();
        }
        let kinds: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{total} ({})", kinds.join(", "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let d = Dist::of((1..=1000).collect());
        assert_eq!(d.p50, 500);
        assert_eq!(d.p90, 900);
        assert_eq!(d.p99, 990);
        assert_eq!(d.p999, 999);
        assert_eq!(d.max, 1000);
        assert_eq!(Dist::of(vec![]).p99, 0);
        assert_eq!(Dist::of(vec![7]).p999, 7);
    }

    #[test]
    fn alternate_halves_take_every_other_sample() {
        // 1, 3, 5, … into one half and 2, 4, 6, … into the other: the second is the first shifted by one.
        let (one, other) = alternate_halves(&(1..=2000).collect::<Vec<_>>());
        assert_eq!((one.n, other.n), (1000, 1000));
        assert_eq!((one.p50, other.p50), (999, 1000));
        assert_eq!((one.max, other.max), (1999, 2000));
        let (one, other) = alternate_halves(&[5]);
        assert_eq!((one.n, other.n), (1, 0));
    }

    #[test]
    fn errors_describe() {
        let mut e = Errors::default();
        assert_eq!(e.describe(), "0");
        e.add("timeout");
        e.add("timeout");
        e.add("HTTP 503");
        assert_eq!(e.describe(), "3 (HTTP 503: 1, timeout: 2)");
    }
}
