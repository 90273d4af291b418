//! Fetching one source: the spec's directory, the store, then each mirror in order.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use keel_store::{BlobDigest, CompressHint, Store};
use sha2::{Digest as _, Sha256};

use crate::error::{Attempt, Error};
use crate::known::Known;
use crate::signatures::{Signatures, is_sha256_hex};

/// What to do with a source's SHA-256, like the Azure Linux toolkit's
/// `SRPM_FILE_SIGNATURE_HANDLING`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A source must have a signature and match it; anything else is an error.
    #[default]
    Enforce,
    /// Signatures are not checked.
    Skip,
    /// Signatures are not checked; [`Fetcher::fetch_spec`] rewrites the signatures file with
    /// the actual digests.
    Update,
}

impl Mode {
    /// The name used on the command line and in `keel.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Skip => "skip",
            Mode::Update => "update",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "skip" => Ok(Mode::Skip),
            "update" => Ok(Mode::Update),
            _ => Err(format!(
                "`{s}` is not a signature mode (enforce, skip or update)"
            )),
        }
    }
}

/// Where a fetched source came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The spec's own directory.
    SpecDir,
    /// Already in the store from an earlier fetch: no file was read, no network used.
    Store,
    /// Downloaded (or copied, for file://) from this URL.
    Mirror(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::SpecDir => f.write_str("spec directory"),
            Origin::Store => f.write_str("store"),
            Origin::Mirror(url) => f.write_str(url),
        }
    }
}

/// A source that is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The file name, as the spec names it.
    pub file: String,
    /// The blob holding its bytes.
    pub blob: BlobDigest,
    /// Its actual SHA-256, lowercase hex.
    pub sha256: String,
    pub from: Origin,
}

/// How far a download has come, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    pub file: &'a str,
    pub url: &'a str,
    pub done: u64,
    /// The length the server announced, if it did.
    pub total: Option<u64>,
}

/// Called during downloads: after every [`PROGRESS_STEP`] bytes and once at the end.
pub type ProgressFn = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

/// How many bytes pass between two progress calls.
pub const PROGRESS_STEP: u64 = 1 << 20;

/// What [`Fetcher::fetch_spec`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecFetch {
    /// One entry per source, in the order given.
    pub fetched: Vec<Fetched>,
    /// Whether the signatures file was rewritten (update mode only).
    pub signatures_updated: bool,
}

/// Fetches sources into the store. Cheap to share between threads.
#[derive(Clone)]
pub struct Fetcher {
    mirrors: Vec<String>,
    mode: Mode,
    timeout: Duration,
    retry: keel_retry::Retry,
    progress: Option<ProgressFn>,
    agent: ureq::Agent,
}

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("mirrors", &self.mirrors)
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// How one try at one mirror went.
enum Failure {
    /// The mirror does not have the file: try the next one.
    NotFound(String),
    /// Worth trying again (connection errors, timeouts, 5xx, a cut-off body).
    Transient(String),
    /// Not worth trying again at this mirror.
    Permanent(String),
}

/// A checked download in a temporary file.
struct Ingested {
    tmp: tempfile::NamedTempFile,
    sha256: String,
}

