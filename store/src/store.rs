//! The [`Store`] handle: opening, locking, the index, and blobs.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::digest::{BlobDigest, BlobKind, Digest, DigestKind};
use crate::error::{Result, StoreError};
use crate::object::{self, CompressHint, ObjectKind, ObjectWriter, ReadFailure, VerifyingReader};

/// The store directory's layout version, in its `FORMAT` file.
pub const STORE_FORMAT: u32 = 1;
const FORMAT_FILE: &str = "FORMAT";
const LOCK_FILE: &str = "lock";
const INDEX_DIR: &str = "index";
/// The layout of the sled index's tables; a different value means "rebuild it".
const INDEX_FORMAT: u8 = 1;
/// sled caches up to 1 GiB by default; keel's index is small and read mostly once per
/// process, and memory is better spent on builds.
const INDEX_CACHE_BYTES: u64 = 16 << 20;
pub(crate) const TMP_DIR: &str = "tmp";
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// Blobs up to this size are read fully and verified before [`Store::write_blob_to`] writes
/// any byte; larger ones are verified in a first pass and streamed in a second.
const CAT_BUFFER_LIMIT: u64 = 32 << 20;
/// The read size when storing: large enough for BLAKE3's threads to share the hashing.
const INGEST_BUFFER: usize = 4 << 20;

/// Counters kept for `keel store stats`, summed over the store's lifetime.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub ac_hits: AtomicU64,
    pub ac_misses: AtomicU64,
    pub stat_hits: AtomicU64,
    pub stat_misses: AtomicU64,
    pub blobs_written: AtomicU64,
    pub blobs_deduplicated: AtomicU64,
    pub objects_read: AtomicU64,
    pub damaged_on_read: AtomicU64,
}

impl Counters {
    pub(crate) const NAMES: [&'static str; 8] = [
        "ac_hits",
        "ac_misses",
        "stat_hits",
        "stat_misses",
        "blobs_written",
        "blobs_deduplicated",
        "objects_read",
        "damaged_on_read",
    ];

    pub(crate) fn all(&self) -> [&AtomicU64; 8] {
        [
            &self.ac_hits,
            &self.ac_misses,
            &self.stat_hits,
            &self.stat_misses,
            &self.blobs_written,
            &self.blobs_deduplicated,
            &self.objects_read,
            &self.damaged_on_read,
        ]
    }
}

/// Called when the store's lock is held by another process: gets the store's path and what
/// the holder wrote about itself.
pub type OnBlocked = Box<dyn FnOnce(&Path, &str) + Send>;

/// How to open a store.
#[derive(Default)]
pub struct StoreOptions {
    /// Called once, before blocking, when another process holds the store's lock; gets the
    /// store's path and what the holder wrote about itself ("pid 123: keel build").
    pub on_blocked: Option<OnBlocked>,
    /// Fail with [`StoreError::Busy`] instead of waiting when another process holds the
    /// lock (for readers that can do without the store).
    pub no_wait: bool,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions").finish_non_exhaustive()
    }
}

