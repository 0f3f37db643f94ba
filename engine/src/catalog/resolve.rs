//! Resolve: answer a call from the cache, or make the caller the one who computes it, or say who
//! does.

use super::entry::{EntryView, Peek, Ready, assemble, is_live, live as is_live_at, read_chunks};
use super::lease::{HeldLease, Lease};
use super::records::{Acquisition, EntryMeta, LeaseRecord, LeaseState, StoredMeta, decode, encode};
use super::{CacheKey, Catalog, duration_ms};
use crate::error::{Error, Result};
use crate::keys::{self, entry_part};
use crate::store::{Store, Transaction, read, transact};
use std::sync::Arc;
use std::time::Duration;

/// One resolve.
#[derive(Debug, Clone)]
pub struct ResolveRequest<'a> {
    /// The key.
    pub key: &'a CacheKey,
    /// Who asks (a node or process name).
    pub owner: &'a str,
    /// The asking execution.
    pub execution: &'a str,
    /// TTL of the lease if acquired.
    pub lease_ttl: Duration,
    /// The task's `max_age`: older entries are misses.
    pub max_age: Option<Duration>,
    /// Ignore any entry: acquire to replace it.
    pub overwrite: bool,
    /// Take over this lease if it is still exactly as seen (same generation and heartbeat): the
    /// caller has watched it unchanged for its TTL on its own clock.
    pub takeover: Option<&'a HeldLease>,
    /// W3C `traceparent` of the asking call's span, kept in the lease record if acquired so
    /// that waiters' spans link to the call that computes the key.
    pub trace: Option<&'a str>,
}

/// A cached output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The output bytes.
    pub output: Vec<u8>,
    /// The entry's metadata.
    pub meta: EntryMeta,
}

/// What resolve found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The output is stored.
    Hit(Hit),
    /// The caller now holds the lease and should compute the output.
    Acquired(Lease),
    /// Someone else holds the lease.
    Held(HeldLease),
}

fn count_takeover(resolved: &Result<Resolution>) {
    if let Ok(Resolution::Acquired(lease)) = resolved
        && lease.took_over
    {
        crate::telemetry::metrics::lease_taken_over();
    }
}

impl<S: Store> Catalog<S> {
    /// Reads the key's entry without writing anything: the hit path. One point read for outputs
    /// stored inline; one more range read of the chunks for larger ones.
    pub async fn lookup(&self, key: &CacheKey, max_age: Option<Duration>) -> Result<Option<Hit>> {
        let d = &key.digest;
        let live = |raw: &[u8]| -> Result<Option<StoredMeta>> {
            let stored: StoredMeta = decode(|| format!("entry metadata of {d}"), raw)?;
            Ok(is_live(&stored.meta, max_age.map(duration_ms), self.now_ms()).then_some(stored))
        };
        let hit = |stored: StoredMeta, chunks: &[Vec<u8>]| -> Result<Option<Hit>> {
            let output = assemble(&stored.meta, stored.inline, chunks)?;
            Ok(Some(Hit {
                output,
                meta: stored.meta,
            }))
        };
        // The store's memo first, where it keeps one; an output in chunks is read below.
        if let Some(recalled) = self.inner.store.memo().and_then(|m| m.get(d)) {
            match live(recalled.value())? {
                None => return Ok(None),
                Some(stored) if stored.inline.is_some() => return hit(stored, &[]),
                Some(_) => {}
            }
        }
        read(
            &self.inner.store,
            &self.inner.config.retry,
            |tx| async move {
                let Some(raw) = tx.get(&keys::entry_part(d, entry_part::META), true).await? else {
                    return Ok(None);
                };
                let Some(stored) = live(&raw)? else {
                    return Ok(None);
                };
                let chunks = if stored.inline.is_some() {
                    Vec::new()
                } else {
                    read_chunks(&tx, d, stored.chunks_of.as_deref(), true).await?
                };
                hit(stored, &chunks)
            },
        )
        .await
    }

    /// `d`'s output from the store's memo ([`Store::memo`]), decoded and checked once per
    /// committed value: `Some(Ok(Some))` if live, `Some(Ok(None))` if expired or older than
    /// `max_age` allows, `Some(Err)` if corrupt; `None` if the store keeps no memo, or has
    /// nothing for `d` in it, or the output is in chunks (read the store: the memo remembers
    /// that, so such an entry is decoded once here, not at every hit).
    fn recall_output(
        &self,
        d: &crate::digest::Digest,
        max_age: Option<Duration>,
    ) -> Option<Result<Option<Arc<[u8]>>>> {
        let recalled = self.inner.store.memo()?.get(d)?;
        let now = self.now_ms();
        match recalled.decoded(|raw| Ready::decode(d, raw)) {
            Some(Ready::Inline {
                created_at_ms,
                expires_at_ms,
                output,
            }) => Some(Ok(is_live_at(
                *created_at_ms,
                *expires_at_ms,
                max_age.map(duration_ms),
                now,
            )
            .then(|| output.clone()))),
            Some(Ready::Chunked) => None,
            // Corrupt: the error a read of it meets.
            None => super::gather::settle(d, max_age, recalled.value(), now)
                .map(|answer| answer.map(|found| found.map(Arc::from))),
        }
    }

