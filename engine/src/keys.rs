//! The key layout of everything Cairn stores, in one place.
//!
//! Keys are FoundationDB tuples (`foundationdb-tuple`), so they sort by their components and
//! every backend stores the same bytes. The first element of every key is a one-byte subspace
//! tag naming the kind of record; tags are never reused. Values are MessagePack (`rmp-serde`,
//! named fields) of the types in [`crate::catalog::records`] unless the table says otherwise.
//! `d` is a cache key digest (16 bytes, big-endian), `ms` a Unix time in milliseconds.
//!
//! | tag | key | value |
//! |---|---|---|
//! | `ENTRY` 0x01 | `(1, d, 0)` | `LeaseRecord`: who computes `d` now, or whose attempt failed |
//! | | `(1, d, 1)` | `Tombstone`: `d` was evicted (cleared when a new entry is stored) |
//! | | `(1, d, 2)` | `StoredMeta`: the entry's metadata, and the output itself if ≤ 16 KiB |
//! | | `(1, d, 3, i)` | chunk `i` of a larger output written in one transaction (raw bytes, `chunk_bytes` each) |
//! | | `(1, d, 4, execution, i)` | chunk `i` of an output staged by `execution` in several transactions (raw bytes); the entry's metadata names the execution |
//! | | `(1, d, 4, execution, -1)` | empty: `execution` is staging an output of `d` (cleared when its entry is made visible) |
//! | `BY_TASK` 0x02 | `(2, project, domain, task, version, d)` | `TaskIndexValue`: entry size (u64 big-endian), then its expiry (i64 big-endian, `i64::MIN` for none) and its producing execution (UTF-8), so eviction needs no metadata; older rows hold the size alone |
//! | `BY_EXECUTION` 0x03 | `(3, execution, d)` | empty |
//! | `EXPIRY` 0x04 | `(4, ms, d)` | empty: the entry expires at `ms` |
//! | `EXECUTION` 0x05 | `(5, run, execution)` | a group of up to 128 `ExecutionRecord`s of `run` (`""` outside any run), keyed by the first one's id; tag byte 1 + positional MessagePack |
//! | `STATS` 0x07 | `(7, project, domain, task, status)` | call count, u64 big-endian (written before 2026-11-30; read, added to `CALLS`, never written) |
//! | `SCHEDULE` 0x08 | `(8, name)` | `ScheduleRecord`: the schedule's spec and state (next fire time, counters) |
//! | `TICK` 0x09 | `(9, name, ms)` | `TickRecord`: the tick at `ms` fired (claimed with the state change) |
//! | `RUN` 0x0a | `(10, run)` | `RunRecord`: a run started by name: workflow, input, status, output or error |
//! | `RUN_BY_TIME` 0x0b | `(11, ms, run)` | empty: run `run` started at `ms` (listing, newest first) |
//! | `NODE` 0x0c | `(12, name)` | `NodeRecord`: the node's current incarnation and its liveness heartbeat |
//! | `RUN_ACTIVE` 0x0d | `(13, run)` | `RunOwner`: a running run and the node incarnation (and generation) that owns it |
//! | `RUN_DATA` 0x0e | `(14, run, part, i)` | chunk `i` of a run's input (part 0), output (1) or error (2) when too large to keep inline (raw bytes) |
//! | `JOURNAL` 0x0f | `(15, run, d)` | empty: `d` is a journal entry of `run` (an uncached call's outcome, stored under `(1, d)`) |
//! | `RUN_GC` 0x10 | `(16, ms, run)` | empty: the journal of ended run `run` is removed after `ms` |
//! | `IDEMPOTENCY` 0x11 | `(17, key)` | `IdempotencyRecord`: the run a submission with this `Idempotency-Key` created |
//! | `IDEMPOTENCY_EXPIRY` 0x12 | `(18, ms, key)` | empty: the idempotency key expires at `ms` |
//! | `CANCEL_SEQ` 0x13 | `(19)` | number of cancellations so far, u64 big-endian (watched by every node) |
//! | `CANCEL` 0x14 | `(20, seq)` | `CancelNotice`: the `seq`-th cancellation (which run, when) |
//! | `CALLS` 0x15 | `(21, project, domain, task, status)` | call count, i64 little-endian, changed only by atomic adds (`Transaction::add`) |
//! | `EXECUTION_RUN` 0x16 | `(22, execution)` | the run (UTF-8) of an execution that ran a task body for a key |
//! | `BLOB` 0x17 | `(23, b, i)` | chunk `i` of the content-addressed blob whose BLAKE3 digest is `b` (32 bytes; raw bytes, 64 KiB each) |
//! | | `(23, b, -1)` | `BlobMeta`: the blob is complete (size, chunk count, upload time); written by the last of its upload's transactions |
//! | `BLOB_REF` 0x18 | `(24, b, d)` | empty: entry `d` refers to blob `b` (written with the entry, cleared when it goes; the blob goes with its last reference) |
//! | `BLOB_NEW` 0x19 | `(25, ms, b)` | empty: blob `b` was uploaded at `ms`; the orphan collector deletes it after a grace period if nothing refers to it |
//! | `TEST` 0xfe | anything | scratch space of the store conformance suite and benchmarks |
//!
//! Everything about one cache key lives under `(1, d)`, so one transaction can change it all.
//! A hit is one point read of the metadata (outputs up to 16 KiB are inline); a resolve reads
//! lease, tombstone and metadata with one multi-key read; only large outputs add a range read of
//! their chunks.

