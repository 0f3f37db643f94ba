//! The FoundationDB backend (cargo feature `fdb`): the production store the trait is shaped
//! after, so this module is a thin translation.
//!
//! Building it needs libclang (bindgen) and linking needs `libfdb_c`; neither is part of the
//! default build. Transactions time out after 5 s (FoundationDB's own transaction lifetime), so an
//! unreachable cluster surfaces as an error instead of a hang.

use super::watch::Subscription;
use super::{KeyValue, Limits, RangeOptions, Store, StoreCounters, Transaction, WriteSize};
use crate::error::{Error, Result, SizeLimit};
use foundationdb::options::{DatabaseOption, StreamingMode};
use foundationdb::{FdbError, RangeOption};
use futures::FutureExt;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::{Arc, Once};

const BACKEND: &str = "fdb";
const TRANSACTION_TIMEOUT_MS: i32 = 5_000;

fn classify(e: FdbError, during_commit: bool) -> Error {
    match e.code() {
        1020 => Error::Conflict { backend: BACKEND },
        1021 => Error::MaybeCommitted {
            backend: BACKEND,
            detail: e.message().to_string(),
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

/// Starts the FoundationDB client network thread, once per process. It is never stopped: the
/// client library cannot be restarted within a process anyway.
fn boot_network() {
    static BOOT: Once = Once::new();
    BOOT.call_once(|| {
        // SAFETY: `boot` must be called at most once per process and its guard must outlive
        // every database handle; `Once` gives the first, leaking the guard gives the second.
        #[allow(unsafe_code)]
        let network = unsafe { foundationdb::boot() };
        std::mem::forget(network);
    });
}

/// A FoundationDB database handle.
#[derive(Clone)]
pub struct FdbStore {
    shared: Arc<Shared>,
}

struct Shared {
    db: foundationdb::Database,
    limits: Limits,
    counters: StoreCounters,
}

impl FdbStore {
    /// Opens the cluster named by `cluster_file` (the client's default when `None`).
    pub fn open(cluster_file: Option<&Path>) -> Result<Self> {
        boot_network();
        let path = cluster_file
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| foundationdb::default_config_path().to_string());
        let unreachable = |e: FdbError| Error::Unreachable {
            url: format!("fdb:{path}"),
            detail: format!("{} ({})", e.message(), e.code()),
        };
        let db = foundationdb::Database::from_path(&path).map_err(unreachable)?;
        db.set_option(DatabaseOption::TransactionTimeout(TRANSACTION_TIMEOUT_MS))
            .map_err(unreachable)?;
        Ok(FdbStore {
            shared: Arc::new(Shared {
                db,
                limits: Limits::FOUNDATIONDB,
                counters: StoreCounters::default(),
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
        let trx = self
            .shared
            .db
            .create_trx()
            .map_err(|e| classify(e, false))?;
        let watch = trx.watch(key);
        trx.commit()
            .await
            .map_err(|e| classify(FdbError::from(e), true))?;
        Ok(Subscription::from_future(
            watch.map(|r| r.map_err(|e| classify(e, false))).boxed(),
        ))
    }

    fn backend(&self) -> &'static str {
        BACKEND
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
