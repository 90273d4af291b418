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

use std::borrow::Cow;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use crate::digest::{BlobDigest, hash_file};
use crate::error::{Result, StoreError};
use crate::store::Store;

const ENTRY_FORMAT: u8 = 1;
/// Entries recorded closer than this to the file's last change are not trusted. Two
/// seconds covers filesystems with one- and two-second timestamps (ext3, FAT).
pub const RACY_WINDOW_NS: i128 = 2_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The index key of a path: its absolute form (as given when it already is absolute:
/// normalizing costs more than the rest of a hit).
fn key_of(path: &Path) -> Cow<'_, Path> {
    if path.is_absolute() {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(std::path::absolute(path).unwrap_or_else(|_| path.to_owned()))
    }
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

/// Entries have a fixed layout (a format byte, then little-endian fields): decoding is a few
/// loads, which matters on the hot path of a no-op build.
const ENTRY_LEN: usize = 1 + 8 + 16 + 16 + 8 + 8 + 16 + 32 + 8;

fn encode(e: &Entry) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[0] = ENTRY_FORMAT;
    let mut at = 1;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&e.size.to_le_bytes());
    put(&e.mtime_ns.to_le_bytes());
    put(&e.ctime_ns.to_le_bytes());
    put(&e.ino.to_le_bytes());
    put(&e.dev.to_le_bytes());
    put(&e.recorded_ns.to_le_bytes());
    put(e.digest.hash());
    put(&e.digest.size().to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<Entry> {
    if bytes.len() != ENTRY_LEN || bytes[0] != ENTRY_FORMAT {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
    let i128_at = |i: usize| i128::from_le_bytes(bytes[i..i + 16].try_into().expect("16 bytes"));
    Some(Entry {
        size: u64_at(1),
        mtime_ns: i128_at(9),
        ctime_ns: i128_at(25),
        ino: u64_at(41),
        dev: u64_at(49),
        recorded_ns: i128_at(57),
        digest: BlobDigest::from_parts(bytes[73..105].try_into().expect("32 bytes"), u64_at(105)),
    })
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
        let key = key.as_os_str().as_bytes();
        let entry = entry_for(meta, digest);
        self.stat
            .insert(key, &encode(&entry)[..])
            .map_err(|e| self.index_err(e))?;
        Ok(())
    }

    /// [`Store::file_digest`] of many files, in parallel.
    pub fn file_digests(&self, paths: &[&Path]) -> Vec<Result<BlobDigest>> {
        paths.par_iter().map(|p| self.file_digest(p)).collect()
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
        let key = key_of(&f).as_os_str().as_bytes().to_vec();
        let mut e = decode(&store.stat.get(&key).unwrap().unwrap()).unwrap();
        e.recorded_ns += 10 * RACY_WINDOW_NS;
        store.stat.insert(&key, &encode(&e)[..]).unwrap();
        assert_eq!(store.stat_lookup(&f).unwrap(), StatLookup::Hit(d));
        // An edit is caught.
        std::fs::write(&f, b"HELLO").unwrap();
        assert_eq!(store.stat_lookup(&f).unwrap(), StatLookup::Miss);
        assert_eq!(
            store.file_digests(&[&f])[0].as_ref().unwrap(),
            &BlobDigest::of_bytes(b"HELLO")
        );
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