/// A content-addressed store rooted at one directory, owned by this process while open.
///
/// Dropping it flushes the index and releases the lock.
pub struct Store {
    pub(crate) root: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) ac: sled::Tree,
    pub(crate) stat: sled::Tree,
    pub(crate) roots: sled::Tree,
    /// Target name -> the key of its newest build (see [`Store::target_set`]).
    pub(crate) targets: sled::Tree,
    pub(crate) meta: sled::Tree,
    pub(crate) atime: sled::Tree,
    pub(crate) counters: Counters,
    /// Last-use times not yet written to the index, by (kind, hash).
    pub(crate) pending_atime: Mutex<HashMap<(u8, [u8; 32]), u64>>,
    /// Plain (uncompressed, sparse) copies of blobs ingested by this process with
    /// [`BlobIngest::keep_plain`], each verified with the ingest and taken by the blob's
    /// next [`Store::materialize_blob`]. Deleted with the store if never taken.
    plain: Mutex<HashMap<BlobDigest, tempfile::TempPath>>,
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Store {
    /// Whether a store has been created at `root` (opening one creates it).
    pub fn exists(root: &Path) -> bool {
        root.join(FORMAT_FILE).is_file()
    }

    /// Opens (creating if needed) the store at `root`, waiting for another process's lock.
    pub fn open(root: &Path) -> Result<Store> {
        Store::open_with(root, StoreOptions::default())
    }

    /// Opens the store with options.
    pub fn open_with(root: &Path, opts: StoreOptions) -> Result<Store> {
        fs::create_dir_all(root).map_err(StoreError::io("create store directory", root))?;
        let root =
            fs::canonicalize(root).map_err(StoreError::io("resolve store directory", root))?;
        let lock = acquire_lock(&root, opts.on_blocked, opts.no_wait)?;
        check_format(&root)?;
        for dir in [TMP_DIR, QUARANTINE_DIR] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(StoreError::io("create directory", &p))?;
        }
        for kind in ObjectKind::ALL {
            let p = root.join(kind.dir_name());
            fs::create_dir_all(&p).map_err(StoreError::io("create directory", &p))?;
        }
        let (db, rebuilt) = open_index(&root)?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Index {
                path: root.join(INDEX_DIR),
                source,
            })
        };
        let store = Store {
            ac: tree("ac")?,
            stat: tree("stat")?,
            roots: tree("roots")?,
            targets: tree("targets")?,
            meta: tree("meta")?,
            atime: tree("atime")?,
            db,
            root,
            counters: Counters::default(),
            pending_atime: Mutex::new(HashMap::new()),
            plain: Mutex::new(HashMap::new()),
            _lock: lock,
        };
        // A process that died while it held the store may have recorded actions whose
        // index entries never reached the disk: the record files are the truth, so index
        // them again. The same after the index itself had to be rebuilt.
        let unclean = store
            .meta
            .get(b"open")
            .ok()
            .flatten()
            .is_some_and(|v| v.as_ref() == [1]);
        // An index that opens but never had its format stamped is new (or was silently
        // emptied): records already on disk must be indexed.
        let stamped = store.meta.get(b"index-format").ok().flatten().is_some();
        let rebuilt = rebuilt || (!stamped && has_records(&store.root));
        if unclean || rebuilt {
            let n = store.reindex_records()?;
            tracing::info!(records = n, unclean, rebuilt, "re-indexed action records");
        }
        store
            .meta
            .insert(b"index-format", &[INDEX_FORMAT])
            .map_err(|e| store.index_err(e))?;
        store
            .meta
            .insert(b"open", &[1u8])
            .map_err(|e| store.index_err(e))?;
        store.db.flush().map_err(|e| store.index_err(e))?;
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn index_err(&self, source: sled::Error) -> StoreError {
        StoreError::Index {
            path: self.root.join(INDEX_DIR),
            source,
        }
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    pub(crate) fn path_of<K: DigestKind>(&self, kind: ObjectKind, digest: &Digest<K>) -> PathBuf {
        object::object_path(&self.root, kind, &digest.to_hex())
    }

    pub(crate) fn touch(&self, kind: ObjectKind, hash: &[u8; 32]) {
        if let Ok(mut m) = self.pending_atime.lock() {
            m.insert((kind.byte(), *hash), now_secs());
        }
    }

    /// Writes pending last-use times and counters to the index, and flushes it.
    pub fn flush(&self) -> Result<()> {
        let pending = match self.pending_atime.lock() {
            Ok(mut m) => std::mem::take(&mut *m),
            Err(_) => HashMap::new(),
        };
        let mut batch = sled::Batch::default();
        for ((kind, hash), secs) in pending {
            let mut k = Vec::with_capacity(33);
            k.push(kind);
            k.extend_from_slice(&hash);
            batch.insert(k, &secs.to_le_bytes());
        }
        self.atime
            .apply_batch(batch)
            .map_err(|e| self.index_err(e))?;
        for (name, counter) in Counters::NAMES.iter().zip(self.counters.all()) {
            let add = counter.swap(0, Ordering::Relaxed);
            if add == 0 {
                continue;
            }
            let key = format!("counter/{name}");
            self.meta
                .update_and_fetch(key.as_bytes(), |old| {
                    let old = old
                        .and_then(|o| o.try_into().ok())
                        .map(u64::from_le_bytes)
                        .unwrap_or(0);
                    Some((old + add).to_le_bytes().to_vec())
                })
                .map_err(|e| self.index_err(e))?;
        }
        self.db.flush().map_err(|e| self.index_err(e))?;
        Ok(())
    }

    // ---- blobs ------------------------------------------------------------------------

    /// Stores `bytes` as a blob.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<BlobDigest> {
        let digest = BlobDigest::of_bytes(bytes);
        if self.has_object(ObjectKind::Blob, &digest) {
            self.counters
                .blobs_deduplicated
                .fetch_add(1, Ordering::Relaxed);
            self.touch(ObjectKind::Blob, digest.hash());
            return Ok(digest);
        }
        self.put_object::<BlobKind>(ObjectKind::Blob, CompressHint::Auto, |w| w.write(bytes))
    }

    /// Stores everything `reader` yields as a blob, streaming: memory use does not grow
    /// with the size of the input.
    pub fn put_reader(&self, reader: impl Read, hint: CompressHint) -> Result<BlobDigest> {
        self.put_object::<BlobKind>(ObjectKind::Blob, hint, |w| stream_into(w, reader, None))
    }

    /// Stores a file's contents as a blob. A file the stat cache knows unchanged, whose
    /// blob is already stored, is not read at all.
    pub fn put_file(&self, path: &Path) -> Result<BlobDigest> {
        if let Some(digest) = self.stat_lookup(path)?.digest()
            && self.has_object(ObjectKind::Blob, &digest)
        {
            self.counters
                .blobs_deduplicated
                .fetch_add(1, Ordering::Relaxed);
            self.touch(ObjectKind::Blob, digest.hash());
            return Ok(digest);
        }
        let file = File::open(path).map_err(StoreError::io("open", path))?;
        let before = file.metadata().map_err(StoreError::io("stat", path))?;
        // Plain reads into one buffer rather than memory maps: mapped pages of a source
        // file were seen to stay resident while the kernel was under dirty-page pressure,
        // which broke the bounded-memory promise. Reading costs one copy, which the write
        // to the store needs anyway.
        let hint = CompressHint::for_path(path);
        let digest = self.put_object::<BlobKind>(ObjectKind::Blob, hint, |w| {
            stream_into(w, &file, Some(before.len()))
        })?;
        self.stat_record(path, &before, digest)?;
        Ok(digest)
    }

    pub(crate) fn put_object<K: DigestKind>(
        &self,
        kind: ObjectKind,
        hint: CompressHint,
        fill: impl FnOnce(&mut ObjectWriter<K>) -> io::Result<()>,
    ) -> Result<Digest<K>> {
        let mut w = self.object_writer(kind, hint)?;
        let tmp_dir = self.tmp_dir();
        fill(&mut w).map_err(StoreError::io("write temporary object in", &tmp_dir))?;
        self.commit(kind, w, None)
    }

    fn object_writer<K: DigestKind>(
        &self,
        kind: ObjectKind,
        hint: CompressHint,
    ) -> Result<ObjectWriter<K>> {
        let tmp_dir = self.tmp_dir();
        ObjectWriter::<K>::new(&tmp_dir, kind, hint)
            .map_err(StoreError::io("create temporary object in", &tmp_dir))
    }

    /// Finishes a written object and moves it into place, unless `expected` is given and
    /// the bytes turned out to be something else: then nothing is stored. Returns the
    /// digest of what was written either way.
    fn commit<K: DigestKind>(
        &self,
        kind: ObjectKind,
        w: ObjectWriter<K>,
        expected: Option<&Digest<K>>,
    ) -> Result<Digest<K>> {
        let tmp_dir = self.tmp_dir();
        let (digest, tmp) = w
            .finish()
            .map_err(StoreError::io("write temporary object in", &tmp_dir))?;
        if expected.is_some_and(|e| *e != digest) {
            return Ok(digest);
        }
        let dest = self.path_of(kind, &digest);
        // An object already there is kept only if it is intact: a damaged one (a torn or
        // flipped copy) is replaced by the good bytes just written, not left to be found
        // on the next read.
        if dest.exists() && !object::is_intact(&dest, kind, digest) {
            tracing::warn!(path = %dest.display(), "damaged object replaced by a good copy");
            self.counters
                .damaged_on_read
                .fetch_add(1, Ordering::Relaxed);
            self.quarantine(kind, &digest.to_hex(), &dest);
        }
        let created = object::persist(tmp, &dest)
            .map_err(StoreError::io("move object into place at", &dest))?;
        if kind == ObjectKind::Blob {
            let c = if created {
                &self.counters.blobs_written
            } else {
                &self.counters.blobs_deduplicated
            };
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.touch(kind, digest.hash());
        Ok(digest)
    }

    /// Starts taking in a blob whose digest is known in advance (a download): the bytes
    /// are hashed and compressed as they arrive, and stored only if they match. See
    /// [`BlobIngest`].
    pub fn ingest(&self, hint: CompressHint) -> BlobIngest<'_> {
        BlobIngest {
            store: self,
            hint,
            writer: None,
            keep_plain: false,
            plain: None,
        }
    }

    /// Whether an object is present (not whether it is intact: reads verify that).
    pub(crate) fn has_object<K: DigestKind>(&self, kind: ObjectKind, digest: &Digest<K>) -> bool {
        self.path_of(kind, digest).is_file()
    }

    /// Whether the blob is present in the store.
    pub fn contains_blob(&self, digest: &BlobDigest) -> bool {
        self.has_object(ObjectKind::Blob, digest)
    }

    /// Opens an object for verified reading, quarantining it when its header is damaged.
    pub(crate) fn open_object<K: DigestKind>(
        &self,
        kind: ObjectKind,
        digest: &Digest<K>,
    ) -> Result<VerifyingReader<K>> {
        let path = self.path_of(kind, digest);
        match VerifyingReader::open(&path, kind, *digest) {
            Ok(r) => {
                self.counters.objects_read.fetch_add(1, Ordering::Relaxed);
                self.touch(kind, digest.hash());
                Ok(r)
            }
            Err(f) => Err(self.read_failure(kind, &digest.to_hex(), path, f)),
        }
    }

    /// Turns a failed read into an error, quarantining a damaged object so that it is never
    /// served and the next put of the same content writes a good copy.
    pub(crate) fn read_failure(
        &self,
        kind: ObjectKind,
        hex: &str,
        path: PathBuf,
        f: ReadFailure,
    ) -> StoreError {
        match f {
            ReadFailure::Missing => StoreError::NotFound {
                kind: kind.name(),
                digest: hex.to_owned(),
            },
            ReadFailure::Io(source) => StoreError::Io {
                action: "read object",
                path,
                source,
            },
            ReadFailure::Damaged(why) => {
                self.counters
                    .damaged_on_read
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%hex, path = %path.display(), %why, "damaged object quarantined");
                self.quarantine(kind, hex, &path);
                StoreError::Damaged {
                    kind: kind.name(),
                    digest: hex.to_owned(),
                    path,
                    why,
                }
            }
        }
    }

    /// Moves a damaged object out of the way (into `quarantine/new/`, where `verify`
    /// reports it).
    pub(crate) fn quarantine(&self, kind: ObjectKind, hex: &str, path: &Path) {
        let dir = self.root.join(QUARANTINE_DIR).join("new");
        let _ = fs::create_dir_all(&dir);
        let dest = dir.join(format!("{}-{hex}-{}", kind.dir_name(), now_millis()));
        if let Err(e) = fs::rename(path, &dest) {
            // Could not move it: delete it rather than leave it to be served.
            tracing::warn!(path = %path.display(), error = %e, "could not quarantine; removing");
            let _ = fs::remove_file(path);
        }
    }

    /// Reads a whole object, verified, into memory.
    pub(crate) fn read_object<K: DigestKind>(
        &self,
        kind: ObjectKind,
        digest: &Digest<K>,
    ) -> Result<Vec<u8>> {
        let mut r = self.open_object(kind, digest)?;
        let mut out = Vec::with_capacity(r.declared_size().min(1 << 30) as usize);
        match r.read_to_end(&mut out) {
            Ok(_) => Ok(out),
            Err(e) => Err(self.read_failure(
                kind,
                &digest.to_hex(),
                self.path_of(kind, digest),
                object::classify(e),
            )),
        }
    }

    /// Reads a blob into memory. Its bytes are verified against the digest first.
    pub fn read_blob(&self, digest: &BlobDigest) -> Result<Vec<u8>> {
        self.read_object(ObjectKind::Blob, digest)
    }

    /// Writes a blob to `out`, never writing a byte that has not been verified: small blobs
    /// are verified in memory, large ones in a first pass (and again while streaming).
    pub fn write_blob_to(&self, digest: &BlobDigest, out: &mut dyn Write) -> Result<u64> {
        let mut r = self.open_object(ObjectKind::Blob, digest)?;
        let size = r.declared_size();
        let path = self.path_of(ObjectKind::Blob, digest);
        let fail = |e: io::Error| {
            self.read_failure(
                ObjectKind::Blob,
                &digest.to_hex(),
                path.clone(),
                object::classify(e),
            )
        };
        if size <= CAT_BUFFER_LIMIT {
            // Small enough to hold: read and verify all of it, then write.
            let mut bytes = Vec::with_capacity(size as usize);
            r.read_to_end(&mut bytes).map_err(fail)?;
            out.write_all(&bytes)
                .map_err(StoreError::io("write blob to", "output"))?;
            return Ok(bytes.len() as u64);
        }
        io::copy(&mut r, &mut io::sink()).map_err(fail)?;
        let mut r = self.open_object(ObjectKind::Blob, digest)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(e)),
            };
            out.write_all(&buf[..n])
                .map_err(StoreError::io("write blob to", "output"))?;
            total += n as u64;
        }
        Ok(total)
    }

    /// Writes a blob to a file at `dest` (replacing it), verified before it appears there.
    pub fn materialize_blob(&self, digest: &BlobDigest, dest: &Path, mode: u32) -> Result<()> {
        let plain = self
            .plain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(digest);
        if let Some(plain) = plain {
            use std::os::unix::fs::PermissionsExt;
            // Verified as it was ingested (the same bytes were hashed and written); moved
            // into place whole. Another filesystem (EXDEV) falls back to a copy below.
            if fs::set_permissions(&plain, fs::Permissions::from_mode(mode)).is_ok()
                && plain.persist(dest).is_ok()
            {
                return Ok(());
            }
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".keel-")
            .tempfile_in(dir)
            .map_err(StoreError::io("create temporary file in", dir))?;
        let mut r = self.open_object(ObjectKind::Blob, digest)?;
        if let Err(e) = copy_sparse(&mut r, tmp.as_file_mut()) {
            return Err(match object::classify(e) {
                ReadFailure::Io(source) => StoreError::Io {
                    action: "write",
                    path: dest.to_owned(),
                    source,
                },
                f => self.read_failure(
                    ObjectKind::Blob,
                    &digest.to_hex(),
                    self.path_of(ObjectKind::Blob, digest),
                    f,
                ),
            });
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))
            .map_err(StoreError::io("set permissions of", dest))?;
        tmp.persist(dest).map_err(|e| StoreError::Io {
            action: "write",
            path: dest.to_owned(),
            source: e.error,
        })?;
        Ok(())
    }
}

