//! Eviction (by key, task, version, project/domain or producing execution) and the expiry
//! collector. Both walk indexes, never the whole keyspace, and work in batches of
//! `evict_batch` entries per transaction.
//!
//! Eviction leaves a tombstone so the key's next call reports `Evicted`; expiry does not (an
//! expired entry is simply a miss). Neither touches the key's lease: a running execution keeps it
//! and may still commit.

use super::commit::clear_indexes;
use super::records::{StoredMeta, Tombstone, decode, encode};
use super::{Catalog, Digest};
use crate::error::Result;
use crate::keys::{self, entry_part};
use crate::store::{RangeOptions, Store, Transaction, read, transact};
use std::time::Duration;

/// Which entries to evict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictScope {
    /// One key.
    Key(Digest),
    /// Every entry of a task in a project and domain, or only those of one cache version.
    Task {
        /// The project: entries and runs are never shared across projects.
        project: String,
        /// The domain (development, staging, production…): never shared across domains.
        domain: String,
        /// Task name.
        task: String,
        /// Only this cache version.
        version: Option<String>,
    },
    /// Every entry of a project and domain.
    ProjectDomain {
        /// The project: entries and runs are never shared across projects.
        project: String,
        /// The domain (development, staging, production…): never shared across domains.
        domain: String,
    },
    /// Every entry produced by one execution.
    Execution(String),
}

impl EvictScope {
    /// Checks the names the scope gives ([`crate::names`]).
    pub fn check_names(&self) -> Result<()> {
        use crate::names::{check, check_all};
        match self {
            EvictScope::Key(_) => Ok(()),
            EvictScope::Task {
                project,
                domain,
                task,
                version,
            } => {
                check_all(&[("project", project), ("domain", domain), ("task", task)])?;
                version.as_deref().map_or(Ok(()), |v| check("version", v))
            }
            EvictScope::ProjectDomain { project, domain } => {
                check_all(&[("project", project), ("domain", domain)])
            }
            EvictScope::Execution(e) => check("execution", e),
        }
    }
}

/// Extracts the digest from an index key.
type DigestOf = fn(&[u8]) -> Option<Digest>;

impl EvictScope {
    fn reason(&self) -> String {
        match self {
            EvictScope::Key(d) => format!("key {d}"),
            EvictScope::Task {
                task,
                version: None,
                ..
            } => format!("task {task}"),
            EvictScope::Task {
                task,
                version: Some(v),
                ..
            } => format!("task {task} version {v}"),
            EvictScope::ProjectDomain { project, domain } => {
                format!("project {project} domain {domain}")
            }
            EvictScope::Execution(e) => format!("execution {e}"),
        }
    }
}

/// One entry to remove, as an index row names it.
pub(super) struct Doomed {
    /// The index row that named it (cleared in any case).
    pub row: Vec<u8>,
    /// The entry.
    pub digest: Digest,
    /// What a task index row says about it (used when its metadata is corrupt).
    pub task_row: Option<keys::TaskIndexValue>,
    /// From the expiry index: remove it only if it is the entry that expires then.
    pub expiring_at: Option<i64>,
}

