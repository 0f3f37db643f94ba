//! Content-addressed blobs: bytes stored once under their BLAKE3 digest, in chunks that fit the
//! store's value limit, uploaded in as many transactions as their size needs.
//!
//! Command tasks keep their input and output files here, so a step that runs on another node
//! gets its files from the store and a cluster needs no shared filesystem; identical files of
//! different keys are stored once.
//!
//! Why BLAKE3 and not the xxh3 of cache keys: a cache key hashes a small canonical encoding that
//! Cairn builds itself, where an accidental collision is what matters and xxh3-128 is enough. A
//! blob digest names bytes that anyone able to write a file chooses; in a shared store a
//! collision someone constructs would serve their bytes as another user's output. BLAKE3 is
//! collision resistant (one of Bazel's digest functions) and still hashes at GB/s.
//!
//! A blob becomes visible when its completion record is written, by the last transaction of its
//! upload, after every chunk: a reader never sees half a blob. Uploads of the same blob race
//! harmlessly (they write the same bytes). Every read is checked against the digest, so a blob
//! damaged in the store is an error that names it, never wrong bytes.
//!
//! **References.** An entry whose output names blobs ([`crate::task::Task::blobs`]) refers to
//! them: its commit writes one `(BLOB_REF, b, entry)` row per blob, after checking in the same
//! transaction that each blob is stored, and whatever removes the entry (eviction, expiry,
//! an overwrite, a run's journal collection) clears its rows and deletes each blob that no row
//! refers to any more, in that transaction. Rows rather than a counter: two commits referring
//! to one blob write different keys and do not conflict, and a retried commit cannot count
//! twice. A blob nothing ever came to refer to (the output of a failed run, a workspace file
//! uploaded for another node) is deleted by the orphan collector
//! (`Catalog::collect_orphan_blobs`) once its grace period has passed.

use crate::clock::Clock;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{RangeOptions, RetryPolicy, Store, Transaction, read, transact};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes per chunk: under FoundationDB's 100 kB value limit.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks per upload or read transaction (4 MiB, well under the 10 MB transaction limit).
const CHUNKS_PER_TX: usize = 64;

/// The BLAKE3 digest of a blob, written as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobDigest(pub [u8; 32]);

impl BlobDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> BlobDigest {
        BlobDigest(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobDigest({self})")
    }
}

impl FromStr for BlobDigest {
    type Err = Error;

    fn from_str(s: &str) -> Result<BlobDigest> {
        let bad = || Error::InvalidInput {
            what: format!("blob digest {s:?}"),
            reason: "expected 64 hexadecimal digits (a BLAKE3 digest)".into(),
        };
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(BlobDigest(out))
    }
}

impl Serialize for BlobDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct BlobMeta {
    size: u64,
    chunks: u32,
    /// When the upload completed (Unix ms): the time of its `BLOB_NEW` row.
    #[serde(default)]
    created_ms: i64,
}

/// A `BLOB_NEW` row: its key, and its upload time and blob when it parses.
type NewRow = (Vec<u8>, Option<(i64, [u8; 32])>);

/// The blobs of one store.
#[derive(Clone)]
pub struct Blobs<S: Store> {
    store: S,
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
    /// The orphan collector's grace period: a blob stored again after half of it is renewed.
    grace: std::time::Duration,
}

impl<S: Store> Blobs<S> {
    /// The blobs in `store`, with `policy` for every transaction and `clock` for upload times
    /// (a node's come from `Catalog::blobs`).
    pub fn new(store: S, policy: RetryPolicy, clock: Arc<dyn Clock>) -> Self {
        Blobs {
            store,
            policy,
            clock,
            grace: std::time::Duration::from_secs(24 * 3600),
        }
    }

