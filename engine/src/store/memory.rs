//! The in-memory backend: FoundationDB's transaction model in one process, with seeded faults.
//!
//! It is what the deterministic simulation runs on, and any test that wants a store without a
//! directory (`memory:` URLs). It keeps no file and starts no thread, so a seed replays exactly.
//!
//! **Semantics.** Multi-version concurrency as FoundationDB's: a transaction reads the version
//! current when it began (its *read version*), its own writes are visible to its reads, and a
//! commit fails with a retryable [`Error::Conflict`] when a key or range it read (without
//! `snapshot`) was written by a commit after its read version. Range reads cut by a limit
//! conflict only on the part actually read. Atomic adds are applied at commit to the latest
//! value and add no read conflict. Every commit gets the next version; old versions are kept
//! while a transaction may still read them. FoundationDB's size limits ([`Limits`]) are
//! enforced; wrap the store in [`super::fdb_limits::FdbLimited`] for its 5 s lifetime.
//!
//! **Faults** ([`Faults`], changeable at any moment, drawn from one seeded generator):
//! - a conflict storm: commits refused as conflicts with some probability;
//! - commit result unknown both ways: applied but reported failed, and dropped and reported
//!   failed ([`Error::MaybeCommitted`]);
//! - a lost connection on any operation ([`Error::ConnectionLost`]);
//! - latency before any operation (on tokio's clock, so virtual time in a simulation);
//! - a handle partitioned from the store ([`MemoryStore::set_partitioned`]): everything it does
//!   fails as a lost connection, its commits are dropped and reported unknown;
//! - watch hints that come late, never (the subscriber re-checks every second, as PostgreSQL's
//!   do), or without a change.
//!
//! Clones of a [`MemoryStore`] share one database and one link to it; [`MemoryStore::handle`]
//! gives another link (another node) to the same database, which can be partitioned alone.

use super::conflicts::{Log, OpenVersions, Read, Written};
use super::watch::{Notifier, Subscription};
use super::{KeyValue, Limits, RangeOptions, Store, StoreCounters, Transaction, WriteSize};
use crate::error::{Error, Result};
use futures::FutureExt;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const BACKEND: &str = "memory";

/// How often a subscriber re-reads when watch hints may be dropped.
const RECHECK: Duration = Duration::from_secs(1);

/// The faults a [`MemoryStore`] injects; all off by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Probability that a read-write commit is refused as a conflict.
    pub conflict: f64,
    /// Probability that a read-write commit reports "maybe committed" (half of them applied,
    /// half dropped).
    pub maybe_committed: f64,
    /// Probability that an operation (begin, read, commit) fails as a lost connection; a commit
    /// that fails so is dropped.
    pub connection_lost: f64,
    /// Each operation first waits a uniformly drawn duration up to this.
    pub latency: Duration,
    /// Probability that a watch hint is never delivered (the subscriber then re-checks).
    pub watch_dropped: f64,
    /// Probability that a watch hint is delivered late, by up to [`Faults::watch_delay`].
    pub watch_late: f64,
    /// The longest delay of a late hint.
    pub watch_delay: Duration,
    /// Probability that a watch fires once without any change.
    pub watch_spurious: f64,
}

impl Faults {
    fn any_watch_fault(&self) -> bool {
        self.watch_dropped > 0.0 || self.watch_late > 0.0 || self.watch_spurious > 0.0
    }
}

/// Counts of what a [`MemoryStore`] injected.
#[derive(Debug, Default)]
pub struct FaultCounters {
    /// Commits refused as conflicts by the storm (not by real conflicts).
    pub conflicts: AtomicU64,
    /// Commits applied but reported unknown.
    pub applied_unknown: AtomicU64,
    /// Commits dropped and reported unknown (partitions included).
    pub dropped_unknown: AtomicU64,
    /// Operations failed as a lost connection (partitions included).
    pub connections_lost: AtomicU64,
    /// Watch hints dropped, delayed or made up.
    pub watch_faults: AtomicU64,
}

/// One key's versions, oldest first (`None`: cleared at that version).
type History = Vec<(u64, Option<Arc<[u8]>>)>;

#[derive(Default)]
struct Versions {
    /// The last committed version.
    version: u64,
    data: BTreeMap<Vec<u8>, History>,
    /// Writes of recent commits; pruned below the oldest open read version.
    log: Log,
    open: OpenVersions,
}

impl Versions {
    fn value_at(history: &History, version: u64) -> Option<&Arc<[u8]>> {
        history
            .iter()
            .rev()
            .find(|(v, _)| *v <= version)
            .and_then(|(_, value)| value.as_ref())
    }

