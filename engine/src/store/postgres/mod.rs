//! The PostgreSQL backend: one key/value table, transactions made serializable by key, and
//! `LISTEN/NOTIFY` for watches.
//!
//! # Isolation
//! Read-write transactions run at READ COMMITTED and are made serializable by key, optimistically,
//! with a check at commit, as FoundationDB's resolvers do:
//! - A row's version is the transaction that wrote it (`xmin`). A read (not `snapshot`) records
//!   the version it saw, or that the key was absent.
//! - Before its writes reach the server, a transaction takes an exclusive advisory lock on each
//!   key it writes, and at commit a shared one on each key it read. It takes them without
//!   waiting: a lock another transaction holds is a conflict, so transactions never wait for each
//!   other's keys and never deadlock on them. Holding them, it checks that every key it read
//!   still has the version it read, then writes. The locks end with the transaction, so two
//!   transactions that touch a common key (one writing it) commit one after the other, and the
//!   later one sees the earlier one's write or fails its check.
//! - Range reads (not `snapshot`) and range clears cannot lock keys that do not exist yet. A
//!   transaction that does either takes the table's advisory lock exclusively first, waiting for
//!   it, and checks everything it read until then; every transaction that writes holds the same
//!   lock shared from its first write to its end. So no other transaction commits a write from
//!   then until it ends, and what it reads stays current. Ranges are read this way by eviction,
//!   collection and large outputs, not by the cache's point operations.
//! - A transaction that writes nothing takes no locks. If it read in one statement, it read one
//!   snapshot, so its commit neither checks nor waits for the server (as FoundationDB's commit
//!   of a read-only transaction, which never conflicts). If it read in several, its commit
//!   checks every read, and it serialises at the check's snapshot.
//! - A failed lock or check is SQLSTATE 40001, which this module turns into the retryable
//!   [`Error::Conflict`], as it does 40P01 (two transactions that hold the table lock shared
//!   both want it exclusive) and 55P03 (a wait for the table lock longer than 10 s: its holder
//!   may be waiting for the waiter, outside the server's sight).
//! - Cairn before this scheme wrote under SERIALIZABLE and took no key locks, so its writes
//!   would race the check unseen. A statement trigger on the table refuses every write of a
//!   SERIALIZABLE transaction with an error saying an older node must be stopped
//!   (`sql::OLD_WRITER`): a rolling upgrade fails loudly on the old nodes instead.
//!
//! PostgreSQL's own SERIALIZABLE isolation tracks what a B-tree scan read by index page, not by
//! key, so batches of unrelated keys failed each other (benches/README.md measures it). A
//! statement at READ COMMITTED reads the latest commit, so two reads of one transaction may come
//! from different moments: the commit check refuses such a transaction, and
//! [`Transaction::check_reads`] lets [`super::transact`] retry an error that came from them.
//!
//! Writes are buffered (they cannot fail, as in FoundationDB) and sent, pipelined, before the next
//! read of the transaction or with `COMMIT`, so a transaction costs one round trip per read plus
//! one for the commit. The locks and check ride along with the writes, and `BEGIN` with the first
//! of them: a read before it is a statement of its own, which reads the latest commit as it would
//! inside a READ COMMITTED transaction, so a transaction that writes nothing begins nothing on the
//! server and has nothing to end. A batch of independent operations reads all their keys in one
//! round trip first ([`Transaction::prefetch`]); its size is bounded by the server's lock table
//! (see `batch_bound`).
//!
//! Read-only transactions ([`Store::begin_read`]) run at REPEATABLE READ, take no locks and
//! never conflict.

mod listener;
mod pool;
mod sql;

use super::watch::{Notifier, Subscription};
use super::{KeyValue, Limits, RangeOptions, Store, StoreCounters, Transaction, WriteSize};
use crate::det::Map;
use crate::error::{Error, Result};
use futures::future::{BoxFuture, FutureExt, try_join_all};
use pool::{Pool, Pooled};
use sql::Sql;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;

pub(crate) const BACKEND: &str = "postgres";

const BEGIN_RW: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
const BEGIN_RO: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// Set on every connection (see [`PostgresStore::connect`]).
const NO_SEQSCAN: &str = "-c enable_seqscan=off";

