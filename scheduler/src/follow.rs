//! Identical cached calls of one run, in flight at the same time, made once.
//!
//! A cached call that misses joins its run's flight of the key. The first one leads: it goes to
//! the schedulers like any call that misses. The others follow it: they wait on one shared
//! cell, and when the leader has its answer it answers all of them in one step (their records
//! queued as one message, their call summaries kept as one group), then wakes them together, in
//! the order the run made them. A follower holds little of its call while it waits (its key,
//! its encoded input, its place among the run's calls in flight and the call's working state
//! are freed as it joins: `Ctx::call`) and only takes the shared output when woken. Hits never
//! join: each is one read.
//!
//! The schedulers' single flight deduplicates identical calls too, but it answers each call as
//! its own message, one by one; this answers a run's followers as one. Calls from different
//! runs (or processes) still meet in the schedulers and the store.
//!
//! Statuses follow the scheduler's rule for calls that join a flight: a follower of a leader
//! that hit hits, one whose leader's cache could not be read has `LookupFailure`, otherwise it
//! `Waited` for the leader's execution (or for what the leader itself waited for), or, when the
//! leader failed, is a `Miss` with its error.

use crate::actor::CallResult;
use crate::summaries::Summaries;
use cairn_engine::AnyStore;
use cairn_engine::catalog::{
    CacheStatus, CallGroup, Catalog, Digest, ExecutionRecord, GroupedCall,
};
use cairn_engine::det::Map;
use cairn_engine::task::TaskError;
use cairn_engine::telemetry::semconv as sc;
use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use tokio::time::Instant;

/// The run's flights, by key: a call leading a key's flight has an entry, which is `Some` once
/// another call follows it (one pointer per call in flight: most calls lead and are followed by
/// none).
#[derive(Default)]
pub(crate) struct Flights {
    by_key: Mutex<Map<Digest, Option<Box<Flight>>>>,
}

/// The followers of a leader.
struct Flight {
    followers: Vec<GroupedCall>,
    /// Their wait spans, linked to the leader's call span when it answers.
    waits: Vec<tracing::Span>,
    /// What they wait on.
    cell: Arc<Cell>,
}

#[derive(Default)]
struct Cell {
    /// `None`: the leader's call was dropped before it had an answer; follow again.
    outcome: OnceLock<Option<Followed>>,
    /// The followers' wakers, one slot each, taken by whoever sets the outcome. A plain list,
    /// not a `tokio::sync::Notify`: waking 10,000 followers through `notify_waiters` (its
    /// intrusive list, unlocked and locked again every 32 wakers) took about 1.2 ms, and each
    /// follower then locked it twice more to leave. Each with the follower's position in the
    /// run: they are woken in that order, which is the order a `join_all` of the calls
    /// collects their outputs in (woken out of order, it keeps the early ones in a heap).
    wakers: Mutex<Vec<(u64, Waker)>>,
}

impl Cell {
    /// Sets the outcome and wakes every follower registered.
    fn settle(&self, outcome: Option<Followed>) {
        let _ = self.outcome.set(outcome);
        // Taken after the outcome is set: a follower registering later sees the outcome under
        // this lock instead (see `Following::wait`).
        let mut wakers = std::mem::take(&mut *self.wakers.lock());
        wakers.sort_unstable_by_key(|(seq, _)| *seq);
        for (_, waker) in wakers {
            waker.wake();
        }
    }
}

/// What every follower of one leader gets.
struct Followed {
    output: Result<Arc<[u8]>, TaskError>,
    status: CacheStatus,
    /// The execution the followers waited behind.
    behind: String,
}

/// A call's part in its key's flight.
pub(crate) enum Join<'a> {
    /// Lead: make the call, then [`Leading::answer`] whoever followed.
    Lead(Leading<'a>),
    /// Follow a leader: [`Following::wait`] for its outcome.
    Follow(Following),
}

