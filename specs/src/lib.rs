//! keel-specs: a native reader of RPM spec files.
//!
//! It implements rpm's macro language ([`macros`]: definitions, parametric macros, built-ins,
//! `%{lua:}` through embedded Lua 5.4, `%(shell)` through a configurable shell with a cache,
//! and rpm's expression grammar in [`expr`]), reads a spec the way `rpmbuild`'s parser does
//! ([`spec`]: conditionals, `%include`, sections, preamble tags) into a model of the source
//! package and its binary packages, and renders rpmspec-compatible output ([`query`]).
//!
//! It deliberately does not build anything, touch a store or know about other keel crates.

pub mod expr;
pub mod lua;
pub mod macros;
pub mod vercmp;
