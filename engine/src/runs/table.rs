//! The run table: create (idempotently), take over, end exactly once, cancel, list, and collect
//! what ended runs leave behind. Every operation is one short transaction, idempotent under an
//! unknown commit result (each re-reads what it is about to change).

use super::record::{
    CancelNotice, Idempotency, IdempotencyRecord, NewRun, RunAttempt, RunOwner, RunRecord,
    RunStatus,
};
use super::text::{self, Part};
use crate::catalog::records::{decode, encode};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::keys::{self, hex, unhex};
use crate::nodes::Incarnation;
use crate::store::{RangeOptions, RetryPolicy, Store, Transaction, transact};
use std::sync::Arc;
use std::time::Duration;

/// Limits of the run table.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// Largest input (JSON text) accepted; larger submissions are refused before anything is
    /// written.
    pub max_input_bytes: usize,
    /// Largest output (JSON text) kept; a larger one is not kept (its size is), and the run
    /// still ends.
    pub max_output_bytes: usize,
    /// Errors are cut to this many bytes.
    pub max_error_bytes: usize,
    /// How long an ended run's journal is kept before it is removed.
    pub journal_retention: Duration,
    /// How long an `Idempotency-Key` maps to its run.
    pub idempotency_retention: Duration,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_input_bytes: 1024 * 1024,
            max_output_bytes: 1024 * 1024,
            max_error_bytes: 64 * 1024,
            journal_retention: Duration::from_secs(3600),
            idempotency_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// What [`Runs::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The run was created; its owner should run it.
    New(RunRecord),
    /// The idempotency key already names this run (same request): nothing was created.
    Existing(RunRecord),
    /// The idempotency key names a run created by a different request.
    Conflict {
        /// The run the key names.
        run_id: String,
    },
}

/// What [`Runs::finish`] or [`Runs::cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// This call ended the run. `next` is a run it started: the tick a schedule had buffered
    /// behind this one, now owned by the caller, which should run it.
    Ended {
        /// The run as ended.
        record: RunRecord,
        /// A run started by this end.
        next: Option<Box<RunRecord>>,
    },
    /// The run had already ended: the first end wins.
    AlreadyEnded(RunRecord),
    /// Another incarnation owns the run now: the caller may not end it.
    Fenced(RunRecord),
}

/// Which runs to list (every given field must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this workflow.
    pub workflow: Option<String>,
    /// Only this project.
    pub project: Option<String>,
    /// Only this domain.
    pub domain: Option<String>,
    /// Only runs in this state.
    pub status: Option<RunStatus>,
    /// Only runs fired by this schedule.
    pub schedule: Option<String>,
}

impl RunFilter {
    fn matches(&self, r: &RunRecord) -> bool {
        self.workflow.as_ref().is_none_or(|w| *w == r.workflow)
            && self.project.as_ref().is_none_or(|p| *p == r.project)
            && self.domain.as_ref().is_none_or(|d| *d == r.domain)
            && self.status.is_none_or(|s| s == r.status)
            && self
                .schedule
                .as_ref()
                .is_none_or(|s| Some(s) == r.schedule.as_ref())
    }
}

/// One page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPage {
    /// The runs (inputs and outputs only when kept inline).
    pub runs: Vec<RunRecord>,
    /// Pass this to get the next (older) page; `None` on the last page.
    pub next: Option<String>,
}

/// What one pass of [`Runs::collect`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Journal entries of ended runs.
    pub journal_entries: u64,
    /// Expired idempotency keys.
    pub idempotency_keys: u64,
    /// Old cancellation notices.
    pub cancel_notices: u64,
}

/// Index entries examined at most per page, so a filter that matches nothing cannot make one
/// request read the whole history; the page then comes back short with a cursor.
const MAX_SCANNED_PER_PAGE: usize = 10_000;
/// Run records read per listing round trip.
const LIST_BATCH: usize = 256;
/// Rows removed per collection transaction.
const COLLECT_BATCH: usize = 256;
/// How long cancellation notices are kept for nodes that were briefly away.
const CANCEL_NOTICE_RETENTION_MS: i64 = 3_600_000;

