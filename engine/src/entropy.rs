//! Randomness as a dependency, so that a simulation replays a seed exactly.
//!
//! Everything random a node does (execution ids, operation ids, node tokens, retry and
//! collector jitter) draws from an [`Entropy`] it was given: the operating system's by default,
//! a seeded generator in the simulation. Nothing else calls `rand::random`.

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

/// A source of random numbers; clones share one generator.
#[derive(Clone, Default)]
pub struct Entropy(Option<Arc<Mutex<StdRng>>>);

impl Entropy {
    /// The operating system's randomness (the default).
    pub fn os() -> Self {
        Entropy(None)
    }

    /// A deterministic generator: the same seed gives the same numbers in the same order.
    pub fn seeded(seed: u64) -> Self {
        Entropy(Some(Arc::new(Mutex::new(StdRng::seed_from_u64(seed)))))
    }

    /// A random `u64`.
    pub fn next_u64(&self) -> u64 {
        match &self.0 {
            None => rand::random(),
            Some(rng) => rng.lock().random(),
        }
    }

    /// A random number in `[0, 1)`.
    pub fn next_f64(&self) -> f64 {
        match &self.0 {
            None => rand::random(),
            Some(rng) => rng.lock().random(),
        }
    }
}

impl std::fmt::Debug for Entropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            None => "Entropy::os",
            Some(_) => "Entropy::seeded",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Entropy;

    #[test]
    fn a_seed_replays_and_clones_share_the_generator() {
        let (a, b) = (Entropy::seeded(7), Entropy::seeded(7));
        let from_a: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let from_b: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(from_a, from_b);
        let c = a.clone();
        assert_ne!(a.next_u64(), c.next_u64(), "clones advance one generator");
        assert!((0.0..1.0).contains(&Entropy::os().next_f64()));
    }
}
