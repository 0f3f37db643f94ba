//! Nodes: the cluster's members, their roles, capacity and load.

use super::layout::{self, Section};
use super::session::{Session, error_page};
use crate::api::AppState;
use crate::api::handlers::node::nodes;
use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use cairn_engine::Store;
use maud::html;

pub(super) async fn list(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
) -> Response {
    let members = match nodes(State(app.clone())).await {
        Ok(n) => n.0,
        Err(e) => return error_page(e),
    };
    let body = html! {
        h1 { "Nodes" }
        p.muted { "This page is served by " code { (app.node.name()) } " (store: " (app.node.catalog().store().backend()) ")." }
        table #nodes aria-label="Nodes" {
            thead { tr { th { "Node" } th { "Live" } th { "Roles" } th { "Concurrency" } th { "Busy" } th { "Queued" } th { "Jobs executed" } } }
            tbody {
                @for n in &members {
                    tr data-node=(n.name) {
                        td { code { (n.name) } @if n.local { " " span.muted { "(this node)" } } }
                        td { @if n.joined { span.badge.r-succeeded { "live" } } @else { span.badge.r-failed { "unreachable" } " " (n.problem.as_deref().unwrap_or("")) } }
                        td { (n.roles.join(", ")) }
                        td { (n.concurrency) }
                        td { (n.busy) }
                        td { (n.queued) }
                        td { (n.executed) }
                    }
                }
            }
        }
        @if members.len() == 1 {
            p.muted { "A node on its own. Others join with " code { "cairn up --cluster-listen <ip:port> --seeds <this node's cluster address>" } "." }
        }
    };
    layout::page("Nodes", Section::Nodes, &session, body).into_response()
}
