//! Node identity and liveness: who owns leases and runs, and whether that owner is gone.
//!
//! A node has a stable *name* (configured, or derived from something stable such as its store
//! directory). Every start bumps the node's *incarnation* in `(NODE, name)`, so leases and runs
//! taken by an earlier process of the same node are recognisably stale: the new process takes
//! them over at once, without waiting for a TTL.
//!
//! Liveness is judged like leases: each incarnation bumps a heartbeat counter every third of
//! its TTL, and an observer declares it dead only after seeing the same (incarnation, beat) for
//! the whole TTL on its *own* monotonic clock. Wall clocks of different machines are never
//! compared. An observer that could not read the store forgets what it saw, so a store outage
//! never makes a live node look dead.
//!
//! [`Liveness`] is this process's view; the catalog consults it before waiting on a lease, and
//! the run keeper before taking a run over.

use crate::catalog::records::{decode, encode};
use crate::clock::Clock;
use crate::det::Map;
use crate::error::Result;
use crate::keys;
use crate::store::{RangeOptions, RetryPolicy, Store, Transaction, transact};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One process of a node: the node's name and which of its starts it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Incarnation {
    /// The node's stable name.
    pub node: String,
    /// Bumped by every start of the node (1 for the first).
    pub incarnation: u64,
}

impl std::fmt::Display for Incarnation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.node, self.incarnation)
    }
}

/// What `(NODE, name)` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's name.
    pub name: String,
    /// Its current incarnation.
    pub incarnation: u64,
    /// Heartbeat counter of that incarnation.
    pub beat: u64,
    /// Observers declare the incarnation dead after seeing `beat` unchanged this long (ms).
    pub ttl_ms: u64,
    /// When the incarnation started (Unix ms, informational).
    pub started_at_ms: i64,
    /// When it last beat (Unix ms, informational: never compared across machines).
    pub beat_at_ms: i64,
    /// The incarnation stopped cleanly: its runs and leases are free at once.
    #[serde(default)]
    pub stopped: bool,
    /// Random, chosen by the process that started the incarnation (recognises its own write
    /// after an unknown commit result).
    #[serde(default)]
    pub token: u64,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// This incarnation is still the node's current one.
    Current,
    /// Another process started as the same node since: this one must stop owning anything.
    Superseded {
        /// The newer incarnation.
        by: u64,
    },
}

/// The node table of one store.
pub struct Nodes<S: Store> {
    store: S,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
}

impl<S: Store> Clone for Nodes<S> {
    fn clone(&self) -> Self {
        Nodes {
            store: self.store.clone(),
            clock: self.clock.clone(),
            retry: self.retry.clone(),
        }
    }
}

async fn read<T: Transaction>(tx: &T, name: &str) -> Result<Option<NodeRecord>> {
    match tx.get(&keys::node(name), false).await? {
        Some(raw) => Ok(Some(decode(|| format!("node record {name:?}"), &raw)?)),
        None => Ok(None),
    }
}

impl<S: Store> Nodes<S> {
    /// The node table in `store`.
    pub fn new(store: S, clock: Arc<dyn Clock>) -> Self {
        Nodes {
            store,
            clock,
            retry: RetryPolicy::default(),
        }
    }

    /// Draws node tokens and retry jitter from `entropy`.
    pub fn with_entropy(mut self, entropy: crate::entropy::Entropy) -> Self {
        self.retry.entropy = entropy;
        self
    }

    /// Starts a new incarnation of node `name` (its previous one, if any, is superseded).
    /// Idempotent under an unknown commit result: a retry that finds its own start returns it.
    pub async fn start(&self, name: &str, ttl: Duration) -> Result<Incarnation> {
        let started_at_ms = self.clock.now_ms();
        let token = self.retry.entropy.next_u64();
        let incarnation = transact(&self.store, &self.retry, |tx| async move {
            let old = read(&tx, name).await?;
            if let Some(old) = &old
                && old.token == token
            {
                return Ok(old.incarnation);
            }
            let incarnation = old.map_or(1, |o| o.incarnation + 1);
            let record = NodeRecord {
                name: name.to_string(),
                incarnation,
                beat: 0,
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
                started_at_ms,
                beat_at_ms: started_at_ms,
                stopped: false,
                token,
            };
            tx.set(&keys::node(name), &encode(&record));
            Ok(incarnation)
        })
        .await?;
        Ok(Incarnation {
            node: name.to_string(),
            incarnation,
        })
    }

