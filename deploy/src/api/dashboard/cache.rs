//! The cache: browse entries, one entry, per-task statistics, explain, and evict.

use super::layout::{self, Section};
use super::session::{self, Session, error_page, urlencode};
use crate::api::AppState;
use crate::api::error::{ApiError, Json, Path, Query};
use crate::api::handlers::cache::{
    evict as api_evict, explain as api_explain, get_entry, list_entries, stats as api_stats,
};
use crate::api::types::{EntriesQuery, EvictRequest, ExplainRequest, StatsQuery};
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cairn_engine::names;
use maud::{Markup, html};

/// The browse form (empty fields are "any" or the default).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct BrowseForm {
    #[serde(default)]
    project: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    task: String,
    #[serde(default)]
    version: String,
    cursor: Option<String>,
    /// Entries just evicted (shown once after an eviction).
    evicted: Option<u64>,
}

fn given(what: &str, v: &str) -> Result<Option<String>, ApiError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    names::check(what, v)?;
    Ok(Some(v.to_string()))
}

fn or_default(v: &str, default: &'static str) -> String {
    let v = v.trim();
    if v.is_empty() {
        default.into()
    } else {
        v.into()
    }
}

fn task_names(app: &AppState) -> Vec<String> {
    let mut names: Vec<String> = app.node.registry().names().map(str::to_string).collect();
    names.sort();
    names
}

pub(super) async fn browse(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Query(form): axum::extract::Query<BrowseForm>,
) -> Response {
    match browse_body(&app, &session, &form).await {
        Ok(body) => layout::page("Cache", Section::Cache, &session, body).into_response(),
        Err(e) => error_page(e),
    }
}

async fn browse_body(
    app: &AppState,
    session: &Session,
    form: &BrowseForm,
) -> Result<Markup, ApiError> {
    let project = or_default(&form.project, "default");
    let domain = or_default(&form.domain, "development");
    let task = given("task", &form.task)?;
    let version = given("version", &form.version)?;
    let query = EntriesQuery {
        project: Some(project.clone()),
        domain: Some(domain.clone()),
        task: task.clone(),
        version: version.clone(),
        limit: Some(50),
        cursor: form.cursor.clone().filter(|c| !c.is_empty()),
    };
    let page = list_entries(State(app.clone()), Query(query)).await?.0;
    let stats = match &task {
        Some(t) => Some(
            api_stats(
                State(app.clone()),
                Query(StatsQuery {
                    task: t.clone(),
                    project: Some(project.clone()),
                    domain: Some(domain.clone()),
                }),
            )
            .await?
            .0,
        ),
        None => None,
    };
    let tasks = task_names(app);
    // Without a task chosen: every task this node knows, with what the cache did for it.
    let mut overview = Vec::new();
    if task.is_none() {
        for t in &tasks {
            let q = StatsQuery {
                task: t.clone(),
                project: Some(project.clone()),
                domain: Some(domain.clone()),
            };
            overview.push(api_stats(State(app.clone()), Query(q)).await?.0);
        }
    }
    let here = format!(
        "/cache?project={}&domain={}&task={}&version={}",
        urlencode(&project),
        urlencode(&domain),
        urlencode(task.as_deref().unwrap_or("")),
        urlencode(version.as_deref().unwrap_or(""))
    );
    let now = app.node.catalog().now_ms();
    Ok(html! {
        h1 { "Cache" }
        @if let Some(n) = form.evicted { p.notice role="status" #evicted { "Evicted " (n) " entr" (if n == 1 { "y" } else { "ies" }) "." } }
        form.filters method="get" action="/cache" role="search" aria-label="Browse entries" {
            label for="c-project" { "Project" input #c-project name="project" value=(project); }
            label for="c-domain" { "Domain" input #c-domain name="domain" value=(domain); }
            label for="c-task" { "Task"
                select #c-task name="task" {
                    option value="" { "any" }
                    @for t in &tasks { option value=(t) selected[task.as_deref() == Some(t.as_str())] { (t) } }
                }
            }
            label for="c-version" { "Cache version" input #c-version name="version" value=(version.as_deref().unwrap_or("")) placeholder="any"; }
            button type="submit" { "Browse" }
        }
        @if let Some(s) = &stats {
            h2 { "Task " code { (s.task) } }
            div.cards #stats aria-label="Task statistics" {
                div.card { b { (s.hit_ratio.map_or("–".to_string(), |r| format!("{:.1} %", r * 100.0))) } "hit ratio" }
                div.card { b { (s.executions_avoided) } "executions avoided" }
                div.card { b { (s.entries) } "entries" }
                div.card { b { (layout::bytes(s.bytes)) } "stored" }
                @for (status, n) in &s.calls { div.card { b { (n) } (layout::status(*status)) } }
            }
            form.inline method="post" action="/cache/evict"
                data-confirm=(format!("Evict every entry of task {} in {}/{}{}?", s.task, project, domain,
                    version.as_ref().map_or(String::new(), |v| format!(", version {v}")))) {
                (layout::csrf(session))
                input type="hidden" name="scope" value="task";
                input type="hidden" name="project" value=(project);
                input type="hidden" name="domain" value=(domain);
                input type="hidden" name="task" value=(s.task);
                input type="hidden" name="version" value=(version.as_deref().unwrap_or(""));
                input type="hidden" name="back" value=(here);
                button.danger type="submit" { "Evict all entries of " (s.task) }
            }
        }
        @if !overview.is_empty() {
            h2 { "Tasks in " (project) " / " (domain) }
            table #tasks aria-label="What the cache did per task" {
                thead { tr { th { "Task" } th { "Hit ratio" } th { "Executions avoided" } th { "Calls" } th { "Entries" } th { "Stored" } } }
                tbody {
                    @for s in &overview {
                        tr data-task=(s.task) {
                            td { a href=(format!("/cache?project={}&domain={}&task={}", urlencode(&project), urlencode(&domain), urlencode(&s.task))) { (s.task) } }
                            td { (s.hit_ratio.map_or("–".to_string(), |r| format!("{:.1} %", r * 100.0))) }
                            td { (s.executions_avoided) }
                            td { (s.calls.values().sum::<u64>()) }
                            td { (s.entries) }
                            td { (layout::bytes(s.bytes)) }
                        }
                    }
                }
            }
        }
        h2 { "Entries" }
        @if !page.corrupt.is_empty() {
            p.error role="alert" { (page.corrupt.len()) " corrupt entries skipped (run cairn cache verify --repair)." }
        }
        @if page.entries.is_empty() {
            div.empty {
                p { "No entries in " (project) "/" (domain) @if let Some(t) = &task { " for task " (t) } "." }
                p { "Entries appear when a run calls a cacheable task, e.g.:" }
                pre { code { "cairn run <workflow> --input '…' --project " (project) " --domain " (domain) } }
            }
        } @else {
            table #entries aria-label="Cache entries" {
                thead { tr { th { "Key" } th { "Task" } th { "Version" } th { "Inputs" } th { "Stored" } th { "Expires" } th { "Size" } th { "Execution" } th { "" } } }
                tbody {
                    @for e in &page.entries {
                        tr data-key=(e.key) {
                            td { a href=(format!("/cache/entries/{}", e.key)) { code { (e.key) } } }
                            td { (e.task) }
                            td { (e.version) }
                            td { @for (n, d) in &e.inputs { code title=(d) { (n) } " " } }
                            td { (layout::time(e.created_at_ms)) br; span.muted { (layout::duration_ms((now - e.created_at_ms).max(0) as f64)) " ago" } }
                            td { @if let Some(x) = e.expires_at_ms { (layout::time(x)) } @else { span.muted { "never" } } }
                            td { (layout::bytes(e.size)) }
                            td { a href=(format!("/executions/{}", urlencode(&e.execution))) { code { (e.execution) } } }
                            td { (evict_key_form(session, &e.key, &here)) }
                        }
                    }
                }
            }
            @if let Some(next) = &page.next {
                div.pager { a href={ (here) "&cursor=" (urlencode(next)) } { "Next entries" } }
            }
        }
        h2 #explain { "Explain a call" }
        (explain_form(&tasks, task.as_deref().unwrap_or(""), "", &project, &domain))
    })
}

