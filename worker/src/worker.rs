//! A worker actor: runs one job at a time and reports to its pool.
//!
//! Failure: a task's own panic is caught by [`crate::execute()`]; if the actor itself dies (it
//! is killed, or the engine panics around the task) its pool replaces it and settles its job.

use crate::execute::{Context, Ran, run};
use cairn_engine::AnyStore;
use cairn_engine::catalog::Catalog;
use cairn_engine::runs::Cancellations;
use cairn_engine::task::{Job, TaskRegistry};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;

/// The worker behaviour.
pub struct Worker;

/// What a worker is told.
pub enum WorkerMsg {
    /// Run this job and report it to the pool.
    Run(Box<Job>),
}

// ractor's `cluster` feature (on for the whole workspace, for ractor_cluster) requires every
// message type to say whether it can cross nodes; this one never does.
impl ractor::Message for WorkerMsg {}

/// How a worker reports a job whose body is done: its index and what is left (the report, or
/// the outcome to commit). The pool gives it; a worker knows nothing else of its pool.
pub type Finished = Arc<dyn Fn(usize, Box<Ran>) -> Result<(), ActorProcessingErr> + Send + Sync>;

/// What a worker is started with.
pub struct WorkerArgs {
    /// Its index in the pool.
    pub id: usize,
    /// Reports a job whose body is done (this worker's index, what is left) to its pool.
    pub finished: Finished,
    /// The catalog to commit through.
    pub catalog: Catalog<AnyStore>,
    /// The tasks it can run.
    pub registry: Arc<TaskRegistry>,
    /// Cancelled runs (their jobs are aborted) and the grace a body gets first.
    pub cancels: Cancellations,
    /// How long a cancelled run's body may still run.
    pub cancel_grace: Duration,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        message: WorkerMsg,
        state: &mut WorkerArgs,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Run(job) => {
                let cx = Context {
                    catalog: &state.catalog,
                    registry: &state.registry,
                    cancels: &state.cancels,
                    cancel_grace: state.cancel_grace,
                };
                // Boxed: the execution's future is large (about 4.6 kB), and an actor's message
                // future is moved whole; a job should not cost copies of it.
                // The commit is not this worker's: the pool makes it on a task of its own, and
                // this worker takes the next job meanwhile.
                let ran = Box::pin(run(&cx, &job)).await;
                (state.finished)(state.id, Box::new(ran))?;
            }
        }
        Ok(())
    }
}
