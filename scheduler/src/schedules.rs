//! Running schedules on a node: a loop that fires due ticks (exactly once across every node's
//! loop, see [`cairn_engine::schedule`]) and runs their workflows, and the registry of
//! workflows by name that schedules refer to.

use crate::handle::SchedulerHandle;
use crate::workflow::{Ctx, RunOptions};
use cairn_engine::AnyStore;
use cairn_engine::schedule::{Fire, Schedules};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What a scheduled run receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledInput {
    /// The tick it runs for (Unix ms): the kickoff time, for cron and fixed-rate schedules alike.
    pub kickoff_ms: i64,
    /// The schedule's fixed input (MessagePack).
    pub input: Vec<u8>,
    /// A backfill run.
    pub backfill: bool,
}

type WorkflowFn =
    Arc<dyn Fn(Ctx, ScheduledInput) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Workflows by name.
#[derive(Clone, Default)]
pub struct WorkflowRegistry {
    workflows: HashMap<String, WorkflowFn>,
}

impl WorkflowRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `workflow` as `name`.
    pub fn register<F, Fut>(&mut self, name: impl Into<String>, workflow: F) -> &mut Self
    where
        F: Fn(Ctx, ScheduledInput) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let workflow = Arc::new(workflow);
        self.workflows.insert(
            name.into(),
            Arc::new(move |ctx, input| Box::pin(workflow(ctx, input))),
        );
        self
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.workflows.contains_key(name)
    }
}

/// The schedule loop of one node.
pub struct ScheduleRunner {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScheduleRunner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScheduleRunner {
    /// Starts polling `schedules` as `instance` at least every `every` (and at each schedule's
    /// next fire time), running fired ticks' workflows through `scheduler`.
    pub fn start(
        schedules: Schedules<AnyStore>,
        workflows: WorkflowRegistry,
        scheduler: SchedulerHandle,
        instance: String,
        every: Duration,
    ) -> Self {
        let task = tokio::spawn(async move {
            let runner = Arc::new(Runner {
                schedules,
                workflows,
                scheduler,
                instance,
            });
            loop {
                match runner.schedules.poll(&runner.instance).await {
                    Ok(fires) => {
                        for fire in fires {
                            tokio::spawn(runner.clone().run(fire));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "schedule poll failed; retrying"),
                }
                // Wake at the next fire time, or after `every` at the latest (schedules registered
                // or resumed by other instances are picked up then).
                let wait = match runner.schedules.next_due_ms().await {
                    Ok(Some(due)) => {
                        let ms = u64::try_from(due - runner.schedules.now_ms()).unwrap_or(0);
                        Duration::from_millis(ms).clamp(Duration::from_millis(1), every)
                    }
                    _ => every,
                };
                tokio::time::sleep(wait).await;
            }
        });
        ScheduleRunner { task }
    }
}

struct Runner {
    schedules: Schedules<AnyStore>,
    workflows: WorkflowRegistry,
    scheduler: SchedulerHandle,
    instance: String,
}

impl Runner {
    /// Runs a fired tick's workflow, then a tick buffered behind it, if any.
    async fn run(self: Arc<Self>, first: Fire) {
        let mut next = Some(first);
        while let Some(fire) = next.take() {
            if fire.jitter_ms > 0 {
                tokio::time::sleep(Duration::from_millis(
                    rand::random::<u64>() % fire.jitter_ms,
                ))
                .await;
            }
            let outcome = match self.workflows.workflows.get(&fire.workflow) {
                None => Err(format!("unknown workflow {:?}", fire.workflow)),
                Some(workflow) => {
                    let options = RunOptions {
                        project: fire.project.clone(),
                        domain: fire.domain.clone(),
                        overwrite_cache: false,
                        run_id: Some(fire.run_id.clone()),
                    };
                    let ctx = Ctx::new(self.scheduler.clone(), options);
                    let input = ScheduledInput {
                        kickoff_ms: fire.tick_ms,
                        input: fire.input.clone(),
                        backfill: fire.backfill,
                    };
                    // A panicking workflow is a failed run, not a dead schedule loop.
                    match tokio::spawn(workflow(ctx, input)).await {
                        Ok(result) => result,
                        Err(e) => Err(format!("workflow panicked: {e}")),
                    }
                }
            };
            if let Err(e) = &outcome {
                tracing::warn!(schedule = %fire.schedule, tick = fire.tick_ms, error = %e, "scheduled run failed");
            }
            match self
                .schedules
                .finished(&fire, outcome, &self.instance)
                .await
            {
                Ok(buffered) => next = buffered,
                Err(e) => {
                    tracing::warn!(schedule = %fire.schedule, error = %e, "could not record the end of a scheduled run")
                }
            }
        }
    }
}
