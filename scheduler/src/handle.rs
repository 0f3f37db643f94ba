//! The handle callers use to submit calls, sharded over several scheduler actors by cache key
//! (identical calls always meet in the same shard, so single flight holds).

use crate::actor::{CallRequest, CallResult, SchedulerArgs, SchedulerMsg};
use crate::supervise::{Shared, Supervisor, SupervisorArgs};
use cairn_engine::AnyStore;
use cairn_engine::catalog::{CacheStatus, Catalog};
use cairn_engine::task::TaskError;
use cairn_worker::Dispatch;
use ractor::{Actor, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

/// A cheap, cloneable handle on a node's schedulers. The shards are supervised: one that dies
/// is replaced (see [`SchedulerHandle::restarts`]).
#[derive(Clone)]
pub struct SchedulerHandle {
    shared: Shared,
    supervisor: ActorRef<()>,
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
        let shared = Shared {
            shards: Arc::default(),
            restarts: Arc::new(AtomicU64::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        let args = SupervisorArgs {
            shards,
            args: SchedulerArgs {
                owner: owner.to_string(),
                catalog: catalog.clone(),
                workers,
            },
            shared: shared.clone(),
        };
        let (supervisor, _) = Actor::spawn(None, Supervisor, args).await?;
        Ok(SchedulerHandle {
            shared,
            supervisor,
            next: Arc::new(AtomicUsize::new(0)),
            catalog,
        })
    }

    /// Scheduler shards restarted since the node started (a shard that panics or is killed is
    /// replaced; its calls in flight are answered with an error).
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.shared.shards.read().len()
    }

    /// Kills shard `index` (as a panic in it would), for tests of supervision.
    #[doc(hidden)]
    pub fn kill_shard(&self, index: usize) {
        if let Some(shard) = self.shared.shards.read().get(index) {
            shard.kill();
        }
    }

    /// The catalog the schedulers resolve against.
    pub fn catalog(&self) -> &Catalog<AnyStore> {
        &self.catalog
    }

    /// Submits a call and waits for its result.
    pub async fn call(&self, request: CallRequest) -> CallResult {
        let shard = {
            let shards = self.shared.shards.read();
            let n = shards.len().max(1);
            let index = match &request.key {
                Some(key) => (key.digest.0 % n as u128) as usize,
                None => self.next.fetch_add(1, Ordering::Relaxed) % n,
            };
            shards.get(index).cloned()
        };
        let Some(shard) = shard else {
            return CallResult {
                output: Err(TaskError::Engine {
                    detail: "the schedulers have stopped".into(),
                }),
                status: CacheStatus::LookupFailure,
                execution: String::new(),
                duration: Duration::ZERO,
                cache_error: Some("the schedulers have stopped".into()),
                waited_for: None,
            };
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
            waited_for: None,
        };
        if shard
            .send_message(SchedulerMsg::Call(
                Box::new(request),
                RpcReplyPort::from(tx),
                tracing::Span::current(),
            ))
            .is_err()
        {
            return lost("the scheduler has stopped");
        }
        rx.await.unwrap_or_else(|_| {
            lost("the scheduler shard handling the call failed while it was in flight (the shard is restarted)")
        })
    }

    /// Stops every scheduler actor.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for s in self.shared.shards.read().iter() {
            s.stop(None);
        }
        self.supervisor.stop(None);
    }
}
