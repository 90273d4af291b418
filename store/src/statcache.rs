//! The stat cache: (path, size, mtime, ctime, inode, device) -> digest.
//!
//! A file whose metadata matches its entry is not read again. The change time is part of
//! the match because every write and every `touch -d` sets it to "now", even when the
//! modification time is put back or lands in the same clock tick.
//!
//! Timestamps advance in coarse ticks, so a file written again within the tick in which it
//! was hashed can keep all of its metadata (git calls this "racily clean"). An entry is
//! therefore trusted only when it was recorded at least [`RACY_WINDOW_NS`] after the file's
//! last change; a younger entry means "hash again", which costs one read of a file that was
//! just edited anyway.

use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::digest::{BlobDigest, hash_file};
use crate::error::{Result, StoreError};
use crate::store::Store;

const ENTRY_FORMAT: u8 = 1;
/// Entries recorded closer than this to the file's last change are not trusted. Two
/// seconds covers filesystems with one- and two-second timestamps (ext3, FAT).
pub const RACY_WINDOW_NS: i128 = 2_000_000_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Entry {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
    recorded_ns: i128,
    digest: BlobDigest,
}

/// The outcome of a stat-cache lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatLookup {
    /// The file is unchanged since it was hashed.
    Hit(BlobDigest),
    /// No usable entry: the file must be hashed.
    Miss,
}

impl StatLookup {
    pub fn digest(self) -> Option<BlobDigest> {
        match self {
            StatLookup::Hit(d) => Some(d),
            StatLookup::Miss => None,
        }
    }
}

fn key_of(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn stamp(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn entry_for(meta: &Metadata, digest: BlobDigest) -> Entry {
    Entry {
        size: meta.len(),
        mtime_ns: stamp(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: stamp(meta.ctime(), meta.ctime_nsec()),
        ino: meta.ino(),
        dev: meta.dev(),
        recorded_ns: now_ns(),
        digest,
    }
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    let (&ver, rest) = bytes.split_first()?;
    if ver != ENTRY_FORMAT {
        return None;
    }
    bincode::serde::decode_from_slice(rest, bincode::config::standard())
        .ok()
        .map(|(e, _)| e)
}

impl Store {
    /// Looks a file up in the stat cache without reading it.
    pub fn stat_lookup(&self, path: &Path) -> Result<StatLookup> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(source) => {
                return Err(StoreError::Io {
                    action: "stat",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok(self.stat_lookup_meta(path, &meta))
    }

    fn stat_lookup_meta(&self, path: &Path, meta: &Metadata) -> StatLookup {
        let key = key_of(path);
        let found = self
            .stat
            .get(key.as_os_str().as_bytes())
            .ok()
            .flatten()
            .and_then(|v| decode(&v));
        let hit = found.and_then(|e| {
            let fresh = entry_for(meta, e.digest);
            let same = e.size == fresh.size
                && e.mtime_ns == fresh.mtime_ns
                && e.ctime_ns == fresh.ctime_ns
                && e.ino == fresh.ino
                && e.dev == fresh.dev;
            let settled = e.recorded_ns - e.mtime_ns.max(e.ctime_ns) >= RACY_WINDOW_NS;
            (same && settled).then_some(e.digest)
        });
        let counter = if hit.is_some() {
            &self.counters.stat_hits
        } else {
            &self.counters.stat_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit.map_or(StatLookup::Miss, StatLookup::Hit)
    }

    /// Records that the file, as `meta` describes it, hashes to `digest`.
    pub(crate) fn stat_record(
        &self,
        path: &Path,
        meta: &Metadata,
        digest: BlobDigest,
    ) -> Result<()> {
        let key = key_of(path);
        let mut value = vec![ENTRY_FORMAT];
        value.extend(
            bincode::serde::encode_to_vec(entry_for(meta, digest), bincode::config::standard())
                .expect("stat entries always encode"),
        );
        self.stat
            .insert(key.as_os_str().as_bytes(), value)
            .map_err(|e| self.index_err(e))?;
        Ok(())
    }

    /// The digest of a file's contents, read only when the stat cache cannot vouch for it.
    /// Does not store the contents (see [`Store::put_file`]).
    pub fn file_digest(&self, path: &Path) -> Result<BlobDigest> {
        let meta = std::fs::metadata(path).map_err(StoreError::io("stat", path))?;
        if let StatLookup::Hit(d) = self.stat_lookup_meta(path, &meta) {
            return Ok(d);
        }
        let digest = hash_file(path).map_err(StoreError::io("read", path))?;
        // Metadata taken before the read: a write during the read changes ctime, so the
        // entry will not match next time.
        self.stat_record(path, &meta, digest)?;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn backdate(path: &Path, secs_ago: u64) {
        // Makes the file look old, so its entry is outside the racy window.
        let t = std::time::SystemTime::now() - Duration::from_secs(secs_ago);
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .unwrap();
    }

    #[test]
    fn unchanged_file_hits_after_settling() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"hello").unwrap();
        let d = store.file_digest(&f).unwrap();
        assert_eq!(d, BlobDigest::of_bytes(b"hello"));
        // Just written: racily clean, so not trusted yet.
        assert_eq!(store.stat_lookup(&f).unwrap(), StatLookup::Miss);
        // Pretend the entry was recorded long after the change (ctime cannot be set back,
        // so rewrite the entry's recording time instead).
        let key = key_of(&f);
        let mut e = decode(&store.stat.get(key.as_os_str().as_bytes()).unwrap().unwrap()).unwrap();
        e.recorded_ns += 10 * RACY_WINDOW_NS;
        let mut v = vec![ENTRY_FORMAT];
        v.extend(bincode::serde::encode_to_vec(&e, bincode::config::standard()).unwrap());
        store.stat.insert(key.as_os_str().as_bytes(), v).unwrap();
        assert_eq!(store.stat_lookup(&f).unwrap(), StatLookup::Hit(d));
    }

    #[test]
    fn edit_keeping_mtime_and_size_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"one").unwrap();
        backdate(&f, 3600);
        let old_mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        let first = store.file_digest(&f).unwrap();
        // Same size, then the mtime put back exactly (what `touch -d` does).
        std::fs::write(&f, b"two").unwrap();
        let file = std::fs::File::options().write(true).open(&f).unwrap();
        file.set_times(std::fs::FileTimes::new().set_modified(old_mtime))
            .unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().modified().unwrap(),
            old_mtime
        );
        let second = store.file_digest(&f).unwrap();
        assert_ne!(first, second);
        assert_eq!(second, BlobDigest::of_bytes(b"two"));
    }
}
