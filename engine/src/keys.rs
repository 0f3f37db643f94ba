//! The key layout of everything Cairn stores, in one place.
//!
//! Keys are FoundationDB tuples (`foundationdb-tuple`), so they sort by their components and
//! every backend stores the same bytes. The first element of every key is a one-byte subspace tag
//! naming the kind of record; tags are never reused.
//!
//! | subspace | key | value |
//! |---|---|---|
//! | `TEST` (0xfe) | `(0xfe, suite, ...)` | test-defined; used by the conformance suite only |

use foundationdb_tuple::{Subspace, TuplePack};

/// Tags of the top-level subspaces.
pub mod tag {
    /// Scratch space of the store conformance suite and benchmarks.
    pub const TEST: u8 = 0xfe;
}

/// The subspace with tag `tag`.
pub fn subspace(tag: u8) -> Subspace {
    Subspace::from_bytes(vec![tag])
}

/// Packs `t` under `subspace`.
pub fn pack<T: TuplePack>(subspace: &Subspace, t: &T) -> Vec<u8> {
    subspace.pack(t)
}