    /// Resolves a call: [`Resolution::Hit`] with the stored output, [`Resolution::Acquired`] with
    /// a lease to compute it, or [`Resolution::Held`] when another execution holds the lease.
    /// One read when the entry exists; one transaction otherwise.
    pub async fn resolve(&self, req: &ResolveRequest<'_>) -> Result<Resolution> {
        if !req.overwrite {
            match self.lookup(req.key, req.max_age).await {
                Ok(Some(hit)) => return Ok(Resolution::Hit(hit)),
                // A corrupt entry is never a hit: the read-write path replaces it.
                Ok(None) | Err(Error::Corrupt { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // Boxed: the read-write path's state stays off the hit path's future.
        Box::pin(self.acquire(req)).await
    }

    /// The output stored for `key`, if live: [`Catalog::lookup`] without the metadata, decoding
    /// only what the check needs. The scheduler's hit path.
    pub async fn lookup_output(
        &self,
        key: &CacheKey,
        max_age: Option<Duration>,
    ) -> Result<Option<Vec<u8>>> {
        let found = self.lookup_output_among(key, max_age, false).await?;
        Ok(found.map(|output| output.to_vec()))
    }

    /// [`Catalog::lookup_output`] for a call made while others are in flight (`crowd`): its
    /// read is then gathered with theirs into one multi-key read on every backend, on another
    /// task, so a fan-out's reads cost one transaction per batch and leave the caller's thread
    /// to its calls. A lone call reads the key itself (on the embedded store a point read costs
    /// about a microsecond, less than the hop), except where the store always gathers
    /// ([`Store::gathers_reads`]: a read is a round trip to a server).
    pub async fn lookup_output_among(
        &self,
        key: &CacheKey,
        max_age: Option<Duration>,
        crowd: bool,
    ) -> Result<Option<Arc<[u8]>>> {
        // The store's memo, where it keeps one: no transaction, no hop, no decoding.
        if let Some(answer) = self.recall_output(&key.digest, max_age) {
            return answer;
        }
        if (crowd || self.inner.store.gathers_reads())
            && let Some(answer) = self.lookup_gathered(key.digest, max_age).await
        {
            return answer.map(|found| found.map(Arc::from));
        }
        let d = &key.digest;
        let found = read(
            &self.inner.store,
            &self.inner.config.retry,
            |tx| async move {
                let Some(raw) = tx.get(&keys::entry_part(d, entry_part::META), true).await? else {
                    return Ok(None);
                };
                let Some(peek) = Peek::live(d, &raw, max_age.map(duration_ms), self.now_ms())?
                else {
                    return Ok(None);
                };
                let chunks = match peek.inline {
                    Some(_) => Vec::new(),
                    None => read_chunks(&tx, d, peek.chunks_of, true).await?,
                };
                assemble(&peek.meta, peek.inline.map(|b| b.to_vec()), &chunks).map(Some)
            },
        )
        .await?;
        Ok(found.map(Arc::from))
    }

    /// The read-write half of [`Catalog::resolve`]: in one transaction, returns the entry if one
    /// is live (committed since any lookup), or acquires the lease, or reports its holder.
    /// Callers that already looked the key up call this directly.
    pub async fn acquire(&self, req: &ResolveRequest<'_>) -> Result<Resolution> {
        let resolved = self.acquire_alone(req).await;
        count_takeover(&resolved);
        resolved
    }

    /// [`Catalog::acquire`]'s transaction (takeovers not counted yet).
    async fn acquire_alone(&self, req: &ResolveRequest<'_>) -> Result<Resolution> {
        transact(
            &self.inner.store,
            &self.inner.config.retry,
            |tx| async move { self.acquire_in(&tx, req).await },
        )
        .await
    }

    /// [`Catalog::acquire`] for many keys in one transaction: what a scheduler does with every
    /// miss pending at one moment, so a fan-out pays one commit per batch, not one per call.
    /// Each key keeps its own semantics and its own result (an error about one key does not
    /// fail the others). A batch that conflicts is split in halves, each tried again, down to
    /// single keys retried as [`Catalog::acquire`] does: a conflict on one key never fails
    /// the others.
    pub async fn acquire_many(&self, reqs: &[ResolveRequest<'_>]) -> Vec<Result<Resolution>> {
        let results = super::batch::each_in_batches(
            &self.inner.store,
            &self.inner.config.retry,
            reqs,
            |req| EntryView::keys(&req.key.digest).into(),
            |tx, req| async move { self.acquire_in(&tx, req).await },
            |req| self.acquire_alone(req),
        )
        .await;
        for r in &results {
            count_takeover(r);
        }
        results
    }

    /// The read-write half of a resolve, in `tx`: returns the entry if one is live, or
    /// acquires the lease (its write comes last), or reports its holder.
    async fn acquire_in<T: Transaction>(
        &self,
        tx: &T,
        req: &ResolveRequest<'_>,
    ) -> Result<Resolution> {
        let tx = tx.clone();
        let d = req.key.digest;
        let lease_key = &keys::entry_part(&d, entry_part::LEASE);
        let max_age_ms = req.max_age.map(duration_ms);
        let mut view = EntryView::load(&tx, &d, false).await?;
        let now = self.now_ms();
        if !req.overwrite
            && let Some(meta) = view.live_meta(max_age_ms, now)
        {
            match view.output(&tx, meta).await {
                Ok(output) => {
                    return Ok(Resolution::Hit(Hit {
                        output,
                        meta: meta.clone(),
                    }));
                }
                // A torn or corrupted output is never a hit: the key is computed again.
                Err(Error::Corrupt { what, detail }) => {
                    view.corrupt = Some(format!("{what}: {detail}"));
                }
                Err(e) => return Err(e),
            }
        }
        let mut generation = 1;
        let mut previous_failure = None;
        let mut took_over = false;
        if let Some((record, raw)) = &view.lease {
            generation = record.generation + 1;
            match &record.state {
                LeaseState::Held
                    if record.execution == req.execution && record.owner == req.owner =>
                {
                    // Ours already: a retry after an unknown commit result.
                    return Ok(Resolution::Acquired(self.lease_from(
                        req,
                        record,
                        &view,
                        record.acquired.previous_failure.clone(),
                        record.acquired.took_over,
                    )));
                }
                LeaseState::Held => {
                    // Silent for a whole TTL on the caller's clock, or held by a node
                    // incarnation that restarted or stopped.
                    let expired = req.takeover.is_some_and(|seen| {
                        seen.generation == record.generation && seen.beat == record.beat
                    }) || self
                        .inner
                        .liveness
                        .lease_holder_gone(&record.owner, record.incarnation);
                    if !expired {
                        return Ok(Resolution::Held(HeldLease::from_record(
                            d,
                            record,
                            raw.clone(),
                        )));
                    }
                    took_over = true;
                }
                LeaseState::Failed { error, .. } => previous_failure = Some(error.clone()),
                LeaseState::Released => {}
            }
        }
        let record = LeaseRecord {
            owner: req.owner.to_string(),
            incarnation: self.inner.liveness.incarnation_of(req.owner),
            execution: req.execution.to_string(),
            generation,
            beat: 0,
            ttl_ms: duration_ms(req.lease_ttl),
            acquired_at_ms: now,
            overwrite: req.overwrite,
            state: LeaseState::Held,
            trace: req.trace.map(str::to_string),
            acquired: Acquisition {
                took_over,
                previous_failure: previous_failure.clone(),
            },
        };
        tx.set(lease_key, &encode(&record));
        if took_over || previous_failure.is_some() {
            // The previous holder may have died (or failed) staging a large output:
            // what it staged goes; the stored entry's own staged chunks stay.
            super::commit::clear_staged_except(&tx, &d, view.chunks_of.as_deref());
        }
        Ok(Resolution::Acquired(self.lease_from(
            req,
            &record,
            &view,
            previous_failure,
            took_over,
        )))
    }

    fn lease_from(
        &self,
        req: &ResolveRequest<'_>,
        record: &LeaseRecord,
        view: &EntryView,
        previous_failure: Option<String>,
        took_over: bool,
    ) -> Lease {
        Lease {
            digest: req.key.digest,
            owner: record.owner.clone(),
            incarnation: record.incarnation,
            execution: record.execution.clone(),
            generation: record.generation,
            ttl: Duration::from_millis(record.ttl_ms),
            overwrite: record.overwrite,
            evicted: view.tombstone.is_some(),
            previous_failure,
            took_over,
            replaces_corrupt: view.corrupt.clone(),
        }
    }
}
