//! Running one job: the part of a task call that happens on a worker.

use cairn_engine::Store;
use cairn_engine::catalog::{CacheStatus, Catalog};
use cairn_engine::runs::Cancellations;
use cairn_engine::task::{Job, JobCache, JobReport, TaskError, TaskRegistry};
use cairn_engine::telemetry::semconv as sc;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
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

/// What a worker needs besides the job: the catalog, the tasks, and which runs are cancelled.
pub struct Context<'a, S: Store> {
    /// The catalog to commit through.
    pub catalog: &'a Catalog<S>,
    /// The tasks it can run.
    pub registry: &'a TaskRegistry,
    /// Runs cancelled so far: their jobs are aborted.
    pub cancels: &'a Cancellations,
    /// How long a cancelled run's task body may still run before it is aborted.
    pub cancel_grace: Duration,
}

/// Runs `job`: looks the task up, keeps its lease beating, runs it (with its timeout, retrying
/// failures, panics and timeouts `retries` times), then commits the output or fails the lease
/// so waiters take over at once. A journaled job (an uncached call of a durable run) commits
/// its outcome, output or error, to the run's journal. A job of a cancelled run is aborted
/// after the grace period and its lease released. Never panics and never returns without a
/// report. [`run`] and [`Settling::settle`] are its two halves, for a worker that should not
/// wait for the commit.
pub async fn execute<S: Store>(cx: &Context<'_, S>, job: &Job) -> JobReport {
    match run(cx, job).await {
        Ran::Done(report) => report,
        Ran::Settle(settling) => settling.settle(cx.catalog, job).await,
    }
}

/// What running a job's body left to do.
pub enum Ran {
    /// Nothing: the job's report (an uncached job, an unknown task, a cancelled run).
    Done(JobReport),
    /// Its outcome is to be committed under its lease: [`Settling::settle`].
    Settle(Box<Settling>),
}

/// A job's outcome waiting to be committed. Where commits wait for the store, a worker hands
/// it to its pool and runs its next job: the commit waits for a group commit (a store round
/// trip or two), which should not keep a slot of the pool's concurrency from the next task
/// body.
pub struct Settling {
    outcome: Result<Vec<u8>, TaskError>,
    blobs: Vec<cairn_engine::blobs::BlobDigest>,
    attempts: u32,
    max_age: Option<Duration>,
    /// The job's `cairn.execute` span, which the commit's span belongs to.
    span: tracing::Span,
}

/// Runs the first half of [`execute`]: everything up to the commit.
pub async fn run<S: Store>(cx: &Context<'_, S>, job: &Job) -> Ran {
    let span = tracing::info_span!(
        sc::SPAN_EXECUTE,
        { sc::TASK } = %job.task,
        { sc::EXECUTION } = %job.execution,
        { sc::RUN_ID } = job.run.as_deref().unwrap_or(""),
        // Signed: tracing hands unsigned integers to OpenTelemetry as strings.
        { sc::LEASE_GENERATION } = job
            .cache
            .as_ref()
            .map(|c| i64::try_from(c.lease.generation).unwrap_or(i64::MAX)),
        { sc::ATTEMPTS } = tracing::field::Empty,
        { sc::CACHE_STATUS } = tracing::field::Empty,
    );
    if let Some(parent) = &job.trace {
        cairn_engine::telemetry::propagate::set_parent(&span, parent);
    }
    match execute_in_span(cx, job).instrument(span.clone()).await {
        Ran::Done(report) => {
            span.record(sc::ATTEMPTS, i64::from(report.attempts));
            span.record(sc::CACHE_STATUS, tracing::field::debug(report.status));
            Ran::Done(report)
        }
        Ran::Settle(mut settling) => {
            settling.span = span;
            Ran::Settle(settling)
        }
    }
}

impl Settling {
    /// Commits the outcome of `job` (the job [`run`] ran) under its lease, or to its run's
    /// journal, and returns the job's report.
    pub async fn settle<S: Store>(self, catalog: &Catalog<S>, job: &Job) -> JobReport {
        let span = self.span.clone();
        let report = self
            .settle_in_span(catalog, job)
            .instrument(span.clone())
            .await;
        span.record(sc::ATTEMPTS, i64::from(report.attempts));
        span.record(sc::CACHE_STATUS, tracing::field::debug(report.status));
        report
    }

    async fn settle_in_span<S: Store>(self, catalog: &Catalog<S>, job: &Job) -> JobReport {
        let Settling {
            outcome,
            blobs,
            attempts,
            max_age,
            span: _,
        } = self;
        let Some(cache) = &job.cache else {
            return JobReport {
                output: outcome,
                status: CacheStatus::Disabled,
                attempts,
                cache_error: None,
            };
        };
        let journaled = cache.key.journal.is_some();
        let commit = tracing::info_span!(
            sc::SPAN_COMMIT,
            { sc::CACHE_KEY } = %cache.key.digest,
            { sc::CACHE_STATUS } = tracing::field::Empty,
        );
        let (output, status, cache_error) = if journaled {
            let (output, status) = journal(catalog, cache, outcome, &blobs)
                .instrument(commit.clone())
                .await;
            (output, status, None)
        } else {
            catalog
                .settle(&cache.key, &cache.lease, outcome, max_age, &blobs)
                .instrument(commit.clone())
                .await
        };
        commit.record(sc::CACHE_STATUS, tracing::field::debug(status));
        JobReport {
            output,
            status,
            attempts,
            cache_error,
        }
    }
}

