//! The HTTP/JSON API every node serves (axum): runs, schedules, the cache, cluster members, and
//! its own OpenAPI document at `/openapi.json`; and the web dashboard at `/`, built on the same
//! handlers.
//!
//! - [`routes`]: the route table (method, path, handler, documentation);
//! - `handlers`: the handlers, one file per resource (runs, schedules, cache, the node);
//! - [`types`]: the JSON types of requests and answers (shared with [`crate::client`]);
//! - [`error`]: errors as JSON with stable codes, and extractors that reject bad input that way;
//! - [`openapi`]: the document, built from the route table;
//! - `dashboard`: the web pages (server-rendered, htmx for live parts), which call the handlers.
//!
//! Bound to 127.0.0.1 by default; bound to any other address it requires a bearer token
//! (every route but `/v1/health` and `/openapi.json` checks it).

mod dashboard;
pub mod error;
mod handlers;
mod members;
pub mod openapi;
pub mod routes;
pub mod types;
mod views;

use crate::node::Node;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use error::ApiError;
pub use members::{LocalOnly, Members, local_info};
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest request body accepted by default: room for the largest run input the run table
/// accepts by default (1 MiB of JSON) and the request around it.
pub const DEFAULT_MAX_BODY: usize = 2 * 1024 * 1024;

/// How the API is served.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Bearer token required on every protected route; required when not on loopback.
    pub token: Option<String>,
    /// Largest request body (bytes).
    pub max_body: usize,
    /// The dashboard's link to a run's trace: a URL with `{trace_id}` in it (e.g.
    /// `http://jaeger:16686/trace/{trace_id}`).
    pub trace_url: Option<String>,
    /// Served over HTTPS: the dashboard's session cookie is marked `Secure`.
    pub https: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            token: None,
            max_body: DEFAULT_MAX_BODY,
            trace_url: None,
            https: false,
        }
    }
}

impl ApiConfig {
    /// Refuses to serve a non-loopback address without a token.
    pub fn check(&self, addr: SocketAddr) -> Result<(), crate::Error> {
        if !addr.ip().is_loopback() && self.token.as_deref().is_none_or(str::is_empty) {
            return Err(crate::Error::Config(format!(
                "the API would listen on {addr}, which is not a loopback address, without a token: \
                 set one (--token, CAIRN_TOKEN or [api] token) or bind to 127.0.0.1"
            )));
        }
        Ok(())
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    node: Arc<Node>,
    members: Arc<dyn Members>,
    token: Option<Arc<str>>,
    openapi: Arc<serde_json::Value>,
    dashboard: Arc<dashboard::Dashboard>,
}

/// The API's router for `node`.
pub fn router(node: Arc<Node>, members: Arc<dyn Members>, config: &ApiConfig) -> Router {
    let ops = routes::operations();
    let token: Option<Arc<str>> = config
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(Into::into);
    let state = AppState {
        node,
        members,
        openapi: Arc::new(openapi::document(&ops, token.is_some())),
        token,
        dashboard: Arc::new(dashboard::Dashboard::new(
            config.trace_url.clone(),
            config.https,
        )),
    };
    let mut router = Router::new();
    for op in ops {
        let handler = if op.public {
            op.handler
        } else {
            op.handler
                .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        };
        router = router.route(op.path, handler);
    }
    router
        .merge(dashboard::routes(state.clone()))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take this method",
            )
        })
        .layer(DefaultBodyLimit::max(config.max_body))
        .with_state(state)
}

async fn require_token(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = &app.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 7235).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start());
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => {
            next.run(req).await
        }
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong bearer token",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this node requires `Authorization: Bearer <token>`",
        )
        .into_response(),
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A running API server.
pub struct ApiServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl ApiServer {
    /// Serves `node`'s API on `listener`.
    pub fn start(
        node: Arc<Node>,
        members: Arc<dyn Members>,
        listener: tokio::net::TcpListener,
        config: &ApiConfig,
    ) -> Result<ApiServer, crate::Error> {
        Self::start_on(node, members, listener, config)
    }

    /// Serves `node`'s API on any axum listener, e.g. a [`crate::tls::TlsListener`].
    pub fn start_on<L>(
        node: Arc<Node>,
        members: Arc<dyn Members>,
        listener: L,
        config: &ApiConfig,
    ) -> Result<ApiServer, crate::Error>
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        let addr = listener.local_addr().map_err(|e| crate::Error::Start {
            part: "api",
            detail: e.to_string(),
        })?;
        config.check(addr)?;
        let app = router(node, members, config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Ok(ApiServer {
            addr,
            shutdown: Some(tx),
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests and waits for those in flight.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}
