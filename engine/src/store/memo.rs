//! The memo: the latest committed values of some keys, kept in memory by a store that is the
//! only writer of its data (the embedded store: its directory is locked to one process, and
//! every commit to it passes through one handle), so that a hit reads no snapshot at all.
//!
//! Which keys: the entries' metadata with their inline outputs (`(ENTRY, d, META)`, found by
//! [`crate::keys::entry_meta_digest`] and kept by their digest `d`), which is all a hit reads.
//! Each value can carry what its reader decoded from it ([`Recalled::decoded`]), so a hit
//! decodes an entry once, not at every call; the writer of a value, which has that form at
//! hand, can leave it there once its commit has landed ([`Memo::prime`]), so that no hit
//! decodes a fresh entry. Values come in two ways:
//! - **written through**: a commit that writes such a key leaves its value here once the
//!   commit has landed;
//! - **read through**: a read-only transaction that reads such a key leaves what it read, if no
//!   commit touching these keys began since the transaction took its snapshot.
//!
//! **Why a value here is always the latest.** A commit that writes or clears memo keys takes
//! two steps around the store's own commit: [`Memo::writing`] before (the keys are removed and
//! marked as being written; the epoch moves on) and [`Writing`]'s drop after (the marks go,
//! the epoch moves again, and a value is left only by the commit that landed, when no other
//! commit wrote the key meanwhile). A value is only ever put here under the lock both steps
//! take, and only while its key is unmarked and, for a read, the epoch is the one seen before
//! the read's snapshot. So from the moment a commit begins until it has ended, its keys are
//! absent here, and a lookup reads the store instead: a lookup never returns a value older
//! than a commit that ended before it began. A clear of a range that may hold memo keys
//! empties the memo and marks every key.
//!
//! **Bounded.** At most `budget` bytes (values, twice for what is decoded from them, and a fixed
//! overhead each), in 16 shards; when a shard is full, its oldest values go first (FIFO).
//! Deterministic: the same operations leave the same values, whatever the process's hash seeds.

use crate::digest::Digest;
use crate::keys;
use parking_lot::Mutex;
use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

const SHARDS: usize = 16;

/// Bytes counted per value beside its key and value (map slot, queue slot, allocation headers).
const OVERHEAD: usize = 96;

/// The memo's default size: 64 MiB, room for about 300,000 entries of small outputs.
pub const DEFAULT_BUDGET: usize = 64 << 20;

/// Digests are already xxh3 hashes: their bits, mixed, are the hash, with no random seed, so
/// that the memo behaves the same in every process.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, i: u128) {
        self.0 ^= mix(i);
    }
}

