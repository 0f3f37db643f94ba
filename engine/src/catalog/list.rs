//! Browsing the cache: entries of a project/domain (optionally a task and version) page by page,
//! one entry by key, and per-task statistics.

use super::entry::EntryView;
use super::records::{CacheStatus, EntryMeta, StoredMeta, decode};
use super::{Catalog, Digest, Hit};
use crate::error::{Error, Result};
use crate::keys::{self, entry_part, hex, unhex};
use crate::store::{RangeOptions, Store, Transaction};
use std::collections::BTreeMap;

/// One page of entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPage {
    /// Entries in (task, version, key) order.
    pub entries: Vec<EntryMeta>,
    /// Entries of the page whose metadata does not decode: their keys and what is wrong.
    /// They are skipped, never fatal: evict them, or verify with repair.
    pub corrupt: Vec<(Digest, String)>,
    /// Pass this to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Statistics of one task in one project and domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskStats {
    /// Stored entries (all versions).
    pub entries: u64,
    /// Their total output size in bytes.
    pub bytes: u64,
    /// Entries per cache version.
    pub entries_by_version: BTreeMap<String, u64>,
    /// Recorded calls by cache status (from flushed execution records).
    pub calls: BTreeMap<CacheStatus, u64>,
    /// Index rows that do not decode (skipped).
    pub corrupt: u64,
}

impl<S: Store> Catalog<S> {
    /// Lists entries of `project`/`domain`, narrowed to a task and a version if given,
    /// `page_size` at a time, starting after `cursor` (from the previous page's `next`).
    pub async fn list_entries(
        &self,
        project: &str,
        domain: &str,
        task: Option<&str>,
        version: Option<&str>,
        page_size: usize,
        cursor: Option<&str>,
    ) -> Result<EntryPage> {
        crate::names::check_all(&[("project", project), ("domain", domain)])?;
        if let Some(task) = task {
            crate::names::check("task", task)?;
        }
        if let Some(version) = version {
            crate::names::check("version", version)?;
        }
        let (begin, end) = keys::by_task_range(project, domain, task, version);
        let begin = match cursor {
            None => begin,
            Some(c) => {
                let k = unhex(c)
                    .filter(|k| k.as_slice() >= begin.as_slice() && k.as_slice() < end.as_slice());
                k.ok_or_else(|| Error::InvalidInput {
                    what: "page cursor".into(),
                    reason: format!("{c:?} is not a cursor of this listing"),
                })?
            }
        };
        let tx = self.inner.store.begin_read().await?;
        let page_size = page_size.max(1);
        let index = tx
            .get_range(
                &begin,
                &end,
                RangeOptions::all().limit(page_size + 1).snapshot(),
            )
            .await?;
        let next = index.get(page_size).map(|kv| hex(&kv.key));
        let digests: Vec<Digest> = index
            .iter()
            .take(page_size)
            .filter_map(|kv| keys::digest_of_by_task(&kv.key))
            .collect();
        // One multi-key read for the page's metadata.
        let meta_keys: Vec<Vec<u8>> = digests
            .iter()
            .map(|d| keys::entry_part(d, entry_part::META))
            .collect();
        let refs: Vec<&[u8]> = meta_keys.iter().map(Vec::as_slice).collect();
        let mut entries = Vec::with_capacity(digests.len());
        let mut corrupt = Vec::new();
        for (d, raw) in digests.iter().zip(tx.get_many(&refs, true).await?) {
            let Some(raw) = raw else { continue };
            match decode::<StoredMeta>(|| format!("entry metadata of {d}"), &raw) {
                Ok(stored) => entries.push(stored.meta),
                Err(e) => corrupt.push((*d, e.to_string())),
            }
        }
        Ok(EntryPage {
            entries,
            corrupt,
            next,
        })
    }

    /// The entry stored under `digest`, with its output.
    pub async fn entry(&self, digest: &Digest) -> Result<Option<Hit>> {
        let tx = self.inner.store.begin_read().await?;
        let view = EntryView::load(&tx, digest, true).await?;
        match &view.meta {
            Some(meta) => Ok(Some(Hit {
                output: view.output(&tx, meta).await?,
                meta: meta.clone(),
            })),
            None => Ok(None),
        }
    }

    /// Statistics of `task` in `project`/`domain`.
    pub async fn task_stats(&self, project: &str, domain: &str, task: &str) -> Result<TaskStats> {
        let mut stats = TaskStats::default();
        let (begin, end) = keys::by_task_range(project, domain, Some(task), None);
        let sub = foundationdb_tuple::Subspace::from_bytes(vec![keys::tag::BY_TASK]);
        // Paged: a task with millions of entries is read in many short transactions.
        crate::store::scan(&self.inner.store, &begin, &end, |kv| {
            let Some(row) = keys::TaskIndexValue::decode(&kv.value) else {
                stats.corrupt += 1;
                return;
            };
            stats.entries += 1;
            stats.bytes += row.size;
            if let Ok((_, _, _, version, _)) =
                sub.unpack::<(String, String, String, String, Vec<u8>)>(&kv.key)
            {
                *stats.entries_by_version.entry(version).or_default() += 1;
            }
        })
        .await?;
        // Counters written by atomic adds, plus those written (big-endian) before them.
        for tag in [keys::tag::CALLS, keys::tag::STATS] {
            let (begin, end) = keys::calls_range(tag, project, domain, task);
            crate::store::scan(&self.inner.store, &begin, &end, |kv| {
                let status =
                    keys::status_of_calls(tag, &kv.key).and_then(|s| CacheStatus::from_name(&s));
                let count = if tag == keys::tag::CALLS {
                    u64::try_from(crate::store::decode_counter(Some(&kv.value))).ok()
                } else {
                    let be: Option<[u8; 8]> = kv.value.as_slice().try_into().ok();
                    be.map(u64::from_be_bytes)
                };
                if let (Some(status), Some(count)) = (status, count) {
                    *stats.calls.entry(status).or_default() += count;
                }
            })
            .await?;
        }
        Ok(stats)
    }
}
