//! The scheduler actor: owns a [`Machine`] and performs its actions. Store work (resolve, wait)
//! and worker round trips run in spawned tasks that report back as messages, so the actor never
//! blocks and identical calls keep joining flights while a resolve is in progress.
//!
//! Failure: the actor holds no state that outlives a call except the flight table; if it dies,
//! its pending callers' reply ports are dropped and they get [`TaskError::Engine`]; leases it had
//! acquired expire after their TTL (or are failed by the worker running them).

use crate::machine::{
    Action, CallId, FlightKey, Input, Lookup, Machine, Reply, StoreFailure, WaitOutcome,
};
use cairn_engine::catalog::{
    Answer, CacheKey, CacheStatus, Catalog, ExecutionRecord, HeldLease, Lease, Resolution,
    ResolveRequest,
};
use cairn_engine::det::Map;
use cairn_engine::task::{Job, JobCache, JobReport, TaskError};
use cairn_engine::telemetry::semconv as sc;
use cairn_engine::{AnyStore, Store};
use cairn_worker::{Dispatch, ReportTo};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// A number as a span attribute: tracing hands unsigned integers to OpenTelemetry as strings,
/// signed ones as integers.
fn int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

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
    /// The domain (development, staging, production…): never shared across domains.
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
    /// The caller read the entry just before and found none (or a corrupt one): the resolve
    /// goes straight to the read-write path.
    #[serde(default)]
    pub looked_up: bool,
}

/// The answer to a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallResult {
    /// Output bytes or the error (the calls of one flight share one copy of the bytes).
    pub output: Result<Arc<[u8]>, TaskError>,
    /// How the cache answered.
    pub status: CacheStatus,
    /// This call's execution id.
    pub execution: String,
    /// Time from submission to answer.
    pub duration: Duration,
    /// Why the cache failed the call (LookupFailure, PutFailure).
    pub cache_error: Option<String>,
    /// The execution this call waited for, if it did.
    #[serde(default)]
    pub waited_for: Option<String>,
}

/// What a scheduler is told.
pub enum SchedulerMsg {
    /// Make a call and reply with its result; the span is the caller's call span.
    Call(Box<CallRequest>, RpcReplyPort<CallResult>, tracing::Span),
    /// A resolve finished (internal).
    Resolved(FlightKey, Lookup),
    /// A batch of acquires finished (internal): each flight's outcome.
    AcquiredBatch(Vec<(FlightKey, Lookup)>),
    /// A wait finished (internal).
    Waited(FlightKey, WaitOutcome),
    /// A job came back from a worker (internal).
    JobDone(CallId, Option<FlightKey>, Box<JobReport>),
}

// ractor's `cluster` feature (on for the whole workspace, for ractor_cluster) requires every
// message type to say whether it can cross nodes; this one never does.
impl ractor::Message for SchedulerMsg {}

/// What a flight asks the catalog (a resolve or a wait), owned so that it moves into the task
/// that asks.
struct Asking {
    key: CacheKey,
    owner: String,
    execution: String,
    lease_ttl: Duration,
    max_age: Option<Duration>,
    overwrite: bool,
    /// The leader's caller found no entry a moment ago: skip the hit path's read.
    looked_up: bool,
    /// The leader's call span, kept in the lease if acquired (waiters link to it).
    trace: Option<String>,
}

impl Asking {
    fn request(&self) -> ResolveRequest<'_> {
        ResolveRequest {
            key: &self.key,
            owner: &self.owner,
            execution: &self.execution,
            lease_ttl: self.lease_ttl,
            max_age: self.max_age,
            overwrite: self.overwrite,
            takeover: None,
            trace: self.trace.as_deref(),
        }
    }
}

/// The scheduler behaviour.
pub struct Scheduler;

/// What a scheduler starts with.
#[derive(Clone)]
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
    /// The call joined a flight this scheduler already had: it waits behind that flight's
    /// leader, in this span.
    joined: Option<Joined>,
}

