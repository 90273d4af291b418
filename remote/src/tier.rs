//! The [`Tier`] trait every remote cache implements, its [`Stats`], and the verified
//! download that all of them share.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use keel_store::{ActionKey, BlobDigest, DigestHasher};
use sha2::{Digest as _, Sha256};

use crate::error::{RemoteError, Result};

/// A remote cache: an action cache of opaque (signed) entries and a content-addressed
/// store of blobs named by their BLAKE3 digest.
///
/// Implementations are safe to call from many threads. A "not found" is `Ok(None)` /
/// `Ok(false)`, never an error; an error means the tier could not answer.
pub trait Tier: Send + Sync + fmt::Debug {
    /// The tier's address, credentials removed: safe to print.
    fn name(&self) -> &str;

    /// The action-cache entry stored under `key`, as the bytes that were put.
    fn get_action(&self, key: &ActionKey) -> Result<Option<Vec<u8>>>;

    /// Stores an action-cache entry. Callers upload every blob the entry names first.
    fn put_action(&self, key: &ActionKey, entry: &[u8]) -> Result<()>;

    /// For each digest, whether the tier has that blob.
    fn has_blobs(&self, digests: &[BlobDigest]) -> Result<Vec<bool>>;

    /// Streams the blob into `landing` if the tier has it; the landing keeps the bytes
    /// only if they are `digest`'s. A mismatch is [`RemoteError::Corrupt`].
    fn land_blob(&self, digest: &BlobDigest, landing: &mut dyn Landing) -> Result<bool>;

    /// Where downloads that cannot go straight to their destination are staged.
    fn temp_dir(&self) -> &Path;

    /// Copies the blob into `out` if the tier has it. The bytes are verified against
    /// `digest` before the first byte reaches `out`: a mismatch is
    /// [`RemoteError::Corrupt`] and `out` is untouched.
    fn get_blob(&self, digest: &BlobDigest, out: &mut dyn Write) -> Result<bool> {
        let dir = self.temp_dir().to_owned();
        self.land_blob(digest, &mut StagedCopy::new(&dir, out))
    }

    /// Uploads a blob whose digest the caller already knows.
    fn put_blob(&self, digest: &BlobDigest, source: BlobSource<'_>) -> Result<()>;

    /// The tier's counters.
    fn stats(&self) -> &Stats;
}

/// Where the bytes of a blob to upload come from. Re-readable, so that a failed upload can
/// be retried.
#[derive(Debug, Clone, Copy)]
pub enum BlobSource<'a> {
    Path(&'a Path),
    Bytes(&'a [u8]),
}

impl BlobSource<'_> {
    pub(crate) fn open(&self) -> Result<Box<dyn Read + Send + '_>> {
        match *self {
            BlobSource::Path(p) => {
                let f = File::open(p).map_err(|e| RemoteError::io("open", p, e))?;
                Ok(Box::new(f))
            }
            BlobSource::Bytes(b) => Ok(Box::new(b)),
        }
    }

    /// The SHA-256 of the source's bytes.
    pub(crate) fn sha256(&self) -> Result<[u8; 32]> {
        let mut r = self.open()?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).map_err(|e| self.io_err(e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(h.finalize().into())
    }

    pub(crate) fn io_err(&self, e: io::Error) -> RemoteError {
        match *self {
            BlobSource::Path(p) => RemoteError::io("read", p, e),
            BlobSource::Bytes(_) => RemoteError::io("read", "<memory>", e),
        }
    }
}

/// Which hash names blobs on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestFunction {
    /// keel's own digest: the plain BLAKE3 of the bytes.
    Blake3,
    /// SHA-256, what Bazel's HTTP cache protocol and most REAPI servers use. keel computes
    /// it when uploading; readers learn it from the signed action-cache entry (see
    /// [`DigestMap`]).
    Sha256,
}

impl DigestFunction {
    pub fn parse(s: &str) -> Result<DigestFunction> {
        match s {
            "blake3" => Ok(DigestFunction::Blake3),
            "sha256" => Ok(DigestFunction::Sha256),
            _ => Err(RemoteError::Config(format!(
                "unknown digest function `{s}` (expected blake3 or sha256)"
            ))),
        }
    }
}

