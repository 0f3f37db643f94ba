//! Commit: store an output, its metadata and its index entries and release the lease, in one
//! transaction. The first writer wins: a live entry is never replaced except by the current
//! holder of an overwrite lease.

use super::entry::EntryView;
use super::lease::Lease;
use super::records::{
    CacheStatus, EntryMeta, INLINE_MAX, LeaseState, STAGE_BYTES, StoredMeta, encode,
};
use super::{CacheKey, Catalog, Hit, duration_ms};
use crate::blobs::{self, BlobDigest};
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

/// Most commits in one group transaction (each a multi-key read and a few writes of at most
/// 16 KiB plus metadata: at most about 4.5 MB, within FoundationDB's 10 MB).
const GROUP_COMMIT: usize = 256;

/// Most groups committing at once where a commit is only work for this process (the embedded
/// store): one group is read and checked while another commits, on another core. Where a
/// commit waits for a server or a disk, one group at a time: the next one grows meanwhile.
const CPU_GROUP_LANES: usize = 2;

/// What one commit's transaction did: its result, and the metadata value it wrote, if it
/// stored an entry (to prime the store's memo with once the transaction has landed).
struct Outcome {
    committed: Committed,
    wrote: Option<Vec<u8>>,
}

impl From<Committed> for Outcome {
    fn from(committed: Committed) -> Self {
        Outcome {
            committed,
            wrote: None,
        }
    }
}

/// A commit waiting for its group.
pub(super) struct Queued {
    key: CacheKey,
    lease: Lease,
    output: Vec<u8>,
    max_age: Option<Duration>,
    done: tokio::sync::oneshot::Sender<Result<Committed>>,
}

/// Commits waiting for a group, and how many tasks are committing groups.
#[derive(Default)]
pub(super) struct Group {
    queue: Vec<Queued>,
    running: usize,
}