use crate::digest::Digest;
use foundationdb_tuple::{Bytes, Subspace, TuplePack};

/// Tags of the top-level subspaces.
pub mod tag {
    /// Everything about one cache key: lease, tombstone, metadata, output chunks.
    pub const ENTRY: u8 = 0x01;
    /// Entries by project, domain, task and version.
    pub const BY_TASK: u8 = 0x02;
    /// Entries by the execution that produced them.
    pub const BY_EXECUTION: u8 = 0x03;
    /// Entries by expiry time.
    pub const EXPIRY: u8 = 0x04;
    /// Execution records of task calls, by run.
    pub const EXECUTION: u8 = 0x05;
    /// Per-task call counters by cache status, big-endian: read, no longer written.
    pub const STATS: u8 = 0x07;
    /// Schedules: spec and state.
    pub const SCHEDULE: u8 = 0x08;
    /// Fired ticks of schedules.
    pub const TICK: u8 = 0x09;
    /// Workflow runs started by name (API, CLI, schedules).
    pub const RUN: u8 = 0x0a;
    /// Runs by start time.
    pub const RUN_BY_TIME: u8 = 0x0b;
    /// Node identities: incarnation and liveness heartbeat.
    pub const NODE: u8 = 0x0c;
    /// Running runs and their owners.
    pub const RUN_ACTIVE: u8 = 0x0d;
    /// Large run inputs, outputs and errors, in chunks.
    pub const RUN_DATA: u8 = 0x0e;
    /// Journal entries of runs.
    pub const JOURNAL: u8 = 0x0f;
    /// Ended runs whose journal is due for removal, by time.
    pub const RUN_GC: u8 = 0x10;
    /// Idempotency keys of run submissions.
    pub const IDEMPOTENCY: u8 = 0x11;
    /// Idempotency keys by expiry time.
    pub const IDEMPOTENCY_EXPIRY: u8 = 0x12;
    /// The cancellation counter.
    pub const CANCEL_SEQ: u8 = 0x13;
    /// Cancellation notices.
    pub const CANCEL: u8 = 0x14;
    /// Per-task call counters by cache status, changed by atomic adds.
    pub const CALLS: u8 = 0x15;
    /// The run of each execution that ran a task body for a key (where a waiting call's
    /// producer is).
    pub const EXECUTION_RUN: u8 = 0x16;
    /// Content-addressed blobs (command tasks' files), by BLAKE3 digest.
    pub const BLOB: u8 = 0x17;
    /// Which entries refer to each blob: its reference count, one row per reference.
    pub const BLOB_REF: u8 = 0x18;
    /// Blobs by upload time, for the orphan collector.
    pub const BLOB_NEW: u8 = 0x19;
    /// Scratch space of the store conformance suite and benchmarks.
    pub const TEST: u8 = 0xfe;
}

/// Position of each record under `(ENTRY, d)`.
pub mod entry_part {
    /// The lease record.
    pub const LEASE: i64 = 0;
    /// The eviction tombstone.
    pub const TOMBSTONE: i64 = 1;
    /// The entry's metadata.
    pub const META: i64 = 2;
    /// The output chunks.
    pub const CHUNK: i64 = 3;
    /// Output chunks staged by one execution across several transactions.
    pub const STAGED: i64 = 4;
}

/// The subspace with tag `tag`.
pub fn subspace(tag: u8) -> Subspace {
    Subspace::from_bytes(vec![tag])
}

/// Packs `t` under `subspace`.
pub fn pack<T: TuplePack>(subspace: &Subspace, t: &T) -> Vec<u8> {
    subspace.pack(t)
}

fn digest_bytes(d: &Digest) -> Bytes<'static> {
    Bytes::from(d.to_bytes().to_vec())
}

