//! The on-disk object format shared by blobs, tree manifests and action records.
//!
//! An object file is a fixed 24-byte header followed by the payload, raw or zstd-compressed:
//!
//! ```text
//! 0..7   b"KEELOBJ"       magic
//! 7      FORMAT_VERSION   bumps when this layout changes
//! 8      kind             0 blob, 1 tree, 2 action record
//! 9      encoding         0 raw, 1 zstd
//! 10..16 reserved (zero)
//! 16..24 logical size     u64 little-endian, the uncompressed length
//! ```
//!
//! The file's name is the hex digest of the logical bytes; nothing in the file is trusted
//! until those bytes have been hashed again. Objects are written to a temporary file in the
//! store, fsynced, then renamed into place, so a reader never sees a partial object and a
//! crash leaves at most an orphaned temporary file (removed by the next `gc`).

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{DigestHasher, DigestKind};

pub(crate) const MAGIC: &[u8; 7] = b"KEELOBJ";
pub(crate) const FORMAT_VERSION: u8 = 1;
pub(crate) const HEADER_LEN: usize = 24;

/// What an object holds; also the directory it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Blob,
    Tree,
    Record,
}

impl ObjectKind {
    pub(crate) const ALL: [ObjectKind; 3] =
        [ObjectKind::Blob, ObjectKind::Tree, ObjectKind::Record];

    pub(crate) fn byte(self) -> u8 {
        match self {
            ObjectKind::Blob => 0,
            ObjectKind::Tree => 1,
            ObjectKind::Record => 2,
        }
    }

    pub(crate) fn dir_name(self) -> &'static str {
        match self {
            ObjectKind::Blob => "blobs",
            ObjectKind::Tree => "trees",
            ObjectKind::Record => "actions",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Blob => "blob",
            ObjectKind::Tree => "tree",
            ObjectKind::Record => "action record",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Raw,
    Zstd,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub kind_byte: u8,
    pub encoding: Encoding,
    pub size: u64,
}

impl Header {
    pub(crate) fn encode(kind: ObjectKind, encoding: Encoding, size: u64) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..7].copy_from_slice(MAGIC);
        h[7] = FORMAT_VERSION;
        h[8] = kind.byte();
        h[9] = match encoding {
            Encoding::Raw => 0,
            Encoding::Zstd => 1,
        };
        h[16..24].copy_from_slice(&size.to_le_bytes());
        h
    }

    /// Parses a header; `Err` carries a description of what is wrong with it.
    pub(crate) fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, String> {
        if &bytes[..7] != MAGIC {
            return Err("bad magic".into());
        }
        if bytes[7] != FORMAT_VERSION {
            return Err(format!("unknown object format version {}", bytes[7]));
        }
        if bytes[10..16].iter().any(|&b| b != 0) {
            return Err("reserved header bytes are not zero".into());
        }
        let encoding = match bytes[9] {
            0 => Encoding::Raw,
            1 => Encoding::Zstd,
            other => return Err(format!("unknown encoding {other}")),
        };
        let size = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        Ok(Header {
            kind_byte: bytes[8],
            encoding,
            size,
        })
    }
}

/// File-name suffixes of formats that are already compressed: zstd would spend time and
/// gain nothing on them.
const COMPRESSED_SUFFIXES: &[&str] = &[
    ".gz",
    ".tgz",
    ".xz",
    ".txz",
    ".zst",
    ".tzst",
    ".bz2",
    ".tbz2",
    ".lz",
    ".lzma",
    ".lz4",
    ".rpm",
    ".zip",
    ".jar",
    ".7z",
    ".br",
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".webp",
    ".woff",
    ".woff2",
    ".squashfs",
    ".iso",
    ".qcow2",
    ".whl",
    ".gem",
    ".crate",
];

/// Whether to try compressing, given what is known of the content before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompressHint {
    /// Decide from the first bytes.
    Auto,
    /// Known compressed (by name or by the caller): store raw.
    Incompressible,
}

