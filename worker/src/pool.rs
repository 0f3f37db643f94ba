//! The worker pool: a supervisor actor with one [`Worker`] child per unit of concurrency.
//!
//! Jobs wait in a FIFO queue while every worker is busy. When a worker dies (killed, or a panic
//! that escaped the task), the pool starts a replacement with the same index, then settles the
//! job it was running: a task with retries left (each death counts as one) is queued again (its lease is still held by the
//! job's execution, so nobody else runs it meanwhile); otherwise the lease is failed, so waiters
//! take over at once, and then the caller gets [`TaskError::WorkerLost`] (in that order: see
//! [`crate::give_up_then`]).

use crate::execute::Ran;
use crate::report::ReportTo;
use crate::worker::{Worker, WorkerArgs, WorkerMsg};
use cairn_engine::catalog::{CacheStatus, Catalog};
use cairn_engine::det::Map;
use cairn_engine::runs::Cancellations;
use cairn_engine::task::{Job, JobReport, TaskError, TaskRegistry};
use cairn_engine::{AnyStore, Store};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// The pool behaviour.
pub struct WorkerPool;

/// What the pool is told.
pub enum PoolMsg {
    /// Run a job on the next idle worker and reply with its report.
    Execute(Box<Job>, ReportTo),
    /// A worker ran its job's body (sent by workers).
    Finished {
        /// The worker's index.
        worker: usize,
        /// What is left: the report, or the outcome to commit.
        ran: Box<Ran>,
        /// The outcome's place among the commits handed over, if it is one.
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// Reply with the pool's current load.
    Status(RpcReplyPort<PoolStatus>),
}

// ractor's `cluster` feature (on for the whole workspace, for ractor_cluster) requires every
// message type to say whether it can cross nodes; this one never does.
impl ractor::Message for PoolMsg {}

/// A job being run.
#[derive(Debug, Clone)]
pub struct BusyWorker {
    /// The job's execution id.
    pub execution: String,
    /// The task.
    pub task: String,
    /// The worker actor running it.
    pub actor: ActorCell,
}

/// The pool's load.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    /// Workers in the pool (its concurrency).
    pub workers: usize,
    /// Jobs running.
    pub busy: Vec<BusyWorker>,
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// Workers replaced after dying.
    pub replaced: u64,
    /// Jobs finished since the pool started.
    pub finished: u64,
}

/// How a pool runs jobs.
#[derive(Clone, Default)]
pub struct PoolOptions {
    /// Number of workers (at least 1).
    pub concurrency: usize,
    /// Cancelled runs: their jobs are aborted (queued ones never start).
    pub cancels: Cancellations,
    /// How long a cancelled run's task body may still run before it is aborted.
    pub cancel_grace: Duration,
}

/// What the pool is started with.
#[derive(Clone)]
pub struct PoolArgs {
    /// The catalog workers commit through.
    pub catalog: Catalog<AnyStore>,
    /// The tasks workers can run.
    pub registry: Arc<TaskRegistry>,
    /// Concurrency and cancellation.
    pub options: PoolOptions,
}

/// Most commits a pool's workers hand over at once (on a store whose commits wait: see
/// [`cairn_engine::Store::commits_wait`]); a worker that finds none left commits its job
/// itself. Unbounded, a fan-out handed thousands of commits over, which cost its own
/// throughput; 256 kept the gain on PostgreSQL (benches/README.md).
const HANDOVERS: usize = 256;

/// A job, where its report goes, and how many workers died running it.
type Pending = (Box<Job>, ReportTo, u32);

/// The pool's state.
pub struct PoolState {
    args: PoolArgs,
    workers: Vec<ActorRef<WorkerMsg>>,
    ids: Map<ActorId, usize>,
    idle: Vec<usize>,
    busy: Map<usize, Pending>,
    queue: VecDeque<Pending>,
    replaced: u64,
    finished: u64,
    /// Outcomes being committed, each on a task of its own. They belong to the pool: a pool
    /// that dies aborts them (their reports then say the job was lost), as killing its workers
    /// did when workers committed, so no commit of a dead pool lands after its death.
    settling: tokio::task::JoinSet<()>,
    /// The places left among the commits handed over ([`HANDOVERS`]; none on a store whose
    /// commits do not wait).
    handovers: Arc<tokio::sync::Semaphore>,
}

