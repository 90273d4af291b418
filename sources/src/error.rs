//! The crate's error type and the record of where a source was looked for.

use std::fmt;
use std::io;
use std::path::PathBuf;

use keel_store::StoreError;

/// One place a source was looked for, and what happened there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// A path (the spec's directory) or a URL (a mirror).
    pub place: String,
    /// What happened, e.g. "no such file", "HTTP 404", "timed out after 2s".
    pub outcome: String,
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.place, self.outcome)
    }
}

/// Formats a list of attempts as "a (x); b (y)".
pub(crate) struct Tried<'a>(pub &'a [Attempt]);

impl fmt::Display for Tried<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong reading signatures or fetching a source. Each variant names
/// the file, path or URL involved; messages are lowercase with no trailing period.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A signatures file that cannot be read.
    #[error("read {}: {source}", path.display())]
    ReadSignatures {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A signatures file that is not valid JSON of the expected shape.
    #[error("parse {}:{line}:{column}: {message}", path.display())]
    ParseSignatures {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// An entry whose digest is not 64 hex digits.
    #[error("{}: entry `{entry}` has `{value}`, which is not a SHA-256 digest (64 hex digits)", path.display())]
    BadDigest {
        path: PathBuf,
        entry: String,
        value: String,
    },
    /// A signatures file that cannot be written (update mode).
    #[error("write {}: {source}", path.display())]
    WriteSignatures {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A mirror that is not an http://, https:// or file:// URL.
    #[error("mirror `{url}` is not an http://, https:// or file:// URL")]
    BadMirror { url: String },
    /// A source name that is not a plain file name.
    #[error("source `{file}` is not a plain file name")]
    BadFileName { file: String },
    /// An expected digest given to `fetch` that is not 64 hex digits.
    #[error("expected digest `{value}` for {file} is not a SHA-256 digest (64 hex digits)")]
    BadExpected { file: String, value: String },
    /// Enforce mode and no digest to check the source against.
    #[error("{file} has no entry in the signatures file (signature mode is enforce)")]
    NoSignature { file: String },
    /// The source was found nowhere.
    #[error("source {file} not found; tried: {}", Tried(tried))]
    Missing { file: String, tried: Vec<Attempt> },
    /// The source was found, but its SHA-256 is not the expected one. Nothing was stored.
    #[error(
        "source {file} from {from} has SHA-256 {actual}, expected {expected}{}",
        others(tried)
    )]
    Mismatch {
        file: String,
        /// The path or URL the wrong bytes came from.
        from: String,
        expected: String,
        actual: String,
        /// The other places tried before or after, if any.
        tried: Vec<Attempt>,
    },
    /// A local file that could not be read.
    #[error("read source {}: {source}", path.display())]
    ReadSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A local file that changed while it was being stored.
    #[error("source {} changed while it was being read", path.display())]
    Changed { path: PathBuf },
    /// The store failed.
    #[error("store source {file}")]
    Store {
        file: String,
        #[source]
        source: StoreError,
    },
    /// A temporary file for a download could not be made or written.
    #[error("write temporary file in {} for {file}: {source}", dir.display())]
    Temp {
        file: String,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn others(tried: &[Attempt]) -> String {
    if tried.is_empty() {
        String::new()
    } else {
        format!("; also tried: {}", Tried(tried))
    }
}
