//! The PostgreSQL backend: one key/value table, SERIALIZABLE transactions, `LISTEN/NOTIFY`
//! for watches.
//!
//! PostgreSQL's serializable snapshot isolation gives FoundationDB's guarantee (the outcome is
//! as if transactions ran one at a time) and reports violations as SQLSTATE 40001 (or 40P01 for
//! a deadlock), which this module turns into the retryable [`Error::Conflict`].
//!
//! Writes are buffered (they cannot fail, as in FoundationDB) and sent, pipelined, before the
//! next read of the transaction or with `COMMIT`, so a transaction costs one round trip per read
//! plus one for the commit; `BEGIN` rides along with the first statement. A batch of
//! independent operations reads all their keys in one round trip first
//! ([`Transaction::prefetch`]); its size is bounded by the server's predicate-lock settings
//! (see `batch_bound`).
//!
//! Differences from FoundationDB, all on the safe side: a snapshot read inside a read-write
//! transaction is an ordinary serializable read (PostgreSQL cannot read without taking a
//! predicate lock there), so it may add a conflict FoundationDB would not; read-only
//! transactions ([`Store::begin_read`]) run at REPEATABLE READ and never conflict.

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
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;

pub(crate) const BACKEND: &str = "postgres";

const BEGIN_RW: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";
const BEGIN_RO: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

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
            || *code == SqlState::T_R_DEADLOCK_DETECTED)
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
                Some(db) => format!("{} ({})", db.message(), db.code().code()),
                None => e.to_string(),
            },
        },
    }
}

/// Predicate locks one batched operation may take on one relation: it reads an entry's three
/// parts, adjacent keys (one index page, at worst two) and at most three rows.
const PREDICATE_LOCKS_PER_ITEM: i64 = 5;

/// The most independent operations one transaction may batch on a server with these settings
/// (`max_pred_locks_per_transaction`, `max_pred_locks_per_relation`), at most 256.
///
/// Past `max_pred_locks_per_relation` predicate locks on one relation (by default half of
/// `max_pred_locks_per_transaction`, which defaults to 64), PostgreSQL's serializable isolation
/// trades them for one lock on the whole relation, and from then on every write to the table
/// by another transaction conflicts with the batch, whatever its keys: batches from different
/// nodes would fail each other and be split and retried (measured before this bound: a 3-node
/// cluster ran 3 times slower with batching on). A batch is kept under that threshold: 6
/// operations with the defaults, 102 with `max_pred_locks_per_transaction = 1024` (what
/// `deploy/dev/postgres-up` sets).
fn batch_bound(per_transaction: i64, per_relation: i64) -> usize {
    let per_relation = if per_relation < 0 {
        per_transaction / -per_relation
    } else {
        per_relation
    };
    usize::try_from(per_relation / PREDICATE_LOCKS_PER_ITEM)
        .unwrap_or(1)
        .clamp(1, 256)
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
        let sql = Arc::new(Sql::new(table));
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
                    "SELECT current_setting('max_pred_locks_per_transaction')::int8, \
                     current_setting('max_pred_locks_per_relation')::int8",
                    &[],
                )
                .await
                .map_err(|e| classify(e, false))?;
            max_batch = batch_bound(row.get(0), row.get(1));
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
            })),
            pending: Arc::new(parking_lot::Mutex::new(Pending::default())),
            prefetched: Arc::default(),
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
    began: bool,
    read_only: bool,
}

/// Values a transaction read ahead, by key (`None`: absent).
type Prefetched = Map<Vec<u8>, Option<Vec<u8>>>;

/// A PostgreSQL transaction.
#[derive(Clone)]
pub struct PostgresTx {
    shared: Arc<Shared>,
    session: Arc<tokio::sync::Mutex<Session>>,
    pending: Arc<parking_lot::Mutex<Pending>>,
    /// Values read by [`Transaction::prefetch`] (`None`: absent), for later point reads of the
    /// same keys. A key this transaction writes leaves it, so its next read goes to the
    /// server after the write. Serving a read from here is what the server would answer: the
    /// snapshot of a SERIALIZABLE transaction is fixed at its first statement, and the
    /// prefetch already took the read's predicate lock.
    prefetched: Arc<parking_lot::Mutex<Option<Prefetched>>>,
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

