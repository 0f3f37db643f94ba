//! Workflows: async functions that call tasks through a [`Ctx`], under one run (an id, a
//! project, a domain, and whether to overwrite the cache).

use crate::actor::{CallRequest, CallResult};
use crate::follow::{Called, Flights, Following, Join};
use crate::handle::SchedulerHandle;
pub use crate::summaries::CallSummary;
use crate::summaries::Summaries;
use cairn_engine::catalog::{CacheStatus, Digest};
use cairn_engine::det::Map;
use cairn_engine::task::{Task, TaskError};
use cairn_engine::telemetry::semconv as sc;
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tracing::Instrument;

/// How a run is made.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Project: cache entries are never shared across projects.
    pub project: String,
    /// Domain: never shared across domains either.
    pub domain: String,
    /// Re-execute every cacheable task and replace its entry.
    pub overwrite_cache: bool,
    /// The run id; a fresh one when `None`.
    pub run_id: Option<String>,
}

impl RunOptions {
    /// A run in `project`/`domain`.
    pub fn new(project: impl Into<String>, domain: impl Into<String>) -> Self {
        RunOptions {
            project: project.into(),
            domain: domain.into(),
            overwrite_cache: false,
            run_id: None,
        }
    }

    /// With `overwrite_cache`.
    pub fn overwrite_cache(mut self, yes: bool) -> Self {
        self.overwrite_cache = yes;
        self
    }

    /// With this run id (instead of a fresh one).
    pub fn with_run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }
}

/// Why a call gave no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The task failed (after its retries), panicked, timed out, or could not run.
    #[error("task {task}: {error}")]
    Task {
        /// The task.
        task: String,
        /// What happened.
        error: TaskError,
    },
    /// The input could not be prepared (encoded, or turned into a cache key).
    #[error("task {task}: invalid input: {detail}")]
    Input {
        /// The task.
        task: String,
        /// What is wrong.
        detail: String,
    },
    /// The output did not decode as the task's output type.
    #[error("task {task}: output does not decode: {detail}")]
    Output {
        /// The task.
        task: String,
        /// The decoding error.
        detail: String,
    },
    /// The run was cancelled: the workflow makes no new calls.
    #[error("run {run} was cancelled")]
    Cancelled {
        /// The run.
        run: String,
    },
    /// The run made more calls than a run may make.
    #[error("run {run} made more than {limit} calls, the most a run may make; it fails")]
    TooManyCalls {
        /// The run.
        run: String,
        /// The limit.
        limit: u64,
    },
    /// A replay of the run made a different call than the attempt before it at the same
    /// point: the workflow is not deterministic (see docs/semantics.md, "The replay rule").
    #[error(
        "replay of run {run} diverged at call #{seq}: attempt {attempt} calls {got}, but attempt {previous} called {expected} there; \
         a workflow must make the same calls in the same order when it is replayed"
    )]
    ReplayMismatch {
        /// The run.
        run: String,
        /// The call's position in the run.
        seq: u64,
        /// The replaying attempt.
        attempt: u32,
        /// What it called (task and key).
        got: String,
        /// The earlier attempt.
        previous: u32,
        /// What that attempt called there.
        expected: String,
    },
}

/// A call an earlier attempt of a run made, as its execution record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastCall {
    /// The task.
    pub task: String,
    /// Its cache or journal key.
    pub key: Option<Digest>,
    /// The attempt that made it.
    pub attempt: u32,
}

/// Where a call stands after [`Ctx::call`]'s boxed body: answered, or following an identical
/// call of the run.
enum Step<T: Task> {
    Done(T::Output),
    Follow(Follow<T>),
}

/// A call that follows another: what it waits with, and what it needs to join again if its
/// leader's call is dropped.
struct Follow<T: Task> {
    following: Following,
    task: T,
    input: T::Input,
    resumed: Resumed,
}

