//! Dashboard sessions over the admin API: `POST /admin/session` exchanges the admin key (in a JSON body, never a URL)
//! for an `HttpOnly; SameSite=Strict` session cookie and a CSRF token; `GET /admin/session` tells the page who it is and
//! its CSRF token again (after a reload: the page keeps it in memory only); `DELETE /admin/session` logs out.
//! Logins are throttled per address after failures (`session::LoginThrottle`) and written to the audit log.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::Actor;
use crate::error::GatewayError;
use crate::session::{cookie_token, over_tls, set_cookie, SESSION_TTL};
use crate::state::AppState;
use crate::store::ops::AuditEntry;

/// Routes reachable without being logged in.
pub fn public_routes() -> Router<AppState> {
    Router::new().route("/admin/session", post(login))
}

/// Routes behind admin authentication.
pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/session", axum::routing::get(whoami).delete(logout))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    admin_key: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Login { admin_key: <redacted> }")
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

async fn login(State(state): State<AppState>, req: Request) -> Response {
    let ip = crate::auth::peer_ip(&req);
    let secure = over_tls(req.headers());
    // A JSON body cannot be sent cross-site without a CORS preflight, which the gateway does not grant: no login CSRF.
    if !is_json(req.headers()) {
        return GatewayError::InvalidRequest(
            "send the admin key as JSON: {\"admin_key\": \"…\"}".into(),
        )
        .into_response();
    }
    let body = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return GatewayError::InvalidRequest(format!("request body: {e}")).into_response()
        }
    };
    let outcome = match super::accounts::parse::<Login>(&body) {
        Ok(l) => crate::auth::check_admin_key(&state, ip, &l.admin_key),
        Err(e) => Err(e),
    };
    let (actor, response) = match outcome {
        Ok(()) => {
            let (token, session) = state.operator.sessions.create();
            let body = serde_json::json!({
                "csrf_token": session.csrf,
                "actor": session.label,
                "expires_in": SESSION_TTL.as_secs(),
            });
            let mut r = (StatusCode::CREATED, Json(body)).into_response();
            if let Ok(v) = set_cookie(Some(&token), secure).parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            (session.label, r)
        }
        Err(e) => ("anonymous".to_string(), e.into_response()),
    };
    let entry = AuditEntry {
        id: 0,
        at: state.clock.now(),
        actor,
        action: "POST /admin/session".into(),
        target: None,
        status: response.status().as_u16(),
        detail: Some(format!("dashboard login from {ip}")),
    };
    super::audit::write(&state, entry).await;
    response
}

async fn whoami(State(state): State<AppState>, req: Request) -> Response {
    let actor = req.extensions().get::<Actor>().cloned();
    let csrf = cookie_token(req.headers())
        .and_then(|t| state.operator.sessions.get(t))
        .map(|s| s.csrf);
    Json(serde_json::json!({
        "actor": actor.as_ref().map(Actor::label),
        "csrf_token": csrf,
    }))
    .into_response()
}

async fn logout(State(state): State<AppState>, req: Request) -> Response {
    if let Some(t) = cookie_token(req.headers()) {
        state.operator.sessions.remove(t);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = set_cookie(None, over_tls(req.headers())).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
