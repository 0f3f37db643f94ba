//! Workflows: async functions that call tasks through a [`Ctx`], under one run (an id, a
//! project, a domain, and whether to overwrite the cache).

use crate::actor::CallRequest;
use crate::handle::SchedulerHandle;
use cairn_engine::catalog::CacheStatus;
use cairn_engine::task::{Task, TaskError};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How a run is made.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Project: cache entries are never shared across projects.
    pub project: String,
    /// Domain: never shared across domains either.
    pub domain: String,
    /// Re-execute every cacheable task and replace its entry.
    pub overwrite_cache: bool,
    /// The run id; a fresh one when `None`.
    pub run_id: Option<String>,
}

impl RunOptions {
    /// A run in `project`/`domain`.
    pub fn new(project: impl Into<String>, domain: impl Into<String>) -> Self {
        RunOptions {
            project: project.into(),
            domain: domain.into(),
            overwrite_cache: false,
            run_id: None,
        }
    }

    /// With `overwrite_cache`.
    pub fn overwrite_cache(mut self, yes: bool) -> Self {
        self.overwrite_cache = yes;
        self
    }
}

/// Why a call gave no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The task failed (after its retries), panicked, timed out, or could not run.
    #[error("task {task}: {error}")]
    Task {
        /// The task.
        task: String,
        /// What happened.
        error: TaskError,
    },
    /// The input could not be prepared (encoded, or turned into a cache key).
    #[error("task {task}: invalid input: {detail}")]
    Input {
        /// The task.
        task: String,
        /// What is wrong.
        detail: String,
    },
    /// The output did not decode as the task's output type.
    #[error("task {task}: output does not decode: {detail}")]
    Output {
        /// The task.
        task: String,
        /// The decoding error.
        detail: String,
    },
}

/// One call of a run, as the run saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    /// Task name.
    pub task: Arc<str>,
    /// The call's execution id.
    pub execution: String,
    /// How the cache answered.
    pub status: CacheStatus,
    /// From submission to answer.
    pub duration: Duration,
    /// The error, if it failed.
    pub error: Option<String>,
}

struct Inner {
    scheduler: SchedulerHandle,
    options: RunOptions,
    run_id: Arc<str>,
    project: Arc<str>,
    domain: Arc<str>,
    calls: Mutex<Vec<CallSummary>>,
}

/// The context of one run; cheap to clone into concurrent branches of a workflow.
#[derive(Clone)]
pub struct Ctx {
    inner: Arc<Inner>,
}

impl Ctx {
    /// A context for a new run.
    pub fn new(scheduler: SchedulerHandle, options: RunOptions) -> Ctx {
        let run_id: Arc<str> = options
            .run_id
            .clone()
            .unwrap_or_else(|| format!("run-{}", cairn_engine::catalog::new_execution_id()))
            .into();
        Ctx {
            inner: Arc::new(Inner {
                scheduler,
                project: options.project.as_str().into(),
                domain: options.domain.as_str().into(),
                options,
                run_id,
                calls: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// The run's options.
    pub fn options(&self) -> &RunOptions {
        &self.inner.options
    }

    /// Every call made so far, in completion order.
    pub fn calls(&self) -> Vec<CallSummary> {
        self.inner.calls.lock().clone()
    }

    /// Calls `task` with `input`: from the cache when its key has an entry, otherwise on a worker
    /// (once, however many identical calls are made at the same time).
    pub async fn call<T: Task>(&self, task: T, input: T::Input) -> Result<T::Output, CallError> {
        let spec = task.spec();
        let inner = &*self.inner;
        let input_error = |detail: String| CallError::Input {
            task: spec.name().to_string(),
            detail,
        };
        let key = if spec.options.cache {
            let inputs = task
                .key_inputs(&input)
                .map_err(|e| input_error(e.to_string()))?;
            Some(
                spec.cache_key(&inner.project, &inner.domain, inputs)
                    .map_err(|e| input_error(e.to_string()))?,
            )
        } else {
            None
        };
        let encoded = rmp_serde::to_vec_named(&input).map_err(|e| input_error(e.to_string()))?;
        let span = tracing::info_span!(
            "cairn.call",
            "cairn.task" = spec.name(),
            "cairn.run.id" = &*inner.run_id,
            "cairn.project" = &*inner.project,
            "cairn.domain" = &*inner.domain,
            "cairn.cache.key" = key.as_ref().map(|k| tracing::field::display(k.digest)),
            "cairn.execution" = tracing::field::Empty,
            "cairn.cache.status" = tracing::field::Empty,
        );
        let result = inner
            .scheduler
            .call(CallRequest {
                task: spec.shared_name().clone(),
                input: encoded,
                key,
                overwrite: inner.options.overwrite_cache,
                project: inner.project.clone(),
                domain: inner.domain.clone(),
                version: spec.shared_version().clone(),
                run: Some(inner.run_id.clone()),
                lease_ttl: spec.options.lease_ttl,
                max_age: spec.options.max_age,
                fail_fast: spec.options.retries == 0,
            })
            .instrument(span)
            .await;
        inner.calls.lock().push(CallSummary {
            task: spec.shared_name().clone(),
            execution: result.execution,
            status: result.status,
            duration: result.duration,
            error: result.output.as_ref().err().map(ToString::to_string),
        });
        let bytes = result.output.map_err(|error| CallError::Task {
            task: spec.name().to_string(),
            error,
        })?;
        rmp_serde::from_slice(&bytes).map_err(|e| CallError::Output {
            task: spec.name().to_string(),
            detail: e.to_string(),
        })
    }
}
