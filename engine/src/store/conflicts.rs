//! Optimistic conflict resolution as FoundationDB's resolvers do it, for the in-process
//! backends (embedded, memory): every commit gets the next version and leaves what it wrote in
//! a log; a transaction may commit only if nothing it read (without `snapshot`) was written by
//! a commit after its read version. The log keeps what the open transactions may still need:
//! entries at or below the oldest open read version are dropped.

use std::collections::{BTreeMap, VecDeque};

/// A read-conflict range of a transaction.
#[derive(Debug, Clone)]
pub(super) enum Read {
    /// One key.
    Key(Vec<u8>),
    /// `[begin, end)`.
    Range(Vec<u8>, Vec<u8>),
}

impl Read {
    /// The read-conflict range of a range read of `[begin, end)`: all of it, or only the part
    /// actually read when a limit cut it at `last` (the last key returned).
    pub(super) fn of_range(begin: &[u8], end: &[u8], cut_at: Option<&[u8]>, reverse: bool) -> Read {
        match (cut_at, reverse) {
            (Some(last), false) => {
                let mut after = Vec::with_capacity(last.len() + 1);
                after.extend_from_slice(last);
                after.push(0);
                Read::Range(begin.to_vec(), after)
            }
            (Some(last), true) => Read::Range(last.to_vec(), end.to_vec()),
            (None, _) => Read::Range(begin.to_vec(), end.to_vec()),
        }
    }
}

/// What one commit wrote.
#[derive(Debug)]
pub(super) struct Written {
    version: u64,
    /// Sorted, without duplicates.
    keys: Vec<Vec<u8>>,
    /// Ranges cleared, `[begin, end)`.
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Written {
    /// The writes of the commit at `version`: `keys` in any order, `ranges` cleared.
    pub(super) fn new(
        version: u64,
        mut keys: Vec<Vec<u8>>,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Self {
        keys.sort_unstable();
        keys.dedup();
        Written {
            version,
            keys,
            ranges,
        }
    }

    fn touches(&self, read: &Read) -> bool {
        match read {
            Read::Key(k) => {
                self.keys.binary_search(k).is_ok()
                    || self
                        .ranges
                        .iter()
                        .any(|(b, e)| b.as_slice() <= k.as_slice() && k.as_slice() < e.as_slice())
            }
            Read::Range(begin, end) => {
                let first = self.keys.partition_point(|k| k < begin);
                self.keys.get(first).is_some_and(|k| k < end)
                    || self.ranges.iter().any(|(b, e)| b < end && begin < e)
            }
        }
    }
}

/// The writes of recent commits, oldest first.
#[derive(Debug, Default)]
pub(super) struct Log {
    written: VecDeque<Written>,
}

impl Log {
    /// Whether a commit after `read_version` wrote something `reads` covers.
    pub(super) fn conflicts(&self, read_version: u64, reads: &[Read]) -> bool {
        self.written
            .iter()
            .rev()
            .take_while(|w| w.version > read_version)
            .any(|w| reads.iter().any(|r| w.touches(r)))
    }

    /// Records a commit's writes (its version above every version recorded).
    pub(super) fn push(&mut self, written: Written) {
        debug_assert!(
            self.written
                .back()
                .is_none_or(|w| w.version < written.version)
        );
        if written.keys.is_empty() && written.ranges.is_empty() {
            return;
        }
        self.written.push_back(written);
    }

    /// Drops what no open transaction can conflict with: commits at or below `horizon`, the
    /// oldest open read version.
    pub(super) fn prune(&mut self, horizon: u64) {
        while self.written.front().is_some_and(|w| w.version <= horizon) {
            self.written.pop_front();
        }
    }

    /// How many commits are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.written.len()
    }
}

/// The read versions of open transactions, with their counts.
#[derive(Debug, Default)]
pub(super) struct OpenVersions(BTreeMap<u64, usize>);

impl OpenVersions {
    pub(super) fn open(&mut self, version: u64) {
        *self.0.entry(version).or_default() += 1;
    }

    pub(super) fn close(&mut self, version: u64) {
        if let Some(n) = self.0.get_mut(&version) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&version);
            }
        }
    }

    /// The oldest version an open transaction reads; `current` when none is open.
    pub(super) fn horizon(&self, current: u64) -> u64 {
        self.0.keys().next().copied().unwrap_or(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn only_later_commits_of_read_keys_conflict() {
        let mut log = Log::default();
        log.push(Written::new(3, vec![k("b"), k("a")], vec![]));
        log.push(Written::new(5, vec![k("m")], vec![(k("x"), k("z"))]));
        let key = |s| [Read::Key(k(s))];
        assert!(log.conflicts(2, &key("a")), "written at 3, read at 2");
        assert!(
            !log.conflicts(3, &key("a")),
            "written at 3, read at 3: seen"
        );
        assert!(!log.conflicts(2, &key("c")));
        assert!(log.conflicts(4, &key("m")));
        assert!(log.conflicts(4, &key("y")), "inside a cleared range");
        assert!(
            !log.conflicts(4, &key("z")),
            "a cleared range ends before its end"
        );
        let range = |b, e| [Read::Range(k(b), k(e))];
        assert!(log.conflicts(4, &range("l", "n")));
        assert!(
            !log.conflicts(4, &range("n", "x")),
            "ends where the clear begins"
        );
        assert!(log.conflicts(4, &range("n", "xa")));
        assert!(!log.conflicts(2, &range("c", "m")), "m is not in [c, m)");
        assert!(log.conflicts(2, &range("a", "b")));
    }

    #[test]
    fn a_range_cut_by_a_limit_conflicts_only_where_it_was_read() {
        let mut log = Log::default();
        log.push(Written::new(2, vec![k("d")], vec![]));
        let whole = Read::of_range(b"a", b"z", None, false);
        assert!(log.conflicts(1, &[whole]));
        // Forward, cut after "c": [a, c\0) does not reach "d".
        let forward = Read::of_range(b"a", b"z", Some(b"c"), false);
        assert!(!log.conflicts(1, &[forward]));
        let forward = Read::of_range(b"a", b"z", Some(b"d"), false);
        assert!(
            log.conflicts(1, &[forward]),
            "the last key returned is read"
        );
        // Reverse, cut at "e": [e, z) does not reach "d".
        let reverse = Read::of_range(b"a", b"z", Some(b"e"), true);
        assert!(!log.conflicts(1, &[reverse]));
        let reverse = Read::of_range(b"a", b"z", Some(b"d"), true);
        assert!(log.conflicts(1, &[reverse]));
    }

    #[test]
    fn prune_keeps_what_open_transactions_need() {
        let mut log = Log::default();
        let mut open = OpenVersions::default();
        open.open(2);
        for v in 3..=6 {
            log.push(Written::new(v, vec![k("a")], vec![]));
        }
        log.prune(open.horizon(6));
        assert_eq!(log.len(), 4, "read version 2 needs every commit after it");
        assert!(log.conflicts(2, &[Read::Key(k("a"))]));
        open.open(4);
        open.close(2);
        log.prune(open.horizon(6));
        assert_eq!(log.len(), 2, "commits 5 and 6 stay for read version 4");
        open.close(4);
        log.prune(open.horizon(6));
        assert_eq!(log.len(), 0);
        log.push(Written::new(7, vec![], vec![]));
        assert_eq!(
            log.len(),
            0,
            "a commit that wrote nothing is not remembered"
        );
    }
}