/// A key in FoundationDB's tuple encoding, written straight into one buffer: what the keys
/// every task call makes use (the generic packer allocates for the subspace, for each element
/// and for the key; checked byte for byte against it in the tests).
struct Key(Vec<u8>);

impl Key {
    fn new(tag: u8, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.push(tag);
        Key(buf)
    }

    /// A byte string: `0x01`, the bytes with each `0x00` escaped as `0x00 0xff`, `0x00`.
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.push(0x01);
        self.escaped(b);
        self
    }

    /// A unicode string: as bytes, with code `0x02`.
    fn str(mut self, s: &str) -> Self {
        self.0.push(0x02);
        self.escaped(s.as_bytes());
        self
    }

    fn escaped(&mut self, b: &[u8]) {
        let mut rest = b;
        while let Some(at) = rest.iter().position(|&c| c == 0) {
            self.0.extend_from_slice(&rest[..=at]);
            self.0.push(0xff);
            rest = &rest[at + 1..];
        }
        self.0.extend_from_slice(rest);
        self.0.push(0x00);
    }

    fn digest(self, d: &Digest) -> Self {
        self.bytes(&d.to_bytes())
    }

    /// An integer: `0x14` for zero; `0x14 + n` and `n` big-endian bytes for a positive one;
    /// `0x14 - n` and the ones' complement of its magnitude in `n` bytes for a negative one.
    fn int(mut self, i: i64) -> Self {
        let magnitude = i.unsigned_abs();
        let n = 8 - magnitude.leading_zeros() as usize / 8;
        if i >= 0 {
            self.0.push(0x14 + n as u8);
            self.0.extend_from_slice(&magnitude.to_be_bytes()[8 - n..]);
        } else {
            self.0.push(0x14 - n as u8);
            self.0
                .extend_from_slice(&(!magnitude).to_be_bytes()[8 - n..]);
        }
        self
    }

    fn done(self) -> Vec<u8> {
        self.0
    }
}

/// `[begin, end)` of everything about cache key `d`.
pub fn entry_range(d: &Digest) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::ENTRY).subspace(&(digest_bytes(d),)).range()
}

/// The key of one part of cache key `d` (see [`mod@entry_part`]).
pub fn entry_part(d: &Digest, part: i64) -> Vec<u8> {
    Key::new(tag::ENTRY, 24).digest(d).int(part).done()
}

/// The digest `d` of `key` if it is an entry's metadata, `(ENTRY, d, META)`: what a hit reads.
pub fn entry_meta_digest(key: &[u8]) -> Option<Digest> {
    // A tuple ending in the integer 2 ends in these bytes (FoundationDB's encoding): every
    // commit asks this of each key it writes, and most are turned away here, unparsed.
    if !key.ends_with(&[0x15, entry_part::META as u8]) {
        return None;
    }
    let tuple = key.strip_prefix(&[tag::ENTRY])?;
    match foundationdb_tuple::unpack::<(Bytes<'_>, i64)>(tuple) {
        Ok((d, entry_part::META)) => Digest::from_slice(&d),
        _ => None,
    }
}

/// Whether `[begin, end)` may hold an entry's metadata: it overlaps the `ENTRY` subspace.
pub fn may_hold_entry_meta(begin: &[u8], end: &[u8]) -> bool {
    begin < &[tag::ENTRY + 1][..] && end > &[tag::ENTRY][..]
}

/// The key of output chunk `i` of `d`.
pub fn entry_chunk(d: &Digest, i: u32) -> Vec<u8> {
    Key::new(tag::ENTRY, 28)
        .digest(d)
        .int(entry_part::CHUNK)
        .int(i.into())
        .done()
}

/// The key of chunk `i` of the output `execution` stages for `d`.
pub fn staged_chunk(d: &Digest, execution: &str, i: u32) -> Vec<u8> {
    Key::new(tag::ENTRY, 32 + execution.len())
        .digest(d)
        .int(entry_part::STAGED)
        .str(execution)
        .int(i.into())
        .done()
}

/// The marker saying `execution` is staging an output for `d`: it sorts before the chunks, in
/// [`staged_by`]'s range.
pub fn staging_marker(d: &Digest, execution: &str) -> Vec<u8> {
    Key::new(tag::ENTRY, 32 + execution.len())
        .digest(d)
        .int(entry_part::STAGED)
        .str(execution)
        .int(-1)
        .done()
}

/// `[begin, end)` of the chunks `execution` staged for `d` (not its marker).
pub fn staged_chunks(d: &Digest, execution: &str) -> (Vec<u8>, Vec<u8>) {
    let (_, end) = staged_by(d, execution);
    (staged_chunk(d, execution, 0), end)
}

