//! The embedded backend: a fjall database in a local directory, with FoundationDB's
//! transaction model built on it.
//!
//! fjall stores the data (ordered keys, multi-version snapshots, a journal); this module adds
//! the transactions: a read-write transaction reads one snapshot taken when it began, merged
//! with its own writes; it records what it read (without `snapshot`) and commits only if no
//! commit since its read version wrote any of it (`store/conflicts.rs`, the checks
//! FoundationDB's resolvers make). Commits are serialized in one critical section that checks,
//! applies the write batch and logs its keys, so atomic adds and `clear_range` apply to the
//! latest values there: an add reads nothing, and a clear removes keys committed after the
//! transaction began, as FoundationDB's do. Also here: size limits, and commit notifications
//! for watches.
//!
//! **Durability.** By default every commit is written to the journal and handed to the operating
//! system before `commit` returns (fjall's `PersistMode::Buffer`): a crash of the process loses
//! nothing committed, a crash of the machine or a power loss can lose the last commits (those
//! the OS had not written back yet, typically under 30 s). With `?fsync=true` every commit is
//! `fdatasync`ed before it returns, and nothing committed is ever lost.
//!
//! **Blocking.** fjall's API is synchronous. Reads and non-syncing commits touch memory (the
//! memtable, the block cache, the OS page cache) and return in microseconds, so they run inline;
//! a syncing commit waits for the disk and runs on tokio's blocking pool.

use super::conflicts::{Log, OpenVersions, Read, Written};
use super::memo::{self, Memo, Ticket};
use super::watch::{Notifier, Subscription};
use super::{KeyValue, Limits, RangeOptions, Store, StoreCounters, Transaction, WriteSize};
use crate::error::{Error, Result};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Slice, Snapshot};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const BACKEND: &str = "embedded";

fn backend_err(e: impl std::fmt::Display) -> Error {
    Error::Backend {
        backend: BACKEND,
        detail: e.to_string(),
    }
}

/// The embedded store; clones share one database.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

struct Shared {
    db: Database,
    kv: Keyspace,
    fsync: bool,
    dir: PathBuf,
    limits: Limits,
    notifier: Notifier,
    counters: StoreCounters,
    /// The version of the last commit. Written only inside the commit section (under `log`).
    version: AtomicU64,
    /// The commit section: held while a commit is checked, applied and logged.
    log: Mutex<Log>,
    /// The read versions of open read-write transactions (which bound what `log` keeps).
    open: Mutex<OpenVersions>,
    /// The entries' metadata as last committed; every commit passes through this handle (the
    /// directory is locked to one process).
    memo: Option<Memo>,
}

/// What a commit wrote, for the watches.
struct Landed {
    keys: Vec<Slice>,
    cleared: bool,
}

impl Shared {
    /// Registers a read-write transaction's read version: the last commit's version, read with
    /// `open` held so that the log is never pruned past it.
    fn open_version(self: &Arc<Self>) -> OpenVersion {
        let mut open = self.open.lock();
        let version = self.version.load(Ordering::Acquire);
        open.open(version);
        OpenVersion {
            shared: self.clone(),
            version,
        }
    }

