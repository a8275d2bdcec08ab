//! The router and our own accept loop (so a handler can close a connection without answering).

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::respond::is_dropped;
use crate::state::Shared;
use crate::{messages, oauth};

const BODY_LIMIT: usize = 64 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/messages", post(messages::messages))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/models", get(messages::list_models))
        .route("/v1/models/{id}", get(messages::get_model))
        .route("/v1/oauth/token", post(oauth::token))
        .route("/oauth/authorize", get(oauth::authorize))
        .route("/api/oauth/profile", get(oauth::profile))
        .fallback(messages::not_found)
        .method_not_allowed_fallback(messages::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// The error a connection's service returns to make hyper close it without a response.
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("simulated connection drop")
    }
}

impl Error for DropConnection {}

/// Accept connections until the task is aborted; aborting it aborts every connection too.
pub(crate) async fn serve(listener: TcpListener, router: Router) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let svc = TowerToHyperService::new(router.clone());
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let fut = svc.call(req);
                        async move {
                            let resp = fut.await.map_err(|e| match e {})?;
                            if is_dropped(&resp) {
                                return Err(DropConnection);
                            }
                            Ok(resp)
                        }
                    });
                    conns.spawn(async move {
                        let conn = hyper::server::conn::http1::Builder::new()
                            .header_read_timeout(None)
                            .serve_connection(TokioIo::new(stream), svc);
                        if let Err(e) = conn.await {
                            tracing::debug!("connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    // E.g. too many open files: back off a little instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
