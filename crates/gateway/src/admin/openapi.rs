//! `GET /admin/openapi.json`: the admin API described as OpenAPI 3.1 (`admin/openapi.json`, embedded). A test checks
//! that every admin route is in it.

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

pub const DOCUMENT: &str = include_str!("openapi.json");

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/admin/openapi.json",
        get(|| async { ([("content-type", "application/json")], DOCUMENT).into_response() }),
    )
}
