//! Commit: store an output, its metadata and its index entries and release the lease, in one
//! transaction. The first writer wins: a live entry is never replaced except by the current
//! holder of an overwrite lease.

use super::entry::EntryView;
use super::lease::Lease;
use super::records::{
    CacheStatus, EntryMeta, INLINE_MAX, LeaseRecord, LeaseState, StoredMeta, decode, encode,
};
use super::{CacheKey, Catalog, Hit, duration_ms};
use crate::error::{Error, Result};
use crate::keys::{self, entry_part};
use crate::store::{Store, Transaction, transact};
use std::time::Duration;

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// The output was stored.
    Stored(EntryMeta),
    /// Another execution had stored an output first; this is it (use it: callers of one key all
    /// get the same output).
    AlreadyStored(Hit),
}

/// Removes the index entries of a stored entry (before replacing or evicting it).
pub(super) fn clear_indexes<T: Transaction>(tx: &T, meta: &EntryMeta) {
    if let Some(slot) = &meta.key.journal {
        tx.clear(&keys::journal(&slot.run, &meta.key.digest));
        return;
    }
    tx.clear(&keys::by_task(
        &meta.key.project,
        &meta.key.domain,
        &meta.key.task,
        &meta.key.version,
        &meta.key.digest,
    ));
    tx.clear(&keys::by_execution(&meta.execution, &meta.key.digest));
    if let Some(at) = meta.expires_at_ms {
        tx.clear(&keys::expiry(at, &meta.key.digest));
    }
}

/// Writes the index entries of a stored entry: task, producing execution and expiry for a
/// cache entry; the run's journal index for a journal entry (removed with the run's journal).
fn set_indexes<T: Transaction>(tx: &T, meta: &EntryMeta) {
    let (key, d) = (&meta.key, &meta.key.digest);
    if let Some(slot) = &key.journal {
        tx.set(&keys::journal(&slot.run, d), &[]);
        return;
    }
    let row = keys::TaskIndexValue {
        size: meta.size,
        expires_at_ms: meta.expires_at_ms,
        execution: Some(meta.execution.clone()),
    };
    tx.set(
        &keys::by_task(&key.project, &key.domain, &key.task, &key.version, d),
        &row.encode(),
    );
    tx.set(&keys::by_execution(&meta.execution, d), &[]);
    if let Some(at) = meta.expires_at_ms {
        tx.set(&keys::expiry(at, d), &[]);
    }
}

impl<S: Store> Catalog<S> {
    /// Stores `output` for `key` under `lease`. `max_age` sets when the expiry collector removes
    /// it. Outputs larger than the configured maximum are refused with
    /// [`Error::OutputTooLarge`] and the lease is failed, so waiters do not wait for it.
    pub async fn commit(
        &self,
        key: &CacheKey,
        lease: &Lease,
        output: &[u8],
        max_age: Option<Duration>,
    ) -> Result<Committed> {
        let limit = self.inner.config.max_output_bytes;
        if output.len() > limit {
            let err = Error::OutputTooLarge {
                size: output.len(),
                limit,
            };
            self.fail(lease, &err.to_string()).await?;
            return Err(err);
        }
        let d = key.digest;
        let (chunks_begin, chunks_end) = keys::entry_chunks(&d);
        let chunk_bytes = self.inner.config.chunk_bytes.max(1);
        transact(&self.inner.store, &self.inner.config.retry, |tx| {
            let (chunks_begin, chunks_end) = (&chunks_begin, &chunks_end);
            async move {
                let view = EntryView::load(&tx, &d, false).await?;
                let now = self.now_ms();
                let ours = view.held_by(lease);
                let mut replacing_corrupt = view.corrupt.is_some();
                if let Some(meta) = &view.meta {
                    if meta.execution == lease.execution {
                        // Stored by this very execution: a retry after an unknown commit result.
                        return Ok(Committed::Stored(meta.clone()));
                    }
                    let live = super::entry::is_live(meta, None, now);
                    if live && !(lease.overwrite && ours) {
                        match view.output(&tx, meta).await {
                            Ok(output) => {
                                if ours {
                                    self.set_lease_state(&tx, lease, &view, LeaseState::Released)?;
                                }
                                return Ok(Committed::AlreadyStored(Hit {
                                    output,
                                    meta: meta.clone(),
                                }));
                            }
                            // Its output is corrupt: the lease holder replaces it.
                            Err(Error::Corrupt { .. }) if ours => replacing_corrupt = true,
                            Err(e) => return Err(e),
                        }
                    }
                    clear_indexes(&tx, meta);
                } else if view.corrupt.is_some() {
                    if !ours {
                        return Err(Error::Corrupt {
                            what: format!("entry metadata of {d}"),
                            detail: "only the lease holder replaces a corrupt entry".into(),
                        });
                    }
                    // The corrupt entry's other index rows, from its task index row.
                    let row_key =
                        keys::by_task(&key.project, &key.domain, &key.task, &key.version, &d);
                    if let Some(row) = tx.get(&row_key, false).await?
                        && let Some(row) = keys::TaskIndexValue::decode(&row)
                    {
                        if let Some(e) = &row.execution {
                            tx.clear(&keys::by_execution(e, &d));
                        }
                        if let Some(at) = row.expires_at_ms {
                            tx.clear(&keys::expiry(at, &d));
                        }
                    }
                }
                let inline = output.len() <= INLINE_MAX;
                let chunks: Vec<&[u8]> = if inline {
                    Vec::new()
                } else {
                    output.chunks(chunk_bytes).collect()
                };
                let meta = EntryMeta {
                    key: key.clone(),
                    created_at_ms: now,
                    execution: lease.execution.clone(),
                    size: output.len() as u64,
                    chunks: chunks.len() as u32,
                    checksum: xxhash_rust::xxh3::xxh3_64(output),
                    expires_at_ms: max_age.map(|a| {
                        now.saturating_add(i64::try_from(duration_ms(a)).unwrap_or(i64::MAX))
                    }),
                };
                if replacing_corrupt || view.meta.as_ref().is_some_and(|m| m.chunks > 0) {
                    // Replacing an entry that had (or may have had) chunks: none may survive.
                    tx.clear_range(chunks_begin, chunks_end);
                }
                for (i, chunk) in chunks.iter().enumerate() {
                    tx.set(&keys::entry_chunk(&d, i as u32), chunk);
                }
                let stored = StoredMeta {
                    meta,
                    inline: inline.then(|| output.to_vec()),
                };
                tx.set(&keys::entry_part(&d, entry_part::META), &encode(&stored));
                let meta = stored.meta;
                tx.clear(&keys::entry_part(&d, entry_part::TOMBSTONE));
                set_indexes(&tx, &meta);
                if ours {
                    self.set_lease_state(&tx, lease, &view, LeaseState::Released)?;
                }
                Ok(Committed::Stored(meta))
            }
        })
        .await
    }

