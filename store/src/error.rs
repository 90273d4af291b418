//! The store's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the store. Each variant names the path or digest
/// involved; messages are lowercase and carry no trailing period.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O failure on a named path.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("write object", "open index").
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An object whose bytes do not match its digest. It has been moved to the quarantine
    /// directory and will never be served.
    #[error("{kind} {digest} at {} is damaged ({why}); moved to quarantine", path.display())]
    Damaged {
        kind: &'static str,
        digest: String,
        path: PathBuf,
        why: String,
    },
    /// Another process holds the store and the caller asked not to wait
    /// ([`StoreOptions::no_wait`](crate::StoreOptions)).
    #[error("store at {} is in use ({holder})", path.display())]
    Busy { path: PathBuf, holder: String },
    /// An object that is not in the store.
    #[error("{kind} {digest} is not in the store")]
    NotFound { kind: &'static str, digest: String },
    /// The store directory was written by an incompatible keel.
    #[error("store at {} has format `{found}`; this keel reads format {expected}", path.display())]
    Format {
        path: PathBuf,
        found: String,
        expected: u32,
    },
    /// The sled index failed in a way that reopening could not repair.
    #[error("index at {}", path.display())]
    Index {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    /// A record or manifest that does not decode.
    #[error("decode {what} {digest}: {why}")]
    Decode {
        what: &'static str,
        digest: String,
        why: String,
    },
    /// A caller broke a precondition (an action record naming an object that is not stored,
    /// a tree path that escapes its root…).
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }

    /// Whether this error means "no space left on the device" or "quota exceeded".
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
