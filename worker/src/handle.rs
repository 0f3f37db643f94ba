//! The handle schedulers use to run jobs on a pool.

use crate::pool::{PoolArgs, PoolMsg, PoolOptions, PoolStatus, WorkerPool};
use crate::report::ReportTo;
use cairn_engine::AnyStore;
use cairn_engine::catalog::Catalog;
use cairn_engine::task::{Job, JobReport, TaskRegistry};
use ractor::{Actor, ActorRef, RpcReplyPort};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A cheap, cloneable handle on a worker pool.
#[derive(Clone)]
pub struct WorkerPoolHandle {
    pool: ActorRef<PoolMsg>,
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
        let (pool, _) = Actor::spawn(
            None,
            WorkerPool,
            PoolArgs {
                catalog,
                registry,
                options,
            },
        )
        .await?;
        Ok(WorkerPoolHandle { pool })
    }

    /// Hands `job` to the pool; its report goes to `report`. Never blocks.
    pub fn submit(&self, job: Job, report: ReportTo) {
        // If the pool is gone the message (and `report` with it) is dropped, which reports the
        // job as lost.
        let _ = self
            .pool
            .send_message(PoolMsg::Execute(Box::new(job), report));
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
        self.pool
            .send_message(PoolMsg::Status(RpcReplyPort::from(tx)))
            .ok()?;
        rx.await.ok()
    }

    /// Stops the pool and its workers.
    pub fn stop(&self) {
        self.pool.stop(None);
    }
}