/// How often a waiter re-reads even without a notification, in case one was lost.
const RECHECK: Duration = Duration::from_secs(1);

/// What the driver or the server said: the server's own message and SQLSTATE when there is
/// one (a wrong password and a missing database read differently), else the error's chain.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Maps a driver error to the engine's error kinds.
pub(crate) fn classify(e: tokio_postgres::Error, during_commit: bool) -> Error {
    if let Some(code) = e.code()
        && (*code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE)
    {
        return Error::Conflict { backend: BACKEND };
    }
    let lost = e.is_closed()
        || e.code().is_some_and(|c| {
            *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        })
        || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    match (lost, during_commit) {
        (true, true) => Error::MaybeCommitted {
            backend: BACKEND,
            detail: e.to_string(),
        },
        (true, false) => Error::ConnectionLost {
            backend: BACKEND,
            detail: e.to_string(),
        },
        _ => Error::Backend {
            backend: BACKEND,
            detail: match e.as_db_error() {
                Some(db) if *db.code() == SqlState::OUT_OF_MEMORY => format!(
                    "{} ({}): the server's lock table is full; raise its \
                     max_locks_per_transaction",
                    db.message(),
                    db.code().code()
                ),
                Some(db) => format!("{} ({})", db.message(), db.code().code()),
                None => e.to_string(),
            },
        },
    }
}

/// Advisory locks one batched operation may take at commit: the keys it reads and writes (an
/// entry's three parts, its index rows and its lease).
const LOCKS_PER_ITEM: i64 = 8;

/// The most independent operations one transaction may batch on a server whose
/// `max_locks_per_transaction` is `per_transaction`, at most 256.
///
/// Every advisory lock a transaction holds is an entry in the server's shared lock table, which
/// has room for `max_locks_per_transaction` locks per connection; when it is full, taking one
/// more fails with "out of shared memory". A batch stays within one connection's share, so the
/// table cannot fill even when every connection commits a batch: 8 operations with the default
/// of 64, 128 with the 1024 that `deploy/dev/postgres-up` sets.
fn batch_bound(per_transaction: i64) -> usize {
    usize::try_from(per_transaction / LOCKS_PER_ITEM)
        .unwrap_or(1)
        .clamp(1, 256)
}

/// The advisory lock ids of a table's keys: 64-bit hashes of the key, seeded with the table's
/// name so that tables in one database do not share locks (see the module's "Isolation").
#[derive(Clone, Copy)]
struct LockIds {
    seed: u64,
}

impl LockIds {
    fn new(table: &str) -> Self {
        LockIds {
            seed: xxhash_rust::xxh3::xxh3_64(table.as_bytes()),
        }
    }

    fn key(self, key: &[u8]) -> i64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed) as i64
    }

    /// The table lock, taken by range operations (exclusive) and writers (shared).
    fn table(self) -> i64 {
        self.key(b"\xff\xffcairn: the table lock")
    }
}

/// The version recorded for a key read absent.
const ABSENT: i64 = -1;

/// What one read of a key saw: the row's version ([`ABSENT`]: absent) and the statement that
/// read it (each statement of a READ COMMITTED transaction reads its own snapshot).
#[derive(Clone, Copy)]
struct Seen {
    version: i64,
    statement: u64,
}

/// The snapshots a transaction's checked reads came from.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Snapshots {
    #[default]
    None,
    One(u64),
    Many,
}

/// The table lock a transaction holds (see the module's "Isolation").
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
enum TableLock {
    #[default]
    None = 0,
    Shared = 1,
    Exclusive = 2,
}

/// What a read-write transaction read and locked.
#[derive(Default)]
struct Occ {
    /// Keys read and not yet checked, with the version read ([`ABSENT`]: absent).
    reads: Map<Vec<u8>, i64>,
    /// The statements whose reads were recorded: a transaction that writes nothing and read
    /// in one statement read one snapshot, and needs no check.
    snapshots: Snapshots,
    /// Key locks held exclusive (keys written).
    exclusive: HashSet<i64>,
    /// Key locks held shared (keys read, taken at commit).
    shared: HashSet<i64>,
    table: TableLock,
}