impl Fetcher {
    /// Default time allowed to connect, and for each read, before a try counts as failed.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default number of tries after the first one, per mirror, on transient errors.
    pub const DEFAULT_RETRIES: u32 = 3;
    /// Default wait before the first retry; it doubles with each retry.
    pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);

    /// A fetcher over `mirrors` (base URLs, tried in order), in enforce mode with the
    /// default timeout and retries.
    pub fn new(mirrors: Vec<String>) -> Result<Fetcher, Error> {
        for url in &mirrors {
            let ok = ["http://", "https://", "file://"]
                .iter()
                .any(|s| url.starts_with(s) && url.len() > s.len());
            if !ok {
                return Err(Error::BadMirror { url: url.clone() });
            }
        }
        let mut f = Fetcher {
            mirrors: mirrors
                .into_iter()
                .map(|m| m.trim_end_matches('/').to_owned())
                .collect(),
            mode: Mode::Enforce,
            timeout: Self::DEFAULT_TIMEOUT,
            retry: keel_retry::Retry::new(Self::DEFAULT_RETRIES, Self::DEFAULT_BACKOFF),
            progress: None,
            agent: ureq::Agent::new_with_defaults(),
        };
        f.rebuild_agent();
        Ok(f)
    }

    pub fn with_mode(mut self, mode: Mode) -> Fetcher {
        self.mode = mode;
        self
    }

    /// The time allowed to connect, and for each read (so a stalled server fails a try
    /// while a slow but moving download does not).
    pub fn with_timeout(mut self, timeout: Duration) -> Fetcher {
        self.timeout = timeout;
        self.rebuild_agent();
        self
    }

    /// How many times a mirror is tried again after a transient error.
    pub fn with_retries(mut self, retries: u32) -> Fetcher {
        self.retry.retries = retries;
        self
    }

    /// The wait before the first retry; each further retry waits twice as long.
    pub fn with_backoff(mut self, backoff: Duration) -> Fetcher {
        self.retry.backoff = backoff;
        self
    }

    pub fn with_progress(mut self, progress: ProgressFn) -> Fetcher {
        self.progress = Some(progress);
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn mirrors(&self) -> &[String] {
        &self.mirrors
    }

    fn rebuild_agent(&mut self) {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(self.timeout))
            .timeout_per_read(Some(self.timeout))
            .user_agent(concat!("keel/", env!("CARGO_PKG_VERSION")))
            .build();
        self.agent = config.into();
    }

    /// Puts the source `file_name` of the spec in `spec_dir` into the store.
    ///
    /// It is taken from `spec_dir` if it is there, else from the store if a source with
    /// `expected_sha256` was stored before, else downloaded from each mirror in turn as
    /// `MIRROR/<file_name>`. Downloads stream into a temporary file while their SHA-256 is
    /// computed; only a source that passes the mode's check is stored. In enforce mode a
    /// missing `expected_sha256` is an error, and a file that does not match it is an error
    /// naming both digests (a mismatching mirror is reported after the others were tried).
    pub fn fetch(
        &self,
        store: &Store,
        spec_dir: &Path,
        file_name: &str,
        expected_sha256: Option<&str>,
    ) -> Result<Fetched, Error> {
        if file_name.is_empty()
            || file_name.contains('/')
            || file_name == "."
            || file_name == ".."
            || file_name.contains('\0')
        {
            return Err(Error::BadFileName {
                file: file_name.to_owned(),
            });
        }
        let expected = match expected_sha256 {
            Some(v) if !is_sha256_hex(v) => {
                return Err(Error::BadExpected {
                    file: file_name.to_owned(),
                    value: v.to_owned(),
                });
            }
            Some(v) => Some(v.to_ascii_lowercase()),
            None if self.mode == Mode::Enforce => {
                return Err(Error::NoSignature {
                    file: file_name.to_owned(),
                });
            }
            None => None,
        };
        // What the bytes must hash to, in this mode.
        let must_match = expected.as_deref().filter(|_| self.mode == Mode::Enforce);
        let known = Known::new(store);
        let mut tried = Vec::new();

        let local = spec_dir.join(file_name);
        match fs::metadata(&local) {
            Ok(m) if m.is_file() => {
                return self.fetch_local(store, &known, &local, file_name, must_match);
            }
            Ok(_) => tried.push(Attempt {
                place: local.display().to_string(),
                outcome: "not a regular file".into(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => tried.push(Attempt {
                place: local.display().to_string(),
                outcome: "no such file".into(),
            }),
            Err(source) => {
                return Err(Error::ReadSource {
                    path: local,
                    source,
                });
            }
        }

        if let Some(sha) = &expected
            && let Some(blob) = known.blob_of(store, sha)
        {
            tracing::debug!(file = file_name, "source already in the store");
            return Ok(Fetched {
                file: file_name.to_owned(),
                blob,
                sha256: sha.clone(),
                from: Origin::Store,
            });
        }

        let tmp_dir = known.tmp_dir();
        fs::create_dir_all(&tmp_dir).map_err(|source| Error::Temp {
            file: file_name.to_owned(),
            dir: tmp_dir.clone(),
            source,
        })?;
        let mut mismatch: Option<(String, String, String)> = None;
        for base in &self.mirrors {
            let url = format!("{base}/{file_name}");
            let got = match self.try_mirror(&url, file_name, &tmp_dir) {
                Ok(got) => got,
                Err(outcome) => {
                    tried.push(Attempt {
                        place: url,
                        outcome,
                    });
                    continue;
                }
            };
            if let Some(want) = must_match
                && got.sha256 != want
            {
                tracing::warn!(%url, "source has SHA-256 {}, expected {want}", got.sha256);
                if mismatch.is_none() {
                    mismatch = Some((url, want.to_owned(), got.sha256));
                } else {
                    tried.push(Attempt {
                        place: url,
                        outcome: format!("SHA-256 {}", got.sha256),
                    });
                }
                continue;
            }
            let blob = self.store_ingested(store, &got, file_name)?;
            known.record(store, &got.sha256, &blob);
            return Ok(Fetched {
                file: file_name.to_owned(),
                blob,
                sha256: got.sha256,
                from: Origin::Mirror(url),
            });
        }
        match mismatch {
            Some((from, expected, actual)) => Err(Error::Mismatch {
                file: file_name.to_owned(),
                from,
                expected,
                actual,
                tried,
            }),
            None => Err(Error::Missing {
                file: file_name.to_owned(),
                tried,
            }),
        }
    }

    /// A source in the spec's directory. When the store's stat cache vouches for the file
    /// and its SHA-256 was recorded, nothing is read.
    fn fetch_local(
        &self,
        store: &Store,
        known: &Known,
        path: &Path,
        file_name: &str,
        must_match: Option<&str>,
    ) -> Result<Fetched, Error> {
        let store_err = |source| Error::Store {
            file: path.display().to_string(),
            source,
        };
        let blob = store.file_digest(path).map_err(store_err)?;
        let cached = known
            .sha256_of(&blob)
            .filter(|_| store.contains_blob(&blob));
        let sha256 = match cached {
            Some(sha) => {
                check_local(path, file_name, must_match, &sha)?;
                sha
            }
            None => {
                let tmp_dir = known.tmp_dir();
                fs::create_dir_all(&tmp_dir).map_err(|source| Error::Temp {
                    file: file_name.to_owned(),
                    dir: tmp_dir.clone(),
                    source,
                })?;
                let file = File::open(path).map_err(|source| Error::ReadSource {
                    path: path.to_owned(),
                    source,
                })?;
                let got = ingest(file, &tmp_dir, None).map_err(|e| match e {
                    IngestError::Read(source) => Error::ReadSource {
                        path: path.to_owned(),
                        source,
                    },
                    IngestError::Write(source) => Error::Temp {
                        file: file_name.to_owned(),
                        dir: tmp_dir.clone(),
                        source,
                    },
                })?;
                check_local(path, file_name, must_match, &got.sha256)?;
                let stored = self.store_ingested(store, &got, file_name)?;
                if stored != blob {
                    return Err(Error::Changed {
                        path: path.to_owned(),
                    });
                }
                known.record(store, &got.sha256, &blob);
                got.sha256
            }
        };
        Ok(Fetched {
            file: file_name.to_owned(),
            blob,
            sha256,
            from: Origin::SpecDir,
        })
    }

    fn store_ingested(
        &self,
        store: &Store,
        got: &Ingested,
        file_name: &str,
    ) -> Result<BlobDigest, Error> {
        let file = got.tmp.reopen().map_err(|source| Error::Temp {
            file: file_name.to_owned(),
            dir: got.tmp.path().parent().unwrap_or(Path::new(".")).to_owned(),
            source,
        })?;
        store
            .put_reader(file, CompressHint::for_path(Path::new(file_name)))
            .map_err(|source| Error::Store {
                file: file_name.to_owned(),
                source,
            })
    }

    /// Tries one mirror, with retries on transient errors. The error is the outcome to
    /// report for this URL.
    fn try_mirror(&self, url: &str, file_name: &str, tmp_dir: &Path) -> Result<Ingested, String> {
        use keel_retry::Attempt;
        let once = || {
            let result = match url.strip_prefix("file://") {
                Some(path) => self.get_file(Path::new(path), url, file_name, tmp_dir),
                None => self.get_http(url, file_name, tmp_dir),
            };
            result.map_err(|f| match f {
                Failure::NotFound(why) | Failure::Permanent(why) => Attempt::Stop(why),
                Failure::Transient(why) => Attempt::Retry(why),
            })
        };
        let told = |why: &String, wait: Duration| {
            tracing::info!(%url, "retrying in {wait:?} after: {why}");
        };
        self.retry.run(once, told).map_err(|f| match f.error {
            Attempt::Retry(why) if f.attempts > 1 => format!("{why}, after {} tries", f.attempts),
            e => e.into_inner(),
        })
    }

    fn get_file(
        &self,
        path: &Path,
        url: &str,
        file_name: &str,
        tmp_dir: &Path,
    ) -> Result<Ingested, Failure> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Failure::NotFound("no such file".into()));
            }
            Err(e) => return Err(Failure::Permanent(e.to_string())),
        };
        let total = file.metadata().ok().map(|m| m.len());
        let report = self.reporter(file_name, url, total);
        ingest(file, tmp_dir, report.as_ref().map(|r| r as &dyn Fn(u64))).map_err(|e| match e {
            IngestError::Read(e) => Failure::Permanent(e.to_string()),
            IngestError::Write(e) => Failure::Permanent(format!(
                "write temporary file in {}: {e}",
                tmp_dir.display()
            )),
        })
    }

    fn get_http(&self, url: &str, file_name: &str, tmp_dir: &Path) -> Result<Ingested, Failure> {
        let response = self.agent.get(url).call().map_err(|e| self.classify(&e))?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            404 | 410 => return Err(Failure::NotFound(format!("HTTP {status}"))),
            408 | 429 | 500..=599 => return Err(Failure::Transient(format!("HTTP {status}"))),
            _ => return Err(Failure::Permanent(format!("HTTP {status}"))),
        }
        let total = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let reader = response.into_body().into_reader();
        let report = self.reporter(file_name, url, total);
        ingest(reader, tmp_dir, report.as_ref().map(|r| r as &dyn Fn(u64))).map_err(|e| match e {
            IngestError::Read(e) => Failure::Transient(format!("reading the body: {e}")),
            IngestError::Write(e) => Failure::Permanent(format!(
                "write temporary file in {}: {e}",
                tmp_dir.display()
            )),
        })
    }

    fn reporter<'a>(
        &'a self,
        file: &'a str,
        url: &'a str,
        total: Option<u64>,
    ) -> Option<impl Fn(u64) + 'a> {
        let progress = self.progress.as_ref()?;
        Some(move |done| {
            progress(&Progress {
                file,
                url,
                done,
                total,
            })
        })
    }

    fn classify(&self, e: &ureq::Error) -> Failure {
        match e {
            ureq::Error::Timeout(_) => {
                Failure::Transient(format!("timed out after {:?}", self.timeout))
            }
            ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Protocol(_) => Failure::Transient(e.to_string()),
            _ => Failure::Permanent(e.to_string()),
        }
    }

    /// Fetches every source of one spec, checking them against (and in update mode
    /// rewriting) its signatures file.
    ///
    /// In update mode a missing signatures file is created, and entries of files that are
    /// not among `sources` are dropped; the file is written only if something changed.
    pub fn fetch_spec(
        &self,
        store: &Store,
        spec_dir: &Path,
        signatures_path: &Path,
        sources: &[String],
    ) -> Result<SpecFetch, Error> {
        let mut sigs = match Signatures::load(signatures_path) {
            Ok(s) => s,
            Err(Error::ReadSignatures { source, .. })
                if source.kind() == io::ErrorKind::NotFound && self.mode != Mode::Enforce =>
            {
                Signatures::new()
            }
            Err(e) => return Err(e),
        };
        let mut fetched = Vec::with_capacity(sources.len());
        for file in sources {
            fetched.push(self.fetch(store, spec_dir, file, sigs.get(file))?);
        }
        let mut changed = false;
        if self.mode == Mode::Update {
            for f in &fetched {
                changed |= sigs.set(&f.file, &f.sha256);
            }
            let stale: Vec<String> = sigs
                .iter()
                .map(|(k, _)| k.to_owned())
                .filter(|k| !sources.contains(k))
                .collect();
            for k in stale {
                changed |= sigs.remove(&k);
            }
            if changed || !signatures_path.exists() {
                sigs.save(signatures_path)?;
                changed = true;
            }
        }
        Ok(SpecFetch {
            fetched,
            signatures_updated: changed,
        })
    }
}

