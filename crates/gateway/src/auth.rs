//! Client and admin authentication middleware. Errors answer in the dialect of the route called.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Dialect, GatewayError};
use crate::state::AppState;

use crate::tenants::ring::secret_eq;

pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Resolves the presented key to a [`crate::tenants::Tenant`] (static config key, managed key, or an open gateway) and
/// attaches it to the request's extensions; refuses missing, unknown, disabled and expired keys in the route's dialect.
pub async fn client_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    client_authenticated(&state, req, |req| next.run(req)).await
}

/// [`client_auth`] around `next`, for the routes that skip the router (`crate::dispatch`).
pub async fn client_authenticated<F, Fut>(state: &AppState, mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let now = state.clock.now();
    match state.keys().authenticate(presented_key(req.headers()), now) {
        Ok(tenant) => {
            req.extensions_mut().insert(tenant);
            next(req).await
        }
        Err(e) => e.into_dialect_response(Dialect::of_request(req.uri().path(), req.headers())),
    }
}

/// Who is calling the admin API: the admin key itself (scripts) or a dashboard session. Put in the request's extensions
/// by [`admin_auth`] for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    AdminKey,
    Session(String),
}

impl Actor {
    pub fn label(&self) -> &str {
        match self {
            Actor::AdminKey => "admin_key",
            Actor::Session(label) => label,
        }
    }
}

/// The client's address, when the listener recorded it.
pub fn peer_ip(req: &Request) -> std::net::IpAddr {
    req.extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// Checks a presented admin key, throttling the address after repeated failures (shared with the dashboard login).
pub fn check_admin_key(
    state: &AppState,
    ip: std::net::IpAddr,
    key: &str,
) -> Result<(), GatewayError> {
    if let Err(wait) = state.operator.throttle.check(ip) {
        return Err(GatewayError::RateLimited {
            message: "too many failed admin logins from this address; wait before trying again"
                .into(),
            retry_after_secs: wait.as_secs().max(1),
        });
    }
    match &state.config.admin_key {
        Some(admin) if secret_eq(admin, key) => {
            state.operator.throttle.succeeded(ip);
            Ok(())
        }
        Some(_) => {
            state.operator.throttle.failed(ip);
            Err(GatewayError::Unauthorized("invalid admin key".into()))
        }
        None => Err(GatewayError::Unauthorized(
            "the admin API is off: set admin_key in the config".into(),
        )),
    }
}

/// Admin authentication: `Authorization: Bearer <admin_key>`, or a dashboard session cookie — which, on a
/// state-changing method, must come with the session's CSRF token in `x-csrf-token`.
pub async fn admin_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match admin_actor(&state, &req) {
        Ok(actor) => {
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn admin_actor(state: &AppState, req: &Request) -> Result<Actor, GatewayError> {
    if let Some(key) = presented_key(req.headers()) {
        check_admin_key(state, peer_ip(req), key)?;
        return Ok(Actor::AdminKey);
    }
    let Some(token) = crate::session::cookie_token(req.headers()) else {
        return Err(GatewayError::Unauthorized(
            "admin API needs Authorization: Bearer <admin_key> (set admin_key in the config) or a dashboard session"
                .into(),
        ));
    };
    let session = state.operator.sessions.get(token).ok_or_else(|| {
        GatewayError::Unauthorized("the dashboard session has ended; log in again".into())
    })?;
    if !req.method().is_safe() {
        let sent = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !secret_eq(sent, &session.csrf) {
            return Err(GatewayError::Forbidden(
                "a state-changing dashboard call needs the session's x-csrf-token header".into(),
            ));
        }
    }
    Ok(Actor::Session(session.label))
}
