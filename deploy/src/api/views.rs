//! Engine records as API types.

use super::types::*;
use cairn_engine::catalog::{self, CacheKey, EntryMeta, ExecutionRecord, InputDiff};
use cairn_engine::runs::RunRecord;
use cairn_engine::schedule::{ScheduleRecord, Trigger};
use serde_json::Value;
use std::collections::BTreeMap;

pub(super) fn run_summary(r: &RunRecord) -> RunSummary {
    RunSummary {
        run_id: r.run_id.clone(),
        workflow: r.workflow.clone(),
        project: r.project.clone(),
        domain: r.domain.clone(),
        status: r.status,
        node: r.node.clone(),
        attempts: r.attempts.len().max(1) as u32,
        schedule: r.schedule.clone(),
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
    }
}

fn json_of(text: &str) -> serde_json::Value {
    // Stored by the launcher from a serde_json value; text that does not parse is shown as is.
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

pub(super) fn run_detail(r: &RunRecord, calls: &[ExecutionRecord]) -> RunDetail {
    let mut counts = BTreeMap::new();
    for c in calls {
        *counts.entry(c.status).or_insert(0) += 1;
    }
    RunDetail {
        run: run_summary(r),
        overwrite_cache: r.overwrite_cache,
        input: r.input.as_str().map_or(Value::Null, json_of),
        output: r.output.as_ref().and_then(|t| t.as_str()).map(json_of),
        output_bytes: r.output.as_ref().map(|t| t.bytes),
        error: r.error.as_ref().map(|t| {
            t.text
                .clone()
                .unwrap_or_else(|| format!("({} bytes, not kept)", t.bytes))
        }),
        attempt_list: r
            .attempts
            .iter()
            .map(|a| AttemptInfo {
                attempt: a.attempt,
                node: a.node.clone(),
                incarnation: a.incarnation,
                started_at_ms: a.started_at_ms,
                reason: a.reason.clone(),
            })
            .collect(),
        idempotency_key: r.idempotency_key.clone(),
        trace_id: r.trace.as_deref().and_then(trace_id),
        counts,
        calls: calls.iter().map(call).collect(),
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> Option<String> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
        .then(|| id.to_string())
}

pub(super) fn call(c: &ExecutionRecord) -> CallInfo {
    CallInfo {
        execution: c.execution.clone(),
        task: c.task.to_string(),
        version: c.version.to_string(),
        key: c.key.map(|k| k.to_string()),
        status: c.status,
        started_at_ms: c.started_at_ms,
        duration_us: c.duration_us,
        wait_us: c.wait_us,
        waited_for: c.waited_for.clone(),
        error: c.error.clone(),
        executed: c.executed,
        cache_error: c.cache_error.clone(),
        attempt: c.attempt,
    }
}

pub(super) fn task_stats(
    project: &str,
    domain: &str,
    task: &str,
    s: &catalog::TaskStats,
) -> TaskStatsInfo {
    use catalog::CacheStatus as C;
    let count = |st: C| s.calls.get(&st).copied().unwrap_or(0);
    let avoided = count(C::Hit) + count(C::Waited);
    let consulted = avoided + count(C::Populated) + count(C::Miss) + count(C::Evicted);
    TaskStatsInfo {
        task: task.to_string(),
        project: project.to_string(),
        domain: domain.to_string(),
        entries: s.entries,
        bytes: s.bytes,
        entries_by_version: s.entries_by_version.clone(),
        calls: s.calls.clone(),
        executions_avoided: avoided,
        hit_ratio: (consulted > 0).then(|| avoided as f64 / consulted as f64),
        corrupt: s.corrupt,
    }
}

pub(super) fn schedule(r: &ScheduleRecord) -> ScheduleInfo {
    let trigger = match &r.spec.trigger {
        Trigger::Cron { expr, tz } => format!("cron {expr:?} {tz}"),
        Trigger::Every { period_ms, .. } => format!("every {period_ms} ms"),
    };
    let st = &r.state;
    ScheduleInfo {
        name: r.spec.name.clone(),
        workflow: r.spec.workflow.clone(),
        project: r.spec.project.clone(),
        domain: r.spec.domain.clone(),
        trigger,
        paused: st.paused,
        next_fire_ms: st.next_fire_ms,
        running: st.running,
        fired: st.fired,
        missed: st.missed,
        skipped_overlap: st.skipped_overlap,
        failed: st.failed,
        late_ms_max: st.late_ms_max,
        pending_backfill: st.pending_backfill.len(),
    }
}

pub(super) fn entry(m: &EntryMeta) -> EntryInfo {
    EntryInfo {
        key: m.key.digest.to_string(),
        project: m.key.project.clone(),
        domain: m.key.domain.clone(),
        task: m.key.task.clone(),
        version: m.key.version.clone(),
        signature: m.key.signature.to_string(),
        inputs: m
            .key
            .inputs
            .iter()
            .map(|(n, d)| (n.clone(), d.to_string()))
            .collect(),
        created_at_ms: m.created_at_ms,
        execution: m.execution.clone(),
        size: m.size,
        expires_at_ms: m.expires_at_ms,
    }
}

/// How a call's key compares with the stored entries. `details` says, for each nearest entry
/// in order, what the task could tell about its changed inputs ([`cairn_engine::Task::
/// describe_change`]: a command task names the files), by input name; the summary adds it.
pub(super) fn explanation(
    key: &CacheKey,
    e: &catalog::Explanation,
    details: &[std::collections::BTreeMap<String, String>],
) -> Explanation {
    let mut out = Explanation {
        key: key.digest.to_string(),
        verdict: String::new(),
        reason: None,
        nearest: Vec::new(),
        tied: 0,
        compared: 0,
        corrupt: 0,
    };
    match e {
        catalog::Explanation::Stored => out.verdict = "hit".into(),
        catalog::Explanation::Evicted { reason } => {
            out.verdict = "evicted".into();
            out.reason = Some(reason.clone());
        }
        catalog::Explanation::Corrupt { detail } => {
            out.verdict = "corrupt".into();
            out.reason = Some(detail.clone());
        }
        catalog::Explanation::Miss {
            nearest,
            tied,
            compared,
            corrupt,
        } => {
            out.verdict = "miss".into();
            out.compared = *compared;
            out.tied = *tied;
            out.corrupt = *corrupt;
            out.nearest = nearest
                .iter()
                .enumerate()
                .map(|(at, d)| {
                    let mut summary = Vec::new();
                    if let Some((stored, called)) = &d.version {
                        summary.push(format!(
                            "cache version: stored {stored:?}, called {called:?}"
                        ));
                    }
                    if d.signature_changed {
                        summary.push("task signature changed".to_string());
                    }
                    let inputs = d
                        .inputs
                        .iter()
                        .map(|i| {
                            let (name, change) = match i {
                                InputDiff::Changed(n) => (n, "changed"),
                                InputDiff::Added(n) => (n, "added"),
                                InputDiff::Removed(n) => (n, "removed"),
                            };
                            let detail = details
                                .get(at)
                                .and_then(|m| m.get(name))
                                .filter(|_| change == "changed");
                            summary.push(match detail {
                                Some(detail) => format!("input {name:?} {change}: {detail}"),
                                None => format!("input {name:?} {change}"),
                            });
                            InputChange {
                                name: name.clone(),
                                change: change.into(),
                            }
                        })
                        .collect();
                    DifferenceInfo {
                        entry: d.entry.to_string(),
                        stored_version: d.version.as_ref().map(|v| v.0.clone()),
                        called_version: d.version.as_ref().map(|v| v.1.clone()),
                        signature_changed: d.signature_changed,
                        inputs,
                        summary,
                    }
                })
                .collect();
        }
    }
    out
}

/// Corrupt entries as the API lists them: each key with what is wrong with it.
pub(super) fn corrupt(list: &[(cairn_engine::catalog::Digest, String)]) -> Vec<CorruptEntry> {
    list.iter()
        .map(|(key, detail)| CorruptEntry {
            key: key.to_string(),
            detail: detail.clone(),
        })
        .collect()
}
