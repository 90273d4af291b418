//! Integration tests: the real `keel` binary, driven in temporary directories.
//!
//! One test binary (so it links once); one module per area.

mod support;

mod build;
mod graph;
mod image;
mod incremental;
mod remote;
mod spec_corpus;
mod store;
mod unpack;
