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
            FdbStore::open(Some(self.file.as_ref())).expect("open FoundationDB")
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
