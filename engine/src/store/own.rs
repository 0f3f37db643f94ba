//! What the in-process backends (embedded, memory) share about a transaction's own writes.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Applies a `clear_range(begin, end)` to a transaction's own view: its point writes and pending
/// adds inside the range are forgotten, and the range is remembered as cleared (so reads inside
/// it see nothing the transaction did not write after it).
pub(super) fn clear_own_range<K, V>(
    own: &mut BTreeMap<K, V>,
    adds: &mut BTreeMap<Vec<u8>, i64>,
    cleared: &mut Vec<(Vec<u8>, Vec<u8>)>,
    begin: &[u8],
    end: &[u8],
) where
    K: Borrow<[u8]> + Ord + Clone,
{
    let inside: Vec<K> = own
        .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
        .map(|(k, _)| k.clone())
        .collect();
    for k in inside {
        own.remove(k.borrow());
    }
    adds.retain(|k, _| !(begin <= k.as_slice() && k.as_slice() < end));
    cleared.push((begin.to_vec(), end.to_vec()));
}
