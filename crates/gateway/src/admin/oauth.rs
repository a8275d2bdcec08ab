//! An OAuth login driven through the admin API (the dashboard's "log in" button): `POST /admin/oauth/start` returns
//! the authorize URL (PKCE S256, as `claude-gateway login`); the operator opens it, authorizes, and pastes what the
//! page or the redirect shows (`CODE#STATE` or the callback URL) to `POST /admin/oauth/complete`, which exchanges the
//! code and stores the account (updating it when it is already known, as `accounts import` does).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;

use super::accounts::{parse, view_of};
use super::audit::AuditDetail;
use crate::error::GatewayError;
use crate::oauth::Pkce;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/oauth/start", post(start))
        .route("/admin/oauth/complete", post(complete))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Start {
    name: Option<String>,
}

async fn start(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let result = async {
        let s: Start = if body.is_empty() {
            Start::default()
        } else {
            parse(&body)?
        };
        let pkce = Pkce::generate();
        let url = pkce
            .authorize_url(state.operator.oauth.config())
            .map_err(|e| GatewayError::Internal(format!("oauth.authorize_url: {e}")))?;
        let login = state.operator.logins.start(pkce, s.name);
        let body = serde_json::json!({
            "authorize_url": url.as_str(),
            "state": login,
            "expires_in": crate::login::pending::PENDING_TTL.as_secs(),
        });
        Ok::<_, GatewayError>((StatusCode::CREATED, Json(body)).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Complete {
    /// `CODE#STATE`, or the callback URL with `code` and `state`.
    code: String,
}

async fn complete(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let result = async {
        let c: Complete = parse(&body)?;
        let (code, login_state) = crate::login::parse_pasted(&c.code).ok_or_else(|| {
            GatewayError::InvalidRequest(
                "`code` must be CODE#STATE or the callback URL with code and state".into(),
            )
        })?;
        let (pkce, name) = state.operator.logins.take(&login_state).ok_or_else(|| {
            GatewayError::InvalidRequest(
                "no login with this state is waiting here (expired, used, or started elsewhere); start again"
                    .into(),
            )
        })?;
        let client = &state.operator.oauth;
        let tokens = client
            .exchange_code(&code, &pkce.verifier, &login_state)
            .await
            .map_err(|e| match e {
                crate::oauth::TokenError::Rejected { .. } => GatewayError::InvalidRequest(format!(
                    "the token endpoint refused the code: {e}"
                )),
                other => GatewayError::UpstreamUnreachable(other.to_string()),
            })?;
        let signed_in = crate::login::signed_in(client, tokens).await;
        let (account, saved) =
            crate::store::upsert_one(state.store.as_ref(), &signed_in, name.as_deref())
                .await
                .map_err(|e| GatewayError::from_store(&e))?;
        let saved = saved.as_str();
        let detail = format!("logged in {:?} (id {}, {saved})", account.name, account.id);
        let view = view_of(&state, &account).await;
        let mut r = Json(serde_json::json!({ "saved": saved, "account": view })).into_response();
        r.extensions_mut().insert(AuditDetail(detail));
        Ok::<_, GatewayError>(r)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
