//! Helpers for tests of the actor runtime: nodes on a shared embedded store.

use cairn::{AnyStore, Node, NodeBuilder};
use cairn_engine::store::embedded::EmbeddedStore;

/// A temporary embedded store that several nodes can share (clones of one handle).
pub struct SharedStore {
    _dir: tempfile::TempDir,
    /// The store.
    pub store: AnyStore,
}

impl SharedStore {
    /// A new empty store: the embedded one, under FoundationDB's limits when
    /// `CAIRN_TEST_FDB_LIMITS` is set (to the fraction of commits reported "maybe committed",
    /// e.g. `0.01`; `.ci/run` runs the runtime tests a second time so).
    pub async fn new() -> SharedStore {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = EmbeddedStore::open(dir.path(), false)
            .await
            .expect("open embedded store");
        let store = match std::env::var("CAIRN_TEST_FDB_LIMITS") {
            Ok(p) => {
                let maybe_committed: f64 = p.parse().expect("CAIRN_TEST_FDB_LIMITS: a fraction");
                AnyStore::EmbeddedFdbLimits(cairn_engine::store::fdb_limits::FdbLimited::new(
                    store,
                    cairn_engine::store::fdb_limits::FdbLimitsConfig {
                        maybe_committed,
                        seed: std::env::var("CAIRN_TEST_FDB_LIMITS_SEED")
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(1),
                        ..Default::default()
                    },
                ))
            }
            Err(_) => AnyStore::Embedded(store),
        };
        SharedStore { _dir: dir, store }
    }

    /// A node builder on this store.
    pub fn node(&self, name: &str) -> NodeBuilder {
        Node::builder()
            .name(name)
            .store(self.store.clone())
            .concurrency(16)
    }
}
