//! Integration tests: the real `keel` binary, driven in temporary directories.
//!
//! One test binary (so it links once); one module per area.

mod support;

mod build;
mod cli;
mod consistency;
mod contained_specs;
mod cutoff;
mod durability;
mod equal_to_clean;
mod graph;
mod image;
mod incremental;
mod newcomer;
mod preflight;
mod progress;
mod remote;
mod sandbox_probe;
mod spec_corpus;
mod store;
mod tree_layouts;
mod trust;
mod unpack;
