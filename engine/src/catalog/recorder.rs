//! Execution records, written in batches by one background task so that recording a call costs
//! the caller a channel send, not a store write (a hit stays one read).
//!
//! A batch is one transaction: the records (grouped per run, many to a value) and the per-task
//! status counters, as atomic adds (no reads, so recorders on many nodes never conflict). A
//! batch that fails is retried (with backoff) until it lands; records are never dropped. The
//! channel is bounded, so a store that stays down slows callers rather than growing memory
//! without limit.

use super::records::{CacheStatus, ExecutionRecord};
use super::{Catalog, CatalogConfig};
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Store, Transaction, transact};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const QUEUE: usize = 65_536;

/// Records stored together in one value (well below the store's value size limit: a record
/// encodes to about 150 bytes, and its error message is cut to `MAX_ERROR` bytes).
const RECORDS_PER_VALUE: usize = 128;
const MAX_ERROR: usize = 512;

/// Format tag of a group of records: version 1 is a MessagePack array of records, each a
/// positional array of `ExecutionRecord`'s fields.
const GROUP_V1: u8 = 1;

fn encode_group(group: &[&ExecutionRecord]) -> Vec<u8> {
    let mut out = vec![GROUP_V1];
    // Plain data: encoding into a Vec cannot fail.
    let _ = rmp_serde::encode::write(&mut out, group);
    out
}

fn decode_group(run: &str, bytes: &[u8]) -> Result<Vec<ExecutionRecord>> {
    match bytes.split_first() {
        Some((&GROUP_V1, body)) => rmp_serde::from_slice(body).map_err(|e| Error::Corrupt {
            what: format!("execution records of run {run}"),
            detail: e.to_string(),
        }),
        _ => Err(Error::Corrupt {
            what: format!("execution records of run {run}"),
            detail: "unknown record group format".into(),
        }),
    }
}

enum Msg {
    Record(Box<ExecutionRecord>),
    Records(Vec<ExecutionRecord>),
    Group(Arc<CallGroup>),
    Flush(oneshot::Sender<Result<()>>),
}

/// Calls answered together with one outcome (a run's identical calls that followed one
/// leader): what their records share is kept once, each call adds its own execution id,
/// position and start. The recorder makes their records on its own task, so answering many
/// calls queues one small message.
#[derive(Debug)]
pub struct CallGroup {
    /// Every field the calls' records share; `execution`, `seq`, `started_at_ms`,
    /// `duration_us` and `wait_us` are each call's (from `calls` and `answered`).
    pub shared: ExecutionRecord,
    /// When the calls were answered.
    pub answered: Instant,
    /// The calls.
    pub calls: Vec<GroupedCall>,
}

/// One call of a [`CallGroup`].
#[derive(Debug)]
pub struct GroupedCall {
    /// Its execution id.
    pub execution: String,
    /// Its position in its run.
    pub seq: Option<u64>,
    /// When it was made (monotonic).
    pub started: Instant,
    /// When it was made (Unix ms).
    pub started_at_ms: i64,
}

impl CallGroup {
    /// From `call`'s start to the answer.
    pub fn duration(&self, call: &GroupedCall) -> Duration {
        self.answered.saturating_duration_since(call.started)
    }

    /// The execution record of `call`.
    pub fn record(&self, call: &GroupedCall) -> ExecutionRecord {
        let micros = u64::try_from(self.duration(call).as_micros()).unwrap_or(u64::MAX);
        let mut record = ExecutionRecord {
            execution: call.execution.clone(),
            seq: call.seq,
            started_at_ms: call.started_at_ms,
            duration_us: micros,
            wait_us: if self.shared.waited_for.is_some() {
                micros
            } else {
                0
            },
            ..self.shared.clone()
        };
        cut_error(&mut record);
        record
    }

    fn records(&self) -> impl Iterator<Item = ExecutionRecord> + '_ {
        self.calls.iter().map(|c| self.record(c))
    }
}

/// Handle on the writer task.
pub(super) struct Recorder {
    tx: mpsc::Sender<Msg>,
}

impl Recorder {
    pub(super) fn spawn<S: Store>(store: S, config: CatalogConfig) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, config, rx));
        Recorder { tx }
    }
}