    /// Bumps `me`'s heartbeat, unless another process has started as the same node since.
    pub async fn heartbeat(&self, me: &Incarnation) -> Result<Heartbeat> {
        let now = self.clock.now_ms();
        transact(&self.store, &self.retry.clone().urgent(), |tx| async move {
            let Some(mut record) = read(&tx, &me.node).await? else {
                // Removed by hand: start over as the same incarnation.
                return Ok(Heartbeat::Superseded { by: 0 });
            };
            if record.incarnation != me.incarnation {
                return Ok(Heartbeat::Superseded {
                    by: record.incarnation,
                });
            }
            record.beat += 1;
            record.beat_at_ms = now;
            tx.set(&keys::node(&me.node), &encode(&record));
            Ok(Heartbeat::Current)
        })
        .await
    }

    /// Marks `me` stopped (a clean shutdown): other nodes take its runs over at once.
    pub async fn stop(&self, me: &Incarnation) -> Result<()> {
        transact(&self.store, &self.retry, |tx| async move {
            if let Some(mut record) = read(&tx, &me.node).await?
                && record.incarnation == me.incarnation
            {
                record.stopped = true;
                tx.set(&keys::node(&me.node), &encode(&record));
            }
            Ok(())
        })
        .await
    }

    /// Every node record; one that does not decode is skipped with a warning.
    pub async fn list(&self) -> Result<Vec<NodeRecord>> {
        let (begin, end) = keys::nodes();
        let tx = self.store.begin_read().await?;
        let rows = tx
            .get_range(&begin, &end, RangeOptions::all().snapshot())
            .await?;
        Ok(rows
            .iter()
            .filter_map(|kv| match decode(|| "a node record".into(), &kv.value) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a node record");
                    None
                }
            })
            .collect())
    }
}

/// How this process last saw one node.
#[derive(Debug, Clone)]
struct Observed {
    incarnation: u64,
    beat: u64,
    stopped: bool,
    ttl: Duration,
    since: Instant,
}

#[derive(Debug, Default)]
struct View {
    me: Option<Incarnation>,
    nodes: Map<String, Observed>,
}

/// Why an owner counts as gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// A newer incarnation of the same node started.
    Superseded {
        /// The newer incarnation.
        by: u64,
    },
    /// The incarnation stopped cleanly.
    Stopped,
    /// No heartbeat was seen for its whole TTL.
    Silent {
        /// How long it was silent, on this process's clock.
        for_ms: u64,
    },
}

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gone::Superseded { by } => write!(f, "its node restarted (incarnation {by})"),
            Gone::Stopped => f.write_str("its node stopped"),
            Gone::Silent { for_ms } => write!(f, "its node sent no heartbeat for {for_ms} ms"),
        }
    }
}

/// This process's view of which node incarnations are gone. Cheap to clone; clones share it.
/// Without an identity ([`Liveness::default`]) nothing is ever gone.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    view: Arc<RwLock<View>>,
}

impl Liveness {
    /// Sets this process's own incarnation: its node's earlier incarnations are gone from now.
    pub fn set_me(&self, me: Incarnation) {
        self.view.write().me = Some(me);
    }

    /// This process's incarnation, if it has one.
    pub fn me(&self) -> Option<Incarnation> {
        self.view.read().me.clone()
    }

    /// The incarnation this process writes into leases it takes as `owner`: its own when
    /// `owner` is its node, else 0 (unknown: never judged gone).
    pub fn incarnation_of(&self, owner: &str) -> u64 {
        match &self.view.read().me {
            Some(me) if me.node == owner => me.incarnation,
            _ => 0,
        }
    }

