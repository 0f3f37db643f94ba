//! The scheduler actor: owns a [`Machine`] and performs its actions. Store work (resolve, wait)
//! and worker round trips run in spawned tasks that report back as messages, so the actor never
//! blocks and identical calls keep joining flights while a resolve is in progress.
//!
//! Failure: the actor holds no state that outlives a call except the flight table; if it dies,
//! its pending callers' reply ports are dropped and they get [`TaskError::Engine`]; leases it had
//! acquired expire after their TTL (or are failed by the worker running them).

use crate::machine::{Action, CallId, FlightKey, Input, Lookup, Machine, WaitOutcome};
use cairn_engine::AnyStore;
use cairn_engine::catalog::{
    Answer, CacheKey, CacheStatus, Catalog, ExecutionRecord, Resolution, ResolveRequest,
    new_execution_id,
};
use cairn_engine::task::{Job, JobCache, JobReport, TaskError};
use cairn_worker::{Dispatch, ReportTo};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// One task call, as submitted to a scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequest {
    /// Task name.
    pub task: Arc<str>,
    /// Input (MessagePack of the task's input type).
    pub input: Vec<u8>,
    /// The cache key; `None` for tasks that are not cacheable.
    pub key: Option<CacheKey>,
    /// Re-execute and replace the entry.
    pub overwrite: bool,
    /// Project (for records of uncached calls).
    pub project: Arc<str>,
    /// Domain.
    pub domain: Arc<str>,
    /// Cache version.
    pub version: Arc<str>,
    /// The run the call belongs to.
    pub run: Option<Arc<str>>,
    /// Lease TTL if this call's flight acquires.
    pub lease_ttl: Duration,
    /// The task's `max_age`.
    pub max_age: Option<Duration>,
    /// After waiting for a failed execution, return its error instead of running again.
    pub fail_fast: bool,
    /// `key` is the journal key of an uncached call in a durable run: what is stored under it
    /// is the call's outcome (output or error), not a cached output.
    pub journal: bool,
    /// The call's position in its run, in the order the workflow made its calls.
    pub seq: Option<u64>,
    /// The run's attempt making the call.
    pub attempt: u32,
}

/// The answer to a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// Output bytes or the error.
    pub output: Result<Vec<u8>, TaskError>,
    /// How the cache answered.
    pub status: CacheStatus,
    /// This call's execution id.
    pub execution: String,
    /// Time from submission to answer.
    pub duration: Duration,
    /// Why the cache failed the call (LookupFailure, PutFailure).
    pub cache_error: Option<String>,
}

/// What a scheduler is told.
pub enum SchedulerMsg {
    /// Make a call and reply with its result; the span is the caller's call span.
    Call(Box<CallRequest>, RpcReplyPort<CallResult>, tracing::Span),
    /// A resolve finished (internal).
    Resolved(FlightKey, Lookup),
    /// A wait finished (internal).
    Waited(FlightKey, WaitOutcome),
    /// A job came back from a worker (internal).
    JobDone(CallId, Option<FlightKey>, Box<JobReport>),
}

// ractor's `cluster` feature (on for the whole workspace, for ractor_cluster) requires every
// message type to say whether it can cross nodes; this one never does.
impl ractor::Message for SchedulerMsg {}

/// The scheduler behaviour.
pub struct Scheduler;

/// What a scheduler starts with.
pub struct SchedulerArgs {
    /// This node's name (lease owner).
    pub owner: String,
    /// The catalog.
    pub catalog: Catalog<AnyStore>,
    /// Where jobs run.
    pub workers: Arc<dyn Dispatch>,
}

struct Pending {
    request: Box<CallRequest>,
    reply: RpcReplyPort<CallResult>,
    span: tracing::Span,
    execution: String,
    started: Instant,
    started_ms: i64,
}

/// A scheduler's state.
pub struct SchedulerState {
    args: SchedulerArgs,
    machine: Machine,
    calls: HashMap<CallId, Pending>,
    next: CallId,
}

