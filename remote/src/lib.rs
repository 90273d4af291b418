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
//! - [`grpc::GrpcTier`] speaks the Remote Execution API v2 cache services (Capabilities,
//!   ActionCache, ContentAddressableStorage, ByteStream): BuildGrid, Buildbarn, BuildBuddy,
//!   NativeLink. The digest function is negotiated (BLAKE3 if offered, else SHA-256).
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
//! # Example
//!
//! Signing and checking an entry (what [`Remote::put_action`] and
//! [`Remote::get_action`] do around the network):
//!
//! ```
//! use keel_remote::signing::{Entry, SigningKeyPair, TrustedKeys, Verdict};
//! use keel_store::{ActionKey, BlobDigest};
//!
//! let writer = SigningKeyPair::from_seed([7; 32]);
//! let readers = TrustedKeys::new(vec![writer.public()]);
//! let entry = Entry {
//!     key: ActionKey::of_bytes(b"an action"),
//!     record: b"its record".to_vec(),
//!     blobs: vec![(BlobDigest::of_bytes(b"an output"), [0; 32])],
//! };
//! let bytes = writer.sign(&entry);
//! assert_eq!(readers.verify(&entry.key, &bytes), Verdict::Valid(entry.clone()));
//! let stranger = TrustedKeys::new(vec![SigningKeyPair::from_seed([8; 32]).public()]);
//! assert!(matches!(stranger.verify(&entry.key, &bytes), Verdict::UntrustedKey(_)));
//! ```
//!
//! # What it does not do
//!
//! It stores nothing locally (the caller puts fetched blobs into its `keel_store::Store`),
//! knows nothing of actions beyond "a key, a record's bytes and the blobs it names", and
//! ships no server. It does not compress transfers yet, does not batch several blobs into
//! one `BatchReadBlobs` call (each blob is one call, calls run in parallel), and uploads
//! trees only as the blobs the caller passes. It never executes actions remotely.

mod error;
pub mod grpc;
mod health;
pub mod http;
mod remote;
pub mod signing;
mod tier;

pub use error::{RemoteError, Result};
pub use remote::{Mode, PutReport, Remote, RemoteConfig};
pub use tier::{BlobSource, DigestFunction, DigestMap, Landing, Stats, StatsSnapshot, Tier};