/// Removes what executions other than `keep` staged for `d`: the leftovers of executions that
/// died or were taken over while staging, or the chunks of an entry being replaced.
pub(super) fn clear_staged_except<T: Transaction>(tx: &T, d: &super::Digest, keep: Option<&str>) {
    let (begin, end) = keys::staged(d);
    match keep {
        Some(execution) => {
            let (own_begin, own_end) = keys::staged_by(d, execution);
            tx.clear_range(&begin, &own_begin);
            tx.clear_range(&own_end, &end);
        }
        None => tx.clear_range(&begin, &end),
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
        self.commit_referencing(key, lease, output, max_age, &[])
            .await
    }

    /// [`Catalog::commit`] of an output that refers to `blobs`: the entry holds a reference to
    /// each while it exists (see [`crate::blobs`]). A blob that is not stored when the entry
    /// is is [`Error::BlobNotFound`], and nothing is stored.
    pub async fn commit_referencing(
        &self,
        key: &CacheKey,
        lease: &Lease,
        output: &[u8],
        max_age: Option<Duration>,
        blobs: &[BlobDigest],
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
        let chunk_bytes = self.inner.config.chunk_bytes.max(1);
        // A large output is staged first, a bounded number of bytes per transaction; the last
        // transaction makes it visible. A small one is written by that transaction alone.
        let staged = output.len() > STAGE_BYTES;
        if staged && let Err(e) = self.stage(&d, &lease.execution, output, chunk_bytes).await {
            self.unstage(&d, &lease.execution).await;
            return Err(e);
        }
        // An output that refers to blobs commits alone: in a shared transaction, another
        // commit's overwrite could delete a blob this one is about to refer to.
        let committed =
            if output.len() <= INLINE_MAX && self.inner.store.max_batch() > 1 && blobs.is_empty() {
                self.commit_grouped(key, lease, output, max_age).await
            } else {
                let outcome = self
                    .commit_visible(key, lease, output, max_age, blobs, chunk_bytes, staged)
                    .await;
                outcome.map(|outcome| self.landed(outcome, output))
            };
        if staged && committed.is_err() {
            self.unstage(&d, &lease.execution).await;
        }
        committed
    }

    /// Writes the chunks of `output` into `execution`'s staging area of `d`, each transaction
    /// at most [`STAGE_BYTES`]. The first sets the staging marker; each later one checks it
    /// is still there (whoever takes the lease over removes it), so a fenced execution stops
    /// writing instead of leaving chunks behind.
    async fn stage(
        &self,
        d: &super::Digest,
        execution: &str,
        output: &[u8],
        chunk_bytes: usize,
    ) -> Result<()> {
        let per_tx = (STAGE_BYTES / chunk_bytes).max(1);
        let chunks: Vec<&[u8]> = output.chunks(chunk_bytes).collect();
        let marker = keys::staging_marker(d, execution);
        for (g, group) in chunks.chunks(per_tx).enumerate() {
            let first = g * per_tx;
            transact(&self.inner.store, &self.inner.config.retry, |tx| {
                let marker = &marker;
                async move {
                    if g == 0 {
                        let (begin, end) = keys::staged_by(d, execution);
                        tx.clear_range(&begin, &end);
                        tx.set(marker, &[]);
                    } else if tx.get(marker, false).await?.is_none() {
                        return Err(Error::StagingLost {
                            digest: d.to_string(),
                            execution: execution.to_string(),
                        });
                    }
                    for (i, chunk) in group.iter().enumerate() {
                        tx.set(&keys::staged_chunk(d, execution, (first + i) as u32), chunk);
                    }
                    Ok(())
                }
            })
            .await?;
        }
        Ok(())
    }

    /// Removes what `execution` staged for `d` after its output was not stored, unless the
    /// entry stored is its own (a commit reported failed that had landed). Best effort: what
    /// stays behind is removed by the next execution that takes the lease or stores `d`.
    async fn unstage(&self, d: &super::Digest, execution: &str) {
        let cleared = transact(
            &self.inner.store,
            &self.inner.config.retry,
            |tx| async move {
                let view = EntryView::load(&tx, d, false).await?;
                if view.chunks_of.as_deref() != Some(execution) {
                    let (begin, end) = keys::staged_by(d, execution);
                    tx.clear_range(&begin, &end);
                }
                Ok(())
            },
        )
        .await;
        if let Err(e) = cleared {
            tracing::warn!(error = %e, key = %d, execution, "could not remove a staged output; the next lease of the key removes it");
        }
    }

    /// The transaction that makes an output visible: metadata, chunks (unless `staged`), index
    /// rows and the lease's release, or the entry another execution stored first.
    #[allow(clippy::too_many_arguments)]
    async fn commit_visible(
        &self,
        key: &CacheKey,
        lease: &Lease,
        output: &[u8],
        max_age: Option<Duration>,
        blobs: &[BlobDigest],
        chunk_bytes: usize,
        staged: bool,
    ) -> Result<Outcome> {
        transact(
            &self.inner.store,
            &self.inner.config.retry,
            |tx| async move {
                self.commit_in(&tx, key, lease, output, max_age, blobs, chunk_bytes, staged)
                    .await
            },
        )
        .await
    }

    /// [`Catalog::commit_visible`]'s work in `tx`. Its writes come after every read and check,
    /// so an error leaves nothing written (what lets many commits share one transaction).
    #[allow(clippy::too_many_arguments)]
    async fn commit_in<T: Transaction>(
        &self,
        tx: &T,
        key: &CacheKey,
        lease: &Lease,
        output: &[u8],
        max_age: Option<Duration>,
        blobs: &[BlobDigest],
        chunk_bytes: usize,
        staged: bool,
    ) -> Result<Outcome> {
        let tx = tx.clone();
        let d = key.digest;
        let marker = || keys::staging_marker(&d, &lease.execution);
        let view = EntryView::load(&tx, &d, false).await?;
        let now = self.now_ms();
        let ours = view.held_by(lease);
        let mut replacing_corrupt = view.corrupt.is_some();
        if let Some(meta) = &view.meta {
            if meta.execution == lease.execution {
                // Stored by this very execution: a retry after an unknown commit result.
                return Ok(Committed::Stored(meta.clone()).into());
            }
            let live = super::entry::is_live(meta, None, now);
            if live && !(lease.overwrite && ours) {
                match view.output(&tx, meta).await {
                    Ok(output) => {
                        if ours {
                            self.set_lease_state(&tx, lease, &view, LeaseState::Released)?;
                        }
                        if staged {
                            let (begin, end) = keys::staged_by(&d, &lease.execution);
                            tx.clear_range(&begin, &end);
                        }
                        return Ok(Committed::AlreadyStored(Hit {
                            output,
                            meta: meta.clone(),
                        })
                        .into());
                    }
                    // Its output is corrupt: the lease holder replaces it.
                    Err(Error::Corrupt { .. }) if ours => replacing_corrupt = true,
                    Err(e) => return Err(e),
                }
            }
        }
        // The blobs the new output refers to are all stored, and which of the replaced
        // output's blobs nothing refers to any more (reads, before any write).
        blobs::require(&tx, blobs).await?;
        let dropped: Vec<BlobDigest> = view
            .blobs
            .iter()
            .filter(|b| !blobs.contains(b))
            .copied()
            .collect();
        let unreferenced = blobs::unreference(&tx, &[(d, dropped)]).await?;
        if let Some(meta) = &view.meta {
            clear_indexes(&tx, meta);
        } else if view.corrupt.is_some() {
            if !ours {
                return Err(Error::Corrupt {
                    what: format!("entry metadata of {d}"),
                    detail: "only the lease holder replaces a corrupt entry".into(),
                });
            }
            // The corrupt entry's other index rows, from its task index row.
            let row_key = keys::by_task(&key.project, &key.domain, &key.task, &key.version, &d);
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
        if staged && tx.get(&marker(), false).await?.is_none() {
            return Err(Error::StagingLost {
                digest: d.to_string(),
                execution: lease.execution.clone(),
            });
        }
        let inline = output.len() <= INLINE_MAX;
        let n_chunks = if inline {
            0
        } else {
            output.len().div_ceil(chunk_bytes)
        };
        let meta = EntryMeta {
            key: key.clone(),
            created_at_ms: now,
            execution: lease.execution.clone(),
            size: output.len() as u64,
            chunks: n_chunks as u32,
            checksum: xxhash_rust::xxh3::xxh3_64(output),
            expires_at_ms: max_age
                .map(|a| now.saturating_add(i64::try_from(duration_ms(a)).unwrap_or(i64::MAX))),
        };
        if replacing_corrupt || view.meta.as_ref().is_some_and(|m| m.chunks > 0) {
            // Replacing an entry that had (or may have had) chunks: none may survive.
            let (chunks_begin, chunks_end) = keys::entry_chunks(&d);
            tx.clear_range(&chunks_begin, &chunks_end);
        }
        if staged || replacing_corrupt || view.chunks_of.is_some() {
            // Staged chunks of the entry replaced and of executions that died staging;
            // this execution's own become the entry's.
            clear_staged_except(&tx, &d, staged.then_some(lease.execution.as_str()));
        }
        if staged {
            tx.clear(&marker());
        } else if !inline {
            for (i, chunk) in output.chunks(chunk_bytes).enumerate() {
                tx.set(&keys::entry_chunk(&d, i as u32), chunk);
            }
        }
        let stored = StoredMeta {
            meta,
            inline: inline.then(|| output.to_vec()),
            chunks_of: staged.then(|| lease.execution.clone()),
            blobs: blobs.to_vec(),
        };
        let wrote = encode(&stored);
        tx.set(&keys::entry_part(&d, entry_part::META), &wrote);
        unreferenced.apply(&tx);
        blobs::reference(&tx, &d, blobs);
        let meta = stored.meta;
        // Cleared only when the read above found one: an eviction that writes one meanwhile
        // conflicts with that read.
        if view.tombstone_row {
            tx.clear(&keys::entry_part(&d, entry_part::TOMBSTONE));
        }
        set_indexes(&tx, &meta);
        if ours {
            self.set_lease_state(&tx, lease, &view, LeaseState::Released)?;
        }
        Ok(Outcome {
            committed: Committed::Stored(meta),
            wrote: Some(wrote),
        })
    }

    /// A commit's result once its transaction has landed. The entry it stored, if any, goes
    /// into the store's memo decoded as a hit would decode it ([`super::entry::Ready`]), built
    /// from the output and metadata at hand: the first hit of a fresh entry decodes nothing.
    /// Only if the memo still holds the value this commit wrote.
    fn landed(&self, outcome: Outcome, output: &[u8]) -> Committed {
        if let (Some(memo), Some(wrote), Committed::Stored(meta)) =
            (self.inner.store.memo(), &outcome.wrote, &outcome.committed)
        {
            memo.prime(&meta.key.digest, wrote, || {
                super::entry::Ready::stored(meta, output)
            });
        }
        outcome.committed
    }

    /// Commits small outputs (stored inline) of many executions together: whatever was queued
    /// while the previous group's transaction was in flight, up to [`GROUP_COMMIT`] per
    /// transaction, so a fan-out pays one commit per group. Each keeps its own result; a group
    /// that conflicts is split in halves and tried again, down to single commits retried as
    /// usual.
    async fn commit_grouped(
        &self,
        key: &CacheKey,
        lease: &Lease,
        output: &[u8],
        max_age: Option<Duration>,
    ) -> Result<Committed> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let lanes = if self.inner.store.commits_wait() {
            1
        } else {
            CPU_GROUP_LANES
        };
        let start = {
            let mut group = self.inner.group.lock();
            group.queue.push(Queued {
                key: key.clone(),
                lease: lease.clone(),
                output: output.to_vec(),
                max_age,
                done,
            });
            let start = group.running < lanes;
            group.running += usize::from(start);
            start
        };
        if start {
            let catalog = self.clone();
            tokio::spawn(async move { catalog.drain_commits().await });
        }
        answer.await.unwrap_or_else(|_| {
            Err(Error::Backend {
                backend: "catalog",
                detail: "the group commit stopped before committing this output".into(),
            })
        })
    }

    /// Commits queued groups until the queue is empty.
    async fn drain_commits(&self) {
        loop {
            // Lets the tasks already runnable finish and queue their outputs first: a store
            // whose commits never wait (embedded) would otherwise commit them one by one.
            tokio::task::yield_now().await;
            let batch: Vec<Queued> = {
                let mut group = self.inner.group.lock();
                if group.queue.is_empty() {
                    group.running -= 1;
                    return;
                }
                let n = group
                    .queue
                    .len()
                    .min(GROUP_COMMIT.min(self.inner.store.max_batch()));
                group.queue.drain(..n).collect()
            };
            let results = self.commit_many(&batch).await;
            for (q, result) in batch.into_iter().zip(results) {
                let _ = q
                    .done
                    .send(result.map(|outcome| self.landed(outcome, &q.output)));
            }
        }
    }

    /// One transaction for `batch`, split on conflicts (see [`Catalog::commit_grouped`]).
    async fn commit_many(&self, batch: &[Queued]) -> Vec<Result<Outcome>> {
        let chunk_bytes = self.inner.config.chunk_bytes.max(1);
        super::batch::each_in_batches(
            &self.inner.store,
            &self.inner.config.retry,
            batch,
            |q| EntryView::keys(&q.key.digest).into(),
            |tx, q| async move {
                self.commit_in(
                    &tx,
                    &q.key,
                    &q.lease,
                    &q.output,
                    q.max_age,
                    &[],
                    chunk_bytes,
                    false,
                )
                .await
            },
            |q| {
                self.commit_visible(
                    &q.key,
                    &q.lease,
                    &q.output,
                    q.max_age,
                    &[],
                    chunk_bytes,
                    false,
                )
            },
        )
        .await
    }

    /// Ends `lease` with the outcome of the execution that held it: stores an output (first
    /// writer wins: another execution's stored output is returned instead) or fails the lease at
    /// once with the error. Returns what the caller gets, the call's cache status — Populated,
    /// Skipped (overwrite), Evicted, Hit (stored by another first), Miss (the error) or
    /// PutFailure (not stored; the output is still returned) — and, for PutFailure, why. A
    /// stored output refers to `blobs` ([`Catalog::commit_referencing`]).
    pub async fn settle<E: std::fmt::Display>(
        &self,
        key: &CacheKey,
        lease: &Lease,
        outcome: std::result::Result<Vec<u8>, E>,
        max_age: Option<Duration>,
        blobs: &[BlobDigest],
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
        match self
            .commit_referencing(key, lease, &output, max_age, blobs)
            .await
        {
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
        if let Some((record, _)) = &view.lease {
            let mut record = record.clone();
            record.state = state;
            tx.set(
                &keys::entry_part(&lease.digest, entry_part::LEASE),
                &encode(&record),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::Ready;
    use super::super::{Catalog, KeyInputs, Resolution, ResolveRequest, TaskSignature, TypeDesc};
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    /// A commit on a store that keeps a memo leaves its entry there already decoded, exactly as
    /// a hit would decode it: the first hit of a fresh entry decodes nothing.
    #[tokio::test]
    async fn a_landed_commit_leaves_its_entry_decoded_for_hits() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), false).await.unwrap();
        let catalog = Catalog::new(store);
        let sig =
            TaskSignature::new("square", TypeDesc::of::<i64>()).input("n", TypeDesc::of::<i64>());
        // Inline, through the group commit (an empty output included), and in chunks, through
        // a commit alone.
        let outputs: [Vec<u8>; 3] = [b"81".to_vec(), Vec::new(), vec![7; INLINE_MAX + 1]];
        for (n, output) in outputs.iter().enumerate() {
            let mut inputs = KeyInputs::new();
            inputs.add("n", &(n as i64)).unwrap();
            let key = CacheKey::new("p", "dev", &sig, "1", &inputs).unwrap();
            let execution = catalog.new_execution_id();
            let request = ResolveRequest {
                key: &key,
                owner: "test",
                execution: &execution,
                lease_ttl: Duration::from_secs(60),
                max_age: Some(Duration::from_secs(3600)),
                overwrite: false,
                takeover: None,
                trace: None,
            };
            let Resolution::Acquired(lease) = catalog.resolve(&request).await.unwrap() else {
                panic!("a fresh key is acquired");
            };
            let committed = catalog
                .commit(&key, &lease, output, request.max_age)
                .await
                .unwrap();
            assert!(matches!(committed, Committed::Stored(_)));
            let memo = catalog
                .store()
                .memo()
                .expect("the embedded store keeps a memo");
            let recalled = memo.get(&key.digest).expect("the commit's value");
            let primed = recalled
                .decoded(|_| -> Option<Ready> { None })
                .expect("decoded at the commit, not at the hit");
            assert_eq!(
                Some(primed),
                Ready::decode(&key.digest, recalled.value()).as_ref(),
                "the form a hit would decode"
            );
        }
    }
}