/// A call waiting behind another call of this process computing the same key.
struct Joined {
    /// The `cairn.wait` span (child of the call's span, linked to the leader's).
    span: tracing::Span,
    /// The leader's execution.
    behind: String,
    since: Instant,
}

/// A scheduler's state.
pub struct SchedulerState {
    args: SchedulerArgs,
    machine: Machine,
    calls: Map<CallId, Pending>,
    next: CallId,
    /// Flights waiting to acquire, with their `cairn.resolve` spans: taken together, one
    /// transaction per batch, while no batch is in flight.
    acquiring: Vec<(FlightKey, Asking, tracing::Span)>,
    /// A batch of acquires is in flight.
    acquire_busy: bool,
}

/// Most flights acquired in one transaction (each is a multi-key read and a write of about
/// 200 bytes: far below FoundationDB's limits, and short enough to rarely conflict).
const ACQUIRE_BATCH: usize = 256;

/// Answers built and sent together when many calls are answered at once (see
/// [`SchedulerState::reply_all`]).
const ANSWER_CHUNK: usize = 256;

/// The hit path first (one read, nothing decoded but the output; skipped when the caller has
/// just read the entry itself), then the read-write path.
async fn resolve(
    catalog: &Catalog<AnyStore>,
    req: &ResolveRequest<'_>,
    caller_looked_up: bool,
) -> Lookup {
    let looked_up = if req.overwrite || caller_looked_up {
        Ok(None)
    } else {
        catalog
            .lookup_output_among(req.key, req.max_age, false)
            .await
    };
    let resolved = match looked_up {
        Ok(Some(output)) => return Lookup::Hit(output),
        // A corrupt entry is never a hit: the read-write path computes the key again.
        Ok(None) | Err(cairn_engine::Error::Corrupt { .. }) => Box::pin(catalog.acquire(req)).await,
        Err(e) => Err(e),
    };
    lookup_of(resolved, req.key)
}

/// What the machine is told of a resolution of `key` (a store failure runs the call uncached).
fn lookup_of(resolved: cairn_engine::Result<Resolution>, key: &CacheKey) -> Lookup {
    match resolved {
        Ok(Resolution::Hit(hit)) => Lookup::Hit(hit.output.into()),
        Ok(Resolution::Acquired(lease)) => Lookup::Acquired(lease),
        Ok(Resolution::Held(held)) => Lookup::Held(held),
        Err(e) => {
            tracing::warn!(error = %e, key = %key.digest, "cache lookup failed; running uncached");
            Lookup::Failed(StoreFailure::from(&e))
        }
    }
}

/// Records what a resolve found on its `cairn.resolve` span.
fn record_outcome(span: &tracing::Span, outcome: &Lookup) {
    match outcome {
        Lookup::Hit(_) => span.record(sc::RESOLVE_OUTCOME, "hit"),
        Lookup::Acquired(lease) => span
            .record(sc::RESOLVE_OUTCOME, "acquired")
            .record(sc::LEASE_GENERATION, int(lease.generation)),
        Lookup::Held(held) => span
            .record(sc::RESOLVE_OUTCOME, "held")
            .record(sc::LEASE_GENERATION, int(held.generation))
            .record(sc::WAIT_BEHIND, held.execution.as_str()),
        Lookup::Failed(_) => span.record(sc::RESOLVE_OUTCOME, "failed"),
    };
}

impl SchedulerState {
    fn request(&self, call: CallId) -> Option<&Pending> {
        self.calls.get(&call)
    }