    /// Ends `lease` with the outcome of the execution that held it: stores an output (first
    /// writer wins: another execution's stored output is returned instead) or fails the lease at
    /// once with the error. Returns what the caller gets, the call's cache status — Populated,
    /// Skipped (overwrite), Evicted, Hit (stored by another first), Miss (the error) or
    /// PutFailure (not stored; the output is still returned) — and, for PutFailure, why.
    pub async fn settle<E: std::fmt::Display>(
        &self,
        key: &CacheKey,
        lease: &Lease,
        outcome: std::result::Result<Vec<u8>, E>,
        max_age: Option<Duration>,
    ) -> (std::result::Result<Vec<u8>, E>, CacheStatus, Option<String>) {
        let output = match outcome {
            Ok(output) => output,
            Err(error) => {
                if let Err(e) = self.fail(lease, &error.to_string()).await {
                    tracing::warn!(error = %e, key = %key.digest, "could not fail a lease yet; it is failed once the store answers");
                }
                return (Err(error), CacheStatus::Miss, None);
            }
        };
        match self.commit(key, lease, &output, max_age).await {
            Ok(Committed::Stored(_)) => {
                let status = if lease.overwrite {
                    CacheStatus::Skipped
                } else if lease.evicted {
                    CacheStatus::Evicted
                } else {
                    CacheStatus::Populated
                };
                // Recorded with the call: this output replaced a corrupt entry.
                let replaced = lease
                    .replaces_corrupt
                    .as_ref()
                    .map(|why| format!("replaced a corrupt entry ({why})"));
                (Ok(output), status, replaced)
            }
            // Another execution stored first: every caller of a key gets the same output.
            Ok(Committed::AlreadyStored(hit)) => (Ok(hit.output), CacheStatus::Hit, None),
            Err(e) => {
                if !matches!(e, Error::OutputTooLarge { .. }) {
                    let _ = self.fail(lease, &e.to_string()).await;
                }
                tracing::warn!(error = %e, key = %key.digest, "could not store the output");
                (Ok(output), CacheStatus::PutFailure, Some(e.to_string()))
            }
        }
    }

    fn set_lease_state<T: Transaction>(
        &self,
        tx: &T,
        lease: &Lease,
        view: &EntryView,
        state: LeaseState,
    ) -> Result<()> {
        if let Some((_, raw)) = &view.lease {
            let mut record: LeaseRecord =
                decode(|| format!("lease record of {}", lease.digest), raw)?;
            record.state = state;
            tx.set(
                &keys::entry_part(&lease.digest, entry_part::LEASE),
                &encode(&record),
            );
        }
        Ok(())
    }
}
