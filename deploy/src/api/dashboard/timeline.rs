//! A run's timeline as server-side SVG, from its execution records.
//!
//! Up to [`ROW_PER_CALL`] calls it draws one row per call: a bar from start to end, coloured
//! by cache status; a hit is a diamond (it takes microseconds, a bar would not show); a call
//! that waited is a bar that links to the execution that produced its value. Past that, one
//! row per task and status shows how the calls spread over time (a density strip), so a run of
//! 10,000 calls is one screen, not 10,000 rows.

use crate::api::types::CallInfo;
use cairn_engine::catalog::CacheStatus;
use maud::{Markup, html};
use std::collections::BTreeMap;

/// Largest run drawn one row per call.
pub(super) const ROW_PER_CALL: usize = 200;
const WIDTH: f64 = 900.0;
const LABEL: f64 = 190.0;
const ROW: f64 = 16.0;
const BINS: usize = 150;

fn colour(s: CacheStatus) -> &'static str {
    match s {
        CacheStatus::Hit => "#2e9d5b",
        CacheStatus::Populated => "#1f5fbf",
        CacheStatus::Waited => "#b07d12",
        CacheStatus::Miss | CacheStatus::PutFailure | CacheStatus::LookupFailure => "#c2412d",
        CacheStatus::Evicted => "#8e44ad",
        CacheStatus::Skipped => "#546e7a",
        CacheStatus::Replayed => "#00897b",
        CacheStatus::Disabled => "#7d8896",
    }
}

/// The span drawn: from the first start to the last end (ms, fractional).
fn span(calls: &[CallInfo], run_start_ms: i64) -> (f64, f64) {
    let t0 = calls
        .iter()
        .map(|c| c.started_at_ms)
        .min()
        .unwrap_or(run_start_ms)
        .min(run_start_ms) as f64;
    let t1 = calls
        .iter()
        .map(|c| c.started_at_ms as f64 + c.duration_us as f64 / 1000.0)
        .fold(t0 + 1.0, f64::max);
    (t0, t1)
}

/// The timeline of `calls`.
pub(super) fn draw(calls: &[CallInfo], run_start_ms: i64) -> Markup {
    let (t0, t1) = span(calls, run_start_ms);
    let scale = WIDTH / (t1 - t0);
    let x = |ms: f64| LABEL + (ms - t0) * scale;
    let statuses: BTreeMap<CacheStatus, ()> = calls.iter().map(|c| (c.status, ())).collect();
    html! {
        figure.timeline #timeline aria-label="Timeline of the run's calls" {
            @if calls.len() <= ROW_PER_CALL {
                (per_call(calls, &x))
            } @else {
                (grouped(calls, t0, t1))
            }
            figcaption.legend {
                @for s in statuses.keys() {
                    span { svg width="10" height="10" aria-hidden="true" { rect width="10" height="10" fill=(colour(*s)) {} } " " (format!("{s:?}")) }
                }
                span.muted { "0 – " (super::layout::duration_ms(t1 - t0)) }
                @if calls.len() > ROW_PER_CALL {
                    span.muted { (calls.len()) " calls, grouped by task and status; darker is denser" }
                }
            }
        }
    }
}

fn per_call(calls: &[CallInfo], x: &dyn Fn(f64) -> f64) -> Markup {
    let height = ROW * calls.len() as f64 + 4.0;
    html! {
        svg width=(LABEL + WIDTH + 10.0) height=(height) role="img" aria-label="One row per call" {
            @for (i, c) in calls.iter().enumerate() {
                @let y = 2.0 + ROW * i as f64;
                @let start = c.started_at_ms as f64;
                @let end = start + c.duration_us as f64 / 1000.0;
                @let tip = format!("{} {} · {:?} · {}", c.task, c.execution, c.status, super::layout::duration_ms(c.duration_us as f64 / 1000.0));
                g data-execution=(c.execution) data-status=(c.status.name()) {
                    text x="4" y=(y + 11.0) { (c.task) " #" (i + 1) }
                    @if c.status == CacheStatus::Hit || c.status == CacheStatus::Replayed {
                        @let cx = x(start);
                        polygon points=(format!("{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}", cx, y + 1.0, cx + 6.0, y + 7.0, cx, y + 13.0, cx - 6.0, y + 7.0))
                            fill=(colour(c.status)) { title { (tip) } }
                    } @else if let Some(w) = &c.waited_for {
                        a href=(format!("/executions/{}", super::session::urlencode(w))) {
                            rect x=(format!("{:.1}", x(start))) y=(y + 2.0) width=(format!("{:.1}", (x(end) - x(start)).max(3.0))) height="10"
                                fill=(colour(c.status)) stroke="#5c4100" stroke-dasharray="3 2" {
                                title { (tip) " · waited for " (w) " (open it)" }
                            }
                        }
                    } @else {
                        rect x=(format!("{:.1}", x(start))) y=(y + 2.0) width=(format!("{:.1}", (x(end) - x(start)).max(3.0))) height="10"
                            fill=(colour(c.status)) { title { (tip) } }
                    }
                }
            }
        }
    }
}

