//! The schedule operations over the store: register, poll (fire what is due), finish a run,
//! pause, resume, backfill (queued, fired by the next poll), list.

use super::plan::step;
use super::spec::ScheduleSpec;
use super::state::{LastPoll, ScheduleRecord, ScheduleState, TickRecord};
use crate::catalog::records::{decode, encode};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::keys;
use crate::nodes::Incarnation;
use crate::runs::{NewRun, RunRecord, RunTick, insert_in};
use crate::store::{RangeOptions, RetryPolicy, Store, Transaction, transact};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a scheduled run's workflow receives (as its JSON input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScheduledInput {
    /// The tick it runs for (Unix ms): the kickoff time, for cron and fixed-rate schedules alike.
    pub kickoff_ms: i64,
    /// The schedule's fixed input (MessagePack).
    pub input: Vec<u8>,
    /// A backfill run.
    pub backfill: bool,
}

/// A fired tick: claimed by [`Schedules::poll`] (live or backfilled ticks) or by the end of the
/// run before it (a buffered tick), together with its run, which the claiming node owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    /// The schedule.
    pub schedule: String,
    /// Its workflow.
    pub workflow: String,
    /// Project and domain of the run.
    pub project: String,
    /// Domain of the run.
    pub domain: String,
    /// The workflow's fixed input.
    pub input: Vec<u8>,
    /// The tick (the kickoff time handed to the workflow).
    pub tick_ms: i64,
    /// The run id: derived from the schedule and the tick, so a tick has one run.
    pub run_id: String,
    /// How late the tick fired (ms).
    pub late_ms: u64,
    /// The schedule's jitter: delay the start by up to this (ms).
    pub jitter_ms: u64,
    /// A backfill run.
    pub backfill: bool,
    /// The run created for it, owned by the instance that claimed it.
    pub run: RunRecord,
}

impl Fire {
    /// Tick `tick_ms` of `spec`, fired `late_ms` late, with its run.
    fn of(spec: &ScheduleSpec, tick_ms: i64, run: RunRecord, late_ms: u64, backfill: bool) -> Fire {
        Fire {
            schedule: spec.name.clone(),
            workflow: spec.workflow.clone(),
            project: spec.project.clone(),
            domain: spec.domain.clone(),
            input: spec.input.clone(),
            tick_ms,
            run_id: run.run_id.clone(),
            late_ms,
            jitter_ms: spec.jitter_ms,
            backfill,
            run,
        }
    }
}

/// Writes the tick records of `ticks` (skipping any already fired), creates their runs (owned
/// by `instance`) and counts them.
async fn claim<T: Transaction>(
    tx: &T,
    record: &mut ScheduleRecord,
    ticks: &[i64],
    instance: &Incarnation,
    now: i64,
    backfill: bool,
    poll: Option<u64>,
) -> Result<Vec<Fire>> {
    let spec = &record.spec;
    let mut fires = Vec::with_capacity(ticks.len());
    // One multi-key read for every tick's record, not one round trip each.
    let tick_keys: Vec<Vec<u8>> = ticks.iter().map(|t| keys::tick(&spec.name, *t)).collect();
    let refs: Vec<&[u8]> = tick_keys.iter().map(Vec::as_slice).collect();
    let fired = tx.get_many(&refs, false).await?;
    for ((&tick, key), fired) in ticks.iter().zip(&tick_keys).zip(fired) {
        if fired.is_some() {
            continue;
        }
        let run_id = format!("sched-{}-{tick}", spec.name);
        let rec = TickRecord {
            run_id: run_id.clone(),
            instance: instance.to_string(),
            fired_at_ms: now,
            backfill,
            outcome: None,
            next_run: None,
            poll,
        };
        tx.set(key, &encode(&rec));
        let input = ScheduledInput {
            kickoff_ms: tick,
            input: spec.input.clone(),
            backfill,
        };
        let run = insert_in(
            tx,
            &NewRun {
                run_id: run_id.clone(),
                workflow: spec.workflow.clone(),
                project: spec.project.clone(),
                domain: spec.domain.clone(),
                overwrite_cache: false,
                input: serde_json::to_string(&input).unwrap_or_default(),
                schedule: Some(spec.name.clone()),
                tick: Some(RunTick {
                    tick_ms: tick,
                    backfill,
                }),
            },
            instance,
            now,
            None,
        );
        let late_ms = u64::try_from(now - tick).unwrap_or(0);
        let st = &mut record.state;
        st.fired += 1;
        st.late_ms_total += late_ms;
        st.late_ms_max = st.late_ms_max.max(late_ms);
        st.last_tick_ms = Some(st.last_tick_ms.map_or(tick, |t| t.max(tick)));
        fires.push(Fire::of(spec, tick, run, late_ms, backfill));
    }
    Ok(fires)
}

