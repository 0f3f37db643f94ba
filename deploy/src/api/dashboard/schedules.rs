//! Schedules: next fire, counters, the last ticks with their lateness and runs; pause, resume
//! and backfill.

use super::layout::{self, Section};
use super::session::{self, CsrfForm, Session, error_page, urlencode};
use crate::api::AppState;
use crate::api::error::{ApiError, Json, Path};
use crate::api::handlers::schedules::{
    backfill_schedule, list_schedules, pause_schedule, resume_schedule,
};
use crate::api::types::BackfillRequest;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;

/// Ticks shown per schedule.
const LAST_TICKS: usize = 10;

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Notice {
    /// Ticks just queued by a backfill.
    queued: Option<u64>,
}

pub(super) async fn list(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Query(notice): axum::extract::Query<Notice>,
) -> Response {
    let schedules = match list_schedules(State(app.clone())).await {
        Ok(s) => s.0,
        Err(e) => return error_page(e),
    };
    let mut ticks = Vec::with_capacity(schedules.len());
    for s in &schedules {
        match app.node.schedules().ticks(&s.name).await {
            Ok(mut t) => {
                t.sort_by_key(|(ms, _)| std::cmp::Reverse(*ms));
                t.truncate(LAST_TICKS);
                ticks.push(t);
            }
            Err(e) => return error_page(e.into()),
        }
    }
    let body = html! {
        h1 { "Schedules" }
        @if let Some(n) = notice.queued { p.notice role="status" #queued { "Backfill queued " (n) " ticks." } }
        @if schedules.is_empty() {
            div.empty {
                p { "No schedules. Declare one in the node's config file and start it with it:" }
                pre { code { "[[schedules]]\nname = \"hourly\"\nworkflow = \"<workflow>\"\ncron = \"0 * * * *\"\n\ncairn up --config cairn.toml" } }
            }
        }
        @for (s, ticks) in schedules.iter().zip(&ticks) {
            section.schedule data-schedule=(s.name) aria-labelledby=(format!("s-{}", s.name)) {
                h2 id=(format!("s-{}", s.name)) { (s.name) " " @if s.paused { span.badge.r-cancelled { "paused" } } @else { span.badge.r-succeeded { "active" } } }
                dl.facts {
                    dt { "Workflow" } dd { (s.workflow) " in " (s.project) " / " (s.domain) }
                    dt { "Trigger" } dd { code { (s.trigger) } }
                    dt { "Next fire" } dd { @if s.paused { span.muted { "paused" } } @else { (layout::time(s.next_fire_ms)) } }
                    dt { "Counters" } dd.counters {
                        "fired " span data-counter="fired" { (s.fired) } ", missed " (s.missed) ", skipped (overlap) " (s.skipped_overlap)
                        ", failed " (s.failed) ", running " (s.running) ", pending backfill " (s.pending_backfill)
                        ", latest lateness " (layout::duration_ms(s.late_ms_max as f64))
                    }
                }
                div {
                    @if s.paused {
                        form.inline method="post" action=(format!("/schedules/{}/resume", urlencode(&s.name))) {
                            (layout::csrf(&session))
                            button type="submit" aria-label=(format!("Resume schedule {}", s.name)) { "Resume" }
                        }
                    } @else {
                        form.inline method="post" action=(format!("/schedules/{}/pause", urlencode(&s.name))) data-confirm=(format!("Pause schedule {}? Its ticks pass as missed.", s.name)) {
                            (layout::csrf(&session))
                            button type="submit" aria-label=(format!("Pause schedule {}", s.name)) { "Pause" }
                        }
                    }
                    " "
                    form.inline method="post" action=(format!("/schedules/{}/backfill", urlencode(&s.name))) aria-label=(format!("Backfill schedule {}", s.name)) {
                        (layout::csrf(&session))
                        label for=(format!("b-from-{}", s.name)) { "From (UTC)" input id=(format!("b-from-{}", s.name)) type="datetime-local" name="from" required; }
                        label for=(format!("b-to-{}", s.name)) { "To (UTC)" input id=(format!("b-to-{}", s.name)) type="datetime-local" name="to" required; }
                        button type="submit" { "Backfill" }
                    }
                }
                @if ticks.is_empty() { p.muted { "No ticks yet." } } @else {
                    table aria-label=(format!("Last ticks of {}", s.name)) {
                        thead { tr { th { "Tick" } th { "Fired" } th { "Late by" } th { "Run" } th { "Outcome" } } }
                        tbody {
                            @for (ms, t) in ticks {
                                tr {
                                    td { (layout::time(*ms)) @if t.backfill { " " span.muted { "backfill" } } }
                                    td { (layout::time(t.fired_at_ms)) }
                                    td { (layout::duration_ms((t.fired_at_ms - ms).max(0) as f64)) }
                                    td { a href=(format!("/runs/{}", urlencode(&t.run_id))) { code { (t.run_id) } } }
                                    td { @match &t.outcome { None => { "running" } Some(Ok(())) => { "succeeded" } Some(Err(e)) => { "failed: " (e) } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout::page("Schedules", Section::Schedules, &session, body).into_response()
}

/// Pause or resume: the same form, the same answer.
async fn switch(
    app: AppState,
    session: &Session,
    name: String,
    form: &CsrfForm,
    pause: bool,
) -> Response {
    if let Some(r) = session::csrf_refusal(session, &form.csrf) {
        return r;
    }
    let done = if pause {
        pause_schedule(State(app), Path(name)).await
    } else {
        resume_schedule(State(app), Path(name)).await
    };
    match done {
        Ok(_) => Redirect::to("/schedules").into_response(),
        Err(e) => error_page(e),
    }
}

pub(super) async fn pause(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    switch(app, &session, name, &form, true).await
}

pub(super) async fn resume(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    switch(app, &session, name, &form, false).await
}

#[derive(serde::Deserialize)]
pub(super) struct BackfillForm {
    csrf: String,
    from: String,
    to: String,
}

/// A `datetime-local` value (`YYYY-MM-DDTHH:MM[:SS]`) read as UTC, in Unix ms.
fn utc_ms(what: &str, v: &str) -> Result<i64, ApiError> {
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
        .map(|t| t.and_utc().timestamp_millis())
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{what} {v:?} is not a date and time (YYYY-MM-DDTHH:MM)"
            ))
        })
}

pub(super) async fn backfill(
    State(app): State<AppState>,
    Extension(session): Extension<Session>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Form(form): Form<BackfillForm>,
) -> Response {
    if let Some(r) = session::csrf_refusal(&session, &form.csrf) {
        return r;
    }
    let req = match (utc_ms("from", &form.from), utc_ms("to", &form.to)) {
        (Ok(from_ms), Ok(to_ms)) => BackfillRequest { from_ms, to_ms },
        (Err(e), _) | (_, Err(e)) => return error_page(e),
    };
    match backfill_schedule(State(app), Path(name), Json(req)).await {
        Ok(done) => Redirect::to(&format!("/schedules?queued={}", done.0.queued)).into_response(),
        Err(e) => error_page(e),
    }
}
