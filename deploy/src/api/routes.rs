//! The API's routes. Each is one [`Operation`]: method, path, handler and what the OpenAPI
//! document says about it (the type lives with the document, which reads it). The router and the document are both built from [`operations`], so
//! a route cannot be served without being documented.

use super::handlers::cache::{evict, explain, get_blob, get_entry, list_entries, stats, verify};
use super::handlers::node::{health, nodes, openapi, ready, workflows};
use super::handlers::runs::{cancel_run, get_execution, get_run, list_runs, submit_run};
use super::handlers::schedules::{
    backfill_schedule, list_schedules, pause_schedule, resume_schedule,
};
pub use super::openapi::Operation;
use super::openapi::{Doc, op, schema};
use super::types::*;
use axum::http::Method;
use axum::routing::{get, post};

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
                .errors(&[404, 409])
                .rules("404 `unknown_workflow` when the workflow is not registered on this node; 422 `invalid_input` when `input` does not match the workflow's input schema (`GET /v1/workflows`); 413 `body_too_large` past the run input limit.")
                .link("getRun", "getRun", serde_json::json!({"run_id": "$response.body#/run_id"}))
                .link("cancelRun", "cancelRun", serde_json::json!({"run_id": "$response.body#/run_id"})),
            post(submit_run),
        ),
        op(
            Method::POST,
            "/v1/runs/{run_id}/cancel",
            "cancelRun",
            "Cancels a run wherever it runs: it ends as `cancelled` at once, makes no new call, and its in-flight task bodies are aborted with their leases released. Cancelling a cancelled run answers it again; a run that ended otherwise is a conflict (409).",
            Doc::new()
                .path("run_id", "The run id.", name_schema)
                .ok(schema::<RunSummary>)
                .errors(&[409]),
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
                .rules("422 `invalid_input` when `cursor` is not a `next` this API gave."),
            get(list_runs),
        ),
        op(
            Method::GET,
            "/v1/runs/{run_id}",
            "getRun",
            "A run with its task calls, statuses and timings; `wait_ms` waits for it to end.",
            Doc::new()
                .path("run_id", "The run id.", name_schema)
                .query(schema::<RunQuery>)
                .ok(schema::<RunDetail>),
            get(get_run),
        ),
        op(
            Method::GET,
            "/v1/executions/{execution}",
            "getExecution",
            "The run of an execution that ran a cached (or journaled) task's body: where a call that waited (`waited_for`) got its value. Uncached executions are not indexed (404).",
            Doc::new()
                .path("execution", "The execution id.", name_schema)
                .ok(schema::<ExecutionInfo>),
            get(get_execution),
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
                .path("name", "The schedule.", name_schema)
                .ok(schema::<ScheduleInfo>)
                .link("resumeSchedule", "resumeSchedule", serde_json::json!({"name": "$request.path.name"})),
            post(pause_schedule),
        ),
        op(
            Method::POST,
            "/v1/schedules/{name}/resume",
            "resumeSchedule",
            "Resumes a schedule from now on.",
            Doc::new()
                .path("name", "The schedule.", name_schema)
                .ok(schema::<ScheduleInfo>)
                .link("pauseSchedule", "pauseSchedule", serde_json::json!({"name": "$request.path.name"})),
            post(resume_schedule),
        ),
        op(
            Method::POST,
            "/v1/schedules/{name}/backfill",
            "backfillSchedule",
            "Queues the unfired ticks of a time range; the next node polling the schedule runs them.",
            Doc::new()
                .path("name", "The schedule.", name_schema)
                .body(schema::<BackfillRequest>)
                .ok(schema::<BackfillResult>)
                .rules("422 `invalid_input` unless `from_ms` ≤ `to_ms` ≤ now and the range holds at most 10,000 of the schedule's ticks: a backfill covers past ticks only."),
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
                .rules("422 `invalid_input` when `version` comes without `task`, or `cursor` is not a `next` this API gave."),
            get(list_entries),
        ),
        op(
            Method::GET,
            "/v1/cache/entries/{key}",
            "getEntry",
            "One cache entry, with its output as JSON when this node knows the task.",
            Doc::new()
                .path("key", "The cache key (32 hex digits).", key_schema)
                .ok(schema::<EntryDetail>),
            get(get_entry),
        ),
        op(
            Method::GET,
            "/v1/blobs/{digest}",
            "getBlob",
            "The bytes of a content-addressed blob: a command task's output file, stdout or stderr, by the digest its output names. Streamed, and checked against the digest as it is read: a blob damaged in the store ends the transfer early rather than answering other bytes.",
            Doc::new()
                .path("digest", "The blob's BLAKE3 digest (64 hex digits).", blob_digest_schema)
                .ok_bytes()
                .rules("404 `not_found` when no blob has this digest (never stored, or deleted with the last entry that referred to it)."),
            get(get_blob),
        ),
        op(
            Method::GET,
            "/v1/cache/stats",
            "taskStats",
            "What the cache did for one task: entries and bytes stored, calls by cache status, executions avoided and the hit ratio.",
            Doc::new()
                .query(schema::<StatsQuery>)
                .ok(schema::<TaskStatsInfo>),
            get(stats),
        ),
        op(
            Method::POST,
            "/v1/cache/evict",
            "evict",
            "Evicts entries by key, task (and version), project and domain, or producing execution.",
            Doc::new()
                .body(schema::<EvictRequest>)
                .ok(schema::<EvictResult>),
            post(evict),
        ),
        op(
            Method::POST,
            "/v1/cache/verify",
            "verifyCache",
            "Reads back every entry of a project and domain (or of one task), checks its metadata and its output's size and checksum, and reports (with `repair`: removes) the corrupt ones.",
            Doc::new()
                .body(schema::<VerifyRequest>)
                .ok(schema::<VerifyResult>),
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
                .errors(&[404])
                .rules("404 `unknown_task` when the task is not registered on this node; 422 `invalid_input` when `input` does not match the task's inputs."),
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