impl CompressHint {
    /// The hint for a file of this name.
    pub fn for_path(path: &Path) -> CompressHint {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase());
        match name {
            Some(n) if COMPRESSED_SUFFIXES.iter().any(|s| n.ends_with(s)) => {
                CompressHint::Incompressible
            }
            _ => CompressHint::Auto,
        }
    }
}

/// Objects smaller than this are never compressed: the zstd frame overhead and the extra
/// CPU on every read are not worth the few bytes.
const MIN_COMPRESS: usize = 512;
/// Compress only when a trial on the first bytes shrinks them at least this much.
const TRIAL_RATIO: f64 = 0.85;
const TRIAL_LEN: usize = 128 * 1024;
const ZSTD_LEVEL: i32 = 3;
/// The level for bytes arriving from a remote cache, compressed on the thread receiving
/// them: level 1 keeps up with a fast link where level 3 would not (here, 30% less CPU
/// for about 10% larger objects).
const RECEIVE_LEVEL: i32 = 1;
/// Writes at least this long hash and compress side by side in a single-threaded writer.
const PIPELINE_LEN: usize = 64 * 1024;

fn should_compress(hint: CompressHint, first: &[u8]) -> bool {
    if hint == CompressHint::Incompressible || first.len() < MIN_COMPRESS {
        return false;
    }
    let sample = &first[..first.len().min(TRIAL_LEN)];
    match compress_frame(1, sample) {
        Ok(c) => (c.len() as f64) < (sample.len() as f64) * TRIAL_RATIO,
        Err(_) => false,
    }
}

enum Sink {
    Undecided(File),
    Raw(File),
    Zstd(zstd::stream::write::Encoder<'static, File>),
    /// Independent zstd frames of [`FRAME_LEN`] bytes each (readers take concatenated
    /// frames as one stream): for bytes compressed on the thread that receives them.
    Frames {
        file: File,
        level: i32,
        pending: Vec<u8>,
    },
}

/// How much of the content each frame of a [`Sink::Frames`] object holds.
const FRAME_LEN: usize = 1 << 20;

/// A thread's zstd context for whole frames, at one level, and the frame it made for a
/// whole [`FRAME_LEN`] of zeros (zstd makes the same frame for the same input, and disk
/// images are mostly zeros).
struct FrameCompressor {
    level: i32,
    zstd: zstd::bulk::Compressor<'static>,
    zeros: Option<Vec<u8>>,
}

thread_local! {
    /// Made once per thread (and level), not per object.
    static FRAME_COMPRESSOR: std::cell::RefCell<Option<FrameCompressor>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's frame compressor for `level`.
fn with_frames<T>(
    level: i32,
    f: impl FnOnce(&mut FrameCompressor) -> io::Result<T>,
) -> io::Result<T> {
    FRAME_COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|c| c.level != level) {
            *c = Some(FrameCompressor {
                level,
                zstd: zstd::bulk::Compressor::new(level)?,
                zeros: None,
            });
        }
        f(c.as_mut().expect("made above"))
    })
}

/// `chunk` as one zstd frame, made with this thread's context.
fn compress_frame(level: i32, chunk: &[u8]) -> io::Result<Vec<u8>> {
    with_frames(level, |c| c.zstd.compress(chunk))
}

fn all_zeros(bytes: &[u8]) -> bool {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    bytes.chunks(ZEROS.len()).all(|c| c == &ZEROS[..c.len()])
}

/// Compresses `chunk` as one frame and writes it to `file`. One call to the bulk API
/// with a context kept for the thread is about a quarter cheaper than zstd's streaming
/// encoder, which copies its input into a window first.
fn write_frame(file: &mut File, level: i32, chunk: &[u8]) -> io::Result<()> {
    with_frames(level, |c| {
        if chunk.len() == FRAME_LEN && all_zeros(chunk) {
            if c.zeros.is_none() {
                c.zeros = Some(c.zstd.compress(chunk)?);
            }
            return file.write_all(c.zeros.as_deref().expect("made above"));
        }
        file.write_all(&c.zstd.compress(chunk)?)
    })
}

