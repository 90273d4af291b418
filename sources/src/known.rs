//! The record of sources already in the store: SHA-256 → blob digest, and back.
//!
//! Signatures name sources by SHA-256, the store names blobs by BLAKE3. Once a source has
//! been checked and stored, two small files under `<store>/sources/` remember the pair, so a
//! later fetch of the same SHA-256 is answered from the store without any network, and a
//! spec-directory file the store's stat cache vouches for needs no re-hashing at all. Each
//! stored source is also named as a GC root (`source:<sha256>`), so `keel store gc` keeps it.
//!
//! This is a cache: a lost or damaged entry only costs a fetch or a re-hash. Entries are
//! written atomically (temporary file and rename) and each starts with a format tag.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use keel_store::{BlobDigest, ObjectRef, Store};

const FORMAT: &str = "keel-sources-known v1";

pub(crate) struct Known {
    dir: PathBuf,
}

impl Known {
    pub(crate) fn new(store: &Store) -> Known {
        Known {
            dir: store.root().join("sources"),
        }
    }

    /// Where downloads are written before they are checked (same filesystem as the store).
    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn sha_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }

    fn blob_path(&self, blob: &BlobDigest) -> PathBuf {
        self.dir.join("blake3").join(blob.to_hex())
    }

    /// The blob of the source whose SHA-256 is `sha256`, if it is known and still stored.
    pub(crate) fn blob_of(&self, store: &Store, sha256: &str) -> Option<BlobDigest> {
        let text = fs::read_to_string(self.sha_path(sha256)).ok()?;
        let mut words = text.strip_prefix(FORMAT)?.split_whitespace();
        let hex = words.next()?;
        let size: u64 = words.next()?.parse().ok()?;
        let hash = *BlobDigest::parse_hex(hex).ok()?.hash();
        let blob = BlobDigest::from_parts(hash, size);
        store.contains_blob(&blob).then_some(blob)
    }

    /// The SHA-256 of a stored blob, if it was recorded.
    pub(crate) fn sha256_of(&self, blob: &BlobDigest) -> Option<String> {
        let text = fs::read_to_string(self.blob_path(blob)).ok()?;
        let sha = text.strip_prefix(FORMAT)?.trim();
        crate::signatures::is_sha256_hex(sha).then(|| sha.to_owned())
    }

    /// Remembers that the blob `blob` has SHA-256 `sha256`. Failing to remember is only a
    /// warning: the next fetch will do the work again.
    pub(crate) fn record(&self, store: &Store, sha256: &str, blob: &BlobDigest) {
        let forward = format!("{FORMAT} {} {}\n", blob.to_hex(), blob.size());
        let back = format!("{FORMAT} {sha256}\n");
        for (path, text) in [
            (self.sha_path(sha256), forward),
            (self.blob_path(blob), back),
        ] {
            if let Err(e) = write_atomic(&path, text.as_bytes()) {
                tracing::warn!("cannot record source digest in {}: {e}", path.display());
            }
        }
        if let Err(e) = store.set_root(&format!("source:{sha256}"), &[ObjectRef::Blob(*blob)]) {
            tracing::warn!("cannot name source {sha256} as a gc root: {e}");
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("entry paths have a parent");
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
