//! How the conformance suite gets a store of each backend.

use cairn_engine::Store;
use cairn_engine::store::embedded::EmbeddedStore;
use cairn_engine::store::postgres::PostgresStore;
use std::future::Future;

/// A way to open a fresh store of one backend, and to reopen or share it.
pub trait Harness: Sized {
    /// The backend.
    type S: Store;

    /// A harness over a new, empty store.
    fn new() -> impl Future<Output = Self>;

    /// Opens the store (again, after an earlier handle was dropped).
    fn open(&self) -> impl Future<Output = Self::S>;

    /// A second, independent handle on the same data while the first is open: another
    /// connection where the backend has connections, a clone where it is in-process.
    fn second_handle(&self, first: &Self::S) -> impl Future<Output = Self::S>;

    /// A URL of this backend that cannot be opened, and a fragment the error must contain.
    fn unreachable_url(&self) -> (String, String);

    /// Whether the store reports some commits "maybe committed": then counts of removals are
    /// lower bounds (an attempt whose commit was applied but reported unknown is not counted
    /// by the retry that finds its work done), though what they remove is removed all the same.
    fn injects_unknown_commits(&self) -> bool {
        false
    }
}

/// The embedded store in a temporary directory.
pub struct EmbeddedHarness {
    dir: tempfile::TempDir,
}

impl Harness for EmbeddedHarness {
    type S = EmbeddedStore;

    async fn new() -> Self {
        EmbeddedHarness {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    async fn open(&self) -> EmbeddedStore {
        EmbeddedStore::open(self.dir.path(), false)
            .await
            .expect("open embedded store")
    }

    async fn second_handle(&self, first: &EmbeddedStore) -> EmbeddedStore {
        first.clone()
    }

    fn unreachable_url(&self) -> (String, String) {
        // A regular file where the store's directory should be.
        let file = self.dir.path().join("not-a-directory");
        std::fs::write(&file, b"x").expect("write file");
        let url = format!("embedded:{}", file.display());
        (url.clone(), url)
    }
}

/// The PostgreSQL URL of the test server (`CAIRN_TEST_POSTGRES`, or the role `.ci/run` creates).
pub fn postgres_url() -> String {
    std::env::var("CAIRN_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://cairn:cairn@127.0.0.1:5432/cairn_test".to_string())
}

/// A fresh table on the test PostgreSQL server.
pub struct PostgresHarness {
    table: String,
}

impl Harness for PostgresHarness {
    type S = PostgresStore;

    async fn new() -> Self {
        PostgresHarness {
            table: format!("kv_{:016x}", rand::random::<u64>()),
        }
    }

    async fn open(&self) -> PostgresStore {
        let url = postgres_url();
        PostgresStore::connect(&url, &self.table, 8)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL test server at {url} (run .ci/run or set CAIRN_TEST_POSTGRES): {e}"
                )
            })
    }

    async fn second_handle(&self, _first: &PostgresStore) -> PostgresStore {
        self.open().await
    }

    fn unreachable_url(&self) -> (String, String) {
        // Port 1 on loopback: nothing listens there.
        let url = "postgres://cairn:secret@127.0.0.1:1/cairn_test?connect_timeout=2".to_string();
        (
            url,
            "postgres://cairn:***@127.0.0.1:1/cairn_test".to_string(),
        )
    }
}

/// FoundationDB, on the cluster named by `FDB_CLUSTER_FILE`.
#[cfg(feature = "fdb")]
pub mod fdb {
    use super::Harness;
    use cairn_engine::store::foundationdb::FdbStore;

    /// The cluster file, or `None` (and a visible notice) when the suite cannot run.
    pub fn cluster_file() -> Option<String> {
        let file = std::env::var("FDB_CLUSTER_FILE").ok();
        if file.is_none() {
            eprintln!("FoundationDB conformance suite NOT RUN: FDB_CLUSTER_FILE is not set");
        }
        file
    }

    /// The cluster; every test writes under a random prefix of its own.
    pub struct FdbHarness {
        file: String,
    }

    impl Harness for FdbHarness {
        type S = FdbStore;

        async fn new() -> Self {
            FdbHarness {
                file: cluster_file().expect("FDB_CLUSTER_FILE"),
            }
        }

        async fn open(&self) -> FdbStore {
            FdbStore::open(Some(self.file.as_ref()), None)
                .await
                .expect("open FoundationDB")
        }

        async fn second_handle(&self, _first: &FdbStore) -> FdbStore {
            self.open().await
        }

        fn unreachable_url(&self) -> (String, String) {
            let url = "fdb:/nonexistent/fdb.cluster".to_string();
            (url.clone(), url)
        }
    }
}