/// Streams one object into a temporary file while hashing it. [`ObjectWriter::finish`]
/// fsyncs the file and returns it with the digest; the caller renames it into place.
pub(crate) struct ObjectWriter<K: DigestKind> {
    kind: ObjectKind,
    hint: CompressHint,
    hasher: DigestHasher<K>,
    sink: Option<Sink>,
    tmp: Option<tempfile::TempPath>,
    /// Bytes held back until there are enough to decide on compression.
    pending: Vec<u8>,
    threads: u32,
    level: i32,
}

impl<K: DigestKind> ObjectWriter<K> {
    pub(crate) fn new(tmp_dir: &Path, kind: ObjectKind, hint: CompressHint) -> io::Result<Self> {
        let (file, tmp) = tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(tmp_dir)?
            .into_parts();
        let threads = rayon::current_num_threads().min(8) as u32;
        Ok(ObjectWriter {
            kind,
            hint,
            hasher: DigestHasher::new(),
            sink: Some(Sink::Undecided(file)),
            tmp: Some(tmp),
            pending: Vec::new(),
            threads,
            level: ZSTD_LEVEL,
        })
    }

    /// For bytes arriving from elsewhere: compresses on the calling thread only (downloads
    /// run side by side already, and zstd's worker threads would only compete with each
    /// other) and at [`RECEIVE_LEVEL`].
    pub(crate) fn receiving(mut self) -> Self {
        self.threads = 1;
        self.level = RECEIVE_LEVEL;
        self
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.threads == 1 && bytes.len() >= PIPELINE_LEN {
            // Hash while this thread compresses; the hash also spreads over idle cores
            // (the zero chunks of a disk image leave compression little to do).
            let mut hasher = std::mem::take(&mut self.hasher);
            let ((), written) = rayon::join(
                || {
                    hasher.update_parallel(bytes);
                },
                || self.write_payload(bytes),
            );
            self.hasher = hasher;
            return written;
        }
        self.hasher.update_parallel(bytes);
        self.write_payload(bytes)
    }

    fn write_payload(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.sink.as_mut().expect("writer used after finish") {
            Sink::Undecided(_) => {
                if self.pending.len() + bytes.len() < TRIAL_LEN {
                    self.pending.extend_from_slice(bytes);
                    return Ok(());
                }
                let mut first = std::mem::take(&mut self.pending);
                let take = (TRIAL_LEN - first.len()).min(bytes.len());
                first.extend_from_slice(&bytes[..take]);
                self.decide(&first, false)?;
                self.raw_write(&first)?;
                self.raw_write(&bytes[take..])
            }
            _ => self.raw_write(bytes),
        }
    }

    /// Chooses the encoding from the first bytes; `whole` when they are all there is.
    fn decide(&mut self, first: &[u8], whole: bool) -> io::Result<()> {
        let Some(Sink::Undecided(mut file)) = self.sink.take() else {
            return Ok(());
        };
        let compress = should_compress(self.hint, first);
        let encoding = if compress {
            Encoding::Zstd
        } else {
            Encoding::Raw
        };
        // The size is patched in at finish; it is unknown while streaming.
        file.write_all(&Header::encode(self.kind, encoding, 0))?;
        // A whole small object is one frame made with the thread's context: a fresh
        // streaming context per object spent most of storing a small file setting up
        // (and zeroing) its tables.
        self.sink = Some(if compress && (self.threads == 1 || whole) {
            Sink::Frames {
                file,
                level: self.level,
                pending: Vec::new(),
            }
        } else if compress {
            let mut enc = zstd::stream::write::Encoder::new(file, self.level)?;
            if first.len() >= TRIAL_LEN && self.threads > 1 {
                // Multithreaded zstd only pays on large inputs; ignore failure (a libzstd
                // built without threads) and compress on this thread.
                let _ = enc.multithread(self.threads);
            }
            Sink::Zstd(enc)
        } else {
            Sink::Raw(file)
        });
        Ok(())
    }

