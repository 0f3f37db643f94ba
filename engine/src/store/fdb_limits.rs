//! FoundationDB's limits, enforced on a store that runs here, so that code which would break on
//! FoundationDB breaks on our machines first.
//!
//! [`FdbLimited`] wraps any backend (the embedded one, in the tests) and adds what FoundationDB
//! enforces and the other backends do not:
//! - a transaction lifetime ([`FdbLimitsConfig::max_age`], 5 s), measured on tokio's clock (so
//!   virtual time in paused-time tests): a read or a commit after it fails with
//!   [`Error::TransactionTooOld`], as FoundationDB's error 1007;
//! - 10,000,000 bytes per transaction counting its read-conflict ranges as well as its writes
//!   (the backends count writes only);
//! - a cap on outstanding watches ([`Error::TooManyWatches`], FoundationDB's 1032);
//! - "maybe committed" injected at commit, both ways and seeded: a commit that was applied but
//!   reports [`Error::MaybeCommitted`], and one that was dropped and reports the same.
//!
//! Key and value sizes are already enforced by every backend ([`super::Limits`]).

use super::{KeyValue, Limits, RangeOptions, Store, StoreCounters, Subscription, Transaction};
use crate::error::{Error, Result, SizeLimit};
use futures::FutureExt;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const BACKEND: &str = "fdb-limits";

/// What [`FdbLimited`] enforces and injects.
#[derive(Debug, Clone, PartialEq)]
pub struct FdbLimitsConfig {
    /// Transaction lifetime (FoundationDB: 5 s).
    pub max_age: Duration,
    /// Most bytes per transaction, writes and read-conflict ranges together (10,000,000).
    pub max_transaction: usize,
    /// Most outstanding watches (FoundationDB's default: 10,000).
    pub max_watches: usize,
    /// Probability that a read-write commit reports "maybe committed" (half of them applied,
    /// half dropped).
    pub maybe_committed: f64,
    /// Seed of the injected faults.
    pub seed: u64,
}

impl Default for FdbLimitsConfig {
    fn default() -> Self {
        FdbLimitsConfig {
            max_age: Duration::from_secs(5),
            max_transaction: Limits::FOUNDATIONDB.max_transaction,
            max_watches: 10_000,
            maybe_committed: 0.0,
            seed: 0,
        }
    }
}

/// Counts of what [`FdbLimited`] injected and refused.
#[derive(Debug, Default)]
pub struct FdbLimitsCounters {
    /// Commits applied but reported "maybe committed".
    pub applied_unknown: AtomicU64,
    /// Commits dropped and reported "maybe committed".
    pub dropped_unknown: AtomicU64,
    /// Reads or commits refused as too old.
    pub too_old: AtomicU64,
    /// Watches refused at the cap.
    pub watches_refused: AtomicU64,
}

struct Shared {
    config: FdbLimitsConfig,
    rng: Mutex<StdRng>,
    watches: Arc<AtomicUsize>,
    counters: FdbLimitsCounters,
}

