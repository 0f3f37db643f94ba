//! Hash maps and sets whose iteration order depends only on what was inserted into them.
//!
//! `std`'s default hasher is seeded randomly per process, so two runs of the same code iterate
//! a map in different orders; wherever that order decides what happens next (which run is taken
//! over first, which flight is answered first), a simulated seed would not replay. These use a
//! fixed hasher (xxh3 with its default secret) instead. Keys are Cairn's own (digests, ids,
//! names), not chosen by remote peers to collide.

use std::collections::{HashMap, HashSet};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// A `HashMap` with a deterministic iteration order.
pub type Map<K, V> = HashMap<K, V, Xxh3DefaultBuilder>;

/// A `HashSet` with a deterministic iteration order.
pub type Set<K> = HashSet<K, Xxh3DefaultBuilder>;
