//! Supervision of the worker pool: the pool actor is spawned linked to a supervisor, which
//! replaces a pool that panics or is killed, so that a dead pool never leaves every job of the
//! node failing until it restarts.
//!
//! What a dead pool had queued or running is not replayed: each job's [`ReportTo`] dies with
//! the pool's state and reports [`TaskError::WorkerLost`] to its scheduler, which answers the
//! callers with that error. The dead pool's workers are killed, and the commits it was making
//! for jobs whose bodies had finished are aborted (their reports, too, say the job was lost),
//! so none of them commits after its job was reported lost; the scheduler that dispatched each
//! of those jobs fails its lease
//! before its callers hear of the loss (see [`give_up_then`]), so the key's next caller runs
//! it at once.
//!
//! [`give_up_then`]: crate::give_up_then
//!
//! [`ReportTo`]: crate::ReportTo
//! [`TaskError::WorkerLost`]: cairn_engine::task::TaskError::WorkerLost

use crate::pool::{PoolArgs, PoolMsg, WorkerPool};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// What the supervisor and the handle share.
#[derive(Clone)]
pub(crate) struct Shared {
    /// The pool now: replaced in place when it is restarted.
    pub pool: Arc<RwLock<Option<ActorRef<PoolMsg>>>>,
    /// Pools restarted so far.
    pub restarts: Arc<AtomicU64>,
    /// Set before an orderly stop: a pool that stops then is not replaced.
    pub stopping: Arc<AtomicBool>,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            pool: Arc::default(),
            restarts: Arc::new(AtomicU64::new(0)),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The pool now, if it was started.
    pub(crate) fn current(&self) -> Option<ActorRef<PoolMsg>> {
        self.pool
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, pool: ActorRef<PoolMsg>) {
        *self
            .pool
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pool);
    }
}

/// The supervisor behaviour.
pub(crate) struct PoolSupervisor;

/// What the supervisor starts with.
pub(crate) struct SupervisorArgs {
    pub args: PoolArgs,
    pub shared: Shared,
}

pub(crate) struct SupervisorState {
    args: PoolArgs,
    shared: Shared,
}

impl Actor for PoolSupervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        a: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let (pool, _) =
            Actor::spawn_linked(None, WorkerPool, a.args.clone(), myself.get_cell()).await?;
        a.shared.set(pool);
        Ok(SupervisorState {
            args: a.args,
            shared: a.shared,
        })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why)) = crate::death::death(event) else {
            return Ok(());
        };
        if state.shared.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        if state.shared.current().map(|p| p.get_id()) != Some(cell.get_id()) {
            return Ok(());
        }
        // Its workers must not outlive it: their jobs were reported lost with its state.
        for worker in cell.get_children() {
            worker.kill();
        }
        let (replacement, _) =
            Actor::spawn_linked(None, WorkerPool, state.args.clone(), myself.get_cell()).await?;
        state.shared.set(replacement);
        state.shared.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            reason = %why,
            "worker pool died; restarted (its queued and running jobs were reported lost)"
        );
        Ok(())
    }
}