/// The hit path first (one read, nothing decoded but the output), then the read-write path.
async fn resolve(
    catalog: &Catalog<AnyStore>,
    key: &CacheKey,
    owner: &str,
    execution: &str,
    lease_ttl: Duration,
    max_age: Option<Duration>,
    overwrite: bool,
) -> Lookup {
    let looked_up = if overwrite {
        Ok(None)
    } else {
        catalog.lookup_output(key, max_age).await
    };
    let resolved = match looked_up {
        Ok(Some(output)) => return Lookup::Hit(output),
        // A corrupt entry is never a hit: the read-write path computes the key again.
        Ok(None) | Err(cairn_engine::Error::Corrupt { .. }) => {
            let req = ResolveRequest {
                key,
                owner,
                execution,
                lease_ttl,
                max_age,
                overwrite,
                takeover: None,
            };
            Box::pin(catalog.acquire(&req)).await
        }
        Err(e) => Err(e),
    };
    match resolved {
        Ok(Resolution::Hit(hit)) => Lookup::Hit(hit.output),
        Ok(Resolution::Acquired(lease)) => Lookup::Acquired(lease),
        Ok(Resolution::Held(held)) => Lookup::Held(held),
        Err(e) => {
            tracing::warn!(error = %e, key = %key.digest, "cache lookup failed; running uncached");
            Lookup::Failed(e.to_string())
        }
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl SchedulerState {
    fn request(&self, call: CallId) -> Option<&Pending> {
        self.calls.get(&call)
    }

    fn resolve_request<'a>(
        &'a self,
        p: &'a Pending,
        key: &'a CacheKey,
        overwrite: bool,
    ) -> ResolveRequest<'a> {
        ResolveRequest {
            key,
            owner: &self.args.owner,
            execution: &p.execution,
            lease_ttl: p.request.lease_ttl,
            max_age: p.request.max_age,
            overwrite,
            takeover: None,
        }
    }

    async fn perform(&mut self, myself: &ActorRef<SchedulerMsg>, action: Action) {
        match action {
            Action::Resolve { flight, leader } => {
                let Some(p) = self.request(leader) else {
                    return;
                };
                let Some(key) = p.request.key.clone() else {
                    return;
                };
                let (catalog, me) = (self.args.catalog.clone(), myself.clone());
                let (owner, execution, ttl, max_age) = (
                    self.args.owner.clone(),
                    p.execution.clone(),
                    p.request.lease_ttl,
                    p.request.max_age,
                );
                let span = tracing::info_span!(
                    parent: &p.span,
                    "cairn.resolve",
                    "cairn.cache.key" = %key.digest,
                    "cairn.resolve.outcome" = tracing::field::Empty,
                    "cairn.lease.generation" = tracing::field::Empty,
                    "cairn.wait.behind" = tracing::field::Empty,
                );
                tokio::spawn(
                    async move {
                        let outcome = resolve(
                            &catalog,
                            &key,
                            &owner,
                            &execution,
                            ttl,
                            max_age,
                            flight.overwrite,
                        )
                        .await;
                        let span = tracing::Span::current();
                        match &outcome {
                            Lookup::Hit(_) => span.record("cairn.resolve.outcome", "hit"),
                            Lookup::Acquired(lease) => span
                                .record("cairn.resolve.outcome", "acquired")
                                .record("cairn.lease.generation", lease.generation),
                            Lookup::Held(held) => span
                                .record("cairn.resolve.outcome", "held")
                                .record("cairn.lease.generation", held.generation)
                                .record("cairn.wait.behind", held.execution.as_str()),
                            Lookup::Failed(_) => span.record("cairn.resolve.outcome", "failed"),
                        };
                        let _ = me.send_message(SchedulerMsg::Resolved(flight, outcome));
                    }
                    .instrument(span),
                );
            }
            Action::Wait {
                flight,
                leader,
                held,
            } => {
                let Some(p) = self.request(leader) else {
                    return;
                };
                let Some(key) = p.request.key.clone() else {
                    return;
                };
                let req = self.resolve_request(p, &key, flight.overwrite);
                let (owner, execution, ttl, max_age) = (
                    req.owner.to_string(),
                    req.execution.to_string(),
                    req.lease_ttl,
                    req.max_age,
                );
                let (catalog, me) = (self.args.catalog.clone(), myself.clone());
                let span = tracing::info_span!(
                    parent: &p.span,
                    "cairn.wait",
                    "cairn.cache.key" = %key.digest,
                    "cairn.wait.behind" = %held.execution,
                    "cairn.lease.generation" = held.generation,
                    "cairn.wait.ms" = tracing::field::Empty,
                    "cairn.wait.outcome" = tracing::field::Empty,
                );
                let started = Instant::now();
                tokio::spawn(
                    async move {
                        let req = ResolveRequest {
                            key: &key,
                            owner: &owner,
                            execution: &execution,
                            lease_ttl: ttl,
                            max_age,
                            overwrite: flight.overwrite,
                            takeover: None,
                        };
                        let outcome = match catalog.wait(&req, held).await {
                            Ok(Answer::Hit(hit)) => WaitOutcome::Hit(hit.output),
                            Ok(Answer::Acquired(lease)) => WaitOutcome::Acquired(lease),
                            Err(e) => WaitOutcome::Failed(e.to_string()),
                        };
                        let span = tracing::Span::current();
                        span.record("cairn.wait.ms", started.elapsed().as_millis() as u64);
                        span.record(
                            "cairn.wait.outcome",
                            match &outcome {
                                WaitOutcome::Hit(_) => "hit",
                                WaitOutcome::Acquired(_) => "acquired",
                                WaitOutcome::Failed(_) => "failed",
                            },
                        );
                        let _ = me.send_message(SchedulerMsg::Waited(flight, outcome));
                    }
                    .instrument(span),
                );
            }
            Action::Dispatch {
                flight,
                leader,
                lease,
            } => {
                let Some(p) = self.request(leader) else {
                    return;
                };
                let job = Job {
                    execution: p.execution.clone(),
                    task: p.request.task.to_string(),
                    input: p.request.input.clone(),
                    cache: match (lease, &p.request.key) {
                        (Some(lease), Some(key)) => Some(JobCache {
                            key: key.clone(),
                            lease,
                        }),
                        _ => None,
                    },
                    run: p.request.run.as_deref().map(str::to_string),
                    trace: cairn_engine::telemetry::propagate::traceparent(&p.span),
                };
                let me = myself.clone();
                let cached = job.cache.is_some();
                // The lease is this scheduler's from now until the report: it beats while the job
                // waits in a queue or travels to another node, not only while a worker runs it,
                // so callers waiting elsewhere never mistake a queued job for a dead holder.
                let (done, ended) = tokio::sync::oneshot::channel::<()>();
                if let Some(c) = &job.cache {
                    let (catalog, lease) = (self.args.catalog.clone(), c.lease.clone());
                    tokio::spawn(async move {
                        catalog.heartbeating(&lease, ended).await.ok();
                    });
                }
                // The report comes back as one of this actor's messages; nothing waits for it.
                self.args.workers.submit(
                    job,
                    ReportTo::new(cached, move |report| {
                        let _ = done.send(());
                        let _ = me.send_message(SchedulerMsg::JobDone(
                            leader,
                            flight,
                            Box::new(report),
                        ));
                    }),
                );
            }
            Action::Release { lease } => {
                let catalog = self.args.catalog.clone();
                tokio::spawn(async move {
                    if let Err(e) = catalog.release(&lease).await {
                        tracing::warn!(error = %e, "could not release a lease; it expires after its TTL");
                    }
                });
            }
            Action::Reply {
                call,
                mut output,
                mut status,
                waited_for,
                ran,
                cache_error,
            } => {
                let Some(p) = self.calls.remove(&call) else {
                    return;
                };
                // A journal entry holds an earlier attempt's outcome, output or error.
                if p.request.journal
                    && matches!(status, CacheStatus::Hit | CacheStatus::Waited)
                    && let Ok(bytes) = &output
                {
                    output = cairn_engine::task::decode_outcome(bytes).and_then(|o| o);
                    status = CacheStatus::Replayed;
                }
                let duration = p.started.elapsed();
                let record = ExecutionRecord {
                    execution: p.execution.clone(),
                    run: p.request.run.clone(),
                    project: p.request.project.clone(),
                    domain: p.request.domain.clone(),
                    task: p.request.task.clone(),
                    version: p.request.version.clone(),
                    key: p.request.key.as_ref().map(|k| k.digest),
                    status,
                    started_at_ms: p.started_ms,
                    duration_us: duration.as_micros() as u64,
                    wait_us: if waited_for.is_some() {
                        duration.as_micros() as u64
                    } else {
                        0
                    },
                    waited_for,
                    error: output.as_ref().err().map(ToString::to_string),
                    seq: p.request.seq,
                    attempt: p.request.attempt,
                    executed: ran,
                    cache_error: cache_error.clone(),
                };
                p.span.record("cairn.execution", p.execution.as_str());
                p.span
                    .record("cairn.cache.status", tracing::field::debug(status));
                cairn_engine::telemetry::metrics::call_answered(
                    &p.request.task,
                    status,
                    duration,
                    // Joiners of a flight wait too, behind the leader's execution.
                    (record.wait_us > 0 || status == CacheStatus::Waited).then_some(duration),
                );
                // Queued before the caller hears back, so a run that flushes records after its
                // last call returns finds every call's record.
                self.args.catalog.record(record).await;
                let _ = p.reply.send(CallResult {
                    output,
                    status,
                    execution: p.execution,
                    duration,
                    cache_error,
                });
            }
        }
    }
}