/// `[begin, end)` of everything `execution` staged for `d`: marker and chunks.
pub fn staged_by(d: &Digest, execution: &str) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::ENTRY)
        .subspace(&(digest_bytes(d), entry_part::STAGED, execution))
        .range()
}

/// `[begin, end)` of everything staged for `d`, by any execution.
pub fn staged(d: &Digest) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::ENTRY)
        .subspace(&(digest_bytes(d), entry_part::STAGED))
        .range()
}

/// `[begin, end)` of the output chunks of `d`.
pub fn entry_chunks(d: &Digest) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::ENTRY)
        .subspace(&(digest_bytes(d), entry_part::CHUNK))
        .range()
}

/// The key of chunk `i` of blob `b` (its BLAKE3 digest).
pub fn blob_chunk(b: &[u8; 32], i: u32) -> Vec<u8> {
    subspace(tag::BLOB).pack(&(Bytes::from(b.to_vec()), i))
}

/// The key of blob `b`'s completion record; it sorts before the chunks.
pub fn blob_meta(b: &[u8; 32]) -> Vec<u8> {
    subspace(tag::BLOB).pack(&(Bytes::from(b.to_vec()), -1i64))
}

/// `[begin, end)` of blob `b`'s chunks (not its completion record).
pub fn blob_chunks(b: &[u8; 32]) -> (Vec<u8>, Vec<u8>) {
    let (_, end) = subspace(tag::BLOB)
        .subspace(&(Bytes::from(b.to_vec()),))
        .range();
    (blob_chunk(b, 0), end)
}

/// `[begin, end)` of everything of blob `b`: its completion record and chunks.
pub fn blob_range(b: &[u8; 32]) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::BLOB)
        .subspace(&(Bytes::from(b.to_vec()),))
        .range()
}

/// The row saying entry `d` refers to blob `b`.
pub fn blob_ref(b: &[u8; 32], d: &Digest) -> Vec<u8> {
    subspace(tag::BLOB_REF).pack(&(Bytes::from(b.to_vec()), digest_bytes(d)))
}

/// `[begin, end)` of the references to blob `b`.
pub fn blob_refs(b: &[u8; 32]) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::BLOB_REF)
        .subspace(&(Bytes::from(b.to_vec()),))
        .range()
}

/// The entry a [`blob_ref`] row names.
pub fn entry_of_blob_ref(key: &[u8]) -> Option<Digest> {
    let (_, d): (Vec<u8>, Vec<u8>) = subspace(tag::BLOB_REF).unpack(key).ok()?;
    Digest::from_slice(&d)
}

/// The row saying blob `b` was uploaded at `ms`.
pub fn blob_new(ms: i64, b: &[u8; 32]) -> Vec<u8> {
    subspace(tag::BLOB_NEW).pack(&(ms, Bytes::from(b.to_vec())))
}

/// `[begin, end)` of the [`blob_new`] rows of blobs uploaded before `ms`.
pub fn blobs_new_before(ms: i64) -> (Vec<u8>, Vec<u8>) {
    let s = subspace(tag::BLOB_NEW);
    (s.range().0, s.pack(&(ms,)))
}

/// The upload time and blob of a [`blob_new`] row.
pub fn parse_blob_new(key: &[u8]) -> Option<(i64, [u8; 32])> {
    let (ms, b): (i64, Vec<u8>) = subspace(tag::BLOB_NEW).unpack(key).ok()?;
    Some((ms, b.try_into().ok()?))
}

/// What a task index row says about its entry: enough to remove the entry and its other index
/// rows without decoding its metadata (which may be corrupt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskIndexValue {
    /// The output's size in bytes.
    pub size: u64,
    /// When the entry expires (Unix ms), if it does.
    pub expires_at_ms: Option<i64>,
    /// The execution that produced it (`None` in rows written before this was kept).
    pub execution: Option<String>,
}

impl TaskIndexValue {
    /// The row's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.size.to_be_bytes().to_vec();
        if let Some(e) = &self.execution {
            out.extend_from_slice(&self.expires_at_ms.unwrap_or(i64::MIN).to_be_bytes());
            out.extend_from_slice(e.as_bytes());
        }
        out
    }

    /// Parses a row (both layouts); `None` when it is neither.
    pub fn decode(bytes: &[u8]) -> Option<TaskIndexValue> {
        let size = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        if bytes.len() == 8 {
            return Some(TaskIndexValue {
                size,
                expires_at_ms: None,
                execution: None,
            });
        }
        let at = i64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        let execution = std::str::from_utf8(bytes.get(16..)?).ok()?.to_string();
        Some(TaskIndexValue {
            size,
            expires_at_ms: (at != i64::MIN).then_some(at),
            execution: Some(execution),
        })
    }
}

