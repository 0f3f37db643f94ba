//! Runs: the list (filtered, paged, live) and one run with its calls and timeline.

use super::layout::{self, Section};
use super::session::{self, CsrfForm, Session, error_page, urlencode};
use super::timeline;
use crate::api::AppState;
use crate::api::error::{ApiError, Path, Query};
use crate::api::handlers::runs::{cancel_run, get_execution, get_run, list_runs};
use crate::api::types::{CallInfo, RunDetail, RunPage, RunQuery, RunsQuery};
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cairn_engine::names;
use cairn_engine::runs::RunStatus;
use maud::{Markup, html};

/// Calls listed per page of a run's call table.
pub(super) const CALLS_PER_PAGE: usize = 500;

/// The runs filter as a form sends it (empty fields are "any").
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct RunsForm {
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    schedule: String,
    cursor: Option<String>,
}

impl RunsForm {
    fn query(&self) -> Result<RunsQuery, ApiError> {
        let name = |what: &str, v: &str| -> Result<Option<String>, ApiError> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            names::check(what, v)?;
            Ok(Some(v.to_string()))
        };
        let status = match self.status.as_str() {
            "" => None,
            s => Some(
                serde_json::from_value::<RunStatus>(serde_json::Value::String(s.into()))
                    .map_err(|_| ApiError::invalid(format!("no run status {s:?}")))?,
            ),
        };
        Ok(RunsQuery {
            workflow: name("workflow", &self.workflow)?,
            project: name("project", &self.project)?,
            domain: name("domain", &self.domain)?,
            status,
            schedule: name("schedule", &self.schedule)?,
            limit: Some(50),
            cursor: self.cursor.clone().filter(|c| !c.is_empty()),
        })
    }

    /// The filter as a query string (without the cursor).
    fn query_string(&self) -> String {
        [
            ("workflow", &self.workflow),
            ("status", &self.status),
            ("project", &self.project),
            ("domain", &self.domain),
            ("schedule", &self.schedule),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

async fn page_of(app: &AppState, form: &RunsForm) -> Result<RunPage, ApiError> {
    let query = form.query()?;
    list_runs(State(app.clone()), Query(query))
        .await
        .map(|j| j.0)
}

/// The rows of a page of runs; `empty` is what an empty first page says.
fn rows_of(page: &RunPage, live: Option<&str>, empty: Option<&str>) -> Markup {
    html! {
        tbody #runs-rows hx-get=[live] hx-trigger=[live.map(|_| "every 2s")] hx-swap=[live.map(|_| "outerHTML")] {
            @if let (true, Some(workflow)) = (page.runs.is_empty(), empty) {
                tr #empty { td colspan="9" { div.empty {
                    p { "No runs yet. Start one from a shell:" }
                    pre { code { "cairn run " (workflow) @if workflow == "sum_of_squares" { " --input 10" } @else { " --input '…'" } } }
                    p.muted { "It appears here as soon as it starts." }
                } } }
            }
            @for r in &page.runs {
                tr data-run=(r.run_id) {
                    td { a href=(format!("/runs/{}", urlencode(&r.run_id))) { code { (r.run_id) } } }
                    td { (r.workflow) }
                    td { (layout::run_status(r.status)) }
                    td { (r.project) " / " (r.domain) }
                    td { (r.schedule.as_deref().unwrap_or("")) }
                    td { (layout::time(r.started_at_ms)) }
                    td { @if let Some(f) = r.finished_at_ms { (layout::duration_ms((f - r.started_at_ms) as f64)) } }
                    td { (r.attempts) }
                    td { (r.node) }
                }
            }
        }
    }
}

/// The workflow the empty state suggests running.
fn empty_hint(app: &AppState) -> String {
    let names: Vec<&str> = app.node.workflows().iter().map(|w| w.name()).collect();
    ["sum_of_squares"]
        .into_iter()
        .find(|w| names.contains(w))
        .or(names.first().copied())
        .unwrap_or("<workflow>")
        .to_string()
}

fn rows_url(form: &RunsForm) -> String {
    let q = form.query_string();
    if q.is_empty() {
        "/runs/rows".into()
    } else {
        format!("/runs/rows?{q}")
    }
}

