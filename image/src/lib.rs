//! keel's images: from an Azure Linux image config and a set of built RPMs to container
//! and disk images.

pub mod artifacts;
pub mod closure;
pub mod config;
mod error;
pub mod rootfs;
#[cfg(test)]
mod testutil;
mod tools;

pub use closure::{Closure, resolve_closure};
pub use config::{ImageConfig, load_config, parse_config};
pub use error::Error;