/// The run table of one store.
pub struct Runs<S: Store> {
    store: S,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    limits: RunLimits,
}

impl<S: Store> Clone for Runs<S> {
    fn clone(&self) -> Self {
        Runs {
            store: self.store.clone(),
            clock: self.clock.clone(),
            policy: self.policy.clone(),
            limits: self.limits.clone(),
        }
    }
}

/// The record of `run_id`, read in `tx`.
pub(crate) async fn read_run_in<T: Transaction>(tx: &T, run_id: &str) -> Result<Option<RunRecord>> {
    read_run(tx, run_id).await
}

async fn read_run<T: Transaction>(tx: &T, run_id: &str) -> Result<Option<RunRecord>> {
    match tx.get(&keys::run(run_id), false).await? {
        Some(raw) => Ok(Some(decode(|| format!("run record {run_id:?}"), &raw)?)),
        None => Ok(None),
    }
}

/// Writes a new run owned by `owner` (generation 1, attempt 1) in `tx`, with its time and
/// active-run index rows. Used by [`Runs::create`] and by schedules claiming ticks, so a
/// claimed tick and its run appear together or not at all.
pub(crate) fn insert_in<T: Transaction>(
    tx: &T,
    new: &NewRun,
    owner: &Incarnation,
    now: i64,
    idempotency_key: Option<&str>,
) -> RunRecord {
    let owner = RunOwner {
        node: owner.node.clone(),
        incarnation: owner.incarnation,
        generation: 1,
    };
    let record = RunRecord {
        run_id: new.run_id.clone(),
        workflow: new.workflow.clone(),
        project: new.project.clone(),
        domain: new.domain.clone(),
        overwrite_cache: new.overwrite_cache,
        input: text::put(tx, &new.run_id, Part::Input, &new.input, usize::MAX),
        status: RunStatus::Running,
        output: None,
        error: None,
        node: owner.node.clone(),
        attempts: vec![RunAttempt {
            attempt: 1,
            node: owner.node.clone(),
            incarnation: owner.incarnation,
            started_at_ms: now,
            reason: None,
        }],
        owner: Some(owner.clone()),
        generation: 1,
        schedule: new.schedule.clone(),
        tick: new.tick,
        started_at_ms: now,
        finished_at_ms: None,
        trace: None,
        idempotency_key: idempotency_key.map(str::to_string),
        cancelled_by: None,
    };
    write_record(tx, &record);
    tx.set(&keys::run_by_time(now, &new.run_id), b"");
    tx.set(&keys::run_active(&new.run_id), &encode(&owner));
    record
}

/// Writes `record` (its inline texts; chunks are written by [`text::put`]).
fn write_record<T: Transaction>(tx: &T, record: &RunRecord) {
    let mut stored = record.clone();
    for t in [
        Some(&mut stored.input),
        stored.output.as_mut(),
        stored.error.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        if t.chunks > 0 {
            t.text = None;
        }
    }
    tx.set(&keys::run(&record.run_id), &encode(&stored));
}

/// Ends `record` in `tx` with `status`: its texts, its end time, its index rows; for a
/// scheduled run, the tick's outcome and the schedule's state, which may start the tick the
/// schedule buffered (returned, owned by `owner`).
async fn end_in<T: Transaction>(
    tx: &T,
    record: &mut RunRecord,
    status: RunStatus,
    outcome: &std::result::Result<String, String>,
    owner: &Incarnation,
    now: i64,
    limits: &RunLimits,
) -> Result<Option<RunRecord>> {
    let run = record.run_id.clone();
    record.status = status;
    record.finished_at_ms = Some(now);
    record.owner = None;
    match outcome {
        Ok(output) => {
            record.output = Some(text::put(
                tx,
                &run,
                Part::Output,
                output,
                limits.max_output_bytes,
            ))
        }
        Err(error) => {
            let error = text::truncate(error, limits.max_error_bytes);
            record.error = Some(text::put(tx, &run, Part::Error, &error, usize::MAX));
        }
    }
    write_record(tx, record);
    tx.clear(&keys::run_active(&run));
    let retention = i64::try_from(limits.journal_retention.as_millis()).unwrap_or(i64::MAX);
    tx.set(&keys::run_gc(now.saturating_add(retention), &run), b"");
    match (&record.schedule, record.tick) {
        (Some(schedule), Some(tick)) => {
            let outcome = outcome.as_ref().map(drop).map_err(Clone::clone);
            crate::schedule::run_ended_in(tx, schedule, tick, &outcome, owner, now).await
        }
        _ => Ok(None),
    }
}