    /// What `leader`'s flight asks the catalog, owned for the task that asks it (`None` for an
    /// uncached call, or a call already answered).
    fn asking(&self, leader: CallId, flight: FlightKey) -> Option<Asking> {
        let p = self.request(leader)?;
        Some(Asking {
            key: p.request.key.clone()?,
            owner: self.args.owner.clone(),
            execution: p.execution.clone(),
            lease_ttl: p.request.lease_ttl,
            max_age: p.request.max_age,
            overwrite: flight.overwrite,
            looked_up: p.request.looked_up,
            trace: cairn_engine::telemetry::propagate::traceparent(&p.span),
        })
    }

    /// `call` joined the flight `leader` leads: it waits, in a `cairn.wait` span linked to the
    /// leader's call span, until the flight ends.
    fn joined(&mut self, call: CallId, leader: CallId) {
        let Some(l) = self.calls.get(&leader) else {
            return;
        };
        let (leader_span, behind) = (l.span.clone(), l.execution.clone());
        let Some(p) = self.calls.get_mut(&call) else {
            return;
        };
        let span = tracing::info_span!(
            parent: &p.span,
            sc::SPAN_WAIT,
            { sc::CACHE_KEY } = p.request.key.as_ref().map(|k| tracing::field::display(k.digest)),
            { sc::WAIT_BEHIND } = tracing::field::Empty,
            { sc::WAIT_MS } = tracing::field::Empty,
            { sc::WAIT_OUTCOME } = tracing::field::Empty,
        );
        span.follows_from(&leader_span);
        p.joined = Some(Joined {
            span,
            behind,
            since: Instant::now(),
        });
    }

    async fn perform(&mut self, myself: &ActorRef<SchedulerMsg>, action: Action) {
        match action {
            Action::Resolve { flight, leader } => self.resolve_flight(myself, flight, leader),
            Action::Wait {
                flight,
                leader,
                held,
            } => self.wait_flight(myself, flight, leader, held),
            Action::Dispatch {
                flight,
                leader,
                lease,
            } => self.dispatch_job(myself, flight, leader, lease),
            Action::Release { lease } => self.release_lease(lease),
            Action::Reply(reply) => self.reply_all(vec![reply]).await,
        }
    }

    /// Resolves a flight's key for its leader, in a task of its own.
    fn resolve_flight(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        flight: FlightKey,
        leader: CallId,
    ) {
        let (Some(p), Some(asking)) = (self.request(leader), self.asking(leader, flight)) else {
            return;
        };
        let (catalog, me) = (self.args.catalog.clone(), myself.clone());
        let span = tracing::info_span!(
            parent: &p.span,
            sc::SPAN_RESOLVE,
            { sc::CACHE_KEY } = %asking.key.digest,
            { sc::RESOLVE_OUTCOME } = tracing::field::Empty,
            { sc::LEASE_GENERATION } = tracing::field::Empty,
            { sc::WAIT_BEHIND } = tracing::field::Empty,
        );
        // Nothing to look up (the caller just did, or an overwrite ignores entries): straight
        // to the read-write path, batched with the other flights acquiring now.
        let batching = catalog.store().max_batch() > 1;
        if batching && (asking.looked_up || asking.overwrite) {
            self.acquiring.push((flight, asking, span));
            self.acquire_batch(myself);
            return;
        }
        tokio::spawn(async move {
            // The span covers the resolve only: it is closed before the outcome is
            // sent, so nothing that handles the outcome (the dispatch, the job) runs
            // inside it or keeps it open.
            let outcome = async {
                let outcome = resolve(&catalog, &asking.request(), asking.looked_up).await;
                record_outcome(&tracing::Span::current(), &outcome);
                outcome
            }
            .instrument(span)
            .await;
            let _ = me.send_message(SchedulerMsg::Resolved(flight, outcome));
        });
    }