/// A store with FoundationDB's limits; see the module documentation.
pub struct FdbLimited<S: Store> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Store> Clone for FdbLimited<S> {
    fn clone(&self) -> Self {
        FdbLimited {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: Store> FdbLimited<S> {
    /// `inner` with the limits of `config`.
    pub fn new(inner: S, config: FdbLimitsConfig) -> Self {
        FdbLimited {
            inner,
            shared: Arc::new(Shared {
                rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
                config,
                watches: Arc::new(AtomicUsize::new(0)),
                counters: FdbLimitsCounters::default(),
            }),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// What was injected and refused so far.
    pub fn injected(&self) -> &FdbLimitsCounters {
        &self.shared.counters
    }

    /// Watches outstanding now.
    pub fn outstanding_watches(&self) -> usize {
        self.shared.watches.load(Ordering::Relaxed)
    }

    fn wrap(&self, tx: S::Tx, read_only: bool) -> FdbLimitedTx<S::Tx> {
        FdbLimitedTx {
            inner: tx,
            shared: self.shared.clone(),
            started: tokio::time::Instant::now(),
            bytes: Arc::new(AtomicUsize::new(0)),
            read_only,
        }
    }
}

impl<S: Store> Store for FdbLimited<S> {
    type Tx = FdbLimitedTx<S::Tx>;

    async fn begin(&self) -> Result<Self::Tx> {
        Ok(self.wrap(self.inner.begin().await?, false))
    }

    async fn begin_urgent(&self) -> Result<Self::Tx> {
        Ok(self.wrap(self.inner.begin_urgent().await?, false))
    }

    async fn begin_read(&self) -> Result<Self::Tx> {
        Ok(self.wrap(self.inner.begin_read().await?, true))
    }

    async fn subscribe(&self, key: &[u8]) -> Result<Subscription> {
        let watches = self.shared.watches.clone();
        let limit = self.shared.config.max_watches;
        if watches
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_err()
        {
            self.shared
                .counters
                .watches_refused
                .fetch_add(1, Ordering::Relaxed);
            return Err(Error::TooManyWatches {
                backend: BACKEND,
                limit,
            });
        }
        // Outstanding until it fires or is dropped, as a FoundationDB watch.
        let guard = WatchGuard(watches);
        let mut inner = match self.inner.subscribe(key).await {
            Ok(s) => s,
            Err(e) => {
                drop(guard);
                return Err(e);
            }
        };
        Ok(Subscription::from_future(
            async move {
                let fired = inner.changed().await;
                drop(guard);
                fired
            }
            .boxed(),
        ))
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    fn gathers_reads(&self) -> bool {
        self.inner.gathers_reads()
    }

    fn commits_wait(&self) -> bool {
        self.inner.commits_wait()
    }

    fn counters(&self) -> &StoreCounters {
        self.inner.counters()
    }

    fn backoff(&self) -> Option<(Duration, Duration)> {
        self.inner.backoff()
    }
}

struct WatchGuard(Arc<AtomicUsize>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A transaction of [`FdbLimited`].
pub struct FdbLimitedTx<T: Transaction> {
    inner: T,
    shared: Arc<Shared>,
    started: tokio::time::Instant,
    /// Writes and read-conflict ranges so far.
    bytes: Arc<AtomicUsize>,
    read_only: bool,
}

impl<T: Transaction> Clone for FdbLimitedTx<T> {
    fn clone(&self) -> Self {
        FdbLimitedTx {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            started: self.started,
            bytes: self.bytes.clone(),
            read_only: self.read_only,
        }
    }
}

impl<T: Transaction> FdbLimitedTx<T> {
    fn check_age(&self) -> Result<()> {
        let limit = self.shared.config.max_age;
        if self.started.elapsed() > limit {
            self.shared.counters.too_old.fetch_add(1, Ordering::Relaxed);
            return Err(Error::TransactionTooOld {
                backend: BACKEND,
                limit_ms: limit.as_millis() as u64,
            });
        }
        Ok(())
    }

    fn account(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }
}

impl<T: Transaction> Transaction for FdbLimitedTx<T> {
    async fn get(&self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        self.check_age()?;
        if !snapshot && !self.read_only {
            self.account(key.len());
        }
        self.inner.get(key, snapshot).await
    }

    async fn get_many(&self, keys: &[&[u8]], snapshot: bool) -> Result<Vec<Option<Vec<u8>>>> {
        self.check_age()?;
        if !snapshot && !self.read_only {
            self.account(keys.iter().map(|k| k.len()).sum());
        }
        self.inner.get_many(keys, snapshot).await
    }

    async fn prefetch(&self, keys: &[&[u8]]) -> Result<()> {
        self.check_age()?;
        self.inner.prefetch(keys).await
    }

    async fn get_range(
        &self,
        begin: &[u8],
        end: &[u8],
        options: RangeOptions,
    ) -> Result<Vec<KeyValue>> {
        self.check_age()?;
        if !options.snapshot && !self.read_only {
            self.account(begin.len() + end.len());
        }
        self.inner.get_range(begin, end, options).await
    }

    fn set(&self, key: &[u8], value: &[u8]) {
        self.account(key.len() + value.len());
        self.inner.set(key, value);
    }

    fn clear(&self, key: &[u8]) {
        self.account(key.len());
        self.inner.clear(key);
    }

    fn clear_range(&self, begin: &[u8], end: &[u8]) {
        self.account(begin.len() + end.len());
        self.inner.clear_range(begin, end);
    }

    fn add(&self, key: &[u8], delta: i64) {
        self.account(key.len() + super::COUNTER_BYTES);
        self.inner.add(key, delta);
    }

    async fn check_reads(&self) -> Result<()> {
        self.inner.check_reads().await
    }

    async fn commit(&self) -> Result<()> {
        self.check_age()?;
        let size = self.bytes.load(Ordering::Relaxed);
        if size > self.shared.config.max_transaction {
            return Err(Error::TooLarge {
                what: SizeLimit::Transaction,
                size,
                limit: self.shared.config.max_transaction,
            });
        }
        if self.read_only || size == 0 {
            return self.inner.commit().await;
        }
        let p = self.shared.config.maybe_committed;
        let fault = if p > 0.0 {
            let mut rng = self.shared.rng.lock();
            rng.random_bool(p.min(1.0)).then(|| rng.random_bool(0.5))
        } else {
            None
        };
        match fault {
            None => self.inner.commit().await,
            Some(applied) => {
                if applied {
                    self.inner.commit().await?;
                    self.shared
                        .counters
                        .applied_unknown
                        .fetch_add(1, Ordering::Relaxed);
                } else {
                    self.shared
                        .counters
                        .dropped_unknown
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(Error::MaybeCommitted {
                    backend: BACKEND,
                    detail: format!(
                        "injected: the commit was {}",
                        if applied { "applied" } else { "dropped" }
                    ),
                })
            }
        }
    }
}