/// The locks to take and the reads to check before one flush of writes (the arguments of
/// the table's `occ` function).
#[derive(Default)]
struct Plan {
    table: TableLock,
    exclusive: Vec<i64>,
    shared: Vec<i64>,
    keys: Vec<Vec<u8>>,
    versions: Vec<i64>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.table == TableLock::None
            && self.exclusive.is_empty()
            && self.shared.is_empty()
            && self.keys.is_empty()
    }
}

impl Occ {
    /// Records that `key` was read at `version`, unless what it holds cannot change before
    /// this transaction ends: a key it writes (locked exclusive), or anything once it holds
    /// the table lock exclusive. The first read of a key is the one checked.
    fn record(&mut self, ids: LockIds, key: &[u8], seen: Seen) {
        self.snapshots = match self.snapshots {
            Snapshots::None => Snapshots::One(seen.statement),
            Snapshots::One(s) if s == seen.statement => Snapshots::One(s),
            _ => Snapshots::Many,
        };
        let version = seen.version;
        if self.table == TableLock::Exclusive || self.exclusive.contains(&ids.key(key)) {
            return;
        }
        if !self.reads.contains_key(key) {
            self.reads.insert(key.to_vec(), version);
        }
    }

    /// Whether the transaction has written nothing (nor read a range under the table lock)
    /// once `pending` writes are counted.
    fn wrote_nothing(&self, pending: &[Op]) -> bool {
        self.table == TableLock::None && self.exclusive.is_empty() && pending.is_empty()
    }

    /// The check of every read not yet checked, without locks: at the commit of a transaction
    /// that wrote nothing (its reads all hold in the check's snapshot, so it serialises there,
    /// before the writes of others that commit later), and for [`Transaction::check_reads`].
    fn reads_check(&self) -> Plan {
        let (keys, versions) = self.reads.iter().map(|(k, v)| (k.clone(), *v)).unzip();
        Plan {
            keys,
            versions,
            ..Plan::default()
        }
    }

    /// The locks and checks before `ops` are sent: exclusive locks on the keys they write; the
    /// table lock, exclusive if they clear a range or a range read follows (`range`), else
    /// shared if they write; then the check of the reads whose keys they overwrite, or of every
    /// read at commit and when the table lock becomes exclusive. At commit, the keys read are
    /// locked shared until the end.
    fn plan(&mut self, ids: LockIds, ops: &[Op], range: bool, commit: bool) -> Plan {
        let mut plan = Plan::default();
        let mut written: Vec<&[u8]> = Vec::new();
        let mut clears_range = false;
        for op in ops {
            match op {
                Op::Set(k, _) | Op::Clear(k) | Op::Add(k, _) => written.push(k),
                Op::ClearRange(..) => clears_range = true,
            }
        }
        let wanted = if range || clears_range {
            TableLock::Exclusive
        } else if !written.is_empty() {
            TableLock::Shared
        } else {
            TableLock::None
        };
        if wanted > self.table {
            self.table = wanted;
            plan.table = wanted;
        }
        for k in &written {
            let id = ids.key(k);
            if self.exclusive.insert(id) {
                plan.exclusive.push(id);
            }
        }
        let checked: Vec<(Vec<u8>, i64)> = if commit || plan.table == TableLock::Exclusive {
            std::mem::take(&mut self.reads).into_iter().collect()
        } else {
            written
                .iter()
                .filter_map(|k| self.reads.remove_entry(*k))
                .collect()
        };
        for (k, v) in checked {
            if commit && self.table != TableLock::Exclusive {
                let id = ids.key(&k);
                if !self.exclusive.contains(&id) && self.shared.insert(id) {
                    plan.shared.push(id);
                }
            }
            plan.keys.push(k);
            plan.versions.push(v);
        }
        plan
    }
}

/// The statement taking `plan`'s locks and checking its reads.
fn occ_future<'a>(
    conn: &'a pool::Conn,
    plan: &'a Plan,
) -> BoxFuture<'a, Result<(), tokio_postgres::Error>> {
    async move {
        conn.client
            .execute(
                &conn.stmts.occ,
                &[
                    &(plan.table as i32),
                    &plan.exclusive,
                    &plan.shared,
                    &plan.keys,
                    &plan.versions,
                ],
            )
            .await
            .map(drop)
    }
    .boxed()
}

