//! Running schedules on a node: a loop that fires due ticks (exactly once across every node's
//! loop, see [`cairn_engine::schedule`]) and runs their workflows by name through the
//! [`Launcher`], so scheduled runs are recorded like any other.

use crate::launch::{Launcher, SubmitRun};
use crate::workflow::RunOptions;
use cairn_engine::AnyStore;
use cairn_engine::runs::RunStatus;
use cairn_engine::schedule::{Fire, Schedules};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// What a scheduled run receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScheduledInput {
    /// The tick it runs for (Unix ms): the kickoff time, for cron and fixed-rate schedules alike.
    pub kickoff_ms: i64,
    /// The schedule's fixed input (MessagePack).
    pub input: Vec<u8>,
    /// A backfill run.
    pub backfill: bool,
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
    /// next fire time), starting fired ticks' workflows through `launcher`.
    pub fn start(
        schedules: Schedules<AnyStore>,
        launcher: Launcher,
        instance: String,
        every: Duration,
    ) -> Self {
        let task = tokio::spawn(async move {
            let runner = Arc::new(Runner {
                schedules,
                launcher,
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
    launcher: Launcher,
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
            let outcome = self.start(&fire).await;
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

    /// Runs the workflow of `fire` to its end.
    async fn start(&self, fire: &Fire) -> Result<(), String> {
        let input = ScheduledInput {
            kickoff_ms: fire.tick_ms,
            input: fire.input.clone(),
            backfill: fire.backfill,
        };
        let request = SubmitRun {
            workflow: fire.workflow.clone(),
            input: serde_json::to_value(&input).map_err(|e| e.to_string())?,
            options: RunOptions {
                project: fire.project.clone(),
                domain: fire.domain.clone(),
                overwrite_cache: false,
                run_id: Some(fire.run_id.clone()),
            },
            schedule: Some(fire.schedule.clone()),
        };
        let started = self
            .launcher
            .submit(request)
            .await
            .map_err(|e| e.to_string())?;
        match started.finished.await {
            Ok(Ok(record)) if record.status == RunStatus::Succeeded => Ok(()),
            Ok(Ok(record)) => Err(record.error.unwrap_or_else(|| "failed".into())),
            Ok(Err(e)) => Err(format!("the run's end was not recorded: {e}")),
            Err(e) => Err(format!("the run was lost: {e}")),
        }
    }
}