    /// Takes in a fresh read of every node record, at `now` on this process's clock.
    pub fn observe(&self, records: &[NodeRecord], now: Instant) {
        let mut view = self.view.write();
        for r in records {
            let ttl = Duration::from_millis(r.ttl_ms);
            match view.nodes.get_mut(&r.name) {
                Some(o) if o.incarnation == r.incarnation && o.beat == r.beat => {
                    o.stopped = r.stopped;
                    o.ttl = ttl;
                }
                _ => {
                    view.nodes.insert(
                        r.name.clone(),
                        Observed {
                            incarnation: r.incarnation,
                            beat: r.beat,
                            stopped: r.stopped,
                            ttl,
                            since: now,
                        },
                    );
                }
            }
        }
    }

    /// Forgets every observation (the store could not be read): silence is timed again from
    /// the next successful read, so an outage never makes a live node look dead.
    pub fn forget(&self) {
        self.view.write().nodes.clear();
    }

    /// Whether `node`'s `incarnation` is gone, and why. Incarnation 0 (unknown) never is.
    pub fn gone(&self, node: &str, incarnation: u64) -> Option<Gone> {
        if incarnation == 0 {
            return None;
        }
        let view = self.view.read();
        if let Some(me) = &view.me
            && me.node == node
        {
            return (incarnation < me.incarnation)
                .then_some(Gone::Superseded { by: me.incarnation });
        }
        let o = view.nodes.get(node)?;
        if o.incarnation > incarnation {
            return Some(Gone::Superseded { by: o.incarnation });
        }
        if o.incarnation < incarnation {
            return None;
        }
        if o.stopped {
            return Some(Gone::Stopped);
        }
        let silent = o.since.elapsed();
        (silent >= o.ttl).then(|| Gone::Silent {
            for_ms: u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Whether `node`'s `incarnation` is gone.
    pub fn is_gone(&self, node: &str, incarnation: u64) -> bool {
        self.gone(node, incarnation).is_some()
    }

    /// Whether a lease held by `node`'s `incarnation` may be taken over at once: only when the
    /// incarnation was superseded (its node restarted) or stopped. A merely silent node's
    /// leases are not: the job may be running on another node's worker, which keeps the
    /// lease's own heartbeat going, so silence is judged on the lease itself.
    pub fn lease_holder_gone(&self, node: &str, incarnation: u64) -> bool {
        matches!(
            self.gone(node, incarnation),
            Some(Gone::Superseded { .. } | Gone::Stopped)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, incarnation: u64, beat: u64) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            incarnation,
            beat,
            ttl_ms: 1_000,
            started_at_ms: 0,
            beat_at_ms: 0,
            stopped: false,
            token: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silence_for_a_whole_ttl_on_the_observers_clock_is_death() {
        let l = Liveness::default();
        l.set_me(Incarnation {
            node: "me".into(),
            incarnation: 3,
        });
        assert!(l.is_gone("me", 2), "my earlier incarnations are gone");
        assert!(!l.is_gone("me", 3));
        assert!(!l.is_gone("other", 1), "never seen: not gone");
        l.observe(&[record("other", 1, 5)], Instant::now());
        tokio::time::advance(Duration::from_millis(900)).await;
        l.observe(&[record("other", 1, 5)], Instant::now());
        assert!(!l.is_gone("other", 1));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(matches!(l.gone("other", 1), Some(Gone::Silent { .. })));
        // A beat revives it; a newer incarnation supersedes the old one.
        l.observe(&[record("other", 1, 6)], Instant::now());
        assert!(!l.is_gone("other", 1));
        l.observe(&[record("other", 2, 0)], Instant::now());
        assert_eq!(l.gone("other", 1), Some(Gone::Superseded { by: 2 }));
        assert!(!l.is_gone("other", 2));
        assert!(
            !l.is_gone("other", 0),
            "unknown incarnations are never gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_restarts_the_clock() {
        let l = Liveness::default();
        l.observe(&[record("other", 1, 5)], Instant::now());
        tokio::time::advance(Duration::from_secs(30)).await;
        l.forget();
        l.observe(&[record("other", 1, 5)], Instant::now());
        assert!(!l.is_gone("other", 1), "unseen time is not silence");
        let mut stopped = record("other", 1, 5);
        stopped.stopped = true;
        l.observe(&[stopped], Instant::now());
        assert_eq!(l.gone("other", 1), Some(Gone::Stopped));
    }
}
