//! The node agent: one actor per node, reachable from every other node. It reports the node's
//! load and, on worker nodes, runs jobs sent by remote schedulers on the local pool.
//!
//! Payloads cross the wire as MessagePack bytes decoded here, so a malformed message from a
//! peer is an error answer, never a panic.

use cairn_engine::catalog::CacheStatus;
use cairn_engine::task::{Job, JobReport, TaskError};
use cairn_worker::{ReportTo, WorkerPoolHandle};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Every node's agent is in this process group.
pub const NODES_GROUP: &str = "cairn.nodes";
/// Agents of worker nodes are also in this one.
pub const WORKERS_GROUP: &str = "cairn.workers";

/// What an agent answers. Variant names travel on the wire: never rename them.
#[derive(RactorClusterMessage)]
pub enum AgentMsg {
    /// Runs a job (MessagePack of `Job`) and replies with its report (MessagePack of
    /// `JobReport`) when it ends.
    #[rpc]
    Execute(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// Replies with the node's load (MessagePack of [`Load`]).
    #[rpc]
    Load(RpcReplyPort<Vec<u8>>),
}

/// A node's load, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// The node's name.
    pub name: String,
    /// Runs scheduled calls.
    pub scheduler: bool,
    /// Runs jobs.
    pub worker: bool,
    /// Worker concurrency.
    pub capacity: usize,
    /// Jobs running.
    pub busy: usize,
    /// Jobs queued.
    pub queued: usize,
    /// Jobs finished since the node started.
    pub executed: u64,
    /// The cluster addresses of the nodes it is linked to, so that every node can dial every
    /// other one (with TLS when the cluster uses it). Absent from older nodes' reports.
    #[serde(default)]
    pub peers: Vec<String>,
}

/// The agent's behaviour.
pub struct Agent;

/// What the agent starts with.
#[derive(Clone)]
pub struct AgentArgs {
    /// The node's name.
    pub name: String,
    /// Whether it runs scheduled calls.
    pub scheduler: bool,
    /// Whether it runs jobs (then it joins [`WORKERS_GROUP`]).
    pub worker: bool,
    /// The local pool.
    pub pool: WorkerPoolHandle,
    /// The cluster addresses of the nodes this one is linked to (kept by the cluster loop).
    pub peers: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data: encoding cannot fail.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

impl Actor for Agent {
    type Msg = AgentMsg;
    type State = AgentArgs;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentArgs, ActorProcessingErr> {
        ractor::pg::join(NODES_GROUP.into(), vec![myself.get_cell()]);
        if args.worker {
            ractor::pg::join(WORKERS_GROUP.into(), vec![myself.get_cell()]);
        }
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Execute(bytes, reply) => {
                let job: Job = match rmp_serde::from_slice(&bytes) {
                    Ok(job) => job,
                    Err(e) => {
                        let report = JobReport {
                            output: Err(TaskError::BadInput {
                                detail: format!("job from a remote scheduler: {e}"),
                            }),
                            status: CacheStatus::Disabled,
                            attempts: 0,
                            cache_error: None,
                        };
                        let _ = reply.send(encode(&report));
                        return Ok(());
                    }
                };
                let cached = job.cache.is_some();
                if !state.worker {
                    let report =
                        JobReport::lost(cached, format!("node {} is not a worker", state.name));
                    let _ = reply.send(encode(&report));
                    return Ok(());
                }
                // The pool reports when the job ends; the agent goes on at once.
                state.pool.submit(
                    job,
                    ReportTo::new(cached, move |report| {
                        let _ = reply.send(encode(&report));
                    }),
                );
            }
            AgentMsg::Load(reply) => {
                let pool = state.pool.clone();
                let (name, scheduler, worker) = (state.name.clone(), state.scheduler, state.worker);
                let peers = state.peers.lock().clone();
                tokio::spawn(async move {
                    let status = pool.status().await;
                    let load = Load {
                        name,
                        scheduler,
                        worker,
                        capacity: status.as_ref().map_or(0, |s| s.workers),
                        busy: status.as_ref().map_or(0, |s| s.busy.len()),
                        queued: status.as_ref().map_or(0, |s| s.queued),
                        executed: status.as_ref().map_or(0, |s| s.finished),
                        peers,
                    };
                    let _ = reply.send(encode(&load));
                });
            }
        }
        Ok(())
    }
}

/// The agent as the node sees it: replaced in place when its supervisor restarts it.
#[derive(Clone, Default)]
pub(crate) struct Supervised {
    /// The agent now.
    pub agent: Arc<parking_lot::Mutex<Option<ActorRef<AgentMsg>>>>,
    /// Agents restarted so far.
    pub restarts: Arc<AtomicU64>,
    /// Set before an orderly stop: an agent that stops then is not replaced.
    pub stopping: Arc<AtomicBool>,
}

/// Supervises the agent: an agent that panics or is killed is replaced by a new one, which
/// joins the process groups again, so remote schedulers find this node's workers again. Jobs
/// the dead agent had accepted still report: their reply ports travel with the jobs in the
/// pool, not in the agent.
pub(crate) struct AgentSupervisor;

impl Actor for AgentSupervisor {
    type Msg = ();
    type State = (AgentArgs, Supervised);
    type Arguments = (AgentArgs, Supervised);

    async fn pre_start(
        &self,
        myself: ActorRef<()>,
        (args, supervised): (AgentArgs, Supervised),
    ) -> Result<Self::State, ActorProcessingErr> {
        let (agent, _) = Actor::spawn_linked(None, Agent, args.clone(), myself.get_cell()).await?;
        *supervised.agent.lock() = Some(agent);
        Ok((args, supervised))
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        (args, supervised): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, why)) = cairn_worker::death(event) else {
            return Ok(());
        };
        let current = supervised.agent.lock().as_ref().map(|a| a.get_id());
        if supervised.stopping.load(Ordering::SeqCst) || current != Some(cell.get_id()) {
            return Ok(());
        }
        let (agent, _) = Actor::spawn_linked(None, Agent, args.clone(), myself.get_cell()).await?;
        *supervised.agent.lock() = Some(agent);
        supervised.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(node = %args.name, reason = %why, "cluster agent died; restarted");
        Ok(())
    }
}