/// A digest's 128 bits folded to 64 and spread, so that digests made by hand (tests) spread
/// as well as hashes do.
fn mix(i: u128) -> u64 {
    ((i as u64) ^ ((i >> 64) as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

type DigestMap<V> = HashMap<Digest, V, BuildHasherDefault<DigestHasher>>;

fn shard_of(d: &Digest) -> usize {
    (mix(d.0) >> 60) as usize % SHARDS
}

/// A value from the memo, and what its reader decoded from it.
pub struct Recalled {
    value: Box<[u8]>,
    decoded: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Recalled {
    fn new(value: &[u8]) -> Arc<Self> {
        Arc::new(Recalled {
            value: value.into(),
            decoded: OnceLock::new(),
        })
    }

    /// The value as committed.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// What `decode` makes of the value, made on first use and kept with it (`None`: `decode`
    /// made nothing, and nothing is kept). Every reader of a memo decodes its values one way.
    pub fn decoded<T: Any + Send + Sync>(
        &self,
        decode: impl FnOnce(&[u8]) -> Option<T>,
    ) -> Option<&T> {
        if let Some(kept) = self.decoded.get() {
            return kept.downcast_ref();
        }
        let made = decode(&self.value)?;
        let _ = self.decoded.set(Box::new(made));
        self.decoded.get()?.downcast_ref()
    }
}

#[derive(Default)]
struct Shard {
    /// Digest → value and its place in `order`.
    values: DigestMap<(Arc<Recalled>, u64)>,
    /// Digests in the order their values came (a place is current only if it matches its
    /// value's).
    order: VecDeque<(Digest, u64)>,
    next: u64,
    bytes: usize,
}

/// A value's share of the budget: the value, as much again for what may be decoded from it,
/// and the overhead.
fn weight(value: &[u8]) -> usize {
    2 * value.len() + OVERHEAD
}

impl Shard {
    fn remove(&mut self, d: &Digest) {
        if let Some((value, _)) = self.values.remove(d) {
            self.bytes -= weight(&value.value);
        }
    }

    fn clear(&mut self) {
        *self = Shard::default();
    }

    fn put(&mut self, d: Digest, value: &[u8], budget: usize) {
        self.remove(&d);
        let w = weight(value);
        if w > budget {
            return;
        }
        let place = self.next;
        self.next += 1;
        self.bytes += w;
        self.values.insert(d, (Recalled::new(value), place));
        self.order.push_back((d, place));
        while self.bytes > budget {
            let Some((old, at)) = self.order.pop_front() else {
                break;
            };
            if self.values.get(&old).is_some_and(|(_, p)| *p == at) {
                self.remove(&old);
            }
        }
        // Places of values since removed or replaced: dropped once they outnumber the values.
        if self.order.len() > 2 * self.values.len() + 64 {
            let values = &self.values;
            self.order
                .retain(|(k, at)| values.get(k).is_some_and(|(_, p)| p == at));
        }
    }
}

/// Keys being written, and whether every key is (a range clear in flight).
#[derive(Default)]
struct Marks {
    /// Digest → commits writing it now, and whether another began while it was marked.
    keys: DigestMap<(u32, bool)>,
    /// Range clears of memo keys in flight.
    all: u32,
}

/// The memo of one store (shared by its clones).
pub struct Memo {
    budget: usize,
    shards: Vec<Mutex<Shard>>,
    marks: Mutex<Marks>,
    /// Moves on at both steps of every commit that writes memo keys.
    epoch: AtomicU64,
    counters: MemoCounters,
}

/// What the memo did, for benchmarks and tests.
#[derive(Debug, Default)]
pub struct MemoCounters {
    hits: AtomicU64,
}

impl MemoCounters {
    /// Lookups answered from memory.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// The epoch a read-only transaction saw before taking its snapshot: what it reads may be
/// kept only if no commit of memo keys began since.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// One commit's keys, marked as being written until this is dropped (after the commit, landed
/// or not). [`Writing::landed`] says it landed, so its values are kept. Borrows the values
/// from the commit's write set.
pub struct Writing<'a> {
    memo: &'a Memo,
    keys: Vec<(Digest, Option<&'a [u8]>)>,
    all: bool,
    landed: bool,
}

impl Writing<'_> {
    /// The commit landed: its written values stay in the memo.
    pub fn landed(mut self) {
        self.landed = true;
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let memo = self.memo;
        let mut marks = memo.marks.lock();
        memo.epoch.fetch_add(1, Ordering::SeqCst);
        if self.all {
            marks.all -= 1;
        }
        for (key, value) in self.keys.drain(..) {
            let alone = match marks.keys.get_mut(&key) {
                Some((n, contended)) if *n > 1 => {
                    *n -= 1;
                    *contended = true;
                    false
                }
                Some((_, contended)) => {
                    let alone = !*contended;
                    marks.keys.remove(&key);
                    alone
                }
                None => false,
            };
            let mut shard = memo.shards[shard_of(&key)].lock();
            match value {
                // The latest value is this commit's only if no other commit wrote the key while
                // it was marked, and no range clear is in flight.
                Some(value) if self.landed && alone && marks.all == 0 => {
                    shard.put(key, value, memo.budget / SHARDS)
                }
                _ => shard.remove(&key),
            }
        }
        if self.all {
            for shard in &memo.shards {
                shard.lock().clear();
            }
        }
    }
}

impl Memo {
    /// A memo of at most `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Memo {
            budget,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            marks: Mutex::default(),
            epoch: AtomicU64::new(0),
            counters: MemoCounters::default(),
        }
    }

    /// The digest a key is kept by, if it is one the memo keeps.
    fn kept_as(key: &[u8]) -> Option<Digest> {
        keys::entry_meta_digest(key)
    }

    /// The latest committed metadata of entry `d`, if here.
    pub fn get(&self, d: &Digest) -> Option<Arc<Recalled>> {
        let found = self.shards[shard_of(d)]
            .lock()
            .values
            .get(d)
            .map(|(v, _)| v.clone());
        if found.is_some() {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// If `d`'s value here is `value`, keeps what `make` builds as its decoded form, so that no
    /// reader decodes it. `make` must build what its readers' [`Recalled::decoded`] would make
    /// of `value`: this is for a writer that has that form at hand once its commit has landed.
    /// Nothing happens if the memo holds another value of `d` (a later commit's), or none, or
    /// a value already decoded.
    pub fn prime<T: Any + Send + Sync>(&self, d: &Digest, value: &[u8], make: impl FnOnce() -> T) {
        let found = self.shards[shard_of(d)]
            .lock()
            .values
            .get(d)
            .map(|(v, _)| v.clone());
        if let Some(recalled) = found {
            recalled.decoded(|kept| (kept == value).then(make));
        }
    }

    /// Taken before a read-only transaction's snapshot.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::SeqCst))
    }

    /// Keeps `value`, read as `key`'s value by a snapshot taken after `ticket`, if no commit of
    /// memo keys began since (the value is then still the latest).
    pub fn offer(&self, ticket: Ticket, key: &[u8], value: &[u8]) {
        let Some(d) = Self::kept_as(key) else {
            return;
        };
        let marks = self.marks.lock();
        if self.epoch.load(Ordering::SeqCst) != ticket.0
            || marks.all > 0
            || marks.keys.contains_key(&d)
        {
            return;
        }
        self.shards[shard_of(&d)]
            .lock()
            .put(d, value, self.budget / SHARDS);
    }

    /// Marks the memo keys a commit is about to write (`Some`: set, `None`: cleared) and clear
    /// (`ranges`), before it commits; `None` if it touches none.
    pub fn writing<'a>(
        &'a self,
        writes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        ranges: &[(Vec<u8>, Vec<u8>)],
    ) -> Option<Writing<'a>> {
        let keys: Vec<(Digest, Option<&'a [u8]>)> = writes
            .filter_map(|(k, v)| Some((Self::kept_as(k)?, v)))
            .collect();
        let all = ranges
            .iter()
            .any(|(begin, end)| keys::may_hold_entry_meta(begin, end));
        if keys.is_empty() && !all {
            return None;
        }
        let mut marks = self.marks.lock();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if all {
            marks.all += 1;
            for shard in &self.shards {
                shard.lock().clear();
            }
            // A commit of these keys in flight may land before the clear or after it.
            for (_, contended) in marks.keys.values_mut() {
                *contended = true;
            }
        }
        let clearing = marks.all > 0;
        for (key, _) in &keys {
            let mark = marks.keys.entry(*key).or_insert((0, false));
            mark.0 += 1;
            if mark.0 > 1 || clearing {
                mark.1 = true;
            }
            self.shards[shard_of(key)].lock().remove(key);
        }
        Some(Writing {
            memo: self,
            keys,
            all,
            landed: false,
        })
    }

    /// What the memo did.
    pub fn counters(&self) -> &MemoCounters {
        &self.counters
    }

    /// Bytes held now (as counted against the budget).
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{entry_chunk, entry_part};

    fn meta(i: u128) -> Vec<u8> {
        keys::entry_part(&Digest(i), entry_part::META)
    }

    fn write<'a>(memo: &'a Memo, key: &'a [u8], value: Option<&'a [u8]>) -> Writing<'a> {
        memo.writing(std::iter::once((key, value)), &[])
            .expect("a memo key")
    }

    fn get(memo: &Memo, i: u128) -> Option<Vec<u8>> {
        memo.get(&Digest(i)).map(|r| r.value().to_vec())
    }

    #[test]
    fn keeps_only_entry_metadata() {
        let d = Digest(7);
        assert_eq!(Memo::kept_as(&meta(7)), Some(d));
        assert_eq!(
            Memo::kept_as(&keys::entry_part(&d, entry_part::LEASE)),
            None
        );
        assert_eq!(Memo::kept_as(&entry_chunk(&d, 2)), None);
        assert_eq!(Memo::kept_as(b"\x05anything"), None);
        let memo = Memo::new(DEFAULT_BUDGET);
        assert!(
            memo.writing(std::iter::once((&b"\x05x"[..], Some(&b"v"[..]))), &[])
                .is_none()
        );
    }

    #[test]
    fn a_landed_write_is_kept_and_a_failed_one_is_not() {
        let memo = Memo::new(DEFAULT_BUDGET);
        let k = meta(1);
        write(&memo, &k, Some(b"one")).landed();
        assert_eq!(get(&memo, 1).as_deref(), Some(&b"one"[..]));
        let w = write(&memo, &k, Some(b"two"));
        assert_eq!(get(&memo, 1), None, "absent while its commit is in flight");
        drop(w); // the commit failed
        assert_eq!(get(&memo, 1), None);
        write(&memo, &k, Some(b"two")).landed();
        write(&memo, &k, None).landed();
        assert_eq!(get(&memo, 1), None, "a cleared key is not kept");
    }

    #[test]
    fn a_read_is_kept_only_if_no_commit_began_since_its_ticket() {
        let memo = Memo::new(DEFAULT_BUDGET);
        let (k, other) = (meta(1), meta(2));
        let t = memo.ticket();
        memo.offer(t, &k, b"read");
        assert_eq!(get(&memo, 1).as_deref(), Some(&b"read"[..]));
        memo.offer(memo.ticket(), b"\x05not kept", b"x");

        // A commit of another memo key began and ended after the ticket: the read may predate
        // a commit of this key too, so it is not kept.
        let t = memo.ticket();
        write(&memo, &other, Some(b"x")).landed();
        memo.offer(t, &k, b"stale?");
        assert_eq!(get(&memo, 1).as_deref(), Some(&b"read"[..]));

        // A read offered while a commit of its key is in flight is not kept, whatever its
        // ticket.
        let w = write(&memo, &k, Some(b"new"));
        memo.offer(memo.ticket(), &k, b"old");
        assert_eq!(get(&memo, 1), None);
        w.landed();
        assert_eq!(get(&memo, 1).as_deref(), Some(&b"new"[..]));
    }

    #[test]
    fn concurrent_commits_of_one_key_leave_nothing() {
        let memo = Memo::new(DEFAULT_BUDGET);
        let k = meta(1);
        let first = write(&memo, &k, Some(b"first"));
        let second = write(&memo, &k, Some(b"second"));
        // Which landed last is the store's to say: neither value is kept.
        second.landed();
        assert_eq!(get(&memo, 1), None);
        first.landed();
        assert_eq!(get(&memo, 1), None);
        write(&memo, &k, Some(b"third")).landed();
        assert_eq!(get(&memo, 1).as_deref(), Some(&b"third"[..]));
    }

    #[test]
    fn a_range_clear_empties_the_memo_until_it_ends() {
        let memo = Memo::new(DEFAULT_BUDGET);
        let (a, b) = (meta(1), meta(2));
        write(&memo, &a, Some(b"a")).landed();
        let everything = (vec![keys::tag::ENTRY], vec![keys::tag::ENTRY + 1]);
        let before = write(&memo, &b, Some(b"b"));
        let clear = memo
            .writing(std::iter::empty(), std::slice::from_ref(&everything))
            .expect("the range holds entries");
        assert_eq!(get(&memo, 1), None);
        memo.offer(memo.ticket(), &a, b"a");
        assert_eq!(
            get(&memo, 1),
            None,
            "no read is kept while the clear is in flight"
        );
        // Commits of `b` that began before the clear or during it may land before it or
        // after it: neither is kept.
        let during = write(&memo, &b, Some(b"b"));
        before.landed();
        clear.landed();
        during.landed();
        assert_eq!((get(&memo, 1), get(&memo, 2)), (None, None));
        write(&memo, &b, Some(b"b")).landed();
        assert_eq!(get(&memo, 2).as_deref(), Some(&b"b"[..]));
        // A range with no entries in it leaves the memo alone.
        let records = (vec![keys::tag::EXECUTION], vec![keys::tag::EXECUTION + 1]);
        assert!(memo.writing(std::iter::empty(), &[records]).is_none());
        assert_eq!(get(&memo, 2).as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn the_budget_holds_and_the_oldest_go_first() {
        let value = [7u8; 1000];
        let budget = SHARDS * 10 * weight(&value);
        let memo = Memo::new(budget);
        let keys: Vec<Vec<u8>> = (0..2_000).map(meta).collect();
        for k in &keys {
            write(&memo, k, Some(&value)).landed();
        }
        assert!(memo.bytes() <= budget, "{} > {budget}", memo.bytes());
        let kept = (0..2_000).filter(|i| get(&memo, *i).is_some()).count();
        assert!(kept >= SHARDS * 8, "kept {kept}");
        assert!(get(&memo, 1_999).is_some(), "the newest stays");
        assert!(get(&memo, 0).is_none(), "the oldest went");
        // A value larger than a shard is never kept.
        let (big, huge) = (meta(5_000), vec![0u8; budget]);
        write(&memo, &big, Some(&huge)).landed();
        assert!(get(&memo, 5_000).is_none());
    }

    #[test]
    fn a_writer_primes_only_the_value_it_wrote() {
        let memo = Memo::new(DEFAULT_BUDGET);
        let k = meta(1);
        write(&memo, &k, Some(b"12")).landed();
        // Another value of the key (a later commit's): not primed with this one's form.
        memo.prime(&Digest(1), b"13", || 13u32);
        let r = memo.get(&Digest(1)).unwrap();
        assert_eq!(r.decoded(|_| None::<u32>), None, "nothing kept");
        memo.prime(&Digest(1), b"12", || 12u32);
        assert_eq!(
            r.decoded(|_| -> Option<u32> { panic!("decoded again") }),
            Some(&12)
        );
        // Absent keys, and keys already decoded, are left alone.
        memo.prime(&Digest(2), b"12", || 12u32);
        assert!(memo.get(&Digest(2)).is_none());
        memo.prime(&Digest(1), b"12", || 99u32);
        assert_eq!(r.decoded(|_| None::<u32>), Some(&12));
        assert_eq!(memo.counters().hits(), 1, "priming is not a hit");
    }

    #[test]
    fn a_decoded_form_is_made_once_and_kept_with_its_value() {
        let memo = Memo::new(DEFAULT_BUDGET);
        let k = meta(1);
        write(&memo, &k, Some(b"12")).landed();
        let made = std::sync::atomic::AtomicUsize::new(0);
        let parse = |v: &[u8]| {
            made.fetch_add(1, Ordering::Relaxed);
            std::str::from_utf8(v).ok()?.parse::<u32>().ok()
        };
        let r = memo.get(&Digest(1)).unwrap();
        assert_eq!(r.decoded(parse), Some(&12));
        assert_eq!(memo.get(&Digest(1)).unwrap().decoded(parse), Some(&12));
        assert_eq!(made.load(Ordering::Relaxed), 1);
        // A value that decodes to nothing keeps nothing: each reader tries again.
        write(&memo, &k, Some(b"x")).landed();
        let r = memo.get(&Digest(1)).unwrap();
        assert_eq!(r.decoded(parse), None);
        assert_eq!(r.decoded(parse), None);
        assert_eq!(made.load(Ordering::Relaxed), 3);
    }
}