/// The PostgreSQL store; clones share one pool and one listener.
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Arc<Pool>,
    notifier: Arc<Notifier>,
    counters: StoreCounters,
    limits: Limits,
    listener: tokio::task::JoinHandle<()>,
    /// See [`batch_bound`].
    max_batch: usize,
    ids: LockIds,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresStore {
    /// Connects, creates the table if needed and starts listening for changes.
    pub async fn connect(conninfo: &str, table: &str, pool_size: usize) -> Result<Self> {
        let url = super::url::redact(conninfo);
        let mut config: tokio_postgres::Config =
            conninfo
                .parse()
                .map_err(|e: tokio_postgres::Error| Error::BadUrl {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // Every statement finds its rows by key, and its plan is cached with the connection: a
        // plan made while the table was small (a scan of the whole table) stays in use once the
        // table has grown, and made one connection's batched reads take 100+ ms each, and the
        // key check read the whole table each time (measured: runs stalled for seconds or ran
        // 3 times slower). With sequential scans off, from the connection's start, the planner
        // takes the key's index whatever the table's size.
        let options = match config.get_options() {
            Some(given) => format!("{given} {NO_SEQSCAN}"),
            None => NO_SEQSCAN.to_string(),
        };
        config.options(&options);
        let ids = LockIds::new(table);
        let sql = Arc::new(Sql::new(table, ids.table()));
        let max_batch;
        // Create the table before preparing statements that name it.
        {
            let (client, connection) =
                config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| Error::Unreachable {
                        url: url.clone(),
                        detail: describe(&e),
                    })?;
            let driver = tokio::spawn(connection);
            client
                .batch_execute(&sql.create)
                .await
                .map_err(|e| classify(e, false))?;
            let row = client
                .query_one(
                    "SELECT current_setting('max_locks_per_transaction')::int8",
                    &[],
                )
                .await
                .map_err(|e| classify(e, false))?;
            max_batch = batch_bound(row.get(0));
            drop(client);
            let _ = driver.await;
        }
        let notifier = Arc::new(Notifier::default());
        let listener = listener::spawn(
            config.clone(),
            url.clone(),
            sql.channel.clone(),
            notifier.clone(),
        )
        .await?;
        let pool = Pool::new(config, url, sql, pool_size);
        // Fail now, naming the URL, rather than at the first transaction.
        drop(pool.checkout(false).await?);
        Ok(PostgresStore {
            shared: Arc::new(Shared {
                pool,
                notifier,
                counters: StoreCounters::default(),
                limits: Limits::default(),
                listener,
                max_batch,
                ids,
            }),
        })
    }

    async fn start(&self, read_only: bool, urgent: bool) -> Result<PostgresTx> {
        let conn = self.shared.pool.checkout(urgent).await?;
        Ok(PostgresTx {
            shared: self.shared.clone(),
            session: Arc::new(tokio::sync::Mutex::new(Session {
                conn: Some(conn),
                began: false,
                read_only,
                statements: 0,
            })),
            pending: Arc::new(parking_lot::Mutex::new(Pending::default())),
            prefetched: Arc::default(),
            occ: Arc::default(),
        })
    }
}

impl Store for PostgresStore {
    type Tx = PostgresTx;

    async fn begin(&self) -> Result<PostgresTx> {
        self.start(false, false).await
    }

    async fn begin_urgent(&self) -> Result<PostgresTx> {
        self.start(false, true).await
    }

    async fn begin_read(&self) -> Result<PostgresTx> {
        self.start(true, false).await
    }

    async fn subscribe(&self, key: &[u8]) -> Result<Subscription> {
        Ok(self
            .shared
            .notifier
            .subscribe(key)
            .with_recheck(Some(RECHECK)))
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn max_batch(&self) -> usize {
        self.shared.max_batch
    }

    fn gathers_reads(&self) -> bool {
        true
    }

    fn commits_wait(&self) -> bool {
        true
    }

    fn counters(&self) -> &StoreCounters {
        &self.shared.counters
    }
}

/// A write waiting to be sent.
enum Op {
    Set(Vec<u8>, Vec<u8>),
    Clear(Vec<u8>),
    ClearRange(Vec<u8>, Vec<u8>),
    /// An atomic add of a little-endian delta.
    Add(Vec<u8>, [u8; super::COUNTER_BYTES]),
}

#[derive(Default)]
struct Pending {
    ops: Vec<Op>,
    size: WriteSize,
    /// Notification slots of every key written, or `None` after a range clear (notify all).
    slots: Option<BTreeSet<usize>>,
    cleared_range: bool,
}

struct Session {
    /// `None` once the transaction is finished.
    conn: Option<Pooled>,
    /// `BEGIN` was sent: with the first read of a read-only transaction, with the first locks
    /// or writes of a read-write one.
    began: bool,
    read_only: bool,
    /// Read statements sent: the last one's number names its snapshot.
    statements: u64,
}

/// Values a transaction read ahead, by key (`None`: absent), with their versions.
type Prefetched = Map<Vec<u8>, (Option<Vec<u8>>, Seen)>;

/// A PostgreSQL transaction.
#[derive(Clone)]
pub struct PostgresTx {
    shared: Arc<Shared>,
    session: Arc<tokio::sync::Mutex<Session>>,
    pending: Arc<parking_lot::Mutex<Pending>>,
    /// Values read by [`Transaction::prefetch`] (`None`: absent), for later point reads of the
    /// same keys. A key this transaction writes leaves it, so its next read goes to the
    /// server after the write. A read served from here records the version the prefetch
    /// read, so the commit check covers it as if it had been read then. Emptied when the table
    /// lock is taken exclusive, after which reads go to the server and need no check.
    prefetched: Arc<parking_lot::Mutex<Option<Prefetched>>>,
    /// Reads to check and locks held (read-write transactions only).
    occ: Arc<parking_lot::Mutex<Occ>>,
}

/// Futures sending `ops` as few statements as their effect allows: the range clears first,
/// then one delete and one upsert for the point writes, then one upsert for the atomic adds.
/// Equivalent to applying them in order, because a range clear drops the point writes and adds
/// before it in its range (they would be cleared) and keeps those after it (they are applied
/// after the range clears), the last point write of a key wins, a point write drops the adds
/// before it, and the adds that remain came after every point write of their key.
fn op_futures<'a>(
    conn: &'a pool::Conn,
    ops: &'a [Op],
) -> Vec<BoxFuture<'a, Result<(), tokio_postgres::Error>>> {
    let mut points: std::collections::BTreeMap<&[u8], Option<&[u8]>> = Default::default();
    let mut ranges: Vec<(&[u8], &[u8])> = Vec::new();
    let mut adds: std::collections::BTreeMap<&[u8], i64> = Default::default();
    for op in ops {
        match op {
            Op::Set(k, v) => {
                points.insert(k, Some(v));
                adds.remove(k.as_slice());
            }
            Op::Clear(k) => {
                points.insert(k, None);
                adds.remove(k.as_slice());
            }
            Op::ClearRange(b, e) => {
                let (b, e) = (b.as_slice(), e.as_slice());
                points.retain(|k, _| !(b <= *k && *k < e));
                adds.retain(|k, _| !(b <= *k && *k < e));
                ranges.push((b, e));
            }
            Op::Add(k, d) => {
                let sum = adds.entry(k).or_default();
                *sum = sum.wrapping_add(super::decode_counter(Some(d)));
            }
        }
    }
    let mut futs: Vec<BoxFuture<'a, Result<(), tokio_postgres::Error>>> = Vec::new();
    for (b, e) in ranges {
        futs.push(
            async move {
                conn.client
                    .execute(&conn.stmts.delete_range, &[&b, &e])
                    .await
                    .map(drop)
            }
            .boxed(),
        );
    }
    let deleted: Vec<&[u8]> = points
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| *k)
        .collect();
    if !deleted.is_empty() {
        futs.push(
            async move {
                conn.client
                    .execute(&conn.stmts.delete, &[&deleted])
                    .await
                    .map(drop)
            }
            .boxed(),
        );
    }
    let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = points
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .unzip();
    if !keys.is_empty() {
        futs.push(
            async move {
                conn.client
                    .execute(&conn.stmts.upsert, &[&keys, &values])
                    .await
                    .map(drop)
            }
            .boxed(),
        );
    }
    if !adds.is_empty() {
        let (keys, deltas): (Vec<&[u8]>, Vec<Vec<u8>>) = adds
            .into_iter()
            .map(|(k, d)| (k, super::encode_counter(d).to_vec()))
            .unzip();
        futs.push(
            async move {
                conn.client
                    .execute(&conn.stmts.add, &[&keys, &deltas])
                    .await
                    .map(drop)
            }
            .boxed(),
        );
    }
    futs
}

