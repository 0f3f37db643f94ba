//! Schedules: list, pause, resume and backfill.

use super::ApiResult;
use crate::api::AppState;
use crate::api::error::{ApiError, Json, Path};
use crate::api::types::*;
use crate::api::views;
use axum::extract::State;
use cairn_engine::names;

pub(in crate::api) async fn list_schedules(
    State(app): State<AppState>,
) -> ApiResult<Vec<ScheduleInfo>> {
    let list = app.node.schedules().list().await?;
    Ok(axum::Json(list.iter().map(views::schedule).collect()))
}

async fn schedule_info(app: &AppState, name: &str) -> Result<ScheduleInfo, ApiError> {
    names::check("schedule name", name)?;
    let record = app
        .node
        .schedules()
        .get(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule {name:?}")))?;
    Ok(views::schedule(&record))
}

pub(in crate::api) async fn pause_schedule(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ScheduleInfo> {
    schedule_info(&app, &name).await?;
    app.node.schedules().pause(&name).await?;
    schedule_info(&app, &name).await.map(axum::Json)
}

pub(in crate::api) async fn resume_schedule(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ScheduleInfo> {
    schedule_info(&app, &name).await?;
    app.node.schedules().resume(&name).await?;
    schedule_info(&app, &name).await.map(axum::Json)
}

pub(in crate::api) async fn backfill_schedule(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Json(req): Json<BackfillRequest>,
) -> ApiResult<BackfillResult> {
    schedule_info(&app, &name).await?;
    if req.from_ms < 0 || req.to_ms < 0 {
        return Err(ApiError::invalid(
            "from_ms and to_ms are Unix milliseconds, not before 1970",
        ));
    }
    let queued = app
        .node
        .schedules()
        .backfill(&name, req.from_ms, req.to_ms)
        .await?;
    Ok(axum::Json(BackfillResult {
        queued: queued as u64,
    }))
}