    /// The rows of `keys`, in one statement.
    async fn fetch(&self, keys: &[&[u8]]) -> Result<Map<Vec<u8>, Vec<u8>>> {
        let wanted: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        self.read(move |conn| {
            async move {
                let rows = conn.client.query(&conn.stmts.get_many, &[&wanted]).await?;
                Ok(rows
                    .into_iter()
                    .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
                    .collect())
            }
            .boxed()
        })
        .await
    }

    /// Runs `query` in the transaction after sending `BEGIN` (if not yet sent) and any buffered
    /// writes, all pipelined into one round trip.
    async fn read<T>(
        &self,
        query: impl for<'c> FnOnce(&'c pool::Conn) -> BoxFuture<'c, Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
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
        pooled.dirty = true;
        let conn = pooled.conn();
        let mut futs = Vec::new();
        if !began {
            futs.push(
                conn.client
                    .batch_execute(if read_only { BEGIN_RO } else { BEGIN_RW })
                    .boxed(),
            );
        }
        futs.extend(op_futures(conn, &ops));
        let (prelude, value) = futures::join!(try_join_all(futs), query(conn));
        prelude.map_err(|e| classify(e, false))?;
        session.began = true;
        value.map_err(|e| classify(e, false))
    }
}

impl Transaction for PostgresTx {
    async fn get(&self, key: &[u8], _snapshot: bool) -> Result<Option<Vec<u8>>> {
        self.shared.limits.check_read(key)?;
        if let Some(value) = self.prefetched.lock().as_ref().and_then(|c| c.get(key)) {
            return Ok(value.clone());
        }
        let key = key.to_vec();
        self.read(move |conn| {
            async move {
                let row = conn.client.query_opt(&conn.stmts.get, &[&key]).await?;
                Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
            }
            .boxed()
        })
        .await
    }

    async fn get_many(&self, keys: &[&[u8]], _snapshot: bool) -> Result<Vec<Option<Vec<u8>>>> {
        for key in keys {
            self.shared.limits.check_read(key)?;
        }
        if let Some(cached) = self.prefetched.lock().as_ref()
            && let Some(values) = keys
                .iter()
                .map(|k| cached.get(*k).cloned())
                .collect::<Option<Vec<_>>>()
        {
            return Ok(values);
        }
        let rows = self.fetch(keys).await?;
        Ok(keys.iter().map(|k| rows.get(*k).cloned()).collect())
    }

    async fn prefetch(&self, keys: &[&[u8]]) -> Result<()> {
        for key in keys {
            self.shared.limits.check_read(key)?;
        }
        let mut rows = self.fetch(keys).await?;
        let mut cached = self.prefetched.lock();
        let cached = cached.get_or_insert_with(Map::default);
        for key in keys {
            cached.insert(key.to_vec(), rows.remove(*key));
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
        self.read(move |conn| {
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
        if pending.ops.is_empty() && !session.began {
            return Ok(());
        }
        pooled.dirty = true;
        let conn = pooled.conn();
        let mut futs = Vec::new();
        if !session.began {
            futs.push(conn.client.batch_execute(BEGIN_RW).boxed());
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_stay_under_the_predicate_lock_escalation() {
        // PostgreSQL's defaults: 64 per transaction, half of them per relation.
        assert_eq!(super::batch_bound(64, -2), 6);
        assert_eq!(super::batch_bound(1024, -2), 102);
        assert_eq!(super::batch_bound(64, 500), 100);
        assert_eq!(super::batch_bound(1 << 20, -2), 256);
        assert_eq!(super::batch_bound(4, -2), 1);
    }
}
