//! Starting runs by name: the one path through which the API, the CLI and schedules start a
//! workflow. The input is checked against the workflow before anything is written; the run's
//! record is written before the workflow starts and completed when it ends (its calls are the
//! execution records the catalog writes meanwhile, so progress is visible from any node).

use crate::handle::SchedulerHandle;
use crate::registry::WorkflowRegistry;
use crate::workflow::{Ctx, RunOptions};
use cairn_engine::AnyStore;
use cairn_engine::catalog::Catalog;
use cairn_engine::runs::{MAX_RUN_JSON, RunRecord, RunStatus, Runs};
use serde_json::Value;
use std::sync::Arc;
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
    /// The input is larger than a run record keeps.
    #[error("input of workflow {workflow:?} is {size} bytes of JSON; at most {limit} are accepted")]
    InputTooLarge {
        /// The workflow.
        workflow: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store failed (or the run id is taken).
    #[error(transparent)]
    Store(#[from] cairn_engine::Error),
}

/// Starts runs of registered workflows on one node.
#[derive(Clone)]
pub struct Launcher {
    inner: Arc<Inner>,
}

struct Inner {
    workflows: WorkflowRegistry,
    scheduler: SchedulerHandle,
    catalog: Catalog<AnyStore>,
    runs: Runs<AnyStore>,
    node: String,
}

/// A started run: its first record, and the task that completes it.
pub struct Started {
    /// The record as written at the start.
    pub record: RunRecord,
    /// Resolves to the final record when the run ends.
    pub finished: tokio::task::JoinHandle<Result<RunRecord, cairn_engine::Error>>,
}

impl Launcher {
    /// A launcher running `workflows` through `scheduler`, recording runs in `runs` as `node`.
    pub fn new(
        workflows: WorkflowRegistry,
        scheduler: SchedulerHandle,
        catalog: Catalog<AnyStore>,
        runs: Runs<AnyStore>,
        node: impl Into<String>,
    ) -> Self {
        Launcher {
            inner: Arc::new(Inner {
                workflows,
                scheduler,
                catalog,
                runs,
                node: node.into(),
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

    /// Checks `request`, records the run and starts it. Returns once the run is recorded.
    pub async fn submit(&self, request: SubmitRun) -> Result<Started, SubmitError> {
        let inner = &self.inner;
        let workflow = inner
            .workflows
            .get(&request.workflow)
            .ok_or_else(|| SubmitError::UnknownWorkflow {
                name: request.workflow.clone(),
            })?
            .clone();
        let input_json = request.input.to_string();
        if input_json.len() > MAX_RUN_JSON {
            return Err(SubmitError::InputTooLarge {
                workflow: request.workflow,
                size: input_json.len(),
                limit: MAX_RUN_JSON,
            });
        }
        workflow
            .check(&request.input)
            .map_err(|detail| SubmitError::BadInput {
                workflow: request.workflow.clone(),
                detail,
            })?;
        let ctx = Ctx::new(inner.scheduler.clone(), request.options.clone());
        let record = RunRecord {
            run_id: ctx.run_id().to_string(),
            workflow: request.workflow,
            project: request.options.project,
            domain: request.options.domain,
            overwrite_cache: request.options.overwrite_cache,
            input: input_json,
            status: RunStatus::Running,
            output: None,
            output_bytes: None,
            error: None,
            node: inner.node.clone(),
            schedule: request.schedule,
            started_at_ms: inner.runs.now_ms(),
            finished_at_ms: None,
        };
        inner.runs.start(&record).await?;
        let this = self.clone();
        let run_id = record.run_id.clone();
        let span = tracing::info_span!(
            "cairn.run",
            "cairn.run.id" = %record.run_id,
            "cairn.workflow" = %record.workflow,
            "cairn.project" = %record.project,
            "cairn.domain" = %record.domain,
            "cairn.node" = %inner.node,
            "cairn.schedule" = record.schedule.as_deref(),
            "cairn.run.status" = tracing::field::Empty,
        );
        let finished = tokio::spawn(async move {
            // A panicking workflow is a failed run, not a lost one.
            let body = workflow.run(ctx, request.input).instrument(span.clone());
            let outcome = match tokio::spawn(body).await {
                Ok(Ok(output)) => Ok(output.to_string()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(format!("workflow panicked: {e}")),
            };
            // The run's calls are stored before the run says it has ended, so a finished run
            // always lists all of them.
            if let Err(e) = this.inner.catalog.flush_records().await {
                tracing::warn!(run = %run_id, error = %e, "execution records of a run not stored yet");
            }
            let status = if outcome.is_ok() {
                "succeeded"
            } else {
                "failed"
            };
            span.record("cairn.run.status", status);
            // The run span ends here, before the record's last write.
            drop(span);
            this.inner.runs.finish(&run_id, outcome).await
        });
        Ok(Started { record, finished })
    }
}
