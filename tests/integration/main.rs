//! Integration tests: the real `keel` binary, driven in temporary directories.
//!
//! One test binary (so it links once); one module per area.

mod support;

mod build;
mod contained_specs;
mod graph;
mod image;
mod incremental;
mod preflight;
mod remote;
mod sandbox_probe;
mod spec_corpus;
mod store;
