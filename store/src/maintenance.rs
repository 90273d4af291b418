//! `stats`, `verify` and `gc`: whole-store walks.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rayon::prelude::*;
use serde::Serialize;

use crate::action::{ObjectRef, parse_index_value};
use crate::digest::{BlobDigest, BlobKind, Digest, DigestKind, RecordKind, TreeKind};
use crate::error::{Result, StoreError};
use crate::object::{self, HEADER_LEN, Header, ObjectKind, ReadFailure, VerifyingReader};
use crate::store::{Counters, QUARANTINE_DIR, Store, TMP_DIR, now_secs};

/// One object file found on disk.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub kind: ObjectKind,
    pub hex: String,
    pub path: PathBuf,
    pub disk_bytes: u64,
}

/// Per-kind totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindStats {
    pub objects: u64,
    /// Bytes on disk (headers and compression included).
    pub stored_bytes: u64,
    /// Bytes of content (what the digests cover).
    pub logical_bytes: u64,
}

/// What `keel store stats` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    pub root: PathBuf,
    pub blobs: KindStats,
    pub trees: KindStats,
    pub records: KindStats,
    pub action_cache_entries: u64,
    pub stat_cache_entries: u64,
    pub roots: u64,
    pub quarantined: u64,
    /// Lifetime counters: name and value.
    pub counters: Vec<(String, u64)>,
}

/// One damaged object found by `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct Damage {
    pub kind: &'static str,
    pub digest: String,
    pub path: PathBuf,
    pub why: String,
}

/// What `keel store verify` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub checked: u64,
    pub checked_bytes: u64,
    /// Damage found by this walk (those objects are now quarantined).
    pub damaged: Vec<Damage>,
    /// Objects quarantined earlier, when a read found them damaged, not yet reported.
    pub quarantined_earlier: Vec<PathBuf>,
    /// Action-cache entries dropped because their record is gone.
    pub pruned_index_entries: u64,
}

impl VerifyReport {
    /// Whether the store was found intact.
    pub fn is_clean(&self) -> bool {
        self.damaged.is_empty() && self.quarantined_earlier.is_empty()
    }
}

/// How `gc` chooses what to delete.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Delete least-recently-used objects until the objects take at most this many bytes.
    pub max_bytes: u64,
    /// Keep everything reachable from the roots (the newest build of each tree), even if
    /// that leaves the store above `max_bytes`.
    pub keep_roots: bool,
}

/// What `gc` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub removed_objects: u64,
    pub removed_bytes: u64,
    pub kept_objects: u64,
    pub kept_bytes: u64,
    /// Objects kept only because a root needs them.
    pub kept_for_roots: u64,
    pub removed_temporaries: u64,
}

impl Store {
    pub(crate) fn list_objects(&self) -> Vec<Found> {
        self.list_kinds(&ObjectKind::ALL)
    }

    /// The object files of the given kinds, named by the hex digest their path spells.
    pub(crate) fn list_kinds(&self, kinds: &[ObjectKind]) -> Vec<Found> {
        let mut out = Vec::new();
        for &kind in kinds {
            let dir = self.root.join(kind.dir_name());
            for entry in walkdir::WalkDir::new(&dir)
                .min_depth(2)
                .max_depth(2)
                .into_iter()
                .flatten()
            {
                if !entry.file_type().is_file() {
                    continue;
                }
                let prefix = entry
                    .path()
                    .parent()
                    .and_then(|p| p.file_name())
                    .map(|s| s.to_string_lossy().into_owned());
                let hex = format!(
                    "{}{}",
                    prefix.unwrap_or_default(),
                    entry.file_name().to_string_lossy()
                );
                let disk_bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(Found {
                    kind,
                    hex,
                    path: entry.into_path(),
                    disk_bytes,
                });
            }
        }
        out
    }