    fn raw_write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match self.sink.as_mut().expect("writer used after finish") {
            Sink::Raw(f) => f.write_all(bytes),
            Sink::Zstd(e) => e.write_all(bytes),
            Sink::Frames {
                file,
                level,
                pending,
            } => {
                let mut rest = bytes;
                if !pending.is_empty() {
                    let take = (FRAME_LEN - pending.len()).min(rest.len());
                    pending.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if pending.len() < FRAME_LEN {
                        return Ok(());
                    }
                    write_frame(file, *level, pending)?;
                    pending.clear();
                }
                // Whole frames straight from the caller's bytes; the rest waits.
                let mut frames = rest.chunks_exact(FRAME_LEN);
                for frame in &mut frames {
                    write_frame(file, *level, frame)?;
                }
                pending.extend_from_slice(frames.remainder());
                Ok(())
            }
            Sink::Undecided(_) => unreachable!("decided before writing"),
        }
    }

    /// Flushes, writes the final header, fsyncs. Returns the digest and the temporary file
    /// (deleted when dropped, unless the caller persists it).
    pub(crate) fn finish(mut self) -> io::Result<(crate::digest::Digest<K>, tempfile::TempPath)> {
        if matches!(self.sink, Some(Sink::Undecided(_))) {
            let first = std::mem::take(&mut self.pending);
            self.decide(&first, true)?;
            self.raw_write(&first)?;
        }
        let digest = self.hasher.finalize();
        let mut file = match self.sink.take().expect("finish called once") {
            Sink::Raw(f) => f,
            Sink::Zstd(e) => e.finish()?,
            Sink::Frames {
                mut file,
                level,
                pending,
            } => {
                if !pending.is_empty() {
                    write_frame(&mut file, level, &pending)?;
                }
                file
            }
            Sink::Undecided(_) => unreachable!("decided above"),
        };
        let mut header = [0u8; 8];
        header.copy_from_slice(&digest.size().to_le_bytes());
        write_at(&file, &header, 16)?;
        file.flush()?;
        file.sync_data()?;
        Ok((digest, self.tmp.take().expect("finish called once")))
    }
}

fn write_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset)
}

/// Moves a finished temporary object to `dest` unless an object is already there (objects
/// are immutable: the first writer wins, and an identical digest means identical bytes;
/// the caller replaces a damaged one first, see `Store::commit`). The directory is
/// fsynced after the rename, so that an object whose record was written survives a
/// crash: the file's own fsync does not make its name durable. Returns whether this call
/// created it.
pub(crate) fn persist(tmp: tempfile::TempPath, dest: &Path) -> io::Result<bool> {
    if dest.exists() {
        return Ok(false);
    }
    let parent = dest.parent();
    if let Some(parent) = parent {
        fs::create_dir_all(parent)?;
    }
    match tmp.persist_noclobber(dest) {
        Ok(()) => {
            if let Some(parent) = parent {
                sync_dir(parent)?;
            }
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

/// Makes the entries of `dir` (a rename into it) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether the object at `path` reads back as `digest` (its whole content hashed).
pub(crate) fn is_intact<K: DigestKind>(
    path: &Path,
    kind: ObjectKind,
    digest: crate::digest::Digest<K>,
) -> bool {
    match VerifyingReader::open(path, kind, digest) {
        Ok(mut r) => io::copy(&mut r, &mut io::sink()).is_ok(),
        Err(_) => false,
    }
}

/// Why an object could not be read back.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    Missing,
    Io(io::Error),
    /// The object exists but its bytes are wrong: the string says how.
    Damaged(String),
}

impl From<io::Error> for ReadFailure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            ReadFailure::Missing
        } else {
            ReadFailure::Io(e)
        }
    }
}

/// Buffer size for streaming reads of large objects.
const READ_BUF: usize = 256 * 1024;
/// Objects up to this size are decompressed in one go (see [`VerifyingReader::open`]).
const SMALL_OBJECT: u64 = 64 * 1024;