pub(super) async fn list(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Query(form): axum::extract::Query<RunsForm>,
) -> Response {
    let page = match page_of(&app, &form).await {
        Ok(p) => p,
        Err(e) => return error_page(e),
    };
    let workflows: Vec<String> = app
        .node
        .workflows()
        .iter()
        .map(|w| w.name().to_string())
        .collect();
    let first_page = form.cursor.as_deref().unwrap_or("").is_empty();
    let live = first_page.then(|| rows_url(&form));
    let filtered = !form.query_string().is_empty();
    let empty = (first_page && !filtered).then(|| empty_hint(&app));
    let statuses = ["running", "succeeded", "failed", "cancelled"];
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/runs" role="search" aria-label="Filter runs" {
            label for="f-workflow" { "Workflow"
                select #f-workflow name="workflow" {
                    option value="" { "any" }
                    @for w in &workflows { option value=(w) selected[*w == form.workflow] { (w) } }
                }
            }
            label for="f-status" { "Status"
                select #f-status name="status" {
                    option value="" { "any" }
                    @for s in statuses { option value=(s) selected[s == form.status] { (s) } }
                }
            }
            label for="f-project" { "Project" input #f-project name="project" value=(form.project) placeholder="any"; }
            label for="f-domain" { "Domain" input #f-domain name="domain" value=(form.domain) placeholder="any"; }
            label for="f-schedule" { "Schedule" input #f-schedule name="schedule" value=(form.schedule) placeholder="any"; }
            button type="submit" { "Filter" }
        }
        table aria-label="Runs" {
            thead { tr { th { "Run" } th { "Workflow" } th { "Status" } th { "Project / domain" } th { "Schedule" } th { "Started" } th { "Took" } th { "Attempts" } th { "Node" } } }
            (rows_of(&page, live.as_deref(), empty.as_deref()))
        }
        div.pager {
            @if !first_page { a href={ "/runs?" (form.query_string()) } { "First page" } }
            @if let Some(next) = &page.next {
                a href={ "/runs?" (form.query_string()) "&cursor=" (urlencode(next)) } { "Next page" }
            }
        }
    };
    layout::page("Runs", Section::Runs, &session, body).into_response()
}