fn check_local(
    path: &Path,
    file_name: &str,
    must_match: Option<&str>,
    actual: &str,
) -> Result<(), Error> {
    match must_match {
        Some(want) if want != actual => Err(Error::Mismatch {
            file: file_name.to_owned(),
            from: path.display().to_string(),
            expected: want.to_owned(),
            actual: actual.to_owned(),
            tried: Vec::new(),
        }),
        _ => Ok(()),
    }
}

enum IngestError {
    Read(io::Error),
    Write(io::Error),
}

/// Streams `reader` into a new temporary file in `dir`, computing its SHA-256 on the way.
fn ingest(
    mut reader: impl Read,
    dir: &Path,
    report: Option<&dyn Fn(u64)>,
) -> Result<Ingested, IngestError> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(dir)
        .map_err(IngestError::Write)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    let mut reported = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(IngestError::Read(e)),
        };
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(IngestError::Write)?;
        done += n as u64;
        if let Some(report) = report
            && done - reported >= PROGRESS_STEP
        {
            report(done);
            reported = done;
        }
    }
    tmp.as_file_mut().flush().map_err(IngestError::Write)?;
    if let Some(report) = report {
        report(done);
    }
    Ok(Ingested {
        tmp,
        sha256: hex(&hasher.finalize()),
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// The SHA-256 of a file, lowercase hex, read in a fixed buffer.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex(&hasher.finalize()))
}
