//! Running schedules on a node: a loop that fires due ticks (exactly once across every node's
//! loop, see [`cairn_engine::schedule`]). Claiming a tick creates its run, owned by this node;
//! the loop then executes it through the [`Launcher`], like any other run. The run's end
//! records the tick's outcome (and may fire a tick buffered behind it); if this node dies
//! first, another node takes the run over.

use crate::launch::Launcher;
use cairn_engine::AnyStore;
use cairn_engine::schedule::{Fire, Schedules};
use std::sync::Arc;
use std::time::Duration;

pub use cairn_engine::schedule::ScheduledInput;

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
    /// Starts polling `schedules` at least every `every` (and at each schedule's next fire
    /// time), as the launcher's node incarnation, executing fired ticks' runs through it.
    pub fn start(schedules: Schedules<AnyStore>, launcher: Launcher, every: Duration) -> Self {
        let task = tokio::spawn(async move {
            let runner = Arc::new(Runner {
                schedules,
                launcher,
            });
            loop {
                match runner.schedules.poll(runner.launcher.me()).await {
                    Ok(fires) => {
                        for fire in fires {
                            runner.clone().run(fire);
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
}

impl Runner {
    /// Executes a fired tick's run, after the schedule's jitter.
    fn run(self: Arc<Self>, fire: Fire) {
        if fire.jitter_ms == 0 {
            drop(self.launcher.execute(fire.run));
            return;
        }
        tokio::spawn(async move {
            let delay = self.schedules.entropy().next_u64() % fire.jitter_ms;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            drop(self.launcher.execute(fire.run));
        });
    }
}
