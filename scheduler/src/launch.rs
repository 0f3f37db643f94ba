//! Starting, resuming, ending and cancelling runs by name: the one path through which the API,
//! the CLI and schedules run workflows.
//!
//! A run is created in the store owned by this node's incarnation, then *executed*: its
//! workflow runs in a task of its own with a durable [`Ctx`]. Execution is the same for a new
//! run, a scheduled tick and a run taken over from a node that is gone (a replay: cached calls
//! hit, journaled calls return their outcome, and the calls are checked against the earlier
//! attempt's). The end is written with retry until it lands; an attempt whose run was taken
//! over (a higher generation) can never end it.

use crate::handle::SchedulerHandle;
use crate::registry::WorkflowRegistry;
use crate::workflow::{CallLimits, Ctx, Durability, PastCall, RunOptions};
use cairn_engine::AnyStore;
use cairn_engine::catalog::Catalog;
use cairn_engine::det::Map;
use cairn_engine::nodes::Incarnation;
use cairn_engine::runs::{
    Cancellations, Created, Ended, Idempotency, NewRun, RunOwner, RunRecord, Runs,
};
use cairn_engine::telemetry::semconv as sc;
use parking_lot::Mutex;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// A run to start.
#[derive(Debug, Clone)]
pub struct SubmitRun {
    /// The registered workflow.
    pub workflow: String,
    /// Its input.
    pub input: Value,
    /// Project, domain, overwrite, and the run id (fresh when `None`).
    pub options: RunOptions,
    /// The schedule firing it, if any.
    pub schedule: Option<String>,
    /// The client's idempotency key: the same key returns the same run.
    pub idempotency_key: Option<String>,
}

/// Why a run was not started. Nothing is written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// No workflow of this name is registered on the node.
    #[error("unknown workflow {name:?}")]
    UnknownWorkflow {
        /// The name asked for.
        name: String,
    },
    /// The input does not decode as the workflow's input type.
    #[error("input of workflow {workflow:?} does not match its signature: {detail}")]
    BadInput {
        /// The workflow.
        workflow: String,
        /// What does not match.
        detail: String,
    },
    /// The input is larger than the run table accepts.
    #[error("input of workflow {workflow:?} is {size} bytes of JSON; at most {limit} are accepted")]
    InputTooLarge {
        /// The workflow.
        workflow: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The idempotency key was used before with a different request.
    #[error("idempotency key {key:?} was already used for run {run_id} with a different request")]
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The run it names.
        run_id: String,
    },
    /// The store failed (or the run id is taken).
    #[error(transparent)]
    Store(#[from] cairn_engine::Error),
}

/// A run in this process.
struct LocalRun {
    generation: u64,
    ctx: Ctx,
    abort: Option<tokio::task::AbortHandle>,
}

struct Inner {
    workflows: WorkflowRegistry,
    scheduler: SchedulerHandle,
    catalog: Catalog<AnyStore>,
    runs: Runs<AnyStore>,
    me: Incarnation,
    cancels: Cancellations,
    limits: CallLimits,
    local: Mutex<Map<String, LocalRun>>,
}

/// Who a launcher runs runs as, and how.
pub struct LaunchConfig {
    /// This node's incarnation: the owner of the runs it creates and takes over.
    pub me: Incarnation,
    /// Cancelled runs, shared with the node's workers.
    pub cancels: Cancellations,
    /// Bounds on each run's calls.
    pub limits: CallLimits,
}

/// Starts, resumes, ends and cancels runs of registered workflows on one node.
#[derive(Clone)]
pub struct Launcher {
    inner: Arc<Inner>,
}

/// A started run: its record, and the task that completes it.
pub struct Started {
    /// The record as written at the start (or as found, for an idempotent repeat).
    pub record: RunRecord,
    /// The idempotency key named a run that already existed: nothing new was started.
    pub existing: bool,
    /// Resolves to the final record when the run ends.
    pub finished: tokio::task::JoinHandle<Result<RunRecord, cairn_engine::Error>>,
}

