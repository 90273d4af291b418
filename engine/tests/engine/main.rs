//! The engine's integration tests, one binary (so it links once): the incremental law as a
//! property test, and a build killed with SIGKILL.

mod incremental;
mod kill;
mod views;
