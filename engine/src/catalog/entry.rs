//! Reading everything about one key: its lease, tombstone and metadata in one multi-key read,
//! and its output chunks only when they are needed.

use super::records::{EntryMeta, LeaseRecord, LeaseState, StoredMeta, Tombstone, decode};
use super::{Digest, Lease};
use crate::error::{Error, Result};
use crate::keys::{self, entry_part};
use crate::store::{RangeOptions, Transaction};

/// The records under `(ENTRY, d)`. A record that does not decode is contained here: a corrupt
/// lease or tombstone reads as absent (the next lease overwrites it), and corrupt metadata
/// reads as no entry with `corrupt` saying why, so the key is computed again and replaced
/// instead of failing every call.
pub(super) struct EntryView {
    pub digest: Digest,
    pub lease: Option<(LeaseRecord, Vec<u8>)>,
    pub tombstone: Option<Tombstone>,
    /// A tombstone row is stored (`tombstone` is `None` when it does not decode): a commit
    /// clears it only then, so a cold commit writes no deletion for a key never evicted.
    pub tombstone_row: bool,
    pub meta: Option<EntryMeta>,
    pub inline: Option<Vec<u8>>,
    /// The execution whose staged chunks hold the output, if it was staged.
    pub chunks_of: Option<String>,
    /// The blobs the stored output refers to.
    pub blobs: Vec<crate::blobs::BlobDigest>,
    /// Metadata is stored but does not decode: what is wrong with it.
    pub corrupt: Option<String>,
}

impl EntryView {
    /// The keys [`EntryView::load`] reads.
    pub(super) fn keys(d: &Digest) -> [Vec<u8>; 3] {
        [
            keys::entry_part(d, entry_part::LEASE),
            keys::entry_part(d, entry_part::TOMBSTONE),
            keys::entry_part(d, entry_part::META),
        ]
    }

    /// Reads the lease, tombstone and metadata of `d` (point reads, so conflicts are tracked
    /// per key; the metadata is written with every change of the output, so a concurrent commit
    /// always conflicts through it).
    pub(super) async fn load<T: Transaction>(
        tx: &T,
        d: &Digest,
        snapshot: bool,
    ) -> Result<EntryView> {
        let keys = Self::keys(d);
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let mut values = tx.get_many(&refs, snapshot).await?.into_iter();
        let (lease, tomb, meta) = (
            values.next().flatten(),
            values.next().flatten(),
            values.next().flatten(),
        );
        let mut view = EntryView {
            digest: *d,
            lease: None,
            tombstone: None,
            tombstone_row: tomb.is_some(),
            meta: None,
            inline: None,
            chunks_of: None,
            blobs: Vec::new(),
            corrupt: None,
        };
        if let Some(raw) = lease {
            match decode(|| format!("lease record of {d}"), &raw) {
                Ok(record) => view.lease = Some((record, raw)),
                Err(e) => tracing::warn!(error = %e, "a corrupt lease record reads as none"),
            }
        }
        if let Some(raw) = tomb {
            view.tombstone = decode(|| format!("tombstone of {d}"), &raw).ok();
        }
        if let Some(raw) = meta {
            match decode::<StoredMeta>(|| format!("entry metadata of {d}"), &raw) {
                Ok(stored) => {
                    view.meta = Some(stored.meta);
                    view.inline = stored.inline;
                    view.chunks_of = stored.chunks_of;
                    view.blobs = stored.blobs;
                }
                Err(e) => view.corrupt = Some(e.to_string()),
            }
        }
        Ok(view)
    }

    /// The metadata, if the entry exists and has not outlived `max_age_ms` at `now_ms`.
    pub(super) fn live_meta(&self, max_age_ms: Option<u64>, now_ms: i64) -> Option<&EntryMeta> {
        self.meta
            .as_ref()
            .filter(|m| is_live(m, max_age_ms, now_ms))
    }

    /// Whether `lease` is the current holder of this key.
    pub(super) fn held_by(&self, lease: &Lease) -> bool {
        matches!(&self.lease, Some((l, _))
            if l.generation == lease.generation
                && l.execution == lease.execution
                && l.state == LeaseState::Held)
    }

    /// The output, read (from its chunks if it is not inline) and checked against the
    /// metadata's size, chunk count and checksum.
    pub(super) async fn output<T: Transaction>(&self, tx: &T, meta: &EntryMeta) -> Result<Vec<u8>> {
        let chunks = if self.inline.is_some() {
            Vec::new()
        } else {
            read_chunks(tx, &self.digest, self.chunks_of.as_deref(), false).await?
        };
        assemble(meta, self.inline.clone(), &chunks)
    }
}

/// The output chunks of `d`, in order: its own, or those `chunks_of` staged (a `snapshot`
/// read adds no conflict).
pub(super) async fn read_chunks<T: Transaction>(
    tx: &T,
    d: &Digest,
    chunks_of: Option<&str>,
    snapshot: bool,
) -> Result<Vec<Vec<u8>>> {
    let (begin, end) = match chunks_of {
        Some(execution) => keys::staged_chunks(d, execution),
        None => keys::entry_chunks(d),
    };
    let options = if snapshot {
        RangeOptions::all().snapshot()
    } else {
        RangeOptions::all()
    };
    let pairs = tx.get_range(&begin, &end, options).await?;
    Ok(pairs.into_iter().map(|kv| kv.value).collect())
}

/// What an output is checked against.
pub(super) struct Integrity {
    pub digest: super::Digest,
    pub size: u64,
    pub chunks: u32,
    pub checksum: u64,
}

impl From<&EntryMeta> for Integrity {
    fn from(m: &EntryMeta) -> Self {
        Integrity {
            digest: m.key.digest,
            size: m.size,
            chunks: m.chunks,
            checksum: m.checksum,
        }
    }
}

