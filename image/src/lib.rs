//! keel's images: from an Azure Linux image config and a set of built RPMs to container
//! and disk images.

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
pub use closure::{Closure, resolve_closure};
pub use config::{ImageConfig, load_config, parse_config};
pub use error::Error;