    /// Checks a transaction read at `read_version` against the commits since, and applies its
    /// writes as the next version: pending adds to the latest values, cleared ranges to the
    /// keys stored now, then its own writes.
    fn commit_writes(
        &self,
        read_version: u64,
        mut own: BTreeMap<Slice, Option<Slice>>,
        cleared: Vec<(Vec<u8>, Vec<u8>)>,
        adds: BTreeMap<Vec<u8>, i64>,
        reads: &[Read],
    ) -> Result<Landed> {
        let mut log = self.log.lock();
        if log.conflicts(read_version, reads) {
            return Err(Error::Conflict { backend: BACKEND });
        }
        let kv = &self.kv;
        // Commits are serialized here: the latest values cannot change until this one lands.
        for (key, delta) in adds {
            let old = kv.get(&key).map_err(backend_err)?;
            let sum = super::decode_counter(old.as_deref()).wrapping_add(delta);
            own.insert(
                Slice::from(key),
                Some(Slice::from(&super::encode_counter(sum)[..])),
            );
        }
        let mut batch = self.db.batch();
        if self.fsync {
            batch = batch.durability(Some(PersistMode::SyncData));
        }
        for (begin, end) in &cleared {
            for guard in kv.range(begin.as_slice()..end.as_slice()) {
                let key = guard.key().map_err(backend_err)?;
                if !own.contains_key(&key) {
                    batch.remove(kv, key);
                }
            }
        }
        let mut keys = Vec::with_capacity(own.len());
        for (key, value) in &own {
            match value {
                Some(value) => batch.insert(kv, key.clone(), value.clone()),
                None => batch.remove(kv, key.clone()),
            }
            keys.push(key.to_vec());
        }
        {
            // The memo's keys among the writes are marked until the commit has ended.
            let writing = self.memo.as_ref().and_then(|memo| {
                memo.writing(
                    own.iter().map(|(k, v)| (k.as_ref(), v.as_deref())),
                    &cleared,
                )
            });
            batch.commit().map_err(backend_err)?;
            if let Some(writing) = writing {
                writing.landed();
            }
        }
        let version = self.version.load(Ordering::Relaxed) + 1;
        self.version.store(version, Ordering::Release);
        let landed = Landed {
            keys: own.into_keys().collect(),
            cleared: !cleared.is_empty(),
        };
        log.push(Written::new(version, keys, cleared));
        let horizon = self.open.lock().horizon(version);
        log.prune(horizon);
        Ok(landed)
    }
}

/// A read-write transaction's registered read version, released when it is dropped.
struct OpenVersion {
    shared: Arc<Shared>,
    version: u64,
}

impl Drop for OpenVersion {
    fn drop(&mut self) {
        self.shared.open.lock().close(self.version);
    }
}

