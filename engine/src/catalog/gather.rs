//! The hit path's reads, gathered: the entry reads of calls made at the same moment (a run's
//! fan-out, on any store; every call on a store where each read transaction is a network round
//! trip, [`Store::gathers_reads`]: PostgreSQL) go out as one multi-key read, instead of one
//! transaction each, on a reader task.
//!
//! Whatever queued while the previous read was in flight goes in the next one, up to
//! [`GATHER`] keys, with at most [`READERS`] reads in flight; a lone call pays one task hop
//! over its own read. Each key keeps its own answer, checked exactly as
//! [`Catalog::lookup_output`] checks it (liveness against `max_age`, integrity). A read that
//! fails, and an entry too large to be stored inline (its chunks are another read), are handed
//! back to the caller, which reads the key alone: every error it meets is the store's own,
//! about its own key.

use super::entry::{Peek, assemble};
use super::{Catalog, duration_ms};
use crate::digest::Digest;
use crate::error::Result;
use crate::keys::{self, entry_part};
use crate::store::{Store, Transaction, read};
use std::time::Duration;
use tokio::sync::oneshot;

/// Most keys in one gathered read.
pub(super) const GATHER: usize = 256;

/// Most gathered reads in flight at once (a share of the connection pool: the rest serves
/// misses, commits and records).
pub(super) const READERS: usize = 4;

/// A caller's answer: `Some` when the gathered read settled the key, `None` when the caller
/// must read it alone.
pub(super) type Answer = Option<Result<Option<Vec<u8>>>>;

struct Wanted {
    key: Digest,
    max_age: Option<Duration>,
    answer: oneshot::Sender<Answer>,
}

/// Keys waiting for a gathered read, and how many reads are in flight.
#[derive(Default)]
pub(super) struct Gather {
    queue: Vec<Wanted>,
    readers: usize,
}

impl<S: Store> Catalog<S> {
    /// [`Catalog::lookup_output`] through a gathered read; `None`: read the key alone.
    pub(super) async fn lookup_gathered(&self, key: Digest, max_age: Option<Duration>) -> Answer {
        let (answer, heard) = oneshot::channel();
        let start = {
            let mut g = self.inner.gather.lock();
            g.queue.push(Wanted {
                key,
                max_age,
                answer,
            });
            let start = g.readers < READERS;
            if start {
                g.readers += 1;
            }
            start
        };
        if start {
            let catalog = self.clone();
            tokio::spawn(async move { catalog.gather_reads().await });
        }
        // A reader that stopped (the runtime shutting down) leaves the caller to read alone.
        heard.await.ok().flatten()
    }

    /// Reads queued keys, a batch per transaction, until none are left.
    async fn gather_reads(&self) {
        loop {
            let batch: Vec<Wanted> = {
                let mut g = self.inner.gather.lock();
                if g.queue.is_empty() {
                    g.readers -= 1;
                    return;
                }
                let n = g.queue.len().min(GATHER);
                g.queue.drain(..n).collect()
            };
            let metas: Vec<Vec<u8>> = batch
                .iter()
                .map(|w| keys::entry_part(&w.key, entry_part::META))
                .collect();
            let found = read(&self.inner.store, &self.inner.config.retry, |tx| {
                let metas = &metas;
                async move {
                    let wanted: Vec<&[u8]> = metas.iter().map(Vec::as_slice).collect();
                    tx.get_many(&wanted, true).await
                }
            })
            .await;
            let Ok(found) = found else {
                // Each caller meets the store's error on its own read.
                for w in batch {
                    let _ = w.answer.send(None);
                }
                continue;
            };
            let now = self.now_ms();
            for (w, raw) in batch.into_iter().zip(found) {
                let answer = raw.map_or(Some(Ok(None)), |raw| settle(&w.key, w.max_age, &raw, now));
                let _ = w.answer.send(answer);
            }
        }
    }
}

/// What an entry's metadata says about a wanted key: its output if live and inline, no entry
/// if expired or too old, `None` (read alone) if its output is in chunks.
pub(super) fn settle(key: &Digest, max_age: Option<Duration>, raw: &[u8], now_ms: i64) -> Answer {
    let peek = match Peek::live(key, raw, max_age.map(duration_ms), now_ms) {
        Ok(Some(peek)) => peek,
        Ok(None) => return Some(Ok(None)),
        Err(e) => return Some(Err(e)),
    };
    let inline = peek.inline?;
    Some(assemble(&peek.meta, Some(inline.to_vec()), &[]).map(Some))
}