/// The task index key of an entry.
pub fn by_task(project: &str, domain: &str, task: &str, version: &str, d: &Digest) -> Vec<u8> {
    Key::new(
        tag::BY_TASK,
        32 + project.len() + domain.len() + task.len() + version.len(),
    )
    .str(project)
    .str(domain)
    .str(task)
    .str(version)
    .digest(d)
    .done()
}

/// `[begin, end)` of the task index, narrowed by as many of project, domain, task and version as
/// are given (each only if the ones before it are).
pub fn by_task_range(
    project: &str,
    domain: &str,
    task: Option<&str>,
    version: Option<&str>,
) -> (Vec<u8>, Vec<u8>) {
    let s = subspace(tag::BY_TASK);
    match (task, version) {
        (Some(t), Some(v)) => s.subspace(&(project, domain, t, v)).range(),
        (Some(t), None) => s.subspace(&(project, domain, t)).range(),
        _ => s.subspace(&(project, domain)).range(),
    }
}

/// The digest at the end of a task index key.
pub fn digest_of_by_task(key: &[u8]) -> Option<Digest> {
    let (_, _, _, _, d): (String, String, String, String, Vec<u8>) =
        subspace(tag::BY_TASK).unpack(key).ok()?;
    Digest::from_slice(&d)
}

/// The producing-execution index key of an entry.
pub fn by_execution(execution: &str, d: &Digest) -> Vec<u8> {
    Key::new(tag::BY_EXECUTION, 24 + execution.len())
        .str(execution)
        .digest(d)
        .done()
}

/// `[begin, end)` of the entries an execution produced.
pub fn by_execution_range(execution: &str) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::BY_EXECUTION).subspace(&(execution,)).range()
}

/// The digest at the end of a producing-execution index key.
pub fn digest_of_by_execution(key: &[u8]) -> Option<Digest> {
    let (_, d): (String, Vec<u8>) = subspace(tag::BY_EXECUTION).unpack(key).ok()?;
    Digest::from_slice(&d)
}

/// The expiry index key of an entry expiring at `ms`.
pub fn expiry(ms: i64, d: &Digest) -> Vec<u8> {
    Key::new(tag::EXPIRY, 32).int(ms).digest(d).done()
}

/// `[begin, end)` of expiry index keys of entries expiring before `ms`.
pub fn expiry_before(ms: i64) -> (Vec<u8>, Vec<u8>) {
    let s = subspace(tag::EXPIRY);
    (s.range().0, s.pack(&(ms,)))
}

/// The expiry time and digest of an expiry index key.
pub fn parse_expiry(key: &[u8]) -> Option<(i64, Digest)> {
    let (ms, d): (i64, Vec<u8>) = subspace(tag::EXPIRY).unpack(key).ok()?;
    Some((ms, Digest::from_slice(&d)?))
}

/// The group of execution records of `run` (`""` outside any run) that starts with `execution`.
pub fn execution(run: &str, execution: &str) -> Vec<u8> {
    Key::new(tag::EXECUTION, 8 + run.len() + execution.len())
        .str(run)
        .str(execution)
        .done()
}

/// The run (`""` outside any run) of `execution`, an execution that ran a task body for a key.
pub fn execution_run(execution: &str) -> Vec<u8> {
    Key::new(tag::EXECUTION_RUN, 4 + execution.len())
        .str(execution)
        .done()
}

/// `[begin, end)` of the execution records of a run.
pub fn executions_of_run(run: &str) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::EXECUTION).subspace(&(run,)).range()
}

/// The counter of calls of a task that ended with `status` (changed by atomic adds).
pub fn calls(project: &str, domain: &str, task: &str, status: &str) -> Vec<u8> {
    Key::new(
        tag::CALLS,
        8 + project.len() + domain.len() + task.len() + status.len(),
    )
    .str(project)
    .str(domain)
    .str(task)
    .str(status)
    .done()
}

/// `[begin, end)` of the call counters of one task: [`calls`] ones with `tag::CALLS`, the
/// big-endian ones written before atomic adds with `tag::STATS`.
pub fn calls_range(tag: u8, project: &str, domain: &str, task: &str) -> (Vec<u8>, Vec<u8>) {
    subspace(tag).subspace(&(project, domain, task)).range()
}

