//! The web dashboard every node serves at `/`: runs with a call timeline, the cache browser
//! with explain and eviction, schedules and nodes.
//!
//! - Pages are rendered on the server with [maud] (templates are Rust, checked at compile
//!   time); live parts poll with a pinned htmx embedded in the binary ([`assets`]). Nothing is
//!   fetched from elsewhere: the dashboard works offline.
//! - Every page calls the API's own handlers (`super::handlers`) and renders what they
//!   answer: one implementation of each read and each change, two presentations.
//! - [`session`]: the session cookie (HttpOnly, SameSite=Strict), the token prompt of a node
//!   that requires one, and the CSRF check of every form that changes state.
//!
//! The pages: [`runs`] (list and run, with [`timeline`]), [`cache`], [`schedules`],
//! [`nodes`]; [`layout`] is the frame and the small helpers they share.

mod assets;
mod cache;
mod layout;
mod nodes;
mod runs;
mod schedules;
pub(crate) mod session;
mod timeline;

use super::AppState;
use axum::Router;
use axum::middleware;
use axum::response::Redirect;
use axum::routing::{get, post};

/// A browser's session, as pages see it ([`session`] keeps them).
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The token forms that change state must carry.
    pub(crate) csrf: std::sync::Arc<str>,
    /// Opened with the node's token (a node without one gives every browser a session).
    pub(crate) signed_in: bool,
}

/// What the dashboard keeps besides the API's state.
pub(crate) struct Dashboard {
    /// Signed-in browsers.
    pub(crate) sessions: session::Sessions,
    /// Link to a run's trace: a URL with `{trace_id}` in it.
    pub(crate) trace_url: Option<String>,
    /// Served over HTTPS: session cookies are `Secure`.
    pub(crate) https: bool,
}

impl Dashboard {
    pub(crate) fn new(trace_url: Option<String>, https: bool) -> Dashboard {
        Dashboard {
            sessions: session::Sessions::default(),
            trace_url,
            https,
        }
    }
}

/// The dashboard's routes (merged into the API's router).
pub(super) fn routes(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route("/runs", get(runs::list))
        .route("/runs/rows", get(runs::rows))
        .route("/runs/{run_id}", get(runs::show))
        .route("/runs/{run_id}/cancel", post(runs::cancel))
        .route("/executions/{execution}", get(runs::execution))
        .route("/cache", get(cache::browse))
        .route("/cache/entries/{key}", get(cache::entry))
        .route("/cache/explain", get(cache::explain))
        .route("/cache/evict", post(cache::evict))
        .route("/schedules", get(schedules::list))
        .route("/schedules/{name}/pause", post(schedules::pause))
        .route("/schedules/{name}/resume", post(schedules::resume))
        .route("/schedules/{name}/backfill", post(schedules::backfill))
        .route("/nodes", get(nodes::list))
        .route("/logout", post(session::logout))
        .route_layer(middleware::from_fn_with_state(state, session::guard));
    Router::new()
        .route("/login", get(session::login_page).post(session::login))
        .route("/assets/{file}", get(assets::serve))
        .merge(guarded)
}
