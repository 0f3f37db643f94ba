//! The retry loop: run a transaction, commit it, and run it again on a retryable error, with
//! bounded attempts and jittered exponential backoff (as `foundationdb`'s `Database::run`).
//!
//! Two kinds of retryable errors are bounded differently:
//! - conflicts (and unknown commit results) by a number of attempts, with short backoffs: they
//!   are contention, resolved in milliseconds;
//! - a store outage (a lost connection, a store that cannot be reached) by time: the loop waits
//!   it out with backoff up to one second, for [`RetryPolicy::outage`] (30 s by default), so a
//!   restart of the store delays work instead of failing it.

use super::{Store, Transaction};
use crate::error::{Error, Result};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How [`transact`] retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Most attempts in all, the first included.
    pub max_attempts: u32,
    /// Backoff before the second retry; the first retry runs at once, later ones double it.
    pub initial_backoff: Duration,
    /// Longest backoff between two attempts.
    pub max_backoff: Duration,
    /// Start each attempt with [`Store::begin_urgent`]: for transactions whose latency bounds
    /// correctness (lease heartbeats), which must not queue behind bulk work.
    pub urgent: bool,
    /// How long a store outage (lost connection, store unreachable) is waited out before the
    /// transaction fails.
    pub outage: Duration,
    /// Where the backoff's jitter comes from.
    pub entropy: crate::entropy::Entropy,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 100,
            initial_backoff: Duration::from_micros(500),
            max_backoff: Duration::from_millis(100),
            urgent: false,
            outage: Duration::from_secs(30),
            entropy: crate::entropy::Entropy::os(),
        }
    }
}

impl RetryPolicy {
    /// This policy, on the urgent lane.
    pub fn urgent(mut self) -> Self {
        self.urgent = true;
        self
    }

    /// The pause before attempt `attempt` (1-based; the first retry is attempt 2).
    fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_within(attempt, (self.initial_backoff, self.max_backoff))
    }

    /// [`RetryPolicy::backoff`] with the backend's (first, longest) pause.
    fn backoff_within(&self, attempt: u32, (initial, max): (Duration, Duration)) -> Duration {
        if attempt <= 2 {
            return Duration::ZERO;
        }
        let exp = initial.saturating_mul(1 << (attempt - 3).min(16)).min(max);
        // Full jitter: contenders that conflicted together do not come back together.
        exp.mul_f64(self.entropy.next_f64())
    }
}

/// Where a retry loop is in an outage.
struct Outage {
    since: Option<Instant>,
    backoff: Duration,
}

impl Outage {
    fn new() -> Self {
        Outage {
            since: None,
            backoff: Duration::from_millis(50),
        }
    }

    /// The pause before trying again after `err`, or `None` when the outage has lasted longer
    /// than `policy` allows.
    fn pause(&mut self, policy: &RetryPolicy) -> Option<Duration> {
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed() >= policy.outage {
            return None;
        }
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(1));
        Some(pause)
    }
}

/// Counters of one store handle, shared by its clones.
#[derive(Debug, Default)]
pub struct StoreCounters {
    commits: AtomicU64,
    conflicts: AtomicU64,
    retries: AtomicU64,
}

impl StoreCounters {
    /// Transactions committed through [`transact`].
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Attempts that ended in [`Error::Conflict`].
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Attempts that were run again after a retryable error.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// Runs `body` in a new transaction and commits it; on a retryable error (conflict, lost
/// connection, unknown commit result) runs it again in a fresh transaction, up to
/// `policy.max_attempts` times.
///
/// `body` may run several times, so it must not have effects outside the transaction, and the
/// writes it makes must be idempotent under an unknown commit result (read before writing).
pub async fn transact<S, T, F, Fut>(store: &S, policy: &RetryPolicy, mut body: F) -> Result<T>
where
    S: Store,
    F: FnMut(S::Tx) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let counters = store.counters();
    let mut attempt = 1;
    let mut outage = Outage::new();
    loop {
        let outcome = async {
            let tx = if policy.urgent {
                store.begin_urgent().await?
            } else {
                store.begin().await?
            };
            let value = match body(tx.clone()).await {
                Ok(value) => value,
                Err(e) => {
                    // An error from reads of different moments is a conflict (see
                    // `Transaction::check_reads`).
                    if !e.is_retryable() && !e.is_outage() {
                        tx.check_reads().await?;
                    }
                    return Err(e);
                }
            };
            tx.commit().await?;
            Ok(value)
        }
        .await;
        let err = match outcome {
            Ok(value) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                return Ok(value);
            }
            Err(err) => err,
        };
        if matches!(err, Error::Conflict { .. }) {
            counters.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        if err.is_outage() {
            let Some(pause) = outage.pause(policy) else {
                return Err(Error::RetriesExhausted {
                    attempts: attempt,
                    elapsed: started.elapsed(),
                    last: Box::new(err),
                });
            };
            attempt += 1;
            counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            continue;
        }
        if !err.is_retryable() {
            return Err(err);
        }
        if attempt >= policy.max_attempts {
            return Err(Error::RetriesExhausted {
                attempts: attempt,
                elapsed: started.elapsed(),
                last: Box::new(err),
            });
        }
        attempt += 1;
        counters.retries.fetch_add(1, Ordering::Relaxed);
        let pause = match store.backoff() {
            Some(range) => policy.backoff_within(attempt, range),
            None => policy.backoff(attempt),
        };
        if pause.is_zero() {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Runs `body` in a read-only transaction, waiting out a store outage as [`transact`] does.
/// Read-only transactions never conflict, so only outages are retried.
pub async fn read<S, T, F, Fut>(store: &S, policy: &RetryPolicy, mut body: F) -> Result<T>
where
    S: Store,
    F: FnMut(S::Tx) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut outage = Outage::new();
    let mut attempts = 1;
    loop {
        let outcome = async { body(store.begin_read().await?).await }.await;
        match outcome {
            Err(err) if err.is_outage() => match outage.pause(policy) {
                Some(pause) => {
                    attempts += 1;
                    tokio::time::sleep(pause).await;
                }
                None => {
                    return Err(Error::RetriesExhausted {
                        attempts,
                        elapsed: started.elapsed(),
                        last: Box::new(err),
                    });
                }
            },
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RetryPolicy;
    use std::time::Duration;

    #[test]
    fn backoff_is_bounded_and_first_retry_is_immediate() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(2), Duration::ZERO);
        for attempt in 3..200 {
            assert!(p.backoff(attempt) <= p.max_backoff);
        }
    }
}