impl<S: Store> Runs<S> {
    /// The runs in `store`; `clock` stamps starts and ends.
    pub fn new(store: S, clock: Arc<dyn Clock>) -> Self {
        Self::with_limits(store, clock, RunLimits::default())
    }

    /// With given limits.
    pub fn with_limits(store: S, clock: Arc<dyn Clock>, limits: RunLimits) -> Self {
        Runs {
            store,
            clock,
            policy: RetryPolicy::default(),
            limits,
        }
    }

    /// Draws retry jitter from `entropy`.
    pub fn with_entropy(mut self, entropy: crate::entropy::Entropy) -> Self {
        self.policy.entropy = entropy;
        self
    }

    /// The limits.
    pub fn limits(&self) -> &RunLimits {
        &self.limits
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Now, by this table's clock (Unix ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Creates `new`, owned by `owner`. With an idempotency key, a key seen before (within its
    /// retention) returns the run it created, or [`Created::Conflict`] if the request differs;
    /// concurrent submissions with one key create one run. Refuses an input over the limit and
    /// an id already taken by another run.
    pub async fn create(
        &self,
        new: &NewRun,
        owner: &Incarnation,
        idempotency: Option<&Idempotency>,
    ) -> Result<Created> {
        if new.input.len() > self.limits.max_input_bytes {
            return Err(Error::InvalidInput {
                what: "run input".into(),
                reason: format!(
                    "{} bytes of JSON; at most {} are accepted",
                    new.input.len(),
                    self.limits.max_input_bytes
                ),
            });
        }
        let now = self.clock.now_ms();
        let limits = &self.limits;
        transact(&self.store, &self.policy, |tx| async move {
            if let Some(idem) = idempotency {
                let key = keys::idempotency(&idem.key);
                if let Some(raw) = tx.get(&key, false).await? {
                    let seen: IdempotencyRecord =
                        decode(|| format!("idempotency key {:?}", idem.key), &raw)?;
                    if seen.expires_at_ms > now {
                        if seen.request != idem.request {
                            return Ok(Created::Conflict {
                                run_id: seen.run_id,
                            });
                        }
                        let record =
                            read_run(&tx, &seen.run_id)
                                .await?
                                .ok_or_else(|| Error::Corrupt {
                                    what: format!("idempotency key {:?}", idem.key),
                                    detail: format!("its run {:?} does not exist", seen.run_id),
                                })?;
                        // Our own creation, if an unknown commit result made us retry.
                        return Ok(if seen.run_id == new.run_id {
                            Created::New(record)
                        } else {
                            Created::Existing(record)
                        });
                    }
                }
            }
            if let Some(existing) = read_run(&tx, &new.run_id).await? {
                let ours = existing.attempts.first().is_some_and(|a| {
                    a.node == owner.node
                        && a.incarnation == owner.incarnation
                        && a.started_at_ms == now
                }) && existing.workflow == new.workflow;
                if ours {
                    return Ok(Created::New(existing));
                }
                return Err(Error::InvalidInput {
                    what: format!("run id {:?}", new.run_id),
                    reason: "another run already has this id".into(),
                });
            }
            let record = insert_in(&tx, new, owner, now, idempotency.map(|i| i.key.as_str()));
            if let Some(idem) = idempotency {
                let retention =
                    i64::try_from(limits.idempotency_retention.as_millis()).unwrap_or(i64::MAX);
                let expires_at_ms = now.saturating_add(retention);
                tx.set(
                    &keys::idempotency(&idem.key),
                    &encode(&IdempotencyRecord {
                        run_id: new.run_id.clone(),
                        request: idem.request,
                        expires_at_ms,
                    }),
                );
                tx.set(&keys::idempotency_expiry(expires_at_ms, &idem.key), b"");
            }
            Ok(Created::New(record))
        })
        .await
    }

    /// Records the traceparent of a run's first attempt (later attempts link to its trace).
    pub async fn set_trace(&self, run_id: &str, traceparent: &str) -> Result<()> {
        transact(&self.store, &self.policy, |tx| async move {
            if let Some(mut record) = read_run(&tx, run_id).await?
                && record.trace.is_none()
            {
                record.trace = Some(traceparent.to_string());
                write_record(&tx, &record);
            }
            Ok(())
        })
        .await
    }

    /// Ends `run_id` as its owner `owner` (with the generation it runs under): succeeded with
    /// `output` (JSON text) or failed with `error`. The first end wins, and an owner whose
    /// generation was taken over can never end the run.
    pub async fn finish(
        &self,
        run_id: &str,
        owner: &RunOwner,
        outcome: std::result::Result<String, String>,
    ) -> Result<Ended> {
        let now = self.clock.now_ms();
        let (outcome, limits) = (&outcome, &self.limits);
        let me = owner.incarnation();
        let me = &me;
        transact(&self.store, &self.policy, |tx| async move {
            let mut record = read_run(&tx, run_id)
                .await?
                .ok_or_else(|| no_such_run(run_id))?;
            let status = if outcome.is_ok() {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            };
            if record.status.is_final() {
                // Ended by this owner already (an earlier attempt of this call that reported
                // "maybe committed"): only the owner of this generation ends it with this
                // status, as a takeover raises the generation and a cancel ends it cancelled.
                let ours = record.generation == owner.generation
                    && record.status == status
                    && record.attempts.last().is_some_and(|a| {
                        a.node == owner.node && a.incarnation == owner.incarnation
                    });
                if ours {
                    let next = match (&record.schedule, record.tick) {
                        (Some(schedule), Some(tick)) => {
                            crate::schedule::run_started_by_end(&tx, schedule, tick, me).await?
                        }
                        _ => None,
                    };
                    return Ok(Ended::Ended {
                        record,
                        next: next.map(Box::new),
                    });
                }
                return Ok(Ended::AlreadyEnded(record));
            }
            if record.owner.as_ref() != Some(owner) {
                return Ok(Ended::Fenced(record));
            }
            let next = end_in(&tx, &mut record, status, outcome, me, now, limits).await?;
            Ok(Ended::Ended {
                record,
                next: next.map(Box::new),
            })
        })
        .await
    }

    /// Cancels `run_id` on behalf of `by`: it ends at once as `cancelled` (whether its owner
    /// is alive or not), and a notice tells every node to stop its calls and jobs.
    pub async fn cancel(&self, run_id: &str, by: &Incarnation, reason: &str) -> Result<Ended> {
        let now = self.clock.now_ms();
        let limits = &self.limits;
        let op = self.policy.entropy.next_u64();
        transact(&self.store, &self.policy, |tx| async move {
            let mut record = read_run(&tx, run_id)
                .await?
                .ok_or_else(|| no_such_run(run_id))?;
            if record.status.is_final() {
                // Cancelled by this very call (an earlier attempt that reported "maybe
                // committed"): its operation id is the run's. Two cancels of one node at one
                // instant with one reason are still two cancels: only one ended the run.
                if record.cancelled_by == Some(op) {
                    let next = match (&record.schedule, record.tick) {
                        (Some(schedule), Some(tick)) => {
                            crate::schedule::run_started_by_end(&tx, schedule, tick, by).await?
                        }
                        _ => None,
                    };
                    return Ok(Ended::Ended {
                        record,
                        next: next.map(Box::new),
                    });
                }
                return Ok(Ended::AlreadyEnded(record));
            }
            let outcome = Err(reason.to_string());
            record.cancelled_by = Some(op);
            let next = end_in(
                &tx,
                &mut record,
                RunStatus::Cancelled,
                &outcome,
                by,
                now,
                limits,
            )
            .await?;
            let seq_key = keys::cancel_seq();
            let seq = match tx.get(&seq_key, false).await? {
                Some(v) => u64_of(&v, "the cancellation counter")?,
                None => 0,
            };
            tx.set(&seq_key, &(seq + 1).to_be_bytes());
            tx.set(
                &keys::cancel(seq),
                &encode(&CancelNotice {
                    run_id: run_id.to_string(),
                    at_ms: now,
                }),
            );
            Ok(Ended::Ended {
                record,
                next: next.map(Box::new),
            })
        })
        .await
    }

    /// Takes `run_id` over from `from` (which must still own it: a gone incarnation) for `me`,
    /// with the next generation and a new attempt saying why. `None` when the run ended or
    /// another node took it first.
    pub async fn take_over(
        &self,
        run_id: &str,
        from: &RunOwner,
        me: &Incarnation,
        reason: &str,
    ) -> Result<Option<RunRecord>> {
        let now = self.clock.now_ms();
        transact(&self.store, &self.policy, |tx| async move {
            let Some(mut record) = read_run(&tx, run_id).await? else {
                tx.clear(&keys::run_active(run_id));
                return Ok(None);
            };
            let mine = RunOwner {
                node: me.node.clone(),
                incarnation: me.incarnation,
                generation: from.generation + 1,
            };
            if record.owner.as_ref() == Some(&mine) {
                return Ok(Some(record)); // our own takeover, retried after an unknown result
            }
            if record.status.is_final() {
                tx.clear(&keys::run_active(run_id));
                return Ok(None);
            }
            if record.owner.as_ref() != Some(from) {
                return Ok(None);
            }
            record.generation = mine.generation;
            record.node = me.node.clone();
            record.attempts.push(RunAttempt {
                attempt: record.attempts.len() as u32 + 1,
                node: me.node.clone(),
                incarnation: me.incarnation,
                started_at_ms: now,
                reason: Some(reason.to_string()),
            });
            record.owner = Some(mine.clone());
            write_record(&tx, &record);
            tx.set(&keys::run_active(run_id), &encode(&mine));
            Ok(Some(record))
        })
        .await
    }

    /// The run `run_id`, with its input, output and error read in full.
    pub async fn get(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let tx = self.store.begin_read().await?;
        let Some(raw) = tx.get(&keys::run(run_id), true).await? else {
            return Ok(None);
        };
        let mut record: RunRecord = decode(|| format!("run record {run_id:?}"), &raw)?;
        text::load(&tx, run_id, Part::Input, &mut record.input).await?;
        if let Some(t) = &mut record.output {
            text::load(&tx, run_id, Part::Output, t).await?;
        }
        if let Some(t) = &mut record.error {
            text::load(&tx, run_id, Part::Error, t).await?;
        }
        Ok(Some(record))
    }

    /// Running runs and their owners, in run-id order after `after`, at most `limit`.
    pub async fn active(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, RunOwner)>> {
        let (mut begin, end) = keys::runs_active();
        if let Some(after) = after {
            begin = keys::run_active(after);
            begin.push(0);
        }
        let tx = self.store.begin_read().await?;
        let rows = tx
            .get_range(&begin, &end, RangeOptions::all().limit(limit).snapshot())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for kv in rows {
            let Some(run) = keys::run_of_active_key(&kv.key) else {
                continue;
            };
            match decode::<RunOwner>(|| format!("owner of run {run:?}"), &kv.value) {
                Ok(owner) => out.push((run, owner)),
                Err(e) => tracing::warn!(error = %e, "skipping an active-run row"),
            }
        }
        Ok(out)
    }

    /// How many cancellations there have been (the next notice's number).
    pub async fn cancel_seq(&self) -> Result<u64> {
        let tx = self.store.begin_read().await?;
        match tx.get(&keys::cancel_seq(), true).await? {
            Some(v) => u64_of(&v, "the cancellation counter"),
            None => Ok(0),
        }
    }

    /// Cancellation notices numbered `from` and later, with their numbers.
    pub async fn cancels_since(&self, from: u64) -> Result<Vec<(u64, CancelNotice)>> {
        let (begin, end) = keys::cancels_from(from);
        let tx = self.store.begin_read().await?;
        let mut out = Vec::new();
        for kv in tx
            .get_range(&begin, &end, RangeOptions::all().limit(10_000).snapshot())
            .await?
        {
            let Some(seq) = keys::seq_of_cancel_key(&kv.key) else {
                continue;
            };
            out.push((seq, decode(|| format!("cancel notice {seq}"), &kv.value)?));
        }
        Ok(out)
    }

    /// Removes what ended runs leave behind once it is due: journals past their retention,
    /// expired idempotency keys, old cancellation notices. Bounded transactions; safe to run
    /// on several nodes at once. The counts are lower bounds when a commit's result was unknown
    /// (its retry finds the work done and counts nothing); what is due is removed all the same.
    pub async fn collect(&self) -> Result<Collected> {
        let now = self.clock.now_ms();
        let mut done = Collected::default();
        // Journals of ended runs.
        loop {
            let (begin, end) = keys::run_gc_before(now);
            let tx = self.store.begin_read().await?;
            let due = tx
                .get_range(&begin, &end, RangeOptions::all().limit(16).snapshot())
                .await?;
            drop(tx);
            if due.is_empty() {
                break;
            }
            for row in due {
                let Some(run) = keys::run_of_gc_key(&row.key) else {
                    continue;
                };
                done.journal_entries += self.remove_journal(&run, &row.key).await?;
            }
        }
        // Expired idempotency keys.
        loop {
            let n = transact(&self.store, &self.policy, |tx| async move {
                let (begin, end) = keys::idempotency_expiry_before(now);
                let rows = tx
                    .get_range(&begin, &end, RangeOptions::all().limit(COLLECT_BATCH))
                    .await?;
                for kv in &rows {
                    if let Some(key) = keys::idempotency_of_expiry_key(&kv.key) {
                        let k = keys::idempotency(&key);
                        if let Some(raw) = tx.get(&k, false).await?
                            && let Ok(rec) = decode::<IdempotencyRecord>(String::new, &raw)
                            && rec.expires_at_ms <= now
                        {
                            tx.clear(&k);
                        }
                    }
                    tx.clear(&kv.key);
                }
                Ok(rows.len() as u64)
            })
            .await?;
            done.idempotency_keys += n;
            if n < COLLECT_BATCH as u64 {
                break;
            }
        }
        // Old cancellation notices (oldest first; stop at the first recent one).
        let n = transact(&self.store, &self.policy, |tx| async move {
            let (begin, end) = keys::cancels_from(0);
            let rows = tx
                .get_range(&begin, &end, RangeOptions::all().limit(COLLECT_BATCH))
                .await?;
            let mut n = 0;
            for kv in rows {
                let old = decode::<CancelNotice>(String::new, &kv.value)
                    .map_or(true, |c| c.at_ms < now - CANCEL_NOTICE_RETENTION_MS);
                if !old {
                    break;
                }
                tx.clear(&kv.key);
                n += 1;
            }
            Ok(n)
        })
        .await?;
        done.cancel_notices = n;
        Ok(done)
    }

    /// Removes the journal entries of `run` in batches, then its GC row.
    async fn remove_journal(&self, run: &str, gc_row: &[u8]) -> Result<u64> {
        let mut removed = 0;
        loop {
            let n = transact(&self.store, &self.policy, |tx| async move {
                let (begin, end) = keys::journal_of_run(run);
                let rows = tx
                    .get_range(&begin, &end, RangeOptions::all().limit(COLLECT_BATCH))
                    .await?;
                let entries: Vec<_> = rows
                    .iter()
                    .filter_map(|kv| keys::digest_of_journal(&kv.key))
                    .collect();
                // The blobs journaled outputs refer to lose those references.
                let metas: Vec<Vec<u8>> = entries
                    .iter()
                    .map(|d| keys::entry_part(d, keys::entry_part::META))
                    .collect();
                let refs: Vec<&[u8]> = metas.iter().map(Vec::as_slice).collect();
                let dropped: Vec<_> = entries
                    .iter()
                    .zip(tx.get_many(&refs, false).await?)
                    .filter_map(|(d, raw)| {
                        let stored: crate::catalog::records::StoredMeta =
                            rmp_serde::from_slice(&raw?).ok()?;
                        (!stored.blobs.is_empty()).then_some((*d, stored.blobs))
                    })
                    .collect();
                let unreferenced = crate::blobs::unreference(&tx, &dropped).await?;
                for d in &entries {
                    let (b, e) = keys::entry_range(d);
                    tx.clear_range(&b, &e);
                }
                for kv in &rows {
                    tx.clear(&kv.key);
                }
                unreferenced.apply(&tx);
                if rows.len() < COLLECT_BATCH {
                    tx.clear(gc_row);
                }
                Ok(rows.len() as u64)
            })
            .await?;
            removed += n;
            if n < COLLECT_BATCH as u64 {
                return Ok(removed);
            }
        }
    }

    /// Runs matching `filter`, newest first, `page_size` at a time, starting after `cursor`
    /// (the previous page's `next`). Inputs and outputs are present only when kept inline.
    pub async fn list(
        &self,
        filter: &RunFilter,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<RunPage> {
        let (begin, mut end) = keys::runs_by_time();
        if let Some(c) = cursor {
            end = unhex(c)
                .filter(|k| k.as_slice() >= begin.as_slice() && k.as_slice() < end.as_slice())
                .ok_or_else(|| Error::InvalidInput {
                    what: "page cursor".into(),
                    reason: format!("{c:?} is not a cursor of the run listing"),
                })?;
        }
        let page_size = page_size.clamp(1, 1_000);
        let mut runs = Vec::new();
        let mut scanned = 0;
        loop {
            // A read transaction per batch: a page that scans far stays within FoundationDB's
            // 5 s per transaction.
            let tx = self.store.begin_read().await?;
            let batch = LIST_BATCH.min(MAX_SCANNED_PER_PAGE - scanned).max(1);
            let index = tx
                .get_range(&begin, &end, RangeOptions::all().limit(batch).reverse())
                .await?;
            let exhausted = index.len() < batch;
            // One multi-key read for the batch's records, not one round trip each.
            let ids: Vec<Option<String>> = index
                .iter()
                .map(|kv| keys::run_of_time_key(&kv.key))
                .collect();
            let record_keys: Vec<Vec<u8>> = ids
                .iter()
                .map(|id| keys::run(id.as_deref().unwrap_or_default()))
                .collect();
            let refs: Vec<&[u8]> = record_keys.iter().map(Vec::as_slice).collect();
            let values = tx.get_many(&refs, true).await?;
            for (i, (kv, raw)) in index.iter().zip(values).enumerate() {
                scanned += 1;
                end = kv.key.clone();
                let (Some(id), Some(raw)) = (&ids[i], raw) else {
                    continue;
                };
                let run: RunRecord = decode(|| format!("run record {id:?}"), &raw)?;
                if filter.matches(&run) {
                    runs.push(run);
                    if runs.len() == page_size {
                        let last_in_store = exhausted && i + 1 == index.len();
                        return Ok(RunPage {
                            runs,
                            next: (!last_in_store).then(|| hex(&end)),
                        });
                    }
                }
            }
            if exhausted {
                return Ok(RunPage { runs, next: None });
            }
            if scanned >= MAX_SCANNED_PER_PAGE {
                return Ok(RunPage {
                    runs,
                    next: Some(hex(&end)),
                });
            }
        }
    }
}

fn no_such_run(run_id: &str) -> Error {
    Error::RunNotFound {
        run: run_id.to_string(),
    }
}

fn u64_of(v: &[u8], what: &str) -> Result<u64> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
        Error::Corrupt {
            what: what.to_string(),
            detail: format!("{} bytes where 8 belong", v.len()),
        }
    })?))
}
