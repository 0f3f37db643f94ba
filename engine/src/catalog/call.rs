//! The whole protocol for one call, in one process: resolve, wait behind another execution if
//! needed, run, heartbeat while running, commit or fail, and record the call. The actor runtime
//! splits the same steps between scheduler and worker actors.

use super::records::{CacheStatus, ExecutionRecord};
use super::{Answer, CacheKey, Catalog, Lease, Resolution, ResolveRequest, new_execution_id};
use crate::error::Result;
use crate::store::Store;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// What a caller that waited does when the execution it waited for failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Run the task itself (it has the lease now).
    #[default]
    Run,
    /// Return the failed execution's error without running.
    Fail,
}

/// How to make one call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// This node's name, recorded as lease owner.
    pub owner: String,
    /// Whether the task is cacheable.
    pub cache: bool,
    /// Lease TTL; heartbeats go out every third of it.
    pub lease_ttl: Duration,
    /// The task's `max_age`.
    pub max_age: Option<Duration>,
    /// Re-execute and replace any stored entry.
    pub overwrite: bool,
    /// What to do after waiting for an execution that failed.
    pub on_failure: FailurePolicy,
    /// The run this call belongs to.
    pub run: Option<String>,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            owner: "local".into(),
            cache: true,
            lease_ttl: Duration::from_secs(30),
            max_age: None,
            overwrite: false,
            on_failure: FailurePolicy::Run,
            run: None,
        }
    }
}

/// The result of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutcome {
    /// The output bytes, or the task's error.
    pub output: std::result::Result<Vec<u8>, String>,
    /// How the cache answered.
    pub status: CacheStatus,
    /// This call's execution id.
    pub execution: String,
}

/// What a call did besides its result, for its execution record.
struct Trace {
    execution: String,
    started_ms: i64,
    started: Instant,
    wait_us: u64,
    waited_for: Option<String>,
}

impl<S: Store> Catalog<S> {
    /// Calls a task through the cache: `task` runs only if no output is stored for `key` and no
    /// other execution is computing it; concurrent identical calls wait for the one that runs.
    /// Errors of the task are returned in the outcome and never stored. `Err` is returned only
    /// when the store fails while waiting behind another execution.
    pub async fn call<F, Fut>(
        &self,
        key: &CacheKey,
        opts: &CallOptions,
        mut task: F,
    ) -> Result<CallOutcome>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<Vec<u8>, String>>,
    {
        let mut trace = Trace {
            execution: new_execution_id(),
            started_ms: self.now_ms(),
            started: Instant::now(),
            wait_us: 0,
            waited_for: None,
        };
        let (output, status) = if !opts.cache {
            (task().await, CacheStatus::Disabled)
        } else {
            let req = ResolveRequest {
                key,
                owner: &opts.owner,
                execution: &trace.execution,
                lease_ttl: opts.lease_ttl,
                max_age: opts.max_age,
                overwrite: opts.overwrite,
                takeover: None,
                trace: None,
            };
            let resolution = match self.resolve(&req).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, key = %key.digest, "cache lookup failed; running uncached");
                    let out = task().await;
                    return Ok(self
                        .finish(key, opts, trace, out, CacheStatus::LookupFailure)
                        .await);
                }
            };
            let answer = match resolution {
                Resolution::Hit(hit) => Answer::Hit(hit),
                Resolution::Acquired(lease) => Answer::Acquired(lease),
                Resolution::Held(held) => {
                    let waiting = Instant::now();
                    trace.waited_for = Some(held.execution.clone());
                    let answer = self.wait(&req, held).await?;
                    trace.wait_us = waiting.elapsed().as_micros() as u64;
                    answer
                }
            };
            match answer {
                Answer::Hit(hit) => {
                    let status = if trace.waited_for.is_some() {
                        CacheStatus::Waited
                    } else {
                        CacheStatus::Hit
                    };
                    (Ok(hit.output), status)
                }
                Answer::Acquired(lease) => {
                    if let (Some(error), true, FailurePolicy::Fail) = (
                        &lease.previous_failure,
                        trace.waited_for.is_some(),
                        opts.on_failure,
                    ) {
                        let error = error.clone();
                        self.release(&lease).await?;
                        (Err(error), CacheStatus::Miss)
                    } else {
                        self.run_holding(key, opts, &lease, &mut task).await
                    }
                }
            }
        };
        Ok(self.finish(key, opts, trace, output, status).await)
    }

    async fn run_holding<F, Fut>(
        &self,
        key: &CacheKey,
        opts: &CallOptions,
        lease: &Lease,
        task: &mut F,
    ) -> (std::result::Result<Vec<u8>, String>, CacheStatus)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<Vec<u8>, String>>,
    {
        let out = self.heartbeating(lease, task()).await;
        let (output, status, _) = self.settle(key, lease, out, opts.max_age).await;
        (output, status)
    }

    async fn finish(
        &self,
        key: &CacheKey,
        opts: &CallOptions,
        trace: Trace,
        output: std::result::Result<Vec<u8>, String>,
        status: CacheStatus,
    ) -> CallOutcome {
        let Trace {
            execution,
            started_ms,
            started,
            wait_us,
            waited_for,
        } = trace;
        self.record(ExecutionRecord {
            execution: execution.clone(),
            run: opts.run.as_deref().map(Into::into),
            project: key.project.as_str().into(),
            domain: key.domain.as_str().into(),
            task: key.task.as_str().into(),
            version: key.version.as_str().into(),
            key: opts.cache.then_some(key.digest),
            status,
            started_at_ms: started_ms,
            duration_us: started.elapsed().as_micros() as u64,
            wait_us,
            waited_for,
            error: output.as_ref().err().cloned(),
            seq: None,
            attempt: 0,
            executed: !matches!(status, CacheStatus::Hit | CacheStatus::Waited),
            cache_error: None,
        })
        .await;
        CallOutcome {
            output,
            status,
            execution,
        }
    }
}
