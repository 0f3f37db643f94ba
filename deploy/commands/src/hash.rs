//! File digests: BLAKE3 of a file's content, streamed (memory-mapped and hashed on every core for
//! large files), with a memo of (device, inode, size, mtime) → digest so a file that did not
//! change is not read again.
//!
//! The memo skips files modified in the last two seconds (git's "racy" case): a write within the
//! file system's timestamp granularity after the hash could otherwise keep the old digest.
//!
//! The memo can live in a file ([`FileHasher::with_memo_file`]; a tasks file's node keeps it at
//! `[settings] digest_memo`), so a restarted node does not read unchanged files again either. Its
//! key adds the change time to git's (device, inode, size, mtime): a file replaced by another
//! that reuses its inode after a restart changes its ctime. The file is rewritten (to a temporary
//! file, then renamed) at most every few seconds while digests are added, and on
//! [`FileHasher::save`]; a file that does not read back is ignored (the memo starts empty). It
//! stays bounded: past [`MEMO_MAX`] digests, a write keeps only those this process used.

use cairn_engine::blobs::BlobDigest;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Files larger than this are memory-mapped and hashed in parallel.
const PARALLEL_FROM: u64 = 1 << 20;

/// What hashing a file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed {
    /// Size in bytes.
    pub size: u64,
    /// Whether its owner may execute it.
    pub exec: bool,
    /// BLAKE3 of its content.
    pub digest: BlobDigest,
}

/// (device, inode, size, mtime s, mtime ns, ctime s, ctime ns).
type MemoKey = (u64, u64, u64, i64, i64, i64, i64);

/// The first bytes of a memo file, naming its format.
const MEMO_MAGIC: &[u8] = b"cairn digest memo 1\n";

/// Most digests a memo file keeps: past it, a write keeps only the digests this process used
/// (about 80 bytes each: 40 MB at most).
pub const MEMO_MAX: usize = 500_000;

/// Least time between two writes of the memo file while digests are added.
const SAVE_EVERY: Duration = Duration::from_secs(5);

/// Hashes files, remembering the digests of files that have not changed.
#[derive(Default)]
pub struct FileHasher {
    /// Digest by file identity, and whether this process used it (looked it up or added it).
    memo: Mutex<HashMap<MemoKey, (BlobDigest, bool)>>,
    reads: std::sync::atomic::AtomicU64,
    /// Where the memo is kept, if anywhere; and when it was last written.
    file: Option<(PathBuf, Mutex<Option<std::time::Instant>>)>,
    dirty: std::sync::atomic::AtomicBool,
    /// Most digests the memo file keeps ([`MEMO_MAX`] by default).
    limit: usize,
}

impl FileHasher {
    /// A hasher with an empty memo, in memory only.
    pub fn new() -> Arc<FileHasher> {
        Arc::new(FileHasher::default())
    }

    /// A hasher whose memo is kept in `path`: read now (a missing or unreadable file is an
    /// empty memo), written back as digests are added and on [`FileHasher::save`].
    pub fn with_memo_file(path: PathBuf) -> Arc<FileHasher> {
        Self::with_memo_file_limited(path, MEMO_MAX)
    }