impl Flights {
    /// Leads the flight of `key`, or follows the call leading it. A follower's execution id is
    /// recorded in its call span now.
    pub(crate) fn join<'a>(
        &'a self,
        key: Digest,
        call: &tracing::Span,
        catalog: &Catalog<AnyStore>,
        seq: u64,
    ) -> Join<'a> {
        let mut by_key = self.by_key.lock();
        let flight = match by_key.entry(key) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(None);
                return Join::Lead(Leading {
                    flights: self,
                    key,
                    answered: false,
                });
            }
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        };
        let flight = flight.get_or_insert_with(|| {
            Box::new(Flight {
                followers: Vec::new(),
                waits: Vec::new(),
                cell: Arc::default(),
            })
        });
        let execution = catalog.new_execution_id();
        call.record(sc::EXECUTION, execution.as_str());
        let wait = tracing::info_span!(
            parent: call,
            sc::SPAN_WAIT,
            { sc::CACHE_KEY } = %key,
            { sc::WAIT_BEHIND } = tracing::field::Empty,
            { sc::WAIT_MS } = tracing::field::Empty,
            { sc::WAIT_OUTCOME } = tracing::field::Empty,
        );
        let since = Instant::now();
        flight.followers.push(GroupedCall {
            execution,
            seq: Some(seq),
            started: since,
            started_at_ms: catalog.now_ms(),
        });
        if wait.id().is_some() {
            flight.waits.push(wait.clone());
        }
        Join::Follow(Following {
            cell: flight.cell.clone(),
            wait,
            since,
            seq,
            slot: None,
        })
    }
}

/// A follower, waiting for its leader.
pub(crate) struct Following {
    cell: Arc<Cell>,
    wait: tracing::Span,
    since: Instant,
    /// The call's position in its run.
    seq: u64,
    /// Its place in the cell's waker list, once it has one.
    slot: Option<usize>,
}

impl Following {
    /// The leader's outcome as this follower's; `None` when the leader's call was dropped
    /// before it had one (join again: one of the followers leads). A named future of two
    /// references, not an `async fn`: a call keeps it inline while it waits, and thousands of
    /// waiting calls resume together.
    pub(crate) fn wait<'a>(&'a mut self, call: &'a tracing::Span) -> Wait<'a> {
        Wait {
            following: self,
            call,
        }
    }
}

/// [`Following::wait`].
pub(crate) struct Wait<'a> {
    following: &'a mut Following,
    call: &'a tracing::Span,
}

impl Future for Wait<'_> {
    type Output = Option<Result<Arc<[u8]>, TaskError>>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Wait { following, call } = &mut *self;
        let Following {
            cell,
            wait,
            since,
            seq,
            slot,
        } = &mut **following;
        let Some(followed) = std::task::ready!(outcome(cell, slot, *seq, cx)) else {
            return Poll::Ready(None);
        };
        // Recording looks each field up by name, even in a span nobody collects.
        if !wait.is_disabled() {
            wait.record(sc::WAIT_BEHIND, followed.behind.as_str());
            wait.record(
                sc::WAIT_MS,
                i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX),
            );
            let outcome = if followed.output.is_ok() {
                "hit"
            } else {
                "failed"
            };
            wait.record(sc::WAIT_OUTCOME, outcome);
        }
        if !call.is_disabled() {
            call.record(sc::CACHE_STATUS, tracing::field::debug(followed.status));
        }
        Poll::Ready(Some(followed.output.clone()))
    }
}

/// The outcome `cell` holds, once its leader set it; until then the waker of `cx` is in its
/// list, at `slot` (the follower at position `seq` of its run).
fn outcome<'c>(
    cell: &'c Cell,
    slot: &mut Option<usize>,
    seq: u64,
    cx: &mut Context<'_>,
) -> Poll<&'c Option<Followed>> {
    if let Some(outcome) = cell.outcome.get() {
        return Poll::Ready(outcome);
    }
    let mut wakers = cell.wakers.lock();
    // Looked at again under the lock: the outcome is set before the list is taken, so either
    // it is set now or this waker will be in the list taken.
    if let Some(outcome) = cell.outcome.get() {
        return Poll::Ready(outcome);
    }
    match *slot {
        Some(i) if i < wakers.len() => {
            if !wakers[i].1.will_wake(cx.waker()) {
                wakers[i].1 = cx.waker().clone();
            }
        }
        _ => {
            *slot = Some(wakers.len());
            wakers.push((seq, cx.waker().clone()));
        }
    }
    Poll::Pending
}

