//! Reading a tree's specs again only when something they can see changed.
//!
//! A spec's evaluation depends on its own bytes, on the files beside it (`%include`,
//! `%{SOURCEn}` read by macros, patches listed by glob), and on the reader's setup (macro
//! files, defines, keel itself). [`SpecCache`] keys each spec's result by the digests of
//! all of those — taken through the store's stat cache, so an unchanged tree costs a
//! `stat` per file — and keeps the results in one file beside the store's other state.
//! A warm read of a tree then parses only the specs whose directory changed.
//!
//! What it cannot see: files a `%(shell)` command or a Lua script reads from elsewhere
//! on the machine. Those are read again when the setup digest changes (the caller folds
//! the host's macro files into it) and otherwise kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use keel_specs::{ReaderConfig, Spec, SpecError};
use keel_store::{BlobDigest, Digest, DigestHasher, DigestKind, Store};
use rayon::prelude::*;

/// Format of the cache file; bumped when [`Spec`]'s serialized form changes. 2: keys are
/// typed digests (hash and size).
const FORMAT: &[u8; 16] = b"keel-specs-v2\0\0\0";

/// What one spec's evaluation depends on (see [`spec_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecKeyKind {}

impl DigestKind for SpecKeyKind {
    const CONTEXT: Option<&'static str> = Some("keel-rules 2026-11-27 spec cache key v1");
    const NAME: &'static str = "spec cache key";
}

/// The key of one cached spec evaluation.
pub type SpecKey = Digest<SpecKeyKind>;

/// Cached spec evaluations, keyed by everything they depend on.
#[derive(Debug, Default)]
pub struct SpecCache {
    path: PathBuf,
    entries: HashMap<SpecKey, Spec>,
    /// Entries looked up or added this run: what [`SpecCache::save`] keeps.
    live: HashMap<SpecKey, ()>,
    dirty: bool,
}

/// What a read through the cache did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: usize,
    pub parsed: usize,
}

impl SpecCache {
    /// Loads the cache file at `path`; a missing, foreign or damaged file gives an empty
    /// cache (with a warning for the damaged case), never an error.
    pub fn load(path: &Path) -> SpecCache {
        let mut cache = SpecCache {
            path: path.to_owned(),
            ..SpecCache::default()
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(_) => return cache,
        };
        let decoded = bytes.strip_prefix(FORMAT.as_slice()).and_then(|rest| {
            bincode::serde::decode_from_slice::<Vec<(SpecKey, Spec)>, _>(
                rest,
                bincode::config::standard(),
            )
            .ok()
        });
        match decoded {
            Some((entries, _)) => cache.entries = entries.into_iter().collect(),
            None => tracing::warn!(
                "spec cache {} is unreadable; reading every spec again",
                path.display()
            ),
        }
        cache
    }

    /// Writes the entries used this run (dropping the stale ones), if anything changed.
    pub fn save(&self) -> std::io::Result<()> {
        if !self.dirty && self.live.len() == self.entries.len() {
            return Ok(());
        }
        let live: Vec<(&SpecKey, &Spec)> = self
            .entries
            .iter()
            .filter(|(k, _)| self.live.contains_key(*k))
            .collect();
        let mut bytes = FORMAT.to_vec();
        bytes.extend(
            bincode::serde::encode_to_vec(&live, bincode::config::standard())
                .map_err(std::io::Error::other)?,
        );
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Reads `files` with `reader`, answering from the cache where every input is
    /// unchanged. `setup` is the digest of the reader's setup (see the module docs).
    /// Results are in the order of `files`.
    pub fn read_all(
        &mut self,
        store: &Store,
        setup: &BlobDigest,
        files: &[PathBuf],
        reader: &ReaderConfig,
    ) -> (Vec<Result<Spec, SpecError>>, CacheStats) {
        let keys: Vec<Option<SpecKey>> = files
            .par_iter()
            .map(|f| spec_key(store, setup, f))
            .collect();
        let mut stats = CacheStats::default();
        let entries = &self.entries;
        let results: Vec<(Result<Spec, SpecError>, bool)> = files
            .par_iter()
            .zip(&keys)
            .map(|(f, k)| match k.and_then(|k| entries.get(&k)) {
                Some(s) => (Ok(s.clone()), true),
                None => (keel_specs::read_spec(f, reader), false),
            })
            .collect();
        let mut out = Vec::with_capacity(results.len());
        for ((r, hit), k) in results.into_iter().zip(keys) {
            if hit {
                stats.hits += 1;
            } else {
                stats.parsed += 1;
            }
            if let Some(k) = k {
                self.live.insert(k, ());
                if !hit && let Ok(s) = &r {
                    self.entries.insert(k, s.clone());
                    self.dirty = true;
                }
            }
            out.push(r);
        }
        (out, stats)
    }
}

/// The key of one spec: the setup, its path, and every regular file beside it. `None`
/// when its directory cannot be listed (the spec is then simply read).
fn spec_key(store: &Store, setup: &BlobDigest, spec: &Path) -> Option<SpecKey> {
    let dir = spec.parent()?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    names.sort();
    let mut h = DigestHasher::<SpecKeyKind>::new();
    h.update(setup.hash());
    h.field(spec.as_os_str().as_encoded_bytes());
    for f in &names {
        h.field(f.file_name()?.as_encoded_bytes());
        h.update(store.file_digest(f).ok()?.hash());
    }
    Some(h.finalize())
}
