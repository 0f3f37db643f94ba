//! The API's routes. Each is one [`Operation`]: method, path, handler and what the OpenAPI
//! document says about it. The router and the document are both built from [`operations`], so
//! a route cannot be served without being documented.

use super::AppState;
use super::error::{ApiError, Json, Path, Query};
use super::openapi::{Doc, schema};
use super::types::*;
use super::views;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{MethodRouter, get, post};
use cairn_engine::Store;
use cairn_engine::catalog::{Digest, EvictScope};
use cairn_engine::names;
use cairn_engine::runs::RunFilter;
use cairn_scheduler::{RunOptions, SubmitRun};
use std::time::Duration;

/// One route and its documentation.
pub struct Operation {
    /// HTTP method.
    pub method: Method,
    /// Path, with `{param}` segments.
    pub path: &'static str,
    /// `operationId`.
    pub id: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Served without a token.
    pub public: bool,
    /// Its documentation: parameters, body, answers.
    pub doc: Doc,
    /// The handler.
    pub handler: MethodRouter<AppState>,
}

fn op(
    method: Method,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    doc: Doc,
    handler: MethodRouter<AppState>,
) -> Operation {
    Operation {
        method,
        path,
        id,
        summary,
        public: false,
        doc,
        handler,
    }
}

/// Every route of the API.
pub fn operations() -> Vec<Operation> {
    vec![
        Operation {
            public: true,
            ..op(
                Method::GET,
                "/v1/health",
                "health",
                "The process answers (liveness; no token needed). Says nothing about the store: see /v1/ready.",
                Doc::new().ok(schema::<Health>),
                get(health),
            )
        },
        Operation {
            public: true,
            ..op(
                Method::GET,
                "/v1/ready",
                "ready",
                "The node can serve: its store answers within 2 s (no token needed). 503 otherwise.",
                Doc::new().ok(schema::<Health>).errors(&[503]),
                get(ready),
            )
        },
        Operation {
            public: true,
            ..op(
                Method::GET,
                "/openapi.json",
                "openapi",
                "This document (no token needed).",
                Doc::new().ok(any_object),
                get(openapi),
            )
        },
        op(
            Method::GET,
            "/v1/workflows",
            "listWorkflows",
            "Workflows this node can start runs of, with their input and output schemas.",
            Doc::new().ok(schema::<Vec<WorkflowInfo>>),
            get(workflows),
        ),
        op(
            Method::POST,
            "/v1/runs",
            "submitRun",
            "Starts a run of a registered workflow (the input is checked first; nothing is written when it does not match). With an `Idempotency-Key` header, a repeated request returns the run the first one created (200) instead of starting another; the same key with a different request is refused (409).",
            Doc::new()
                .header(
                    "Idempotency-Key",
                    "A client-chosen key (1 to 255 printable ASCII characters) that makes retries safe; remembered for 24 hours.",
                )
                .body(schema::<SubmitRunRequest>)
                .ok(schema::<RunSummary>)
                .created(schema::<RunSummary>)
                .errors(&[404, 409, 413, 415, 422]),
            post(submit_run),
        ),
        op(
            Method::POST,
            "/v1/runs/{run_id}/cancel",
            "cancelRun",
            "Cancels a run wherever it runs: it ends as `cancelled` at once, makes no new call, and its in-flight task bodies are aborted with their leases released. Cancelling a cancelled run answers it again; a run that ended otherwise is a conflict (409).",
            Doc::new()
                .path("run_id", "The run id.")
                .ok(schema::<RunSummary>)
                .errors(&[404, 409]),
            post(cancel_run),
        ),
        op(
            Method::GET,
            "/v1/runs",
            "listRuns",
            "Runs, newest first, with filters and paging.",
            Doc::new()
                .query(schema::<RunsQuery>)
                .ok(schema::<RunPage>)
                .errors(&[422]),
            get(list_runs),
        ),
        op(
            Method::GET,
            "/v1/runs/{run_id}",
            "getRun",
            "A run with its task calls, statuses and timings; `wait_ms` waits for it to end.",
            Doc::new()
                .path("run_id", "The run id.")
                .query(schema::<RunQuery>)
                .ok(schema::<RunDetail>)
                .errors(&[404]),
            get(get_run),
        ),
        op(
            Method::GET,
            "/v1/schedules",
            "listSchedules",
            "Every schedule with its state and counters.",
            Doc::new().ok(schema::<Vec<ScheduleInfo>>),
            get(list_schedules),
        ),
        op(
            Method::POST,
            "/v1/schedules/{name}/pause",
            "pauseSchedule",
            "Pauses a schedule: its ticks pass as missed.",
            Doc::new()
                .path("name", "The schedule.")
                .ok(schema::<ScheduleInfo>)
                .errors(&[404]),
            post(pause_schedule),
        ),
        op(
            Method::POST,
            "/v1/schedules/{name}/resume",
            "resumeSchedule",
            "Resumes a schedule from now on.",
            Doc::new()
                .path("name", "The schedule.")
                .ok(schema::<ScheduleInfo>)
                .errors(&[404]),
            post(resume_schedule),
        ),
        op(
            Method::POST,
            "/v1/schedules/{name}/backfill",
            "backfillSchedule",
            "Queues the unfired ticks of a time range; the next node polling the schedule runs them.",
            Doc::new()
                .path("name", "The schedule.")
                .body(schema::<BackfillRequest>)
                .ok(schema::<BackfillResult>)
                .errors(&[404, 422]),
            post(backfill_schedule),
        ),
        op(
            Method::GET,
            "/v1/cache/entries",
            "listEntries",
            "Cache entries of a project and domain, optionally of one task and version.",
            Doc::new()
                .query(schema::<EntriesQuery>)
                .ok(schema::<EntryPage>)
                .errors(&[422]),
            get(list_entries),
        ),
        op(
            Method::GET,
            "/v1/cache/entries/{key}",
            "getEntry",
            "One cache entry, with its output as JSON when this node knows the task.",
            Doc::new()
                .path("key", "The cache key (32 hex digits).")
                .ok(schema::<EntryDetail>)
                .errors(&[404, 422]),
            get(get_entry),
        ),
        op(
            Method::POST,
            "/v1/cache/evict",
            "evict",
            "Evicts entries by key, task (and version), project and domain, or producing execution.",
            Doc::new()
                .body(schema::<EvictRequest>)
                .ok(schema::<EvictResult>)
                .errors(&[422]),
            post(evict),
        ),
        op(
            Method::POST,
            "/v1/cache/verify",
            "verifyCache",
            "Reads back every entry of a project and domain (or of one task), checks its metadata and its output's size and checksum, and reports (with `repair`: removes) the corrupt ones.",
            Doc::new()
                .body(schema::<VerifyRequest>)
                .ok(schema::<VerifyResult>)
                .errors(&[400, 415, 422]),
            post(verify),
        ),
        op(
            Method::POST,
            "/v1/cache/explain",
            "explain",
            "Whether a task call hits, and if not which key component differs from the nearest stored entries.",
            Doc::new()
                .body(schema::<ExplainRequest>)
                .ok(schema::<Explanation>)
                .errors(&[404, 422]),
            post(explain),
        ),
        op(
            Method::GET,
            "/v1/nodes",
            "listNodes",
            "Cluster members and their load.",
            Doc::new().ok(schema::<Vec<NodeInfo>>),
            get(nodes),
        ),
    ]
}