    /// The orphan collector's grace period these blobs are stored for (24 h by default): a
    /// blob stored again after half of it counts as uploaded anew, so a blob in use is not
    /// collected under a step about to read it.
    pub fn with_grace(mut self, grace: std::time::Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How many entries refer to blob `d`.
    pub async fn references(&self, d: &BlobDigest) -> Result<u64> {
        let (begin, end) = keys::blob_refs(&d.0);
        let rows = read(&self.store, &self.policy, |tx| {
            let (begin, end) = (&begin, &end);
            async move { tx.get_range(begin, end, RangeOptions::all()).await }
        })
        .await?;
        Ok(rows.len() as u64)
    }

    /// The size of blob `d`, if it is stored completely.
    pub async fn size(&self, d: &BlobDigest) -> Result<Option<u64>> {
        Ok(self.meta(d).await?.map(|m| m.size))
    }

    async fn meta(&self, d: &BlobDigest) -> Result<Option<BlobMeta>> {
        let key = keys::blob_meta(&d.0);
        let value = read(&self.store, &self.policy, |tx| {
            let key = key.clone();
            async move { tx.get(&key, false).await }
        })
        .await?;
        value.map(|v| decode_meta(d, &v)).transpose()
    }

    /// The size of blob `d` if it is stored, renewing its upload time when more than half of
    /// the grace period has passed since (an upload of the same bytes now). `None` when it is
    /// not stored (or was deleted meanwhile): the caller uploads it.
    async fn stored(&self, d: &BlobDigest) -> Result<Option<u64>> {
        let Some(meta) = self.meta(d).await? else {
            return Ok(None);
        };
        let half = i64::try_from(self.grace.as_millis() / 2).unwrap_or(i64::MAX);
        if self.clock.now_ms().saturating_sub(meta.created_ms) <= half {
            return Ok(Some(meta.size));
        }
        let key = keys::blob_meta(&d.0);
        let now = self.clock.now_ms();
        transact(&self.store, &self.policy, |tx| {
            let key = &key;
            async move {
                let Some(raw) = tx.get(key, false).await? else {
                    return Ok(None);
                };
                let meta = decode_meta(d, &raw)?;
                tx.set(key, &encode_meta(meta.size, meta.chunks, now));
                tx.set(&keys::blob_new(now, &d.0), &[]);
                Ok(Some(meta.size))
            }
        })
        .await
    }

    /// Deletes the blobs uploaded more than `grace` ago that no entry refers to, `batch` per
    /// transaction; returns how many. Each `BLOB_NEW` row is looked at once: a blob referred to
    /// then is left to its references (its last one deletes it). Safe on several nodes at once
    /// and against commits: each transaction re-reads the blob's references, and a commit that
    /// refers to a blob reads its record, so the two conflict.
    pub async fn collect_orphans(&self, grace: std::time::Duration, batch: usize) -> Result<u64> {
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        let (mut cursor, end) =
            keys::blobs_new_before(self.clock.now_ms().saturating_sub(grace_ms));
        let batch = batch.max(1);
        let mut deleted = 0;
        loop {
            let page = read(&self.store, &self.policy, |tx| {
                let (cursor, end) = (&cursor, &end);
                async move {
                    tx.get_range(cursor, end, RangeOptions::all().limit(batch).snapshot())
                        .await
                }
            })
            .await?;
            let rows: Vec<NewRow> = page
                .iter()
                .map(|kv| (kv.key.clone(), keys::parse_blob_new(&kv.key)))
                .collect();
            deleted += transact(&self.store, &self.policy, |tx| {
                let rows = &rows;
                async move {
                    let metas: Vec<Vec<u8>> = rows
                        .iter()
                        .filter_map(|(_, p)| p.map(|(_, b)| keys::blob_meta(&b)))
                        .collect();
                    let refs: Vec<&[u8]> = metas.iter().map(Vec::as_slice).collect();
                    let mut metas = tx.get_many(&refs, false).await?.into_iter();
                    let mut orphans = Vec::new();
                    for (_, parsed) in rows {
                        let Some((ms, b)) = parsed else { continue };
                        let d = BlobDigest(*b);
                        let Some(meta) = metas.next().flatten() else {
                            continue; // deleted already
                        };
                        if decode_meta(&d, &meta).is_ok_and(|m| m.created_ms != *ms) {
                            continue; // deleted and uploaded again since: its own row decides
                        }
                        let (begin, end) = keys::blob_refs(b);
                        let referred = tx
                            .get_range(&begin, &end, RangeOptions::all().limit(1))
                            .await?;
                        if referred.is_empty() {
                            orphans.push(*b);
                        }
                    }
                    for (row, _) in rows {
                        tx.clear(row);
                    }
                    for b in &orphans {
                        let (begin, end) = keys::blob_range(b);
                        tx.clear_range(&begin, &end);
                    }
                    Ok(orphans.len() as u64)
                }
            })
            .await?;
            match page.last() {
                Some(last) if page.len() == batch => {
                    cursor = last.key.clone();
                    cursor.push(0);
                }
                _ => return Ok(deleted),
            }
        }
    }

    /// Stores `bytes`, unless a blob with their digest is already stored; returns the digest.
    /// Storing a blob again more than half the grace period after its upload renews it, so the
    /// orphan collector does not delete a blob a run has just handed to a step.
    pub async fn put(&self, bytes: &[u8]) -> Result<BlobDigest> {
        let d = BlobDigest::of(bytes);
        if self.stored(&d).await?.is_none() {
            self.upload(&d, bytes).await?;
        }
        Ok(d)
    }

    /// Stores what `reader` yields as blob `d`, unless it is already stored. The bytes are
    /// hashed as they are read: if they do not have digest `d` (the file changed since it was
    /// hashed), nothing becomes visible and the error says so. Returns the size.
    pub async fn put_stream(
        &self,
        d: &BlobDigest,
        what: &str,
        reader: impl AsyncRead + Unpin,
    ) -> Result<u64> {
        if let Some(size) = self.stored(d).await? {
            return Ok(size);
        }
        self.upload_stream(d, what, reader).await
    }

    async fn upload(&self, d: &BlobDigest, bytes: &[u8]) -> Result<u64> {
        self.upload_stream(d, "bytes", bytes).await
    }

    async fn upload_stream(
        &self,
        d: &BlobDigest,
        what: &str,
        mut reader: impl AsyncRead + Unpin,
    ) -> Result<u64> {
        let mut hasher = blake3::Hasher::new();
        let mut index: u32 = 0;
        let mut size: u64 = 0;
        loop {
            // Fill one transaction's worth of chunks.
            let mut batch: Vec<Vec<u8>> = Vec::new();
            let mut eof = false;
            while batch.len() < CHUNKS_PER_TX {
                let chunk = read_chunk(&mut reader, what).await?;
                if chunk.is_empty() {
                    eof = true;
                    break;
                }
                let full = chunk.len() == CHUNK_BYTES;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                batch.push(chunk);
                if !full {
                    eof = true;
                    break;
                }
            }
            let first = index;
            index += batch.len() as u32;
            let meta = if eof {
                let got = BlobDigest(*hasher.finalize().as_bytes());
                if got != *d {
                    return Err(Error::InvalidInput {
                        what: what.to_string(),
                        reason: format!(
                            "its content changed while it was stored (digest {got}, expected {d})"
                        ),
                    });
                }
                let created_ms = self.clock.now_ms();
                Some((created_ms, encode_meta(size, index, created_ms)))
            } else {
                None
            };
            transact(&self.store, &self.policy, |tx| {
                for (i, chunk) in batch.iter().enumerate() {
                    tx.set(&keys::blob_chunk(&d.0, first + i as u32), chunk);
                }
                if let Some((created_ms, meta)) = &meta {
                    tx.set(&keys::blob_meta(&d.0), meta);
                    tx.set(&keys::blob_new(*created_ms, &d.0), &[]);
                }
                async { Ok(()) }
            })
            .await?;
            if eof {
                return Ok(size);
            }
        }
    }

    /// Blob `d`'s bytes, checked against the digest.
    pub async fn get(&self, d: &BlobDigest) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.write_to(d, &mut out).await?;
        Ok(out)
    }

