//! Which code answers a request: the API routes that carry nearly every client request go straight to their handler,
//! everything else through the router (`crate::server`).
//!
//! Why: the router costs a request more than its own checks do — a path lookup, a boxed clone of the route's service
//! per layer, a boxed future per layer, a `MatchedPath` in the extensions — about a tenth of what the gateway spends
//! on a small request. The direct way runs the very same checks, in the same order, through the functions the router's
//! layers call: the browser guard (`crate::browser::guarded`), the request count (`crate::server::counted`), the
//! client's key (`crate::auth::client_authenticated`), then the handler.
//!
//! Invariants:
//! - Only an exact `POST` to one of [`ApiRoute`]'s paths takes the direct way; any other method or path (a `GET
//!   /v1/messages` answered 405, an unknown path answered 404, a preflight) is the router's, which serves these paths
//!   too, so both ways answer alike.
//! - This module knows the routes' paths and handlers; the layers' logic stays in the modules that own it.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use tower::ServiceExt;

use crate::state::AppState;

/// The gateway's HTTP surfaces as one request handler (see the module docs).
#[derive(Clone)]
pub struct App {
    router: axum::Router,
    /// The state of the API routes when this listener serves them (not on the dashboard's own listener).
    api: Option<AppState>,
}

impl App {
    /// Every surface on one listener: the API's direct way and the router (`crate::server::router`).
    pub fn new(router: axum::Router, api: Option<AppState>) -> App {
        App { router, api }
    }
}

impl crate::listener::Handler for App {
    fn handle(&self, req: Request) -> impl std::future::Future<Output = Response> + Send {
        let direct = match &self.api {
            Some(state) => ApiRoute::of(req.method(), req.uri().path()).map(|r| (r, state.clone())),
            None => None,
        };
        let router = self.router.clone();
        async move {
            match direct {
                Some((route, state)) => route.serve(state, req).await,
                None => match router.oneshot(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                },
            }
        }
    }
}

/// An API route that takes the direct way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRoute {
    Messages,
    CountTokens,
    ChatCompletions,
    Responses,
}

impl ApiRoute {
    const ALL: [ApiRoute; 4] = [
        ApiRoute::Messages,
        ApiRoute::CountTokens,
        ApiRoute::ChatCompletions,
        ApiRoute::Responses,
    ];

    /// The route a request takes directly, if any.
    pub fn of(method: &Method, path: &str) -> Option<ApiRoute> {
        if method != Method::POST {
            return None;
        }
        ApiRoute::ALL.into_iter().find(|r| r.path() == path)
    }

    /// The route's path: also its pattern in the router, and its `route` metric label.
    pub fn path(self) -> &'static str {
        match self {
            ApiRoute::Messages => "/v1/messages",
            ApiRoute::CountTokens => "/v1/messages/count_tokens",
            ApiRoute::ChatCompletions => "/v1/chat/completions",
            ApiRoute::Responses => "/v1/responses",
        }
    }

    /// The router's layers, in their order (outermost first), around the route's handler.
    async fn serve(self, state: AppState, req: Request) -> Response {
        crate::browser::guarded(&state, req, |req| {
            crate::server::counted(&state, self.path(), req, |req| {
                crate::auth::client_authenticated(&state, req, |req| {
                    self.handler(state.clone(), req)
                })
            })
        })
        .await
    }

    async fn handler(self, state: AppState, req: Request) -> Response {
        match self {
            ApiRoute::Messages => crate::anthropic::messages(State(state), req).await,
            ApiRoute::CountTokens => crate::anthropic::count_tokens(State(state), req).await,
            ApiRoute::ChatCompletions => crate::openai::chat_completions(State(state), req).await,
            ApiRoute::Responses => crate::openai::responses::create(State(state), req).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_exact_post_to_an_api_path_goes_direct() {
        for r in ApiRoute::ALL {
            assert_eq!(ApiRoute::of(&Method::POST, r.path()), Some(r));
            assert_eq!(ApiRoute::of(&Method::GET, r.path()), None);
            assert_eq!(ApiRoute::of(&Method::OPTIONS, r.path()), None);
            assert_eq!(ApiRoute::of(&Method::POST, &format!("{}/", r.path())), None);
        }
        assert_eq!(ApiRoute::of(&Method::POST, "/v1/models"), None);
        assert_eq!(ApiRoute::of(&Method::POST, "/V1/MESSAGES"), None);
    }
}
