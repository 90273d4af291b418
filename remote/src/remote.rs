//! [`Remote`]: the tiers of one build, the trust rules and parallel transfers.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keel_store::{ActionKey, BlobDigest};

use crate::error::{RemoteError, Result};
use crate::signing::{Entry, SigningKeyPair, TrustedKeys, Verdict};
use crate::tier::{BlobSource, DigestMap, Landing, StatsSnapshot, Tier, bump};

/// What a build may do with the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Trusted CI on the main branch: reads and signed writes.
    ReadWrite,
    /// Pull requests and developers: never uploads anything.
    ReadOnly,
}

/// Settings of a [`Remote`].
#[derive(Debug)]
pub struct RemoteConfig {
    pub mode: Mode,
    /// Entries signed by these keys are accepted; everything else is refused.
    pub trusted: TrustedKeys,
    /// Signs the entries this build writes; required in [`Mode::ReadWrite`].
    pub signer: Option<SigningKeyPair>,
    /// Transfers in flight at once.
    pub jobs: usize,
}

/// What [`Remote::put_action`] did on one tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutReport {
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the tier already had.
    pub skipped: usize,
    /// Whether the action-cache entry was written (only once every blob is there).
    pub entry_written: bool,
    /// Errors, already logged as warnings.
    pub errors: Vec<String>,
}