fn grouped(calls: &[CallInfo], t0: f64, t1: f64) -> Markup {
    // (task, status) → calls started per bin.
    let mut rows: BTreeMap<(&str, CacheStatus), Vec<u32>> = BTreeMap::new();
    let width = (t1 - t0).max(1.0);
    for c in calls {
        let bin = (((c.started_at_ms as f64 - t0) / width) * BINS as f64) as usize;
        rows.entry((c.task.as_str(), c.status))
            .or_insert_with(|| vec![0; BINS])[bin.min(BINS - 1)] += 1;
    }
    let max = rows
        .values()
        .flat_map(|r| r.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let bin_w = WIDTH / BINS as f64;
    let height = ROW * 1.5 * rows.len() as f64 + 4.0;
    html! {
        svg width=(LABEL + WIDTH + 10.0) height=(height) role="img" aria-label="Calls grouped by task and cache status" {
            @for (i, ((task, status), bins)) in rows.iter().enumerate() {
                @let y = 2.0 + ROW * 1.5 * i as f64;
                @let total: u32 = bins.iter().sum();
                g data-task=(task) data-status=(status.name()) data-calls=(total) {
                    text x="4" y=(y + 14.0) { (task) " · " (format!("{status:?}")) " ×" (total) }
                    @for (b, n) in bins.iter().enumerate() {
                        @if *n > 0 {
                            rect x=(format!("{:.1}", LABEL + b as f64 * bin_w)) y=(y + 3.0) width=(format!("{:.1}", bin_w.max(1.0))) height="16"
                                fill=(colour(*status)) fill-opacity=(format!("{:.2}", 0.25 + 0.75 * f64::from(*n) / f64::from(max))) {
                                title { (n) " calls" }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(i: usize, task: &str, status: CacheStatus) -> CallInfo {
        CallInfo {
            execution: format!("e{i:05}"),
            task: task.into(),
            version: "1".into(),
            key: None,
            status,
            started_at_ms: 1_000 + i as i64,
            duration_us: 500,
            wait_us: 0,
            waited_for: (status == CacheStatus::Waited).then(|| "producer-1".to_string()),
            error: None,
            executed: status == CacheStatus::Populated,
            cache_error: None,
            attempt: 1,
        }
    }

    fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    #[test]
    fn small_runs_get_a_row_per_call_with_hits_as_markers_and_waits_as_links() {
        let statuses = [
            CacheStatus::Populated,
            CacheStatus::Hit,
            CacheStatus::Waited,
        ];
        let calls: Vec<CallInfo> = (0..30)
            .map(|i| call(i, "square", statuses[i % 3]))
            .collect();
        let svg = draw(&calls, 1_000).into_string();
        assert_eq!(count(&svg, "data-execution="), 30);
        assert_eq!(count(&svg, "<polygon"), 10, "a diamond per hit");
        assert_eq!(
            count(&svg, "href=\"/executions/producer-1\""),
            10,
            "a link per wait"
        );
    }

    #[test]
    fn large_runs_are_grouped_by_task_and_status_and_every_call_is_counted() {
        let mut calls: Vec<CallInfo> = (0..10_000)
            .map(|i| {
                call(
                    i,
                    "square",
                    if i % 4 == 0 {
                        CacheStatus::Hit
                    } else {
                        CacheStatus::Populated
                    },
                )
            })
            .collect();
        calls.push(call(10_000, "total", CacheStatus::Populated));
        let svg = draw(&calls, 1_000).into_string();
        assert_eq!(count(&svg, "data-execution="), 0, "no row per call");
        assert_eq!(
            count(&svg, "data-task="),
            3,
            "square×hit, square×populated, total×populated"
        );
        for (task, status, n) in [
            ("square", "hit", 2_500),
            ("square", "populated", 7_500),
            ("total", "populated", 1),
        ] {
            let row = format!("data-task=\"{task}\" data-status=\"{status}\" data-calls=\"{n}\"");
            assert!(svg.contains(&row), "{row}");
        }
    }
}
