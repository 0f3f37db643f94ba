//! Leases that could not be ended because the store was out of reach for longer than the
//! retry policy waits: one background task per catalog keeps trying, with backoff, until each
//! lands or the lease is no longer held, so the next caller of the key never waits out a TTL
//! once the store is back.

use super::lease::{End, Lease, update_lease};
use super::records::LeaseState;
use crate::store::{RetryPolicy, Store};
use std::time::Duration;
use tokio::sync::mpsc;

/// Leases remembered at most; past that the oldest pending end is dropped (its lease then
/// expires after its TTL, as before this existed).
const PENDING: usize = 100_000;

/// Handle on the mender task.
pub(super) struct Mender {
    tx: mpsc::Sender<(Lease, End)>,
}

impl Mender {
    pub(super) fn spawn<S: Store>(store: S, retry: RetryPolicy) -> Mender {
        // One try per lease and round: the rounds themselves back off.
        let retry = RetryPolicy {
            outage: Duration::ZERO,
            ..retry
        };
        let (tx, mut rx) = mpsc::channel::<(Lease, End)>(1024);
        tokio::spawn(async move {
            let mut pending: Vec<(Lease, End)> = Vec::new();
            let mut backoff = Duration::from_millis(200);
            loop {
                if pending.is_empty() {
                    match rx.recv().await {
                        Some(item) => pending.push(item),
                        None => return,
                    }
                }
                while let Ok(item) = rx.try_recv() {
                    pending.push(item);
                }
                if pending.len() > PENDING {
                    let excess = pending.len() - PENDING;
                    pending.drain(..excess);
                }
                let mut still = Vec::new();
                let ended = pending.len();
                let mut out_of_reach = false;
                for (lease, end) in pending.drain(..) {
                    if out_of_reach {
                        still.push((lease, end));
                        continue;
                    }
                    let state = match &end {
                        End::Fail(error) => LeaseState::Failed {
                            error: error.clone(),
                            at_ms: 0,
                        },
                        End::Release => LeaseState::Released,
                    };
                    let result =
                        update_lease(&store, &retry, &lease, |r| r.state = state.clone()).await;
                    match result {
                        Ok(_) => {}
                        Err(e) if e.is_outage() => {
                            out_of_reach = true;
                            still.push((lease, end));
                        }
                        Err(e) => {
                            tracing::warn!(key = %lease.digest, error = %e, "could not end a lease; it expires after its TTL")
                        }
                    }
                }
                if still.is_empty() {
                    backoff = Duration::from_millis(200);
                    tracing::info!(ended, "ended leases the store could not take before");
                } else {
                    pending = still;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        });
        Mender { tx }
    }

    /// Queues `lease` to be ended as `end` once the store answers.
    pub(super) fn later(&self, lease: Lease, end: End) {
        if self.tx.try_send((lease, end)).is_err() {
            tracing::warn!("too many leases waiting for the store; one expires after its TTL");
        }
    }
}
