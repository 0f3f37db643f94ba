//! Supervision of a node's scheduler shards: each shard is spawned linked to one supervisor
//! actor, which replaces a shard that panics or is killed, so that a dead shard never leaves
//! every call that hashes to it failing until the node restarts.
//!
//! What a dead shard had in flight is not replayed: its callers are answered with an error
//! naming the failure (the reply port dies with the shard). Its leases are left to their TTL
//! (a job already dispatched still commits or fails its lease from the worker), so no key stays
//! blocked.

use crate::actor::{Scheduler, SchedulerArgs, SchedulerMsg};
use parking_lot::RwLock;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The shards, as callers see them: replaced in place when one is restarted.
pub(crate) type Shards = Arc<RwLock<Vec<ActorRef<SchedulerMsg>>>>;

/// What the supervisor and the handle share.
#[derive(Clone)]
pub(crate) struct Shared {
    pub shards: Shards,
    /// Shards restarted so far.
    pub restarts: Arc<AtomicU64>,
    /// Set before an orderly stop: shards that stop then are not replaced.
    pub stopping: Arc<AtomicBool>,
}

/// The supervisor behaviour.
pub(crate) struct Supervisor;

/// What the supervisor starts with.
pub(crate) struct SupervisorArgs {
    pub shards: usize,
    pub args: SchedulerArgs,
    pub shared: Shared,
}

pub(crate) struct SupervisorState {
    args: SchedulerArgs,
    shared: Shared,
}

impl Actor for Supervisor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        a: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut refs = Vec::with_capacity(a.shards.max(1));
        for _ in 0..a.shards.max(1) {
            let (r, _) =
                Actor::spawn_linked(None, Scheduler, a.args.clone(), myself.get_cell()).await?;
            refs.push(r);
        }
        *a.shared.shards.write() = refs;
        Ok(SupervisorState {
            args: a.args,
            shared: a.shared,
        })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why)) = cairn_worker::death(event) else {
            return Ok(());
        };
        if state.shared.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(index) = state
            .shared
            .shards
            .read()
            .iter()
            .position(|s| s.get_id() == cell.get_id())
        else {
            return Ok(());
        };
        let (replacement, _) =
            Actor::spawn_linked(None, Scheduler, state.args.clone(), myself.get_cell()).await?;
        state.shared.shards.write()[index] = replacement;
        state.shared.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            shard = index,
            reason = %why,
            "scheduler shard died; restarted (its calls in flight were answered with an error)"
        );
        Ok(())
    }
}