/// Records, in the transaction that ends a scheduled run, the outcome of its tick and the
/// schedule's new state; returns the run of the tick buffered behind it (overlap `BufferOne`),
/// now fired and owned by `owner`. A schedule that no longer exists changes nothing.
pub(crate) async fn run_ended_in<T: Transaction>(
    tx: &T,
    name: &str,
    tick: RunTick,
    outcome: &std::result::Result<(), String>,
    owner: &Incarnation,
    now: i64,
) -> Result<Option<RunRecord>> {
    let Some(mut record) = read_record(tx, name).await? else {
        return Ok(None);
    };
    let tick_key = keys::tick(name, tick.tick_ms);
    let mut tick_record = None;
    if let Some(raw) = tx.get(&tick_key, false).await? {
        let mut rec: TickRecord = decode(|| format!("tick {} of {name}", tick.tick_ms), &raw)?;
        if rec.outcome.is_some() {
            return Ok(None);
        }
        rec.outcome = Some(outcome.clone());
        tx.set(&tick_key, &encode(&rec));
        tick_record = Some(rec);
    }
    if !tick.backfill {
        record.state.running = record.state.running.saturating_sub(1);
    }
    if outcome.is_err() {
        record.state.failed += 1;
    }
    let mut next = None;
    if !tick.backfill
        && let Some(buffered) = record.state.buffered.take()
    {
        record.state.running += 1;
        next = claim(tx, &mut record, &[buffered], owner, now, false, None)
            .await?
            .pop()
            .map(|f| f.run);
        if let (Some(mut rec), Some(run)) = (tick_record, &next) {
            rec.next_run = Some(run.run_id.clone());
            tx.set(&tick_key, &encode(&rec));
        }
    }
    tx.set(&keys::schedule(name), &encode(&record));
    Ok(next)
}

/// The run an already-recorded end of `tick` fired for its buffered tick, if it is still
/// `owner`'s and running: what an end retried after "maybe committed" returns.
pub(crate) async fn run_started_by_end<T: Transaction>(
    tx: &T,
    name: &str,
    tick: RunTick,
    owner: &Incarnation,
) -> Result<Option<RunRecord>> {
    let Some(raw) = tx.get(&keys::tick(name, tick.tick_ms), false).await? else {
        return Ok(None);
    };
    let rec: TickRecord = decode(|| format!("tick {} of {name}", tick.tick_ms), &raw)?;
    let Some(next) = rec.next_run else {
        return Ok(None);
    };
    let run = crate::runs::read_run_in(tx, &next).await?;
    Ok(run.filter(|r| {
        !r.status.is_final() && r.owner.as_ref().map(|o| o.incarnation()) == Some(owner.clone())
    }))
}

/// Most ticks one backfill may queue.
pub const MAX_BACKFILL: usize = 10_000;

/// Most backfilled ticks one poll claims: a backlog drains over successive polls, each
/// transaction well under FoundationDB's 5 s and 10 MB.
pub const BACKFILL_SLICE: usize = 250;

