//! Lease heartbeats, batched: one background task per catalog beats every lease this process
//! holds, many leases per transaction.
//!
//! A lease beaten by its own transaction every third of its TTL costs one transaction per lease
//! and interval: a fan-out holding 1,000 leases with a 3 s TTL asks the store for 1,000
//! transactions a second just to stay alive, and when the store falls behind, waiters on other
//! nodes see silent leases and take them over — duplicate executions caused by the heartbeats'
//! own load. Here the leases due are beaten together, up to [`BATCH`] per transaction, and a
//! lease may be beaten up to half an interval early so that leases acquired at different moments
//! fall into the same batches. A lease is registered by its holder, the scheduler that
//! dispatched its job, from dispatch to report; registering one twice beats it once.

use super::lease::Lease;
use super::records::{LeaseRecord, LeaseState, decode, encode};
use crate::det::Map;
use crate::error::Result;
use crate::keys::{self, entry_part};
use crate::store::{RetryPolicy, Store, Transaction, transact};
use futures::StreamExt;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Leases beaten per transaction (each a point read and a write of about 150 bytes), at most.
/// Fewer where the store bounds its batches ([`Store::max_batch`], which counts operations that
/// read an entry's three keys; a beat reads one, so twice as many beats fit): on PostgreSQL
/// with its default settings, a transaction beating 128 leases would lock the whole table.
pub(super) const BATCH: usize = 128;

/// Leases beaten per transaction on `store`.
fn per_transaction<S: Store>(store: &S) -> usize {
    BATCH.min(store.max_batch().saturating_mul(2)).max(1)
}

/// Batches in flight at once.
const PARALLEL: usize = 4;

/// A lease is identified by its key and generation (each acquisition bumps the generation).
type Id = (super::Digest, u64);

/// Leases beaten in one transaction, and what it found.
type Batch = (Vec<(Id, Lease)>, Result<Vec<bool>>);

struct Beating {
    lease: Lease,
    every: Duration,
    last: Instant,
    /// Registrations of this lease still running (holder and worker).
    users: usize,
    /// Still held as of the last beat; a lost lease is not beaten again.
    held: bool,
}

#[derive(Default)]
struct Shared {
    leases: Mutex<Map<Id, Beating>>,
    /// When the beating task will next look at the leases on its own (`None`: asleep with
    /// nothing to beat, or busy beating). Locked inside `leases`. A new lease due later needs
    /// no wake-up: waking the task for every lease made a fan-out of n leases cost n scans of
    /// all of them (quadratic: a fifth of a 100,000-call cold fan-out's CPU).
    planned: Mutex<Option<Instant>>,
    wake: Notify,
    closed: std::sync::atomic::AtomicBool,
}

/// Handle on the beating task; stops it when dropped.
pub(super) struct Beater {
    shared: Arc<Shared>,
    /// The catalog's `clock_rate`: a third of a TTL on this process's clock.
    clock_rate: f64,
}

impl Drop for Beater {
    fn drop(&mut self) {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.wake.notify_one();
    }
}

/// While alive, its lease is beaten.
pub(super) struct Beats {
    shared: Arc<Shared>,
    id: Id,
}

impl Drop for Beats {
    fn drop(&mut self) {
        let mut leases = self.shared.leases.lock();
        if let Some(b) = leases.get_mut(&self.id) {
            b.users -= 1;
            if b.users == 0 {
                leases.remove(&self.id);
            }
        }
    }
}

impl Beater {
    pub(super) fn spawn<S: Store>(store: S, retry: RetryPolicy, clock_rate: f64) -> Beater {
        let shared = Arc::new(Shared::default());
        // Beats bound how soon waiters may take over: the urgent lane keeps them from queueing
        // behind the bulk of resolves and commits.
        tokio::spawn(run(store, retry.urgent(), shared.clone()));
        Beater {
            shared,
            clock_rate: if clock_rate > 0.0 { clock_rate } else { 1.0 },
        }
    }

