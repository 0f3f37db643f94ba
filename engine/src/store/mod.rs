//! The store: an ordered key-value store with serializable transactions, shaped after
//! FoundationDB's transaction model so that FoundationDB itself is one backend among several.
//!
//! Everything Cairn keeps is written through [`Transaction`]s; nothing above this module knows
//! which backend it runs on. The module owns:
//! - the [`Store`] and [`Transaction`] traits and their contract (read-your-writes, serializable
//!   isolation, snapshot reads, retryable conflicts, FoundationDB's size [`Limits`] everywhere);
//! - [`transact`], the retry loop every caller uses;
//! - change notifications ([`watch`]), the same wait-for-change algorithm over every backend;
//! - the backends, one module each (`memory` is the in-process one with seeded faults that the
//!   deterministic simulation runs on), and [`AnyStore`], which picks one from a URL;
//! - [`fdb_limits`]: FoundationDB's limits (transaction lifetime, size with conflict ranges,
//!   watch cap, "maybe committed") enforced on any backend, for the tests.
//!
//! It never interprets keys or values: their layout belongs to [`crate::keys`].

mod any;
mod conflicts;
pub mod embedded;
pub mod fdb_limits;
#[cfg(feature = "fdb")]
pub mod foundationdb;
mod limits;
pub mod memo;
pub mod memory;
mod own;
pub mod postgres;
mod retry;
mod url;
pub mod watch;

pub use any::{AnyStore, AnyTx};
pub use limits::{Limits, WriteSize};
pub use retry::{RetryPolicy, StoreCounters, read, transact};
pub use url::{StoreUrl, redact};
pub use watch::Subscription;

use crate::error::Result;
use std::future::Future;

/// One key and its value, as returned by range reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
}

/// How a range read runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many pairs; `None` reads the whole range.
    pub limit: Option<usize>,
    /// Read from the end of the range backwards.
    pub reverse: bool,
    /// A snapshot read: it does not make the transaction conflict with writers of the range.
    pub snapshot: bool,
}

impl RangeOptions {
    /// Read the whole range forwards, with conflict tracking.
    pub fn all() -> Self {
        Self::default()
    }

    /// At most `n` pairs.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Backwards from the end of the range.
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }

    /// Without read conflicts.
    pub fn snapshot(mut self) -> Self {
        self.snapshot = true;
        self
    }
}

/// A store: a handle to one database, cheap to clone and shared by every task of a process.
pub trait Store: Clone + Send + Sync + 'static {
    /// The transaction type of this backend.
    type Tx: Transaction;

    /// Starts a read-write transaction with serializable isolation.
    fn begin(&self) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// Starts a read-write transaction for work whose latency bounds correctness (a lease
    /// heartbeat must land within the lease's TTL). Backends that queue transactions for a
    /// limited number of connections (PostgreSQL) serve it from a small reserved lane, so it
    /// never waits behind bulk work; the others start an ordinary transaction.
    fn begin_urgent(&self) -> impl Future<Output = Result<Self::Tx>> + Send {
        self.begin()
    }

    /// Starts a read-only transaction over a consistent snapshot. Its reads never conflict and
    /// it can never fail to commit; writes return [`crate::Error::ReadOnly`].
    fn begin_read(&self) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// Registers interest in `key`: the returned subscription fires after any commit that may
    /// have changed it. Wake-ups may be spurious; [`watch::wait_for_change`] re-reads.
    fn subscribe(&self, key: &[u8]) -> impl Future<Output = Result<Subscription>> + Send;

    /// The backend's name (`embedded`, `postgres`, `fdb`), for errors and metrics.
    fn backend(&self) -> &'static str;

    /// Retry and conflict counters of this store handle (shared by its clones).
    fn counters(&self) -> &StoreCounters;

    /// The latest committed values of the entries' metadata, kept in memory where this handle
    /// is the only writer of its data ([`memo::Memo`]: the embedded store, whose directory one
    /// process holds), so that a hit needs no transaction. `None` where other processes write
    /// the same data (PostgreSQL, FoundationDB, the in-memory store shared by a test's nodes).
    fn memo(&self) -> Option<&memo::Memo> {
        None
    }

    /// Most independent operations (lease acquisitions, commits of different keys) a caller
    /// should put in one transaction. Batching saves commits; conflicts are tracked per key on
    /// every store. PostgreSQL holds a lock per key a batch touches, in a lock table of
    /// bounded size, and answers what keeps a batch within its share of that table on the
    /// server it is connected to.
    fn max_batch(&self) -> usize {
        256
    }

    /// Whether the point reads of concurrent calls should be gathered into one multi-key read.
    /// Yes where every read transaction is a network round trip and work for a server
    /// (PostgreSQL); no where a point read costs about a microsecond in process (the embedded
    /// store) or the client already pipelines reads (FoundationDB).
    fn gathers_reads(&self) -> bool {
        false
    }

    /// Whether a commit waits for something besides this process's CPU: a round trip to a
    /// server, or a sync to disk. Yes for PostgreSQL and FoundationDB, for the in-memory store
    /// (it stands in for FoundationDB in tests and the simulation) and for the embedded store
    /// when it syncs every commit. A worker hands such a commit over to its pool and runs the
    /// next task body meanwhile; where a commit is only work for this process, handing it over
    /// costs more than it saves (benches/README.md measures both).
    fn commits_wait(&self) -> bool {
        false
    }

    /// The backoff (first pause, longest pause) this backend asks retries of conflicts to use,
    /// instead of [`RetryPolicy`]'s: FoundationDB's `on_error` backs off from 10 ms to 1 s.
    /// `None`: the policy's.
    fn backoff(&self) -> Option<(std::time::Duration, std::time::Duration)> {
        None
    }
}

