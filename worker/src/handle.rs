//! The handle schedulers use to run jobs on a pool.

use crate::pool::{PoolArgs, PoolMsg, PoolOptions, PoolStatus};
use crate::report::ReportTo;
use crate::supervise::{PoolSupervisor, Shared, SupervisorArgs};
use cairn_engine::AnyStore;
use cairn_engine::catalog::Catalog;
use cairn_engine::task::{Job, JobReport, TaskRegistry};
use ractor::{Actor, ActorRef, RpcReplyPort};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A cheap, cloneable handle on a worker pool. The pool is supervised: one that dies is
/// replaced (see [`WorkerPoolHandle::restarts`]).
#[derive(Clone)]
pub struct WorkerPoolHandle {
    shared: Shared,
    supervisor: ActorRef<()>,
}

impl WorkerPoolHandle {
    /// Starts a pool of `concurrency` workers.
    pub async fn start(
        catalog: Catalog<AnyStore>,
        registry: Arc<TaskRegistry>,
        concurrency: usize,
    ) -> Result<Self, ractor::SpawnErr> {
        let options = PoolOptions {
            concurrency,
            ..PoolOptions::default()
        };
        Self::start_with(catalog, registry, options).await
    }

    /// Starts a pool with `options`.
    pub async fn start_with(
        catalog: Catalog<AnyStore>,
        registry: Arc<TaskRegistry>,
        options: PoolOptions,
    ) -> Result<Self, ractor::SpawnErr> {
        let shared = Shared::new();
        let (supervisor, _) = Actor::spawn(
            None,
            PoolSupervisor,
            SupervisorArgs {
                args: PoolArgs {
                    catalog,
                    registry,
                    options,
                },
                shared: shared.clone(),
            },
        )
        .await?;
        Ok(WorkerPoolHandle { shared, supervisor })
    }

    /// Pools restarted since the node started (a pool that panics or is killed is replaced;
    /// its queued and running jobs are reported lost).
    pub fn restarts(&self) -> u64 {
        self.shared
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Kills the pool actor (as a panic in it would), for tests of supervision.
    #[doc(hidden)]
    pub fn kill_pool(&self) {
        if let Some(pool) = self.shared.current() {
            pool.kill();
        }
    }

    /// Hands `job` to the pool; its report goes to `report`. Never blocks.
    pub fn submit(&self, job: Job, report: ReportTo) {
        // If the pool is gone the message (and `report` with it) is dropped, which reports the
        // job as lost.
        if let Some(pool) = self.shared.current() {
            let _ = pool.send_message(PoolMsg::Execute(Box::new(job), report));
        }
    }

    /// Runs `job` and returns its report. A pool that is gone reports [`cairn_engine::task::TaskError::WorkerLost`].
    pub async fn execute(&self, job: Job) -> JobReport {
        let cached = job.cache.is_some();
        let (tx, rx) = oneshot::channel();
        self.submit(job, ReportTo::new(cached, move |r| drop(tx.send(r))));
        rx.await
            .unwrap_or_else(|_| JobReport::lost(cached, "the worker pool stopped"))
    }

    /// The pool's current load.
    pub async fn status(&self) -> Option<PoolStatus> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .current()?
            .send_message(PoolMsg::Status(RpcReplyPort::from(tx)))
            .ok()?;
        rx.await.ok()
    }

    /// Stops the pool and its workers.
    pub fn stop(&self) {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(pool) = self.shared.current() {
            pool.stop(None);
        }
        self.supervisor.stop(None);
    }
}