    /// Beats `lease` every third of its TTL until the returned guard is dropped.
    pub(super) fn beat(&self, lease: &Lease) -> Beats {
        let id = (lease.digest, lease.generation);
        let every = (lease.ttl / 3)
            .div_f64(self.clock_rate)
            .max(Duration::from_millis(1));
        let now = Instant::now();
        let mut leases = self.shared.leases.lock();
        leases
            .entry(id)
            .and_modify(|b| b.users += 1)
            .or_insert_with(|| Beating {
                lease: lease.clone(),
                every,
                last: now,
                users: 1,
                held: true,
            });
        let wake = {
            let mut planned = self.shared.planned.lock();
            match *planned {
                Some(at) if at <= now + every => false,
                _ => {
                    *planned = Some(now + every);
                    true
                }
            }
        };
        drop(leases);
        if wake {
            self.shared.wake.notify_one();
        }
        Beats {
            shared: self.shared.clone(),
            id,
        }
    }

    /// Leases being beaten now (for tests and status).
    pub(super) fn beating(&self) -> usize {
        self.shared.leases.lock().len()
    }
}

async fn run<S: Store>(store: S, retry: RetryPolicy, shared: Arc<Shared>) {
    loop {
        if shared.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        // Due: past half its interval. The next wake-up: when the first lease reaches its full
        // interval.
        let (due, next) = {
            let leases = shared.leases.lock();
            let mut due = Vec::new();
            let mut next: Option<Instant> = None;
            for (id, b) in leases.iter().filter(|(_, b)| b.held) {
                if now >= b.last + b.every / 2 {
                    due.push((*id, b.lease.clone()));
                } else {
                    let by = b.last + b.every;
                    next = Some(next.map_or(by, |n| n.min(by)));
                }
            }
            *shared.planned.lock() = if due.is_empty() { next } else { None };
            (due, next)
        };
        if due.is_empty() {
            let sleep = tokio::time::sleep_until(next.unwrap_or(now + Duration::from_secs(3600)));
            tokio::select! {
                biased;
                () = sleep => {}
                () = shared.wake.notified() => {}
            }
            continue;
        }
        let chunks: Vec<Vec<(Id, Lease)>> = due
            .chunks(per_transaction(&store))
            .map(<[_]>::to_vec)
            .collect();
        let results: Vec<Batch> = futures::stream::iter(chunks.into_iter().map(|chunk| {
            let (store, retry) = (&store, &retry);
            async move {
                let leases: Vec<&Lease> = chunk.iter().map(|(_, l)| l).collect();
                let result = beat_all(store, retry, &leases).await;
                (chunk, result)
            }
        }))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
        let mut leases = shared.leases.lock();
        for (chunk, result) in results {
            match result {
                Ok(held) => {
                    for ((id, _), held) in chunk.iter().zip(held) {
                        if let Some(b) = leases.get_mut(id) {
                            b.last = now;
                            b.held = held;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, leases = chunk.len(), "lease heartbeats failed; retrying");
                    // Try again soon, not at once: past half an interval from now.
                    for (id, _) in &chunk {
                        if let Some(b) = leases.get_mut(id) {
                            b.last = now - b.every / 4;
                        }
                    }
                }
            }
        }
    }
}

/// Bumps the heartbeat counter of every lease in `leases` still held by it, in one
/// transaction; reports, per lease, whether it still was.
pub(super) async fn beat_all<S: Store>(
    store: &S,
    retry: &RetryPolicy,
    leases: &[&Lease],
) -> Result<Vec<bool>> {
    let keys: Vec<Vec<u8>> = leases
        .iter()
        .map(|l| keys::entry_part(&l.digest, entry_part::LEASE))
        .collect();
    transact(store, retry, |tx| {
        let keys = &keys;
        async move {
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let raws = tx.get_many(&refs, false).await?;
            let mut held = Vec::with_capacity(leases.len());
            for ((lease, key), raw) in leases.iter().zip(keys).zip(raws) {
                let Some(raw) = raw else {
                    held.push(false);
                    continue;
                };
                // A record that does not decode is no longer this lease's.
                let Ok(mut record) =
                    decode::<LeaseRecord>(|| format!("lease record of {}", lease.digest), &raw)
                else {
                    held.push(false);
                    continue;
                };
                if record.generation != lease.generation
                    || record.execution != lease.execution
                    || record.state != LeaseState::Held
                {
                    held.push(false);
                    continue;
                }
                record.beat += 1;
                tx.set(key, &encode(&record));
                held.push(true);
            }
            Ok(held)
        }
    })
    .await
}