/// Schedules in one store.
pub struct Schedules<S: Store> {
    store: S,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
}

impl<S: Store> Clone for Schedules<S> {
    fn clone(&self) -> Self {
        Schedules {
            store: self.store.clone(),
            clock: self.clock.clone(),
            retry: self.retry.clone(),
        }
    }
}

fn unknown(name: &str) -> Error {
    Error::InvalidInput {
        what: format!("schedule {name:?}"),
        reason: "no such schedule".into(),
    }
}

async fn read_record<T: Transaction>(tx: &T, name: &str) -> Result<Option<ScheduleRecord>> {
    match tx.get(&keys::schedule(name), false).await? {
        Some(raw) => Ok(Some(decode(|| format!("schedule {name}"), &raw)?)),
        None => Ok(None),
    }
}

impl<S: Store> Schedules<S> {
    /// Schedules on `store`, timed by `clock`.
    pub fn new(store: S, clock: Arc<dyn Clock>) -> Self {
        Schedules {
            store,
            clock,
            retry: RetryPolicy::default(),
        }
    }

    /// Draws operation ids and retry jitter from `entropy`.
    pub fn with_entropy(mut self, entropy: crate::entropy::Entropy) -> Self {
        self.retry.entropy = entropy;
        self
    }

    /// The schedules' randomness.
    pub fn entropy(&self) -> &crate::entropy::Entropy {
        &self.retry.entropy
    }

    /// The current time on the schedules' clock (Unix ms).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Creates the schedule, or updates its spec keeping its state (a changed trigger restarts
    /// from now). Idempotent: every instance registers the schedules it knows at start.
    pub async fn register(&self, spec: &ScheduleSpec) -> Result<()> {
        spec.validate()?;
        let now = self.clock.now_ms();
        let first = spec.trigger.next_after(now)?;
        transact(&self.store, &self.retry, |tx| async move {
            let state = match read_record(&tx, &spec.name).await? {
                Some(old) if old.spec.trigger == spec.trigger => old.state,
                Some(old) => ScheduleState {
                    next_fire_ms: first,
                    ..old.state
                },
                None => ScheduleState {
                    next_fire_ms: first,
                    ..ScheduleState::default()
                },
            };
            tx.set(
                &keys::schedule(&spec.name),
                &encode(&ScheduleRecord {
                    spec: spec.clone(),
                    state,
                }),
            );
            Ok(())
        })
        .await
    }

    /// Fires what is due in every schedule, as node incarnation `instance` (which owns the runs
    /// it fires). A schedule that fails (a corrupt record, a store error) is logged and
    /// skipped; the others still fire.
    pub async fn poll(&self, instance: &Incarnation) -> Result<Vec<Fire>> {
        // Names from the keys, not the values: one corrupt record must not hide the others.
        let (begin, end) = keys::schedules();
        let tx = self.store.begin_read().await?;
        let names: Vec<String> = tx
            .get_range(&begin, &end, RangeOptions::all().snapshot())
            .await?
            .iter()
            .filter_map(|kv| keys::schedule_name_of(&kv.key))
            .collect();
        drop(tx);
        let mut fires = Vec::new();
        for name in names {
            match self.poll_one(&name, instance).await {
                Ok(f) => fires.extend(f),
                Err(e) => {
                    tracing::warn!(schedule = %name, error = %e, "schedule poll failed; the others go on")
                }
            }
        }
        Ok(fires)
    }

