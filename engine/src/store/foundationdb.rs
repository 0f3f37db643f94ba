//! The FoundationDB backend (cargo feature `fdb`): the production store the trait is shaped
//! after, so this module is a thin translation.
//!
//! Building it needs libclang (bindgen) and linking needs `libfdb_c`; neither is part of the
//! default build.
//!
//! What it does about FoundationDB's sharp edges (docs/semantics.md, "FoundationDB limits"):
//! - [`FdbStore::open`] checks the cluster file exists and probes the cluster with one bounded
//!   read, so a wrong path or an unreachable cluster is an error at open that names the file;
//! - the client library is initialised without panicking: a `libfdb_c` older than 7.3 is an
//!   error, every time it is asked, and [`stop_network`] stops the network thread at exit;
//! - errors keep their meaning: 1020 is a conflict, 1021 and a 1031 timeout during commit are
//!   "maybe committed", 1007 is a transaction past its 5 s lifetime (retryable), other
//!   retryable codes (recoveries, throttling) are an outage that [`super::transact`] waits out
//!   with backoff for its outage window rather than failing at the first 5 s timeout;
//! - retries back off as FoundationDB's `on_error` does (10 ms doubling to 1 s,
//!   [`Store::backoff`]);
//! - waiters on one key share one FoundationDB watch, and the number of outstanding watches is
//!   configurable (`?max_watches=`); a refused or failed watch makes waiters re-read instead.

use super::watch::Subscription;
use super::{KeyValue, Limits, RangeOptions, Store, StoreCounters, Transaction, WriteSize};
use crate::error::{Error, Result, SizeLimit};
use foundationdb::api::{FdbApiBuilder, NetworkAutoStop};
use foundationdb::options::{DatabaseOption, StreamingMode, TransactionOption};
use foundationdb::{FdbError, RangeOption};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared as Shared_};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const BACKEND: &str = "fdb";

fn classify(e: FdbError, during_commit: bool) -> Error {
    match e.code() {
        1020 => Error::Conflict { backend: BACKEND },
        1021 => Error::MaybeCommitted {
            backend: BACKEND,
            detail: e.message().to_string(),
        },
        // transaction_too_old: past the 5 s lifetime; a fresh transaction may fit.
        1007 => Error::TransactionTooOld {
            backend: BACKEND,
            limit_ms: 5_000,
        },
        // transaction_timed_out: during commit the commit may have happened, or may still.
        1031 if during_commit => Error::MaybeCommitted {
            backend: BACKEND,
            detail: format!("{} (1031): the commit may have been applied", e.message()),
        },
        1031 => Error::ConnectionLost {
            backend: BACKEND,
            detail: format!("{} (1031)", e.message()),
        },
        1032 => Error::TooManyWatches {
            backend: BACKEND,
            limit: 0,
        },
        2101 => Error::TooLarge {
            what: SizeLimit::Transaction,
            size: 0,
            limit: Limits::FOUNDATIONDB.max_transaction,
        },
        2102 => Error::TooLarge {
            what: SizeLimit::Key,
            size: 0,
            limit: Limits::FOUNDATIONDB.max_key,
        },
        2103 => Error::TooLarge {
            what: SizeLimit::Value,
            size: 0,
            limit: Limits::FOUNDATIONDB.max_value,
        },
        _ if during_commit && e.is_maybe_committed() => Error::MaybeCommitted {
            backend: BACKEND,
            detail: e.message().to_string(),
        },
        _ if e.is_retryable() => Error::ConnectionLost {
            backend: BACKEND,
            detail: format!("{} ({})", e.message(), e.code()),
        },
        _ => Error::Backend {
            backend: BACKEND,
            detail: format!("{} ({})", e.message(), e.code()),
        },
    }
}

/// The client's network thread: started once per process, stopped by [`stop_network`].
static NETWORK: OnceLock<std::result::Result<Mutex<Option<NetworkAutoStop>>, String>> =
    OnceLock::new();

/// Selects API version 730 and starts the network thread, once per process. A client library
/// that refuses the version (older than 7.3) is an error naming it, here and at every later
/// open, never a panic.
fn boot_network() -> std::result::Result<(), String> {
    let booted = NETWORK.get_or_init(|| {
        let builder = FdbApiBuilder::default()
            .set_runtime_version(730)
            .build()
            .map_err(|e| {
                format!(
                    "libfdb_c refused API version 730 ({} ({})): Cairn needs the FoundationDB \
                     7.3 client library or newer",
                    e.message(),
                    e.code()
                )
            })?;
        // SAFETY: the guard is kept in a static until `stop_network`, which stops the network
        // before the process exits, as the client library requires.
        #[allow(unsafe_code)]
        let guard = unsafe { builder.boot() }.map_err(|e| {
            format!(
                "starting the FoundationDB network thread: {} ({})",
                e.message(),
                e.code()
            )
        })?;
        Ok(Mutex::new(Some(guard)))
    });
    booted.as_ref().map(drop).map_err(Clone::clone)
}