/// The status name at the end of a call counter key under `tag` (`CALLS` or `STATS`).
pub fn status_of_calls(tag: u8, key: &[u8]) -> Option<String> {
    let (_, _, _, s): (String, String, String, String) = subspace(tag).unpack(key).ok()?;
    Some(s)
}

/// The record of schedule `name`.
pub fn schedule(name: &str) -> Vec<u8> {
    subspace(tag::SCHEDULE).pack(&(name,))
}

/// The schedule name of a schedule key.
pub fn schedule_name_of(key: &[u8]) -> Option<String> {
    let (name,): (String,) = subspace(tag::SCHEDULE).unpack(key).ok()?;
    Some(name)
}

/// `[begin, end)` of every schedule record.
pub fn schedules() -> (Vec<u8>, Vec<u8>) {
    subspace(tag::SCHEDULE).range()
}

/// The record of tick `ms` of schedule `name`.
pub fn tick(name: &str, ms: i64) -> Vec<u8> {
    subspace(tag::TICK).pack(&(name, ms))
}

/// `[begin, end)` of the ticks of schedule `name`.
pub fn ticks(name: &str) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::TICK).subspace(&(name,)).range()
}

/// The tick time of a tick key.
pub fn tick_of(key: &[u8]) -> Option<i64> {
    let (_, ms): (String, i64) = subspace(tag::TICK).unpack(key).ok()?;
    Some(ms)
}

/// Lower-case hex of `bytes` (page cursors are index keys in hex).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string, `None` if it is not one.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The record of run `run`.
pub fn run(run: &str) -> Vec<u8> {
    subspace(tag::RUN).pack(&(run,))
}

/// The time index key of run `run`, started at `ms`.
pub fn run_by_time(ms: i64, run: &str) -> Vec<u8> {
    subspace(tag::RUN_BY_TIME).pack(&(ms, run))
}

/// `[begin, end)` of the run time index.
pub fn runs_by_time() -> (Vec<u8>, Vec<u8>) {
    subspace(tag::RUN_BY_TIME).range()
}

/// The run id of a run time index key.
pub fn run_of_time_key(key: &[u8]) -> Option<String> {
    let (_, run): (i64, String) = subspace(tag::RUN_BY_TIME).unpack(key).ok()?;
    Some(run)
}

/// The record of node `name`.
pub fn node(name: &str) -> Vec<u8> {
    subspace(tag::NODE).pack(&(name,))
}

/// `[begin, end)` of every node record.
pub fn nodes() -> (Vec<u8>, Vec<u8>) {
    subspace(tag::NODE).range()
}

/// The active-run index row of `run`.
pub fn run_active(run: &str) -> Vec<u8> {
    subspace(tag::RUN_ACTIVE).pack(&(run,))
}

/// `[begin, end)` of the active-run index.
pub fn runs_active() -> (Vec<u8>, Vec<u8>) {
    subspace(tag::RUN_ACTIVE).range()
}

/// The run id of an active-run index key.
pub fn run_of_active_key(key: &[u8]) -> Option<String> {
    let (run,): (String,) = subspace(tag::RUN_ACTIVE).unpack(key).ok()?;
    Some(run)
}

/// Chunk `i` of part `part` (0 input, 1 output, 2 error) of run `run`.
pub fn run_data(run: &str, part: i64, i: u32) -> Vec<u8> {
    subspace(tag::RUN_DATA).pack(&(run, part, i))
}

/// `[begin, end)` of the chunks of one part of a run.
pub fn run_data_part(run: &str, part: i64) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::RUN_DATA).subspace(&(run, part)).range()
}

/// `[begin, end)` of every chunk of a run.
pub fn run_data_all(run: &str) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::RUN_DATA).subspace(&(run,)).range()
}

/// The journal index row of entry `d` of run `run`.
pub fn journal(run: &str, d: &Digest) -> Vec<u8> {
    subspace(tag::JOURNAL).pack(&(run, digest_bytes(d)))
}

/// `[begin, end)` of the journal index of a run.
pub fn journal_of_run(run: &str) -> (Vec<u8>, Vec<u8>) {
    subspace(tag::JOURNAL).subspace(&(run,)).range()
}

/// The digest at the end of a journal index key.
pub fn digest_of_journal(key: &[u8]) -> Option<Digest> {
    let (_, d): (String, Vec<u8>) = subspace(tag::JOURNAL).unpack(key).ok()?;
    Digest::from_slice(&d)
}

/// The row saying the journal of ended run `run` may be removed after `ms`.
pub fn run_gc(ms: i64, run: &str) -> Vec<u8> {
    subspace(tag::RUN_GC).pack(&(ms, run))
}