    fn get(&self, key: &[u8], version: u64) -> Option<Vec<u8>> {
        self.data
            .get(key)
            .and_then(|h| Self::value_at(h, version))
            .map(|v| v.to_vec())
    }

    /// The oldest version an open transaction may read.
    fn horizon(&self) -> u64 {
        self.open.horizon(self.version)
    }

    fn write(&mut self, key: &[u8], value: Option<Arc<[u8]>>, version: u64, horizon: u64) {
        let history = self.data.entry(key.to_vec()).or_default();
        history.push((version, value));
        // Keep the newest version at or below the horizon, and everything after it.
        let keep_from = history
            .iter()
            .rposition(|(v, _)| *v <= horizon)
            .unwrap_or(0);
        if keep_from > 0 {
            history.drain(..keep_from);
        }
        if history.len() == 1 && history[0].1.is_none() && history[0].0 <= horizon {
            self.data.remove(key);
        }
    }

    fn prune(&mut self) {
        let horizon = self.horizon();
        self.log.prune(horizon);
    }

    fn open(&mut self) -> u64 {
        self.open.open(self.version);
        self.version
    }

    fn close(&mut self, version: u64) {
        self.open.close(version);
        self.prune();
    }
}

struct Db {
    versions: Mutex<Versions>,
    notifier: Notifier,
    counters: StoreCounters,
    limits: Limits,
    faults: Mutex<(Faults, StdRng)>,
    injected: FaultCounters,
}

impl Db {
    fn draw(&self, p: impl FnOnce(&Faults) -> f64) -> bool {
        let mut f = self.faults.lock();
        let p = p(&f.0);
        p > 0.0 && f.1.random_bool(p.min(1.0))
    }

    fn latency(&self) -> Option<Duration> {
        let mut f = self.faults.lock();
        let max = f.0.latency;
        (!max.is_zero()).then(|| max.mul_f64(f.1.random::<f64>()))
    }
}

/// A node's link to the database: whether it is partitioned.
#[derive(Default)]
struct Link {
    partitioned: AtomicBool,
}

/// The in-memory store; see the module documentation.
#[derive(Clone)]
pub struct MemoryStore {
    db: Arc<Db>,
    link: Arc<Link>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(0)
    }
}

impl MemoryStore {
    /// An empty database whose faults (none until [`MemoryStore::set_faults`]) are drawn from
    /// `seed`.
    pub fn new(seed: u64) -> Self {
        MemoryStore {
            db: Arc::new(Db {
                versions: Mutex::new(Versions::default()),
                notifier: Notifier::default(),
                counters: StoreCounters::default(),
                limits: Limits::default(),
                faults: Mutex::new((Faults::default(), StdRng::seed_from_u64(seed))),
                injected: FaultCounters::default(),
            }),
            link: Arc::new(Link::default()),
        }
    }

    /// Another link to the same database, partitioned independently of this one.
    pub fn handle(&self) -> Self {
        MemoryStore {
            db: self.db.clone(),
            link: Arc::new(Link::default()),
        }
    }

    /// Replaces the faults injected from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.db.faults.lock().0 = faults;
    }

    /// The faults injected now.
    pub fn faults(&self) -> Faults {
        self.db.faults.lock().0.clone()
    }

    /// Cuts this link (and its clones) off the database, or restores it.
    pub fn set_partitioned(&self, yes: bool) {
        self.link.partitioned.store(yes, Ordering::SeqCst);
    }

    /// What was injected so far (all links).
    pub fn injected(&self) -> &FaultCounters {
        &self.db.injected
    }

    /// The last committed version.
    pub fn version(&self) -> u64 {
        self.db.versions.lock().version
    }

    /// Every key and value committed now, in key order: what an invariant checker reads
    /// without going through a transaction (and so without faults).
    pub fn dump(&self) -> Vec<KeyValue> {
        let versions = self.db.versions.lock();
        let now = versions.version;
        versions
            .data
            .iter()
            .filter_map(|(k, h)| {
                Versions::value_at(h, now).map(|v| KeyValue {
                    key: k.clone(),
                    value: v.to_vec(),
                })
            })
            .collect()
    }

    fn lost(&self, during: &str) -> Error {
        self.db
            .injected
            .connections_lost
            .fetch_add(1, Ordering::Relaxed);
        Error::ConnectionLost {
            backend: BACKEND,
            detail: format!("{during}: injected"),
        }
    }

    /// The latency and connection faults every operation goes through.
    async fn enter(&self, during: &str) -> Result<()> {
        if let Some(pause) = self.db.latency() {
            tokio::time::sleep(pause).await;
        }
        if self.link.partitioned.load(Ordering::SeqCst) {
            return Err(self.lost(&format!("{during} while partitioned from the store")));
        }
        if self.db.draw(|f| f.connection_lost) {
            return Err(self.lost(during));
        }
        Ok(())
    }

    fn start(&self, read_only: bool) -> MemoryTx {
        let read_version = self.db.versions.lock().open();
        MemoryTx {
            store: self.clone(),
            state: Arc::new(Mutex::new(TxState {
                open: Some(Open {
                    db: self.db.clone(),
                    read_version,
                }),
                read_only,
                finished: false,
                failed: None,
                own: BTreeMap::new(),
                cleared: Vec::new(),
                adds: BTreeMap::new(),
                reads: Vec::new(),
                size: WriteSize::default(),
            })),
        }
    }
}