/// The SHA-256 of blobs keel knows by their BLAKE3 digest, shared by the tiers of one
/// [`crate::Remote`]. Filled when a blob is uploaded (its SHA-256 is computed then) and
/// from the signed action-cache entries read (they list the SHA-256 of every blob they
/// name), so a reader on a fresh machine can fetch by SHA-256 and still verify by BLAKE3.
#[derive(Debug, Default)]
pub struct DigestMap {
    map: Mutex<Sha256ByBlake3>,
}

/// (BLAKE3 hash, size) -> SHA-256.
type Sha256ByBlake3 = HashMap<([u8; 32], u64), [u8; 32]>;

impl DigestMap {
    pub fn insert(&self, blob: &BlobDigest, sha256: [u8; 32]) {
        self.lock().insert((*blob.hash(), blob.size()), sha256);
    }

    pub fn get(&self, blob: &BlobDigest) -> Option<[u8; 32]> {
        self.lock().get(&(*blob.hash(), blob.size())).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sha256ByBlake3> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// Counters of one tier. All relaxed atomics: they are statistics, not synchronisation.
#[derive(Debug, Default)]
pub struct Stats {
    pub ac_hits: AtomicU64,
    pub ac_misses: AtomicU64,
    pub cas_hits: AtomicU64,
    pub cas_misses: AtomicU64,
    pub bytes_down: AtomicU64,
    pub bytes_up: AtomicU64,
    pub uploads: AtomicU64,
    /// Uploads skipped because the server already had the blob.
    pub uploads_skipped: AtomicU64,
    /// Downloads whose bytes did not match their digest.
    pub verify_failures: AtomicU64,
    /// Action-cache entries refused: unsigned, forged, signed by an untrusted key, malformed.
    pub rejected_entries: AtomicU64,
    /// Operations that failed after their retries.
    pub errors: AtomicU64,
    /// Attempts retried.
    pub retries: AtomicU64,
    /// Warnings logged (the breaker opening, uploads stopping): at most one each.
    pub warnings: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub ac_hits: u64,
    pub ac_misses: u64,
    pub cas_hits: u64,
    pub cas_misses: u64,
    pub bytes_down: u64,
    pub bytes_up: u64,
    pub uploads: u64,
    pub uploads_skipped: u64,
    pub verify_failures: u64,
    pub rejected_entries: u64,
    pub errors: u64,
    pub retries: u64,
    pub warnings: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            ac_hits: g(&self.ac_hits),
            ac_misses: g(&self.ac_misses),
            cas_hits: g(&self.cas_hits),
            cas_misses: g(&self.cas_misses),
            bytes_down: g(&self.bytes_down),
            bytes_up: g(&self.bytes_up),
            uploads: g(&self.uploads),
            uploads_skipped: g(&self.uploads_skipped),
            verify_failures: g(&self.verify_failures),
            rejected_entries: g(&self.rejected_entries),
            errors: g(&self.errors),
            retries: g(&self.retries),
            warnings: g(&self.warnings),
        }
    }
}

pub(crate) fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// Where a downloaded blob's bytes go as they arrive. A download may take several
/// attempts (a truncated body is retried): each attempt begins with [`Landing::start`],
/// which discards what an earlier one wrote, and the bytes count only once
/// [`Landing::finish`] has found them to be the expected blob.
pub trait Landing {
    /// Where the bytes are kept, for messages.
    fn place(&self) -> &Path;

    /// Begins an attempt, discarding anything written before.
    fn start(&mut self) -> io::Result<()>;

    /// Takes the next bytes of the attempt.
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;

    /// Ends the attempt: returns the digest of the bytes written since `start`, and keeps
    /// them only if it is `expected`.
    fn finish(&mut self, expected: &BlobDigest) -> io::Result<BlobDigest>;
}

