//! Execution records, written in batches by one background task so that recording a call costs
//! the caller a channel send, not a store write (a hit stays one read).
//!
//! A batch is one transaction: the records (one key each, under their run) and the per-task
//! status counters. A batch that fails is retried (with backoff) until it lands; records are never
//! dropped. The channel is bounded, so a store that stays down slows callers rather than
//! growing memory without limit.

use super::records::{CacheStatus, ExecutionRecord, encode};
use super::{Catalog, CatalogConfig};
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{Store, Transaction, transact};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const QUEUE: usize = 65_536;

enum Msg {
    Record(Box<ExecutionRecord>),
    Flush(oneshot::Sender<()>),
}

/// Handle on the writer task.
pub(super) struct Recorder {
    tx: mpsc::Sender<Msg>,
}

impl Recorder {
    pub fn spawn<S: Store>(store: S, config: CatalogConfig) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, config, rx));
        Recorder { tx }
    }
}

async fn run<S: Store>(store: S, config: CatalogConfig, mut rx: mpsc::Receiver<Msg>) {
    let mut msgs = Vec::with_capacity(config.record_batch);
    while rx.recv_many(&mut msgs, config.record_batch).await > 0 {
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        for m in msgs.drain(..) {
            match m {
                Msg::Record(r) => batch.push(*r),
                Msg::Flush(done) => flushes.push(done),
            }
        }
        let mut backoff = Duration::from_millis(10);
        while !batch.is_empty() {
            match write_batch(&store, &config, &batch).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, records = batch.len(), "writing execution records failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
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
    // Encoded once, not once per attempt.
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = batch
        .iter()
        .map(|r| {
            (
                keys::execution(r.run.as_deref().unwrap_or(""), &r.execution),
                encode(r),
            )
        })
        .collect();
    transact(store, &config.retry, |tx| {
        let (counts, encoded) = (&counts, &encoded);
        async move {
            for (key, value) in encoded {
                tx.set(key, value);
            }
            for ((p, d, t, status), n) in counts {
                let key = keys::stats(p, d, t, status.name());
                let old = match tx.get(&key, false).await? {
                    Some(v) => {
                        u64::from_be_bytes(v.as_slice().try_into().map_err(|_| Error::Corrupt {
                            what: format!("call counter of task {t}"),
                            detail: format!("{} bytes where 8 belong", v.len()),
                        })?)
                    }
                    None => 0,
                };
                tx.set(&key, &(old + n).to_be_bytes());
            }
            Ok(())
        }
    })
    .await
}

impl<S: Store> Catalog<S> {
    /// Queues the record of a task call; it is written with the next batch.
    pub async fn record(&self, record: ExecutionRecord) {
        // The writer lives as long as any catalog clone; a send can only fail during shutdown.
        let _ = self
            .inner
            .recorder
            .tx
            .send(Msg::Record(Box::new(record)))
            .await;
    }

    /// Waits until every record queued before this call is stored.
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
        wait.await.map_err(|_| closed())
    }

    /// The records of every execution of a run, in execution-id (time) order.
    pub async fn run_executions(&self, run: &str) -> Result<Vec<ExecutionRecord>> {
        let tx = self.inner.store.begin_read().await?;
        let (begin, end) = keys::executions_of_run(run);
        tx.get_range(&begin, &end, crate::store::RangeOptions::all().snapshot())
            .await?
            .iter()
            .map(|kv| {
                super::records::decode(|| format!("an execution record of run {run}"), &kv.value)
            })
            .collect()
    }
}
