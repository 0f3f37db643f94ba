//! [`AnyStore`]: the backend chosen at run time from a store URL.

use super::embedded::{EmbeddedStore, EmbeddedTx};
use super::fdb_limits::{FdbLimited, FdbLimitedTx};
#[cfg(feature = "fdb")]
use super::foundationdb::{FdbStore, FdbTx};
use super::memo::Memo;
use super::memory::{MemoryStore, MemoryTx};
use super::postgres::{PostgresStore, PostgresTx};
use super::{KeyValue, RangeOptions, Store, StoreCounters, StoreUrl, Subscription, Transaction};
use crate::error::Result;

/// Any backend; what binaries and the layers above use when the backend comes from config.
#[derive(Clone)]
pub enum AnyStore {
    /// `embedded:<dir>`.
    Embedded(EmbeddedStore),
    /// `embedded:<dir>?fdb_limits=true`: under FoundationDB's limits (tests).
    EmbeddedFdbLimits(FdbLimited<EmbeddedStore>),
    /// `postgres://…`.
    Postgres(PostgresStore),
    /// `memory:`: in this process only (tests, the simulation).
    Memory(MemoryStore),
    /// In memory under FoundationDB's limits (the simulation).
    MemoryFdbLimits(FdbLimited<MemoryStore>),
    /// `fdb:<cluster-file>`.
    #[cfg(feature = "fdb")]
    Fdb(FdbStore),
}

