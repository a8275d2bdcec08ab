//! Handles of the metrics every request updates, kept once made: building a metric's key (its label vector and
//! strings) and looking it up in the recorder's registry cost more than the increment. A handle is made on first use,
//! exactly as `metrics::counter!` would make it then, so `/metrics` lists the same series with the same labels;
//! label sets outside the common ones go through the macros as before.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};

/// The API routes counted by name (others are counted through the macros).
const ROUTES: [&str; 4] = [
    "/v1/messages",
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages/count_tokens",
];

/// The statuses with a static label (`status_label`).
const STATUSES: [u16; 12] = [200, 400, 401, 403, 404, 413, 429, 500, 502, 503, 504, 529];

#[derive(Debug, Default)]
pub struct RequestMetrics {
    requests: [[OnceLock<Counter>; STATUSES.len()]; ROUTES.len()],
    heads: [OnceLock<Histogram>; ROUTES.len()],
    attempts: [OnceLock<Counter>; STATUSES.len()],
}

impl RequestMetrics {
    /// `gateway_requests_total{route, status}` and `gateway_response_head_seconds{route}`.
    pub fn request(&self, route: &str, status: u16, head: Duration) {
        let label = status_label(status);
        match ROUTES.iter().position(|r| *r == route) {
            Some(r) => {
                match STATUSES.iter().position(|s| *s == status) {
                    Some(s) => self.requests[r][s]
                        .get_or_init(|| {
                            metrics::counter!("gateway_requests_total", "route" => ROUTES[r], "status" => label)
                        })
                        .increment(1),
                    None => metrics::counter!("gateway_requests_total", "route" => ROUTES[r], "status" => label)
                        .increment(1),
                }
                self.heads[r]
                    .get_or_init(|| metrics::histogram!("gateway_response_head_seconds", "route" => ROUTES[r]))
                    .record(head.as_secs_f64());
            }
            None => {
                let route = route.to_string();
                metrics::counter!("gateway_requests_total", "route" => route.clone(), "status" => label)
                    .increment(1);
                metrics::histogram!("gateway_response_head_seconds", "route" => route)
                    .record(head.as_secs_f64());
            }
        }
    }

    /// `gateway_upstream_attempts_total{outcome}` for an upstream answer with `status`.
    pub fn attempt(&self, status: u16) {
        let label = status_label(status);
        match STATUSES.iter().position(|s| *s == status) {
            Some(s) => self.attempts[s]
                .get_or_init(
                    || metrics::counter!("gateway_upstream_attempts_total", "outcome" => label),
                )
                .increment(1),
            None => metrics::counter!("gateway_upstream_attempts_total", "outcome" => label)
                .increment(1),
        }
    }
}

/// A static label for common statuses (no allocation per request), the number otherwise.
fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    match status {
        200 => "200".into(),
        400 => "400".into(),
        401 => "401".into(),
        403 => "403".into(),
        404 => "404".into(),
        413 => "413".into(),
        429 => "429".into(),
        500 => "500".into(),
        502 => "502".into(),
        503 => "503".into(),
        504 => "504".into(),
        529 => "529".into(),
        other => other.to_string().into(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The series the cached handles write are the ones the macros write: same names, same labels, same counts.
    #[test]
    fn cached_handles_write_the_series_the_macros_would() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let m = RequestMetrics::default();
            for _ in 0..3 {
                m.request("/v1/messages", 200, Duration::from_millis(5));
            }
            m.request("/v1/messages", 599, Duration::from_millis(5));
            m.request("/v1/models", 200, Duration::from_millis(5));
            m.attempt(529);
            m.attempt(529);
            m.attempt(418);
        });
        let text = handle.render();
        for line in [
            r#"gateway_requests_total{route="/v1/messages",status="200"} 3"#,
            r#"gateway_requests_total{route="/v1/messages",status="599"} 1"#,
            r#"gateway_requests_total{route="/v1/models",status="200"} 1"#,
            r#"gateway_upstream_attempts_total{outcome="529"} 2"#,
            r#"gateway_upstream_attempts_total{outcome="418"} 1"#,
            r#"gateway_response_head_seconds_count{route="/v1/messages"} 4"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