fn any_object(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object"})
}

type ApiResult<T> = Result<axum::Json<T>, ApiError>;

async fn health(State(app): State<AppState>) -> ApiResult<Health> {
    Ok(axum::Json(Health {
        node: app.node.name().to_string(),
        store: app.node.catalog().store().backend().to_string(),
    }))
}

/// How long `/v1/ready` waits for the store.
const READY_DEADLINE: Duration = Duration::from_secs(2);

async fn ready(State(app): State<AppState>) -> ApiResult<Health> {
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

async fn openapi(State(app): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(app.openapi.as_ref().clone())
}

async fn workflows(State(app): State<AppState>) -> ApiResult<Vec<WorkflowInfo>> {
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

async fn submit_run(
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

async fn cancel_run(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
) -> ApiResult<RunSummary> {
    use cairn_engine::runs::{Ended, RunStatus};
    names::check("run_id", &run_id)?;
    let ended = app.node.cancel(&run_id).await.map_err(|e| match e {
        cairn_engine::Error::InvalidInput { ref reason, .. } if reason == "no such run" => {
            ApiError::not_found(format!("no run {run_id:?}"))
        }
        e => e.into(),
    })?;
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

async fn list_runs(State(app): State<AppState>, Query(q): Query<RunsQuery>) -> ApiResult<RunPage> {
    for (field, value) in [
        ("workflow", &q.workflow),
        ("project", &q.project),
        ("domain", &q.domain),
        ("schedule", &q.schedule),
    ] {
        if let Some(v) = value {
            names::check(field, v)?;
        }
    }
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
        .list(&filter, q.limit.unwrap_or(50), q.cursor.as_deref())
        .await?;
    Ok(axum::Json(RunPage {
        runs: page.runs.iter().map(views::run_summary).collect(),
        next: page.next,
    }))
}

async fn get_run(
    State(app): State<AppState>,
    Path(run_id): Path<String>,
    Query(q): Query<RunQuery>,
) -> ApiResult<RunDetail> {
    names::check("run_id", &run_id)?;
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0).min(60_000));
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

async fn list_schedules(State(app): State<AppState>) -> ApiResult<Vec<ScheduleInfo>> {
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

async fn pause_schedule(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ScheduleInfo> {
    schedule_info(&app, &name).await?;
    app.node.schedules().pause(&name).await?;
    schedule_info(&app, &name).await.map(axum::Json)
}

async fn resume_schedule(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<ScheduleInfo> {
    schedule_info(&app, &name).await?;
    app.node.schedules().resume(&name).await?;
    schedule_info(&app, &name).await.map(axum::Json)
}

async fn backfill_schedule(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Json(req): Json<BackfillRequest>,
) -> ApiResult<BackfillResult> {
    schedule_info(&app, &name).await?;
    let queued = app
        .node
        .schedules()
        .backfill(&name, req.from_ms, req.to_ms)
        .await?;
    Ok(axum::Json(BackfillResult {
        queued: queued as u64,
    }))
}

async fn list_entries(
    State(app): State<AppState>,
    Query(q): Query<EntriesQuery>,
) -> ApiResult<EntryPage> {
    if q.version.is_some() && q.task.is_none() {
        return Err(ApiError::invalid("`version` needs `task`"));
    }
    let project = q.project.as_deref().unwrap_or("default");
    let domain = q.domain.as_deref().unwrap_or("development");
    let page = app
        .node
        .catalog()
        .list_entries(
            project,
            domain,
            q.task.as_deref(),
            q.version.as_deref(),
            q.limit.unwrap_or(50).clamp(1, 1_000),
            q.cursor.as_deref(),
        )
        .await?;
    Ok(axum::Json(EntryPage {
        entries: page.entries.iter().map(views::entry).collect(),
        corrupt: page
            .corrupt
            .iter()
            .map(|(key, detail)| CorruptEntry {
                key: key.to_string(),
                detail: detail.clone(),
            })
            .collect(),
        next: page.next,
    }))
}

fn parse_key(key: &str) -> Result<Digest, ApiError> {
    Digest::from_hex(key)
        .ok_or_else(|| ApiError::invalid(format!("cache key {key:?} is not 32 hexadecimal digits")))
}

async fn get_entry(State(app): State<AppState>, Path(key): Path<String>) -> ApiResult<EntryDetail> {
    let digest = parse_key(&key)?;
    let hit = app
        .node
        .catalog()
        .entry(&digest)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no cache entry {key}")))?;
    // The output decodes only with the task's types; a node without the task shows its size.
    let output = app
        .node
        .registry()
        .get(&hit.meta.key.task)
        .and_then(|t| t.output_to_json(&hit.output).ok());
    Ok(axum::Json(EntryDetail {
        entry: views::entry(&hit.meta),
        output,
    }))
}

async fn evict(
    State(app): State<AppState>,
    Json(req): Json<EvictRequest>,
) -> ApiResult<EvictResult> {
    let scope = match req {
        EvictRequest::Key { key } => EvictScope::Key(parse_key(&key)?),
        EvictRequest::Task {
            project,
            domain,
            task,
            version,
        } => EvictScope::Task {
            project,
            domain,
            task,
            version,
        },
        EvictRequest::ProjectDomain { project, domain } => {
            EvictScope::ProjectDomain { project, domain }
        }
        EvictRequest::Execution { execution } => EvictScope::Execution(execution),
    };
    let evicted = app.node.catalog().evict(&scope).await?;
    Ok(axum::Json(EvictResult { evicted }))
}

async fn verify(
    State(app): State<AppState>,
    Json(req): Json<VerifyRequest>,
) -> ApiResult<VerifyResult> {
    let report = app
        .node
        .catalog()
        .verify(&req.project, &req.domain, req.task.as_deref(), req.repair)
        .await?;
    Ok(axum::Json(VerifyResult {
        checked: report.checked,
        corrupt: report
            .corrupt
            .iter()
            .map(|(key, detail)| CorruptEntry {
                key: key.to_string(),
                detail: detail.clone(),
            })
            .collect(),
        repaired: report.repaired,
    }))
}

async fn explain(
    State(app): State<AppState>,
    Json(req): Json<ExplainRequest>,
) -> ApiResult<Explanation> {
    names::check_all(&[
        ("task", &req.task),
        ("project", &req.project),
        ("domain", &req.domain),
    ])?;
    let task = app.node.registry().get(&req.task).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_task",
            format!("unknown task {:?} (not registered on this node)", req.task),
        )
    })?;
    let key = task.key_for_json(&req.project, &req.domain, &req.input)?;
    let explanation = app.node.catalog().explain(&key).await?;
    Ok(axum::Json(views::explanation(&key, &explanation)))
}

async fn nodes(State(app): State<AppState>) -> ApiResult<Vec<NodeInfo>> {
    Ok(axum::Json(app.members.nodes(&app.node).await))
}