/// The remote tiers of a build, tried in order.
///
/// Reads never fail a build: a tier that errs is a miss plus a warning, and the next tier
/// is asked. Writes upload every blob an entry names (skipping those the tier has), and
/// only then the signed entry, so no reader ever sees an entry whose blobs are not there.
pub struct Remote {
    tiers: Vec<Arc<dyn Tier>>,
    map: Arc<DigestMap>,
    mode: Mode,
    trusted: TrustedKeys,
    signer: Option<SigningKeyPair>,
    /// How many transfers run at once. They run on plain threads of their own, never on a
    /// rayon pool: a transfer blocks on the tier's async runtime, and a rayon worker that
    /// waits inside a landing's parallel hash would steal another transfer and enter that
    /// runtime a second time from the same thread, which tokio refuses with a panic.
    jobs: usize,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("tiers", &self.tiers)
            .field("mode", &self.mode)
            .field("trusted", &self.trusted)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// Combines `tiers`, which must share `map` (see [`DigestMap`]).
    pub fn new(
        config: RemoteConfig,
        map: Arc<DigestMap>,
        tiers: Vec<Arc<dyn Tier>>,
    ) -> Result<Remote> {
        if config.mode == Mode::ReadWrite && config.signer.is_none() {
            return Err(RemoteError::Config(
                "a read-write remote cache needs a signing key".into(),
            ));
        }
        Ok(Remote {
            tiers,
            map,
            mode: config.mode,
            trusted: config.trusted,
            signer: config.signer,
            jobs: config.jobs.max(1),
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn tiers(&self) -> &[Arc<dyn Tier>] {
        &self.tiers
    }

    /// Each tier's name and counters.
    pub fn stats(&self) -> Vec<(String, StatsSnapshot)> {
        self.tiers
            .iter()
            .map(|t| (t.name().to_owned(), t.stats().snapshot()))
            .collect()
    }

    /// The first valid entry for `key`. Entries that fail the signature check are refused,
    /// counted in the tier's `rejected_entries` and reported; the SHA-256 of the blobs a
    /// valid entry names is learned so they can be fetched.
    pub fn get_action(&self, key: &ActionKey) -> Option<Entry> {
        for tier in &self.tiers {
            let bytes = match tier.get_action(key) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    report_read_error(&e);
                    continue;
                }
            };
            match self.trusted.verify(key, &bytes) {
                Verdict::Valid(entry) => {
                    for (d, sha) in &entry.blobs {
                        self.map.insert(d, *sha);
                    }
                    return Some(entry);
                }
                v => {
                    bump(&tier.stats().rejected_entries, 1);
                    tracing::warn!(
                        remote = tier.name(),
                        "refused action-cache entry {key}: {}",
                        v.reason()
                    );
                }
            }
        }
        None
    }

    /// Streams a verified blob into `out` from the first tier that has it. `false` on a
    /// miss everywhere (errors are warnings: the caller rebuilds).
    pub fn fetch_blob(&self, digest: &BlobDigest, out: &mut dyn Write) -> bool {
        self.first_tier(|tier| tier.get_blob(digest, out))
    }

    /// Asks each tier in turn until one answers yes; errors are warnings (a miss).
    fn first_tier(&self, mut ask: impl FnMut(&dyn Tier) -> Result<bool>) -> bool {
        for tier in &self.tiers {
            match ask(tier.as_ref()) {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => report_read_error(&e),
            }
        }
        false
    }

    /// Streams a blob into `landing` from the first tier that has it; the landing keeps
    /// it only once verified. `false` on a miss everywhere (errors are warnings).
    pub fn land_blob(&self, digest: &BlobDigest, landing: &mut dyn Landing) -> bool {
        self.first_tier(|tier| tier.land_blob(digest, landing))
    }

    /// Fetches blobs in parallel, each into the landing `land` makes for it (a store's
    /// [`keel_store::BlobIngest`]: no staging copy). Each result says whether the blob
    /// arrived intact; a landing that cannot be made is a warning and a `false`.
    pub fn land_blobs<L: Landing>(
        &self,
        blobs: &[BlobDigest],
        land: impl Fn(&BlobDigest) -> L + Sync,
    ) -> Vec<bool> {
        // Largest first: the biggest download is the longest wait, and nothing else can
        // shorten it.
        let mut order: Vec<usize> = (0..blobs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(blobs[i].size()));
        let landed = fan_out(self.jobs, &order, |&i| {
            self.land_blob(&blobs[i], &mut land(&blobs[i]))
        });
        let mut out = vec![false; blobs.len()];
        for (&i, ok) in order.iter().zip(landed) {
            out[i] = ok;
        }
        out
    }

    /// Fetches blobs in parallel into `dir/<blake3 hex>`; each result is the file, or
    /// `None` on a miss. Files appear only complete and verified.
    pub fn fetch_blobs(&self, blobs: &[BlobDigest], dir: &Path) -> Vec<Option<PathBuf>> {
        fan_out(self.jobs, blobs, |d| {
            let dest = dir.join(d.to_hex());
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .map_err(|e| tracing::warn!("create a temporary file in {}: {e}", dir.display()))
                .ok()?;
            if !self.fetch_blob(d, tmp.as_file_mut()) {
                return None;
            }
            tmp.persist(&dest)
                .map_err(|e| tracing::warn!("write {}: {e}", dest.display()))
                .ok()?;
            Some(dest)
        })
    }

    /// Uploads `blobs` and then the signed entry for `key` to every tier, in parallel,
    /// skipping blobs a tier already has. A failed write never fails the build: it is
    /// reported per tier. In read-only mode nothing is sent.
    pub fn put_action(
        &self,
        key: &ActionKey,
        record: &[u8],
        blobs: &[(BlobDigest, BlobSource<'_>)],
    ) -> Result<Vec<PutReport>> {
        let signer = match (self.mode, &self.signer) {
            (Mode::ReadWrite, Some(s)) => s,
            _ => {
                return Err(RemoteError::UploadRefused {
                    url: self.tiers.first().map_or("<none>", |t| t.name()).to_owned(),
                    why: "the remote cache is read-only for this build".into(),
                });
            }
        };
        // The entry lists each blob's SHA-256, for tiers that name blobs by it.
        let shas: Vec<Result<[u8; 32]>> =
            fan_out(self.jobs, blobs, |(d, src)| match self.map.get(d) {
                Some(s) => Ok(s),
                None => {
                    let s = src.sha256()?;
                    self.map.insert(d, s);
                    Ok(s)
                }
            });
        let mut listed = Vec::with_capacity(blobs.len());
        for ((d, _), s) in blobs.iter().zip(shas) {
            listed.push((*d, s?));
        }
        let entry = Entry {
            key: *key,
            record: record.to_vec(),
            blobs: listed,
        };
        let signed = signer.sign(&entry);
        Ok(self
            .tiers
            .iter()
            .map(|t| self.put_on(t.as_ref(), key, &signed, blobs))
            .collect())
    }

    fn put_on(
        &self,
        tier: &dyn Tier,
        key: &ActionKey,
        signed: &[u8],
        blobs: &[(BlobDigest, BlobSource<'_>)],
    ) -> PutReport {
        let mut report = PutReport::default();
        let digests: Vec<BlobDigest> = blobs.iter().map(|(d, _)| *d).collect();
        // HEAD requests are latency-bound: spread them over the threads in chunks.
        let chunks: Vec<&[BlobDigest]> = digests.chunks(16).collect();
        let present: Result<Vec<bool>> = fan_out(self.jobs, &chunks, |c| tier.has_blobs(c))
            .into_iter()
            .collect::<Result<Vec<Vec<bool>>>>()
            .map(|v| v.concat());
        let present = match present {
            Ok(p) => p,
            Err(e) => {
                if !matches!(e, RemoteError::Disabled { .. }) {
                    tracing::warn!("remote cache write skipped: {e}");
                }
                report.errors.push(e.to_string());
                return report;
            }
        };
        let pairs: Vec<(&(BlobDigest, BlobSource<'_>), bool)> = blobs.iter().zip(present).collect();
        let results: Vec<Result<bool>> = fan_out(self.jobs, &pairs, |((d, src), has)| {
            if *has {
                bump(&tier.stats().uploads_skipped, 1);
                Ok(false)
            } else {
                tier.put_blob(d, *src).map(|()| true)
            }
        });
        for r in results {
            match r {
                Ok(true) => report.uploaded += 1,
                Ok(false) => report.skipped += 1,
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        if !report.errors.is_empty() {
            tracing::warn!(
                remote = tier.name(),
                "not writing the action-cache entry for {key}: {} blob(s) failed to upload ({})",
                report.errors.len(),
                report.errors[0]
            );
            return report;
        }
        match tier.put_action(key, signed) {
            Ok(()) => report.entry_written = true,
            Err(e) => {
                tracing::warn!("remote cache write failed: {e}");
                report.errors.push(e.to_string());
            }
        }
        report
    }
}

/// A failed read is a miss plus a warning, except from a tier whose breaker is open (that
/// was said once when it opened) and for a blob no entry read so far named (a SHA-256 tier
/// cannot ask for it: a plain miss).
fn report_read_error(e: &RemoteError) {
    if matches!(
        e,
        RemoteError::Disabled { .. } | RemoteError::UnknownSha256 { .. }
    ) {
        tracing::debug!("{e}");
    } else {
        tracing::warn!("remote cache read failed, treating as a miss: {e}");
    }
}

/// `f` over `items` on up to `jobs` plain threads, results in the order of `items`. Each
/// thread takes the next item as it finishes one, so the order of `items` is the order work
/// starts in.
fn fan_out<T: Sync, R: Send>(jobs: usize, items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = jobs.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                std::thread::Builder::new()
                    .name(format!("keel-remote-{i}"))
                    .spawn_scoped(s, || {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(item) = items.get(i) else { break };
                            mine.push((i, f(item)));
                        }
                        mine
                    })
                    .expect("spawn a transfer thread")
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| match w.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}