impl Actor for Scheduler {
    type Msg = SchedulerMsg;
    type State = SchedulerState;
    type Arguments = SchedulerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SchedulerMsg>,
        args: SchedulerArgs,
    ) -> Result<SchedulerState, ActorProcessingErr> {
        Ok(SchedulerState {
            args,
            machine: Machine::new(),
            calls: HashMap::new(),
            next: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        let input = match message {
            SchedulerMsg::Call(request, reply, span) => {
                state.next += 1;
                let call = state.next;
                let flight = request.key.as_ref().map(|k| FlightKey {
                    digest: k.digest,
                    overwrite: request.overwrite,
                });
                let fail_fast = request.fail_fast;
                state.calls.insert(
                    call,
                    Pending {
                        request,
                        reply,
                        span,
                        execution: new_execution_id(),
                        started: Instant::now(),
                        started_ms: unix_ms(),
                    },
                );
                Input::Call {
                    call,
                    flight,
                    fail_fast,
                }
            }
            SchedulerMsg::Resolved(flight, outcome) => Input::Resolved { flight, outcome },
            SchedulerMsg::Waited(flight, outcome) => Input::Waited { flight, outcome },
            SchedulerMsg::JobDone(call, flight, report) => Input::JobDone {
                call,
                flight,
                report: *report,
            },
        };
        for action in state.machine.step(input) {
            state.perform(&myself, action).await;
        }
        Ok(())
    }
}
