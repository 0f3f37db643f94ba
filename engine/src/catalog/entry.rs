//! Reading everything about one key from one range read.

use super::records::{EntryMeta, LeaseRecord, LeaseState, StoredMeta, Tombstone, decode};
use super::{Digest, Lease};
use crate::error::{Error, Result};
use crate::keys::{self, entry_part};
use crate::store::KeyValue;

/// The records under `(ENTRY, d)`.
pub(super) struct EntryView {
    pub lease: Option<(LeaseRecord, Vec<u8>)>,
    pub tombstone: Option<Tombstone>,
    pub meta: Option<EntryMeta>,
    pub inline: Option<Vec<u8>>,
    pub chunks: Vec<Vec<u8>>,
}

/// The key suffix of each part under `(ENTRY, d)`, packed once.
struct Suffixes {
    lease: Vec<u8>,
    tombstone: Vec<u8>,
    meta: Vec<u8>,
}

static SUFFIXES: std::sync::LazyLock<Suffixes> = std::sync::LazyLock::new(|| {
    let pack = |part: i64| foundationdb_tuple::pack(&(part,));
    Suffixes {
        lease: pack(entry_part::LEASE),
        tombstone: pack(entry_part::TOMBSTONE),
        meta: pack(entry_part::META),
    }
});

impl EntryView {
    /// Sorts the pairs of one `(ENTRY, d)` range read into their records.
    pub fn parse(d: &Digest, pairs: Vec<KeyValue>) -> Result<EntryView> {
        let prefix_len = keys::entry_range(d).0.len() - 1;
        let suffixes = &*SUFFIXES;
        let mut view = EntryView {
            lease: None,
            tombstone: None,
            meta: None,
            inline: None,
            chunks: Vec::new(),
        };
        for kv in pairs {
            let suffix = kv.key.get(prefix_len..).unwrap_or_default();
            if suffix == suffixes.lease.as_slice() {
                let record = decode(|| format!("lease record of {d}"), &kv.value)?;
                view.lease = Some((record, kv.value));
            } else if suffix == suffixes.tombstone.as_slice() {
                view.tombstone = Some(decode(|| format!("tombstone of {d}"), &kv.value)?);
            } else if suffix == suffixes.meta.as_slice() {
                let stored: StoredMeta = decode(|| format!("entry metadata of {d}"), &kv.value)?;
                view.meta = Some(stored.meta);
                view.inline = stored.inline;
            } else {
                // Chunks come in key order, which is chunk order.
                view.chunks.push(kv.value);
            }
        }
        Ok(view)
    }

    /// The metadata, if the entry exists and has not outlived `max_age_ms` at `now_ms`.
    pub fn live_meta(&self, max_age_ms: Option<u64>, now_ms: i64) -> Option<&EntryMeta> {
        self.meta
            .as_ref()
            .filter(|m| is_live(m, max_age_ms, now_ms))
    }

    /// Whether `lease` is the current holder of this key.
    pub fn held_by(&self, lease: &Lease) -> bool {
        matches!(&self.lease, Some((l, _))
            if l.generation == lease.generation
                && l.execution == lease.execution
                && l.state == LeaseState::Held)
    }

    /// The output, checked against the metadata's size, chunk count and checksum.
    pub fn output(&self, meta: &EntryMeta) -> Result<Vec<u8>> {
        assemble(meta, self.inline.clone(), &self.chunks)
    }
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
            digest: m.digest,
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
}

#[derive(serde::Deserialize)]
pub(super) struct PeekMeta {
    pub digest: super::Digest,
    pub created_at_ms: i64,
    pub size: u64,
    pub chunks: u32,
    pub checksum: u64,
    pub expires_at_ms: Option<i64>,
}

impl From<&PeekMeta> for Integrity {
    fn from(m: &PeekMeta) -> Self {
        Integrity {
            digest: m.digest,
            size: m.size,
            chunks: m.chunks,
            checksum: m.checksum,
        }
    }
}