/// Downloads straight into a store: hashed and compressed as they arrive, stored only if
/// they are the blob asked for.
impl Landing for keel_store::BlobIngest<'_> {
    fn place(&self) -> &Path {
        self.store_root()
    }

    fn start(&mut self) -> io::Result<()> {
        self.restart().map_err(io::Error::other)
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        keel_store::BlobIngest::write(self, chunk).map_err(io::Error::other)
    }

    fn finish(&mut self, expected: &BlobDigest) -> io::Result<BlobDigest> {
        keel_store::BlobIngest::finish(self, expected).map_err(io::Error::other)
    }
}

/// Stages a download in a temporary file in `dir` and copies it to `out` once verified,
/// so that `out` never sees a byte of a wrong blob.
pub(crate) struct StagedCopy<'a> {
    dir: &'a Path,
    out: &'a mut dyn Write,
    tmp: Option<File>,
    hasher: DigestHasher<keel_store::BlobKind>,
}

impl<'a> StagedCopy<'a> {
    pub(crate) fn new(dir: &'a Path, out: &'a mut dyn Write) -> Self {
        StagedCopy {
            dir,
            out,
            tmp: None,
            hasher: DigestHasher::new(),
        }
    }
}

impl Landing for StagedCopy<'_> {
    fn place(&self) -> &Path {
        self.dir
    }

    fn start(&mut self) -> io::Result<()> {
        self.tmp = Some(tempfile::tempfile_in(self.dir)?);
        self.hasher = DigestHasher::new();
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.hasher.update(chunk);
        match &mut self.tmp {
            Some(f) => f.write_all(chunk),
            None => Err(io::Error::other("a download written before it started")),
        }
    }

    fn finish(&mut self, expected: &BlobDigest) -> io::Result<BlobDigest> {
        let actual = std::mem::replace(&mut self.hasher, DigestHasher::new()).finalize();
        let Some(mut tmp) = self.tmp.take() else {
            return Err(io::Error::other("a download finished before it started"));
        };
        if actual == *expected {
            tmp.rewind()?;
            io::copy(&mut tmp, self.out)?;
        }
        Ok(actual)
    }
}

/// How much of a download a landing is handed at a time.
const LANDING_CHUNK: usize = 1 << 20;

/// Reads into all of `buf` unless the body ends first: `(bytes, end of body, error)`.
fn fill(body: &mut dyn Read, buf: &mut [u8]) -> (usize, bool, Option<io::Error>) {
    let (len, err) = keel_store::read_up_to(body, buf);
    (len, len < buf.len() && err.is_none(), err)
}

/// Reads `body` into `landing`, never more than the digest's size plus one byte. `Ok(Ok(size))`
/// when the bytes were the blob; `Ok(Err(got))` is a short body (truncated); `Err` is a
/// mismatch, a failed read or a local I/O failure.
pub(crate) fn verified_read(
    url: &str,
    digest: &BlobDigest,
    body: &mut (dyn Read + Send),
    landing: &mut dyn Landing,
    stats: &Stats,
) -> Result<std::result::Result<u64, u64>, VerifyFailure> {
    let mut v = Verifier::new(landing, digest, stats).map_err(VerifyFailure::Local)?;
    // The landing gets whole buffers, not each socket read's few KiB: it hashes and
    // compresses side by side, and that costs per call.
    let limit = digest.size() + 1;
    let cap = usize::try_from(limit).map_or(LANDING_CHUNK, |n| n.min(LANDING_CHUNK));
    let want = move |read: u64| usize::try_from((limit - read).min(cap as u64)).unwrap_or(cap);
    if digest.size() < PIPELINE_MIN {
        let mut buf = vec![0u8; cap];
        let mut read = 0;
        while read < limit {
            let (len, eof, err) = fill(body, &mut buf[..want(read)]);
            read += len as u64;
            v.update(&buf[..len]).map_err(VerifyFailure::Local)?;
            if let Some(e) = err {
                return Err(VerifyFailure::Body(e));
            }
            if eof {
                break;
            }
        }
        return v.finish(url).map_err(VerifyFailure::Local);
    }
    // A large download is received on a thread of its own, so the socket is read while
    // the landing hashes and compresses the chunk before: two buffers go round.
    type Filled = (Vec<u8>, usize, Option<io::Error>);
    std::thread::scope(|s| {
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Filled>(1);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
        for _ in 0..2 {
            let _ = empty_tx.send(vec![0u8; cap]);
        }
        s.spawn(move || {
            let mut read = 0;
            // Ends with the body, or when the landing side has gone (it failed).
            while let Ok(mut buf) = empty_rx.recv() {
                let (len, eof, err) = fill(body, &mut buf[..want(read)]);
                read += len as u64;
                let last = eof || err.is_some() || read >= limit;
                if full_tx.send((buf, len, err)).is_err() || last {
                    return;
                }
            }
        });
        while let Ok((buf, len, err)) = full_rx.recv() {
            v.update(&buf[..len]).map_err(VerifyFailure::Local)?;
            if let Some(e) = err {
                return Err(VerifyFailure::Body(e));
            }
            // Refused once the reader is done: it no longer takes buffers.
            let _ = empty_tx.send(buf);
        }
        v.finish(url).map_err(VerifyFailure::Local)
    })
}