    /// Starts acquiring the flights queued, [`ACQUIRE_BATCH`] per transaction, unless a batch
    /// is in flight (its end starts the next with whatever queued meanwhile).
    fn acquire_batch(&mut self, myself: &ActorRef<SchedulerMsg>) {
        if self.acquire_busy || self.acquiring.is_empty() {
            return;
        }
        self.acquire_busy = true;
        let queued = std::mem::take(&mut self.acquiring);
        let (catalog, me) = (self.args.catalog.clone(), myself.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::with_capacity(queued.len());
            let size = ACQUIRE_BATCH.min(catalog.store().max_batch()).max(1);
            for batch in queued.chunks(size) {
                let reqs: Vec<ResolveRequest<'_>> = batch
                    .iter()
                    .map(|(_, asking, _)| asking.request())
                    .collect();
                let results = catalog.acquire_many(&reqs).await;
                for ((flight, asking, span), result) in batch.iter().zip(results) {
                    let lookup = lookup_of(result, &asking.key);
                    record_outcome(span, &lookup);
                    outcomes.push((*flight, lookup));
                }
            }
            // The spans close (with `queued`) before the outcomes are handled.
            drop(queued);
            let _ = me.send_message(SchedulerMsg::AcquiredBatch(outcomes));
        });
    }

    /// Waits behind another execution's lease, in a task of its own.
    fn wait_flight(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        flight: FlightKey,
        leader: CallId,
        held: HeldLease,
    ) {
        let (Some(p), Some(asking)) = (self.request(leader), self.asking(leader, flight)) else {
            return;
        };
        let (catalog, me) = (self.args.catalog.clone(), myself.clone());
        let span = tracing::info_span!(
            parent: &p.span,
            sc::SPAN_WAIT,
            { sc::CACHE_KEY } = %asking.key.digest,
            { sc::WAIT_BEHIND } = %held.execution,
            { sc::LEASE_GENERATION } = int(held.generation),
            { sc::WAIT_MS } = tracing::field::Empty,
            { sc::WAIT_OUTCOME } = tracing::field::Empty,
        );
        if let Some(trace) = &held.trace {
            cairn_engine::telemetry::propagate::add_link(&span, trace);
        }
        let started = Instant::now();
        tokio::spawn(async move {
            let outcome = async {
                let outcome = match catalog.wait(&asking.request(), held).await {
                    Ok(Answer::Hit(hit)) => WaitOutcome::Hit(hit.output),
                    Ok(Answer::Acquired(lease)) => WaitOutcome::Acquired(lease),
                    Err(e) => WaitOutcome::Failed(StoreFailure::from(&e)),
                };
                let span = tracing::Span::current();
                span.record(sc::WAIT_MS, int(started.elapsed().as_millis()));
                span.record(
                    sc::WAIT_OUTCOME,
                    match &outcome {
                        WaitOutcome::Hit(_) => "hit",
                        WaitOutcome::Acquired(_) => "acquired",
                        WaitOutcome::Failed(_) => "failed",
                    },
                );
                outcome
            }
            .instrument(span)
            .await;
            // Sent outside the span (see the resolve above).
            let _ = me.send_message(SchedulerMsg::Waited(flight, outcome));
        });
    }

    /// Sends the leader's job to a worker; the lease beats until the report.
    fn dispatch_job(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        flight: Option<FlightKey>,
        leader: CallId,
        lease: Option<Lease>,
    ) {
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
        // A job reported lost before any worker ran it to its end (its pool died, its node
        // was lost) gives its lease up at once, before its callers hear of the loss, so the
        // key's next caller, here or on another node, runs it instead of waiting out the TTL.
        // A worker that ran it has already committed or failed it; `fail` is fenced, so it
        // changes nothing then.
        let lost = job
            .cache
            .as_ref()
            .map(|c| (self.args.catalog.clone(), c.lease.clone()));
        // The report comes back as one of this actor's messages; nothing waits for it.
        self.args.workers.submit(
            job,
            ReportTo::new(cached, move |report| {
                let _ = done.send(());
                let answer = move |report| {
                    let _ =
                        me.send_message(SchedulerMsg::JobDone(leader, flight, Box::new(report)));
                };
                match (lost, &report.output, report.attempts) {
                    (Some((catalog, lease)), Err(error @ TaskError::WorkerLost { .. }), 0) => {
                        let error = error.to_string();
                        cairn_worker::give_up_then(catalog, lease, error, move || answer(report));
                    }
                    _ => answer(report),
                }
            }),
        );
    }

    /// Gives up a lease without running.
    fn release_lease(&mut self, lease: Lease) {
        let catalog = self.args.catalog.clone();
        tokio::spawn(async move {
            if let Err(e) = catalog.release(&lease).await {
                tracing::warn!(error = %e, "could not release a lease; it expires after its TTL");
            }
        });
    }

    /// Answers calls, in one pass: each call's execution record is queued (one message per
    /// chunk of calls) before that caller hears back, so a run that flushes records after its
    /// last call returns finds every call's record.
    ///
    /// Many answers (a flight's waiters) go out a chunk at a time: the callers answered first
    /// resume (on the other thread) while later chunks are built, instead of all waiting for
    /// the last answer to be built.
    async fn reply_all(&mut self, replies: Vec<Reply>) {
        let now = Instant::now();
        let mut replies = replies.into_iter().peekable();
        // What answered calls leave behind, a chunk per vector (no vector regrown and copied).
        let mut left = Vec::new();
        while replies.peek().is_some() {
            let mut records = Vec::with_capacity(ANSWER_CHUNK);
            let mut answers = Vec::with_capacity(ANSWER_CHUNK);
            let mut rest = Vec::with_capacity(ANSWER_CHUNK);
            for r in replies.by_ref().take(ANSWER_CHUNK) {
                if let Some((record, reply, result, leftover)) = self.answer(r, now) {
                    records.push(record);
                    answers.push((reply, result));
                    rest.push(leftover);
                }
            }
            self.args.catalog.record_many(records).await;
            for (reply, result) in answers {
                let _ = reply.send(result);
            }
            left.push(rest);
        }
        // What the answered calls leave behind is dropped after the answers go out, and
        // thousands of requests are freed on another task, which an idle thread picks up.
        if left.iter().map(Vec::len).sum::<usize>() > 64 {
            tokio::spawn(async move { drop(left) });
        }
    }

    /// The answer to one call, its execution record, and where the answer goes.
    fn answer(&mut self, r: Reply, now: Instant) -> Option<Answered> {
        let Reply {
            call,
            mut output,
            mut status,
            waited_for,
            ran,
            cache_error,
        } = r;
        let Pending {
            request,
            reply,
            span,
            execution,
            started,
            started_ms,
            joined,
        } = self.calls.remove(&call)?;
        // A journal entry holds an earlier attempt's outcome, output or error.
        if request.journal
            && matches!(status, CacheStatus::Hit | CacheStatus::Waited)
            && let Ok(bytes) = &output
        {
            output = cairn_engine::task::decode_outcome(bytes)
                .and_then(|o| o)
                .map(Arc::from);
            status = CacheStatus::Replayed;
        }
        let duration = now.saturating_duration_since(started);
        // A call that joined this process's flight waited behind its leader's execution (or
        // behind what the leader itself waited for). Its wait span is filled in now and closes
        // when what the answered calls leave behind is dropped, after the answers go out.
        let (waited_for, wait_span) = match joined {
            Some(Joined {
                span: wait,
                behind,
                since,
            }) => {
                wait.record(
                    sc::WAIT_BEHIND,
                    waited_for.as_deref().unwrap_or(behind.as_str()),
                );
                let waited_for = if status == CacheStatus::Waited {
                    waited_for.or(Some(behind))
                } else {
                    waited_for
                };
                wait.record(
                    sc::WAIT_MS,
                    int(now.saturating_duration_since(since).as_millis()),
                );
                wait.record(
                    sc::WAIT_OUTCOME,
                    if output.is_ok() { "hit" } else { "failed" },
                );
                (waited_for, Some(wait))
            }
            None => (waited_for, None),
        };
        let record = ExecutionRecord {
            execution: execution.clone(),
            run: request.run.clone(),
            project: request.project.clone(),
            domain: request.domain.clone(),
            task: request.task.clone(),
            version: request.version.clone(),
            key: request.key.as_ref().map(|k| k.digest),
            status,
            started_at_ms: started_ms,
            duration_us: duration.as_micros() as u64,
            wait_us: if waited_for.is_some() {
                duration.as_micros() as u64
            } else {
                0
            },
            waited_for,
            error: output.as_ref().err().map(ToString::to_string),
            seq: request.seq,
            attempt: request.attempt,
            executed: ran,
            cache_error: cache_error.clone(),
        };
        span.record(sc::EXECUTION, execution.as_str());
        span.record(sc::CACHE_STATUS, tracing::field::debug(status));
        cairn_engine::telemetry::metrics::call_answered(
            &request.task,
            status,
            duration,
            // Joiners of a flight wait too, behind the leader's execution.
            (record.wait_us > 0 || status == CacheStatus::Waited).then_some(duration),
        );
        let result = CallResult {
            output,
            status,
            execution,
            duration,
            cache_error,
            waited_for: record.waited_for.clone(),
        };
        // The wait ends with the answer (the caller's drop of what is left).
        Some((record, reply, result, (request, span, wait_span)))
    }
}

