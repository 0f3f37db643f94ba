//! The handle callers use to submit calls, sharded over several scheduler actors by cache key
//! (identical calls always meet in the same shard, so single flight holds).

use crate::actor::{CallRequest, CallResult, Scheduler, SchedulerArgs, SchedulerMsg};
use cairn_engine::AnyStore;
use cairn_engine::catalog::{CacheStatus, Catalog};
use cairn_engine::task::TaskError;
use cairn_worker::Dispatch;
use ractor::{Actor, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// A cheap, cloneable handle on a node's schedulers.
#[derive(Clone)]
pub struct SchedulerHandle {
    shards: Arc<Vec<ActorRef<SchedulerMsg>>>,
    next: Arc<AtomicUsize>,
    /// For the hit path, which reads entries on the caller's task (no actor).
    catalog: Catalog<AnyStore>,
}

impl SchedulerHandle {
    /// Starts `shards` scheduler actors.
    pub async fn start(
        owner: &str,
        catalog: Catalog<AnyStore>,
        workers: Arc<dyn Dispatch>,
        shards: usize,
    ) -> Result<Self, ractor::SpawnErr> {
        let mut refs = Vec::with_capacity(shards.max(1));
        for _ in 0..shards.max(1) {
            let args = SchedulerArgs {
                owner: owner.to_string(),
                catalog: catalog.clone(),
                workers: workers.clone(),
            };
            let (r, _) = Actor::spawn(None, Scheduler, args).await?;
            refs.push(r);
        }
        Ok(SchedulerHandle {
            shards: Arc::new(refs),
            next: Arc::new(AtomicUsize::new(0)),
            catalog,
        })
    }

    /// The catalog the schedulers resolve against.
    pub fn catalog(&self) -> &Catalog<AnyStore> {
        &self.catalog
    }

    /// Submits a call and waits for its result.
    pub async fn call(&self, request: CallRequest) -> CallResult {
        let shard = match &request.key {
            Some(key) => (key.digest.0 % self.shards.len() as u128) as usize,
            None => self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len(),
        };
        let (tx, rx) = oneshot::channel();
        let lost = |detail: &str| CallResult {
            output: Err(TaskError::Engine {
                detail: detail.to_string(),
            }),
            status: CacheStatus::LookupFailure,
            execution: String::new(),
            duration: Duration::ZERO,
            cache_error: Some(detail.to_string()),
        };
        if self.shards[shard]
            .send_message(SchedulerMsg::Call(
                Box::new(request),
                RpcReplyPort::from(tx),
                tracing::Span::current(),
            ))
            .is_err()
        {
            return lost("the scheduler has stopped");
        }
        rx.await
            .unwrap_or_else(|_| lost("the scheduler dropped the call"))
    }

    /// Stops every scheduler actor.
    pub fn stop(&self) {
        for s in self.shards.iter() {
            s.stop(None);
        }
    }
}