macro_rules! any_store_from {
    ($($(#[$attr:meta])* $variant:ident($store:ty)),* $(,)?) => {
        $(
            $(#[$attr])*
            impl From<$store> for AnyStore {
                fn from(store: $store) -> AnyStore {
                    AnyStore::$variant(store)
                }
            }
        )*
    };
}

any_store_from!(
    Embedded(EmbeddedStore),
    EmbeddedFdbLimits(FdbLimited<EmbeddedStore>),
    Postgres(PostgresStore),
    Memory(MemoryStore),
    MemoryFdbLimits(FdbLimited<MemoryStore>),
    #[cfg(feature = "fdb")]
    Fdb(FdbStore),
);

/// A transaction of [`AnyStore`].
#[derive(Clone)]
pub enum AnyTx {
    /// On the embedded store.
    Embedded(EmbeddedTx),
    /// On the embedded store under FoundationDB's limits.
    EmbeddedFdbLimits(FdbLimitedTx<EmbeddedTx>),
    /// On PostgreSQL.
    Postgres(PostgresTx),
    /// In memory.
    Memory(MemoryTx),
    /// In memory under FoundationDB's limits.
    MemoryFdbLimits(FdbLimitedTx<MemoryTx>),
    /// On FoundationDB.
    #[cfg(feature = "fdb")]
    Fdb(FdbTx),
}

impl AnyStore {
    /// Opens the store a URL names (see [`StoreUrl`]).
    pub async fn open(url: &str) -> Result<Self> {
        match url.parse::<StoreUrl>()? {
            StoreUrl::Embedded {
                dir,
                fsync,
                fdb_limits,
                memo_bytes,
            } => {
                // FoundationDB keeps no memo: neither does a store standing in for it.
                let memo_bytes = if fdb_limits.is_some() { 0 } else { memo_bytes };
                let store = EmbeddedStore::open_with_memo(dir, fsync, memo_bytes).await?;
                Ok(match fdb_limits {
                    None => AnyStore::Embedded(store),
                    Some(params) => {
                        AnyStore::EmbeddedFdbLimits(FdbLimited::new(store, params.config()))
                    }
                })
            }
            StoreUrl::Memory => Ok(AnyStore::Memory(MemoryStore::default())),
            StoreUrl::Postgres {
                conninfo,
                pool_size,
                table,
            } => Ok(AnyStore::Postgres(
                PostgresStore::connect(&conninfo, &table, pool_size).await?,
            )),
            #[cfg(feature = "fdb")]
            StoreUrl::Fdb {
                cluster_file,
                max_watches,
            } => Ok(AnyStore::Fdb(
                FdbStore::open(cluster_file.as_deref(), max_watches).await?,
            )),
            #[cfg(not(feature = "fdb"))]
            StoreUrl::Fdb { cluster_file, .. } => Err(crate::Error::BadUrl {
                url: url.to_string(),
                reason: format!(
                    "cannot open the FoundationDB cluster file {}: this build of Cairn has no \
                     FoundationDB support (cargo feature `fdb`, which links libfdb_c)",
                    cluster_file
                        .as_deref()
                        .map_or("(the client's default)".into(), |p| p.display().to_string())
                ),
            }),
        }
    }
}

/// Runs `$body` with `$s` bound to the backend inside `$value`, wrapping transactions back.
macro_rules! each {
    ($value:expr, $s:ident => $body:expr) => {
        match $value {
            AnyStore::Embedded($s) => $body,
            AnyStore::EmbeddedFdbLimits($s) => $body,
            AnyStore::Postgres($s) => $body,
            AnyStore::Memory($s) => $body,
            AnyStore::MemoryFdbLimits($s) => $body,
            #[cfg(feature = "fdb")]
            AnyStore::Fdb($s) => $body,
        }
    };
}

macro_rules! each_tx {
    ($value:expr, $t:ident => $body:expr) => {
        match $value {
            AnyTx::Embedded($t) => $body,
            AnyTx::EmbeddedFdbLimits($t) => $body,
            AnyTx::Postgres($t) => $body,
            AnyTx::Memory($t) => $body,
            AnyTx::MemoryFdbLimits($t) => $body,
            #[cfg(feature = "fdb")]
            AnyTx::Fdb($t) => $body,
        }
    };
}

// PostgreSQL's `begin` futures are boxed: they may open a connection (10 kB of future state),
// and every caller of every backend would otherwise carry that size in its own futures (a run
// holding 10,000 calls at once held 100 MB of it). The allocation costs nothing next to a
// round trip.
impl Store for AnyStore {
    type Tx = AnyTx;

    async fn begin(&self) -> Result<AnyTx> {
        Ok(match self {
            AnyStore::Embedded(s) => AnyTx::Embedded(s.begin().await?),
            AnyStore::EmbeddedFdbLimits(s) => AnyTx::EmbeddedFdbLimits(s.begin().await?),
            AnyStore::Postgres(s) => AnyTx::Postgres(Box::pin(s.begin()).await?),
            AnyStore::Memory(s) => AnyTx::Memory(s.begin().await?),
            AnyStore::MemoryFdbLimits(s) => AnyTx::MemoryFdbLimits(s.begin().await?),
            #[cfg(feature = "fdb")]
            AnyStore::Fdb(s) => AnyTx::Fdb(s.begin().await?),
        })
    }

    async fn begin_urgent(&self) -> Result<AnyTx> {
        Ok(match self {
            AnyStore::Embedded(s) => AnyTx::Embedded(s.begin_urgent().await?),
            AnyStore::EmbeddedFdbLimits(s) => AnyTx::EmbeddedFdbLimits(s.begin_urgent().await?),
            AnyStore::Postgres(s) => AnyTx::Postgres(Box::pin(s.begin_urgent()).await?),
            AnyStore::Memory(s) => AnyTx::Memory(s.begin_urgent().await?),
            AnyStore::MemoryFdbLimits(s) => AnyTx::MemoryFdbLimits(s.begin_urgent().await?),
            #[cfg(feature = "fdb")]
            AnyStore::Fdb(s) => AnyTx::Fdb(s.begin_urgent().await?),
        })
    }

    async fn begin_read(&self) -> Result<AnyTx> {
        Ok(match self {
            AnyStore::Embedded(s) => AnyTx::Embedded(s.begin_read().await?),
            AnyStore::EmbeddedFdbLimits(s) => AnyTx::EmbeddedFdbLimits(s.begin_read().await?),
            AnyStore::Postgres(s) => AnyTx::Postgres(Box::pin(s.begin_read()).await?),
            AnyStore::Memory(s) => AnyTx::Memory(s.begin_read().await?),
            AnyStore::MemoryFdbLimits(s) => AnyTx::MemoryFdbLimits(s.begin_read().await?),
            #[cfg(feature = "fdb")]
            AnyStore::Fdb(s) => AnyTx::Fdb(s.begin_read().await?),
        })
    }

    async fn subscribe(&self, key: &[u8]) -> Result<Subscription> {
        each!(self, s => s.subscribe(key).await)
    }

    fn backend(&self) -> &'static str {
        each!(self, s => s.backend())
    }

    fn counters(&self) -> &StoreCounters {
        each!(self, s => s.counters())
    }

    fn memo(&self) -> Option<&Memo> {
        each!(self, s => s.memo())
    }

    fn backoff(&self) -> Option<(std::time::Duration, std::time::Duration)> {
        each!(self, s => s.backoff())
    }

    fn max_batch(&self) -> usize {
        each!(self, s => s.max_batch())
    }

    fn gathers_reads(&self) -> bool {
        each!(self, s => s.gathers_reads())
    }

    fn commits_wait(&self) -> bool {
        each!(self, s => s.commits_wait())
    }
}

impl Transaction for AnyTx {
    async fn get(&self, key: &[u8], snapshot: bool) -> Result<Option<Vec<u8>>> {
        each_tx!(self, t => t.get(key, snapshot).await)
    }

    async fn get_many(&self, keys: &[&[u8]], snapshot: bool) -> Result<Vec<Option<Vec<u8>>>> {
        each_tx!(self, t => t.get_many(keys, snapshot).await)
    }

    async fn prefetch(&self, keys: &[&[u8]]) -> Result<()> {
        each_tx!(self, t => t.prefetch(keys).await)
    }

    async fn get_range(
        &self,
        begin: &[u8],
        end: &[u8],
        options: RangeOptions,
    ) -> Result<Vec<KeyValue>> {
        each_tx!(self, t => t.get_range(begin, end, options).await)
    }

    fn set(&self, key: &[u8], value: &[u8]) {
        each_tx!(self, t => t.set(key, value))
    }

    fn clear(&self, key: &[u8]) {
        each_tx!(self, t => t.clear(key))
    }

    fn clear_range(&self, begin: &[u8], end: &[u8]) {
        each_tx!(self, t => t.clear_range(begin, end))
    }

    fn add(&self, key: &[u8], delta: i64) {
        each_tx!(self, t => t.add(key, delta))
    }

    async fn commit(&self) -> Result<()> {
        each_tx!(self, t => t.commit().await)
    }

    async fn check_reads(&self) -> Result<()> {
        each_tx!(self, t => t.check_reads().await)
    }
}