/// `[begin, end)` of the run GC rows due before `ms`.
pub fn run_gc_before(ms: i64) -> (Vec<u8>, Vec<u8>) {
    let s = subspace(tag::RUN_GC);
    (s.range().0, s.pack(&(ms,)))
}

/// The run of a run GC row.
pub fn run_of_gc_key(key: &[u8]) -> Option<String> {
    let (_, run): (i64, String) = subspace(tag::RUN_GC).unpack(key).ok()?;
    Some(run)
}

/// The record of idempotency key `key`.
pub fn idempotency(key: &str) -> Vec<u8> {
    subspace(tag::IDEMPOTENCY).pack(&(key,))
}

/// The expiry row of idempotency key `key`, expiring at `ms`.
pub fn idempotency_expiry(ms: i64, key: &str) -> Vec<u8> {
    subspace(tag::IDEMPOTENCY_EXPIRY).pack(&(ms, key))
}

/// `[begin, end)` of idempotency expiry rows before `ms`.
pub fn idempotency_expiry_before(ms: i64) -> (Vec<u8>, Vec<u8>) {
    let s = subspace(tag::IDEMPOTENCY_EXPIRY);
    (s.range().0, s.pack(&(ms,)))
}

/// The idempotency key of an expiry row.
pub fn idempotency_of_expiry_key(key: &[u8]) -> Option<String> {
    let (_, k): (i64, String) = subspace(tag::IDEMPOTENCY_EXPIRY).unpack(key).ok()?;
    Some(k)
}

/// The cancellation counter.
pub fn cancel_seq() -> Vec<u8> {
    subspace(tag::CANCEL_SEQ).pack(&())
}

/// Cancellation notice `seq`.
pub fn cancel(seq: u64) -> Vec<u8> {
    subspace(tag::CANCEL).pack(&(seq,))
}

/// `[begin, end)` of the cancellation notices numbered `from` and later.
pub fn cancels_from(from: u64) -> (Vec<u8>, Vec<u8>) {
    let s = subspace(tag::CANCEL);
    (s.pack(&(from,)), s.range().1)
}

