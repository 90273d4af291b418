//! keel's content-addressed store.
//!
//! Everything keel reads or produces — spec files, source tarballs, patches, macro files,
//! built RPMs, logs — is stored here as a *blob* named by the BLAKE3 digest of its bytes.
//! Directories are *trees*: manifests of (path, mode, blob digest or symlink target), stored
//! under their own derived digest, so unchanged files are shared between versions. The
//! *action cache* maps an action key (a digest of everything an action reads) to a record
//! of what it produced. The *stat cache* remembers which file, as `stat(2)` saw it, has
//! which digest, so unchanged files are not read again.
//!
//! How it stays trustworthy:
//! - objects are written to a temporary file, fsynced and renamed into place: a reader sees
//!   a whole object or none, whatever happens to the writer;
//! - every read re-hashes the bytes and refuses (and quarantines) an object that does not
//!   match its name, so a damaged store degrades to a miss and a rebuild, never to a wrong
//!   result;
//! - the sled index is a cache over the object files, rebuilt from them when it is lost,
//!   damaged, or was not flushed by a process that died;
//! - one process owns a store at a time (an advisory `flock`); others wait.
//!
//! On-disk layout under the store's root: `FORMAT`, `lock`, `blobs/ab/cdef…`, `trees/…`,
//! `actions/…` (records), `index/` (sled), `tmp/`, `quarantine/`. Every on-disk record
//! begins with a format version.
//!
//! What it deliberately does not do: talk to remote caches (a later tier wraps it), know
//! what an action is (the engine decides keys), or follow symlinks when storing trees.

mod action;
mod digest;
mod error;
mod maintenance;
mod object;
mod statcache;
mod store;
mod tree;

pub use action::{ActionOutput, ActionRecord, ObjectRef};
pub use digest::{
    ActionKey, ActionKeyKind, BlobDigest, BlobKind, Digest, DigestHasher, DigestKind,
    ParseDigestError, RecordDigest, RecordKind, TreeDigest, TreeKind, hash_file, hash_reader,
};
pub use error::{Result, StoreError};
pub use maintenance::{Damage, GcOptions, GcReport, KindStats, StoreStats, VerifyReport};
pub use object::{CompressHint, ObjectKind};
pub use statcache::{RACY_WINDOW_NS, StatLookup};
pub use store::{
    BlobIngest, OnBlocked, STORE_FORMAT, Store, StoreOptions, read_up_to, write_sparse,
};
pub use tree::{Node, Tree, TreeEntry, is_safe_output_name};