/// The leader of a flight. Dropped without answering (its call was dropped), it lets its
/// followers go, and they join again.
pub(crate) struct Leading<'a> {
    flights: &'a Flights,
    key: Digest,
    answered: bool,
}

/// What the leader's call was, for its followers' records.
pub(crate) struct Called<'a> {
    pub(crate) task: &'a Arc<str>,
    pub(crate) version: &'a Arc<str>,
    pub(crate) run: &'a Arc<str>,
    pub(crate) project: &'a Arc<str>,
    pub(crate) domain: &'a Arc<str>,
    pub(crate) attempt: u32,
}

impl Leading<'_> {
    /// Answers the followers with the leader's `result`: their records queued as one message
    /// (before any of them hears back), their summaries added as one group, then all woken
    /// together.
    pub(crate) async fn answer(
        mut self,
        result: &CallResult,
        called: Called<'_>,
        catalog: &Catalog<AnyStore>,
        summaries: &Mutex<Summaries>,
        leader: Option<tracing::Id>,
    ) {
        {
            let mut by_key = self.flights.by_key.lock();
            if by_key.get(&self.key).is_some_and(Option::is_none) {
                // Nobody followed: nothing to answer.
                by_key.remove(&self.key);
                self.answered = true;
                return;
            }
        }
        // A place in the record queue first (cancel-safe): from here on nothing waits, so the
        // followers are answered whole or, if this call is dropped here, let go.
        let slot = catalog.record_slot().await;
        let Some(flight) = self.flights.by_key.lock().remove(&self.key) else {
            return;
        };
        self.answered = true;
        let Some(flight) = flight else {
            return;
        };
        // Each follower's wait span is linked to the call span that led it (still open).
        for wait in &flight.waits {
            wait.follows_from(leader.clone());
        }
        let status = match result.status {
            CacheStatus::LookupFailure => CacheStatus::LookupFailure,
            CacheStatus::Hit => CacheStatus::Hit,
            _ if result.output.is_ok() => CacheStatus::Waited,
            _ => CacheStatus::Miss,
        };
        let behind = result
            .waited_for
            .clone()
            .unwrap_or_else(|| result.execution.clone());
        let waited_for = if status == CacheStatus::Waited {
            Some(behind.clone())
        } else {
            result.waited_for.clone()
        };
        let group = Arc::new(CallGroup {
            shared: ExecutionRecord {
                execution: String::new(),
                run: Some(called.run.clone()),
                project: called.project.clone(),
                domain: called.domain.clone(),
                task: called.task.clone(),
                version: called.version.clone(),
                key: Some(self.key),
                status,
                started_at_ms: 0,
                duration_us: 0,
                wait_us: 0,
                waited_for,
                error: result.output.as_ref().err().map(ToString::to_string),
                seq: None,
                attempt: called.attempt,
                executed: false,
                cache_error: result.cache_error.clone().filter(|_| {
                    matches!(status, CacheStatus::LookupFailure | CacheStatus::PutFailure)
                }),
            },
            answered: Instant::now(),
            calls: flight.followers,
        });
        let waits = group.shared.waited_for.is_some() || status == CacheStatus::Waited;
        if cairn_engine::telemetry::metrics::enabled() {
            for call in &group.calls {
                let duration = group.duration(call);
                cairn_engine::telemetry::metrics::call_answered(
                    called.task,
                    status,
                    duration,
                    waits.then_some(duration),
                );
            }
        }
        slot.send(group.clone());
        summaries.lock().push_group(group);
        flight.cell.settle(Some(Followed {
            output: result.output.clone(),
            status,
            behind,
        }));
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let flight = self.flights.by_key.lock().remove(&self.key).flatten();
        if let Some(flight) = flight {
            flight.cell.settle(None);
        }
    }
}
