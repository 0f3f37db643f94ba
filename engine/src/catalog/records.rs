//! The values the catalog stores (their keys are in [`crate::keys`]), and their encoding:
//! MessagePack with named fields, so a newer Cairn can add optional fields and an older one still
//! reads what it knows. A value that does not decode is reported as [`Error::Corrupt`] naming the
//! key, never skipped.

use super::{CacheKey, Digest};
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Encodes a record.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain data (strings, numbers, options): encoding cannot fail.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

/// Decodes a record; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(what: impl FnOnce() -> String, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: what(),
        detail: e.to_string(),
    })
}

/// Decodes a record that borrows from `bytes`.
pub fn decode_borrowed<'a, T: Deserialize<'a>>(
    what: impl FnOnce() -> String,
    bytes: &'a [u8],
) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: what(),
        detail: e.to_string(),
    })
}

/// The metadata of a stored entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// The key the entry is stored under, with its components (project, domain, task,
    /// version, signature, input digests), for listing and for explaining misses.
    pub key: CacheKey,
    /// When the entry was stored (Unix ms).
    pub created_at_ms: i64,
    /// The execution that produced it.
    pub execution: String,
    /// Output size in bytes.
    pub size: u64,
    /// Number of output chunks (0 when the output is stored inline).
    pub chunks: u32,
    /// xxh3-64 of the output, checked on every read.
    pub checksum: u64,
    /// When the expiry collector removes it (Unix ms), if the task has a `max_age`.
    pub expires_at_ms: Option<i64>,
}

/// The value at `(ENTRY, d, META)`: the metadata and, for outputs of at most [`INLINE_MAX`]
/// bytes, the output itself, so that a hit is one point read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMeta {
    /// The metadata.
    pub meta: EntryMeta,
    /// The output, when it is small enough to live beside its metadata (no chunks then).
    #[serde(with = "serde_bytes", default)]
    pub inline: Option<Vec<u8>>,
    /// The execution whose staged chunks hold the output (written across several
    /// transactions; see [`STAGE_BYTES`]), or `None`: the chunks are the entry's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks_of: Option<String>,
    /// The blobs the output refers to: each has a reference row while the entry exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<crate::blobs::BlobDigest>,
}

/// Outputs larger than this are staged: their chunks are written this many bytes per
/// transaction before the transaction that makes the entry visible (FoundationDB advises
/// transactions under 1 MB; its limit is 10 MB).
pub const STAGE_BYTES: usize = 1024 * 1024;

/// Largest output stored inline with its metadata.
pub const INLINE_MAX: usize = 16 * 1024;

/// What the lease record of a key says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseState {
    /// An execution is computing the key.
    Held,
    /// The last holder committed or gave up without an error; the next caller acquires.
    Released,
    /// The last execution failed; the next caller acquires at once.
    Failed {
        /// The error it reported.
        error: String,
        /// When (Unix ms).
        at_ms: i64,
    },
}

/// The lease on one cache key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The holder (a node or process name).
    pub owner: String,
    /// The holder's incarnation (0: unknown); a lease of an incarnation that is gone (its
    /// node restarted, stopped or went silent) is taken over without waiting for its TTL.
    #[serde(default)]
    pub incarnation: u64,
    /// The holder's execution id.
    pub execution: String,
    /// Fencing generation: every acquisition or takeover increments it.
    pub generation: u64,
    /// Heartbeat counter, bumped by the holder; waiters time expiry on their own clocks from the
    /// last change they saw.
    pub beat: u64,
    /// How long a waiter waits without seeing a heartbeat before taking over (ms).
    pub ttl_ms: u64,
    /// When acquired (Unix ms; informational only, never compared across machines).
    pub acquired_at_ms: i64,
    /// The holder will replace an existing entry (overwrite).
    pub overwrite: bool,
    /// Held or failed.
    pub state: LeaseState,
    /// W3C `traceparent` of the holder's call span, so that a waiter's span links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// How the holder acquired it: by taking over a silent or gone holder's lease, or after a
    /// failed holder (its error). Kept so that a retry of the acquisition after an unknown
    /// commit result reports what the acquisition that committed found.
    #[serde(default, skip_serializing_if = "Acquisition::is_plain")]
    pub acquired: Acquisition,
}

