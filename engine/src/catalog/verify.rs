//! Verifying stored entries: every entry of a project and domain (or of one task) is read back
//! whole, its metadata decoded and its output checked against its size, chunk count and
//! checksum. Corrupt entries are reported with their keys and, on request, removed.

use super::entry::{assemble, read_chunks};
use super::evict::{Doomed, remove_batch};
use super::records::{StoredMeta, Tombstone, decode, encode};
use super::{Catalog, Digest};
use crate::error::Result;
use crate::keys::{self, entry_part};
use crate::store::{RangeOptions, Store, Transaction, read, transact};

/// What [`Catalog::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries read back.
    pub checked: u64,
    /// Entries whose metadata does not decode or whose output fails its checks, and why.
    pub corrupt: Vec<(Digest, String)>,
    /// Corrupt entries removed (with `repair`).
    pub repaired: u64,
}

/// Entries read per transaction.
const PAGE: usize = 256;

impl<S: Store> Catalog<S> {
    /// Reads back every entry of `project`/`domain` (only `task`'s, if given) and checks it;
    /// with `repair`, removes the corrupt ones (as an eviction does, tombstone included, so the
    /// next call reports `Evicted` and computes the key again).
    pub async fn verify(
        &self,
        project: &str,
        domain: &str,
        task: Option<&str>,
        repair: bool,
    ) -> Result<VerifyReport> {
        crate::names::check_all(&[("project", project), ("domain", domain)])?;
        if let Some(t) = task {
            crate::names::check("task", t)?;
        }
        let (mut cursor, end) = keys::by_task_range(project, domain, task, None);
        let mut report = VerifyReport::default();
        loop {
            let (rows, found) = read(&self.inner.store, &self.inner.config.retry, |tx| {
                let (cursor, end) = (&cursor, &end);
                async move {
                    let rows = tx
                        .get_range(cursor, end, RangeOptions::all().limit(PAGE).snapshot())
                        .await?;
                    let mut found = Vec::new();
                    for kv in &rows {
                        let Some(d) = keys::digest_of_by_task(&kv.key) else {
                            continue;
                        };
                        if let Some(why) = check_entry(&tx, &d).await? {
                            found.push((kv.clone(), d, why));
                        }
                    }
                    Ok((rows, found))
                }
            })
            .await?;
            report.checked += rows.len() as u64;
            if repair && !found.is_empty() {
                let tombstone = encode(&Tombstone {
                    evicted_at_ms: self.now_ms(),
                    reason: "verify: corrupt entry".into(),
                    op: Some(self.entropy().next_u64()),
                });
                let doomed: Vec<Doomed> = found
                    .iter()
                    .map(|(kv, d, _)| Doomed {
                        row: kv.key.clone(),
                        digest: *d,
                        task_row: keys::TaskIndexValue::decode(&kv.value),
                        expiring_at: None,
                    })
                    .collect();
                let (doomed, tombstone) = (&doomed, &tombstone);
                report.repaired += transact(
                    &self.inner.store,
                    &self.inner.config.retry,
                    |tx| async move { remove_batch(&tx, doomed, Some(tombstone)).await },
                )
                .await?;
            }
            report
                .corrupt
                .extend(found.into_iter().map(|(_, d, why)| (d, why)));
            let Some(last) = rows.last() else { break };
            if rows.len() < PAGE {
                break;
            }
            cursor = last.key.clone();
            cursor.push(0);
        }
        Ok(report)
    }
}

/// What is wrong with entry `d`, if anything (an entry removed meanwhile is fine).
async fn check_entry<T: Transaction>(tx: &T, d: &Digest) -> Result<Option<String>> {
    let Some(raw) = tx.get(&keys::entry_part(d, entry_part::META), true).await? else {
        return Ok(None);
    };
    let stored: StoredMeta = match decode(|| format!("entry metadata of {d}"), &raw) {
        Ok(s) => s,
        Err(e) => return Ok(Some(e.to_string())),
    };
    let chunks = if stored.inline.is_some() {
        Vec::new()
    } else {
        read_chunks(tx, d, stored.chunks_of.as_deref(), true).await?
    };
    Ok(assemble(&stored.meta, stored.inline, &chunks)
        .err()
        .map(|e| e.to_string()))
}