async fn run<S: Store>(store: S, config: CatalogConfig, mut rx: mpsc::Receiver<Msg>) {
    let max = config.record_batch.max(1);
    let mut msgs = Vec::with_capacity(max);
    // Records received but not written yet: those that arrived while a failing batch was
    // being retried, and those beyond one batch (a flight's records arrive together).
    // A queue: taking a batch from the front of a Vec would shift the rest each time.
    let mut carried: std::collections::VecDeque<ExecutionRecord> = Default::default();
    // Flushes waiting for records queued before them that are still carried.
    let mut waiting: Vec<oneshot::Sender<Result<()>>> = Vec::new();
    loop {
        if carried.is_empty() && rx.recv_many(&mut msgs, max).await == 0 {
            return;
        }
        let take = carried.len().min(max);
        let mut batch: Vec<ExecutionRecord> = carried.drain(..take).collect();
        let mut flushes = std::mem::take(&mut waiting);
        for m in msgs.drain(..) {
            match m {
                Msg::Record(r) => batch.push(*r),
                Msg::Records(rs) => batch.extend(rs),
                Msg::Group(g) => batch.extend(g.records()),
                Msg::Flush(done) => flushes.push(done),
            }
        }
        if batch.len() > max {
            carried.extend(batch.drain(max..));
        }
        let mut backoff = Duration::from_millis(10);
        while !batch.is_empty() {
            let e = match write_batch(&store, &config, &batch).await {
                Ok(()) => break,
                Err(e) => e,
            };
            tracing::warn!(error = %e, records = batch.len(), "writing execution records failed; retrying");
            // Whoever waits for a flush learns now, including flushes sent while retrying; the
            // records are kept and retried, never dropped.
            // Bounded like the queue, so a store that stays down still slows callers down.
            while carried.len() < QUEUE
                && let Ok(m) = rx.try_recv()
            {
                match m {
                    Msg::Record(r) => carried.push_back(*r),
                    Msg::Records(rs) => carried.extend(rs),
                    Msg::Group(g) => carried.extend(g.records()),
                    Msg::Flush(done) => flushes.push(done),
                }
            }
            for done in flushes.drain(..) {
                let _ = done.send(Err(Error::Backend {
                    backend: "recorder",
                    detail: format!("execution records not stored yet ({e}); still retrying"),
                }));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        if carried.is_empty() {
            for done in flushes {
                let _ = done.send(Ok(()));
            }
        } else {
            // Records queued before these flushes are still to be written.
            waiting = flushes;
        }
    }
}

async fn write_batch<S: Store>(
    store: &S,
    config: &CatalogConfig,
    batch: &[ExecutionRecord],
) -> Result<()> {
    let mut counts: BTreeMap<(&str, &str, &str, CacheStatus), u64> = BTreeMap::new();
    for r in batch {
        *counts
            .entry((&r.project, &r.domain, &r.task, r.status))
            .or_default() += 1;
    }
    // One value per run and group of records, encoded once (not once per attempt).
    let mut by_run: BTreeMap<&str, Vec<&ExecutionRecord>> = BTreeMap::new();
    for r in batch {
        by_run
            .entry(r.run.as_deref().unwrap_or(""))
            .or_default()
            .push(r);
    }
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = by_run
        .into_iter()
        .flat_map(|(run, records)| {
            records
                .chunks(RECORDS_PER_VALUE)
                .map(|group| {
                    (
                        keys::execution(run, &group[0].execution),
                        encode_group(group),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // Where each body that ran for a key is recorded, so a call that waited for it can be
    // traced to its run (`Catalog::execution_run`). An uncached body (no key) produced nothing
    // another call could wait for: indexing it cost a store write per uncached call.
    let producers: Vec<(Vec<u8>, &str)> = batch
        .iter()
        .filter(|r| r.executed && r.key.is_some())
        .map(|r| {
            (
                keys::execution_run(&r.execution),
                r.run.as_deref().unwrap_or(""),
            )
        })
        .collect();
    transact(store, &config.retry, |tx| {
        let (counts, encoded, producers) = (&counts, &encoded, &producers);
        async move {
            // Idempotent under "maybe committed": record groups are keyed by their first
            // execution (unique), so finding this batch's first group already stored, with
            // these exact bytes, means an earlier attempt committed; counting again would
            // count the batch twice.
            if let Some((key, value)) = encoded.first()
                && tx.get(key, false).await?.as_deref() == Some(value.as_slice())
            {
                return Ok(());
            }
            for (key, value) in encoded {
                tx.set(key, value);
            }
            for (key, run) in producers {
                tx.set(key, run.as_bytes());
            }
            // Atomic adds: recorders on every node count into the same keys without
            // conflicting (FoundationDB's ADD; see `Transaction::add`).
            for ((p, d, t, status), n) in counts {
                tx.add(
                    &keys::calls(p, d, t, status.name()),
                    i64::try_from(*n).unwrap_or(i64::MAX),
                );
            }
            Ok(())
        }
    })
    .await
}

/// Cuts a record's error message to [`MAX_ERROR`] bytes.
fn cut_error(record: &mut ExecutionRecord) {
    if let Some(e) = &mut record.error
        && e.len() > MAX_ERROR
    {
        let mut cut = MAX_ERROR;
        while !e.is_char_boundary(cut) {
            cut -= 1;
        }
        e.truncate(cut);
        e.push('…');
    }
}

/// A reserved place in the record queue ([`Catalog::record_slot`]).
pub struct RecordSlot<'a>(Option<mpsc::Permit<'a, Msg>>);

impl RecordSlot<'_> {
    /// Queues the records of a group of calls as one message, at once.
    pub fn send(self, group: Arc<CallGroup>) {
        if let Some(permit) = self.0
            && !group.calls.is_empty()
        {
            permit.send(Msg::Group(group));
        }
    }
}

impl<S: Store> Catalog<S> {
    /// Queues the record of a task call; it is written with the next batch.
    pub async fn record(&self, mut record: ExecutionRecord) {
        cut_error(&mut record);
        // The writer lives as long as any catalog clone; a send can only fail during shutdown.
        let _ = self
            .inner
            .recorder
            .tx
            .send(Msg::Record(Box::new(record)))
            .await;
    }

    /// Queues the records of several calls (a flight's callers, answered together) as one
    /// message; they are written with the next batches.
    pub async fn record_many(&self, records: Vec<ExecutionRecord>) {
        let mut records = records;
        for record in &mut records {
            cut_error(record);
        }
        if records.is_empty() {
            return;
        }
        // As in `record`: a send can only fail during shutdown.
        let _ = self.inner.recorder.tx.send(Msg::Records(records)).await;
    }

    /// A place in the record queue, waited for now (cancel-safe: dropping the future or the
    /// slot gives the place back) and filled later without waiting: for a caller that must
    /// queue records and then answer others in one step that nothing can interrupt.
    pub async fn record_slot(&self) -> RecordSlot<'_> {
        RecordSlot(self.inner.recorder.tx.reserve().await.ok())
    }

    /// Waits until every record queued before this call is stored; returns an error at once if
    /// storing them fails (they are still retried in the background, never dropped).
    pub async fn flush_records(&self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        let closed = || Error::Backend {
            backend: "recorder",
            detail: "the execution-record writer has stopped".into(),
        };
        self.inner
            .recorder
            .tx
            .send(Msg::Flush(done))
            .await
            .map_err(|_| closed())?;
        wait.await.map_err(|_| closed())?
    }

    /// The run of `execution` (`Some("")` outside any run), when it ran a task body for a key
    /// (a cached or journaled call) and its record is stored: where the output a call waited
    /// for was produced. An uncached execution is not indexed (`None`): no call waits for it.
    pub async fn execution_run(&self, execution: &str) -> Result<Option<String>> {
        let tx = self.inner.store.begin_read().await?;
        let value = tx.get(&keys::execution_run(execution), true).await?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The records of every execution of a run, in execution-id (time) order.
    pub async fn run_executions(&self, run: &str) -> Result<Vec<ExecutionRecord>> {
        let (begin, end) = keys::executions_of_run(run);
        let mut groups = Vec::new();
        // Paged: a run of millions of calls is read in many short transactions.
        crate::store::scan(&self.inner.store, &begin, &end, |kv| groups.push(kv.value)).await?;
        let mut out = Vec::new();
        for group in &groups {
            out.extend(decode_group(run, group)?);
        }
        out.sort_by(|a, b| a.execution.cmp(&b.execution));
        Ok(out)
    }
}
