//! Dispatch across the cluster: each job goes to a worker node — this one while it has free
//! capacity, otherwise the least loaded — and a job whose node is lost (its session closed, so
//! its reply can never come) is sent to another node under the same lease.
//!
//! Why re-dispatching is safe: the job keeps its lease (same generation) and the commit is
//! first-writer-wins, so even a node that was only cut off, not dead, cannot make a second
//! entry. Uncached jobs have no lease: they are at-least-once across node loss.

use super::agent::{AgentMsg, Load, WORKERS_GROUP, encode};
use cairn_engine::task::{Job, JobReport};
use cairn_worker::{Dispatch, ReportTo, WorkerPoolHandle};
use parking_lot::Mutex;
use ractor::{ActorCell, ActorId, ActorRef, rpc::CallResult};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Node losses one job survives before it is reported as lost.
const MAX_NODE_LOSSES: u32 = 5;
/// How long a job waits for a worker node to appear when there is none.
const WAIT_FOR_WORKERS: Duration = Duration::from_secs(5);

/// What this node knows of a worker node's load.
#[derive(Default, Clone, Copy)]
struct Known {
    /// Jobs this node sent there and that have not reported yet.
    inflight: usize,
    /// Its capacity (from its last load report; assumed 64 before one arrives).
    capacity: Option<usize>,
    /// Busy + queued, from its last load report.
    reported: usize,
}

/// The cluster dispatcher of one node.
pub struct ClusterDispatch {
    /// The local pool, when this node is a worker.
    local: Option<WorkerPoolHandle>,
    known: Mutex<HashMap<ActorId, Known>>,
}

enum Target {
    Local(ActorId),
    Remote(ActorRef<AgentMsg>),
}

impl ClusterDispatch {
    /// A dispatcher; `local` is this node's pool if it is a worker.
    pub fn new(local: Option<WorkerPoolHandle>) -> Arc<Self> {
        Arc::new(ClusterDispatch {
            local,
            known: Mutex::new(HashMap::new()),
        })
    }

    /// Updates what is known of a member's load (from the membership refresher).
    pub(super) fn observed(&self, id: ActorId, load: &Load) {
        let mut known = self.known.lock();
        let k = known.entry(id).or_default();
        k.capacity = Some(load.capacity.max(1));
        k.reported = load.busy + load.queued;
    }

    fn pick(&self, members: &[ActorCell]) -> Option<Target> {
        let mut known = self.known.lock();
        known.retain(|id, _| members.iter().any(|m| m.get_id() == *id));
        let load = |k: &Known| {
            let capacity = k.capacity.unwrap_or(64) as f64;
            (k.inflight.max(k.reported) as f64) / capacity
        };
        // The local node first, while it has a free worker.
        if self.local.is_some()
            && let Some(me) = members.iter().find(|m| m.get_id().is_local())
        {
            let k = known.entry(me.get_id()).or_default();
            if load(k) < 1.0 {
                k.inflight += 1;
                return Some(Target::Local(me.get_id()));
            }
        }
        let best = members
            .iter()
            .filter(|m| self.local.is_some() || !m.get_id().is_local())
            .min_by(|a, b| {
                let la = load(&known.get(&a.get_id()).copied().unwrap_or_default());
                let lb = load(&known.get(&b.get_id()).copied().unwrap_or_default());
                la.total_cmp(&lb)
            })?;
        known.entry(best.get_id()).or_default().inflight += 1;
        Some(if best.get_id().is_local() {
            Target::Local(best.get_id())
        } else {
            Target::Remote(ActorRef::from(best.clone()))
        })
    }

    fn done(&self, id: ActorId) {
        if let Some(k) = self.known.lock().get_mut(&id) {
            k.inflight = k.inflight.saturating_sub(1);
        }
    }

    async fn run(self: Arc<Self>, job: Job, report: ReportTo) {
        let cached = job.cache.is_some();
        let lost = |detail: String| JobReport::lost(cached, detail);
        let bytes = encode(&job);
        let mut losses = 0;
        let deadline = tokio::time::Instant::now() + WAIT_FOR_WORKERS;
        loop {
            let members = ractor::pg::get_members(&WORKERS_GROUP.to_string());
            let target = match self.pick(&members) {
                Some(t) => t,
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                None => {
                    report.send(lost(
                        "no worker node in the cluster (none joined, or all were lost)".into(),
                    ));
                    return;
                }
            };
            match target {
                Target::Local(id) => {
                    let Some(pool) = &self.local else {
                        return;
                    };
                    let me = self.clone();
                    pool.submit(
                        job,
                        ReportTo::new(cached, move |r| {
                            me.done(id);
                            report.send(r);
                        }),
                    );
                    return;
                }
                Target::Remote(agent) => {
                    let id = agent.get_id();
                    let bytes = bytes.clone();
                    let answer = agent
                        .call(|reply| AgentMsg::Execute(bytes, reply), None)
                        .await;
                    self.done(id);
                    match answer {
                        Ok(CallResult::Success(raw)) => {
                            let decoded =
                                rmp_serde::from_slice::<JobReport>(&raw).unwrap_or_else(|e| {
                                    lost(format!("undecodable report from node {id}: {e}"))
                                });
                            report.send(decoded);
                            return;
                        }
                        other => {
                            losses += 1;
                            let why = match other {
                                Err(e) => e.to_string(),
                                Ok(CallResult::Timeout) => "timed out".into(),
                                _ => "its node left the cluster".into(),
                            };
                            tracing::warn!(execution = %job.execution, node = %id, %why, "job's worker node lost; dispatching it elsewhere");
                            if losses >= MAX_NODE_LOSSES {
                                report.send(lost(format!(
                                    "lost {losses} worker nodes running it (last: {why})"
                                )));
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [`ClusterDispatch`] as schedulers see it.
pub struct Dispatcher(pub Arc<ClusterDispatch>);

impl Dispatch for Dispatcher {
    fn submit(&self, job: Job, report: ReportTo) {
        tokio::spawn(self.0.clone().run(job, report));
    }
}