impl Store for MemoryStore {
    type Tx = MemoryTx;

    async fn begin(&self) -> Result<MemoryTx> {
        self.enter("begin").await?;
        Ok(self.start(false))
    }

    async fn begin_read(&self) -> Result<MemoryTx> {
        self.enter("begin").await?;
        Ok(self.start(true))
    }

    async fn subscribe(&self, key: &[u8]) -> Result<Subscription> {
        self.enter("watch").await?;
        let sub = self.db.notifier.subscribe(key);
        let faults = self.faults();
        if !faults.any_watch_fault() {
            return Ok(sub);
        }
        let db = self.db.clone();
        let fault = {
            let mut f = db.faults.lock();
            let rng = &mut f.1;
            if rng.random_bool(faults.watch_dropped.min(1.0)) {
                Some(WatchFault::Dropped)
            } else if rng.random_bool(faults.watch_spurious.min(1.0)) {
                Some(WatchFault::Spurious(
                    faults.watch_delay.mul_f64(rng.random::<f64>()),
                ))
            } else if rng.random_bool(faults.watch_late.min(1.0)) {
                Some(WatchFault::Late(
                    faults.watch_delay.mul_f64(rng.random::<f64>()),
                ))
            } else {
                None
            }
        };
        if fault.is_some() {
            db.injected.watch_faults.fetch_add(1, Ordering::Relaxed);
        }
        let mut sub = sub;
        let fired = match fault {
            None => async move { sub.changed().await }.boxed(),
            Some(WatchFault::Dropped) => futures::future::pending().boxed(),
            Some(WatchFault::Spurious(after)) => async move {
                tokio::time::sleep(after).await;
                Ok(())
            }
            .boxed(),
            Some(WatchFault::Late(by)) => async move {
                let fired = sub.changed().await;
                tokio::time::sleep(by).await;
                fired
            }
            .boxed(),
        };
        Ok(Subscription::from_future(fired).with_recheck(Some(RECHECK)))
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn commits_wait(&self) -> bool {
        true
    }

    fn counters(&self) -> &StoreCounters {
        &self.db.counters
    }
}

enum WatchFault {
    Dropped,
    Spurious(Duration),
    Late(Duration),
}

/// An open transaction's registration of its read version (released when the last clone of the
/// transaction is dropped or it finishes).
struct Open {
    db: Arc<Db>,
    read_version: u64,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.db.versions.lock().close(self.read_version);
    }
}

struct TxState {
    open: Option<Open>,
    read_only: bool,
    finished: bool,
    /// A write refused while buffering (a write in a read-only transaction).
    failed: Option<Error>,
    /// Own point writes (`None`: cleared).
    own: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Ranges cleared, in order.
    cleared: Vec<(Vec<u8>, Vec<u8>)>,
    /// Adds of keys whose value the transaction does not know: applied at commit.
    adds: BTreeMap<Vec<u8>, i64>,
    /// Read-conflict ranges.
    reads: Vec<Read>,
    size: WriteSize,
}

impl TxState {
    fn read_version(&self) -> Result<u64> {
        match &self.open {
            Some(open) if !self.finished => Ok(open.read_version),
            _ => Err(Error::Finished),
        }
    }

    fn own_value(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        if let Some(v) = self.own.get(key) {
            return Some(v.clone());
        }
        self.cleared
            .iter()
            .any(|(b, e)| b.as_slice() <= key && key < e.as_slice())
            .then_some(None)
    }

    fn writable(&mut self) -> bool {
        if self.read_only {
            self.failed.get_or_insert(Error::ReadOnly);
            return false;
        }
        !self.finished && self.failed.is_none()
    }
}