/// The embedded store under FoundationDB's limits ([`cairn_engine::store::fdb_limits`]): the
/// 5 s transaction lifetime, 10 MB with conflict ranges, the watch cap, and "maybe committed"
/// injected into one commit in `MAYBE_COMMITTED` (both ways), seeded by `CAIRN_FDB_LIMITS_SEED`
/// (default 1).
pub struct FdbLimitsHarness<const PER_MILLE: u32> {
    embedded: EmbeddedHarness,
}

/// [`FdbLimitsHarness`] with limits only (no injected faults): for suites that commit by hand
/// and assert on the outcome of each commit.
pub type FdbLimitsOnly = FdbLimitsHarness<0>;

/// [`FdbLimitsHarness`] with one commit in 20 reported "maybe committed".
pub type FdbLimitsMaybeCommitted = FdbLimitsHarness<50>;

impl<const PER_MILLE: u32> Harness for FdbLimitsHarness<PER_MILLE> {
    type S = cairn_engine::store::fdb_limits::FdbLimited<EmbeddedStore>;

    async fn new() -> Self {
        FdbLimitsHarness {
            embedded: EmbeddedHarness::new().await,
        }
    }

    async fn open(&self) -> Self::S {
        let seed = std::env::var("CAIRN_FDB_LIMITS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        cairn_engine::store::fdb_limits::FdbLimited::new(
            self.embedded.open().await,
            cairn_engine::store::fdb_limits::FdbLimitsConfig {
                maybe_committed: f64::from(PER_MILLE) / 1000.0,
                seed,
                ..Default::default()
            },
        )
    }

    async fn second_handle(&self, first: &Self::S) -> Self::S {
        first.clone()
    }

    fn unreachable_url(&self) -> (String, String) {
        self.embedded.unreachable_url()
    }

    fn injects_unknown_commits(&self) -> bool {
        PER_MILLE > 0
    }
}

/// Sets `key` to `value` through the retry loop (a blind write is idempotent, so it is safe
/// under injected "maybe committed"): how the suites plant corrupt records.
pub async fn blind_write<S: Store>(store: &S, key: &[u8], value: &[u8]) {
    cairn_engine::store::transact(store, &cairn_engine::store::RetryPolicy::default(), |tx| {
        let (key, value) = (key.to_vec(), value.to_vec());
        async move {
            cairn_engine::Transaction::set(&tx, &key, &value);
            Ok(())
        }
    })
    .await
    .expect("write a record");
}

/// The in-memory store ([`cairn_engine::store::memory`]), the simulation's backend, under
/// FoundationDB's limits. With `FAULTS`, seeded faults (seed `CAIRN_MEMORY_SEED`, default 1):
/// one commit in 20 reported "maybe committed" (both ways), one in 20 refused as a conflict,
/// and watch hints dropped, late or made up one time in 10 each.
pub struct MemoryHarness<const FAULTS: bool> {
    store: cairn_engine::store::memory::MemoryStore,
    /// Only for `unreachable_url`: a memory store cannot be unreachable, so the URL check runs
    /// on an embedded URL.
    embedded: EmbeddedHarness,
}

/// [`MemoryHarness`] without faults: for suites that commit by hand.
pub type MemoryOnly = MemoryHarness<false>;

/// [`MemoryHarness`] with faults: for suites that go through the retry loop.
pub type MemoryFaults = MemoryHarness<true>;

impl<const FAULTS: bool> Harness for MemoryHarness<FAULTS> {
    type S = cairn_engine::store::fdb_limits::FdbLimited<cairn_engine::store::memory::MemoryStore>;

    async fn new() -> Self {
        let seed = std::env::var("CAIRN_MEMORY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let store = cairn_engine::store::memory::MemoryStore::new(seed);
        if FAULTS {
            store.set_faults(cairn_engine::store::memory::Faults {
                conflict: 0.05,
                maybe_committed: 0.05,
                watch_dropped: 0.1,
                watch_late: 0.1,
                watch_spurious: 0.1,
                watch_delay: std::time::Duration::from_millis(50),
                ..Default::default()
            });
        }
        MemoryHarness {
            store,
            embedded: EmbeddedHarness::new().await,
        }
    }

    async fn open(&self) -> Self::S {
        cairn_engine::store::fdb_limits::FdbLimited::new(
            self.store.handle(),
            cairn_engine::store::fdb_limits::FdbLimitsConfig::default(),
        )
    }

    async fn second_handle(&self, _first: &Self::S) -> Self::S {
        self.open().await
    }

    fn unreachable_url(&self) -> (String, String) {
        self.embedded.unreachable_url()
    }

    fn injects_unknown_commits(&self) -> bool {
        FAULTS
    }
}
