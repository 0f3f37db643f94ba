//! Waiting behind another execution's lease.

use super::lease::HeldLease;
use super::{Catalog, Hit, Lease, Resolution, ResolveRequest};
use crate::error::Result;
use crate::keys::{self, entry_part};
use crate::store::Store;
use crate::store::watch::wait_for_change;
use tokio::time::Instant;

/// How a wait ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The holder committed: the output.
    Hit(Hit),
    /// The caller now holds the lease (the holder failed, released, or went silent).
    Acquired(Lease),
}

impl<S: Store> Catalog<S> {
    /// Waits behind `held` and returns as soon as the key can be answered: [`Answer::Hit`]
    /// once the holder commits, [`Answer::Acquired`] once it fails or releases, or once its
    /// lease has shown no heartbeat for its whole TTL (taken over with a higher generation).
    ///
    /// The waiter sleeps on the store's watch of the lease record, so it wakes when the holder
    /// commits, not after a poll interval. The TTL is timed on this process's monotonic clock
    /// from the last change it saw, so clock skew between machines cannot expire a live lease.
    pub async fn wait(&self, req: &ResolveRequest<'_>, held: HeldLease) -> Result<Answer> {
        let lease_key = keys::entry_part(&req.key.digest, entry_part::LEASE);
        let mut seen = held;
        let mut since = Instant::now();
        loop {
            let rate = self.inner.config.clock_rate;
            let ttl = if rate > 0.0 {
                seen.ttl.div_f64(rate)
            } else {
                seen.ttl
            };
            let changed = tokio::time::timeout_at(
                since + ttl,
                wait_for_change(&self.inner.store, &lease_key, Some(&seen.raw)),
            )
            .await;
            let takeover = match changed {
                Ok(result) => {
                    result?;
                    None
                }
                // Unchanged for the whole TTL: the holder is presumed dead.
                Err(_elapsed) => Some(&seen),
            };
            let next = self
                .resolve(&ResolveRequest {
                    takeover,
                    trace: req.trace,
                    ..req.clone()
                })
                .await?;
            match next {
                Resolution::Held(h) => {
                    if (h.generation, h.beat, &h.execution)
                        != (seen.generation, seen.beat, &seen.execution)
                    {
                        since = Instant::now();
                    }
                    seen = h;
                }
                Resolution::Hit(hit) => return Ok(Answer::Hit(hit)),
                Resolution::Acquired(lease) => return Ok(Answer::Acquired(lease)),
            }
        }
    }
}
