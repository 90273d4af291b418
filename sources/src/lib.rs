//! Sources of a distribution tree: signatures, mirrors, and getting them into the store.
//!
//! Each spec directory holds a `<pkg>.signatures.json` (Azure Linux's format,
//! `{"Signatures": {"file": "sha256hex"}}`) with the SHA-256 of every source and patch.
//! [`Fetcher::fetch`] takes a source from the spec's directory if it is there, else from
//! the store if a source with that SHA-256 was stored before, else from each configured
//! mirror in turn (`MIRROR/<file>`, over http, https or file). Downloads stream into a
//! temporary file while their SHA-256 is computed — memory does not grow with the file —
//! and are stored (by BLAKE3, like everything in the store) only once they pass the check
//! the [`Mode`] asks for. A small record under the store (`<store>/sources/`, see
//! `known.rs`) maps SHA-256 to blob, so a source is downloaded once per store, ever.
//!
//! Transient failures (connection errors, timeouts, HTTP 5xx/429, a body cut short) are
//! retried with exponential backoff; a 404 moves on to the next mirror. A source found
//! nowhere is an error naming every place tried and what happened there; a source with the
//! wrong digest is an error naming expected and actual digests, and nothing is stored.
//!
//! [`verify_dir`] checks a spec directory against its signatures without any network.
//!
//! ```
//! use std::path::Path;
//! use keel_sources::{Signatures, verify_dir};
//!
//! let text = r#"{ "Signatures": { "hello-1.0.tar.gz":
//!     "37363f5c1ee7d8dd565244dc0f5bde571232a0ac0800c5176904d6beb6227b64" } }"#;
//! let sigs = Signatures::parse(text, Path::new("hello.signatures.json"))?;
//! assert_eq!(
//!     sigs.get("hello-1.0.tar.gz"),
//!     Some("37363f5c1ee7d8dd565244dc0f5bde571232a0ac0800c5176904d6beb6227b64")
//! );
//! // The tarball is not in this directory (it would come from a mirror), which is fine;
//! // a source of the spec without a signature is not.
//! let sources = ["hello-1.0.tar.gz".to_owned(), "fix.patch".to_owned()];
//! let problems = verify_dir(Path::new("/nonexistent"), &sigs, &sources);
//! assert_eq!(problems.len(), 1);
//! assert_eq!(problems[0].to_string(), "fix.patch has no entry in the signatures file");
//! # Ok::<(), keel_sources::Error>(())
//! ```
//!
//! What it deliberately does not do: read specs (the caller passes the source file names,
//! after `#/` renames), draw progress bars (it calls a [`ProgressFn`]), or talk to remote
//! caches. Mirrors are plain file servers, as `SOURCE_URL` is for the Azure Linux toolkit.

mod error;
mod fetch;
mod known;
mod signatures;
mod verify;

pub use error::{Attempt, Error};
pub use fetch::{
    Fetched, Fetcher, Mode, Origin, PROGRESS_STEP, Progress, ProgressFn, SpecFetch, sha256_file,
};
pub use signatures::Signatures;
pub use verify::{Problem, verify_dir};