/// A blob arriving in pieces from elsewhere, whose digest the sender claimed: streamed
/// into a temporary object (hashed and compressed on the way, never held whole in memory)
/// and moved into the store only by [`BlobIngest::finish`], and only if it is the claimed
/// blob. An attempt that fails halfway is discarded by [`BlobIngest::restart`] or by
/// dropping the ingest.
pub struct BlobIngest<'s> {
    store: &'s Store,
    hint: CompressHint,
    writer: Option<ObjectWriter<BlobKind>>,
    keep_plain: bool,
    /// The plain copy being written, and how far.
    plain: Option<(File, tempfile::TempPath, u64)>,
}

impl std::fmt::Debug for BlobIngest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobIngest")
            .field("store", &self.store.root())
            .field("hint", &self.hint)
            .field("started", &self.writer.is_some())
            .finish()
    }
}

impl BlobIngest<'_> {
    /// The store the blob goes to.
    pub fn store_root(&self) -> &Path {
        self.store.root()
    }

    /// Also writes the bytes out plain (zero blocks left as holes), for the blob's next
    /// [`Store::materialize_blob`] in this process to move into place instead of
    /// decompressing, hashing and writing the stored object again: for a large blob
    /// fetched to be published or built with.
    pub fn keep_plain(mut self) -> Self {
        self.keep_plain = true;
        self
    }

    /// Discards whatever was written and starts again from the first byte.
    pub fn restart(&mut self) -> Result<()> {
        let w = self.store.object_writer(ObjectKind::Blob, self.hint)?;
        self.writer = Some(w.receiving());
        self.plain = None;
        if self.keep_plain {
            let tmp_dir = self.store.tmp_dir();
            let (file, path) = tempfile::Builder::new()
                .prefix("plain-")
                .tempfile_in(&tmp_dir)
                .map_err(StoreError::io("create temporary file in", &tmp_dir))?
                .into_parts();
            self.plain = Some((file, path, 0));
        }
        Ok(())
    }

    /// Takes in the next bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.writer.is_none() {
            self.restart()?;
        }
        let tmp_err = || StoreError::io("write temporary object in", self.store.tmp_dir());
        let w = self.writer.as_mut().expect("started above");
        w.write(bytes).map_err(tmp_err())?;
        if let Some((file, _, at)) = &mut self.plain {
            *at += write_sparse(&mut &bytes[..], file, *at).map_err(tmp_err())?;
        }
        Ok(())
    }

    /// Ends the blob: returns the digest of the bytes written since the last restart, and
    /// stores them only if that is `expected`.
    pub fn finish(&mut self, expected: &BlobDigest) -> Result<BlobDigest> {
        if self.writer.is_none() {
            self.restart()?;
        }
        let w = self.writer.take().expect("started above");
        let digest = self.store.commit(ObjectKind::Blob, w, Some(expected))?;
        if let Some((file, path, len)) = self.plain.take()
            && digest == *expected
            // Holes at the end are not written: the length makes them part of the file.
            && file.set_len(len).is_ok()
        {
            self.store
                .plain
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(digest, path);
        }
        Ok(digest)
    }
}

