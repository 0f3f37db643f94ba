//! The embedded backend: fjall's `OptimisticTxDatabase` in a local directory.
//!
//! fjall provides read-your-writes and optimistic conflict detection (a commit fails with a
//! conflict when a key or range the transaction read was written by a transaction that committed
//! after it began). This module adds what FoundationDB has and fjall does not: snapshot reads
//! inside a read-write transaction, `clear_range`, size limits, and commit notifications for
//! watches.
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
//!
//! Snapshot reads inside a read-write transaction read a snapshot taken at the first of them,
//! merged with the transaction's own writes; a commit landing between the transaction's start
//! and that first snapshot read can make them newer than its conflict-checked reads.
//! Being snapshot reads, they are not validated at commit in either case.

use super::memo::{self, Memo, Ticket};
use super::watch::{Notifier, Subscription};
use super::{KeyValue, Limits, RangeOptions, Store, StoreCounters, Transaction, WriteSize};
use crate::error::{Error, Result};
use fjall::{
    KeyspaceCreateOptions, OptimisticTxDatabase, OptimisticTxKeyspace, PersistMode, Readable,
    Slice, Snapshot,
};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    db: OptimisticTxDatabase,
    kv: OptimisticTxKeyspace,
    fsync: bool,
    dir: PathBuf,
    limits: Limits,
    notifier: Notifier,
    counters: StoreCounters,
    /// Orders commits that carry atomic adds against all other commits: an add is applied at
    /// commit to the latest value, read and written while no other commit can land in between
    /// (adds take it exclusively, other commits shared, so only adds wait).
    add_gate: tokio::sync::RwLock<()>,
    /// The entries' metadata as last committed; every commit passes through this handle (the
    /// directory is locked to one process).
    memo: Option<Memo>,
}

/// fjall forgets the conflict sets of committed transactions only when its snapshot tracker
/// runs a GC, which it does once per 10,000 closed snapshots; until then every commit walks all
/// of them (`Oracle::with_commit`), so write-heavy loads slow down as the set grows (measured:
/// cold cached calls 22k/s without this, 30k/s with it). Closing a few empty snapshots per write
/// commit makes that GC run several times as often. Each costs a map update; more than a few
/// cost more than they save (20 per commit halved read-then-insert throughput).
const SNAPSHOT_CLOSES_PER_COMMIT: usize = 4;

