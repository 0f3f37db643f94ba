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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// How a worker reports a job whose body is done: its index, what is left (the report, or
/// the outcome to commit), and the outcome's place among the commits handed over. The pool
/// gives it; a worker knows nothing else of its pool.
pub type Finished = Arc<
    dyn Fn(usize, Box<Ran>, Option<OwnedSemaphorePermit>) -> Result<(), ActorProcessingErr>
        + Send
        + Sync,
>;

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
    /// The places left among the commits the pool's workers hand over (none where commits do
    /// not wait: `Store::commits_wait`).
    pub handovers: Arc<Semaphore>,
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
                let ran = Box::pin(run(&cx, &job)).await;
                // A commit that waits for the store is handed over while places are left: the
                // pool makes it on a task of its own, and this worker takes the next job
                // meanwhile. Otherwise the worker commits, as one where commits are only CPU
                // work in this process always does.
                let (ran, permit) = match ran {
                    Ran::Settle(settling) => match state.handovers.clone().try_acquire_owned() {
                        Ok(permit) => (Ran::Settle(settling), Some(permit)),
                        Err(_) => (
                            Ran::Done(Box::pin(settling.settle(&state.catalog, &job)).await),
                            None,
                        ),
                    },
                    done => (done, None),
                };
                (state.finished)(state.id, Box::new(ran), permit)?;
            }
        }
        Ok(())
    }
}