/// Reads into all of `buf` unless `r` ends first (then fewer bytes, and no error). A read
/// error comes back with the number of bytes read before it.
pub fn read_up_to<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut len = 0;
    while len < buf.len() {
        match r.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (len, Some(e)),
        }
    }
    (len, None)
}

/// Copies everything `r` yields into `f` from `offset` on, writing only the 4 KiB blocks
/// that are not all zeros: in a file that is new or sized beforehand, those stay holes,
/// which read back as zeros (a disk image is mostly unwritten space). Returns the bytes
/// copied; extending `f` past its last written block is the caller's business.
pub fn write_sparse(r: &mut impl Read, f: &File, offset: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt as _;
    const BLOCK: usize = 4096;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        // Fill the buffer so that blocks stay aligned to the copy's start.
        let (len, err) = read_up_to(r, &mut buf);
        if let Some(e) = err {
            return Err(e);
        }
        if len == 0 {
            break;
        }
        let at = offset + pos;
        let mut run: Option<usize> = None; // start of the data blocks not yet written
        for start in (0..len).step_by(BLOCK) {
            let block = &buf[start..(start + BLOCK).min(len)];
            let zero = block == &ZEROS[..block.len()];
            match (zero, run) {
                (true, Some(from)) => {
                    f.write_all_at(&buf[from..start], at + from as u64)?;
                    run = None;
                }
                (false, None) => run = Some(start),
                _ => {}
            }
        }
        if let Some(from) = run {
            f.write_all_at(&buf[from..len], at + from as u64)?;
        }
        pos += len as u64;
        if len < buf.len() {
            break;
        }
    }
    Ok(pos)
}