    /// [`FileHasher::with_memo_file`] keeping at most about `limit` digests: past it, a write
    /// keeps only those this process used.
    pub fn with_memo_file_limited(path: PathBuf, limit: usize) -> Arc<FileHasher> {
        let memo = match std::fs::read(&path) {
            Ok(bytes) => match bytes
                .strip_prefix(MEMO_MAGIC)
                .map(rmp_serde::from_slice::<Vec<(MemoKey, [u8; 32])>>)
            {
                Some(Ok(rows)) => rows
                    .into_iter()
                    .map(|(k, d)| (k, (BlobDigest(d), false)))
                    .collect(),
                _ => {
                    tracing::warn!(file = %path.display(), "the digest memo does not read back; starting with an empty one");
                    HashMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the digest memo; starting with an empty one");
                HashMap::new()
            }
        };
        Arc::new(FileHasher {
            memo: Mutex::new(memo),
            file: Some((path, Mutex::new(None))),
            limit,
            ..FileHasher::default()
        })
    }

    /// How many digests the memo holds.
    pub fn memoised(&self) -> usize {
        self.memo.lock().len()
    }

    /// Writes the memo to its file if digests were added since the last write; returns
    /// whether it wrote. The error names the file.
    pub fn save(&self) -> Result<bool, String> {
        use std::sync::atomic::Ordering;
        let Some((path, last)) = &self.file else {
            return Ok(false);
        };
        let mut last = last.lock();
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let rows: Vec<(MemoKey, [u8; 32])> = {
            let mut memo = self.memo.lock();
            if memo.len() > self.limit {
                memo.retain(|_, (_, used)| *used);
            }
            memo.iter().map(|(k, (d, _))| (*k, d.0)).collect()
        };
        let mut bytes = MEMO_MAGIC.to_vec();
        bytes.extend(rmp_serde::to_vec(&rows).map_err(|e| e.to_string())?);
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let tmp = path.with_extension(format!(
            "tmp{}-{}",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, &bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        *last = Some(std::time::Instant::now());
        written.map_err(|e| {
            self.dirty.store(true, Ordering::Release);
            format!("writing the digest memo {}: {e}", path.display())
        })?;
        Ok(true)
    }

    /// [`FileHasher::save`], unless the memo was written in the last [`SAVE_EVERY`].
    fn save_now_and_then(&self) {
        let Some((_, last)) = &self.file else { return };
        if last.lock().is_some_and(|t| t.elapsed() < SAVE_EVERY) {
            return;
        }
        if let Err(e) = self.save() {
            tracing::warn!(error = %e, "the digest memo was not saved");
        }
    }

    /// How many files were read (memo misses) so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hashes `path` on this thread (it blocks: call it from blocking code). The error names
    /// the file.
    pub fn hash_blocking(&self, path: &Path) -> Result<Hashed, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        let exec = meta.permissions().mode() & 0o100 != 0;
        let key: MemoKey = (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        );
        if let Some((digest, used)) = self.memo.lock().get_mut(&key) {
            *used = true;
            return Ok(Hashed {
                size: meta.size(),
                exec,
                digest: *digest,
            });
        }
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut hasher = blake3::Hasher::new();
        let read = if meta.size() >= PARALLEL_FROM {
            hasher.update_mmap_rayon(path).map(drop)
        } else {
            std::fs::File::open(path).and_then(|f| hasher.update_reader(f).map(drop))
        };
        read.map_err(|e| format!("{}: {e}", path.display()))?;
        let digest = BlobDigest(*hasher.finalize().as_bytes());
        let settled = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age > Duration::from_secs(2));
        if settled {
            self.memo.lock().insert(key, (digest, true));
            self.dirty.store(true, std::sync::atomic::Ordering::Release);
            self.save_now_and_then();
        }
        Ok(Hashed {
            size: meta.size(),
            exec,
            digest,
        })
    }

    /// Hashes `path` on the blocking pool.
    pub async fn hash(self: &Arc<Self>, path: PathBuf) -> Result<Hashed, String> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.hash_blocking(&path))
            .await
            .map_err(|e| format!("hashing a file: {e}"))?
    }

    /// Hashes every path, as many at once as the machine has cores; results in `paths`' order.
    pub async fn hash_all(self: &Arc<Self>, paths: Vec<PathBuf>) -> Result<Vec<Hashed>, String> {
        let width = std::thread::available_parallelism().map_or(2, |n| n.get());
        let semaphore = Arc::new(tokio::sync::Semaphore::new(width));
        let jobs = paths.into_iter().map(|p| {
            let semaphore = semaphore.clone();
            async move {
                let _permit = semaphore.acquire().await.map_err(|e| e.to_string())?;
                self.hash(p).await
            }
        });
        futures::future::try_join_all(jobs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_files_are_not_read_again_and_changed_ones_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.c");
        std::fs::write(&path, "int a;").unwrap();
        // An old mtime: the memo may keep it.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let hasher = FileHasher::new();
        let first = hasher.hash_blocking(&path).unwrap();
        assert_eq!(first.digest, BlobDigest::of(b"int a;"));
        assert!(!first.exec);
        hasher.hash_blocking(&path).unwrap();
        assert_eq!(hasher.reads(), 1, "the second hash came from the memo");
        std::fs::write(&path, "int b;").unwrap();
        let changed = hasher.hash_blocking(&path).unwrap();
        assert_eq!(changed.digest, BlobDigest::of(b"int b;"));
        assert_eq!(hasher.reads(), 2);
        // Just written: not memoised (racy), so read again.
        hasher.hash_blocking(&path).unwrap();
        assert_eq!(hasher.reads(), 3);
    }

    #[test]
    fn a_memo_file_spares_a_new_hasher_the_reads_and_a_damaged_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        let paths: Vec<PathBuf> = (0..3)
            .map(|i| {
                let p = dir.path().join(format!("f{i}.c"));
                std::fs::write(&p, format!("int f{i};")).unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
                p
            })
            .collect();
        let memo = dir.path().join("state/memo");
        let first = FileHasher::with_memo_file(memo.clone());
        for p in &paths {
            first.hash_blocking(p).unwrap();
        }
        assert_eq!(first.reads(), 3);
        first.save().unwrap();
        assert!(!first.save().unwrap(), "nothing new: not written again");

        // A new process: nothing is read again, and the digests are the same.
        let second = FileHasher::with_memo_file(memo.clone());
        assert_eq!(second.memoised(), 3);
        for p in &paths {
            let h = second.hash_blocking(p).unwrap();
            assert_eq!(
                h.digest,
                BlobDigest::of(std::fs::read(p).unwrap().as_slice())
            );
        }
        assert_eq!(second.reads(), 0);

        // A changed file is read again even though the memo came from disk.
        std::fs::write(&paths[1], "int changed;").unwrap();
        let h = second.hash_blocking(&paths[1]).unwrap();
        assert_eq!(h.digest, BlobDigest::of(b"int changed;"));
        assert_eq!(second.reads(), 1);

        // Past its limit, a write keeps only the digests this process used.
        let limited = FileHasher::with_memo_file_limited(memo.clone(), 2);
        assert_eq!(limited.memoised(), 3);
        let fourth = dir.path().join("f3.c");
        std::fs::write(&fourth, "int f3;").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&fourth)
            .unwrap()
            .set_modified(old)
            .unwrap();
        limited.hash_blocking(&paths[0]).unwrap();
        limited.hash_blocking(&fourth).unwrap();
        limited.save().unwrap();
        assert_eq!(FileHasher::with_memo_file(memo.clone()).memoised(), 2);

        // A damaged memo file is an empty memo, not an error.
        std::fs::write(&memo, b"cairn digest memo 1\n\xff\x00garbage").unwrap();
        let third = FileHasher::with_memo_file(memo);
        assert_eq!(third.memoised(), 0);
        third.hash_blocking(&paths[0]).unwrap();
        assert_eq!(third.reads(), 1);
    }

    #[test]
    fn large_files_hash_in_parallel_to_the_same_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let bytes: Vec<u8> = (0..3 * PARALLEL_FROM as usize)
            .map(|i| (i % 253) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let hashed = FileHasher::new().hash_blocking(&path).unwrap();
        assert_eq!(hashed.digest, BlobDigest::of(&bytes));
        assert_eq!(hashed.size, bytes.len() as u64);
    }
}
