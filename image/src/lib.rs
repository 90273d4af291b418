//! keel's images: from an Azure Linux image config and a set of built RPMs to container
//! and disk images, reproducibly.
//!
//! # How it works
//!
//! 1. [`config`] reads an image config (`toolkit/imageconfigs/*.json`) with its package
//!    lists and post-install scripts into an [`ImageConfig`]. It is strict: a field keel
//!    does not implement is an error naming the file and the field, never ignored.
//! 2. [`closure`] picks the packages: the requested names and everything their
//!    `Requires` pull in (names, versioned `Provides`, file paths), dependencies first;
//!    a missing capability names the chain that needs it.
//! 3. [`rootfs`] unpacks those packages into one directory with keel-toolchain's safe
//!    unpacker (nothing written outside the root, no symlink ever followed, digests and
//!    sizes checked), applies owners, adds users, the hostname and fstab, writes the rpm
//!    database with `rpm --justdb`, and runs post-install scripts in keel's sandbox
//!    (no network) with the root as its `/`.
//! 4. [`artifacts`] turns the root into tar.gz/tar.zst and OCI layouts (written
//!    natively), squashfs and ISO (`mksquashfs`, `xorriso`), and GPT disks (table, VHD
//!    footer and VHDX written natively; ext4 by `mkfs.ext4 -d`, FAT by `mkfs.vfat` +
//!    mtools, qcow2 by `qemu-img`), all byte-for-byte reproducible.
//! 5. [`build_image`] does all of it and writes a package manifest (name, EVR, arch,
//!    BLAKE3 of each RPM, and the setuid, setgid and world-writable files each ships)
//!    beside the artifacts.
//!
//! # Example
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use keel_image::{build_image, load_config};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = load_config(Path::new("imageconfigs/core-container.json"))?;
//! let mut rpms = Vec::new();
//! for entry in std::fs::read_dir("out/RPMS/x86_64")? {
//!     let path: PathBuf = entry?.path();
//!     let info = keel_toolchain::read_rpm(&path)?;
//!     rpms.push((path, info));
//! }
//! let out = build_image(&config, "Standard", &rpms, Path::new("work/core"), Path::new("out/images"), 1_700_000_000)?;
//! for artifact in &out.artifacts {
//!     tracing::info!("made {}", artifact.display());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Requirements
//!
//! Root (owners, device nodes and the sandbox's mounts), `rpm` (for `--justdb`),
//! `bwrap` (post-install scripts), and per artifact kind: `mkfs.ext4` and `debugfs`
//! (e2fsprogs), `mkfs.vfat` (dosfstools), `mcopy` (mtools), `qemu-img` (qemu-utils, qcow2),
//! `mksquashfs` (squashfs-tools), `xorriso` and `createrepo_c` (ISO).
//!
//! # What it deliberately does not do
//!
//! - Install a bootloader or kernel command line (`BootType`, `KernelCommandLine` are
//!   rejected): disk images hold the partitions and files, not a boot setup.
//! - Run the packages' own scriptlets (like `rpm --noscripts`); post-install scripts of
//!   the config do run.
//! - Follow weak dependencies, or resolve rich ones (refused with the chain for now).
//! - Apply file capabilities or SELinux labels; accept two packages shipping the same
//!   file (rpm allows identical shared files; keel refuses the second).
//! - Cache anything or know about actions: the caller (the engine) keys an image on the
//!   config, the closure's packages and the tools, and calls [`build_image`] on a miss.
//! - Print: diagnostics go through `tracing`.

pub mod artifacts;
mod build;
pub mod closure;
pub mod config;
mod error;
pub mod rootfs;
#[cfg(test)]
mod testutil;
mod tools;

pub use build::{ImageOutput, build_image};
pub use closure::{Closure, resolve_closure, runtime_closure};
pub use config::{ImageConfig, load_config, parse_config};
pub use error::Error;