async fn execute_in_span<S: Store>(cx: &Context<'_, S>, job: &Job) -> Ran {
    let catalog = cx.catalog;
    let journaled = job.cache.as_ref().is_some_and(|c| c.key.journal.is_some());
    let uncached = if job.cache.is_some() && !journaled {
        CacheStatus::Miss
    } else {
        CacheStatus::Disabled
    };
    let give_up = |error: TaskError| async move {
        if let Some(c) = &job.cache {
            // Released, not failed: whoever needs the key next runs it at once.
            let _ = catalog.release(&c.lease).await;
        }
        JobReport {
            output: Err(error),
            status: uncached,
            attempts: 0,
            cache_error: None,
        }
    };
    if let Some(run) = &job.run
        && cx.cancels.is_cancelled(run)
    {
        return Ran::Done(give_up(TaskError::Cancelled { run: run.clone() }).await);
    }
    let Some(task) = cx.registry.get(&job.task) else {
        let error = TaskError::UnknownTask {
            name: job.task.clone(),
        };
        if let Some(c) = &job.cache {
            let _ = catalog.fail(&c.lease, &error.to_string()).await;
        }
        return Ran::Done(JobReport {
            output: Err(error),
            status: uncached,
            attempts: 0,
            cache_error: None,
        });
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
    // A cancelled run's body gets the grace period to finish, then is dropped at its next
    // await point.
    let cancelled = async {
        match &job.run {
            Some(run) => {
                cx.cancels.cancelled(run).await;
                tokio::time::sleep(cx.cancel_grace).await;
            }
            None => std::future::pending().await,
        }
    };
    let body = async {
        // Biased (here and in every `select!` of the engine): which branch wins when both are
        // ready must not depend on tokio's random choice, or a simulated seed would not replay.
        // A body that finished as its run was cancelled keeps its outcome.
        tokio::select! {
            biased;
            outcome = attempts_loop => Some(outcome),
            () = cancelled => None,
        }
    };
    // The lease is kept alive by its holder alone: the scheduler that dispatched the job beats
    // it from dispatch to report, wherever the job runs. A worker never beats a lease.
    let outcome = body.await;
    let Some(produced) = outcome else {
        let run = job.run.clone().unwrap_or_default();
        tracing::info!(task = %job.task, %run, "task aborted: its run was cancelled");
        let mut report = give_up(TaskError::Cancelled { run }).await;
        report.attempts = attempts;
        return Ran::Done(report);
    };
    let (outcome, blobs) = match produced {
        Ok(p) => (Ok(p.output), p.blobs),
        Err(e) => (Err(e), Vec::new()),
    };
    if job.cache.is_none() {
        return Ran::Done(JobReport {
            output: outcome,
            status: CacheStatus::Disabled,
            attempts,
            cache_error: None,
        });
    }
    Ran::Settle(Box::new(Settling {
        outcome,
        blobs,
        attempts,
        max_age: options.max_age,
        span: tracing::Span::none(),
    }))
}

/// Stores the outcome of a journaled job, output or error, in its run's journal. Errors of the
/// engine around the task (a lost worker, an unknown task) are not the task's outcome: they are
/// not journaled, so a replay runs the call again. If another attempt of the run journaled the
/// call first, its outcome is the answer (status `Replayed`).
async fn journal<S: Store>(
    catalog: &Catalog<S>,
    cache: &JobCache,
    outcome: Result<Vec<u8>, TaskError>,
    blobs: &[cairn_engine::blobs::BlobDigest],
) -> (Result<Vec<u8>, TaskError>, CacheStatus) {
    if let Err(e) = &outcome
        && !e.is_outcome()
    {
        let _ = catalog.release(&cache.lease).await;
        return (outcome, CacheStatus::Disabled);
    }
    let stored = cairn_engine::task::encode_outcome(&outcome);
    match catalog
        .settle(
            &cache.key,
            &cache.lease,
            Ok::<_, TaskError>(stored),
            None,
            blobs,
        )
        .await
    {
        (Ok(first), CacheStatus::Hit, _) => match cairn_engine::task::decode_outcome(&first) {
            Ok(theirs) => (theirs, CacheStatus::Replayed),
            Err(e) => (Err(e), CacheStatus::Disabled),
        },
        (_, CacheStatus::PutFailure, _) => {
            tracing::warn!(key = %cache.key.digest, "journal entry not stored: a replay of this run would run the call again");
            (outcome, CacheStatus::Disabled)
        }
        _ => (outcome, CacheStatus::Disabled),
    }
}
