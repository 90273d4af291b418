//! keel's build environment: what a package is built *in*, and how.
//!
//! This crate turns a spec into real RPMs inside a sandbox, and reads what comes out:
//!
//! - [`rpmfile`] reads a built RPM with the `rpm` crate (identity, Provides/Requires
//!   including the automatic soname ones, file list) and computes its *semantic summary*,
//!   the output digest keel uses for early cutoff: what the package installs and declares,
//!   without build time, build host or signatures.
//! - [`layer`] unpacks an RPM's payload into a directory that becomes an overlay lower
//!   layer of a build root, safely (digests checked, nothing written outside the layer, no
//!   device nodes, size caps), once per RPM ([`layer::LayerCache`]).
//! - [`toolchain`] names the base of every build root ([`Toolchain::Host`] or a worker
//!   chroot directory) and fingerprints it, so a toolchain change changes every key.
//! - [`sandbox`] runs a command in fresh mount, PID, IPC, UTS and network namespaces with
//!   a root made of the toolchain plus an overlay of layers, a writable `/build`, a cleared
//!   environment and a timeout.
//! - [`rpmbuild`] drives `rpmbuild` in that sandbox at fixed paths with rpm's
//!   reproducibility macros, so the same inputs give the same bytes.
//!
//! # How the sandbox is made
//!
//! The sandbox uses bubblewrap (`bwrap`) for the namespaces, `/proc`, `/dev`, `/tmp` and
//! the environment. bubblewrap 0.8 (Debian 12) cannot mount overlays, so the overlays are
//! mounted by keel itself, just before `bwrap` starts, in a private mount namespace of the
//! `bwrap` process (see [`sandbox`]): as root, or in a user namespace otherwise.
//!
//! # Requirements
//!
//! Linux with overlayfs, `bwrap` (bubblewrap ≥ 0.4 for `--json-status-fd`) and `rpmbuild`
//! (`scripts/install-deps.sh test` installs both), and root or unprivileged user
//! namespaces (Linux ≥ 5.11) for the overlay mounts. Without them, [`sandbox::run`] fails with
//! [`Error::SandboxUnavailable`] saying what failed and how to fix it;
//! [`sandbox::Isolation::Unsandboxed`] is the explicit, warned-about way out.
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use keel_toolchain::{BuildRequest, LayerCache, build_rpms, build_srpm};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let layers = LayerCache::new(Path::new("/var/cache/keel/layers"));
//! let (_digest, devel) = layers.layer(Path::new("out/libfoo-devel-1.0-1.x86_64.rpm"))?;
//! let mut req = BuildRequest::new(Path::new("SPECS/prog/prog.spec"), "x86_64", 1_790_000_000);
//! req.layers.push(devel);
//! let srpm = build_srpm(&req, Path::new("work/prog"))?;
//! let out = build_rpms(&req, &srpm, Path::new("work/prog"))?;
//! for rpm in &out.rpms {
//!     let info = keel_toolchain::read_rpm(rpm)?;
//!     let digest = keel_toolchain::semantic_digest(rpm)?;
//!     tracing::info!("built {} ({digest})", info.nevra());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # What it deliberately does not do
//!
//! - Resolve dependencies: the caller (keel-rules) decides which layers a build gets;
//!   `rpmbuild` runs with `--nodeps`.
//! - Install packages: layers are stacked, no scriptlets run, no rpm database is written.
//! - Touch the store: layers live in a directory the caller names; digests are returned
//!   for the caller to record.
//! - Print: diagnostics go through `tracing`.
//! - Check signatures: packages are checked against their digests only.

mod error;
pub mod layer;
pub mod rpmbuild;
pub mod rpmfile;
pub mod sandbox;
#[cfg(test)]
mod testutil;
pub mod toolchain;

pub use error::Error;
pub use layer::{
    LayerCache, UnpackOptions, UnpackStats, VerifiedPayload, unpack_payload, unpack_payload_with,
    verify_payload,
};
pub use rpmbuild::{BuildError, BuildOutput, BuildRequest, build_rpms, build_srpm};
pub use rpmfile::{RpmDep, RpmInfo, SemanticDigest, read_rpm, semantic_digest, semantic_summary};
pub use sandbox::{Isolation, Outcome, RunResult, SandboxSpec};
pub use toolchain::Toolchain;