    /// Writes blob `d` to `writer`, a page of chunks per read transaction, checked against the
    /// digest before its last chunk is written: a mismatch is [`Error::Corrupt`] and `writer`
    /// never gets the whole blob (the caller discards what was written). Returns the size.
    pub async fn write_to(
        &self,
        d: &BlobDigest,
        mut writer: impl AsyncWrite + Unpin,
    ) -> Result<u64> {
        let Some(size) = self.size(d).await? else {
            return Err(Error::BlobNotFound {
                digest: d.to_string(),
            });
        };
        let (_, end) = keys::blob_chunks(&d.0);
        let mut from = keys::blob_chunk(&d.0, 0);
        let mut hasher = blake3::Hasher::new();
        let mut written: u64 = 0;
        let mut held: Option<Vec<u8>> = None;
        loop {
            let page = read(&self.store, &self.policy, |tx| {
                let (from, end) = (from.clone(), end.clone());
                async move {
                    tx.get_range(&from, &end, RangeOptions::all().limit(CHUNKS_PER_TX))
                        .await
                }
            })
            .await?;
            let full = page.len() == CHUNKS_PER_TX;
            for kv in page.iter() {
                hasher.update(&kv.value);
                written += kv.value.len() as u64;
                // One chunk is held back until the digest is checked: a writer never has every
                // byte of a blob that turns out damaged.
                if let Some(chunk) = held.replace(kv.value.clone()) {
                    writer.write_all(&chunk).await.map_err(|e| Error::Io {
                        what: format!("writing blob {d}"),
                        detail: e.to_string(),
                    })?;
                }
            }
            match page.last() {
                Some(last) if full => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => break,
            }
        }
        let got = BlobDigest(*hasher.finalize().as_bytes());
        if written != size || got != *d {
            return Err(Error::Corrupt {
                what: format!("blob {d}"),
                detail: format!("read {written} bytes (of {size}) whose digest is {got}"),
            });
        }
        let io = |e: std::io::Error| Error::Io {
            what: format!("writing blob {d}"),
            detail: e.to_string(),
        };
        if let Some(chunk) = held {
            writer.write_all(&chunk).await.map_err(io)?;
        }
        writer.flush().await.map_err(io)?;
        Ok(size)
    }
}

