//! The frame of every page and the small pieces pages share: times, copy buttons, badges,
//! the CSRF field.

use super::Session;
use super::assets;
use cairn_engine::catalog::CacheStatus;
use cairn_engine::runs::RunStatus;
use maud::{DOCTYPE, Markup, html};

/// Which section a page belongs to (the navigation marks it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Runs,
    Cache,
    Schedules,
    Nodes,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx must not inject its own <style> (the page's policy allows this origin's).
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false}"#;
            title { (title) " · Cairn" }
            link rel="stylesheet" href=(assets::CSS);
            script src=(assets::HTMX) defer {}
            script src=(assets::JS) defer {}
        }
    }
}

/// A page of the dashboard, with the navigation.
pub(super) fn page(title: &str, section: Section, session: &Session, body: Markup) -> Markup {
    let nav = [
        (Section::Runs, "/runs", "Runs"),
        (Section::Cache, "/cache", "Cache"),
        (Section::Schedules, "/schedules", "Schedules"),
        (Section::Nodes, "/nodes", "Nodes"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    span.brand { "Cairn" }
                    nav aria-label="Sections" {
                        @for (s, href, label) in nav {
                            @if s == section {
                                a href=(href) aria-current="page" { (label) }
                            } @else {
                                a href=(href) { (label) }
                            }
                        }
                    }
                    @if session.signed_in {
                        form.inline method="post" action="/logout" style="margin-left:auto" {
                            (csrf(session))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// A page without navigation (sign-in, errors).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { main { (body) } }
        }
    }
}

/// The hidden CSRF field of a form that changes state.
pub(super) fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A time: UTC in the page, the browser's zone once the script runs, UTC on hover.
pub(super) fn time(ms: i64) -> Markup {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => {
            let utc = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
            html! {
                time.t datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) title=(utc) { (utc) }
            }
        }
        None => html! { (ms) " ms" },
    }
}

/// A duration in the unit that reads best.
pub(super) fn duration_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else if ms < 120_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{:.1} min", ms / 60_000.0)
    }
}

/// A long identifier, in full, with a button that copies it.
pub(super) fn copyable(what: &str, id: &str) -> Markup {
    html! {
        code { (id) }
        button.copy type="button" data-copy=(id) aria-label=(format!("Copy {what} {id}")) { "copy" }
    }
}

/// A cache status as a coloured badge.
pub(super) fn status(s: CacheStatus) -> Markup {
    html! { span class=(format!("badge s-{}", s.name())) { (format!("{s:?}")) } }
}

/// A run status as a coloured badge.
pub(super) fn run_status(s: RunStatus) -> Markup {
    let name = run_status_name(s);
    html! { span class=(format!("badge r-{name}")) { (name) } }
}

pub(super) fn run_status_name(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Running => "running",
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    }
}

/// Bytes in the unit that reads best.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Pretty JSON.
pub(super) fn json(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}
