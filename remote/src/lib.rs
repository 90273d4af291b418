//! keel's remote cache tiers: the client side of a shared cache, on servers people already
//! run.
//!
//! A [`Tier`] is one remote cache: an action cache of opaque entries keyed by
//! [`keel_store::ActionKey`] and a content-addressed store of blobs named by their BLAKE3
//! [`keel_store::BlobDigest`]. Two implementations:
//!
//! - [`http::HttpTier`] speaks Bazel's HTTP cache protocol (`GET`/`PUT`/`HEAD` on
//!   `/ac/<hex>` and `/cas/<hex>`): nginx + WebDAV, bazel-remote, S3/GCS behind the same
//!   paths. Its module docs explain how keel's BLAKE3 digests map to the SHA-256 paths most
//!   servers expect.
//!
//! [`Remote`] combines tiers for one build: read-write (trusted CI) or read-only (pull
//! requests), entries signed and checked by [`signing`], transfers in parallel, blobs
//! uploaded before the entry that names them.
//!
//! # What it guarantees
//!
//! - Nothing downloaded is handed out before its size and BLAKE3 were checked: downloads
//!   are staged in a temporary file while they are hashed, and a mismatch is
//!   [`RemoteError::Corrupt`] naming the URL, counted in [`Stats::verify_failures`].
//! - An action-cache entry is used only if it is signed by a trusted key over exactly its
//!   bytes and its action key (see [`signing`]); others are refused and counted.
//! - A dead, slow or failing remote never hangs or fails a build: every request is bounded
//!   by timeouts, retried a few times with backoff, and after repeated failures the tier
//!   is disabled for the rest of the process with one warning.
//! - Credentials never appear in `Debug`, `Display` or errors: URLs are printed without
//!   their user info, secrets are [`http::Secret`]s.
//!
//! # What it does not do
//!
//! It stores nothing locally (the caller puts fetched blobs into its `keel_store::Store`),
//! knows nothing of actions beyond "a key, a record's bytes and the blobs it names", and
//! ships no server.

mod error;
pub mod grpc;
pub mod http;
mod remote;
pub mod signing;
mod tier;

pub use error::{RemoteError, Result};
pub use remote::{Mode, PutReport, Remote, RemoteConfig};
pub use tier::{BlobSource, DigestFunction, DigestMap, Stats, StatsSnapshot, Tier};
