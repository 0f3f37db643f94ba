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
        /// The nearest entries, fewest differences first (all those at the smallest distance).
        nearest: Vec<Difference>,
        /// Entries of the task compared.
        compared: usize,
    },
}

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
        if tx
            .get(&keys::entry_part(d, entry_part::META), true)
            .await?
            .is_some()
        {
            return Ok(Explanation::Stored);
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
        for kv in &index {
            let Some(entry) = keys::digest_of_by_task(&kv.key) else {
                continue;
            };
            let Some(raw) = tx
                .get(&keys::entry_part(&entry, entry_part::META), true)
                .await?
            else {
                continue;
            };
            let stored: StoredMeta = decode(|| format!("entry metadata of {entry}"), &raw)?;
            diffs.push(compare(&stored.meta.key, key, entry));
        }
        let best = diffs.iter().map(Difference::distance).min();
        let nearest = diffs
            .iter()
            .filter(|d| Some(d.distance()) == best)
            .cloned()
            .collect();
        Ok(Explanation::Miss {
            nearest,
            compared: diffs.len(),
        })
    }
}
