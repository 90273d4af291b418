//! The no-op fast path: a stamp of everything a successful build read, so that the next
//! `keel build` of the same targets can tell "nothing changed" from a `stat` per file,
//! without reading a spec or consulting the action cache (ninja's approach, with
//! content-addressed builds behind it when anything did change).
//!
//! A stamp lists every directory walked for specs and every file in them, the tree's
//! config, macro and manifest files, the host files the reader saw, the keel binary, the
//! toolchain's fingerprint and the published outputs, each with its size, mtime, ctime and
//! inode. Any difference, or a file modified within two seconds before the stamp was
//! written (its content could have changed again within the timestamp's resolution),
//! sends the build down the normal path. `keel store gc` deletes stamps, since it may
//! remove what they vouch for.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const VERSION: u32 = 2;
/// Modifications this close before the stamp are not trusted (see the module docs).
pub(crate) const RACY_NS: i128 = 2_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

pub(crate) fn meta(path: &Path) -> Option<Meta> {
    std::fs::symlink_metadata(path).ok().map(|m| meta_of(&m))
}

pub(crate) fn meta_of(m: &std::fs::Metadata) -> Meta {
    Meta {
        size: if m.is_dir() { 0 } else { m.len() },
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        ino: m.ino(),
    }
}

impl Meta {
    /// When the file's metadata or contents last changed.
    pub(crate) fn changed_ns(&self) -> i128 {
        self.mtime_ns.max(self.ctime_ns)
    }
}

/// Now, in nanoseconds since the epoch.
pub(crate) fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// What a no-op reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    version: u32,
    written_ns: i128,
    /// Each path, its metadata, and whether it is one of keel's own outputs (exempt from
    /// the racy check: keel wrote it just before the stamp, and nothing else should).
    entries: Vec<(PathBuf, Option<Meta>, bool)>,
    /// The toolchain fingerprint the build used (hex), checked separately.
    pub toolchain: String,
    /// The build's actions (name and kind): a build that finds nothing changed reports
    /// each as cached, as a full check would.
    pub actions: Vec<(String, keel_engine::ActionKind)>,
}

/// The stamp file for a build of `targets` of `tree` with `executor`.
pub fn path(store_root: &Path, tree_root: &Path, executor: &str, targets: &[String]) -> PathBuf {
    let mut t = targets.to_vec();
    t.sort();
    let id = format!("{}\0{executor}\0{}", tree_root.display(), t.join("\0"));
    let h = keel_store::BlobDigest::of_bytes(id.as_bytes());
    store_root
        .join("builds")
        .join(format!("stamp-{}", &h.to_hex()[..16]))
}

/// Every directory under `roots` (recursively) and every regular file in them.
pub fn walk(roots: &[PathBuf], out: &mut Vec<PathBuf>) {
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(dir) = stack.pop() {
        out.push(dir.clone());
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => out.push(e.path()),
                Err(_) => {}
            }
        }
    }
}

impl Stamp {
    /// A stamp of `inputs` and `outputs` as they are now.
    pub fn take(
        inputs: Vec<PathBuf>,
        outputs: Vec<PathBuf>,
        toolchain: String,
        actions: Vec<(String, keel_engine::ActionKind)>,
    ) -> Stamp {
        let now = now_ns();
        let entries = inputs
            .into_iter()
            .map(|p| (p, false))
            .chain(outputs.into_iter().map(|p| (p, true)))
            .map(|(p, out)| {
                let m = meta(&p);
                (p, m, out)
            })
            .collect();
        Stamp {
            version: VERSION,
            written_ns: now,
            entries,
            toolchain,
            actions,
        }
    }

    pub fn save(&self, path: &Path) {
        let tmp = path.with_extension("tmp");
        let ok = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .ok()
            .and_then(|b| std::fs::write(&tmp, b).ok())
            .and_then(|()| std::fs::rename(&tmp, path).ok());
        if ok.is_none() {
            tracing::warn!("could not write the build stamp {}", path.display());
        }
    }

    pub fn load(path: &Path) -> Option<Stamp> {
        let bytes = std::fs::read(path).ok()?;
        let (s, _): (Stamp, _) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).ok()?;
        (s.version == VERSION).then_some(s)
    }

    /// Whether every entry is as it was, and none was modified too close to the stamp.
    pub fn still_holds(&self) -> bool {
        use rayon::prelude::*;
        self.entries.par_iter().all(|(p, old, output)| {
            let now = meta(p);
            let holds = now == *old
                && (*output
                    || now
                        .as_ref()
                        .is_none_or(|m| self.written_ns - m.mtime_ns.max(m.ctime_ns) > RACY_NS));
            if !holds {
                tracing::debug!("build stamp: {} changed", p.display());
            }
            holds
        })
    }
}
