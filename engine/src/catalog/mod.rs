//! The cache catalog: cache keys and the one atomic resolve / lease / commit protocol that makes
//! a cacheable task run once per key, written once above the [`Store`] trait for every backend.
//!
//! Everything about a key lives under one key prefix (see [`crate::keys`]): its lease, its
//! eviction tombstone, its metadata and its output chunks. So:
//! - a **hit** is one read-only range read, with no write;
//! - **resolve** is one transaction that returns the stored output, or acquires the lease (with a
//!   fencing generation), or reports who holds it;
//! - **commit** is one transaction that stores the output and metadata, updates the indexes and
//!   releases the lease; the first writer wins and nothing is ever overwritten by a late holder;
//! - **fail** releases the lease at once so waiters need not wait for it to expire;
//! - waiters sleep on the store's watch of the lease key and take over a lease only after seeing
//!   it unchanged for its TTL on their own monotonic clock ([`Catalog::wait`]).
//!
//! [`Catalog::explain`] says why a call misses: which key component differs from the nearest
//! stored entries of its task.
//!
//! The catalog never runs tasks: the actor runtime (`cairn-scheduler` and `cairn-worker`) is the
//! one implementation of a call, which composes these steps.

mod batch;
mod beat;
mod canonical;
mod commit;
mod entry;
mod evict;
mod explain;
mod gather;
mod key;
mod lease;
mod list;
mod mend;
mod recorder;
pub mod records;
mod resolve;
mod signature;
mod verify;
mod wait;

pub use crate::digest::Digest;
pub use canonical::to_canonical_msgpack;
pub use commit::Committed;
pub use evict::EvictScope;
pub use explain::{Difference, Explanation, InputDiff, MAX_NEAREST};
pub use key::{CacheHash, CacheKey, JournalSlot, KeyInputs};
pub use lease::{HeldLease, Lease};
pub use list::{EntryPage, TaskStats};
pub use recorder::{CallGroup, GroupedCall, RecordSlot};
pub use records::{CacheStatus, EntryMeta, ExecutionRecord};
pub use resolve::{Hit, Resolution, ResolveRequest};
pub use signature::{PreparedSignature, TaskSignature, TypeDesc};
pub use verify::VerifyReport;
pub use wait::Answer;

use crate::clock::{Clock, SystemClock};
use crate::nodes::Liveness;
use crate::store::{RetryPolicy, Store};
use recorder::Recorder;
use std::sync::Arc;
use std::time::Duration;

/// Settings of a catalog.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// Largest output stored; a larger one is returned to its caller with status `PutFailure`.
    pub max_output_bytes: usize,
    /// Output bytes per stored chunk (below the store's value limit).
    pub chunk_bytes: usize,
    /// Retry policy of every catalog transaction; its entropy is the catalog's (execution ids,
    /// jitter).
    pub retry: RetryPolicy,
    /// Most execution records written in one transaction.
    pub record_batch: usize,
    /// Entries evicted per transaction by bulk eviction and the expiry collector.
    pub evict_batch: usize,
    /// How fast this process's monotonic clock runs relative to real time, as this process
    /// measures lease durations: it beats a lease every third of its TTL and takes a silent
    /// lease over after its TTL, both divided by this rate. 1.0 on real machines; the
    /// simulation varies it per node (0.8–1.25) to model clock drift. The protocol tolerates
    /// rates whose ratio between two nodes stays under 3 (a beat per third of a TTL).
    pub clock_rate: f64,
    /// How long a blob nothing refers to is kept after its upload (a workspace file uploaded
    /// for a step that has not started yet, the output of a run that failed) before the orphan
    /// collector deletes it.
    pub orphan_blob_grace: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            max_output_bytes: 8 * 1024 * 1024,
            // One chunk and its key fit in one FoundationDB range reply (80 kB).
            chunk_bytes: 65_536,
            retry: RetryPolicy::default(),
            record_batch: 512,
            // About 500 bytes of writes per entry, so about 128 kB per transaction (FoundationDB
            // allows 10 MB and advises under 1 MB). Measured (benches/README.md): 256 is as fast
            // as 1,000 on PostgreSQL and faster on the embedded store.
            evict_batch: 256,
            clock_rate: 1.0,
            orphan_blob_grace: Duration::from_secs(24 * 3600),
        }
    }
}

/// The cache catalog over one store. Cheap to clone; clones share everything.
pub struct Catalog<S: Store> {
    inner: Arc<Inner<S>>,
}

