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
use crate::store::{RangeOptions, Store, Transaction, transact};
use std::time::Duration;

/// Which entries to evict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictScope {
    /// One key.
    Key(Digest),
    /// Every entry of a task in a project and domain, or only those of one cache version.
    Task {
        /// Project.
        project: String,
        /// Domain.
        domain: String,
        /// Task name.
        task: String,
        /// Only this cache version.
        version: Option<String>,
    },
    /// Every entry of a project and domain.
    ProjectDomain {
        /// Project.
        project: String,
        /// Domain.
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

/// Removes the entry `d` (metadata, output, index entries) if it exists; leaves a tombstone when
/// `tombstone` is given. With `only_expiring_at`, removes it only if it is the entry that expires
/// then (the expiry index may be stale). Returns whether an entry was removed.
async fn remove_entry<T: Transaction>(
    tx: &T,
    d: &Digest,
    tombstone: Option<&Tombstone>,
    only_expiring_at: Option<i64>,
) -> Result<bool> {
    let meta_key = keys::entry_part(d, entry_part::META);
    let Some(raw) = tx.get(&meta_key, false).await? else {
        return Ok(false);
    };
    let StoredMeta { meta, .. } = decode(|| format!("entry metadata of {d}"), &raw)?;
    if only_expiring_at.is_some() && meta.expires_at_ms != only_expiring_at {
        return Ok(false);
    }
    clear_indexes(tx, &meta);
    tx.clear(&meta_key);
    let (b, e) = keys::entry_chunks(d);
    tx.clear_range(&b, &e);
    if let Some(t) = tombstone {
        tx.set(&keys::entry_part(d, entry_part::TOMBSTONE), &encode(t));
    }
    Ok(true)
}

impl<S: Store> Catalog<S> {
    /// Evicts the entries in `scope`; returns how many were removed.
    pub async fn evict(&self, scope: &EvictScope) -> Result<u64> {
        scope.check_names()?;
        let tombstone = Tombstone {
            evicted_at_ms: self.now_ms(),
            reason: scope.reason(),
        };
        let (begin, end, digest_of): (Vec<u8>, Vec<u8>, DigestOf) = match scope {
            EvictScope::Key(d) => {
                let removed = transact(&self.inner.store, &self.inner.config.retry, |tx| {
                    let tombstone = &tombstone;
                    async move { remove_entry(&tx, d, Some(tombstone), None).await }
                })
                .await?;
                return Ok(u64::from(removed));
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
        let mut cursor = begin;
        let mut removed = 0;
        loop {
            let page = {
                let tx = self.inner.store.begin_read().await?;
                tx.get_range(
                    &cursor,
                    &end,
                    RangeOptions::all().limit(self.inner.config.evict_batch),
                )
                .await?
            };
            let Some(last) = page.last() else { break };
            cursor = last.key.clone();
            cursor.push(0);
            let batch: Vec<(Vec<u8>, Option<Digest>)> = page
                .iter()
                .map(|kv| (kv.key.clone(), digest_of(&kv.key)))
                .collect();
            removed += transact(&self.inner.store, &self.inner.config.retry, |tx| {
                let (batch, tombstone) = (&batch, &tombstone);
                async move {
                    let mut n = 0;
                    for (index_key, d) in batch {
                        match d {
                            Some(d) => {
                                n += u64::from(remove_entry(&tx, d, Some(tombstone), None).await?)
                            }
                            // An index key Cairn cannot parse: drop it rather than loop on it.
                            None => tx.clear(index_key),
                        }
                    }
                    Ok(n)
                }
            })
            .await?;
        }
        Ok(removed)
    }

    /// Removes every entry whose expiry has passed; returns how many.
    pub async fn collect_expired(&self) -> Result<u64> {
        let mut removed = 0;
        loop {
            let (begin, end) = keys::expiry_before(self.now_ms());
            let page = {
                let tx = self.inner.store.begin_read().await?;
                tx.get_range(
                    &begin,
                    &end,
                    RangeOptions::all().limit(self.inner.config.evict_batch),
                )
                .await?
            };
            if page.is_empty() {
                return Ok(removed);
            }
            removed += transact(&self.inner.store, &self.inner.config.retry, |tx| {
                let page = &page;
                async move {
                    let mut n = 0;
                    for kv in page {
                        if let Some((ms, d)) = keys::parse_expiry(&kv.key) {
                            n += u64::from(remove_entry(&tx, &d, None, Some(ms)).await?);
                        }
                        tx.clear(&kv.key);
                    }
                    Ok(n)
                }
            })
            .await?;
        }
    }

    /// Runs [`Catalog::collect_expired`] every `every` until the handle is aborted or dropped
    /// with the runtime. Errors are logged and retried at the next round.
    pub fn spawn_expiry_collector(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let catalog = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match catalog.collect_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(removed = n, "expired cache entries removed"),
                    Err(e) => {
                        tracing::warn!(error = %e, "expiry collection failed; retrying next round")
                    }
                }
            }
        })
    }
}
