//! The node itself: health, readiness, its OpenAPI document, its workflows and the cluster's
//! members.

use super::ApiResult;
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::types::*;
use axum::extract::State;
use axum::http::StatusCode;
use cairn_engine::Store;
use std::time::Duration;

pub(in crate::api) async fn health(State(app): State<AppState>) -> ApiResult<Health> {
    Ok(axum::Json(Health {
        node: app.node.name().to_string(),
        store: app.node.catalog().store().backend().to_string(),
    }))
}

/// How long `/v1/ready` waits for the store.
const READY_DEADLINE: Duration = Duration::from_secs(2);

pub(in crate::api) async fn ready(State(app): State<AppState>) -> ApiResult<Health> {
    let store = app.node.catalog().store();
    let probe = async {
        let tx = store.begin_read().await?;
        cairn_engine::Transaction::get(&tx, &cairn_engine::keys::node(app.node.name()), true).await
    };
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the {} store does not answer: {why}", store.backend()),
        )
    };
    match tokio::time::timeout(READY_DEADLINE, probe).await {
        Ok(Ok(_)) => health(State(app)).await,
        Ok(Err(e)) => Err(unavailable(e.to_string())),
        Err(_) => Err(unavailable(format!(
            "no answer within {} ms",
            READY_DEADLINE.as_millis()
        ))),
    }
}

pub(in crate::api) async fn openapi(State(app): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(app.openapi.as_ref().clone())
}

pub(in crate::api) async fn workflows(State(app): State<AppState>) -> ApiResult<Vec<WorkflowInfo>> {
    Ok(axum::Json(
        app.node
            .workflows()
            .iter()
            .map(|w| WorkflowInfo {
                name: w.name().to_string(),
                input_schema: w.input_schema().clone(),
                output_schema: w.output_schema().clone(),
            })
            .collect(),
    ))
}

/// The `Idempotency-Key` header, if given and well formed.
pub(in crate::api) async fn nodes(State(app): State<AppState>) -> ApiResult<Vec<NodeInfo>> {
    Ok(axum::Json(app.members.nodes(&app.node).await))
}