impl Shared {
    fn nudge_snapshot_gc(&self) {
        for _ in 0..SNAPSHOT_CLOSES_PER_COMMIT {
            drop(self.db.read_tx());
        }
    }
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
        let db = OptimisticTxDatabase::builder(&dir).open().map_err(|e| {
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
            .keyspace("cairn", KeyspaceCreateOptions::default)
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
                add_gate: tokio::sync::RwLock::new(()),
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
        let mut tx = self.shared.db.write_tx().map_err(backend_err)?;
        if self.shared.fsync {
            tx = tx.durability(Some(PersistMode::SyncData));
        }
        Ok(EmbeddedTx::new(
            self.shared.clone(),
            State::Write(Box::new(WriteState {
                tx,
                snapshot: None,
                own: BTreeMap::new(),
                cleared: Vec::new(),
                size: WriteSize::default(),
                deferred: None,
                adds: BTreeMap::new(),
            })),
        ))
    }

    async fn begin_read(&self) -> Result<EmbeddedTx> {
        // The ticket before the snapshot: what the snapshot reads may go in the memo only if
        // no commit of memo keys began since.
        let ticket = self.shared.memo.as_ref().map(Memo::ticket);
        Ok(EmbeddedTx::new(
            self.shared.clone(),
            State::Read(self.shared.db.read_tx(), ticket),
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
    tx: fjall::OptimisticWriteTx,
    /// For snapshot reads, which must not add read conflicts; taken at the first one.
    snapshot: Option<Snapshot>,
    /// This transaction's own point writes (`None`: cleared), for snapshot reads and notifications.
    own: BTreeMap<Slice, Option<Slice>>,
    /// Ranges cleared by this transaction, in order.
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
    size: WriteSize,
    /// An error met while buffering a write, reported by `commit`.
    deferred: Option<Error>,
    /// Atomic adds not yet applied: applied at commit to the latest values, without reads.
    adds: BTreeMap<Vec<u8>, i64>,
}

impl WriteState {
    /// The snapshot for snapshot reads, taken on first use: most transactions never need one.
    fn snapshot(&mut self, db: &OptimisticTxDatabase) -> &Snapshot {
        self.snapshot.get_or_insert_with(|| db.read_tx())
    }

    /// Buffers `key = value` (its size already counted); a pending add of `key` is replaced.
    fn set(&mut self, kv: &OptimisticTxKeyspace, key: &[u8], value: &[u8]) {
        if self.size.check().is_err() {
            return; // the commit fails with the limit named; fjall never sees the key
        }
        self.adds.remove(key);
        // Slices are reference-counted: the transaction and the shadow share the bytes.
        let (key, value) = (Slice::from(key), Slice::from(value));
        self.tx.insert(kv, key.clone(), value.clone());
        self.own.insert(key, Some(value));
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

/// A snapshot range read merged with the transaction's own writes (which win over the snapshot).
fn snapshot_range_with_own(
    ws: &WriteState,
    kv: &OptimisticTxKeyspace,
    begin: &[u8],
    end: &[u8],
    options: RangeOptions,
) -> Result<Vec<KeyValue>> {
    let limit = options.limit.unwrap_or(usize::MAX);
    let reverse = options.reverse;
    let Some(snapshot) = &ws.snapshot else {
        return Err(Error::Backend {
            backend: BACKEND,
            detail: "snapshot range read without a snapshot".into(),
        });
    };
    let base = snapshot.range(kv, begin..end);
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
    fn write(&self, apply: impl FnOnce(&mut WriteState, &OptimisticTxKeyspace)) {
        let mut state = self.state.lock();
        match &mut *state {
            State::Write(ws) => apply(ws, &self.shared.kv),
            State::Read(..) => *state = State::Failed(Error::ReadOnly),
            State::Finished | State::Failed(_) => {}
        }
    }
}

impl EmbeddedTx {
    /// Turns the pending adds inside `[begin, end)` into plain writes of their sums, so that a
    /// range read sees them. Each key is read with a conflict (also for a snapshot range read:
    /// a set computed from a snapshot could lose a concurrent add).
    fn settle_adds_in(&self, begin: &[u8], end: &[u8]) -> Result<()> {
        let mut state = self.state.lock();
        let State::Write(ws) = &mut *state else {
            return Ok(());
        };
        let inside: Vec<(Vec<u8>, i64)> = ws
            .adds
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .map(|(k, d)| (k.clone(), *d))
            .collect();
        let kv = &self.shared.kv;
        for (key, delta) in inside {
            let old = ws
                .tx
                .get(kv, &key)
                .map_err(backend_err)?
                .map(|v| v.to_vec());
            let sum = super::decode_counter(old.as_deref()).wrapping_add(delta);
            ws.set(kv, &key, &super::encode_counter(sum));
        }
        Ok(())
    }
}

impl Transaction for EmbeddedTx {
    async fn get(&self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        self.shared.limits.check_read(key)?;
        let kv = &self.shared.kv;
        let mut state = self.state.lock();
        // A pending add reads as the value it would leave: the stored one plus the delta.
        let pending = match &*state {
            State::Write(ws) => ws.adds.get(key).copied(),
            _ => None,
        };
        let value = match &mut *state {
            State::Write(ws) if snapshot => match ws.own_value(key) {
                Some(own) => return Ok(own),
                None => ws.snapshot(&self.shared.db).get(kv, key),
            },
            State::Write(ws) => ws.tx.get(kv, key),
            State::Read(snap, ticket) => {
                let value = snap.get(kv, key);
                if let (Some(memo), Some(ticket), Ok(Some(value))) =
                    (&self.shared.memo, ticket, &value)
                {
                    memo.offer(*ticket, key, value);
                }
                value
            }
            State::Finished | State::Failed(_) => return Err(Error::Finished),
        };
        let value = value.map_err(backend_err)?.map(|v| v.to_vec());
        Ok(match pending {
            Some(delta) => Some(
                super::encode_counter(super::decode_counter(value.as_deref()).wrapping_add(delta))
                    .to_vec(),
            ),
            None => value,
        })
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
        self.settle_adds_in(begin, end)?;
        let kv = &self.shared.kv;
        let mut state = self.state.lock();
        let iter = match &mut *state {
            State::Write(ws) if options.snapshot => {
                ws.snapshot(&self.shared.db);
                return snapshot_range_with_own(ws, kv, begin, end, options);
            }
            State::Write(ws) => ws.tx.range(kv, begin..end),
            State::Read(snap, _) => snap.range(kv, begin..end),
            State::Finished | State::Failed(_) => return Err(Error::Finished),
        };
        if options.reverse {
            collect(iter.rev(), options.limit)
        } else {
            collect(iter, options.limit)
        }
    }

    fn set(&self, key: &[u8], value: &[u8]) {
        self.write(|ws, kv| {
            ws.size.add(&self.shared.limits, key, Some(value));
            ws.set(kv, key, value);
        });
    }

    fn clear(&self, key: &[u8]) {
        self.write(|ws, kv| {
            ws.size.add(&self.shared.limits, key, None);
            if ws.size.check().is_err() {
                return;
            }
            ws.adds.remove(key);
            let key = Slice::from(key);
            ws.tx.remove(kv, key.clone());
            ws.own.insert(key, None);
        });
    }

    fn add(&self, key: &[u8], delta: i64) {
        self.write(|ws, kv| {
            let param = super::encode_counter(delta);
            ws.size.add(&self.shared.limits, key, Some(&param));
            if ws.size.check().is_err() {
                return;
            }
            match ws.own_value(key) {
                // Written or cleared by this transaction: the result is known now.
                Some(own) => {
                    let sum = super::decode_counter(own.as_deref()).wrapping_add(delta);
                    ws.set(kv, key, &super::encode_counter(sum));
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
        self.write(|ws, kv| {
            ws.size.add(&self.shared.limits, begin, Some(end));
            if ws.size.check().is_err() || self.shared.limits.check_read(end).is_err() {
                ws.size.add(&self.shared.limits, end, None);
                return;
            }
            // Reading the range through the transaction makes a concurrent insert into it a
            // conflict, so the clear also removes keys committed after this transaction began,
            // as FoundationDB's clear_range does.
            let keys: Result<Vec<_>> = ws
                .tx
                .range(kv, begin..end)
                .map(|g| g.key().map_err(backend_err))
                .collect();
            match keys {
                Ok(keys) => {
                    for key in keys {
                        ws.tx.remove(kv, key);
                    }
                    super::own::clear_own_range(
                        &mut ws.own,
                        &mut ws.adds,
                        &mut ws.cleared,
                        begin,
                        end,
                    );
                }
                Err(e) => ws.deferred = Some(e),
            }
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
            mut tx,
            mut own,
            cleared,
            size,
            deferred,
            snapshot,
            adds,
        } = *ws;
        drop(snapshot);
        size.check()?;
        if let Some(e) = deferred {
            return Err(e);
        }
        // Adds read the latest values with no commit landing before theirs; nothing else waits
        // for them.
        let (_shared, _exclusive) = if adds.is_empty() {
            (Some(self.shared.add_gate.read().await), None)
        } else {
            let gate = self.shared.add_gate.write().await;
            let latest = self.shared.db.read_tx();
            for (key, delta) in adds {
                let old = latest
                    .get(&self.shared.kv, &key)
                    .map_err(backend_err)?
                    .map(|v| v.to_vec());
                let sum = super::decode_counter(old.as_deref()).wrapping_add(delta);
                let (key, value) = (
                    Slice::from(key),
                    Slice::from(&super::encode_counter(sum)[..]),
                );
                tx.insert(&self.shared.kv, key.clone(), value.clone());
                own.insert(key, Some(value));
            }
            (None, Some(gate))
        };
        // The memo's keys among the writes are marked until the commit has ended.
        let writing = self.shared.memo.as_ref().and_then(|memo| {
            memo.writing(
                own.iter().map(|(k, v)| (k.as_ref(), v.as_deref())),
                &cleared,
            )
        });
        let outcome = if self.shared.fsync {
            tokio::task::spawn_blocking(move || tx.commit())
                .await
                .map_err(backend_err)?
        } else {
            tx.commit()
        };
        match outcome {
            Ok(Ok(())) => {
                if let Some(writing) = writing {
                    writing.landed();
                }
                self.shared.nudge_snapshot_gc();
                let notifier = &self.shared.notifier;
                if cleared.is_empty() {
                    for key in own.keys() {
                        notifier.notify_key(key);
                    }
                } else {
                    notifier.notify_all();
                }
                Ok(())
            }
            Ok(Err(fjall::Conflict)) => Err(Error::Conflict { backend: BACKEND }),
            Err(e) => Err(backend_err(e)),
        }
    }
}