/// How a lease was acquired; see [`LeaseRecord::acquired`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquisition {
    /// It took over a held lease.
    #[serde(default)]
    pub took_over: bool,
    /// The error of the failed holder before it.
    #[serde(default)]
    pub previous_failure: Option<String>,
}

impl Acquisition {
    /// Neither a takeover nor after a failure.
    pub fn is_plain(&self) -> bool {
        !self.took_over && self.previous_failure.is_none()
    }
}

/// Left where an evicted entry was, so the next call reports `Evicted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// When (Unix ms).
    pub evicted_at_ms: i64,
    /// Why: by key, task, version, project, execution, or expiry.
    pub reason: String,
    /// The eviction that left it: a retry after an unknown commit result finds its own
    /// tombstone and counts the entry as removed by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<u64>,
}

/// The cache status of one task call.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum CacheStatus {
    /// The task is not cacheable.
    Disabled,
    /// No entry; the task ran and its result was not stored (it failed).
    Miss,
    /// Answered from the cache.
    Hit,
    /// No entry; the task ran and its output was stored.
    Populated,
    /// Overwrite requested: the cache was skipped and the entry replaced.
    Skipped,
    /// Another execution was computing the key; this call waited for its result.
    Waited,
    /// The entry had been evicted; the task ran again.
    Evicted,
    /// The cache could not be read; the task ran uncached.
    LookupFailure,
    /// The task ran but its output could not be stored; the output still reached the caller.
    PutFailure,
    /// An uncached call answered from its run's journal: an earlier attempt of the run made
    /// it, and this replay did not run it again.
    Replayed,
}

impl CacheStatus {
    /// Every status.
    pub const ALL: [CacheStatus; 10] = [
        CacheStatus::Disabled,
        CacheStatus::Miss,
        CacheStatus::Hit,
        CacheStatus::Populated,
        CacheStatus::Skipped,
        CacheStatus::Waited,
        CacheStatus::Evicted,
        CacheStatus::LookupFailure,
        CacheStatus::PutFailure,
        CacheStatus::Replayed,
    ];

    /// The status's stable name (used in keys, metrics and the API).
    pub fn name(self) -> &'static str {
        match self {
            CacheStatus::Disabled => "disabled",
            CacheStatus::Miss => "miss",
            CacheStatus::Hit => "hit",
            CacheStatus::Populated => "populated",
            CacheStatus::Skipped => "skipped",
            CacheStatus::Waited => "waited",
            CacheStatus::Evicted => "evicted",
            CacheStatus::LookupFailure => "lookup_failure",
            CacheStatus::PutFailure => "put_failure",
            CacheStatus::Replayed => "replayed",
        }
    }

    /// The status with this name.
    pub fn from_name(name: &str) -> Option<CacheStatus> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The record of one task call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// This call's execution id.
    pub execution: String,
    /// The run it belongs to, if any.
    pub run: Option<Arc<str>>,
    /// The project: entries and runs are never shared across projects.
    pub project: Arc<str>,
    /// The domain (development, staging, production…): never shared across domains.
    pub domain: Arc<str>,
    /// Task name.
    pub task: Arc<str>,
    /// Cache version.
    pub version: Arc<str>,
    /// The cache key, for cacheable calls.
    pub key: Option<Digest>,
    /// How the cache answered.
    pub status: CacheStatus,
    /// When the call started (Unix ms).
    pub started_at_ms: i64,
    /// Time from call to result (µs).
    pub duration_us: u64,
    /// Time spent waiting behind another execution (µs).
    pub wait_us: u64,
    /// The execution this call waited for, if it waited.
    pub waited_for: Option<String>,
    /// The task's error, if it failed.
    pub error: Option<String>,
    /// The call's position in its run, in the order the workflow made its calls (replays
    /// are checked against it).
    #[serde(default)]
    pub seq: Option<u64>,
    /// The run's attempt that made the call (1 for the first).
    #[serde(default)]
    pub attempt: u32,
    /// The task's body ran for this call. Counting executions counts these: a holder whose
    /// lease was taken over, whose body still ran to its end and whose output lost to the one
    /// stored first, reports `Hit` (it returns the stored output) with `executed` set.
    #[serde(default)]
    pub executed: bool,
    /// Why the cache failed the call (LookupFailure: the read; PutFailure: the write, e.g. the
    /// output's size and the limit).
    #[serde(default)]
    pub cache_error: Option<String>,
}