impl<S: Store> Clone for Catalog<S> {
    fn clone(&self) -> Self {
        Catalog {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S: Store> {
    store: S,
    clock: Arc<dyn Clock>,
    config: CatalogConfig,
    recorder: Recorder,
    liveness: Liveness,
    mender: mend::Mender,
    beater: beat::Beater,
    /// Small outputs waiting to be committed together.
    group: parking_lot::Mutex<commit::Group>,
    /// Hit-path reads waiting to be gathered into one (on stores that gather reads).
    gather: parking_lot::Mutex<gather::Gather>,
}

impl<S: Store> Catalog<S> {
    /// A catalog on `store` with the system clock and default settings. Must be called inside a
    /// tokio runtime (it starts the execution-record writer).
    pub fn new(store: S) -> Self {
        Self::with(store, Arc::new(SystemClock), CatalogConfig::default())
    }

    /// A catalog with a given clock and settings.
    pub fn with(store: S, clock: Arc<dyn Clock>, config: CatalogConfig) -> Self {
        let recorder = Recorder::spawn(store.clone(), config.clone());
        let mender = mend::Mender::spawn(store.clone(), config.retry.clone());
        let beater = beat::Beater::spawn(store.clone(), config.retry.clone(), config.clock_rate);
        Catalog {
            inner: Arc::new(Inner {
                store,
                clock,
                config,
                recorder,
                liveness: Liveness::default(),
                mender,
                beater,
                group: Default::default(),
                gather: Default::default(),
            }),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// This process's view of which node incarnations are gone: leases they hold are taken
    /// over without waiting for their TTL. Without an identity set, nothing is gone.
    pub fn liveness(&self) -> &Liveness {
        &self.inner.liveness
    }

    /// The settings.
    pub fn config(&self) -> &CatalogConfig {
        &self.inner.config
    }

    /// The content-addressed blobs of the catalog's store, on its clock and retry policy.
    pub fn blobs(&self) -> crate::blobs::Blobs<S> {
        crate::blobs::Blobs::new(
            self.inner.store.clone(),
            self.inner.config.retry.clone(),
            self.inner.clock.clone(),
        )
        .with_grace(self.inner.config.orphan_blob_grace)
    }

    /// Deletes the blobs uploaded more than [`CatalogConfig::orphan_blob_grace`] ago that no
    /// entry refers to; returns how many.
    pub async fn collect_orphan_blobs(&self) -> crate::error::Result<u64> {
        self.blobs()
            .collect_orphans(
                self.inner.config.orphan_blob_grace,
                self.inner.config.evict_batch,
            )
            .await
    }

    /// The time on the catalog's clock (Unix ms).
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The catalog's randomness (that of its retry policy).
    pub fn entropy(&self) -> &crate::entropy::Entropy {
        &self.inner.config.retry.entropy
    }

    /// A new execution id, from this catalog's clock and randomness.
    pub fn new_execution_id(&self) -> String {
        execution_id(self.now_ms(), self.entropy())
    }
}

/// A new execution id on the system clock and the operating system's randomness (tests and
/// tools; a node's come from [`Catalog::new_execution_id`]).
pub fn new_execution_id() -> String {
    execution_id(SystemClock.now_ms(), &crate::entropy::Entropy::os())
}

/// An execution id: time-ordered (milliseconds, then random bits), unique across nodes.
fn execution_id(ms: i64, entropy: &crate::entropy::Entropy) -> String {
    // Written digit by digit into a buffer: `format!`, or pushing chars one by one, costs as
    // much as the rest of a cache hit's bookkeeping.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn hex(out: &mut [u8; 33], at: &mut usize, n: u64, digits: u32) {
        let digits = digits.max(16 - n.leading_zeros() / 4);
        for i in (0..digits).rev() {
            out[*at] = HEX[((n >> (i * 4)) & 0xf) as usize];
            *at += 1;
        }
    }
    let (mut buf, mut len) = ([0u8; 33], 0);
    hex(&mut buf, &mut len, ms as u64, 12);
    buf[len] = b'-';
    len += 1;
    hex(&mut buf, &mut len, entropy.next_u64(), 16);
    std::str::from_utf8(&buf[..len]).map_or_else(|_| String::new(), str::to_owned)
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #[test]
    fn execution_ids_are_zero_padded_hex_time_then_randomness() {
        let entropy = crate::entropy::Entropy::seeded(7);
        let expected = format!("{:012x}-{:016x}", 1_764_600_000_123_i64, {
            let e = crate::entropy::Entropy::seeded(7);
            e.next_u64()
        });
        assert_eq!(super::execution_id(1_764_600_000_123, &entropy), expected);
        let zero = crate::entropy::Entropy::seeded(7);
        let id = super::execution_id(0, &zero);
        assert_eq!(id.len(), 29);
        assert!(id.starts_with("000000000000-"), "{id}");
        // Beyond 12 hex digits of milliseconds, the time is written whole.
        let far = super::execution_id(0x1_0000_0000_0000, &zero);
        assert!(far.starts_with("1000000000000-"), "{far}");
    }
}