/// A transaction of [`MemoryStore`].
#[derive(Clone)]
pub struct MemoryTx {
    store: MemoryStore,
    state: Arc<Mutex<TxState>>,
}

impl MemoryTx {
    fn get_now(&self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        self.store.db.limits.check_read(key)?;
        let mut st = self.state.lock();
        let version = st.read_version()?;
        if let Some(own) = st.own_value(key) {
            return Ok(own);
        }
        if !snapshot && !st.read_only {
            st.reads.push(Read::Key(key.to_vec()));
        }
        let stored = self.store.db.versions.lock().get(key, version);
        Ok(match st.adds.get(key) {
            Some(delta) => Some(
                super::encode_counter(
                    super::decode_counter(stored.as_deref()).wrapping_add(*delta),
                )
                .to_vec(),
            ),
            None => stored,
        })
    }

    fn range_now(&self, begin: &[u8], end: &[u8], options: RangeOptions) -> Result<Vec<KeyValue>> {
        let mut st = self.state.lock();
        let version = st.read_version()?;
        // Pending adds inside the range become writes of their sums (read with a conflict).
        let inside: Vec<(Vec<u8>, i64)> = st
            .adds
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            .map(|(k, d)| (k.clone(), *d))
            .collect();
        for (key, delta) in inside {
            let stored = self.store.db.versions.lock().get(&key, version);
            let sum = super::decode_counter(stored.as_deref()).wrapping_add(delta);
            st.adds.remove(&key);
            st.own
                .insert(key.clone(), Some(super::encode_counter(sum).to_vec()));
            if !st.read_only {
                st.reads.push(Read::Key(key.clone()));
            }
        }
        // Stored pairs at the read version, merged with (and overridden by) own writes.
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        {
            let versions = self.store.db.versions.lock();
            for (k, h) in versions
                .data
                .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
            {
                if st.own_value(k).is_none()
                    && let Some(v) = Versions::value_at(h, version)
                {
                    merged.insert(k.clone(), v.to_vec());
                }
            }
        }
        for (k, v) in st
            .own
            .range::<[u8], _>((Bound::Included(begin), Bound::Excluded(end)))
        {
            if let Some(v) = v {
                merged.insert(k.clone(), v.clone());
            }
        }
        let limit = options.limit.unwrap_or(usize::MAX);
        let out: Vec<KeyValue> = if options.reverse {
            merged
                .into_iter()
                .rev()
                .take(limit)
                .map(|(key, value)| KeyValue { key, value })
                .collect()
        } else {
            merged
                .into_iter()
                .take(limit)
                .map(|(key, value)| KeyValue { key, value })
                .collect()
        };
        if !options.snapshot && !st.read_only {
            // Only the part actually read conflicts when the limit cut the range.
            let cut_at = out
                .last()
                .filter(|_| out.len() == limit)
                .map(|kv| kv.key.as_slice());
            st.reads
                .push(Read::of_range(begin, end, cut_at, options.reverse));
        }
        Ok(out)
    }

    /// Applies a finished transaction's writes at a new version; refuses it on a conflict.
    fn apply(&self, st: &mut TxState) -> Result<()> {
        let Some(read_version) = st.open.as_ref().map(|o| o.read_version) else {
            return Err(Error::Finished);
        };
        let db = &self.store.db;
        let mut versions = db.versions.lock();
        if versions.log.conflicts(read_version, &st.reads) {
            return Err(Error::Conflict { backend: BACKEND });
        }
        let version = versions.version + 1;
        let horizon = versions.horizon();
        let mut keys = BTreeSet::new();
        for (b, e) in &st.cleared {
            let present: Vec<Vec<u8>> = versions
                .data
                .range::<[u8], _>((Bound::Included(b.as_slice()), Bound::Excluded(e.as_slice())))
                .filter(|(k, _)| !st.own.contains_key(*k))
                .map(|(k, _)| k.clone())
                .collect();
            for k in present {
                versions.write(&k, None, version, horizon);
                keys.insert(k);
            }
        }
        for (k, v) in std::mem::take(&mut st.own) {
            versions.write(&k, v.map(Arc::from), version, horizon);
            keys.insert(k);
        }
        for (k, delta) in std::mem::take(&mut st.adds) {
            let latest = versions.get(&k, version - 1);
            let sum = super::decode_counter(latest.as_deref()).wrapping_add(delta);
            versions.write(
                &k,
                Some(Arc::from(&super::encode_counter(sum)[..])),
                version,
                horizon,
            );
            keys.insert(k);
        }
        versions.version = version;
        versions.log.push(Written::new(
            version,
            keys.iter().cloned().collect(),
            std::mem::take(&mut st.cleared),
        ));
        drop(versions);
        for k in &keys {
            db.notifier.notify_key(k);
        }
        Ok(())
    }
}