/// How an attempt's end was settled.
fn describe(ended: &Ended) -> &'static str {
    match ended {
        Ended::Ended { .. } => "ended",
        Ended::AlreadyEnded(_) => "had already ended",
        Ended::Fenced(_) => "was taken over",
    }
}

impl Launcher {
    /// A launcher running `workflows` through `scheduler`, recording runs in `runs` as
    /// `config.me`; `config.cancels` is told about cancelled runs.
    pub fn new(
        workflows: WorkflowRegistry,
        scheduler: SchedulerHandle,
        catalog: Catalog<AnyStore>,
        runs: Runs<AnyStore>,
        config: LaunchConfig,
    ) -> Self {
        Launcher {
            inner: Arc::new(Inner {
                workflows,
                scheduler,
                catalog,
                runs,
                me: config.me,
                cancels: config.cancels,
                limits: config.limits,
                local: Mutex::new(Map::default()),
            }),
        }
    }

    /// The registered workflows.
    pub fn workflows(&self) -> &WorkflowRegistry {
        &self.inner.workflows
    }

    /// The run table.
    pub fn runs(&self) -> &Runs<AnyStore> {
        &self.inner.runs
    }

    /// This node's incarnation.
    pub fn me(&self) -> &Incarnation {
        &self.inner.me
    }