/// A transaction. Clones share the same transaction, so a closure given to [`transact`] can own
/// one while the retry loop keeps another to commit it.
///
/// Writes are buffered and checked against [`Limits`]; an oversized write makes the commit fail
/// with [`crate::Error::TooLarge`], as in FoundationDB.
pub trait Transaction: Clone + Send + Sync + 'static {
    /// Reads one key. A `snapshot` read adds no read conflict.
    fn get(
        &self,
        key: &[u8],
        snapshot: bool,
    ) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;

    /// Reads several keys at once (one round trip on networked stores, concurrent reads on
    /// FoundationDB); the values come back in the order of `keys`.
    fn get_many(
        &self,
        keys: &[&[u8]],
        snapshot: bool,
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send;

    /// Reads `keys` now, in one round trip, so that this transaction's later point reads of
    /// them ([`Transaction::get`], [`Transaction::get_many`]) are answered without another:
    /// a batch of independent operations reads every key it will need at its start. Later
    /// reads see this transaction's own writes as usual. A backend whose reads cost no round
    /// trip (the embedded store) or whose client caches reads (FoundationDB) does nothing.
    fn prefetch(&self, keys: &[&[u8]]) -> impl Future<Output = Result<()>> + Send {
        let _ = keys;
        std::future::ready(Ok(()))
    }

    /// Reads the keys in `[begin, end)` in key order (or reverse order), merged with this
    /// transaction's own writes.
    fn get_range(
        &self,
        begin: &[u8],
        end: &[u8],
        options: RangeOptions,
    ) -> impl Future<Output = Result<Vec<KeyValue>>> + Send;

    /// Sets `key` to `value`.
    fn set(&self, key: &[u8], value: &[u8]);

    /// Removes `key`.
    fn clear(&self, key: &[u8]);

    /// Removes every key in `[begin, end)`.
    fn clear_range(&self, begin: &[u8], end: &[u8]);

    /// Adds `delta` to the counter at `key` when the transaction commits: FoundationDB's atomic
    /// `ADD` on a little-endian two's-complement integer of [`COUNTER_BYTES`] bytes (an absent
    /// key counts as 0, a shorter or longer value is zero-extended or cut, the sum wraps).
    ///
    /// It adds no read conflict: concurrent adds to one key never conflict with each other on
    /// FoundationDB and on the embedded store. PostgreSQL applies it as one upsert at commit,
    /// with no read from the caller, but locks the key as any write does, so two adds to one
    /// key committing at the same moment can still meet as a (retried) conflict. A read of
    /// `key` in the same transaction sees the sum, and conflicts as any read does.
    fn add(&self, key: &[u8], delta: i64);

    /// Commits every write atomically, or fails with a retryable [`crate::Error::Conflict`] if
    /// anything this transaction read (without `snapshot`) was changed by a commit since it began.
    fn commit(&self) -> impl Future<Output = Result<()>> + Send;

    /// Fails with a retryable [`crate::Error::Conflict`] if this transaction's reads (without
    /// `snapshot`) may not all come from one state of the store. [`transact`] asks before it
    /// returns an error of the transaction's body, so an error that came from such reads is
    /// retried, not reported. Only PostgreSQL's reads can (see its module); the other stores
    /// read one snapshot and answer `Ok` at once.
    fn check_reads(&self) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// Size of a counter written by [`Transaction::add`].
pub const COUNTER_BYTES: usize = 8;

/// The value of a counter written by [`Transaction::add`], read as FoundationDB's `ADD` reads
/// its operand: little-endian, zero-extended (absent: 0), cut to [`COUNTER_BYTES`] bytes.
pub fn decode_counter(value: Option<&[u8]>) -> i64 {
    let mut bytes = [0u8; COUNTER_BYTES];
    if let Some(v) = value {
        let n = v.len().min(COUNTER_BYTES);
        bytes[..n].copy_from_slice(&v[..n]);
    }
    i64::from_le_bytes(bytes)
}

/// The bytes of counter value `n`.
pub fn encode_counter(n: i64) -> [u8; COUNTER_BYTES] {
    n.to_le_bytes()
}

/// Pairs one [`scan`] page reads: well under FoundationDB's 5 s and its 80 kB range replies
/// for index rows.
pub const SCAN_PAGE: usize = 1_000;

/// Reads `[begin, end)` in key order, [`SCAN_PAGE`] pairs per read-only transaction, handing
/// each pair to `each`: a range of any length is read without any one transaction outliving
/// FoundationDB's 5 s. The pages are not one snapshot: a pair written during the scan may or
/// may not be seen (counts and listings, not decisions, are built this way).
pub async fn scan<S: Store>(
    store: &S,
    begin: &[u8],
    end: &[u8],
    mut each: impl FnMut(KeyValue),
) -> Result<()> {
    let mut from = begin.to_vec();
    loop {
        let tx = store.begin_read().await?;
        let page = tx
            .get_range(&from, end, RangeOptions::all().limit(SCAN_PAGE).snapshot())
            .await?;
        let full = page.len() == SCAN_PAGE;
        let next = page.last().map(|kv| {
            let mut k = kv.key.clone();
            k.push(0);
            k
        });
        for kv in page {
            each(kv);
        }
        match next {
            Some(next) if full => from = next,
            _ => return Ok(()),
        }
    }
}

/// The smallest key strictly greater than every key that starts with `prefix`, for range reads of
/// a prefix. `None` when the prefix is all `0xff` (the range runs to the end of the keyspace).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