impl PostgresTx {
    fn buffer(&self, op: Op) {
        if let Some(cached) = self.prefetched.lock().as_mut() {
            match &op {
                Op::Set(k, _) | Op::Clear(k) | Op::Add(k, _) => {
                    cached.remove(k.as_slice());
                }
                Op::ClearRange(b, e) => cached.retain(|k, _| !(b <= k && k < e)),
            }
        }
        let mut p = self.pending.lock();
        let limits = &self.shared.limits;
        match &op {
            Op::Set(k, v) => p.size.add(limits, k, Some(v)),
            Op::Clear(k) => p.size.add(limits, k, None),
            Op::ClearRange(b, e) => p.size.add(limits, b, Some(e)),
            Op::Add(k, d) => p.size.add(limits, k, Some(d)),
        }
        match &op {
            Op::Set(k, _) | Op::Clear(k) | Op::Add(k, _) => {
                p.slots
                    .get_or_insert_with(Default::default)
                    .insert(Notifier::slot_of(k));
            }
            Op::ClearRange(..) => p.cleared_range = true,
        }
        p.ops.push(op);
    }

    /// The rows of `keys` with their versions, in one statement, and that statement's number.
    async fn fetch(&self, keys: &[&[u8]]) -> Result<(Map<Vec<u8>, (Vec<u8>, i64)>, u64)> {
        let wanted: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        self.read(false, move |conn| {
            async move {
                let rows = conn.client.query(&conn.stmts.get_many, &[&wanted]).await?;
                Ok(rows
                    .into_iter()
                    .map(|r| (r.get::<_, Vec<u8>>(0), (r.get(1), r.get(2))))
                    .collect())
            }
            .boxed()
        })
        .await
    }

