//! File digests: BLAKE3 of a file's content, streamed (memory-mapped and hashed on every core for
//! large files), with a memo of (device, inode, size, mtime) → digest so a file that did not
//! change is not read again.
//!
//! The memo skips files modified in the last two seconds (git's "racy" case): a write within the
//! file system's timestamp granularity after the hash could otherwise keep the old digest.

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

type MemoKey = (u64, u64, u64, i64, i64);

/// Hashes files, remembering the digests of files that have not changed.
#[derive(Default)]
pub struct FileHasher {
    memo: Mutex<HashMap<MemoKey, BlobDigest>>,
    reads: std::sync::atomic::AtomicU64,
}

impl FileHasher {
    /// A hasher with an empty memo.
    pub fn new() -> Arc<FileHasher> {
        Arc::new(FileHasher::default())
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
        );
        if let Some(digest) = self.memo.lock().get(&key) {
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
            self.memo.lock().insert(key, digest);
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