fn evict_key_form(session: &Session, key: &str, back: &str) -> Markup {
    html! {
        form.inline method="post" action="/cache/evict" data-confirm=(format!("Evict entry {key}?")) {
            (layout::csrf(session))
            input type="hidden" name="scope" value="key";
            input type="hidden" name="key" value=(key);
            input type="hidden" name="back" value=(back);
            button.danger type="submit" aria-label=(format!("Evict entry {key}")) { "Evict" }
        }
    }
}

fn explain_form(tasks: &[String], task: &str, input: &str, project: &str, domain: &str) -> Markup {
    html! {
        form.filters method="get" action="/cache/explain" aria-label="Explain a call" {
            label for="x-task" { "Task"
                select #x-task name="task" required {
                    @for t in tasks { option value=(t) selected[t == task] { (t) } }
                }
            }
            label for="x-input" { "Input (JSON: an object of inputs by name, or the value)"
                textarea #x-input name="input" rows="2" cols="40" required { (input) }
            }
            label for="x-project" { "Project" input #x-project name="project" value=(project); }
            label for="x-domain" { "Domain" input #x-domain name="domain" value=(domain); }
            button type="submit" { "Explain" }
        }
    }
}

pub(super) async fn entry(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Path(key): axum::extract::Path<String>,
) -> Response {
    let detail = match get_entry(State(app.clone()), Path(key.clone())).await {
        Ok(d) => d.0,
        Err(e) => return error_page(e),
    };
    let e = &detail.entry;
    let now = app.node.catalog().now_ms();
    let back = format!(
        "/cache?project={}&domain={}&task={}",
        urlencode(&e.project),
        urlencode(&e.domain),
        urlencode(&e.task)
    );
    let body = html! {
        h1 { "Entry " (layout::copyable("cache key", &e.key)) }
        dl.facts {
            dt { "Task" } dd { (e.task) " (cache version " (e.version) ")" }
            dt { "Project / domain" } dd { (e.project) " / " (e.domain) }
            dt { "Signature" } dd { code { (e.signature) } }
            dt { "Stored" } dd { (layout::time(e.created_at_ms)) " (" (layout::duration_ms((now - e.created_at_ms).max(0) as f64)) " ago)" }
            dt { "Expires" } dd { @if let Some(x) = e.expires_at_ms { (layout::time(x)) } @else { "never (no max_age)" } }
            dt { "Produced by" } dd { a href=(format!("/executions/{}", urlencode(&e.execution))) { code { (e.execution) } } }
            dt { "Size" } dd { (layout::bytes(e.size)) }
        }
        h2 { "Inputs (digests)" }
        table aria-label="Input digests" {
            thead { tr { th { "Input" } th { "Digest" } } }
            tbody { @for (n, d) in &e.inputs { tr { td { (n) } td { code { (d) } } } } }
        }
        h2 { "Output" }
        @if let Some(o) = &detail.output { pre #output { code { (layout::json(o)) } } }
        @else { p.muted { "This node does not know the task's types: " (layout::bytes(e.size)) " stored." } }
        (evict_key_form(&session, &e.key, &back))
    };
    layout::page(&format!("Entry {key}"), Section::Cache, &session, body).into_response()
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ExplainForm {
    #[serde(default)]
    task: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    domain: String,
}

pub(super) async fn explain(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Query(form): axum::extract::Query<ExplainForm>,
) -> Response {
    let project = or_default(&form.project, "default");
    let domain = or_default(&form.domain, "development");
    let tasks = task_names(&app);
    let result: Result<Markup, ApiError> = async {
        names::check("task", form.task.trim())?;
        names::check("project", &project)?;
        names::check("domain", &domain)?;
        let input: serde_json::Value = serde_json::from_str(&form.input)
            .map_err(|e| ApiError::invalid(format!("the input is not JSON: {e}")))?;
        let req = ExplainRequest {
            task: form.task.trim().to_string(),
            input,
            project: project.clone(),
            domain: domain.clone(),
        };
        let x = api_explain(State(app.clone()), Json(req)).await?.0;
        Ok(html! {
            section #explanation aria-live="polite" {
                h2 { "Verdict: " span data-verdict=(x.verdict) { (x.verdict) } }
                p { "Key " (layout::copyable("cache key", &x.key)) }
                @if x.verdict == "hit" { p { "A call with this input is answered from " a href=(format!("/cache/entries/{}", x.key)) { "this entry" } "." } }
                @if let Some(r) = &x.reason { p { (r) } }
                @if x.verdict == "miss" {
                    @if x.nearest.is_empty() {
                        p { "No stored entry of this task in " (project) "/" (domain) " to compare with (" (x.compared) " compared)." }
                    } @else {
                        p { "Nearest of " (x.compared) " stored entries" @if x.tied > x.nearest.len() { " (" (x.tied) " as near)" } ":" }
                        ul #differences {
                            @for d in &x.nearest {
                                li {
                                    a href=(format!("/cache/entries/{}", d.entry)) { code { (d.entry.get(..8).unwrap_or(&d.entry)) "…" } } ": "
                                    @for (i, s) in d.summary.iter().enumerate() { @if i > 0 { "; " } span.difference { (s) } }
                                }
                            }
                        }
                    }
                }
            }
        })
    }
    .await;
    let body = html! {
        h1 { "Explain a call" }
        (explain_form(&tasks, form.task.trim(), &form.input, &project, &domain))
        @match &result {
            Ok(m) => { (m) }
            Err(e) => { p.error role="alert" #explain-error { code { (e.code) } ": " (e.message) } }
        }
    };
    let status = match &result {
        Ok(_) => axum::http::StatusCode::OK,
        Err(e) => e.status,
    };
    (
        status,
        layout::page("Explain", Section::Cache, &session, body),
    )
        .into_response()
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct EvictForm {
    csrf: String,
    scope: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    task: String,
    #[serde(default)]
    version: String,
    back: Option<String>,
}

pub(super) async fn evict(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    Form(form): Form<EvictForm>,
) -> Response {
    if let Some(r) = session::csrf_refusal(&session, &form.csrf) {
        return r;
    }
    let request: Result<EvictRequest, ApiError> = (|| {
        Ok(match form.scope.as_str() {
            "key" => EvictRequest::Key {
                key: form.key.clone(),
            },
            "task" => {
                names::check("project", &form.project)?;
                names::check("domain", &form.domain)?;
                names::check("task", &form.task)?;
                EvictRequest::Task {
                    project: form.project.clone(),
                    domain: form.domain.clone(),
                    task: form.task.clone(),
                    version: given("version", &form.version)?,
                }
            }
            other => return Err(ApiError::invalid(format!("no eviction scope {other:?}"))),
        })
    })();
    let result = match request {
        Ok(r) => api_evict(State(app), Json(r)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(done) => {
            let back = session::local_path(form.back.as_deref().or(Some("/cache")));
            let sep = if back.contains('?') { '&' } else { '?' };
            Redirect::to(&format!("{back}{sep}evicted={}", done.0.evicted)).into_response()
        }
        Err(e) => error_page(e),
    }
}
