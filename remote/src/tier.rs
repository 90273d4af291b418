//! The [`Tier`] trait every remote cache implements, its [`Stats`], and the verified
//! download that all of them share.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
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

    /// Streams the blob into `out` if the tier has it. The bytes are verified against
    /// `digest` before the first byte reaches `out`: a mismatch is
    /// [`RemoteError::Corrupt`] and `out` is untouched.
    fn get_blob(&self, digest: &BlobDigest, out: &mut dyn Write) -> Result<bool>;

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

/// Where verified downloads are staged before they are handed out.
#[derive(Debug, Clone)]
pub(crate) struct Staging {
    pub dir: PathBuf,
}

impl Staging {
    /// Reads `body` into a temporary file while hashing it, and copies it to `out` only if
    /// its size and BLAKE3 match `digest`. `Ok(Err(got))` is a short body (truncated);
    /// `Err` is a mismatch or an I/O failure.
    pub(crate) fn verified_copy(
        &self,
        url: &str,
        digest: &BlobDigest,
        body: &mut dyn Read,
        out: &mut dyn Write,
        stats: &Stats,
    ) -> Result<std::result::Result<u64, u64>, VerifyFailure> {
        let mut v = Verifier::new(self, digest, stats).map_err(VerifyFailure::Local)?;
        let mut buf = vec![0u8; 64 * 1024];
        // Never read more than the digest's size plus one byte: enough to tell "too long".
        while !v.too_long() {
            let want = usize::try_from((digest.size() + 1 - v.got).min(buf.len() as u64))
                .unwrap_or(buf.len());
            let n = match body.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(VerifyFailure::Body(e)),
            };
            v.update(&buf[..n]).map_err(VerifyFailure::Local)?;
        }
        v.finish(url, out).map_err(VerifyFailure::Local)
    }
}

/// Stages the chunks of one download in a temporary file while hashing them; only
/// [`Verifier::finish`] hands the bytes out, and only if they match.
pub(crate) struct Verifier<'a> {
    dir: &'a Path,
    digest: BlobDigest,
    tmp: File,
    hasher: DigestHasher<keel_store::BlobKind>,
    got: u64,
    stats: &'a Stats,
}

impl<'a> Verifier<'a> {
    pub(crate) fn new(staging: &'a Staging, digest: &BlobDigest, stats: &'a Stats) -> Result<Self> {
        let tmp = tempfile::tempfile_in(&staging.dir)
            .map_err(|e| RemoteError::io("create a temporary file in", &staging.dir, e))?;
        Ok(Verifier {
            dir: &staging.dir,
            digest: *digest,
            tmp,
            hasher: DigestHasher::new(),
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
        self.hasher.update(chunk);
        self.tmp
            .write_all(chunk)
            .map_err(|e| RemoteError::io("write a temporary file in", self.dir, e))
    }

    /// `Ok(Ok(size))` when the bytes matched and were copied to `out`; `Ok(Err(got))` when
    /// fewer bytes than the digest's size arrived; [`RemoteError::Corrupt`] (counted) when
    /// they do not match.
    pub(crate) fn finish(
        mut self,
        url: &str,
        out: &mut dyn Write,
    ) -> Result<std::result::Result<u64, u64>> {
        let (got, size) = (self.got, self.digest.size());
        if got < size {
            return Ok(Err(got));
        }
        let actual = self.hasher.finalize();
        if got != size || actual.hash() != self.digest.hash() {
            bump(&self.stats.verify_failures, 1);
            let actual = if got > size {
                format!("more than {size} bytes")
            } else {
                format!("{} ({got} bytes)", actual.to_hex())
            };
            return Err(RemoteError::Corrupt {
                url: url.to_owned(),
                expected: format!("{} ({size} bytes)", self.digest.to_hex()),
                actual,
            });
        }
        self.tmp
            .rewind()
            .and_then(|()| io::copy(&mut self.tmp, out))
            .map_err(|e| RemoteError::io("copy a verified download from", self.dir, e))?;
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
