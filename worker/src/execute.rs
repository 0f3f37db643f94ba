//! Running one job: the part of a task call that happens on a worker.

use cairn_engine::Store;
use cairn_engine::catalog::{CacheStatus, Catalog};
use cairn_engine::task::{Job, JobReport, TaskError, TaskRegistry};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use tracing::Instrument;

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs `job`: looks the task up, keeps its lease alive, runs it (with its timeout, retrying
/// failures, panics and timeouts `retries` times), then commits the output or fails the lease
/// so waiters take over at once. Never panics and never returns without a report.
pub async fn execute<S: Store>(
    catalog: &Catalog<S>,
    registry: &TaskRegistry,
    job: &Job,
) -> JobReport {
    let span = tracing::info_span!(
        "cairn.execute",
        "cairn.task" = %job.task,
        "cairn.execution" = %job.execution,
        "cairn.run.id" = job.run.as_deref().unwrap_or(""),
        "cairn.lease.generation" = job.cache.as_ref().map(|c| c.lease.generation),
        "cairn.attempts" = tracing::field::Empty,
        "cairn.cache.status" = tracing::field::Empty,
    );
    if let Some(parent) = &job.trace {
        cairn_engine::telemetry::propagate::set_parent(&span, parent);
    }
    let report = execute_in_span(catalog, registry, job)
        .instrument(span.clone())
        .await;
    span.record("cairn.attempts", report.attempts);
    span.record("cairn.cache.status", tracing::field::debug(report.status));
    report
}

async fn execute_in_span<S: Store>(
    catalog: &Catalog<S>,
    registry: &TaskRegistry,
    job: &Job,
) -> JobReport {
    let uncached = if job.cache.is_some() {
        CacheStatus::Miss
    } else {
        CacheStatus::Disabled
    };
    let Some(task) = registry.get(&job.task) else {
        let error = TaskError::UnknownTask {
            name: job.task.clone(),
        };
        if let Some(c) = &job.cache {
            let _ = catalog.fail(&c.lease, &error.to_string()).await;
        }
        return JobReport {
            output: Err(error),
            status: uncached,
            attempts: 0,
        };
    };
    let options = &task.spec().options;
    let mut attempts = 0;
    let attempts_loop = async {
        loop {
            attempts += 1;
            let run = AssertUnwindSafe(task.invoke_bytes(&job.input)).catch_unwind();
            let result = match options.timeout {
                Some(limit) => match tokio::time::timeout(limit, run).await {
                    Ok(r) => r,
                    Err(_) => Ok(Err(TaskError::TimedOut {
                        after_ms: limit.as_millis() as u64,
                    })),
                },
                None => run.await,
            };
            let result = result.unwrap_or_else(|panic| {
                Err(TaskError::Panicked {
                    message: panic_message(&*panic),
                })
            });
            match result {
                Err(e) if e.is_retryable() && attempts <= options.retries => {
                    tracing::info!(task = %job.task, attempt = attempts, error = %e, "retrying task");
                }
                other => break other,
            }
        }
    };
    let outcome = match &job.cache {
        Some(c) => catalog.heartbeating(&c.lease, attempts_loop).await,
        None => attempts_loop.await,
    };
    let Some(cache) = &job.cache else {
        return JobReport {
            output: outcome,
            status: CacheStatus::Disabled,
            attempts,
        };
    };
    let commit = tracing::info_span!(
        "cairn.commit",
        "cairn.cache.key" = %cache.key.digest,
        "cairn.cache.status" = tracing::field::Empty,
    );
    let (output, status) = catalog
        .settle(&cache.key, &cache.lease, outcome, options.max_age)
        .instrument(commit.clone())
        .await;
    commit.record("cairn.cache.status", tracing::field::debug(status));
    JobReport {
        output,
        status,
        attempts,
    }
}
