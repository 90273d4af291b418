//! Integration tests: drive the real `keel` binary.

mod spec_corpus;