thread_local! {
    static SMALL_DECODER: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// A reader over an object's logical bytes that hashes them as they pass and fails at the
/// end if they do not match the expected digest. Callers that must not hand out unverified
/// bytes read to the end (or into a temporary) before using anything.
pub(crate) struct VerifyingReader<K: DigestKind> {
    inner: Box<dyn Read + Send>,
    hasher: DigestHasher<K>,
    expected: crate::digest::Digest<K>,
    declared_size: u64,
    done: bool,
    /// A read error held back while the bytes read before it were handed over.
    failed: Option<io::Error>,
}

impl<K: DigestKind> VerifyingReader<K> {
    pub(crate) fn open(
        path: &Path,
        kind: ObjectKind,
        expected: crate::digest::Digest<K>,
    ) -> Result<Self, ReadFailure> {
        let mut file = File::open(path)?;
        let mut hbytes = [0u8; HEADER_LEN];
        if let Err(e) = file.read_exact(&mut hbytes) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                ReadFailure::Damaged("truncated header".into())
            } else {
                ReadFailure::Io(e)
            });
        }
        let header = Header::decode(&hbytes).map_err(ReadFailure::Damaged)?;
        if header.kind_byte != kind.byte() {
            return Err(ReadFailure::Damaged(format!(
                "holds kind {} instead of a {}",
                header.kind_byte,
                kind.name()
            )));
        }
        let inner: Box<dyn Read + Send> = match header.encoding {
            // Small objects (action records, specs) are read by the thousand in a build:
            // a buffer their size, not a fresh 256 KiB one each time.
            Encoding::Raw => Box::new(BufReader::with_capacity(
                usize::try_from(header.size).map_or(READ_BUF, |n| n.clamp(64, READ_BUF)),
                file,
            )),
            Encoding::Zstd if header.size <= SMALL_OBJECT => {
                // Decompressed whole with this thread's decoder: creating a streaming
                // decoder (and its window) per small object dominated no-op builds. A
                // frame claiming more than the header's size is cut off there and then
                // fails verification like any other lie.
                let mut compressed = Vec::new();
                file.read_to_end(&mut compressed)?;
                let bytes = SMALL_DECODER.with(|d| {
                    let mut d = d.borrow_mut();
                    if d.is_none() {
                        *d = Some(zstd::bulk::Decompressor::new()?);
                    }
                    let dec = d.as_mut().expect("just created");
                    dec.decompress(&compressed, SMALL_OBJECT as usize)
                });
                match bytes {
                    Ok(b) => Box::new(io::Cursor::new(b)),
                    Err(e) => {
                        return Err(ReadFailure::Damaged(format!("zstd payload: {e}")));
                    }
                }
            }
            Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
        };
        Ok(VerifyingReader {
            inner,
            hasher: DigestHasher::new(),
            expected,
            declared_size: header.size,
            done: false,
            failed: None,
        })
    }

    pub(crate) fn declared_size(&self) -> u64 {
        self.declared_size
    }

    fn check(&self) -> io::Result<()> {
        let got = self.hasher.finalize();
        if got.hash() != self.expected.hash() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                DamagedData(format!(
                    "content hashes to {} ({} bytes)",
                    got.short(),
                    got.size()
                )),
            ));
        }
        if got.size() != self.declared_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                DamagedData(format!(
                    "header says {} bytes, content has {}",
                    self.declared_size,
                    got.size()
                )),
            ));
        }
        Ok(())
    }
}

/// The payload of an `io::Error` that means "the object's bytes are wrong", as opposed to
/// an I/O failure.
#[derive(Debug)]
pub(crate) struct DamagedData(pub String);
impl std::fmt::Display for DamagedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DamagedData {}

/// Classifies an error from reading a [`VerifyingReader`].
pub(crate) fn classify(e: io::Error) -> ReadFailure {
    if let Some(d) = e.get_ref().and_then(|i| i.downcast_ref::<DamagedData>()) {
        return ReadFailure::Damaged(d.0.clone());
    }
    // zstd reports corrupt frames as other/invalid-data errors.
    if e.kind() == io::ErrorKind::InvalidData
        || e.kind() == io::ErrorKind::Other
        || e.kind() == io::ErrorKind::UnexpectedEof
    {
        return ReadFailure::Damaged(format!("undecodable payload: {e}"));
    }
    ReadFailure::Io(e)
}