/// Copies `r` into the empty file `f` with [`write_sparse`], then sets its length.
fn copy_sparse(r: &mut impl Read, f: &mut File) -> io::Result<u64> {
    let len = write_sparse(r, f, 0)?;
    f.set_len(len)?;
    Ok(len)
}

/// Feeds everything `reader` yields to `w`, through one buffer: [`INGEST_BUFFER`], or
/// just over `size` when that is smaller (the input's expected length; zeroing 4 MiB for
/// every small file was most of what storing one cost).
fn stream_into<K: DigestKind>(
    w: &mut ObjectWriter<K>,
    mut reader: impl Read,
    size: Option<u64>,
) -> io::Result<()> {
    let len = size.map_or(INGEST_BUFFER, |s| {
        usize::try_from(s)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .clamp(8 << 10, INGEST_BUFFER)
    });
    let mut buf = vec![0u8; len];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => w.write(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "could not flush the store index");
        }
        if self.meta.insert(b"open", &[0u8]).is_ok() {
            let _ = self.db.flush();
        }
    }
}

fn acquire_lock(root: &Path, on_blocked: Option<OnBlocked>, no_wait: bool) -> Result<File> {
    let path = root.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(StoreError::io("open lock file", &path))?;
    // SAFETY: flock on a file descriptor we own.
    let try_lock = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if try_lock != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(StoreError::Io {
                action: "lock",
                path,
                source: err,
            });
        }
        let mut holder = String::new();
        let _ = (&file).read_to_string(&mut holder);
        if no_wait {
            return Err(StoreError::Busy {
                path: root.to_path_buf(),
                holder: holder.trim().to_owned(),
            });
        }
        if let Some(f) = on_blocked {
            f(root, holder.trim());
        }
        loop {
            // SAFETY: as above; blocks until the holder releases the lock or exits.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(StoreError::Io {
                    action: "lock",
                    path,
                    source: err,
                });
            }
        }
    }
    let who = holder_note(std::process::id(), std::env::args());
    let _ = file.set_len(0);
    let _ = file.write_all(who.as_bytes());
    Ok(file)
}