/// The rows of the first page (htmx polls them).
pub(super) async fn rows(
    State(app): State<AppState>,
    axum::extract::Query(form): axum::extract::Query<RunsForm>,
) -> Response {
    match page_of(&app, &form).await {
        Ok(page) => {
            let empty = form.query_string().is_empty().then(|| empty_hint(&app));
            rows_of(&page, Some(&rows_url(&form)), empty.as_deref()).into_response()
        }
        Err(e) => error_page(e),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ShowQuery {
    /// Page of the call table (from 0).
    page: Option<usize>,
    /// An execution to show (its page of the call table is chosen).
    focus: Option<String>,
}

pub(super) async fn show(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Path(run_id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<ShowQuery>,
) -> Response {
    let detail = match get_run(
        State(app.clone()),
        Path(run_id.clone()),
        Query(RunQuery::default()),
    )
    .await
    {
        Ok(d) => d.0,
        Err(e) => return error_page(e),
    };
    let pages = detail.calls.len().div_ceil(CALLS_PER_PAGE).max(1);
    let page = match (&q.focus, q.page) {
        (Some(f), _) => detail
            .calls
            .iter()
            .position(|c| &c.execution == f)
            .map_or(0, |i| i / CALLS_PER_PAGE),
        (None, Some(p)) => p.min(pages - 1),
        (None, None) => 0,
    };
    let body = run_body(&app, &session, &detail, page, pages);
    layout::page(&format!("Run {run_id}"), Section::Runs, &session, body).into_response()
}

fn run_body(app: &AppState, session: &Session, d: &RunDetail, page: usize, pages: usize) -> Markup {
    let r = &d.run;
    let running = r.status == RunStatus::Running;
    let self_url = format!("/runs/{}?page={page}", urlencode(&r.run_id));
    let trace = d.trace_id.as_ref().and_then(|id| {
        app.dashboard
            .trace_url
            .as_ref()
            .map(|t| t.replace("{trace_id}", id))
    });
    let calls = &d.calls;
    let shown = &calls
        [(page * CALLS_PER_PAGE).min(calls.len())..((page + 1) * CALLS_PER_PAGE).min(calls.len())];
    html! {
        div #run hx-get=[running.then_some(self_url.as_str())] hx-trigger=[running.then_some("every 2s")]
            hx-select=[running.then_some("#run")] hx-swap=[running.then_some("outerHTML")] {
            h1 { "Run " (layout::copyable("run id", &r.run_id)) " " (layout::run_status(r.status)) }
            dl.facts {
                dt { "Workflow" } dd { (r.workflow) }
                dt { "Project / domain" } dd { (r.project) " / " (r.domain) }
                dt { "Started" } dd { (layout::time(r.started_at_ms)) }
                @if let Some(f) = r.finished_at_ms {
                    dt { "Ended" } dd { (layout::time(f)) " (" (layout::duration_ms((f - r.started_at_ms) as f64)) ")" }
                }
                dt { "Node" } dd { (r.node) }
                @if let Some(s) = &r.schedule { dt { "Schedule" } dd { (s) } }
                @if let Some(k) = &d.idempotency_key { dt { "Idempotency key" } dd { (layout::copyable("idempotency key", k)) } }
                @if d.overwrite_cache { dt { "Cache" } dd { "overwritten (every cacheable call re-ran)" } }
                @if let Some(t) = &trace { dt { "Trace" } dd { a href=(t) rel="noopener" { "Open the run's trace" } } }
            }
            @if running {
                form.inline method="post" action=(format!("/runs/{}/cancel", urlencode(&r.run_id)))
                    data-confirm=(format!("Cancel run {}?", r.run_id)) {
                    (layout::csrf(session))
                    button.danger type="submit" { "Cancel run" }
                }
            }
            h2 { "Input" }
            pre { code { (layout::json(&d.input)) } }
            @if let Some(o) = &d.output { h2 { "Output" } pre { code { (layout::json(o)) } } }
            @else if let Some(b) = d.output_bytes { h2 { "Output" } p.muted { (b) " bytes, larger than the node keeps" } }
            @if let Some(e) = &d.error { h2 { "Error" } pre.error { (e) } }
            h2 { "Attempts" }
            table aria-label="Attempts" {
                thead { tr { th { "#" } th { "Node" } th { "Incarnation" } th { "Started" } th { "Why" } } }
                tbody {
                    @for a in &d.attempt_list {
                        tr { td { (a.attempt) } td { (a.node) } td { (a.incarnation) } td { (layout::time(a.started_at_ms)) }
                             td { (a.reason.as_deref().unwrap_or("first attempt")) } }
                    }
                }
            }
            h2 { "Calls" }
            div.cards aria-label="Calls by cache status" {
                div.card { b { (calls.len()) } "calls" }
                @for (status, n) in &d.counts {
                    div.card data-status=(status.name()) { b { (n) } (layout::status(*status)) }
                }
            }
            @if calls.is_empty() {
                p.muted { "No calls recorded yet." }
            } @else {
                (timeline::draw(calls, r.started_at_ms))
                (call_table(&r.run_id, shown, page * CALLS_PER_PAGE))
                @if pages > 1 {
                    nav.pager aria-label="Pages of calls" {
                        @if page > 0 { a href=(format!("/runs/{}?page={}", urlencode(&r.run_id), page - 1)) { "Previous calls" } }
                        span { "Calls " (page * CALLS_PER_PAGE + 1) "–" (page * CALLS_PER_PAGE + shown.len()) " of " (calls.len()) }
                        @if page + 1 < pages { a href=(format!("/runs/{}?page={}", urlencode(&r.run_id), page + 1)) { "Next calls" } }
                    }
                }
            }
        }
    }
}

fn call_table(run_id: &str, calls: &[CallInfo], first: usize) -> Markup {
    html! {
        table #calls aria-label=(format!("Calls of run {run_id}")) {
            thead { tr { th { "#" } th { "Task" } th { "Cache" } th { "Started" } th { "Took" } th { "Waited" } th { "Execution" } th { "Key" } th { "Error" } } }
            tbody {
                @for (i, c) in calls.iter().enumerate() {
                    tr id=(format!("call-{}", c.execution)) data-status=(c.status.name()) {
                        td { (first + i + 1) }
                        td { (c.task) " " span.muted { "v" (c.version) } }
                        td { (layout::status(c.status)) @if c.executed { " " span.muted title="the task body ran for this call" { "ran" } } }
                        td { (layout::time(c.started_at_ms)) }
                        td { (layout::duration_ms(c.duration_us as f64 / 1000.0)) }
                        td {
                            @if let Some(w) = &c.waited_for {
                                (layout::duration_ms(c.wait_us as f64 / 1000.0)) " for "
                                a.waited href=(format!("/executions/{}", urlencode(w))) title="The execution that produced the value" { code { (w) } }
                            }
                        }
                        td { (layout::copyable("execution id", &c.execution)) }
                        td { @if let Some(k) = &c.key { a href=(format!("/cache/entries/{k}")) { code { (k.get(..8).unwrap_or(k)) "…" } } } }
                        td { @if let Some(e) = &c.error { (e) } @if let Some(e) = &c.cache_error { span.muted { " cache: " (e) } } }
                    }
                }
            }
        }
    }
}

pub(super) async fn cancel(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Path(run_id): axum::extract::Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(r) = session::csrf_refusal(&session, &form.csrf) {
        return r;
    }
    match cancel_run(State(app), Path(run_id.clone())).await {
        Ok(_) => Redirect::to(&format!("/runs/{}", urlencode(&run_id))).into_response(),
        Err(e) => error_page(e),
    }
}

/// Where an execution ran: its run's page, at its call.
pub(super) async fn execution(
    State(app): State<AppState>,
    axum::extract::Path(execution): axum::extract::Path<String>,
) -> Response {
    match get_execution(State(app), Path(execution.clone())).await {
        Ok(info) => match &info.run_id {
            Some(run) => Redirect::to(&format!(
                "/runs/{}?focus={}#call-{}",
                urlencode(run),
                urlencode(&execution),
                urlencode(&execution)
            ))
            .into_response(),
            None => error_page(ApiError::not_found(format!(
                "execution {execution:?} was a call outside any run"
            ))),
        },
        Err(e) => error_page(e),
    }
}
