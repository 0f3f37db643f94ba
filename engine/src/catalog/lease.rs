//! Leases: who computes a key now. Acquired by resolve; kept alive by heartbeats; ended by
//! commit (released), `fail` (failed: waiters take over at once) or `release`.
//!
//! Expiry is never decided by comparing wall clocks: the holder bumps a heartbeat counter, and a
//! waiter takes over only after seeing the same (generation, beat) for the whole TTL on its own
//! monotonic clock, in a transaction that re-reads the record (see [`super::Catalog::wait`]).
//! Every acquisition increments the generation; commits and heartbeats are fenced by it.

use super::records::{LeaseRecord, LeaseState, decode, encode};
use super::{Catalog, Digest};
use crate::error::Result;
use crate::keys::{self, entry_part};
use crate::store::{RetryPolicy, Store, Transaction, transact};
use std::future::Future;
use std::time::Duration;

/// How a lease is to be ended (by the holder, or later by the mender when the store was out of
/// reach).
#[derive(Debug, Clone)]
pub(super) enum End {
    /// Failed with this error.
    Fail(String),
    /// Released.
    Release,
}

/// A lease this caller holds: it should compute the key and commit (or fail).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The key.
    pub digest: Digest,
    /// The holder.
    pub owner: String,
    /// The holder's incarnation (0: unknown).
    #[serde(default)]
    pub incarnation: u64,
    /// The holder's execution.
    pub execution: String,
    /// Fencing generation.
    pub generation: u64,
    /// Heartbeat at least this often (a third of it is a good interval).
    pub ttl: Duration,
    /// The commit replaces an existing entry.
    pub overwrite: bool,
    /// The key had been evicted (the call's status is `Evicted`).
    pub evicted: bool,
    /// The key's previous holder failed with this error.
    pub previous_failure: Option<String>,
    /// Acquired by taking over an expired lease.
    pub took_over: bool,
    /// The key's stored entry is corrupt (what is wrong with it): this lease's commit replaces
    /// it.
    #[serde(default)]
    pub replaces_corrupt: Option<String>,
}

/// A lease someone else holds, as this caller saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldLease {
    /// The key.
    pub digest: Digest,
    /// The holder.
    pub owner: String,
    /// The holder's execution.
    pub execution: String,
    /// Its generation.
    pub generation: u64,
    /// Its heartbeat counter when seen.
    pub beat: u64,
    /// The holder's TTL: it may be taken over once (generation, beat) stay unchanged this long.
    pub ttl: Duration,
    /// W3C `traceparent` of the holder's call span, when it was traced.
    pub trace: Option<String>,
    /// The lease record's bytes as read, for watching it.
    pub(super) raw: Vec<u8>,
}

impl HeldLease {
    /// A held lease as seen elsewhere (another node, a test). Without the record's bytes, a
    /// wait on it starts with a re-read.
    pub fn new(
        digest: Digest,
        owner: &str,
        execution: &str,
        generation: u64,
        beat: u64,
        ttl: Duration,
    ) -> Self {
        HeldLease {
            digest,
            owner: owner.to_string(),
            execution: execution.to_string(),
            generation,
            beat,
            ttl,
            trace: None,
            raw: Vec::new(),
        }
    }

    pub(super) fn from_record(digest: Digest, record: &LeaseRecord, raw: Vec<u8>) -> Self {
        HeldLease {
            digest,
            owner: record.owner.clone(),
            execution: record.execution.clone(),
            generation: record.generation,
            beat: record.beat,
            ttl: Duration::from_millis(record.ttl_ms),
            trace: record.trace.clone(),
            raw,
        }
    }
}

impl<S: Store> Catalog<S> {
    /// Drives `work` to completion while `lease` is heartbeaten every third of its TTL by the
    /// catalog's beater, batched with every other lease this process holds. Stops beating once
    /// the lease is lost; the holder may still commit afterwards (first writer wins).
    pub async fn heartbeating<F: Future>(&self, lease: &Lease, work: F) -> F::Output {
        let _beats = self.inner.beater.beat(lease);
        work.await
    }

    /// Leases this process is heartbeating now.
    pub fn leases_beating(&self) -> usize {
        self.inner.beater.beating()
    }

    /// Changes the lease record of `lease` with `change` if `lease` still holds it (same
    /// generation and execution, still held); reports whether it did.
    async fn update_lease(&self, lease: &Lease, change: impl Fn(&mut LeaseRecord)) -> Result<bool> {
        update_lease(&self.inner.store, &self.inner.config.retry, lease, change).await
    }

    /// Ends `lease` (failed or released); if the store stays out of reach longer than the
    /// retry policy waits, the end is queued and made as soon as the store answers again.
    async fn end_lease(&self, lease: &Lease, state: LeaseState) -> Result<bool> {
        let result = self.update_lease(lease, |r| r.state = state.clone()).await;
        if let Err(e) = &result
            && e.is_outage()
        {
            let end = match &state {
                LeaseState::Failed { error, .. } => End::Fail(error.clone()),
                _ => End::Release,
            };
            self.inner.mender.later(lease.clone(), end);
        }
        result
    }

    /// Extends `lease`: bumps its heartbeat counter if it still holds the key. `false` means the
    /// lease was taken over or ended; the holder may still commit (first writer wins).
    pub async fn heartbeat(&self, lease: &Lease) -> Result<bool> {
        self.update_lease(lease, |r| r.beat += 1).await
    }

    /// Ends `lease` because the execution failed with `error`: waiters acquire at once and see
    /// the error. Returns whether the lease was still held. A store outage that outlasts the
    /// retry policy is an error, and the lease is failed once the store answers again.
    pub async fn fail(&self, lease: &Lease, error: &str) -> Result<bool> {
        let state = LeaseState::Failed {
            error: error.to_string(),
            at_ms: self.now_ms(),
        };
        self.end_lease(lease, state).await
    }

    /// Ends `lease` without a result and without an error (the call was cancelled). Like
    /// [`Catalog::fail`], made once the store answers again if it is out of reach.
    pub async fn release(&self, lease: &Lease) -> Result<bool> {
        self.end_lease(lease, LeaseState::Released).await
    }
}

/// Changes the lease record of `lease` with `change` if `lease` still holds it (same
/// generation and execution, still held); reports whether it did.
pub(super) async fn update_lease<S: Store>(
    store: &S,
    retry: &RetryPolicy,
    lease: &Lease,
    change: impl Fn(&mut LeaseRecord),
) -> Result<bool> {
    let key = keys::entry_part(&lease.digest, entry_part::LEASE);
    // Heartbeats and fails bound how soon waiters may take over: the urgent lane keeps them
    // from queueing behind the bulk of resolves and commits.
    let policy = retry.clone().urgent();
    transact(store, &policy, |tx| {
        let key = &key;
        let change = &change;
        async move {
            let Some(raw) = tx.get(key, false).await? else {
                return Ok(false);
            };
            let mut record: LeaseRecord =
                decode(|| format!("lease record of {}", lease.digest), &raw)?;
            if record.generation != lease.generation
                || record.execution != lease.execution
                || record.state != LeaseState::Held
            {
                return Ok(false);
            }
            change(&mut record);
            tx.set(key, &encode(&record));
            Ok(true)
        }
    })
    .await
}