impl WorkerPool {
    async fn start_worker(
        myself: &ActorRef<PoolMsg>,
        state: &mut PoolState,
        id: usize,
    ) -> Result<(), ActorProcessingErr> {
        let (worker, _) = Actor::spawn_linked(
            None,
            Worker,
            WorkerArgs {
                id,
                finished: {
                    let pool = myself.clone();
                    Arc::new(move |worker, ran, permit| {
                        pool.send_message(PoolMsg::Finished {
                            worker,
                            ran,
                            permit,
                        })?;
                        Ok(())
                    })
                },
                catalog: state.args.catalog.clone(),
                registry: state.args.registry.clone(),
                cancels: state.args.options.cancels.clone(),
                cancel_grace: state.args.options.cancel_grace,
                handovers: state.handovers.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        state.ids.insert(worker.get_id(), id);
        if id < state.workers.len() {
            state.workers[id] = worker;
        } else {
            state.workers.push(worker);
        }
        state.idle.push(id);
        Ok(())
    }

    /// Hands queued jobs to idle workers.
    fn dispatch(state: &mut PoolState) {
        while let Some(id) = state.idle.pop() {
            let Some((job, reply, deaths)) = state.queue.pop_front() else {
                state.idle.push(id);
                return;
            };
            cairn_engine::telemetry::metrics::queue_changed(-1);
            match state.workers[id].send_message(WorkerMsg::Run(job.clone())) {
                Ok(()) => {
                    state.busy.insert(id, (job, reply, deaths));
                }
                // The worker is stopping; its supervision event will replace it.
                Err(_) => {
                    state.queue.push_front((job, reply, deaths));
                    cairn_engine::telemetry::metrics::queue_changed(1);
                }
            }
        }
    }
}

impl Actor for WorkerPool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PoolMsg>,
        args: PoolArgs,
    ) -> Result<PoolState, ActorProcessingErr> {
        let concurrency = args.options.concurrency.max(1);
        let handovers = if args.catalog.store().commits_wait() {
            HANDOVERS
        } else {
            0
        };
        let mut state = PoolState {
            args,
            workers: Vec::with_capacity(concurrency),
            ids: Map::default(),
            idle: Vec::with_capacity(concurrency),
            busy: Map::default(),
            queue: VecDeque::new(),
            replaced: 0,
            finished: 0,
            settling: tokio::task::JoinSet::new(),
            handovers: Arc::new(tokio::sync::Semaphore::new(handovers)),
        };
        for id in 0..concurrency {
            Self::start_worker(&myself, &mut state, id).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<PoolMsg>,
        message: PoolMsg,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PoolMsg::Execute(job, reply) => {
                state.queue.push_back((job, reply, 0));
                cairn_engine::telemetry::metrics::queue_changed(1);
                Self::dispatch(state);
            }
            PoolMsg::Finished {
                worker,
                ran,
                permit,
            } => {
                if let Some((job, reply, _)) = state.busy.remove(&worker) {
                    state.finished += 1;
                    match *ran {
                        Ran::Done(report) => reply.send(report),
                        // Committed on a task of the pool's, which holds the job's report: the
                        // worker is free for the next body while the commit waits for its
                        // group. (With the worker waiting, the pool's concurrency bounded the
                        // commits in flight, and so the size of group commits.)
                        Ran::Settle(settling) => {
                            let catalog = state.args.catalog.clone();
                            state.settling.spawn(async move {
                                let report = settling.settle(&catalog, &job).await;
                                drop(permit);
                                reply.send(report);
                            });
                        }
                    }
                }
                // Commits done since are forgotten.
                while state.settling.try_join_next().is_some() {}
                state.idle.push(worker);
                Self::dispatch(state);
            }
            PoolMsg::Status(reply) => {
                let busy = state
                    .busy
                    .iter()
                    .map(|(id, (job, _, _))| BusyWorker {
                        execution: job.execution.clone(),
                        task: job.task.clone(),
                        actor: state.workers[*id].get_cell(),
                    })
                    .collect();
                let _ = reply.send(PoolStatus {
                    workers: state.workers.len(),
                    busy,
                    queued: state.queue.len(),
                    replaced: state.replaced,
                    finished: state.finished,
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PoolMsg>,
        event: SupervisionEvent,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why)) = crate::death::death(event) else {
            return Ok(());
        };
        let Some(id) = state.ids.remove(&cell.get_id()) else {
            return Ok(());
        };
        tracing::warn!(worker = id, reason = %why, "worker died; replacing it");
        state.replaced += 1;
        state.idle.retain(|i| *i != id);
        if let Some((job, reply, deaths)) = state.busy.remove(&id) {
            let retries = state
                .args
                .registry
                .get(&job.task)
                .map_or(0, |t| t.spec().options.retries);
            if deaths < retries {
                state.queue.push_front((job, reply, deaths + 1));
                cairn_engine::telemetry::metrics::queue_changed(1);
            } else {
                let error = TaskError::WorkerLost {
                    detail: format!("worker {id} died: {why}"),
                };
                let report = |status| JobReport {
                    output: Err(error.clone()),
                    status,
                    attempts: 1,
                    cache_error: None,
                };
                match &job.cache {
                    // The caller hears of the loss once the lease is given up (see
                    // `give_up_then`).
                    Some(c) => {
                        let report = report(CacheStatus::Miss);
                        crate::give_up_then(
                            state.args.catalog.clone(),
                            c.lease.clone(),
                            error.to_string(),
                            move || reply.send(report),
                        );
                    }
                    None => reply.send(report(CacheStatus::Disabled)),
                }
            }
        }
        Self::start_worker(&myself, state, id).await?;
        Self::dispatch(state);
        Ok(())
    }
}
