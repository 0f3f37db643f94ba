//! Hash maps and sets whose iteration order depends only on what was inserted into them.
//!
//! `std`'s default hasher is seeded randomly per process, so two runs of the same code iterate
//! a map in different orders; wherever that order decides what happens next (which run is taken
//! over first, which flight is answered first), a simulated seed would not replay. These use a
//! fixed, unseeded hasher instead: FxHash (`rustc-hash`), a few instructions per key. Keys are
//! Cairn's own (digests, ids, names), not chosen by remote peers to collide.
//!
//! The scheduler looks a call up in these maps for every call it answers; xxh3's streaming
//! hasher (the one used before) built a state of several hundred bytes for each lookup.

use rustc_hash::FxBuildHasher;
use std::collections::{HashMap, HashSet};

/// A `HashMap` with a deterministic iteration order.
pub type Map<K, V> = HashMap<K, V, FxBuildHasher>;

/// A `HashSet` with a deterministic iteration order.
pub type Set<K> = HashSet<K, FxBuildHasher>;