/// Removes `batch` in `tx`: each entry's metadata, chunks and index rows (read from its
/// metadata, or from its task index row when the metadata is corrupt), with a tombstone when
/// given. One multi-key read of the metadata (which makes a concurrent commit of the same keys
/// conflict) and, with a tombstone, of the tombstones; then only writes. Returns how many
/// entries were removed: an entry found gone under this very tombstone (an earlier attempt of
/// the same eviction committed, but its result was unknown) counts as removed.
pub(super) async fn remove_batch<T: Transaction>(
    tx: &T,
    batch: &[Doomed],
    tombstone: Option<&[u8]>,
) -> Result<u64> {
    let meta_keys: Vec<Vec<u8>> = batch
        .iter()
        .map(|b| keys::entry_part(&b.digest, entry_part::META))
        .collect();
    let tomb_keys: Vec<Vec<u8>> = match tombstone {
        Some(_) => batch
            .iter()
            .map(|b| keys::entry_part(&b.digest, entry_part::TOMBSTONE))
            .collect(),
        None => Vec::new(),
    };
    let refs: Vec<&[u8]> = meta_keys
        .iter()
        .chain(&tomb_keys)
        .map(Vec::as_slice)
        .collect();
    let mut metas = tx.get_many(&refs, false).await?;
    let tombs = metas.split_off(meta_keys.len());
    let mut removed = 0;
    let mut dropped = Vec::new();
    for (i, ((doomed, meta_key), raw)) in batch.iter().zip(&meta_keys).zip(metas).enumerate() {
        tx.clear(&doomed.row);
        let Some(raw) = raw else {
            if tombstone.is_some() && tombs.get(i).and_then(Option::as_deref) == tombstone {
                removed += 1; // by an earlier attempt of this eviction
            }
            continue; // a stale row: the entry is gone already
        };
        let d = &doomed.digest;
        let chunks = match decode::<StoredMeta>(|| format!("entry metadata of {d}"), &raw) {
            Ok(StoredMeta { meta, blobs, .. }) => {
                if doomed.expiring_at.is_some() && meta.expires_at_ms != doomed.expiring_at {
                    continue; // replaced since: it expires at another time
                }
                clear_indexes(tx, &meta);
                if !blobs.is_empty() {
                    dropped.push((*d, blobs));
                }
                meta.chunks > 0
            }
            // Corrupt: what its task index row says, and every chunk it may have. The blobs
            // it referred to are not known: they keep its references (never deleted early).
            Err(_) => {
                tracing::warn!(key = %d, "removing an entry whose metadata is corrupt: blobs it referred to are kept");
                if let Some(row) = &doomed.task_row {
                    if let Some(e) = &row.execution {
                        tx.clear(&keys::by_execution(e, d));
                    }
                    if let Some(at) = row.expires_at_ms {
                        tx.clear(&keys::expiry(at, d));
                    }
                }
                true
            }
        };
        tx.clear(meta_key);
        if chunks {
            let (b, e) = keys::entry_chunks(d);
            tx.clear_range(&b, &e);
            // Its chunks may be staged ones, and others may have been left by executions
            // that died staging.
            let (b, e) = keys::staged(d);
            tx.clear_range(&b, &e);
        }
        if let Some(t) = tombstone {
            tx.set(&keys::entry_part(d, entry_part::TOMBSTONE), t);
        }
        removed += 1;
    }
    // The blobs only these entries referred to go with them.
    let unreferenced = crate::blobs::unreference(tx, &dropped).await?;
    unreferenced.apply(tx);
    Ok(removed)
}

/// Removal transactions of one eviction or collection in flight at once: they touch disjoint
/// keys, so they do not conflict with each other.
const PARALLEL_BATCHES: usize = 4;

impl<S: Store> Catalog<S> {
    /// Evicts the entries in `scope`; returns how many were removed. Corrupt entries are
    /// removed like any other (their task index rows say what their metadata cannot).
    ///
    /// The index is read page by page (snapshot reads); each page is removed by one
    /// transaction of at most `evict_batch` entries, several at once.
    pub async fn evict(&self, scope: &EvictScope) -> Result<u64> {
        scope.check_names()?;
        let tombstone = encode(&Tombstone {
            evicted_at_ms: self.now_ms(),
            reason: scope.reason(),
            op: Some(self.entropy().next_u64()),
        });
        let (begin, end, digest_of): (Vec<u8>, Vec<u8>, DigestOf) = match scope {
            EvictScope::Key(d) => {
                let doomed = [Doomed {
                    row: keys::entry_part(d, entry_part::META),
                    digest: *d,
                    task_row: None,
                    expiring_at: None,
                }];
                let doomed = &doomed;
                let tombstone = &tombstone;
                return transact(
                    &self.inner.store,
                    &self.inner.config.retry,
                    |tx| async move { remove_batch(&tx, doomed, Some(tombstone)).await },
                )
                .await;
            }
            EvictScope::Task {
                project,
                domain,
                task,
                version,
            } => {
                let (b, e) = keys::by_task_range(project, domain, Some(task), version.as_deref());
                (b, e, keys::digest_of_by_task)
            }
            EvictScope::ProjectDomain { project, domain } => {
                let (b, e) = keys::by_task_range(project, domain, None, None);
                (b, e, keys::digest_of_by_task)
            }
            EvictScope::Execution(e) => {
                let (b, end) = keys::by_execution_range(e);
                (b, end, keys::digest_of_by_execution)
            }
        };
        let task_index = !matches!(scope, EvictScope::Execution(_));
        self.remove_pages(
            begin,
            end,
            |kv| {
                let row = kv.key.clone();
                Some(match digest_of(&kv.key) {
                    Some(digest) => Doomed {
                        row,
                        digest,
                        task_row: task_index
                            .then(|| keys::TaskIndexValue::decode(&kv.value))
                            .flatten(),
                        expiring_at: None,
                    },
                    // An index key Cairn cannot parse: drop it rather than loop on it.
                    None => Doomed {
                        row,
                        digest: Digest(0),
                        task_row: None,
                        expiring_at: None,
                    },
                })
            },
            Some(&tombstone),
        )
        .await
    }