    /// Checks `request`, records the run and starts it. Returns once the run is recorded.
    pub async fn submit(&self, request: SubmitRun) -> Result<Started, SubmitError> {
        let inner = &self.inner;
        let options = &request.options;
        cairn_engine::names::check_all(&[
            ("workflow", &request.workflow),
            ("project", &options.project),
            ("domain", &options.domain),
        ])?;
        if let Some(id) = &options.run_id {
            cairn_engine::names::check("run id", id)?;
        }
        let workflow =
            inner
                .workflows
                .get(&request.workflow)
                .ok_or_else(|| SubmitError::UnknownWorkflow {
                    name: request.workflow.clone(),
                })?;
        let input_json = request.input.to_string();
        let limit = inner.runs.limits().max_input_bytes;
        if input_json.len() > limit {
            return Err(SubmitError::InputTooLarge {
                workflow: request.workflow,
                size: input_json.len(),
                limit,
            });
        }
        workflow
            .check(&request.input)
            .map_err(|detail| SubmitError::BadInput {
                workflow: request.workflow.clone(),
                detail,
            })?;
        let options = &request.options;
        let new = NewRun {
            run_id: options
                .run_id
                .clone()
                .unwrap_or_else(|| format!("run-{}", self.inner.catalog.new_execution_id())),
            workflow: request.workflow.clone(),
            project: options.project.clone(),
            domain: options.domain.clone(),
            overwrite_cache: options.overwrite_cache,
            input: input_json,
            schedule: request.schedule.clone(),
            tick: None,
        };
        let idempotency = request.idempotency_key.as_ref().map(|key| Idempotency {
            key: key.clone(),
            request: request_digest(&new),
        });
        // Marked local before it exists, so the keeper never adopts it as an orphan.
        self.mark_local(&new.run_id, 1);
        let created = inner
            .runs
            .create(&new, &inner.me, idempotency.as_ref())
            .await;
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                self.unmark_local(&new.run_id, 1);
                return Err(e.into());
            }
        };
        match created {
            Created::New(record) => {
                let finished = self.execute(record.clone());
                Ok(Started {
                    record,
                    existing: false,
                    finished,
                })
            }
            Created::Existing(record) => {
                self.unmark_local(&new.run_id, 1);
                let finished = tokio::spawn(self.clone().wait_for_end(record.run_id.clone()));
                Ok(Started {
                    record,
                    existing: true,
                    finished,
                })
            }
            Created::Conflict { run_id } => {
                self.unmark_local(&new.run_id, 1);
                Err(SubmitError::IdempotencyConflict {
                    key: request.idempotency_key.unwrap_or_default(),
                    run_id,
                })
            }
        }
    }

    /// Waits until run `run_id` has ended (on any node) and returns its final record.
    pub async fn wait_for_end(self, run_id: String) -> Result<RunRecord, cairn_engine::Error> {
        let store = self.inner.runs.store().clone();
        let key = cairn_engine::keys::run(&run_id);
        loop {
            let mut changed = cairn_engine::Store::subscribe(&store, &key).await?;
            let record = self.inner.runs.get(&run_id).await?.ok_or_else(|| {
                cairn_engine::Error::RunNotFound {
                    run: run_id.to_string(),
                }
            })?;
            if record.status.is_final() {
                return Ok(record);
            }
            changed.changed().await?;
        }
    }

    fn mark_local(&self, run_id: &str, generation: u64) {
        self.inner.local.lock().insert(
            run_id.to_string(),
            LocalRun {
                generation,
                ctx: Ctx::new(self.inner.scheduler.clone(), RunOptions::new("", "")),
                abort: None,
            },
        );
    }

    fn unmark_local(&self, run_id: &str, generation: u64) {
        let mut local = self.inner.local.lock();
        if local
            .get(run_id)
            .is_some_and(|l| l.generation == generation)
        {
            local.remove(run_id);
        }
    }

    /// Whether this process runs `run_id` (or is about to).
    pub fn is_local(&self, run_id: &str) -> bool {
        self.inner.local.lock().contains_key(run_id)
    }

    /// The runs this process runs, with their generations.
    pub fn local_runs(&self) -> Vec<(String, u64)> {
        self.inner
            .local
            .lock()
            .iter()
            .map(|(id, l)| (id.clone(), l.generation))
            .collect()
    }

    /// Runs an attempt of `record`, which this node owns: the workflow from the start, then
    /// the run's end, written until it lands. A run the schedule buffered behind it is started
    /// when it ends.
    pub fn execute(
        &self,
        record: RunRecord,
    ) -> tokio::task::JoinHandle<Result<RunRecord, cairn_engine::Error>> {
        let this = self.clone();
        let generation = record.generation;
        let run_id = record.run_id.clone();
        // Registered before the task starts, so a cancellation arriving now is not missed.
        let ctx = this.attempt_ctx(&record, Durability::default());
        this.inner.local.lock().insert(
            run_id.clone(),
            LocalRun {
                generation,
                ctx: ctx.clone(),
                abort: None,
            },
        );
        tokio::spawn(async move {
            let ended = this.run_attempt(record, ctx).await;
            this.unmark_local(&run_id, generation);
            let record = match ended {
                Ended::Ended { record, next } => {
                    if let Some(next) = next {
                        drop(this.execute(*next));
                    }
                    record
                }
                Ended::AlreadyEnded(record) | Ended::Fenced(record) => record,
            };
            Ok(record)
        })
    }

    fn attempt_ctx(&self, record: &RunRecord, how: Durability) -> Ctx {
        let options = RunOptions {
            project: record.project.clone(),
            domain: record.domain.clone(),
            overwrite_cache: record.overwrite_cache,
            run_id: Some(record.run_id.clone()),
        };
        let how = Durability {
            attempt: record.attempts.len().max(1) as u32,
            limits: self.inner.limits,
            ..how
        };
        Ctx::durable(self.inner.scheduler.clone(), options, how)
    }

    /// One attempt: the workflow, then its end. Never returns before the end has landed or the
    /// run is known to be ended or owned elsewhere.
    async fn run_attempt(&self, record: RunRecord, ctx: Ctx) -> Ended {
        let inner = &self.inner;
        let attempt = record.attempts.len().max(1) as u32;
        let owner = record.owner.clone().unwrap_or(RunOwner {
            node: inner.me.node.clone(),
            incarnation: inner.me.incarnation,
            generation: record.generation,
        });
        let span = tracing::info_span!(
            sc::SPAN_RUN,
            { sc::RUN_ID } = %record.run_id,
            { sc::WORKFLOW } = %record.workflow,
            { sc::PROJECT } = %record.project,
            { sc::DOMAIN } = %record.domain,
            { sc::NODE } = %inner.me.node,
            { sc::SCHEDULE } = record.schedule.as_deref(),
            // Signed: tracing hands unsigned integers to OpenTelemetry as strings.
            { sc::RUN_ATTEMPT } = i64::from(attempt),
            { sc::RUN_STATUS } = tracing::field::Empty,
        );
        let (mut record, mut ctx) = (record, ctx);
        let prepared = self.prepare(&mut record, &mut ctx, attempt, &span).await;
        let outcome = match prepared {
            Err(e) => Err(format!("the run could not be prepared: {e}")),
            Ok(()) => self.run_workflow(&record, ctx.clone(), span.clone()).await,
        };
        let outcome = match ctx.fatal_error() {
            Some(diverged) => Err(diverged.to_string()),
            None => outcome,
        };
        // The run's calls are stored before the run says it has ended, so a finished run
        // always lists all of them.
        if let Err(e) = inner.catalog.flush_records().await {
            tracing::warn!(run = %record.run_id, error = %e, "execution records of a run not stored yet");
        }
        span.record(
            sc::RUN_STATUS,
            if outcome.is_ok() {
                "succeeded"
            } else {
                "failed"
            },
        );
        drop(span);
        self.end(&record.run_id, &owner, outcome).await
    }

    /// Gets an attempt ready: a replay's context knows the earlier attempts' calls and links to
    /// their trace; a first attempt records its trace; a large input is read in full.
    async fn prepare(
        &self,
        record: &mut RunRecord,
        ctx: &mut Ctx,
        attempt: u32,
        span: &tracing::Span,
    ) -> Result<(), cairn_engine::Error> {
        let inner = &self.inner;
        if attempt > 1 {
            if let Some(previous) = &record.trace {
                cairn_engine::telemetry::propagate::add_link(span, previous);
            }
            let previous = self.past_calls(&record.run_id, attempt).await?;
            *ctx = self.attempt_ctx(
                record,
                Durability {
                    attempt,
                    previous,
                    ..Durability::default()
                },
            );
            if let Some(l) = inner.local.lock().get_mut(&record.run_id) {
                l.ctx = ctx.clone();
            }
        } else if let Some(tp) = cairn_engine::telemetry::propagate::traceparent(span)
            && let Err(e) = inner.runs.set_trace(&record.run_id, &tp).await
        {
            tracing::debug!(run = %record.run_id, error = %e, "trace of a run not recorded");
        }
        if record.input.text.is_none()
            && let Some(full) = inner.runs.get(&record.run_id).await?
        {
            *record = full;
        }
        Ok(())
    }

    /// Runs the workflow of `record` in its own task (a panic is a failed run, and a
    /// cancellation aborts it).
    async fn run_workflow(
        &self,
        record: &RunRecord,
        ctx: Ctx,
        span: tracing::Span,
    ) -> Result<String, String> {
        let Some(workflow) = self.inner.workflows.get(&record.workflow).cloned() else {
            return Err(format!(
                "workflow {:?} is not registered on node {}",
                record.workflow, self.inner.me.node
            ));
        };
        let input: Value = match record.input.text.as_deref().map(serde_json::from_str) {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(format!("the run's stored input is not JSON: {e}")),
            None => return Err("the run's input was not kept".into()),
        };
        let body = tokio::spawn(workflow.run(ctx, input).instrument(span));
        if let Some(l) = self.inner.local.lock().get_mut(&record.run_id) {
            l.abort = Some(body.abort_handle());
        }
        match body.await {
            Ok(Ok(output)) => Ok(output.to_string()),
            Ok(Err(e)) => Err(e),
            Err(e) if e.is_cancelled() => Err(format!("run {} was cancelled", record.run_id)),
            Err(e) => Err(format!("workflow panicked: {e}")),
        }
    }

    /// The calls earlier attempts of `run_id` made, by position (the latest attempt's where
    /// several made one).
    async fn past_calls(
        &self,
        run_id: &str,
        attempt: u32,
    ) -> Result<Map<u64, PastCall>, cairn_engine::Error> {
        let mut out: Map<u64, PastCall> = Map::default();
        for r in self.inner.catalog.run_executions(run_id).await? {
            let Some(seq) = r.seq else { continue };
            if r.attempt >= attempt {
                continue;
            }
            if out.get(&seq).is_none_or(|p| p.attempt < r.attempt) {
                out.insert(
                    seq,
                    PastCall {
                        task: r.task.to_string(),
                        key: r.key,
                        attempt: r.attempt,
                    },
                );
            }
        }
        Ok(out)
    }

    /// Writes the end of `run_id` as `owner`, retrying until it lands (every failed attempt is
    /// logged with the run id).
    async fn end(&self, run_id: &str, owner: &RunOwner, outcome: Result<String, String>) -> Ended {
        let mut backoff = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            match self.inner.runs.finish(run_id, owner, outcome.clone()).await {
                Ok(ended) => {
                    if failures > 0 || !matches!(ended, Ended::Ended { .. }) {
                        tracing::info!(run = %run_id, failures, "the run's end {}", describe(&ended));
                    }
                    return ended;
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(run = %run_id, attempt = failures, error = %e, "could not record the end of a run; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Cancels `run_id` (on whatever node runs it, or none): it ends as `cancelled` at once;
    /// its workflow makes no new call and its in-flight task bodies are aborted.
    pub async fn cancel(&self, run_id: &str, reason: &str) -> Result<Ended, cairn_engine::Error> {
        let ended = self
            .inner
            .runs
            .cancel(run_id, &self.inner.me, reason)
            .await?;
        if let Ended::Ended { next, .. } = &ended {
            self.cancelled(run_id);
            if let Some(next) = next {
                drop(self.execute((**next).clone()));
            }
        }
        Ok(ended)
    }

    /// Heard that `run_id` was cancelled: aborts its jobs on this node's workers and its
    /// workflow, if it runs here.
    pub fn cancelled(&self, run_id: &str) {
        self.inner.cancels.cancel(run_id);
        if let Some(l) = self.inner.local.lock().get(run_id) {
            l.ctx.cancel();
            if let Some(abort) = &l.abort {
                abort.abort();
            }
        }
    }

    /// Stops running `run_id` here (this node no longer owns it), without ending it.
    pub fn abandon(&self, run_id: &str, generation: u64) {
        let mut local = self.inner.local.lock();
        if let Some(l) = local.get(run_id)
            && l.generation == generation
        {
            l.ctx.cancel();
            if let Some(abort) = &l.abort {
                abort.abort();
            }
            local.remove(run_id);
        }
    }

    /// Stops every run of this process without ending them (the node shuts down, or another
    /// process started as the same node): their new owners resume them.
    pub fn abandon_all(&self) {
        let mut local = self.inner.local.lock();
        for (_, l) in local.drain() {
            l.ctx.cancel();
            if let Some(abort) = &l.abort {
                abort.abort();
            }
        }
    }

    /// Takes `run_id` over from `from`, a gone incarnation, and resumes it here. `None` when
    /// the run ended, another node took it first, or this node does not know its workflow.
    pub async fn take_over(
        &self,
        run_id: &str,
        from: &RunOwner,
        reason: &str,
    ) -> Result<Option<RunRecord>, cairn_engine::Error> {
        let Some(record) = self.inner.runs.get(run_id).await? else {
            return Ok(None);
        };
        if !self.inner.workflows.contains(&record.workflow) {
            return Ok(None);
        }
        let taken = self
            .inner
            .runs
            .take_over(run_id, from, &self.inner.me, reason)
            .await?;
        if let Some(record) = &taken {
            tracing::info!(run = %run_id, attempt = record.attempts.len(), %reason, "took a run over");
            drop(self.execute(record.clone()));
        }
        Ok(taken)
    }

    /// Resumes a run this incarnation owns but does not run (its start was interrupted).
    pub async fn adopt(&self, run_id: &str) -> Result<(), cairn_engine::Error> {
        if let Some(record) = self.inner.runs.get(run_id).await?
            && record.owner.as_ref().is_some_and(|o| {
                o.node == self.inner.me.node && o.incarnation == self.inner.me.incarnation
            })
            && !self.is_local(run_id)
        {
            drop(self.execute(record));
        }
        Ok(())
    }
}

/// What an idempotency key protects: the same key with another request is a conflict.
fn request_digest(new: &NewRun) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        new.workflow.as_bytes(),
        new.project.as_bytes(),
        new.domain.as_bytes(),
        new.input.as_bytes(),
        &[u8::from(new.overwrite_cache)],
    ] {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.digest128()
}
