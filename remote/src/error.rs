//! Errors of the remote tiers. Every variant that involves the network names the URL, with
//! credentials already removed (see [`crate::http::Endpoint`]): an error is safe to print.

use std::path::PathBuf;

/// Why a remote operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The downloaded bytes do not hash to the digest that named them. Counted in
    /// [`crate::Stats::verify_failures`]; the bytes were never handed out.
    #[error("verify {url}: expected {expected}, got {actual}")]
    Corrupt {
        url: String,
        expected: String,
        actual: String,
    },
    /// The server sent fewer bytes than it announced (or than the digest's size).
    #[error("download {url}: body truncated after {got} of {expected} bytes")]
    Truncated {
        url: String,
        expected: u64,
        got: u64,
    },
    /// The server answered with a status that is neither success nor "not found".
    #[error("{method} {url}: HTTP {status}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
    },
    /// The request did not complete: connection refused, reset, timed out, bad TLS...
    #[error("{method} {url}: {message}")]
    Transport {
        method: &'static str,
        url: String,
        message: String,
    },
    /// A gRPC call failed.
    #[error("{call} on {url}: {code}: {message}")]
    Grpc {
        call: &'static str,
        url: String,
        code: String,
        message: String,
    },
    /// The tier had too many consecutive failures and is skipped for the rest of the process.
    #[error("use remote {url}: disabled after repeated failures")]
    Disabled { url: String },
    /// Uploads to the tier were stopped (read-only mode, the server is full, ...).
    #[error("upload to {url}: {why}")]
    UploadRefused { url: String, why: String },
    /// In SHA-256 mode a blob can only be fetched once its SHA-256 is known (from the signed
    /// action-cache entry that names it, or from uploading it).
    #[error("fetch blob {digest} from {url}: its SHA-256 is not known")]
    UnknownSha256 { url: String, digest: String },
    /// Local file I/O (a temporary file, a blob to upload, a key file).
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key file or configuration value is invalid.
    #[error("{0}")]
    Config(String),
}

/// The result type of this crate.
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;

impl RemoteError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RemoteError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
