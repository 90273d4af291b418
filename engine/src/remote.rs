//! A second cache level behind the local store: a shared remote cache.
//!
//! The engine asks it only after the local action cache missed, and tells it about every
//! result an action produced here. What the remote speaks (HTTP, the Remote Execution
//! API), whom it trusts and which blobs it downloads are its business; the engine only
//! needs a record for a key.

use std::fmt;

use keel_store::{ActionKey, ActionRecord, Store};

use crate::graph::Action;

/// A record found in a remote cache.
#[derive(Debug, Clone)]
pub struct RemoteHit {
    pub record: ActionRecord,
    /// Whether every object the record names is now in the local store and the record in
    /// its action cache. A remote may answer with the record alone when the objects are
    /// unlikely to be needed (a source that is only an input of cached packages); they are
    /// then fetched by whoever needs them.
    pub local: bool,
}

/// A cache consulted after the local store misses, and told about every result.
///
/// Implementations must never fail a build: an unreachable or lying remote is a miss (and
/// a warning of its own).
pub trait RemoteCache: Send + Sync + fmt::Debug {
    /// A record answering `key` for `action`, or `None`.
    fn lookup(&self, store: &Store, action: &Action, key: &ActionKey) -> Option<RemoteHit>;

    /// Shares the result of an action that ran here and is recorded in `store`.
    fn publish(&self, store: &Store, action: &Action, record: &ActionRecord);
}