    /// Counts objects and bytes, and reads the lifetime counters.
    pub fn stats(&self) -> Result<StoreStats> {
        self.flush()?;
        let found = self.list_objects();
        let logical: Vec<u64> = found
            .par_iter()
            .map(|f| read_header(&f.path).map(|h| h.size).unwrap_or(0))
            .collect();
        let mut stats = StoreStats {
            root: self.root.clone(),
            ..Default::default()
        };
        for (f, size) in found.iter().zip(logical) {
            let k = match f.kind {
                ObjectKind::Blob => &mut stats.blobs,
                ObjectKind::Tree => &mut stats.trees,
                ObjectKind::Record => &mut stats.records,
            };
            k.objects += 1;
            k.stored_bytes += f.disk_bytes;
            k.logical_bytes += size;
        }
        stats.action_cache_entries = self.ac.len() as u64;
        stats.stat_cache_entries = self.stat.len() as u64;
        stats.roots = self.roots.len() as u64;
        stats.quarantined = walkdir::WalkDir::new(self.root.join(QUARANTINE_DIR))
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .count() as u64;
        for name in Counters::NAMES {
            let v = self
                .meta
                .get(format!("counter/{name}").as_bytes())
                .map_err(|e| self.index_err(e))?
                .and_then(|v| v.as_ref().try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            stats.counters.push((name.to_owned(), v));
        }
        Ok(stats)
    }

    /// Re-hashes every object. Damaged ones are quarantined and reported; index entries
    /// that point at nothing are dropped.
    pub fn verify(&self) -> Result<VerifyReport> {
        let found = self.list_objects();
        let results: Vec<(u64, Option<Damage>)> = found
            .par_iter()
            .map(|f| match verify_one(f) {
                Ok(bytes) => (bytes, None),
                Err(why) => {
                    self.quarantine(f.kind, &f.hex, &f.path);
                    let d = Damage {
                        kind: f.kind.name(),
                        digest: f.hex.clone(),
                        path: f.path.clone(),
                        why,
                    };
                    (0, Some(d))
                }
            })
            .collect();
        let mut report = VerifyReport {
            checked: found.len() as u64,
            ..Default::default()
        };
        for (bytes, damage) in results {
            report.checked_bytes += bytes;
            report.damaged.extend(damage);
        }
        // Earlier quarantines (damage found by reads) are reported once, then filed.
        let new_dir = self.root.join(QUARANTINE_DIR).join("new");
        let filed = self.root.join(QUARANTINE_DIR).join("reported");
        fs::create_dir_all(&filed).map_err(StoreError::io("create directory", &filed))?;
        let just_now: HashSet<String> = report.damaged.iter().map(|d| d.digest.clone()).collect();
        if let Ok(rd) = fs::read_dir(&new_dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let dest = filed.join(&name);
                if !just_now.iter().any(|h| name.contains(h.as_str())) {
                    report.quarantined_earlier.push(dest.clone());
                }
                let _ = fs::rename(e.path(), dest);
            }
        }
        report.pruned_index_entries = self.prune_ac_index()? as u64;
        self.flush()?;
        Ok(report)
    }

    /// Deletes least-recently-used objects until the store fits `max_bytes`.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        self.flush()?;
        let mut report = GcReport {
            removed_temporaries: remove_stale_temporaries(&self.root.join(TMP_DIR)),
            ..GcReport::default()
        };
        let keep = if opts.keep_roots {
            self.rooted_objects()?
        } else {
            HashSet::new()
        };
        let mut found = self.list_objects();
        let last_use = |f: &Found| -> u64 {
            let mut k = vec![f.kind.byte()];
            k.extend(
                Digest::<BlobKind>::parse_hex(&f.hex)
                    .map(|d| *d.hash())
                    .unwrap_or([0; 32]),
            );
            self.atime
                .get(&k)
                .ok()
                .flatten()
                .and_then(|v| v.as_ref().try_into().ok())
                .map(u64::from_le_bytes)
                .or_else(|| {
                    fs::metadata(&f.path)
                        .and_then(|m| m.modified())
                        .ok()
                        .map(|t| {
                            t.duration_since(std::time::UNIX_EPOCH)
                                .map(|d| d.as_secs())
                                .unwrap_or(0)
                        })
                })
                .unwrap_or(0)
        };
        let mut aged: Vec<(u64, Found)> = found.drain(..).map(|f| (last_use(&f), f)).collect();
        // Oldest first; among equals, records before what they name, so a record never
        // outlives its outputs for long.
        aged.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| b.1.kind.byte().cmp(&a.1.kind.byte()))
        });
        let mut total: u64 = aged.iter().map(|(_, f)| f.disk_bytes).sum();
        for (_, f) in &aged {
            if total <= opts.max_bytes {
                report.kept_objects += 1;
                report.kept_bytes += f.disk_bytes;
                continue;
            }
            if keep.contains(&(f.kind, f.hex.clone())) {
                report.kept_for_roots += 1;
                report.kept_objects += 1;
                report.kept_bytes += f.disk_bytes;
                continue;
            }
            match fs::remove_file(&f.path) {
                Ok(()) => {
                    total -= f.disk_bytes;
                    report.removed_objects += 1;
                    report.removed_bytes += f.disk_bytes;
                }
                Err(e) => tracing::warn!(path = %f.path.display(), error = %e, "could not remove"),
            }
        }
        self.prune_ac_index()?;
        self.flush()?;
        Ok(report)
    }

    /// The closure of every root: records, the objects they name, and the blobs of trees.
    fn rooted_objects(&self) -> Result<HashSet<(ObjectKind, String)>> {
        let mut keep = HashSet::new();
        let mut stack: Vec<ObjectRef> = self.roots()?.into_iter().flat_map(|(_, o)| o).collect();
        while let Some(obj) = stack.pop() {
            match obj {
                ObjectRef::Blob(d) => {
                    keep.insert((ObjectKind::Blob, d.to_hex()));
                }
                ObjectRef::Tree(d) => {
                    if keep.insert((ObjectKind::Tree, d.to_hex()))
                        && let Ok(t) = self.get_tree(&d)
                    {
                        stack.extend(t.blobs().map(|b| ObjectRef::Blob(*b)));
                    }
                }
            }
        }
        // Records whose outputs are all kept stay too, so the cache still answers for them.
        for item in self.ac.iter() {
            let Ok((_, v)) = item else { continue };
            let Some(rd) = parse_index_value(&v) else {
                continue;
            };
            let Ok(rec) = self.read_record(&rd) else {
                continue;
            };
            let all_kept = rec.objects().all(|o| match o {
                ObjectRef::Blob(d) => keep.contains(&(ObjectKind::Blob, d.to_hex())),
                ObjectRef::Tree(d) => keep.contains(&(ObjectKind::Tree, d.to_hex())),
            });
            if all_kept && rec.objects().next().is_some() {
                keep.insert((ObjectKind::Record, rd.to_hex()));
            }
        }
        Ok(keep)
    }

    /// Reads a raw object's header (for tools and tests).
    pub fn object_path_of_blob(&self, digest: &BlobDigest) -> PathBuf {
        self.path_of(ObjectKind::Blob, digest)
    }

    /// The counters of this process so far (not yet flushed).
    pub fn session_counter(&self, name: &str) -> u64 {
        Counters::NAMES
            .iter()
            .zip(self.counters.all())
            .find(|(n, _)| **n == name)
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

fn read_header(path: &Path) -> Option<Header> {
    let mut f = fs::File::open(path).ok()?;
    let mut h = [0u8; HEADER_LEN];
    f.read_exact(&mut h).ok()?;
    Header::decode(&h).ok()
}

fn verify_typed<K: DigestKind>(f: &Found) -> Result<u64, String> {
    let digest =
        Digest::<K>::parse_hex(&f.hex).map_err(|_| "file name is not a digest".to_owned())?;
    let mut r = VerifyingReader::open(&f.path, f.kind, digest).map_err(|e| match e {
        ReadFailure::Missing => "vanished during verify".to_owned(),
        ReadFailure::Io(e) => e.to_string(),
        ReadFailure::Damaged(why) => why,
    })?;
    std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| match object::classify(e) {
        ReadFailure::Damaged(why) => why,
        ReadFailure::Io(e) => e.to_string(),
        ReadFailure::Missing => "vanished during verify".to_owned(),
    })
}

