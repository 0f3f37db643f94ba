//! The handle schedulers use to run jobs on a pool.

use crate::pool::{PoolArgs, PoolMsg, PoolStatus, WorkerPool};
use cairn_engine::AnyStore;
use cairn_engine::catalog::{CacheStatus, Catalog};
use cairn_engine::task::{Job, JobReport, TaskError, TaskRegistry};
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
        let (pool, _) = Actor::spawn(
            None,
            WorkerPool,
            PoolArgs {
                concurrency,
                catalog,
                registry,
            },
        )
        .await?;
        Ok(WorkerPoolHandle { pool })
    }

    /// Runs `job` and returns its report. A pool that is gone reports [`TaskError::WorkerLost`].
    pub async fn execute(&self, job: Job) -> JobReport {
        let status = if job.cache.is_some() {
            CacheStatus::Miss
        } else {
            CacheStatus::Disabled
        };
        let (tx, rx) = oneshot::channel();
        let lost = |detail: &str| JobReport {
            output: Err(TaskError::WorkerLost {
                detail: detail.to_string(),
            }),
            status,
            attempts: 0,
        };
        if self
            .pool
            .send_message(PoolMsg::Execute(Box::new(job), RpcReplyPort::from(tx)))
            .is_err()
        {
            return lost("the worker pool has stopped");
        }
        rx.await
            .unwrap_or_else(|_| lost("the worker pool dropped the job"))
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
