//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Messages read after "failed to …" and name
/// the file, package or path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file or directory.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("read", "create directory", …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The `rpm` crate could not parse or decode a package.
    #[error("read rpm {path}: {message}")]
    Rpm {
        /// The package file.
        path: PathBuf,
        /// What the `rpm` crate said.
        message: String,
    },
    /// A package's header digests do not match its bytes.
    #[error("verify rpm {path}: {what}")]
    Digest {
        /// The package file.
        path: PathBuf,
        /// Which digest failed and how.
        what: String,
    },
    /// A package's payload holds something a layer must never contain.
    #[error("unpack {package} ({rpm}): {path}: {reason}")]
    UnsafePayload {
        /// The package's name.
        package: String,
        /// The package file.
        rpm: PathBuf,
        /// The payload path at fault.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// Running an external program failed before it could report anything.
    #[error("run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The sandbox could not be set up on this machine.
    #[error("set up the build sandbox: {what}; {hint}")]
    SandboxUnavailable {
        /// What failed.
        what: String,
        /// How to fix it.
        hint: &'static str,
    },
    /// A sandbox's configuration is inconsistent (a layer shape the root cannot take).
    #[error("set up the build sandbox: {0}")]
    SandboxConfig(String),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn rpm(path: &std::path::Path) -> impl FnOnce(rpm::Error) -> Error + '_ {
        move |e| Error::Rpm {
            path: path.to_owned(),
            message: e.to_string(),
        }
    }
}