/// The number of a cancellation notice key.
pub fn seq_of_cancel_key(key: &[u8]) -> Option<u64> {
    let (seq,): (u64,) = subspace(tag::CANCEL).unpack(key).ok()?;
    Some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Strings with what the tuple encoding escapes or marks: NUL, 0xff, multi-byte UTF-8.
    fn awkward_str() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just('\0'),
                Just('\u{ff}'),
                Just('é'),
                Just('a'),
                Just('\u{10ffff}')
            ],
            0..6,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    fn awkward_digest() -> impl Strategy<Value = Digest> {
        prop_oneof![
            Just(Digest(0)),
            Just(Digest(u128::MAX)),
            Just(Digest(0x00ff_00ff_0000_ff00_0000_0000_0000_00ff)),
            any::<u128>().prop_map(Digest),
        ]
    }

    fn awkward_int() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(i64::MIN),
            Just(i64::MAX),
            Just(255),
            Just(256),
            Just(-255),
            Just(-256),
            any::<i64>(),
        ]
    }

    proptest! {
        /// The direct writer makes exactly the keys the generic tuple packer makes (the keys
        /// already stored stay readable).
        #[test]
        fn direct_keys_match_the_tuple_packer(
            d in awkward_digest(),
            part in awkward_int(),
            ms in awkward_int(),
            i in any::<u32>(),
            a in awkward_str(),
            b in awkward_str(),
            c in awkward_str(),
            e in awkward_str(),
        ) {
            let entry = subspace(tag::ENTRY);
            prop_assert_eq!(entry_part(&d, part), entry.pack(&(digest_bytes(&d), part)));
            prop_assert_eq!(
                entry_chunk(&d, i),
                entry.pack(&(digest_bytes(&d), entry_part::CHUNK, i))
            );
            prop_assert_eq!(
                staged_chunk(&d, &a, i),
                entry.pack(&(digest_bytes(&d), entry_part::STAGED, a.as_str(), i))
            );
            prop_assert_eq!(
                staging_marker(&d, &a),
                entry.pack(&(digest_bytes(&d), entry_part::STAGED, a.as_str(), -1i64))
            );
            prop_assert_eq!(
                by_task(&a, &b, &c, &e, &d),
                subspace(tag::BY_TASK).pack(&(
                    a.as_str(),
                    b.as_str(),
                    c.as_str(),
                    e.as_str(),
                    digest_bytes(&d)
                ))
            );
            prop_assert_eq!(
                by_execution(&a, &d),
                subspace(tag::BY_EXECUTION).pack(&(a.as_str(), digest_bytes(&d)))
            );
            prop_assert_eq!(
                expiry(ms, &d),
                subspace(tag::EXPIRY).pack(&(ms, digest_bytes(&d)))
            );
            prop_assert_eq!(
                execution(&a, &b),
                subspace(tag::EXECUTION).pack(&(a.as_str(), b.as_str()))
            );
            prop_assert_eq!(
                execution_run(&a),
                subspace(tag::EXECUTION_RUN).pack(&(a.as_str(),))
            );
            prop_assert_eq!(
                calls(&a, &b, &c, &e),
                subspace(tag::CALLS).pack(&(a.as_str(), b.as_str(), c.as_str(), e.as_str()))
            );
        }
    }

    #[test]
    fn staged_parts_sort_inside_their_ranges() {
        let d = Digest(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let (b, e) = staged(&d);
        let (ob, oe) = staged_by(&d, "exec-1");
        let (cb, ce) = staged_chunks(&d, "exec-1");
        let marker = staging_marker(&d, "exec-1");
        assert!(b <= ob && oe <= e);
        assert!(
            ob <= marker && marker < cb,
            "the marker sorts before the chunks"
        );
        assert!(ob <= cb && ce <= oe);
        for i in [0, 1, 255, 256, u32::MAX] {
            let k = staged_chunk(&d, "exec-1", i);
            assert!(cb <= k && k < ce);
        }
        assert!(staged_chunk(&d, "exec-1", 9) < staged_chunk(&d, "exec-1", 10));
        // Another execution's area is disjoint, and all of it inside the entry's range.
        let (xb, xe) = staged_by(&d, "exec-10");
        assert!(xe <= ob || oe <= xb);
        let (eb, ee) = entry_range(&d);
        assert!(eb <= b && e <= ee);
    }

    #[test]
    fn entry_parts_sort_inside_the_entry_range() {
        let d = Digest(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let (b, e) = entry_range(&d);
        for k in [
            entry_part(&d, entry_part::LEASE),
            entry_part(&d, entry_part::TOMBSTONE),
            entry_part(&d, entry_part::META),
            entry_chunk(&d, 0),
            entry_chunk(&d, u32::MAX),
        ] {
            assert!(b <= k && k < e);
        }
        assert!(entry_part(&d, entry_part::META) < entry_chunk(&d, 0));
        assert!(
            entry_chunk(&d, 9) < entry_chunk(&d, 10),
            "chunks sort numerically"
        );
        let other = Digest(d.0 + 1);
        assert!(entry_part(&other, 0) >= e || entry_part(&other, 0) < b);
    }

    #[test]
    fn task_index_values_round_trip_in_both_layouts() {
        let v = TaskIndexValue {
            size: 42,
            expires_at_ms: Some(1_700),
            execution: Some("exec-1".into()),
        };
        assert_eq!(TaskIndexValue::decode(&v.encode()), Some(v));
        let no_expiry = TaskIndexValue {
            size: 1,
            expires_at_ms: None,
            execution: Some("e".into()),
        };
        assert_eq!(TaskIndexValue::decode(&no_expiry.encode()), Some(no_expiry));
        let old = TaskIndexValue::decode(&7u64.to_be_bytes()).unwrap();
        assert_eq!((old.size, old.execution), (7, None));
        assert_eq!(TaskIndexValue::decode(b"short"), None);
    }

    #[test]
    fn index_keys_round_trip() {
        let d = Digest(42);
        assert_eq!(
            digest_of_by_task(&by_task("p", "dev", "t", "1", &d)),
            Some(d)
        );
        assert_eq!(digest_of_by_execution(&by_execution("ex-1", &d)), Some(d));
        assert_eq!(
            parse_expiry(&expiry(1_700_000_000_000, &d)),
            Some((1_700_000_000_000, d))
        );
        let (b, e) = expiry_before(1_700_000_000_001);
        let k = expiry(1_700_000_000_000, &d);
        assert!(b <= k && k < e);
        assert!(expiry(1_700_000_000_001, &d) >= e);
        let (b, e) = executions_of_run("r");
        let k = execution("r", "e");
        assert!(b <= k && k < e);
        assert!(!(b..e).contains(&execution("r2", "e")));
        let (b, e) = by_task_range("p", "dev", Some("t"), None);
        let k = by_task("p", "dev", "t", "2", &d);
        assert!(b <= k && k < e);
        let (b, e) = by_task_range("p", "dev", Some("t"), Some("1"));
        assert!(!(b <= k && k < e), "version narrows the range");
    }
}