/// What a call that follows (and may join again) keeps from its first pass.
struct Resumed {
    seq: u64,
    span: tracing::Span,
    looked_up: bool,
}

/// Bounds on one run's calls, so that no workflow can exhaust a node: beyond `max_in_flight`
/// calls at once, a call waits for one to finish (back-pressure); beyond `max_calls` in all,
/// the run fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Calls of one run in flight at once. A call waiting behind an identical call of the run
    /// (which makes the call for both) holds no place.
    pub max_in_flight: usize,
    /// Calls one run may make in all.
    pub max_calls: u64,
}

impl Default for CallLimits {
    fn default() -> Self {
        CallLimits {
            max_in_flight: 4_096,
            max_calls: 10_000_000,
        }
    }
}

/// How a durable run (one started by name) makes its calls: which attempt this is, what the
/// earlier attempts called (to check the replay), and its uncached calls are journaled.
#[derive(Debug, Clone, Default)]
pub struct Durability {
    /// The attempt (1 for the first).
    pub attempt: u32,
    /// Calls of earlier attempts, by position.
    pub previous: Map<u64, PastCall>,
    /// Bounds on the run's calls.
    pub limits: CallLimits,
}

/// Call summaries a durable run keeps for [`Ctx::calls`]: the latest this many.
pub const RECENT_CALLS: usize = 1_000;

struct Inner {
    scheduler: SchedulerHandle,
    options: RunOptions,
    run_id: Arc<str>,
    project: Arc<str>,
    domain: Arc<str>,
    /// Summaries of the calls, for [`Ctx::calls`]; a durable run keeps only the latest
    /// [`RECENT_CALLS`] (all its calls are its execution records), so its memory does not grow
    /// with its calls.
    calls: Mutex<Summaries>,
    /// Calls made so far (the next call's position).
    seq: AtomicU64,
    durable: Option<Durable>,
    cancelled: AtomicBool,
    limits: CallLimits,
    in_flight: tokio::sync::Semaphore,
    /// The first error that fails the run whatever the workflow does with it (a divergence
    /// from an earlier attempt, too many calls).
    fatal: Mutex<Option<CallError>>,
    /// Identical cached calls in flight at once: one leads, the others follow it.
    flights: Flights,
}

struct Durable {
    how: Durability,
    /// Uncached calls made so far per task and inputs, for their journal slots.
    occurrences: Mutex<Map<Digest, u32>>,
}

/// The context of one run; cheap to clone into concurrent branches of a workflow.
#[derive(Clone)]
pub struct Ctx {
    inner: Arc<Inner>,
}

impl Ctx {
    /// A context for a new run that lives only in this process (its uncached calls are not
    /// journaled: nothing resumes it elsewhere), with the default [`CallLimits`].
    pub fn new(scheduler: SchedulerHandle, options: RunOptions) -> Ctx {
        Self::build(scheduler, options, None, CallLimits::default())
    }

    /// [`Ctx::new`] with given limits.
    pub fn with_limits(scheduler: SchedulerHandle, options: RunOptions, limits: CallLimits) -> Ctx {
        Self::build(scheduler, options, None, limits)
    }

    /// A context for an attempt of a durable run: uncached calls are journaled, and a replay
    /// is checked against what earlier attempts called.
    pub fn durable(scheduler: SchedulerHandle, options: RunOptions, how: Durability) -> Ctx {
        let limits = how.limits;
        Self::build(
            scheduler,
            options,
            Some(Durable {
                how,
                occurrences: Mutex::new(Map::default()),
            }),
            limits,
        )
    }