/// Stops the FoundationDB network thread, if it was started; call once, at process exit,
/// after every store handle is dropped. The client library cannot be restarted afterwards.
pub fn stop_network() {
    if let Some(Ok(guard)) = NETWORK.get() {
        drop(guard.lock().take());
    }
}

/// How long opening a store waits for the cluster to answer its probe.
const PROBE_TIMEOUT_MS: i32 = 5_000;

/// A FoundationDB database handle.
#[derive(Clone)]
pub struct FdbStore {
    shared: Arc<Shared>,
}

struct Shared {
    db: foundationdb::Database,
    limits: Limits,
    counters: StoreCounters,
    /// One FoundationDB watch per watched key, shared by every waiter on it.
    watches: Mutex<HashMap<Vec<u8>, SharedWatch>>,
}

/// A watch's outcome, shared by its waiters (errors as text: they are cloned to each).
type SharedWatch = Shared_<BoxFuture<'static, std::result::Result<(), String>>>;

impl FdbStore {
    /// Opens the cluster named by `cluster_file` (the client's default when `None`) and probes
    /// it with one read bounded by 5 s: a missing file, a library that cannot start or a
    /// cluster that does not answer is [`Error::Unreachable`] naming the cluster file.
    /// `max_watches` raises (or lowers) FoundationDB's cap on outstanding watches (10,000).
    pub async fn open(cluster_file: Option<&Path>, max_watches: Option<usize>) -> Result<Self> {
        let path = cluster_file
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| foundationdb::default_config_path().to_string());
        let url = format!("fdb:{path}");
        let unreachable = |detail: String| Error::Unreachable {
            url: url.clone(),
            detail,
        };
        if !Path::new(&path).is_file() {
            return Err(unreachable(format!(
                "the cluster file {path} does not exist (or is not a file)"
            )));
        }
        boot_network().map_err(&unreachable)?;
        let fdb = |e: FdbError| format!("{} ({})", e.message(), e.code());
        let db = foundationdb::Database::from_path(&path)
            .map_err(|e| unreachable(format!("cluster file {path}: {}", fdb(e))))?;
        if let Some(n) = max_watches {
            db.set_option(DatabaseOption::MaxWatches(
                i32::try_from(n).unwrap_or(i32::MAX),
            ))
            .map_err(|e| unreachable(fdb(e)))?;
        }
        // FoundationDB opens a handle whatever the cluster's state; only a read tells.
        let probe = async {
            let trx = db.create_trx()?;
            trx.set_option(TransactionOption::Timeout(PROBE_TIMEOUT_MS))?;
            trx.get(b"\xff\xff/cluster_file_path", true).await?;
            Ok::<_, FdbError>(())
        };
        probe.await.map_err(|e| {
            unreachable(format!(
                "the cluster of {path} did not answer within {} s: {}",
                PROBE_TIMEOUT_MS / 1000,
                fdb(e)
            ))
        })?;
        Ok(FdbStore {
            shared: Arc::new(Shared {
                db,
                limits: Limits::FOUNDATIONDB,
                counters: StoreCounters::default(),
                watches: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn start(&self, read_only: bool) -> Result<FdbTx> {
        let trx = self
            .shared
            .db
            .create_trx()
            .map_err(|e| classify(e, false))?;
        Ok(FdbTx {
            limits: self.shared.limits,
            inner: Arc::new(Mutex::new(Inner {
                trx: Some(trx),
                size: WriteSize::default(),
                read_only,
                wrote: false,
            })),
        })
    }
}

impl Store for FdbStore {
    type Tx = FdbTx;

    async fn begin(&self) -> Result<FdbTx> {
        self.start(false)
    }

    async fn begin_read(&self) -> Result<FdbTx> {
        self.start(true)
    }

    async fn subscribe(&self, key: &[u8]) -> Result<Subscription> {
        let existing = {
            let mut watches = self.shared.watches.lock();
            // Forget watches that fired or that no waiter holds any more.
            if watches.len() > 64 {
                watches.retain(|_, w| w.peek().is_none() && w.strong_count().unwrap_or(0) > 1);
            }
            watches.get(key).filter(|w| w.peek().is_none()).cloned()
        };
        let shared = match existing {
            Some(w) => w,
            None => {
                let trx = self
                    .shared
                    .db
                    .create_trx()
                    .map_err(|e| classify(e, false))?;
                let watch = trx.watch(key);
                trx.commit()
                    .await
                    .map_err(|e| classify(FdbError::from(e), true))?;
                let shared = watch
                    .map(|r| r.map_err(|e| classify(e, false).to_string()))
                    .boxed()
                    .shared();
                self.shared
                    .watches
                    .lock()
                    .insert(key.to_vec(), shared.clone());
                shared
            }
        };
        Ok(Subscription::from_future(
            shared
                .map(|r| {
                    r.map_err(|detail| Error::ConnectionLost {
                        backend: BACKEND,
                        detail: format!("watch failed: {detail}"),
                    })
                })
                .boxed(),
        ))
    }

    fn backoff(&self) -> Option<(Duration, Duration)> {
        // What FoundationDB's `on_error` does: 10 ms, doubling, up to 1 s.
        Some((Duration::from_millis(10), Duration::from_secs(1)))
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn commits_wait(&self) -> bool {
        true
    }

    fn counters(&self) -> &StoreCounters {
        &self.shared.counters
    }
}

struct Inner {
    trx: Option<foundationdb::Transaction>,
    size: WriteSize,
    read_only: bool,
    wrote: bool,
}

/// A FoundationDB transaction.
#[derive(Clone)]
pub struct FdbTx {
    limits: Limits,
    inner: Arc<Mutex<Inner>>,
}

impl FdbTx {
    fn write(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        apply: impl FnOnce(&foundationdb::Transaction),
    ) {
        let mut inner = self.inner.lock();
        inner.wrote = true;
        if inner.read_only {
            return;
        }
        inner.size.add(&self.limits, key, value);
        if inner.size.check().is_ok()
            && let Some(trx) = &inner.trx
        {
            apply(trx);
        }
    }
}

impl Transaction for FdbTx {
    async fn get(&self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        let fut = {
            let inner = self.inner.lock();
            let trx = inner.trx.as_ref().ok_or(Error::Finished)?;
            trx.get(key, snapshot || inner.read_only)
        };
        let value = fut.await.map_err(|e| classify(e, false))?;
        Ok(value.map(|v| v.to_vec()))
    }

    async fn get_many(&self, keys: &[&[u8]], snapshot: bool) -> Result<Vec<Option<Vec<u8>>>> {
        let futures: Vec<_> = {
            let inner = self.inner.lock();
            let trx = inner.trx.as_ref().ok_or(Error::Finished)?;
            keys.iter()
                .map(|k| trx.get(k, snapshot || inner.read_only))
                .collect()
        };
        let values = futures::future::try_join_all(futures)
            .await
            .map_err(|e| classify(e, false))?;
        Ok(values.into_iter().map(|v| v.map(|v| v.to_vec())).collect())
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
        let mut out = Vec::new();
        let mut opt = RangeOption::from((begin.to_vec(), end.to_vec()));
        opt.reverse = options.reverse;
        opt.mode = StreamingMode::WantAll;
        let mut iteration = 1;
        loop {
            if let Some(limit) = options.limit {
                if out.len() >= limit {
                    break;
                }
                opt.limit = Some(limit - out.len());
            }
            let fut = {
                let inner = self.inner.lock();
                let trx = inner.trx.as_ref().ok_or(Error::Finished)?;
                trx.get_range(&opt, iteration, options.snapshot || inner.read_only)
            };
            let values = fut.await.map_err(|e| classify(e, false))?;
            out.extend(values.iter().map(|kv| KeyValue {
                key: kv.key().to_vec(),
                value: kv.value().to_vec(),
            }));
            match opt.next_range(&values) {
                Some(next) => opt = next,
                None => break,
            }
            iteration += 1;
        }
        Ok(out)
    }

    fn set(&self, key: &[u8], value: &[u8]) {
        self.write(key, Some(value), |trx| trx.set(key, value));
    }

    fn clear(&self, key: &[u8]) {
        self.write(key, None, |trx| trx.clear(key));
    }

    fn clear_range(&self, begin: &[u8], end: &[u8]) {
        if begin < end {
            self.write(begin, Some(end), |trx| trx.clear_range(begin, end));
        }
    }

    fn add(&self, key: &[u8], delta: i64) {
        let param = super::encode_counter(delta);
        self.write(key, Some(&param), |trx| {
            trx.atomic_op(key, &param, foundationdb::options::MutationType::Add)
        });
    }

    async fn commit(&self) -> Result<()> {
        let (trx, read_only, wrote) = {
            let mut inner = self.inner.lock();
            inner.size.check()?;
            (
                inner.trx.take().ok_or(Error::Finished)?,
                inner.read_only,
                inner.wrote,
            )
        };
        if read_only {
            return if wrote { Err(Error::ReadOnly) } else { Ok(()) };
        }
        trx.commit()
            .await
            .map(drop)
            .map_err(|e| classify(FdbError::from(e), true))
    }
}