/// Downloads at least this large are received on a thread of their own.
const PIPELINE_MIN: u64 = 4 << 20;

/// Feeds one download attempt to a [`Landing`], counting bytes; only [`Verifier::finish`]
/// lets the landing keep them, and only if they match.
pub(crate) struct Verifier<'a> {
    landing: &'a mut dyn Landing,
    digest: BlobDigest,
    got: u64,
    stats: &'a Stats,
}

impl<'a> Verifier<'a> {
    pub(crate) fn new(
        landing: &'a mut dyn Landing,
        digest: &BlobDigest,
        stats: &'a Stats,
    ) -> Result<Self> {
        landing
            .start()
            .map_err(|e| RemoteError::io("start a download in", landing.place(), e))?;
        Ok(Verifier {
            landing,
            digest: *digest,
            got: 0,
            stats,
        })
    }

    pub(crate) fn expected_size(&self) -> u64 {
        self.digest.size()
    }

    /// More bytes than the digest's size arrived: the download is wrong already.
    pub(crate) fn too_long(&self) -> bool {
        self.got > self.digest.size()
    }

    pub(crate) fn update(&mut self, chunk: &[u8]) -> Result<()> {
        bump(&self.stats.bytes_down, chunk.len() as u64);
        self.got += chunk.len() as u64;
        if self.too_long() {
            return Ok(());
        }
        self.landing
            .write(chunk)
            .map_err(|e| RemoteError::io("write a download to", self.landing.place(), e))
    }

    /// `Ok(Ok(size))` when the bytes matched and the landing kept them; `Ok(Err(got))` when
    /// fewer bytes than the digest's size arrived; [`RemoteError::Corrupt`] (counted) when
    /// they do not match.
    pub(crate) fn finish(self, url: &str) -> Result<std::result::Result<u64, u64>> {
        let (got, size) = (self.got, self.digest.size());
        if got < size {
            return Ok(Err(got));
        }
        let corrupt = |actual: String| {
            bump(&self.stats.verify_failures, 1);
            RemoteError::Corrupt {
                url: url.to_owned(),
                expected: format!("{} ({size} bytes)", self.digest.to_hex()),
                actual,
            }
        };
        if got > size {
            return Err(corrupt(format!("more than {size} bytes")));
        }
        let actual = self
            .landing
            .finish(&self.digest)
            .map_err(|e| RemoteError::io("keep a download in", self.landing.place(), e))?;
        if actual != self.digest {
            return Err(corrupt(format!("{} ({got} bytes)", actual.to_hex())));
        }
        Ok(Ok(got))
    }
}

/// Why a verified copy failed: the body could not be read (worth retrying), or something
/// final (a mismatch, a local I/O error).
#[derive(Debug)]
pub(crate) enum VerifyFailure {
    Body(io::Error),
    Local(RemoteError),
}