fn verify_one(f: &Found) -> Result<u64, String> {
    match f.kind {
        ObjectKind::Blob => verify_typed::<BlobKind>(f),
        ObjectKind::Tree => verify_typed::<TreeKind>(f),
        ObjectKind::Record => verify_typed::<RecordKind>(f),
    }
}

/// Temporaries older than an hour belong to processes that died mid-put.
fn remove_stale_temporaries(dir: &Path) -> u64 {
    let cutoff = now_secs().saturating_sub(3600);
    let mut n = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    < cutoff
            })
            .unwrap_or(false);
        if old && fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::{ActionOutput, ActionRecord};
    use crate::digest::{ActionKey, DigestHasher};

    fn store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(&tmp.path().join("s")).unwrap();
        (tmp, s)
    }

    #[test]
    fn gc_keeps_what_the_newest_build_needs_unless_told_otherwise() {
        let (_tmp, s) = store();
        let noise = |seed: u8| -> Vec<u8> {
            (0..50_000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ seed)
                .collect()
        };
        let rooted = s.put_bytes(&noise(1)).unwrap();
        let loose = s.put_bytes(&noise(2)).unwrap();
        let mut h = DigestHasher::new();
        h.field(b"build");
        let key: ActionKey = h.finalize();
        let rec = ActionRecord::new(
            key,
            vec![ActionOutput {
                name: "rpm".into(),
                object: ObjectRef::Blob(rooted),
            }],
            "{}".into(),
        );
        s.ac_put(&rec).unwrap();
        s.set_root("tree:/example", &[ObjectRef::Blob(rooted)])
            .unwrap();

        let r = s
            .gc(&GcOptions {
                max_bytes: 0,
                keep_roots: true,
            })
            .unwrap();
        assert!(s.contains_blob(&rooted), "rooted blob deleted");
        assert!(!s.contains_blob(&loose), "unrooted blob kept");
        assert!(r.kept_for_roots >= 1);
        assert!(
            s.ac_get(&key).unwrap().is_some(),
            "the record of a rooted output is kept"
        );

        s.gc(&GcOptions {
            max_bytes: 0,
            keep_roots: false,
        })
        .unwrap();
        assert!(!s.contains_blob(&rooted));
        assert!(s.ac_get(&key).unwrap().is_none());
    }

    #[test]
    fn stats_count_objects_and_both_sizes() {
        let (_tmp, s) = store();
        let text = "compressible ".repeat(10_000);
        s.put_bytes(text.as_bytes()).unwrap();
        s.put_bytes(text.as_bytes()).unwrap();
        let st = s.stats().unwrap();
        assert_eq!(st.blobs.objects, 1);
        assert_eq!(st.blobs.logical_bytes, text.len() as u64);
        assert!(st.blobs.stored_bytes < st.blobs.logical_bytes / 10);
        let dedup = st
            .counters
            .iter()
            .find(|(n, _)| n == "blobs_deduplicated")
            .unwrap()
            .1;
        assert_eq!(dedup, 1);
    }
}