/// Puts an output together from its inline bytes or its chunks and checks it against its
/// metadata (size, chunk count, checksum): a torn or corrupted entry is an error, never a hit.
pub(super) fn assemble(
    meta: impl Into<Integrity>,
    inline: Option<Vec<u8>>,
    chunks: &[Vec<u8>],
) -> Result<Vec<u8>> {
    let meta = meta.into();
    let corrupt = |detail: String| Error::Corrupt {
        what: format!("output of {}", meta.digest),
        detail,
    };
    let out = match inline {
        Some(bytes) => bytes,
        None => {
            if chunks.len() != meta.chunks as usize {
                return Err(corrupt(format!(
                    "{} chunks stored, metadata says {}",
                    chunks.len(),
                    meta.chunks
                )));
            }
            chunks.concat()
        }
    };
    if out.len() as u64 != meta.size {
        return Err(corrupt(format!(
            "{} bytes stored, metadata says {}",
            out.len(),
            meta.size
        )));
    }
    if xxhash_rust::xxh3::xxh3_64(&out) != meta.checksum {
        return Err(corrupt("checksum mismatch".into()));
    }
    Ok(out)
}

/// An entry is live until the expiry it was stored with, and until the task's current
/// `max_age` has passed since it was created (so shortening `max_age` takes effect at once).
pub(super) fn is_live(meta: &EntryMeta, max_age_ms: Option<u64>, now_ms: i64) -> bool {
    live(meta.created_at_ms, meta.expires_at_ms, max_age_ms, now_ms)
}

pub(super) fn live(
    created_at_ms: i64,
    expires_at_ms: Option<i64>,
    max_age_ms: Option<u64>,
    now_ms: i64,
) -> bool {
    let stored = expires_at_ms.is_none_or(|t| t > now_ms);
    let current = max_age_ms.is_none_or(|age| {
        created_at_ms.saturating_add(i64::try_from(age).unwrap_or(i64::MAX)) > now_ms
    });
    stored && current
}

/// The fields of a stored entry that the hit path needs, decoded without copying: other fields
/// are skipped, the inline output is borrowed.
#[derive(serde::Deserialize)]
pub(super) struct Peek<'a> {
    pub meta: PeekMeta,
    #[serde(borrow, default)]
    pub inline: Option<&'a serde_bytes::Bytes>,
    #[serde(borrow, default)]
    pub chunks_of: Option<&'a str>,
}

#[derive(serde::Deserialize)]
pub(super) struct PeekMeta {
    pub key: PeekKey,
    pub created_at_ms: i64,
    pub size: u64,
    pub chunks: u32,
    pub checksum: u64,
    pub expires_at_ms: Option<i64>,
}

#[derive(serde::Deserialize)]
pub(super) struct PeekKey {
    pub digest: super::Digest,
}

impl<'a> Peek<'a> {
    /// The hit path's reading of `d`'s stored metadata `raw`: decoded without copying, and
    /// `None` when the entry is expired or older than `max_age` allows.
    pub(super) fn live(
        d: &Digest,
        raw: &'a [u8],
        max_age_ms: Option<u64>,
        now_ms: i64,
    ) -> Result<Option<Peek<'a>>> {
        let peek: Peek<'a> =
            super::records::decode_borrowed(|| format!("entry metadata of {d}"), raw)?;
        let m = &peek.meta;
        Ok(live(m.created_at_ms, m.expires_at_ms, max_age_ms, now_ms).then_some(peek))
    }
}

/// An entry as the store's memo keeps it decoded ([`crate::store::memo::Recalled::decoded`]):
/// checked once, then answered to every later hit with no decoding and no copy.
#[derive(Debug, PartialEq)]
pub(super) enum Ready {
    /// The output is inline and matches its metadata (live or not: judged at each hit).
    Inline {
        created_at_ms: i64,
        expires_at_ms: Option<i64>,
        output: std::sync::Arc<[u8]>,
    },
    /// The output is in chunks: a hit reads the store.
    Chunked,
}

impl Ready {
    /// What [`Ready::decode`] makes of the metadata a commit stored as `meta` with `output`:
    /// built from them, with nothing to decode or check.
    pub(super) fn stored(meta: &super::records::EntryMeta, output: &[u8]) -> Ready {
        // An output is inline exactly when it has no chunks (an inline output of 0 bytes
        // included; one in chunks has at least one).
        if meta.chunks == 0 {
            Ready::Inline {
                created_at_ms: meta.created_at_ms,
                expires_at_ms: meta.expires_at_ms,
                output: output.into(),
            }
        } else {
            Ready::Chunked
        }
    }

    /// `d`'s stored metadata `raw` decoded and its inline output checked; `None` if it does
    /// not decode or fails its check (a read meets the error).
    pub(super) fn decode(d: &Digest, raw: &[u8]) -> Option<Ready> {
        let peek: Peek<'_> =
            super::records::decode_borrowed(|| format!("entry metadata of {d}"), raw).ok()?;
        let Some(inline) = peek.inline else {
            return Some(Ready::Chunked);
        };
        let output = assemble(&peek.meta, Some(inline.to_vec()), &[]).ok()?;
        Some(Ready::Inline {
            created_at_ms: peek.meta.created_at_ms,
            expires_at_ms: peek.meta.expires_at_ms,
            output: output.into(),
        })
    }
}

impl From<&PeekMeta> for Integrity {
    fn from(m: &PeekMeta) -> Self {
        Integrity {
            digest: m.key.digest,
            size: m.size,
            chunks: m.chunks,
            checksum: m.checksum,
        }
    }
}
