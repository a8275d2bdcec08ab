//! Live request statistics of this replica for the dashboard's overview: per-minute request and error counts and a
//! latency histogram per minute, for the last [`MINUTES`] minutes.
//!
//! Bounded memory (a fixed ring of minutes, a fixed histogram each). Percentiles come from log-spaced buckets (each
//! about 19 % wider than the last), reported as the bucket's upper bound: never below the true value by more than one
//! bucket. An error is a 5xx or a 429: the gateway or upstream could not serve (a client's own 4xx is not counted).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

pub const MINUTES: usize = 60;
/// Buckets of 2^(i/4) ms: up to ~65 s; slower answers land in the last.
const BUCKETS: usize = 64;

#[derive(Clone)]
struct Minute {
    index: i64,
    requests: u64,
    errors: u64,
    latency: [u32; BUCKETS],
}

#[derive(Default)]
pub struct LiveStats {
    minutes: Mutex<VecDeque<Minute>>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct MinuteView {
    /// Unix minute (seconds / 60).
    pub minute: i64,
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct StatsView {
    /// Requests of the last complete minute and the current one, scaled to a minute.
    pub requests_per_minute: f64,
    /// Share of errors over the last five minutes (0..1), `None` without requests.
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub minutes: Vec<MinuteView>,
}

fn bucket(latency: Duration) -> usize {
    let ms = latency.as_secs_f64() * 1000.0;
    if ms <= 1.0 {
        return 0;
    }
    let i = (ms.log2() * 4.0).ceil();
    (i as usize).min(BUCKETS - 1)
}

fn upper_ms(i: usize) -> f64 {
    2f64.powf(i as f64 / 4.0)
}

pub fn is_error(status: u16) -> bool {
    status >= 500 || status == 429
}

impl LiveStats {
    /// Counts one answered request in the minute `now_secs` falls in.
    pub fn record(&self, now_secs: i64, status: u16, latency: Duration) {
        let index = now_secs.div_euclid(60);
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        if minutes.back().is_none_or(|m| m.index < index) {
            minutes.push_back(Minute {
                index,
                requests: 0,
                errors: 0,
                latency: [0; BUCKETS],
            });
            while minutes.len() > MINUTES {
                minutes.pop_front();
            }
        }
        // A late record for an older minute (clock stepped back) is counted in the newest one.
        if let Some(m) = minutes.back_mut() {
            m.requests += 1;
            m.errors += u64::from(is_error(status));
            m.latency[bucket(latency)] += 1;
        }
    }

    pub fn view(&self, now_secs: i64) -> StatsView {
        let now = now_secs.div_euclid(60);
        let minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        let recent: Vec<&Minute> = minutes.iter().filter(|m| m.index > now - 5).collect();
        let (requests, errors) = recent
            .iter()
            .fold((0, 0), |(r, e), m| (r + m.requests, e + m.errors));
        let mut hist = [0u64; BUCKETS];
        for m in &recent {
            for (h, c) in hist.iter_mut().zip(m.latency.iter()) {
                *h += u64::from(*c);
            }
        }
        let last_two: u64 = minutes
            .iter()
            .filter(|m| m.index >= now - 1)
            .map(|m| m.requests)
            .sum();
        let elapsed = 60.0 + now_secs.rem_euclid(60) as f64;
        StatsView {
            requests_per_minute: last_two as f64 * 60.0 / elapsed,
            error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
            p50_ms: percentile(&hist, requests, 0.50),
            p99_ms: percentile(&hist, requests, 0.99),
            minutes: minutes
                .iter()
                .filter(|m| m.index > now - MINUTES as i64)
                .map(|m| MinuteView {
                    minute: m.index,
                    requests: m.requests,
                    errors: m.errors,
                })
                .collect(),
        }
    }
}

fn percentile(hist: &[u64; BUCKETS], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in hist.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(upper_ms(i));
        }
    }
    Some(upper_ms(BUCKETS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_errors_and_percentiles() {
        let s = LiveStats::default();
        let t0 = 1_000_040; // 20 s into a minute
        for i in 0..98 {
            s.record(t0, 200, Duration::from_millis(10 + i % 3));
        }
        s.record(t0, 529, Duration::from_millis(900));
        s.record(t0, 400, Duration::from_millis(2000));
        let v = s.view(t0);
        assert_eq!(
            v.error_rate,
            Some(0.01),
            "a client's 400 is not an error; a 529 is"
        );
        let p50 = v.p50_ms.unwrap();
        assert!((10.0..=12.0 * 1.19).contains(&p50), "{p50}");
        let p99 = v.p99_ms.unwrap();
        assert!((900.0..=900.0 * 1.19).contains(&p99), "{p99}");
        assert!((v.requests_per_minute - 100.0 * 60.0 / 80.0).abs() < 1e-9);
        assert_eq!(v.minutes.len(), 1);
    }

    #[test]
    fn the_ring_is_bounded_and_old_minutes_leave_the_rates() {
        let s = LiveStats::default();
        for m in 0..(MINUTES as i64 * 3) {
            s.record(m * 60, 500, Duration::from_millis(5));
        }
        assert_eq!(s.minutes.lock().unwrap().len(), MINUTES);
        let later = (MINUTES as i64 * 4) * 60;
        let v = s.view(later);
        assert_eq!(v.error_rate, None);
        assert_eq!(v.requests_per_minute, 0.0);
        assert!(v.minutes.is_empty());
    }
}
