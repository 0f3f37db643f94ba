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
    /// A new empty store.
    pub async fn new() -> SharedStore {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = EmbeddedStore::open(dir.path(), false)
            .await
            .expect("open embedded store");
        SharedStore {
            _dir: dir,
            store: AnyStore::Embedded(store),
        }
    }

    /// A node builder on this store.
    pub fn node(&self, name: &str) -> NodeBuilder {
        Node::builder()
            .name(name)
            .store(self.store.clone())
            .concurrency(16)
    }
}