impl Transaction for MemoryTx {
    async fn get(&self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        self.store.enter("read").await?;
        self.get_now(key, snapshot)
    }

    async fn get_many(&self, keys: &[&[u8]], snapshot: bool) -> Result<Vec<Option<Vec<u8>>>> {
        self.store.enter("read").await?;
        keys.iter().map(|k| self.get_now(k, snapshot)).collect()
    }

    async fn get_range(
        &self,
        begin: &[u8],
        end: &[u8],
        options: RangeOptions,
    ) -> Result<Vec<KeyValue>> {
        self.store.enter("range read").await?;
        if begin >= end {
            return Ok(Vec::new());
        }
        self.store.db.limits.check_read(begin)?;
        self.store.db.limits.check_read(end)?;
        self.range_now(begin, end, options)
    }

    fn set(&self, key: &[u8], value: &[u8]) {
        let mut st = self.state.lock();
        if !st.writable() {
            return;
        }
        st.size.add(&self.store.db.limits, key, Some(value));
        st.adds.remove(key);
        st.own.insert(key.to_vec(), Some(value.to_vec()));
    }

    fn clear(&self, key: &[u8]) {
        let mut st = self.state.lock();
        if !st.writable() {
            return;
        }
        st.size.add(&self.store.db.limits, key, None);
        st.adds.remove(key);
        st.own.insert(key.to_vec(), None);
    }

    fn clear_range(&self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        let mut st = self.state.lock();
        if !st.writable() {
            return;
        }
        st.size.add(&self.store.db.limits, begin, Some(end));
        let TxState {
            own, adds, cleared, ..
        } = &mut *st;
        super::own::clear_own_range(own, adds, cleared, begin, end);
    }

    fn add(&self, key: &[u8], delta: i64) {
        let mut st = self.state.lock();
        if !st.writable() {
            return;
        }
        let param = super::encode_counter(delta);
        st.size.add(&self.store.db.limits, key, Some(&param));
        match st.own_value(key) {
            Some(own) => {
                let sum = super::decode_counter(own.as_deref()).wrapping_add(delta);
                st.own
                    .insert(key.to_vec(), Some(super::encode_counter(sum).to_vec()));
            }
            None => {
                let d = st.adds.entry(key.to_vec()).or_default();
                *d = d.wrapping_add(delta);
            }
        }
    }

    async fn commit(&self) -> Result<()> {
        {
            let mut st = self.state.lock();
            if st.finished {
                return Err(Error::Finished);
            }
            if let Some(e) = st.failed.take() {
                st.finished = true;
                st.open = None;
                return Err(e);
            }
            if st.read_only {
                st.finished = true;
                st.open = None;
                return Ok(());
            }
            st.size.check()?;
        }
        let db = &self.store.db;
        if let Some(pause) = db.latency() {
            tokio::time::sleep(pause).await;
        }
        let mut st = self.state.lock();
        if st.finished {
            return Err(Error::Finished);
        }
        st.finished = true;
        let nothing = st.own.is_empty() && st.cleared.is_empty() && st.adds.is_empty();
        let outcome = if nothing {
            Ok(())
        } else if self.store.link.partitioned.load(Ordering::SeqCst) {
            db.injected.dropped_unknown.fetch_add(1, Ordering::Relaxed);
            Err(Error::MaybeCommitted {
                backend: BACKEND,
                detail: "partitioned from the store: the commit was dropped (injected)".into(),
            })
        } else if db.draw(|f| f.connection_lost) {
            Err(self.store.lost("commit"))
        } else if db.draw(|f| f.conflict) {
            db.injected.conflicts.fetch_add(1, Ordering::Relaxed);
            Err(Error::Conflict { backend: BACKEND })
        } else if db.draw(|f| f.maybe_committed) {
            let applied = db.draw(|_| 0.5);
            if applied {
                self.apply(&mut st)?;
                db.injected.applied_unknown.fetch_add(1, Ordering::Relaxed);
            } else {
                db.injected.dropped_unknown.fetch_add(1, Ordering::Relaxed);
            }
            Err(Error::MaybeCommitted {
                backend: BACKEND,
                detail: format!(
                    "injected: the commit was {}",
                    if applied { "applied" } else { "dropped" }
                ),
            })
        } else {
            self.apply(&mut st)
        };
        st.open = None;
        outcome
    }
}