    /// Records reads to check at commit (see [`Occ::record`]).
    fn record<'k>(&self, reads: impl IntoIterator<Item = (&'k [u8], Seen)>) {
        let ids = self.shared.ids;
        let mut occ = self.occ.lock();
        for (key, seen) in reads {
            occ.record(ids, key, seen);
        }
    }

    /// Runs `query` in the transaction after sending `BEGIN` (if not yet sent) and any buffered
    /// writes with their locks and checks, all pipelined into one round trip. `range`: the
    /// query is a range read that must see no other commit until this transaction ends (it
    /// takes the table lock exclusive first). Returns the query's result and the number of its
    /// statement in the transaction.
    async fn read<T>(
        &self,
        range: bool,
        query: impl for<'c> FnOnce(&'c pool::Conn) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    ) -> Result<(T, u64)> {
        let mut session = self.session.lock().await;
        let ops = std::mem::take(&mut self.pending.lock().ops);
        let began = session.began;
        let read_only = session.read_only;
        if read_only && !ops.is_empty() {
            return Err(Error::ReadOnly);
        }
        let Some(pooled) = session.conn.as_mut() else {
            return Err(Error::Finished);
        };
        let plan = if read_only {
            Plan::default()
        } else {
            self.occ.lock().plan(self.shared.ids, &ops, range, false)
        };
        if plan.table == TableLock::Exclusive {
            *self.prefetched.lock() = None;
        }
        // A read-write transaction begins with its first lock or write: until then each of its
        // reads is a statement of its own, reading the latest commit as it would at READ
        // COMMITTED, with nothing to hold and nothing to end.
        let opens = !began && (read_only || !plan.is_empty() || !ops.is_empty());
        if opens {
            pooled.dirty = true;
        }
        let conn = pooled.conn();
        let mut futs = Vec::new();
        if opens {
            futs.push(
                conn.client
                    .batch_execute(if read_only { BEGIN_RO } else { BEGIN_RW })
                    .boxed(),
            );
        }
        if !plan.is_empty() {
            futs.push(occ_future(conn, &plan));
        }
        futs.extend(op_futures(conn, &ops));
        let (prelude, value) = futures::join!(try_join_all(futs), query(conn));
        prelude.map_err(|e| classify(e, false))?;
        session.began |= opens;
        session.statements += 1;
        Ok((value.map_err(|e| classify(e, false))?, session.statements))
    }
}