    /// Removes every entry whose expiry has passed; returns how many. Safe on several nodes at
    /// once: each transaction re-reads what it removes, so an entry is removed (and counted)
    /// once.
    pub async fn collect_expired(&self) -> Result<u64> {
        let (begin, end) = keys::expiry_before(self.now_ms());
        let removed = self
            .remove_pages(
                begin,
                end,
                |kv| {
                    let (ms, digest) = keys::parse_expiry(&kv.key)?;
                    Some(Doomed {
                        row: kv.key.clone(),
                        digest,
                        task_row: None,
                        expiring_at: Some(ms),
                    })
                },
                None,
            )
            .await?;
        crate::telemetry::metrics::expired_collected(removed);
        Ok(removed)
    }

    /// Walks `[begin, end)` of an index page by page and removes what `doomed` makes of each
    /// row, [`PARALLEL_BATCHES`] transactions at a time.
    async fn remove_pages(
        &self,
        begin: Vec<u8>,
        end: Vec<u8>,
        doomed: impl Fn(&crate::store::KeyValue) -> Option<Doomed>,
        tombstone: Option<&[u8]>,
    ) -> Result<u64> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let batch_size = self.inner.config.evict_batch.max(1);
        let mut cursor = begin;
        let mut removed = 0;
        let mut in_flight = FuturesUnordered::new();
        let mut exhausted = false;
        loop {
            while !exhausted && in_flight.len() < PARALLEL_BATCHES {
                let page = read(&self.inner.store, &self.inner.config.retry, |tx| {
                    let (cursor, end) = (&cursor, &end);
                    async move {
                        tx.get_range(
                            cursor,
                            end,
                            RangeOptions::all().limit(batch_size).snapshot(),
                        )
                        .await
                    }
                })
                .await?;
                exhausted = page.len() < batch_size;
                let Some(last) = page.last() else {
                    exhausted = true;
                    break;
                };
                cursor = last.key.clone();
                cursor.push(0);
                let batch: Vec<Doomed> = page.iter().filter_map(&doomed).collect();
                let (store, retry) = (&self.inner.store, &self.inner.config.retry);
                in_flight.push(async move {
                    transact(store, retry, |tx| {
                        let batch = &batch;
                        async move { remove_batch(&tx, batch, tombstone).await }
                    })
                    .await
                });
            }
            match in_flight.next().await {
                Some(n) => removed += n?,
                None => return Ok(removed),
            }
        }
    }

    /// Runs [`Catalog::collect_expired`] and [`Catalog::collect_orphan_blobs`] about every `every` (jittered by ±25%, so collectors
    /// on several nodes spread out) until the handle is aborted or dropped with the runtime.
    /// Errors are logged and retried at the next round.
    pub fn spawn_expiry_collector(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let catalog = self.clone();
        tokio::spawn(async move {
            loop {
                let jitter = 0.75 + catalog.entropy().next_f64() * 0.5;
                tokio::time::sleep(every.mul_f64(jitter)).await;
                match catalog.collect_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "expired cache entries removed"),
                    Err(e) => {
                        tracing::warn!(error = %e, "expiry collection failed; retrying next round")
                    }
                }
                match catalog.collect_orphan_blobs().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(deleted = n, "blobs nothing refers to deleted"),
                    Err(e) => {
                        tracing::warn!(error = %e, "orphan blob collection failed; retrying next round")
                    }
                }
            }
        })
    }
}