    /// Fires what is due in schedule `name`: at most [`BACKFILL_SLICE`] backfilled ticks (the
    /// rest stay queued for the next polls) and the live ticks due.
    ///
    /// Idempotent under "maybe committed": the poll writes its operation id into the schedule's
    /// state and every tick it claims, so an attempt that finds its own id there returns the
    /// fires of the attempt that did commit instead of claiming (and losing) them again.
    pub async fn poll_one(&self, name: &str, instance: &Incarnation) -> Result<Vec<Fire>> {
        let op: u64 = self.retry.entropy.next_u64();
        let (fires, missed) = transact(&self.store, &self.retry, |tx| async move {
            let now = self.clock.now_ms();
            let Some(mut record) = read_record(&tx, name).await? else {
                return Ok((Vec::new(), 0));
            };
            if record.state.last_poll.as_ref().is_some_and(|p| p.op == op) {
                // An earlier attempt of this poll committed: return what it fired.
                return Ok((fired_by(&tx, &record, instance).await?, 0));
            }
            if record.state.next_fire_ms > now && record.state.pending_backfill.is_empty() {
                return Ok((Vec::new(), 0));
            }
            let missed_before = record.state.missed;
            let take = record.state.pending_backfill.len().min(BACKFILL_SLICE);
            let backfill: Vec<i64> = record.state.pending_backfill.drain(..take).collect();
            let mut fires =
                claim(&tx, &mut record, &backfill, instance, now, true, Some(op)).await?;
            let plan = step(&record.spec, &mut record.state, now)?;
            fires
                .extend(claim(&tx, &mut record, &plan.fire, instance, now, false, Some(op)).await?);
            record.state.last_poll = Some(LastPoll {
                op,
                ticks: fires.iter().map(|f| f.tick_ms).collect(),
            });
            tx.set(&keys::schedule(name), &encode(&record));
            Ok((fires, record.state.missed - missed_before))
        })
        .await?;
        // Counted once committed (the closure may run several times).
        crate::telemetry::metrics::schedule_ticks(name, fires.len() as u64, missed);
        Ok(fires)
    }

    async fn update(
        &self,
        name: &str,
        change: impl Fn(&mut ScheduleRecord, i64) -> Result<()>,
    ) -> Result<()> {
        let change = &change;
        transact(&self.store, &self.retry, |tx| async move {
            let Some(mut record) = read_record(&tx, name).await? else {
                return Err(unknown(name));
            };
            change(&mut record, self.clock.now_ms())?;
            tx.set(&keys::schedule(name), &encode(&record));
            Ok(())
        })
        .await
    }

    /// Pauses `name`: its ticks pass as missed until it is resumed.
    pub async fn pause(&self, name: &str) -> Result<()> {
        self.update(name, |r, _| {
            r.state.paused = true;
            Ok(())
        })
        .await
    }

    /// Resumes `name` from now on (ticks passed while paused are not caught up).
    pub async fn resume(&self, name: &str) -> Result<()> {
        self.update(name, |r, now| {
            if r.state.paused {
                r.state.paused = false;
                r.state.next_fire_ms = r.spec.trigger.next_after(now)?;
            }
            Ok(())
        })
        .await
    }

    /// Queues every tick of `name` in `[from_ms, to_ms]` that has not fired yet; the next poll
    /// of any instance fires them as backfill runs. Returns how many were queued. The range must
    /// be in the past (ticks from now on fire on schedule, so a tick is either backfilled or
    /// fired live) and hold at most [`MAX_BACKFILL`] ticks; otherwise nothing is queued and the
    /// error says why.
    pub async fn backfill(&self, name: &str, from_ms: i64, to_ms: i64) -> Result<usize> {
        let bad = |reason: String| Error::InvalidInput {
            what: "backfill range".into(),
            reason,
        };
        if from_ms > to_ms {
            return Err(bad(format!("from_ms {from_ms} is after to_ms {to_ms}")));
        }
        let now = self.clock.now_ms();
        if to_ms > now {
            return Err(bad(format!(
                "to_ms {to_ms} is in the future (now is {now}): a backfill covers past ticks; \
                 ticks from now on fire on schedule"
            )));
        }
        let record = self.get(name).await?.ok_or_else(|| unknown(name))?;
        let ticks =
            record
                .spec
                .trigger
                .ticks(from_ms.saturating_sub(1), to_ms, MAX_BACKFILL + 1)?;
        if ticks.len() > MAX_BACKFILL {
            return Err(bad(format!(
                "the range holds more than {MAX_BACKFILL} ticks; backfill it in parts"
            )));
        }
        transact(&self.store, &self.retry, |tx| {
            let ticks = &ticks;
            async move {
                let Some(mut record) = read_record(&tx, name).await? else {
                    return Err(unknown(name));
                };
                let keys: Vec<Vec<u8>> = ticks.iter().map(|t| keys::tick(name, *t)).collect();
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                let fired = tx.get_many(&refs, false).await?;
                let mut queued = 0;
                for (tick, done) in ticks.iter().zip(fired) {
                    if done.is_none() && !record.state.pending_backfill.contains(tick) {
                        record.state.pending_backfill.push(*tick);
                        queued += 1;
                    }
                }
                tx.set(&keys::schedule(name), &encode(&record));
                Ok(queued)
            }
        })
        .await
    }