/// What the lock holder writes about itself, and a waiting process prints: its pid and
/// command line, cut at 120 characters (a build may name hundreds of packages).
fn holder_note(pid: u32, args: impl Iterator<Item = String>) -> String {
    let mut command = args.collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = command.char_indices().nth(120) {
        command.truncate(cut);
        command.push('…');
    }
    format!("pid {pid}: {command}\n")
}

fn check_format(root: &Path) -> Result<()> {
    let path = root.join(FORMAT_FILE);
    let expected = format!("keel-store {STORE_FORMAT}");
    match fs::read_to_string(&path) {
        Ok(found) if found.trim() == expected => Ok(()),
        Ok(found) => Err(StoreError::Format {
            path: root.to_owned(),
            found: found.trim().to_owned(),
            expected: STORE_FORMAT,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let non_empty = fs::read_dir(root)
                .map_err(StoreError::io("list", root))?
                .filter_map(|e| e.ok())
                .any(|e| e.file_name() != LOCK_FILE);
            if non_empty {
                return Err(StoreError::Format {
                    path: root.to_owned(),
                    found: "no FORMAT file in a non-empty directory".into(),
                    expected: STORE_FORMAT,
                });
            }
            fs::write(&path, format!("{expected}\n")).map_err(StoreError::io("write", &path))
        }
        Err(e) => Err(StoreError::Io {
            action: "read",
            path,
            source: e,
        }),
    }
}

/// Opens the sled index; if it is damaged, moves it aside and starts a fresh one (the
/// caller re-indexes from the record files). Returns whether it was rebuilt.
fn open_index(root: &Path) -> Result<(sled::Db, bool)> {
    let path = root.join(INDEX_DIR);
    let open = |p: &Path| {
        sled::Config::new()
            .path(p)
            .cache_capacity(INDEX_CACHE_BYTES)
            .flush_every_ms(Some(1000))
            .open()
    };
    let existed = path.exists();
    match open(&path) {
        Ok(db) => Ok((db, !existed && has_records(root))),
        Err(e) => {
            let aside = root.join(format!("{INDEX_DIR}.damaged-{}", now_millis()));
            tracing::warn!(error = %e, path = %path.display(), aside = %aside.display(),
                "the store index is damaged; moving it aside and rebuilding it");
            fs::rename(&path, &aside).map_err(StoreError::io("move damaged index aside", &path))?;
            let db = open(&path).map_err(|source| StoreError::Index {
                path: path.clone(),
                source,
            })?;
            Ok((db, true))
        }
    }
}

fn has_records(root: &Path) -> bool {
    fs::read_dir(root.join(ObjectKind::Record.dir_name()))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    #[test]
    fn a_reader_that_cannot_wait_is_told_who_holds_the_store() {
        let (dir, held) = store();
        let opts = StoreOptions {
            on_blocked: Some(Box::new(|_, _| panic!("waited"))),
            no_wait: true,
        };
        match Store::open_with(&dir.path().join("store"), opts) {
            Err(StoreError::Busy { holder, .. }) => {
                assert!(
                    holder.starts_with(&format!("pid {}: ", std::process::id())),
                    "{holder}"
                );
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        drop(held);
        let opts = StoreOptions {
            no_wait: true,
            ..StoreOptions::default()
        };
        Store::open_with(&dir.path().join("store"), opts).unwrap();
    }

    #[test]
    fn the_holders_note_is_cut_to_a_line() {
        let args = ["keel", "build", "-k"].map(String::from).into_iter();
        assert_eq!(holder_note(7, args), "pid 7: keel build -k\n");
        let many = std::iter::once("keel".to_owned()).chain((0..300).map(|i| format!("pkg{i}")));
        let note = holder_note(7, many);
        assert!(note.starts_with("pid 7: keel pkg0 pkg1 "), "{note}");
        assert!(
            note.ends_with("…\n") && note.chars().count() < 140,
            "{note}"
        );
    }

    #[test]
    fn a_put_replaces_a_damaged_copy_of_the_same_object() {
        let (_dir, store) = store();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let d = store.put_bytes(&bytes).unwrap();
        let path = store.path_of(ObjectKind::Blob, &d);
        // Damage the stored copy behind the store's back (a torn write, a bad sector).
        let mut on_disk = fs::read(&path).unwrap();
        let last = on_disk.len() - 1;
        on_disk[last] ^= 0xff;
        fs::write(&path, &on_disk).unwrap();
        // Writing the same bytes again must leave a good copy, not keep the damaged one.
        let put = || store.put_reader(&bytes[..], CompressHint::Auto).unwrap();
        assert_eq!(put(), d);
        assert!(object::is_intact(&path, ObjectKind::Blob, d));
        assert_eq!(store.read_blob(&d).unwrap(), bytes);
        // And an intact object is left as it is (the same file, not rewritten).
        let inode = fs::metadata(&path).unwrap().ino();
        assert_eq!(put(), d);
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
    }

    #[test]
    fn an_ingested_blob_is_stored_only_if_it_is_the_one_claimed() {
        let (_dir, store) = store();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let claimed = BlobDigest::of_bytes(&bytes);

        // A first attempt dies halfway; the second starts over and completes.
        let mut ingest = store.ingest(CompressHint::Auto);
        ingest.write(&bytes[..1000]).unwrap();
        ingest.restart().unwrap();
        for chunk in bytes.chunks(4096) {
            ingest.write(chunk).unwrap();
        }
        assert_eq!(ingest.finish(&claimed).unwrap(), claimed);
        assert_eq!(store.read_blob(&claimed).unwrap(), bytes);

        // Other bytes under the same claim: their own digest is returned, nothing stored.
        let (_dir2, store) = self::store();
        let mut ingest = store.ingest(CompressHint::Auto);
        ingest.write(&bytes[1..]).unwrap();
        let got = ingest.finish(&claimed).unwrap();
        assert_ne!(got, claimed);
        assert!(!store.contains_blob(&claimed));
        assert!(!store.contains_blob(&got));
        assert_eq!(
            fs::read_dir(store.tmp_dir()).unwrap().count(),
            0,
            "no leftovers"
        );
    }

    #[test]
    fn materialized_zeros_are_holes_and_read_back_the_same() {
        let (dir, store) = store();
        // 3 MiB: data, 2 MiB of zeros, data cut mid-block, and a zero tail.
        let mut bytes = vec![0u8; 3 << 20];
        bytes[..5000].fill(1);
        bytes[(5 << 19) + 100..(5 << 19) + 9000].fill(2);
        bytes[(3 << 20) - 4096 - 10] = 3;
        let d = store.put_bytes(&bytes).unwrap();
        let dest = dir.path().join("disk.raw");
        store.materialize_blob(&d, &dest, 0o644).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        let meta = fs::metadata(&dest).unwrap();
        assert_eq!(meta.len(), bytes.len() as u64);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "{} bytes allocated for about 20 KiB of data",
            meta.blocks() * 512
        );
        // All zeros, and empty.
        for bytes in [vec![0u8; 10_000], Vec::new()] {
            let d = store.put_bytes(&bytes).unwrap();
            store.materialize_blob(&d, &dest, 0o644).unwrap();
            assert_eq!(fs::read(&dest).unwrap(), bytes);
        }
    }

    #[test]
    fn a_download_is_stored_as_frames_that_read_back_whole() {
        let (_dir, store) = store();
        // Compressible data, whole zero frames, and a partial last frame, fed in pieces
        // that straddle the frame boundaries.
        let mut bytes: Vec<u8> = (0..(7u32 << 19) + 12_345).map(|i| (i % 13) as u8).collect();
        bytes[(1 << 20) + 5..(3 << 20) + 77].fill(0);
        let claimed = BlobDigest::of_bytes(&bytes);
        let mut ingest = store.ingest(CompressHint::Auto);
        let mut at = 0;
        for len in [1, 999_999, 2 << 20, 3, usize::MAX] {
            let end = at + len.min(bytes.len() - at);
            ingest.write(&bytes[at..end]).unwrap();
            at = end;
        }
        assert_eq!(ingest.finish(&claimed).unwrap(), claimed);
        assert_eq!(store.read_blob(&claimed).unwrap(), bytes);
        let mut out = Vec::new();
        store.write_blob_to(&claimed, &mut out).unwrap();
        assert_eq!(out, bytes);
        let stored = fs::metadata(store.path_of(ObjectKind::Blob, &claimed)).unwrap();
        assert!(
            stored.len() < bytes.len() as u64 / 20,
            "{} bytes stored",
            stored.len()
        );
    }

    #[test]
    fn a_plain_copy_is_moved_into_place_once_and_only_if_verified() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = store();
        // Mostly zeros with a zero tail, fed in uneven pieces after a false start.
        let mut bytes = vec![0u8; 3 << 20];
        bytes[..5000].fill(1);
        bytes[(1 << 20) + 7..(1 << 20) + 70_000].fill(2);
        let claimed = BlobDigest::of_bytes(&bytes);
        let mut ingest = store.ingest(CompressHint::Auto).keep_plain();
        ingest.write(&[9; 5000]).unwrap();
        ingest.restart().unwrap();
        for chunk in bytes.chunks(300_001) {
            ingest.write(chunk).unwrap();
        }
        assert_eq!(ingest.finish(&claimed).unwrap(), claimed);
        let tmp_files = || fs::read_dir(store.tmp_dir()).unwrap().count();
        assert_eq!(tmp_files(), 1, "the plain copy waits in the store's tmp");

        let dest = dir.path().join("disk.raw");
        store.materialize_blob(&claimed, &dest, 0o640).unwrap();
        assert_eq!(tmp_files(), 0, "moved, not copied");
        assert_eq!(fs::read(&dest).unwrap(), bytes);
        let meta = fs::metadata(&dest).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert!(meta.blocks() * 512 < 1 << 20, "zero blocks are holes");
        // A second destination is written from the stored object.
        let again = dir.path().join("again.raw");
        store.materialize_blob(&claimed, &again, 0o644).unwrap();
        assert_eq!(fs::read(&again).unwrap(), bytes);
        assert_eq!(fs::read(&dest).unwrap(), bytes);

        // Bytes that are not the claimed blob leave no plain copy behind.
        let (_dir2, store) = self::store();
        let mut ingest = store.ingest(CompressHint::Auto).keep_plain();
        ingest.write(&bytes[1..]).unwrap();
        assert_ne!(ingest.finish(&claimed).unwrap(), claimed);
        drop(ingest);
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        assert!(store.materialize_blob(&claimed, &dest, 0o644).is_err());
    }
}
