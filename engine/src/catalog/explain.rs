//! Explaining a miss: which component of a call's cache key differs from the entries stored for
//! the same task (cache version, signature, or which inputs), so "why did this run again?" has
//! an answer.

use super::records::{StoredMeta, decode};
use super::{CacheKey, Catalog, Digest};
use crate::error::Result;
use crate::keys::{self, entry_part};
use crate::store::{RangeOptions, Store, Transaction};
use std::collections::BTreeSet;

/// Entries of a task compared at most (the most recent versions first would need an index by
/// time; this bounds the work instead).
const MAX_COMPARED: usize = 1_000;

/// How one input differs from a stored entry's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputDiff {
    /// Same name, another value.
    Changed(String),
    /// In the call, not in the entry's key (added, or no longer ignored).
    Added(String),
    /// In the entry's key, not in the call's (removed, or now ignored).
    Removed(String),
}

/// How a stored entry's key differs from the call's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The stored entry.
    pub entry: Digest,
    /// `(stored, called)` when the cache versions differ.
    pub version: Option<(String, String)>,
    /// The task signature (input or output types) changed.
    pub signature_changed: bool,
    /// Inputs that differ.
    pub inputs: Vec<InputDiff>,
}

impl Difference {
    /// How many components differ (the nearest entry has the fewest).
    pub fn distance(&self) -> usize {
        usize::from(self.version.is_some())
            + usize::from(self.signature_changed)
            + self.inputs.len()
    }
}

/// Why a call hits or misses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Explanation {
    /// An entry is stored under exactly this key.
    Stored,
    /// The key's entry was evicted (`reason` says how).
    Evicted {
        /// What evicted it.
        reason: String,
    },
    /// No entry for this key; the nearest entries of the same task, project and domain, and how
    /// they differ (empty when the task has none there).
    Miss {
        /// The nearest entries (at the smallest distance), at most [`MAX_NEAREST`] of them.
        nearest: Vec<Difference>,
        /// How many entries are at that distance (`nearest` shows the first few).
        tied: usize,
        /// Entries of the task compared.
        compared: usize,
        /// Entries of the task whose metadata does not decode (skipped).
        corrupt: usize,
    },
    /// An entry is stored under this key but its metadata does not decode: the next call runs
    /// the task and replaces it (see docs/semantics.md); `cairn cache verify --repair` or an
    /// eviction removes it.
    Corrupt {
        /// What does not decode.
        detail: String,
    },
}

/// Most nearest entries an explanation lists.
pub const MAX_NEAREST: usize = 5;

fn compare(stored: &CacheKey, call: &CacheKey, entry: Digest) -> Difference {
    let version =
        (stored.version != call.version).then(|| (stored.version.clone(), call.version.clone()));
    let names: BTreeSet<&String> = stored
        .inputs
        .iter()
        .chain(call.inputs.iter())
        .map(|(n, _)| n)
        .collect();
    let find = |k: &CacheKey, n: &String| k.inputs.iter().find(|(m, _)| m == n).map(|(_, d)| *d);
    let inputs = names
        .into_iter()
        .filter_map(|n| match (find(stored, n), find(call, n)) {
            (Some(a), Some(b)) if a != b => Some(InputDiff::Changed(n.clone())),
            (None, Some(_)) => Some(InputDiff::Added(n.clone())),
            (Some(_), None) => Some(InputDiff::Removed(n.clone())),
            _ => None,
        })
        .collect();
    Difference {
        entry,
        version,
        signature_changed: stored.signature != call.signature,
        inputs,
    }
}

impl<S: Store> Catalog<S> {
    /// Explains whether `key` hits, and if not, how the nearest stored entries of its task (in
    /// its project and domain) differ from it.
    pub async fn explain(&self, key: &CacheKey) -> Result<Explanation> {
        let d = &key.digest;
        let tx = self.inner.store.begin_read().await?;
        if let Some(raw) = tx.get(&keys::entry_part(d, entry_part::META), true).await? {
            return Ok(
                match decode::<StoredMeta>(|| format!("entry metadata of {d}"), &raw) {
                    Ok(_) => Explanation::Stored,
                    Err(e) => Explanation::Corrupt {
                        detail: e.to_string(),
                    },
                },
            );
        }
        if let Some(raw) = tx
            .get(&keys::entry_part(d, entry_part::TOMBSTONE), true)
            .await?
        {
            let t: super::records::Tombstone = decode(|| format!("tombstone of {d}"), &raw)?;
            return Ok(Explanation::Evicted { reason: t.reason });
        }
        let (begin, end) = keys::by_task_range(&key.project, &key.domain, Some(&key.task), None);
        let index = tx
            .get_range(
                &begin,
                &end,
                RangeOptions::all().limit(MAX_COMPARED).snapshot(),
            )
            .await?;
        let mut diffs = Vec::new();
        let mut corrupt = 0;
        // One multi-key read of every indexed entry's metadata.
        let entries: Vec<Digest> = index
            .iter()
            .filter_map(|kv| keys::digest_of_by_task(&kv.key))
            .collect();
        let meta_keys: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| keys::entry_part(e, entry_part::META))
            .collect();
        let refs: Vec<&[u8]> = meta_keys.iter().map(Vec::as_slice).collect();
        for (entry, raw) in entries.iter().zip(tx.get_many(&refs, true).await?) {
            let Some(raw) = raw else { continue };
            match decode::<StoredMeta>(|| format!("entry metadata of {entry}"), &raw) {
                Ok(stored) => diffs.push(compare(&stored.meta.key, key, *entry)),
                Err(_) => corrupt += 1,
            }
        }
        let best = diffs.iter().map(Difference::distance).min();
        let at_best: Vec<&Difference> = diffs
            .iter()
            .filter(|d| Some(d.distance()) == best)
            .collect();
        Ok(Explanation::Miss {
            tied: at_best.len(),
            nearest: at_best.into_iter().take(MAX_NEAREST).cloned().collect(),
            compared: diffs.len(),
            corrupt,
        })
    }
}