/// One call answered: its record, where its answer goes, the answer, and what is left of it
/// (dropped later).
type Answered = (
    ExecutionRecord,
    RpcReplyPort<CallResult>,
    CallResult,
    (Box<CallRequest>, tracing::Span, Option<tracing::Span>),
);

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
            calls: Map::default(),
            next: 0,
            acquiring: Vec::new(),
            acquire_busy: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMsg>,
        message: SchedulerMsg,
        state: &mut SchedulerState,
    ) -> Result<(), ActorProcessingErr> {
        let inputs = match message {
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
                        execution: state.args.catalog.new_execution_id(),
                        started: Instant::now(),
                        started_ms: state.args.catalog.now_ms(),
                        joined: None,
                    },
                );
                vec![Input::Call {
                    call,
                    flight,
                    fail_fast,
                }]
            }
            SchedulerMsg::Resolved(flight, outcome) => vec![Input::Resolved { flight, outcome }],
            SchedulerMsg::AcquiredBatch(outcomes) => {
                state.acquire_busy = false;
                outcomes
                    .into_iter()
                    .map(|(flight, outcome)| Input::Resolved { flight, outcome })
                    .collect()
            }
            SchedulerMsg::Waited(flight, outcome) => vec![Input::Waited { flight, outcome }],
            SchedulerMsg::JobDone(call, flight, report) => vec![Input::JobDone {
                call,
                flight,
                report: *report,
            }],
        };
        // Consecutive answers (every call of a flight that ended) go out in one pass.
        let mut replies: Vec<Reply> = Vec::new();
        for input in inputs {
            let joining = match &input {
                Input::Call {
                    call,
                    flight: Some(flight),
                    ..
                } => Some((*call, *flight)),
                _ => None,
            };
            let actions = state.machine.step(input);
            if let Some((call, flight)) = joining
                && let Some(leader) = state.machine.leader_of(&flight)
                && leader != call
            {
                state.joined(call, leader);
            }
            replies.reserve(actions.len());
            for action in actions {
                match action {
                    Action::Reply(reply) => replies.push(reply),
                    action => {
                        if !replies.is_empty() {
                            state.reply_all(std::mem::take(&mut replies)).await;
                        }
                        state.perform(&myself, action).await;
                    }
                }
            }
        }
        if !replies.is_empty() {
            state.reply_all(replies).await;
        }
        // Flights that queued to acquire while a batch was in flight go now.
        state.acquire_batch(&myself);
        Ok(())
    }
}
