//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while making an image. Messages read after "failed to …"
/// and name the file, package, field or path involved.
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
    /// An image config or package list is malformed or asks for something keel does not
    /// implement.
    #[error("read image config {file}: {field}: {message}")]
    Config {
        /// The config or package-list file.
        file: PathBuf,
        /// The JSON path of the field at fault (`SystemConfigs[0].Users[1].SSHPubKeys`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The package closure cannot be computed.
    #[error("resolve the packages of image {image}: {chain}: {message}")]
    Closure {
        /// The image (its system config's name).
        image: String,
        /// Who needs what: `image core -> pkg a -> Requires: libfoo.so.1()(64bit)`.
        chain: String,
        /// Why it fails.
        message: String,
    },
    /// Reading or unpacking a package failed.
    #[error(transparent)]
    Toolchain(#[from] keel_toolchain::Error),
    /// Assembling the root filesystem failed at a path.
    #[error("assemble root {root}: {path}: {message}")]
    Rootfs {
        /// The root directory.
        root: PathBuf,
        /// The path inside the root (or the package) at fault.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The image's packages declare more file data than the image may hold.
    #[error(
        "assemble image {image}: package {package} ({rpm}) takes the file data of the root to {total} bytes, at or over the image's limit of {limit} bytes (MaxRootSize in the image's system config, in MiB)"
    )]
    RootTooLarge {
        /// The image (its system config's name).
        image: String,
        /// The package that reached the limit.
        package: String,
        /// Its file.
        rpm: PathBuf,
        /// The file data of every package up to and including it.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// An external tool failed.
    #[error("run {program} for {artifact}: {message}")]
    Tool {
        /// The program.
        program: String,
        /// The artifact being made.
        artifact: PathBuf,
        /// Its exit status and the tail of its output, or why it could not start.
        message: String,
    },
    /// An artifact cannot be made from this config.
    #[error("make {artifact}: {message}")]
    Artifact {
        /// The artifact being made.
        artifact: PathBuf,
        /// Why.
        message: String,
    },
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
}