impl Transaction for PostgresTx {
    async fn get(&self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        self.shared.limits.check_read(key)?;
        let cached = self
            .prefetched
            .lock()
            .as_ref()
            .and_then(|c| c.get(key).cloned());
        if let Some((value, seen)) = cached {
            if !snapshot {
                self.record([(key, seen)]);
            }
            return Ok(value);
        }
        let wanted = key.to_vec();
        let (row, statement) = self
            .read(false, move |conn| {
                async move {
                    let row = conn.client.query_opt(&conn.stmts.get, &[&wanted]).await?;
                    Ok(row.map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, i64>(1))))
                }
                .boxed()
            })
            .await?;
        if !snapshot {
            let version = row.as_ref().map_or(ABSENT, |(_, v)| *v);
            self.record([(key, Seen { version, statement })]);
        }
        Ok(row.map(|(value, _)| value))
    }

    async fn get_many(&self, keys: &[&[u8]], snapshot: bool) -> Result<Vec<Option<Vec<u8>>>> {
        for key in keys {
            self.shared.limits.check_read(key)?;
        }
        let cached = self.prefetched.lock().as_ref().and_then(|cached| {
            keys.iter()
                .map(|k| cached.get(*k).cloned())
                .collect::<Option<Vec<_>>>()
        });
        if let Some(values) = cached {
            if !snapshot {
                self.record(keys.iter().zip(&values).map(|(k, (_, seen))| (*k, *seen)));
            }
            return Ok(values.into_iter().map(|(value, _)| value).collect());
        }
        let (mut rows, statement) = self.fetch(keys).await?;
        if !snapshot {
            self.record(keys.iter().map(|k| {
                let version = rows.get(*k).map_or(ABSENT, |(_, v)| *v);
                (*k, Seen { version, statement })
            }));
        }
        Ok(keys
            .iter()
            .map(|k| rows.remove(*k).map(|(value, _)| value))
            .collect())
    }

    async fn prefetch(&self, keys: &[&[u8]]) -> Result<()> {
        for key in keys {
            self.shared.limits.check_read(key)?;
        }
        let (mut rows, statement) = self.fetch(keys).await?;
        let mut cached = self.prefetched.lock();
        let cached = cached.get_or_insert_with(Map::default);
        for key in keys {
            let (value, version) = match rows.remove(*key) {
                Some((value, version)) => (Some(value), version),
                None => (None, ABSENT),
            };
            let entry = (value, Seen { version, statement });
            cached.insert(key.to_vec(), entry);
        }
        Ok(())
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
        let (begin, end) = (begin.to_vec(), end.to_vec());
        let limit = options.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.read(!options.snapshot, move |conn| {
            async move {
                let stmt = if options.reverse {
                    &conn.stmts.range_desc
                } else {
                    &conn.stmts.range_asc
                };
                let rows = conn.client.query(stmt, &[&begin, &end, &limit]).await?;
                Ok(rows
                    .into_iter()
                    .map(|r| KeyValue {
                        key: r.get(0),
                        value: r.get(1),
                    })
                    .collect())
            }
            .boxed()
        })
        .await
        .map(|(rows, _)| rows)
    }

    fn set(&self, key: &[u8], value: &[u8]) {
        self.buffer(Op::Set(key.to_vec(), value.to_vec()));
    }

    fn clear(&self, key: &[u8]) {
        self.buffer(Op::Clear(key.to_vec()));
    }

    fn clear_range(&self, begin: &[u8], end: &[u8]) {
        if begin < end {
            self.buffer(Op::ClearRange(begin.to_vec(), end.to_vec()));
        }
    }

    fn add(&self, key: &[u8], delta: i64) {
        self.buffer(Op::Add(key.to_vec(), super::encode_counter(delta)));
    }

    async fn commit(&self) -> Result<()> {
        let mut session = self.session.lock().await;
        let pending = std::mem::take(&mut *self.pending.lock());
        let Some(mut pooled) = session.conn.take() else {
            return Err(Error::Finished);
        };
        if session.read_only {
            if !pending.ops.is_empty() {
                return Err(Error::ReadOnly);
            }
            // Dropping `pooled` ends the snapshot in the background.
            return Ok(());
        }
        pending.size.check()?;
        let (writeless, check) = {
            let occ = self.occ.lock();
            let writeless = occ.wrote_nothing(&pending.ops);
            let many = writeless && occ.snapshots == Snapshots::Many;
            (writeless, many.then(|| occ.reads_check()))
        };
        if writeless {
            // Nothing written, so nothing begun on the server (`BEGIN` goes with the first lock
            // or write). Reads of one statement read one snapshot: nothing to check. Reads of
            // several: the check alone, in a statement of its own.
            debug_assert!(!session.began);
            let Some(plan) = check else {
                return Ok(());
            };
            return occ_future(pooled.conn(), &plan)
                .await
                .map_err(|e| classify(e, false));
        }
        let plan = self
            .occ
            .lock()
            .plan(self.shared.ids, &pending.ops, false, true);
        pooled.dirty = true;
        let conn = pooled.conn();
        let mut futs = Vec::new();
        if !session.began {
            futs.push(conn.client.batch_execute(BEGIN_RW).boxed());
        }
        if !plan.is_empty() {
            futs.push(occ_future(conn, &plan));
        }
        futs.extend(op_futures(conn, &pending.ops));
        // One notification for the whole commit, naming every slot written: a commit of a
        // batch writes hundreds of keys, and a notification each would cost the server (and
        // every listening node) more than the batch's rows.
        if let Some(payload) =
            listener::payload(pending.cleared_range, pending.slots.iter().flatten())
        {
            futs.push(
                async move {
                    conn.client
                        .execute(&conn.stmts.notify, &[&payload])
                        .await
                        .map(drop)
                }
                .boxed(),
            );
        }
        let n_before_commit = futs.len();
        futs.push(conn.client.batch_execute("COMMIT").boxed());
        // Run them one by one in order but pipelined: each future is polled (sent) in order.
        let results = futures::future::join_all(futs).await;
        let mut first_err = None;
        for (i, r) in results.into_iter().enumerate() {
            if let Err(e) = r {
                first_err.get_or_insert((i, e));
            }
        }
        if let Some((i, e)) = first_err {
            // COMMIT after a failed statement rolls back; the connection stays marked dirty.
            return Err(classify(e, i >= n_before_commit));
        }
        pooled.dirty = false;
        drop(pooled);
        // Local waiters need not wait for the round trip through the listener.
        if pending.cleared_range {
            self.shared.notifier.notify_all();
        } else {
            for slot in pending.slots.iter().flatten() {
                self.shared.notifier.notify_slot(*slot);
            }
        }
        Ok(())
    }

    async fn check_reads(&self) -> Result<()> {
        let mut session = self.session.lock().await;
        if session.read_only {
            return Ok(());
        }
        let plan = self.occ.lock().reads_check();
        if plan.keys.is_empty() {
            return Ok(());
        }
        let Some(pooled) = session.conn.as_mut() else {
            return Ok(());
        };
        occ_future(pooled.conn(), &plan)
            .await
            .map_err(|e| classify(e, false))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_stay_within_one_connections_share_of_the_lock_table() {
        assert_eq!(super::batch_bound(64), 8); // PostgreSQL's default
        assert_eq!(super::batch_bound(1024), 128);
        assert_eq!(super::batch_bound(1 << 20), 256);
        assert_eq!(super::batch_bound(4), 1);
    }
}