async fn read_chunk(reader: &mut (impl AsyncRead + Unpin), what: &str) -> Result<Vec<u8>> {
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut filled = 0;
    while filled < CHUNK_BYTES {
        let n = reader
            .read(&mut chunk[filled..])
            .await
            .map_err(|e| Error::Io {
                what: format!("reading {what}"),
                detail: e.to_string(),
            })?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    chunk.truncate(filled);
    Ok(chunk)
}

fn encode_meta(size: u64, chunks: u32, created_ms: i64) -> Vec<u8> {
    rmp_serde::to_vec_named(&BlobMeta {
        size,
        chunks,
        created_ms,
    })
    .expect("three integers encode")
}

/// Checks in `tx` that every blob of `blobs` is stored (a read of each completion record, so a
/// concurrent deletion conflicts): an entry never refers to a blob that is gone.
pub(crate) async fn require<T: Transaction>(tx: &T, blobs: &[BlobDigest]) -> Result<()> {
    if blobs.is_empty() {
        return Ok(());
    }
    let metas: Vec<Vec<u8>> = blobs.iter().map(|b| keys::blob_meta(&b.0)).collect();
    let refs: Vec<&[u8]> = metas.iter().map(Vec::as_slice).collect();
    for (b, meta) in blobs.iter().zip(tx.get_many(&refs, false).await?) {
        if meta.is_none() {
            return Err(Error::BlobNotFound {
                digest: b.to_string(),
            });
        }
    }
    Ok(())
}

/// Writes in `tx` that entry `d` refers to each blob of `blobs`.
pub(crate) fn reference<T: Transaction>(tx: &T, d: &Digest, blobs: &[BlobDigest]) {
    for b in blobs {
        tx.set(&keys::blob_ref(&b.0, d), &[]);
    }
}

/// What [`unreference`] read: the rows to clear and the blobs left without a reference.
pub(crate) struct Unreference {
    rows: Vec<Vec<u8>>,
    orphans: Vec<BlobDigest>,
}

impl Unreference {
    /// Clears the references and deletes the orphaned blobs; returns how many were deleted.
    pub(crate) fn apply<T: Transaction>(self, tx: &T) -> u64 {
        for row in &self.rows {
            tx.clear(row);
        }
        for b in &self.orphans {
            let (begin, end) = keys::blob_range(&b.0);
            tx.clear_range(&begin, &end);
        }
        self.orphans.len() as u64
    }
}

/// Reads in `tx` what removing the references of `dropped` (entries and the blobs each referred
/// to) entails: which blobs nothing else refers to. Reads only; [`Unreference::apply`] writes,
/// so a caller does every read of its transaction before its first write. The reads of each
/// blob's reference rows make a concurrent commit that refers to it conflict.
pub(crate) async fn unreference<T: Transaction>(
    tx: &T,
    dropped: &[(Digest, Vec<BlobDigest>)],
) -> Result<Unreference> {
    let mut by_blob: std::collections::BTreeMap<BlobDigest, Vec<Digest>> = Default::default();
    for (d, blobs) in dropped {
        for b in blobs {
            by_blob.entry(*b).or_default().push(*d);
        }
    }
    let mut out = Unreference {
        rows: Vec::new(),
        orphans: Vec::new(),
    };
    for (b, entries) in by_blob {
        let (begin, end) = keys::blob_refs(&b.0);
        // Enough rows to find one that is not being dropped, if there is one (whether this
        // transaction's own clears are visible to its reads or not).
        let rows = tx
            .get_range(&begin, &end, RangeOptions::all().limit(entries.len() + 1))
            .await?;
        let kept = rows
            .iter()
            .any(|kv| keys::entry_of_blob_ref(&kv.key).is_none_or(|e| !entries.contains(&e)));
        out.rows
            .extend(entries.iter().map(|d| keys::blob_ref(&b.0, d)));
        if !kept {
            out.orphans.push(b);
        }
    }
    Ok(out)
}

fn decode_meta(d: &BlobDigest, bytes: &[u8]) -> Result<BlobMeta> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: format!("record of blob {d}"),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AnyStore;

    async fn blobs() -> Blobs<AnyStore> {
        Blobs::new(
            AnyStore::open("memory:").await.unwrap(),
            RetryPolicy::default(),
            Arc::new(crate::clock::SystemClock),
        )
    }

    #[tokio::test]
    async fn blobs_round_trip_across_chunks_and_transactions() {
        let blobs = blobs().await;
        for size in [
            0usize,
            1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            CHUNK_BYTES * CHUNKS_PER_TX + 7,
        ] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let d = blobs.put(&bytes).await.unwrap();
            assert_eq!(d, BlobDigest::of(&bytes));
            assert_eq!(blobs.size(&d).await.unwrap(), Some(size as u64));
            assert_eq!(blobs.get(&d).await.unwrap(), bytes, "size {size}");
        }
    }

    #[tokio::test]
    async fn a_stream_that_does_not_match_its_digest_is_refused_and_invisible() {
        let blobs = blobs().await;
        let claimed = BlobDigest::of(b"what was hashed");
        let err = blobs
            .put_stream(&claimed, "file a.c", &b"what was read"[..])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("file a.c"), "{err}");
        assert_eq!(blobs.size(&claimed).await.unwrap(), None);
        assert!(matches!(
            blobs.get(&claimed).await.unwrap_err(),
            Error::BlobNotFound { .. }
        ));
    }

    #[tokio::test]
    async fn a_damaged_chunk_is_corrupt_not_wrong_bytes() {
        let blobs = blobs().await;
        let d = blobs.put(b"hello blobs").await.unwrap();
        transact(&blobs.store, &blobs.policy, |tx| {
            tx.set(&keys::blob_chunk(&d.0, 0), b"hellO blobs");
            async { Ok(()) }
        })
        .await
        .unwrap();
        let err = blobs.get(&d).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&d.to_string()));

        // Streamed, a damaged blob of several chunks never reaches its writer whole.
        let bytes: Vec<u8> = (0..3 * CHUNK_BYTES + 5).map(|i| (i % 249) as u8).collect();
        let d = blobs.put(&bytes).await.unwrap();
        transact(&blobs.store, &blobs.policy, |tx| {
            tx.set(&keys::blob_chunk(&d.0, 1), &vec![7u8; CHUNK_BYTES]);
            async { Ok(()) }
        })
        .await
        .unwrap();
        let mut got = Vec::new();
        let err = blobs.write_to(&d, &mut got).await.unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(
            got.len() < bytes.len(),
            "the writer got {} bytes",
            got.len()
        );
    }

    #[test]
    fn digests_print_and_parse_as_hex() {
        let d = BlobDigest::of(b"x");
        assert_eq!(d.to_string().parse::<BlobDigest>().unwrap(), d);
        assert!("zz".parse::<BlobDigest>().is_err());
    }
}