impl<K: DigestKind> Read for VerifyingReader<K> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.done {
            return Ok(0);
        }
        // The caller's whole buffer, not the decoder's block at a time: a large read (a
        // blob being published) then hashes on every core.
        let (n, err) = crate::store::read_up_to(&mut self.inner, buf);
        match err {
            Some(e) if n == 0 => return Err(e),
            // Hand over what was read; the error is the next call's answer.
            Some(e) => self.failed = Some(e),
            None => {}
        }
        if n == 0 {
            self.done = true;
            self.check()?;
            return Ok(0);
        }
        self.hasher.update_parallel(&buf[..n]);
        if self.hasher.finalize_size_exceeds(self.declared_size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                DamagedData(format!(
                    "content is longer than the {} bytes its header declares",
                    self.declared_size
                )),
            ));
        }
        Ok(n)
    }
}

impl<K: DigestKind> DigestHasher<K> {
    fn finalize_size_exceeds(&self, limit: u64) -> bool {
        self.size_so_far() > limit
    }
}

/// The path of an object of `kind` named by `hex` under the store root.
pub(crate) fn object_path(root: &Path, kind: ObjectKind, hex: &str) -> PathBuf {
    root.join(kind.dir_name()).join(&hex[..2]).join(&hex[2..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{BlobDigest, BlobKind};
    use proptest::prelude::*;

    fn write_then_read(data: &[u8], chunks: &[usize], hint: CompressHint) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ObjectWriter::<BlobKind>::new(dir.path(), ObjectKind::Blob, hint).unwrap();
        let mut rest = data;
        for &c in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = c.clamp(1, rest.len());
            w.write(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        let (digest, tmp) = w.finish().unwrap();
        assert_eq!(digest, BlobDigest::of_bytes(data));
        let dest = dir.path().join("obj");
        assert!(persist(tmp, &dest).unwrap());
        let mut r = VerifyingReader::open(&dest, ObjectKind::Blob, digest)
            .map_err(|_| ())
            .unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        /// Whatever the bytes and however they are split into writes, an object reads
        /// back as exactly those bytes, compressed or not.
        #[test]
        fn objects_round_trip(
            data in prop::collection::vec(prop_oneof![Just(b'a'), any::<u8>()], 0..150_000),
            chunks in prop::collection::vec(1usize..200_000, 1..5),
            auto in any::<bool>(),
        ) {
            let hint = if auto { CompressHint::Auto } else { CompressHint::Incompressible };
            prop_assert_eq!(write_then_read(&data, &chunks, hint), data);
        }

        /// Any single flipped byte of a stored object is caught by the reader.
        #[test]
        fn any_flipped_byte_is_caught(len in 1usize..5000, pos in any::<prop::sample::Index>(), compressible in any::<bool>()) {
            let data: Vec<u8> = if compressible { vec![b'x'; len] } else { (0..len).map(|i| (i * 131 % 251) as u8).collect() };
            let dir = tempfile::tempdir().unwrap();
            let mut w = ObjectWriter::<BlobKind>::new(dir.path(), ObjectKind::Blob, CompressHint::Auto).unwrap();
            w.write(&data).unwrap();
            let (digest, tmp) = w.finish().unwrap();
            let dest = dir.path().join("obj");
            persist(tmp, &dest).unwrap();
            let mut bytes = std::fs::read(&dest).unwrap();
            let i = pos.index(bytes.len());
            bytes[i] ^= 0x01;
            std::fs::write(&dest, &bytes).unwrap();
            let outcome = VerifyingReader::open(&dest, ObjectKind::Blob, digest)
                .map_err(|_| ())
                .and_then(|mut r| { let mut out = Vec::new(); r.read_to_end(&mut out).map_err(|_| ()).map(|_| out) });
            // Refused, or — a flip in zstd framing that leaves the content intact — exactly
            // the original bytes: never anything else.
            if let Ok(out) = outcome {
                prop_assert_eq!(out, data, "flip at {} served wrong bytes", i);
            }
        }
    }
}