/// The keyspace's options: fjall's defaults, except that every table keeps its bloom filter in
/// memory. By default only level-0 tables do; a deeper table's filter is a single block read
/// through the 32 MiB block cache, which does not admit a block of megabytes, so every point read
/// of a key absent from such a table (every cold call reads several) read and checksummed its
/// whole filter from the file: a store that had compacted once slowed 10- to 25-fold
/// (`store/insert_if_absent/embedded`). A filter costs about 1.25 bytes per stored key.
/// fjall stores these options with the keyspace when it creates it: a store created before
/// keeps its defaults.
fn keyspace_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .filter_block_pinning_policy(fjall::config::PinningPolicy::all(true))
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`. With `fsync`, every commit is synced to disk.
    /// Keeps a memo of the default size ([`memo::DEFAULT_BUDGET`]).
    pub async fn open(dir: impl AsRef<Path>, fsync: bool) -> Result<Self> {
        Self::open_with_memo(dir, fsync, memo::DEFAULT_BUDGET).await
    }

    /// [`EmbeddedStore::open`], keeping at most `memo_bytes` of entry metadata in memory
    /// ([`Store::memo`]; 0: no memo).
    pub async fn open_with_memo(
        dir: impl AsRef<Path>,
        fsync: bool,
        memo_bytes: usize,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(dir, fsync, memo_bytes))
            .await
            .map_err(backend_err)?
    }

    fn open_blocking(dir: PathBuf, fsync: bool, memo_bytes: usize) -> Result<Self> {
        let unreachable = |e: &dyn std::fmt::Display| Error::Unreachable {
            url: format!("embedded:{}", dir.display()),
            detail: e.to_string(),
        };
        // Private to its owner: the store holds every task's inputs and outputs.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(|e| unreachable(&e))?;
        let db = Database::builder(&dir).open().map_err(|e| {
            if matches!(e, fjall::Error::Locked) {
                unreachable(&format!(
                    "store directory {} is in use by another process (one node per embedded directory)",
                    dir.display()
                ))
            } else {
                unreachable(&e)
            }
        })?;
        let kv = db
            .keyspace("cairn", keyspace_options)
            .map_err(|e| unreachable(&e))?;
        Ok(EmbeddedStore {
            shared: Arc::new(Shared {
                db,
                kv,
                fsync,
                dir,
                limits: Limits::default(),
                notifier: Notifier::default(),
                counters: StoreCounters::default(),
                version: AtomicU64::new(0),
                log: Mutex::new(Log::default()),
                open: Mutex::new(OpenVersions::default()),
                memo: (memo_bytes > 0).then(|| Memo::new(memo_bytes)),
            }),
        })
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

impl Store for EmbeddedStore {
    type Tx = EmbeddedTx;

    async fn begin(&self) -> Result<EmbeddedTx> {
        // The read version before the snapshot: the snapshot holds every commit up to it (and
        // perhaps later ones, which are then checked as if unseen).
        let open = self.shared.open_version();
        Ok(EmbeddedTx::new(
            self.shared.clone(),
            State::Write(Box::new(WriteState {
                open,
                snapshot: self.shared.db.snapshot(),
                own: BTreeMap::new(),
                cleared: Vec::new(),
                size: WriteSize::default(),
                deferred: None,
                adds: BTreeMap::new(),
                reads: Vec::new(),
            })),
        ))
    }

    async fn begin_read(&self) -> Result<EmbeddedTx> {
        // The ticket before the snapshot: what the snapshot reads may go in the memo only if
        // no commit of memo keys began since.
        let ticket = self.shared.memo.as_ref().map(Memo::ticket);
        Ok(EmbeddedTx::new(
            self.shared.clone(),
            State::Read(self.shared.db.snapshot(), ticket),
        ))
    }

    async fn subscribe(&self, key: &[u8]) -> Result<Subscription> {
        Ok(self.shared.notifier.subscribe(key))
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn commits_wait(&self) -> bool {
        self.shared.fsync
    }

    fn counters(&self) -> &StoreCounters {
        &self.shared.counters
    }

    fn memo(&self) -> Option<&Memo> {
        self.shared.memo.as_ref()
    }
}

/// A transaction on the embedded store.
#[derive(Clone)]
pub struct EmbeddedTx {
    shared: Arc<Shared>,
    state: Arc<Mutex<State>>,
}

enum State {
    Write(Box<WriteState>),
    /// A read-only transaction: its snapshot, and the memo's ticket taken before it.
    Read(Snapshot, Option<Ticket>),
    /// Committed, or given up.
    Finished,
    /// A write could not be applied; commit reports this error.
    Failed(Error),
}

struct WriteState {
    /// The read version, registered while the transaction is open.
    open: OpenVersion,
    /// What every read sees (merged with the transaction's own writes).
    snapshot: Snapshot,
    /// This transaction's own point writes (`None`: cleared).
    own: BTreeMap<Slice, Option<Slice>>,
    /// Ranges cleared by this transaction, in order.
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
    size: WriteSize,
    /// An error met while buffering a write, reported by `commit`.
    deferred: Option<Error>,
    /// Atomic adds not yet applied: applied at commit to the latest values, without reads.
    adds: BTreeMap<Vec<u8>, i64>,
    /// Read-conflict ranges: what was read without `snapshot`.
    reads: Vec<Read>,
}

impl WriteState {
    /// Buffers `key = value` (its size already counted); a pending add of `key` is replaced.
    fn set(&mut self, key: &[u8], value: &[u8]) {
        if self.size.check().is_err() {
            return; // the commit fails with the limit named; nothing is buffered
        }
        self.adds.remove(key);
        self.own.insert(Slice::from(key), Some(Slice::from(value)));
    }

    /// What this transaction's own writes say about `key`: `Some(value)` if it wrote or cleared it.
    fn own_value(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.own.get(key) {
            return Some(v.as_ref().map(|v| v.to_vec()));
        }
        self.cleared
            .iter()
            .any(|(b, e)| b.as_slice() <= key && key < e.as_slice())
            .then_some(None)
    }
}

fn collect(
    iter: impl Iterator<Item = fjall::Guard>,
    limit: Option<usize>,
) -> Result<Vec<KeyValue>> {
    iter.take(limit.unwrap_or(usize::MAX))
        .map(|guard| {
            let (key, value) = guard.into_inner().map_err(backend_err)?;
            Ok(KeyValue {
                key: key.to_vec(),
                value: value.to_vec(),
            })
        })
        .collect()
}

/// One of the transaction's own point writes: key and value (`None`: cleared).
type OwnWrite<'a> = (&'a Slice, &'a Option<Slice>);

/// A range read of the transaction's snapshot merged with its own writes (which win over the
/// snapshot).
fn range_with_own(
    ws: &WriteState,
    kv: &Keyspace,
    begin: &[u8],
    end: &[u8],
    options: RangeOptions,
) -> Result<Vec<KeyValue>> {
    let limit = options.limit.unwrap_or(usize::MAX);
    let reverse = options.reverse;
    let base = ws.snapshot.range(kv, begin..end);
    let mut base: Box<dyn Iterator<Item = fjall::Guard>> = if reverse {
        Box::new(base.rev())
    } else {
        Box::new(base)
    };
    let own = ws
        .own
        .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)));
    let mut own: Box<dyn Iterator<Item = OwnWrite<'_>>> = if reverse {
        Box::new(own.rev())
    } else {
        Box::new(own)
    };
    // The next snapshot pair that the transaction's own writes neither replace nor clear.
    let mut next_base = || -> Result<Option<KeyValue>> {
        for guard in base.by_ref() {
            let (key, value) = guard.into_inner().map_err(backend_err)?;
            if ws.own_value(&key).is_none() {
                return Ok(Some(KeyValue {
                    key: key.to_vec(),
                    value: value.to_vec(),
                }));
            }
        }
        Ok(None)
    };
    let mut out = Vec::new();
    let mut b = next_base()?;
    let mut o = own.next();
    while out.len() < limit {
        let take_own = match (&b, &o) {
            (None, None) => break,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some(bk), Some((ok, _))) => (ok.as_slice() < bk.key.as_slice()) != reverse,
        };
        if take_own {
            if let Some((key, Some(value))) = o {
                out.push(KeyValue {
                    key: key.to_vec(),
                    value: value.to_vec(),
                });
            }
            o = own.next();
        } else if let Some(pair) = b.take() {
            out.push(pair);
            b = next_base()?;
        }
    }
    Ok(out)
}

impl EmbeddedTx {
    fn new(shared: Arc<Shared>, state: State) -> Self {
        EmbeddedTx {
            shared,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Applies a write to a read-write transaction; writes elsewhere are remembered as errors.
    fn write(&self, apply: impl FnOnce(&mut WriteState)) {
        let mut state = self.state.lock();
        match &mut *state {
            State::Write(ws) => apply(ws),
            State::Read(..) => *state = State::Failed(Error::ReadOnly),
            State::Finished | State::Failed(_) => {}
        }
    }
}

impl WriteState {
    /// Turns the pending adds inside `[begin, end)` into plain writes of their sums, so that a
    /// range read sees them. Each key is read with a conflict (also for a snapshot range read:
    /// a set computed from a snapshot could lose a concurrent add).
    fn settle_adds_in(&mut self, kv: &Keyspace, begin: &[u8], end: &[u8]) -> Result<()> {
        let inside: Vec<(Vec<u8>, i64)> = self
            .adds
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .map(|(k, d)| (k.clone(), *d))
            .collect();
        for (key, delta) in inside {
            let old = self.snapshot.get(kv, &key).map_err(backend_err)?;
            let sum = super::decode_counter(old.as_deref()).wrapping_add(delta);
            self.set(&key, &super::encode_counter(sum));
            self.reads.push(Read::Key(key));
        }
        Ok(())
    }
}

impl Transaction for EmbeddedTx {
    async fn get(&self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        self.shared.limits.check_read(key)?;
        let kv = &self.shared.kv;
        let mut state = self.state.lock();
        match &mut *state {
            State::Write(ws) => {
                if let Some(own) = ws.own_value(key) {
                    return Ok(own);
                }
                let value = ws
                    .snapshot
                    .get(kv, key)
                    .map_err(backend_err)?
                    .map(|v| v.to_vec());
                if !snapshot {
                    ws.reads.push(Read::Key(key.to_vec()));
                }
                // A pending add reads as the value it would leave: the stored one plus the delta.
                Ok(match ws.adds.get(key) {
                    Some(delta) => Some(
                        super::encode_counter(
                            super::decode_counter(value.as_deref()).wrapping_add(*delta),
                        )
                        .to_vec(),
                    ),
                    None => value,
                })
            }
            State::Read(snap, ticket) => {
                let value = snap.get(kv, key).map_err(backend_err)?;
                if let (Some(memo), Some(ticket), Some(value)) = (&self.shared.memo, ticket, &value)
                {
                    memo.offer(*ticket, key, value);
                }
                Ok(value.map(|v| v.to_vec()))
            }
            State::Finished | State::Failed(_) => Err(Error::Finished),
        }
    }

    async fn get_many(&self, keys: &[&[u8]], snapshot: bool) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key, snapshot).await?);
        }
        Ok(out)
    }

    async fn get_range(
        &self,
        begin: &[u8],
        end: &[u8],
        options: RangeOptions,
    ) -> Result<Vec<KeyValue>> {
        if begin >= end {
            return Ok(Vec::new());
        }
        self.shared.limits.check_read(begin)?;
        self.shared.limits.check_read(end)?;
        let kv = &self.shared.kv;
        let mut state = self.state.lock();
        match &mut *state {
            State::Write(ws) => {
                ws.settle_adds_in(kv, begin, end)?;
                let out = range_with_own(ws, kv, begin, end, options)?;
                if !options.snapshot {
                    // Only the part actually read conflicts when the limit cut the range.
                    let cut_at = out
                        .last()
                        .filter(|_| options.limit.is_some_and(|limit| out.len() == limit))
                        .map(|kv| kv.key.as_slice());
                    ws.reads
                        .push(Read::of_range(begin, end, cut_at, options.reverse));
                }
                Ok(out)
            }
            State::Read(snap, _) => {
                let iter = snap.range(kv, begin..end);
                if options.reverse {
                    collect(iter.rev(), options.limit)
                } else {
                    collect(iter, options.limit)
                }
            }
            State::Finished | State::Failed(_) => Err(Error::Finished),
        }
    }

    fn set(&self, key: &[u8], value: &[u8]) {
        self.write(|ws| {
            ws.size.add(&self.shared.limits, key, Some(value));
            ws.set(key, value);
        });
    }

    fn clear(&self, key: &[u8]) {
        self.write(|ws| {
            ws.size.add(&self.shared.limits, key, None);
            if ws.size.check().is_err() {
                return;
            }
            ws.adds.remove(key);
            ws.own.insert(Slice::from(key), None);
        });
    }

    fn add(&self, key: &[u8], delta: i64) {
        self.write(|ws| {
            let param = super::encode_counter(delta);
            ws.size.add(&self.shared.limits, key, Some(&param));
            if ws.size.check().is_err() {
                return;
            }
            match ws.own_value(key) {
                // Written or cleared by this transaction: the result is known now.
                Some(own) => {
                    let sum = super::decode_counter(own.as_deref()).wrapping_add(delta);
                    ws.set(key, &super::encode_counter(sum));
                }
                None => {
                    let d = ws.adds.entry(key.to_vec()).or_default();
                    *d = d.wrapping_add(delta);
                }
            }
        });
    }

    fn clear_range(&self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        self.write(|ws| {
            ws.size.add(&self.shared.limits, begin, Some(end));
            if ws.size.check().is_err() || self.shared.limits.check_read(end).is_err() {
                ws.size.add(&self.shared.limits, end, None);
                return;
            }
            // Applied at commit to the keys stored then: a key committed after this
            // transaction began is removed too, as FoundationDB's clear_range does.
            super::own::clear_own_range(&mut ws.own, &mut ws.adds, &mut ws.cleared, begin, end);
        });
    }

    async fn commit(&self) -> Result<()> {
        let state = std::mem::replace(&mut *self.state.lock(), State::Finished);
        let ws = match state {
            State::Write(ws) => ws,
            State::Read(..) => return Ok(()),
            State::Finished => return Err(Error::Finished),
            State::Failed(e) => return Err(e),
        };
        let WriteState {
            open,
            snapshot,
            own,
            cleared,
            size,
            deferred,
            adds,
            reads,
        } = *ws;
        drop(snapshot);
        size.check()?;
        if let Some(e) = deferred {
            return Err(e);
        }
        // A transaction that wrote nothing has nothing to check: it read one snapshot.
        if own.is_empty() && cleared.is_empty() && adds.is_empty() {
            return Ok(());
        }
        let shared = self.shared.clone();
        let read_version = open.version;
        let apply = move || shared.commit_writes(read_version, own, cleared, adds, &reads);
        let landed = if self.shared.fsync {
            tokio::task::spawn_blocking(apply)
                .await
                .map_err(backend_err)?
        } else {
            apply()
        };
        drop(open);
        let landed = landed?;
        let notifier = &self.shared.notifier;
        if landed.cleared {
            notifier.notify_all();
        } else {
            for key in &landed.keys {
                notifier.notify_key(key);
            }
        }
        Ok(())
    }
}
