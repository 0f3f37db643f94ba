//! Change notifications: wait until a key's value differs from one already seen.
//!
//! Backends only deliver *hints* ("a commit may have changed this key"): an in-process
//! notifier for the embedded store, `LISTEN/NOTIFY` for PostgreSQL, native watches for
//! FoundationDB. Hints may be spurious or, for a networked store, lost while a connection is
//! down. [`wait_for_change`] is the one algorithm on top of them: subscribe first, then read, and
//! compare with what the caller saw; on every hint (or every periodic re-check, for backends
//! that can lose hints) read again. A change can therefore never slip between the read and the
//! wait, and a wake-up is never trusted without a read.

use super::{Store, Transaction};
use crate::error::{Error, Result};
use futures::future::BoxFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Number of notification slots; keys share slots by hash, which only costs spurious wake-ups.
pub(crate) const SLOTS: usize = 1024;

/// A registered interest in one key; see [`Store::subscribe`].
pub struct Subscription {
    source: Source,
    recheck: Option<Duration>,
}

enum Source {
    /// A notifier slot and the version seen when subscribing.
    Slot {
        slots: Arc<[Slot]>,
        index: usize,
        seen: u64,
    },
    Once(Option<BoxFuture<'static, Result<()>>>),
}

impl Subscription {
    /// A subscription that fires when `future` resolves (a FoundationDB watch).
    pub fn from_future(future: BoxFuture<'static, Result<()>>) -> Self {
        Subscription {
            source: Source::Once(Some(future)),
            recheck: None,
        }
    }

    /// Also wake up every `period` even without a hint, for backends that can lose hints.
    pub fn with_recheck(mut self, period: Option<Duration>) -> Self {
        self.recheck = period;
        self
    }

    /// Waits for the next hint that the key may have changed.
    pub async fn changed(&mut self) -> Result<()> {
        let hint = async {
            match &mut self.source {
                Source::Slot { slots, index, seen } => {
                    let slot = &slots[*index];
                    loop {
                        // Registered before the version is read: a hint between the two is
                        // not lost.
                        let notified = slot.notify.notified();
                        let now = slot.version.load(Ordering::Acquire);
                        if now != *seen {
                            *seen = now;
                            return Ok(());
                        }
                        notified.await;
                    }
                }
                Source::Once(fut) => match fut.take() {
                    Some(fut) => fut.await,
                    None => Ok(()),
                },
            }
        };
        match self.recheck {
            None => hint.await,
            Some(period) => match tokio::time::timeout(period, hint).await {
                Ok(result) => result,
                Err(_elapsed) => Ok(()),
            },
        }
    }
}

/// One notification slot: a version bumped by every hint, and the waiters, woken in the order
/// they began waiting (tokio's `watch` channel wakes its receivers in a random order, which a
/// simulated seed could not replay).
#[derive(Default)]
struct Slot {
    version: AtomicU64,
    notify: Notify,
}

/// In-process fan-out of commit hints, keyed by a hash of the key.
pub struct Notifier {
    slots: Arc<[Slot]>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

impl Notifier {
    /// The slot of `key`; also what the PostgreSQL backend sends in its notifications.
    pub fn slot_of(key: &[u8]) -> usize {
        (xxhash_rust::xxh3::xxh3_64(key) % SLOTS as u64) as usize
    }

    /// A subscription to the slot of `key`.
    pub fn subscribe(&self, key: &[u8]) -> Subscription {
        let index = Self::slot_of(key);
        Subscription {
            source: Source::Slot {
                seen: self.slots[index].version.load(Ordering::Acquire),
                slots: self.slots.clone(),
                index,
            },
            recheck: None,
        }
    }

    /// Wakes the subscribers of slot `slot` (ignores slots out of range: they come off the wire).
    pub fn notify_slot(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            s.version.fetch_add(1, Ordering::AcqRel);
            s.notify.notify_waiters();
        }
    }

    /// Wakes the subscribers of `key`.
    pub fn notify_key(&self, key: &[u8]) {
        self.notify_slot(Self::slot_of(key));
    }

    /// Wakes every subscriber (after a range clear, or a reconnect that may have lost hints).
    pub fn notify_all(&self) {
        for slot in 0..SLOTS {
            self.notify_slot(slot);
        }
    }
}

/// Reads `key` outside any read-write transaction (a snapshot read).
pub async fn read_key<S: Store>(store: &S, key: &[u8]) -> Result<Option<Vec<u8>>> {
    let tx = store.begin_read().await?;
    tx.get(key, true).await
}

/// First pause between re-reads when no watch can be had; it doubles up to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_millis(5);
/// Longest pause between re-reads when no watch can be had.
const POLL_MAX: Duration = Duration::from_millis(200);

/// Waits until the value of `key` differs from `seen` (`None`: the key was absent) and returns
/// the new value. Returns at once if it already differs.
///
/// A waiter never fails because of its watch: when the store refuses one (FoundationDB's cap
/// on outstanding watches) or a watch breaks, it re-reads the key periodically instead (5 ms,
/// doubling up to 200 ms) and goes back to watching as soon as the store grants one.
pub async fn wait_for_change<S: Store>(
    store: &S,
    key: &[u8],
    seen: Option<&[u8]>,
) -> Result<Option<Vec<u8>>> {
    let mut poll = POLL_MIN;
    loop {
        let sub = match store.subscribe(key).await {
            Ok(sub) => Some(sub),
            Err(e @ (Error::TooManyWatches { .. } | Error::ConnectionLost { .. })) => {
                tracing::debug!(error = %e, "no watch: re-reading the key periodically");
                None
            }
            Err(e) => return Err(e),
        };
        let current = read_key(store, key).await?;
        if current.as_deref() != seen {
            return Ok(current);
        }
        match sub {
            Some(mut sub) => match sub.changed().await {
                Ok(()) => poll = POLL_MIN,
                Err(e) => {
                    tracing::debug!(error = %e, "watch failed: re-reading the key");
                    tokio::time::sleep(poll).await;
                    poll = (poll * 2).min(POLL_MAX);
                }
            },
            None => {
                tokio::time::sleep(poll).await;
                poll = (poll * 2).min(POLL_MAX);
            }
        }
    }
}

/// A watch on one key, FoundationDB style: it remembers the value when it was made and
/// [`Watch::changed`] resolves once the stored value is different.
pub struct Watch<S: Store> {
    store: S,
    key: Vec<u8>,
    seen: Option<Vec<u8>>,
}

impl<S: Store> Watch<S> {
    /// Reads the current value of `key` and starts watching it.
    pub async fn new(store: &S, key: &[u8]) -> Result<Self> {
        let seen = read_key(store, key).await?;
        Ok(Watch {
            store: store.clone(),
            key: key.to_vec(),
            seen,
        })
    }

    /// The value the watch compares against.
    pub fn seen(&self) -> Option<&[u8]> {
        self.seen.as_deref()
    }

    /// Waits until the value differs from [`Watch::seen`]; returns the new value.
    pub async fn changed(self) -> Result<Option<Vec<u8>>> {
        wait_for_change(&self.store, &self.key, self.seen.as_deref()).await
    }
}