    /// Schedule `name`.
    pub async fn get(&self, name: &str) -> Result<Option<ScheduleRecord>> {
        read_record(&self.store.begin_read().await?, name).await
    }

    /// Every schedule, by name.
    pub async fn list(&self) -> Result<Vec<ScheduleRecord>> {
        let (begin, end) = keys::schedules();
        let tx = self.store.begin_read().await?;
        tx.get_range(&begin, &end, RangeOptions::all().snapshot())
            .await?
            .iter()
            .map(|kv| decode(|| "a schedule record".to_string(), &kv.value))
            .collect()
    }

    /// The fired ticks of `name`, oldest first.
    pub async fn ticks(&self, name: &str) -> Result<Vec<(i64, TickRecord)>> {
        let (begin, end) = keys::ticks(name);
        let tx = self.store.begin_read().await?;
        let mut out = Vec::new();
        for kv in tx
            .get_range(&begin, &end, RangeOptions::all().snapshot())
            .await?
        {
            let ms = keys::tick_of(&kv.key).ok_or_else(|| Error::Corrupt {
                what: format!("a tick key of {name}"),
                detail: "not a tick".into(),
            })?;
            out.push((ms, decode(|| format!("tick {ms} of {name}"), &kv.value)?));
        }
        Ok(out)
    }

    /// The earliest next fire time of an unpaused schedule.
    pub async fn next_due_ms(&self) -> Result<Option<i64>> {
        Ok(self
            .list()
            .await?
            .iter()
            .filter(|r| !r.state.paused)
            .map(|r| r.state.next_fire_ms)
            .min())
    }
}

/// The fires of poll `op`, which committed: the ticks it recorded, with their runs (still
/// `instance`'s and not started: nothing else could have started them).
async fn fired_by<T: Transaction>(
    tx: &T,
    record: &ScheduleRecord,
    instance: &Incarnation,
) -> Result<Vec<Fire>> {
    let spec = &record.spec;
    let Some(last) = &record.state.last_poll else {
        return Ok(Vec::new());
    };
    let tick_keys: Vec<Vec<u8>> = last
        .ticks
        .iter()
        .map(|t| keys::tick(&spec.name, *t))
        .collect();
    let refs: Vec<&[u8]> = tick_keys.iter().map(Vec::as_slice).collect();
    let mut fires = Vec::new();
    for (&tick, raw) in last.ticks.iter().zip(tx.get_many(&refs, false).await?) {
        let Some(raw) = raw else { continue };
        let rec: TickRecord = decode(|| format!("tick {tick} of {}", spec.name), &raw)?;
        if rec.poll != Some(last.op) || rec.instance != instance.to_string() {
            continue;
        }
        let Some(run) = crate::runs::read_run_in(tx, &rec.run_id).await? else {
            continue;
        };
        let late_ms = u64::try_from(rec.fired_at_ms - tick).unwrap_or(0);
        fires.push(Fire::of(spec, tick, run, late_ms, rec.backfill));
    }
    Ok(fires)
}
