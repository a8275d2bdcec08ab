//! What the gateway accepts from web browsers: CORS for the origins the operator listed, and nothing from others.
//!
//! A browser adds `Origin` to every cross-origin request, and any web page the operator visits can send requests to a
//! gateway on loopback, blind. So:
//! - a request carrying an `Origin` that is not in `cors_allowed_origins` is refused with 403 before it reaches an
//!   account (it could only spend the pool's quota; non-browser clients send no `Origin`);
//! - a preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin is answered here, and the
//!   answers to its requests carry `Access-Control-Allow-Origin`;
//! - when `client_keys` is empty (an open gateway, loopback only), the `Host` must name this machine — a loopback
//!   name or address, the `listen` address, or one of `allowed_hosts` — so a page whose DNS name was rebound to
//!   127.0.0.1 cannot use the gateway as if it were its own origin.
//!
//! `Origin` itself is never forwarded upstream (`crate::headers`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::error::{Dialect, GatewayError};
use crate::state::AppState;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE_SECS: &str = "600";

/// The middleware around every route (see the module docs).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    guarded(&state, req, |req| next.run(req)).await
}

/// [`guard`] around `next`, for the routes that skip the router (`crate::dispatch`).
pub async fn guarded<F, Fut>(state: &AppState, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let dialect = Dialect::of_request(req.uri().path(), req.headers());
    if state.config.client_keys.is_empty() {
        if let Err(e) = check_host(&state.config, &req) {
            return e.into_dialect_response(dialect);
        }
    }
    let Some(origin) = req.headers().get("origin").cloned() else {
        return next(req).await;
    };
    // The gateway's own page (the dashboard) calls it from its own origin: not a cross-origin request.
    if origin.to_str().ok().is_some_and(|o| same_origin(&req, o)) {
        return next(req).await;
    }
    let allowed = origin.to_str().ok().is_some_and(|o| {
        state
            .config
            .cors_allowed_origins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(o))
    });
    if !allowed {
        let shown: String = String::from_utf8_lossy(origin.as_bytes())
            .chars()
            .take(200)
            .collect();
        return GatewayError::Forbidden(format!(
            "requests from the browser origin {shown:?} are not allowed: the gateway's operator can add it to \
             cors_allowed_origins"
        ))
        .into_dialect_response(dialect);
    }
    if req.method() == Method::OPTIONS
        && req.headers().contains_key("access-control-request-method")
    {
        return preflight(origin, req.headers());
    }
    let mut response = next(req).await;
    allow(response.headers_mut(), origin);
    response
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert("access-control-allow-origin", origin);
    headers.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("*"),
    );
    headers.append("vary", HeaderValue::from_static("origin"));
}

fn preflight(origin: HeaderValue, request: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    allow(h, origin);
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    if let Some(asked) = request.get("access-control-request-headers") {
        h.insert("access-control-allow-headers", asked.clone());
    }
    h.insert(
        "access-control-max-age",
        HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
    );
    h.append(
        "vary",
        HeaderValue::from_static("access-control-request-method, access-control-request-headers"),
    );
    response
}

/// Whether `origin` is the origin the request was sent to (`http://` + its `Host`). A rebound DNS name passes this
/// but not the `Host` check above, which open gateways apply first; with client keys, a rebound page has no key and
/// no session cookie (the cookie belongs to the real host).
fn same_origin(req: &Request, origin: &str) -> bool {
    let Some(host) = req.headers().get("host").and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let scheme = if crate::session::over_tls(req.headers()) {
        "https"
    } else {
        "http"
    };
    origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
}

/// The host a request names (`Host`, or the authority of an HTTP/2 request), without port, lower-case.
fn requested_host(req: &Request) -> Option<String> {
    let raw = match req.uri().host() {
        Some(h) => h.to_string(),
        None => req.headers().get("host")?.to_str().ok()?.to_string(),
    };
    let host = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default().to_string()
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
            _ => raw,
        }
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

fn check_host(config: &Config, req: &Request) -> Result<(), GatewayError> {
    // No Host at all is not a browser (browsers always send one); such a client is not a rebinding victim.
    let Some(host) = requested_host(req) else {
        return Ok(());
    };
    if host_is_ours(config, &host) {
        return Ok(());
    }
    let shown: String = host.chars().take(200).collect();
    Err(GatewayError::Forbidden(format!(
        "this gateway does not serve the host {shown:?} (it has no client keys, so it answers only to loopback \
         names and `listen`); add the name to allowed_hosts if it is yours"
    )))
}

fn host_is_ours(config: &Config, host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        if ip.is_loopback() || ip == config.listen.ip() {
            return true;
        }
    }
    config
        .allowed_hosts
        .iter()
        .any(|h| h.trim_end_matches('.').eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::is_origin;

    #[test]
    fn origins_are_serialized_origins() {
        assert!(is_origin("https://chat.example.com"));
        assert!(is_origin("http://localhost:3000"));
        assert!(!is_origin("https://chat.example.com/"));
        assert!(!is_origin("https://chat.example.com/app"));
        assert!(!is_origin("chat.example.com"));
        assert!(!is_origin("null"));
        assert!(!is_origin("ftp://x.example"));
    }

    fn request(host: &str) -> Request {
        Request::builder()
            .uri("/v1/messages")
            .header("host", host)
            .body(axum::body::Body::empty())
            .unwrap()
    }

    #[test]
    fn hosts_of_this_machine_are_ours_and_rebound_names_are_not() {
        let config = Config {
            allowed_hosts: vec!["gw.internal".into()],
            ..Config::default()
        };
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "localhost",
            "[::1]:8080",
            "app.localhost:1",
            "GW.internal:8080",
            "127.0.0.2",
        ] {
            assert!(check_host(&config, &request(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1:8080",
        ] {
            assert!(check_host(&config, &request(bad)).is_err(), "{bad}");
        }
    }
}
