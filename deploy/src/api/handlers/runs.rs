//! Runs: submit (idempotently), cancel, list and read.

use super::{ApiResult, MAX_WAIT_MS, page_size};
use crate::api::AppState;
use crate::api::error::{ApiError, Json, Path, Query};
use crate::api::types::*;
use crate::api::views;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use cairn_engine::Store;
use cairn_engine::names;
use cairn_engine::runs::RunFilter;
use cairn_scheduler::{RunOptions, SubmitRun};
use std::time::Duration;

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| {
            ApiError::invalid("header Idempotency-Key must be 1 to 255 printable ASCII characters")
        })?;
    Ok(Some(key.to_string()))
}

pub(in crate::api) async fn submit_run(
    State(app): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<SubmitRunRequest>,
) -> Result<(StatusCode, axum::Json<RunSummary>), ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let options = RunOptions::new(req.project, req.domain).overwrite_cache(req.overwrite_cache);
    let started = app
        .node
        .submit(SubmitRun {
            workflow: req.workflow,
            input: req.input,
            options,
            schedule: None,
            idempotency_key,
        })
        .await?;
    let status = if started.existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, axum::Json(views::run_summary(&started.record))))
}

pub(in crate::api) async fn cancel_run(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
) -> ApiResult<RunSummary> {
    use cairn_engine::runs::{Ended, RunStatus};
    names::check("run_id", &run_id)?;
    let ended = app.node.cancel(&run_id).await?;
    match ended {
        Ended::Ended { record, .. } => Ok(axum::Json(views::run_summary(&record))),
        Ended::AlreadyEnded(record) | Ended::Fenced(record)
            if record.status == RunStatus::Cancelled =>
        {
            Ok(axum::Json(views::run_summary(&record)))
        }
        Ended::AlreadyEnded(record) | Ended::Fenced(record) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_ended",
            format!("run {run_id:?} already ended as {:?}", record.status),
        )),
    }
}

pub(in crate::api) async fn list_runs(
    State(app): State<AppState>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<RunPage> {
    // Names were checked as the query was read (`types.rs`).
    let filter = RunFilter {
        workflow: q.workflow,
        project: q.project,
        domain: q.domain,
        status: q.status,
        schedule: q.schedule,
    };
    let page = app
        .node
        .runs()
        .list(&filter, page_size(q.limit)?, q.cursor.as_deref())
        .await?;
    Ok(axum::Json(RunPage {
        runs: page.runs.iter().map(views::run_summary).collect(),
        next: page.next,
    }))
}

pub(in crate::api) async fn get_run(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    Query(q): Query<RunQuery>,
) -> ApiResult<RunDetail> {
    names::check("run_id", &run_id)?;
    let wait_ms = q.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::invalid(format!(
            "wait_ms is {wait_ms}; a request waits at most {MAX_WAIT_MS} ms"
        )));
    }
    let wait = Duration::from_millis(wait_ms);
    let deadline = tokio::time::Instant::now() + wait;
    let store = app.node.catalog().store();
    let key = cairn_engine::keys::run(&run_id);
    let record = loop {
        // While waiting, subscribe before reading, so an end committed in between still wakes
        // us; a plain read (no `wait_ms`, or the wait is over) needs no subscription.
        let mut changed = if tokio::time::Instant::now() < deadline {
            Some(store.subscribe(&key).await?)
        } else {
            None
        };
        let record = app
            .node
            .runs()
            .get(&run_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no run {run_id:?}")))?;
        let Some(changed) = changed
            .as_mut()
            .filter(|_| record.status == cairn_engine::runs::RunStatus::Running)
        else {
            break record;
        };
        tokio::select! {
            r = changed.changed() => r?,
            _ = tokio::time::sleep_until(deadline) => {}
        }
    };
    let calls = app.node.catalog().run_executions(&run_id).await?;
    let mut detail = views::run_detail(&record, &calls);
    if q.calls == Some(false) {
        detail.calls.clear();
    }
    Ok(axum::Json(detail))
}

pub(in crate::api) async fn get_execution(
    State(app): State<AppState>,
    Path(execution): Path<String>,
) -> ApiResult<ExecutionInfo> {
    names::check("execution", &execution)?;
    let run = app
        .node
        .catalog()
        .execution_run(&execution)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no execution {execution:?} that ran a cached task's body is recorded"
            ))
        })?;
    if run.is_empty() {
        return Ok(axum::Json(ExecutionInfo {
            execution,
            run_id: None,
            call: None,
        }));
    }
    let call = app
        .node
        .catalog()
        .run_executions(&run)
        .await?
        .iter()
        .find(|c| c.execution == execution)
        .map(views::call);
    Ok(axum::Json(ExecutionInfo {
        execution,
        run_id: Some(run),
        call,
    }))
}