    fn build(
        scheduler: SchedulerHandle,
        options: RunOptions,
        durable: Option<Durable>,
        limits: CallLimits,
    ) -> Ctx {
        let run_id: Arc<str> = options
            .run_id
            .clone()
            .unwrap_or_else(|| format!("run-{}", scheduler.catalog().new_execution_id()))
            .into();
        Ctx {
            inner: Arc::new(Inner {
                scheduler,
                project: options.project.as_str().into(),
                domain: options.domain.as_str().into(),
                options,
                run_id,
                calls: Mutex::new(Summaries::new(durable.as_ref().map(|_| RECENT_CALLS))),
                seq: AtomicU64::new(0),
                durable,
                cancelled: AtomicBool::new(false),
                in_flight: tokio::sync::Semaphore::new(limits.max_in_flight.max(1)),
                limits,
                fatal: Mutex::new(None),
                flights: Flights::default(),
            }),
        }
    }

    /// Stops the run's calls: every call from now on returns [`CallError::Cancelled`].
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::Release);
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// The first error that fails the run whatever the workflow made of it: a divergence of a
    /// replay from an earlier attempt, or too many calls.
    pub fn fatal_error(&self) -> Option<CallError> {
        self.inner.fatal.lock().clone()
    }

    fn fatal(&self, error: CallError) -> CallError {
        self.inner.fatal.lock().get_or_insert_with(|| error.clone());
        error
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.inner.run_id
    }

    /// The run's options.
    pub fn options(&self) -> &RunOptions {
        &self.inner.options
    }

    /// Every call made so far, in completion order; in a durable run (a run started by name),
    /// the latest [`RECENT_CALLS`] of them (every call is in the run's execution records).
    pub fn calls(&self) -> Vec<CallSummary> {
        self.inner.calls.lock().to_vec()
    }

    /// [`Ctx::calls`], for a run that has ended: when this is the run's last handle, the
    /// summaries are moved out rather than copied (a run's report of 10,000 calls otherwise
    /// copies 10,000 execution ids).
    pub fn into_calls(self) -> Vec<CallSummary> {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner.calls.into_inner().into_vec(),
            Err(inner) => inner.calls.lock().to_vec(),
        }
    }

    /// Calls `task` with `input`: from the cache when its key has an entry, otherwise on a worker
    /// (once, however many identical calls are made at the same time). In a durable run an
    /// uncached call's outcome is journaled, and a replay of the run returns it without running
    /// the task again.
    pub fn call<T: Task>(
        &self,
        task: T,
        input: T::Input,
    ) -> impl Future<Output = Result<T::Output, CallError>> + '_ {
        // Boxed when made: a fan-out moves each call's future several times before and while it
        // is first polled (into `join_all`'s queue, into its task), and a box moves as a
        // pointer. The call's own work is boxed again, inside: it keeps a kilobyte of state
        // across its awaits, and a call that follows an identical one (below) frees it as it
        // joins and waits in this outer box's 200 bytes. 10,000 followers woken together
        // resume faster from these small boxes, made in the order of the calls, than from a
        // kilobyte box each (2.8-3.3 ms from the body's return to the last answer, against
        // 3.7-5.0 ms: benches/README.md), and a hit pays one more small allocation.
        Box::pin(async move {
            let (mut task, mut input, mut resumed) = (task, input, None);
            loop {
                let Follow {
                    mut following,
                    task: t,
                    input: i,
                    resumed: r,
                } = match Box::pin(self.call_boxed(task, input, resumed)).await? {
                    Step::Done(output) => return Ok(output),
                    Step::Follow(follow) => follow,
                };
                if let Some(output) = following.wait(&r.span).await {
                    return Self::decoded(t.spec(), output);
                }
                // The leader's call was dropped: join again (perhaps to lead), with the key and
                // the input made again.
                (task, input, resumed) = (t, i, Some(r));
            }
        })
    }

    /// [`Ctx::call`]'s body, up to its answer or until it follows an identical call of the
    /// run; `resumed` when it follows no more (its leader's call was dropped) and joins again.
    async fn call_boxed<T: Task>(
        &self,
        task: T,
        input: T::Input,
        resumed: Option<Resumed>,
    ) -> Result<Step<T>, CallError> {
        let spec = task.spec();
        let inner = &*self.inner;
        if self.is_cancelled() {
            return Err(CallError::Cancelled {
                run: inner.run_id.to_string(),
            });
        }
        // Everything up to the first await runs when the call is first polled, so positions
        // follow the order in which the workflow makes its calls (join_all included).
        let seq = match &resumed {
            Some(r) => r.seq,
            None => inner.seq.fetch_add(1, Ordering::Relaxed),
        };
        if seq >= inner.limits.max_calls {
            return Err(self.fatal(CallError::TooManyCalls {
                run: inner.run_id.to_string(),
                limit: inner.limits.max_calls,
            }));
        }
        let input_error = |detail: String| CallError::Input {
            task: spec.name().to_string(),
            detail,
        };
        let journaled = !spec.options.cache && inner.durable.is_some();
        let cache_key = || {
            let inputs = task
                .key_inputs(&input)
                .map_err(|e| input_error(e.to_string()))?;
            spec.cache_key(&inner.project, &inner.domain, inputs)
                .map_err(|e| input_error(e.to_string()))
        };
        let key = if spec.options.cache || journaled {
            let key = cache_key()?;
            Some(match &inner.durable {
                Some(d) if journaled => {
                    let occurrence = {
                        let mut seen = d.occurrences.lock();
                        let n = seen.entry(key.digest).or_insert(0);
                        *n += 1;
                        *n - 1
                    };
                    key.journal(&inner.run_id, occurrence)
                }
                _ => key,
            })
        } else {
            None
        };
        if let Some(d) = inner.durable.as_ref().filter(|_| resumed.is_none()) {
            self.check_replay(d, seq, spec.name(), key.as_ref().map(|k| k.digest))?;
        }
        // Back-pressure: at most `max_in_flight` calls of this run are with the schedulers.
        // A free place is taken at once (a fan-out's calls mostly find one); only a call that
        // must wait pays for a place in the semaphore's queue.
        let closed = || CallError::Cancelled {
            run: inner.run_id.to_string(),
        };
        let _permit = match inner.in_flight.try_acquire() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                inner.in_flight.acquire().await.map_err(|_| closed())?
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(closed()),
        };
        if self.is_cancelled() {
            return Err(CallError::Cancelled {
                run: inner.run_id.to_string(),
            });
        }
        let (span, resumed_looked_up) = match resumed {
            Some(r) => (r.span, Some(r.looked_up)),
            None => (Self::call_span(spec, inner, key.as_ref()), None),
        };
        let overwrite = inner.options.overwrite_cache && !journaled;
        let max_age = spec.options.max_age.filter(|_| !journaled);
        let attempt = inner.durable.as_ref().map_or(0, |d| d.how.attempt);
        let mut leading = None;
        // The hit path: the entry is read here, on the caller's task; the schedulers (actors,
        // single flight, leases) are for misses, held leases, overwrites and uncached calls.
        // (A call joining again after its leader's was dropped read it before.)
        let mut looked_up = resumed_looked_up.unwrap_or(false);
        let mut hit = None;
        if let Some(key) = key
            .as_ref()
            .filter(|_| spec.options.cache && !overwrite && resumed_looked_up.is_none())
        {
            // Boxed: the store's read futures are large, and a run holds many calls at once.
            match Box::pin(self.hit(spec, key, max_age, seq, attempt))
                .instrument(span.clone())
                .await
            {
                Ok(result) => hit = Some(result),
                Err(read) => looked_up = read,
            }
        }
        let result = match hit {
            Some(result) => result,
            None => {
                let encoded =
                    rmp_serde::to_vec_named(&input).map_err(|e| input_error(e.to_string()))?;
                // Identical cached calls of this run that missed while one of them is with the
                // schedulers: the first leads, the others follow it and are answered together
                // when it has its answer. (Hits need no flight: each is one read.) Joined once
                // the input is encoded: a leader that failed to encode it would let its
                // followers go, only for each to fail in turn.
                if let Some(digest) = key
                    .as_ref()
                    .filter(|_| spec.options.cache && !overwrite)
                    .map(|k| k.digest)
                {
                    match inner
                        .flights
                        .join(digest, &span, inner.scheduler.catalog(), seq)
                    {
                        Join::Lead(lead) => leading = Some(lead),
                        // A follower keeps neither its key, its encoded input nor its place
                        // among the calls in flight while it waits (it is not with the
                        // schedulers): all are freed now, as each call joins, not all at once
                        // when the leader wakes thousands of followers.
                        Join::Follow(following) => {
                            return Ok(Step::Follow(Follow {
                                following,
                                task,
                                input,
                                resumed: Resumed {
                                    seq,
                                    span,
                                    looked_up,
                                },
                            }));
                        }
                    }
                }
                // Boxed: the miss path's state stays off the hit path's future.
                Box::pin(inner.scheduler.call(CallRequest {
                    task: spec.shared_name().clone(),
                    input: encoded,
                    key,
                    overwrite,
                    project: inner.project.clone(),
                    domain: inner.domain.clone(),
                    version: spec.shared_version().clone(),
                    run: Some(inner.run_id.clone()),
                    lease_ttl: spec.options.lease_ttl,
                    max_age,
                    fail_fast: spec.options.retries == 0,
                    journal: journaled,
                    seq: Some(seq),
                    attempt,
                    looked_up,
                }))
                .instrument(span.clone())
                .await
            }
        };
        inner.calls.lock().push(CallSummary {
            task: spec.shared_name().clone(),
            execution: result.execution.clone(),
            status: result.status,
            duration: result.duration,
            error: result.output.as_ref().err().map(ToString::to_string),
            cache_error: result.cache_error.clone(),
        });
        if let Some(lead) = leading {
            let called = Called {
                task: spec.shared_name(),
                version: spec.shared_version(),
                run: &inner.run_id,
                project: &inner.project,
                domain: &inner.domain,
                attempt,
            };
            // The call span is still open: followers' wait spans link to it. Boxed: only a
            // call that missed leads (one more allocation, beside a miss's store round), and
            // every call's future, hits included, would otherwise carry this one's state (a
            // fan-out allocates and moves each call's).
            Box::pin(lead.answer(
                &result,
                called,
                inner.scheduler.catalog(),
                &inner.calls,
                span.id(),
            ))
            .await;
        }
        Self::decoded(spec, result.output).map(Step::Done)
    }

    /// A call's span.
    fn call_span(
        spec: &cairn_engine::task::TaskSpec,
        inner: &Inner,
        key: Option<&cairn_engine::catalog::CacheKey>,
    ) -> tracing::Span {
        tracing::info_span!(
            sc::SPAN_CALL,
            { sc::TASK } = spec.name(),
            { sc::RUN_ID } = &*inner.run_id,
            { sc::PROJECT } = &*inner.project,
            { sc::DOMAIN } = &*inner.domain,
            { sc::CACHE_KEY } = key.as_ref().map(|k| tracing::field::display(k.digest)),
            { sc::EXECUTION } = tracing::field::Empty,
            { sc::CACHE_STATUS } = tracing::field::Empty,
        )
    }

    /// A call's outcome as the workflow sees it: the output decoded, or the error.
    fn decoded<O: serde::de::DeserializeOwned>(
        spec: &cairn_engine::task::TaskSpec,
        output: Result<Arc<[u8]>, TaskError>,
    ) -> Result<O, CallError> {
        let bytes = output.map_err(|error| match error {
            TaskError::Cancelled { run } => CallError::Cancelled { run },
            error => CallError::Task {
                task: spec.name().to_string(),
                error,
            },
        })?;
        rmp_serde::from_slice(&bytes).map_err(|e| CallError::Output {
            task: spec.name().to_string(),
            detail: e.to_string(),
        })
    }

    /// The hit path of a cached call: one point read of the entry on the caller's task, in a
    /// `cairn.resolve` span; on a hit, the call's record is queued and its answer returned
    /// with no actor in between. `Err(true)`: no live entry (or a corrupt one), so the
    /// scheduler need not read it again; `Err(false)`: the read failed, and the scheduler's
    /// resolve deals with the store (retrying, or running the task uncached).
    async fn hit(
        &self,
        spec: &cairn_engine::task::TaskSpec,
        key: &cairn_engine::catalog::CacheKey,
        max_age: Option<Duration>,
        seq: u64,
        attempt: u32,
    ) -> Result<CallResult, bool> {
        let inner = &*self.inner;
        let catalog = inner.scheduler.catalog();
        let started = tokio::time::Instant::now();
        let started_ms = catalog.now_ms();
        let resolve = tracing::info_span!(
            sc::SPAN_RESOLVE,
            { sc::CACHE_KEY } = %key.digest,
            { sc::RESOLVE_OUTCOME } = tracing::field::Empty,
        );
        // Other calls of this run in flight (a fan-out): the read is gathered with theirs.
        let crowd = inner
            .limits
            .max_in_flight
            .max(1)
            .saturating_sub(inner.in_flight.available_permits())
            > 1;
        let found = catalog
            .lookup_output_among(key, max_age, crowd)
            .instrument(resolve.clone())
            .await;
        let output = match found {
            Ok(Some(output)) => output,
            Ok(None) | Err(cairn_engine::Error::Corrupt { .. }) => {
                resolve.record(sc::RESOLVE_OUTCOME, "miss");
                return Err(true);
            }
            Err(_) => {
                resolve.record(sc::RESOLVE_OUTCOME, "failed");
                return Err(false);
            }
        };
        resolve.record(sc::RESOLVE_OUTCOME, "hit");
        drop(resolve);
        let execution = catalog.new_execution_id();
        let duration = started.elapsed();
        let call = tracing::Span::current();
        call.record(sc::EXECUTION, execution.as_str());
        call.record(sc::CACHE_STATUS, tracing::field::debug(CacheStatus::Hit));
        cairn_engine::telemetry::metrics::call_answered(
            spec.shared_name(),
            CacheStatus::Hit,
            duration,
            None,
        );
        catalog
            .record(cairn_engine::catalog::ExecutionRecord {
                execution: execution.clone(),
                run: Some(inner.run_id.clone()),
                project: inner.project.clone(),
                domain: inner.domain.clone(),
                task: spec.shared_name().clone(),
                version: spec.shared_version().clone(),
                key: Some(key.digest),
                status: CacheStatus::Hit,
                started_at_ms: started_ms,
                duration_us: duration.as_micros() as u64,
                wait_us: 0,
                waited_for: None,
                error: None,
                seq: Some(seq),
                attempt,
                executed: false,
                cache_error: None,
            })
            .await;
        Ok(CallResult {
            output: Ok(output),
            status: CacheStatus::Hit,
            execution,
            duration,
            cache_error: None,
            waited_for: None,
        })
    }

    /// Checks call `seq` of a replay against what the latest earlier attempt called there.
    fn check_replay(
        &self,
        d: &Durable,
        seq: u64,
        task: &str,
        key: Option<Digest>,
    ) -> Result<(), CallError> {
        let Some(past) = d.how.previous.get(&seq) else {
            return Ok(());
        };
        if past.task == task && past.key == key {
            return Ok(());
        }
        let show = |task: &str, key: Option<Digest>| match key {
            Some(k) => format!("task {task:?} (key {k})"),
            None => format!("task {task:?}"),
        };
        let error = CallError::ReplayMismatch {
            run: self.inner.run_id.to_string(),
            seq,
            attempt: d.how.attempt,
            got: show(task, key),
            previous: past.attempt,
            expected: show(&past.task, past.key),
        };
        Err(self.fatal(error))
    }
}
