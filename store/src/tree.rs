//! Trees: directories stored as content-addressed manifests.
//!
//! A manifest lists every entry under a directory — relative path, mode, and a blob digest,
//! a symlink target or "directory" — sorted by path, so the same directory always encodes
//! to the same bytes. Files are stored as ordinary blobs, so two versions of a tree share
//! every file they have in common.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::digest::{BlobDigest, TreeDigest, TreeKind};
use crate::error::{Result, StoreError};
use crate::object::{CompressHint, ObjectKind};
use crate::store::Store;

const TREE_FORMAT: u8 = 1;

/// What a tree entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Node {
    File(BlobDigest),
    Symlink(Vec<u8>),
    Dir,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// The path relative to the tree's root, `/`-separated, as raw bytes (file names need
    /// not be UTF-8).
    pub path: Vec<u8>,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    pub node: Node,
}

/// A directory manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub entries: Vec<TreeEntry>,
}

impl Tree {
    /// The canonical encoding: a format byte, then the entries sorted by path.
    pub fn encode(&self) -> Vec<u8> {
        let mut sorted = self.clone();
        sorted.entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mut out = vec![TREE_FORMAT];
        out.extend(
            bincode::serde::encode_to_vec(&sorted, bincode::config::standard())
                .expect("trees always encode"),
        );
        out
    }

    fn decode(bytes: &[u8], digest: &TreeDigest) -> Result<Tree> {
        let bad = |why: String| StoreError::Decode {
            what: "tree",
            digest: digest.to_hex(),
            why,
        };
        match bytes.split_first() {
            Some((&TREE_FORMAT, rest)) => {
                bincode::serde::decode_from_slice(rest, bincode::config::standard())
                    .map(|(t, _)| t)
                    .map_err(|e| bad(e.to_string()))
            }
            Some((v, _)) => Err(bad(format!("unknown tree format {v}"))),
            None => Err(bad("empty manifest".into())),
        }
    }

    /// A manifest from its [`Tree::encode`]d bytes (for example fetched from a remote
    /// cache), accepted only if they hash to `expected`.
    pub fn from_bytes(bytes: &[u8], expected: &TreeDigest) -> Result<Tree> {
        let got = TreeDigest::of_bytes(bytes);
        if got != *expected {
            return Err(StoreError::Decode {
                what: "tree",
                digest: expected.to_hex(),
                why: format!("the bytes hash to {}", got.to_hex()),
            });
        }
        Tree::decode(bytes, expected)
    }

    /// The tree's digest (what [`Store::put_tree`] returns for it).
    pub fn digest(&self) -> TreeDigest {
        TreeDigest::of_bytes(&self.encode())
    }

    /// The blobs this tree names.
    pub fn blobs(&self) -> impl Iterator<Item = &BlobDigest> {
        self.entries.iter().filter_map(|e| match &e.node {
            Node::File(d) => Some(d),
            _ => None,
        })
    }
}

/// Checks that a manifest path stays inside its root: relative, no `..`, no empty or `.`
/// components. Manifests can come from other machines, so this is checked on every use.
fn safe_relative(path: &[u8]) -> Option<&Path> {
    let p = Path::new(OsStr::from_bytes(path));
    let ok = !path.is_empty()
        && !path.contains(&0)
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then_some(p)
}

/// Whether `name` may name an action's output: what [`safe_relative`] accepts of a
/// manifest path, in one component. Outputs are written as `dir.join(name)` (published,
/// unpacked into work directories) on every machine that reads the record, so a name
/// that is absolute, holds `..` or a `/` would write or delete outside that directory.
pub fn is_safe_output_name(name: &str) -> bool {
    safe_relative(name.as_bytes()).is_some_and(|p| p.components().count() == 1)
}

impl Store {
    /// Stores a manifest (its files must already be stored).
    pub fn put_tree(&self, tree: &Tree) -> Result<TreeDigest> {
        for d in tree.blobs() {
            if !self.contains_blob(d) {
                return Err(StoreError::Invalid(format!(
                    "tree names blob {d} which is not in the store"
                )));
            }
        }
        let bytes = tree.encode();
        let digest = TreeDigest::of_bytes(&bytes);
        if self.has_object(ObjectKind::Tree, &digest) {
            return Ok(digest);
        }
        self.put_object::<TreeKind>(ObjectKind::Tree, CompressHint::Auto, |w| w.write(&bytes))
    }

    /// Whether a manifest is present (its files are, if the store is intact).
    pub fn contains_tree(&self, digest: &TreeDigest) -> bool {
        self.has_object(ObjectKind::Tree, digest)
    }

    /// Reads a manifest back, verified.
    pub fn get_tree(&self, digest: &TreeDigest) -> Result<Tree> {
        let bytes = self.read_object(ObjectKind::Tree, digest)?;
        Tree::decode(&bytes, digest)
    }

    /// Stores a directory: every file as a blob (in parallel), then its manifest. Symlinks
    /// are stored as links, never followed.
    pub fn put_dir(&self, dir: &Path) -> Result<TreeDigest> {
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(dir)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(dir).to_owned();
                StoreError::Io {
                    action: "walk",
                    path,
                    source: e.into(),
                }
            })?;
            found.push(entry);
        }
        let entries = found
            .par_iter()
            .map(|entry| {
                let path = entry.path();
                let rel = path
                    .strip_prefix(dir)
                    .expect("walkdir yields paths under its root");
                let meta = entry.metadata().map_err(|e| StoreError::Io {
                    action: "stat",
                    path: path.to_owned(),
                    source: e.into(),
                })?;
                let ft = meta.file_type();
                let node = if ft.is_symlink() {
                    let target = fs::read_link(path).map_err(StoreError::io("read link", path))?;
                    Node::Symlink(target.as_os_str().as_bytes().to_vec())
                } else if ft.is_dir() {
                    Node::Dir
                } else if ft.is_file() {
                    Node::File(self.put_file(path)?)
                } else {
                    return Err(StoreError::Invalid(format!(
                        "{} is not a file, directory or symlink; trees hold only those",
                        path.display()
                    )));
                };
                let mode = if ft.is_symlink() {
                    0o777
                } else {
                    meta.mode() & 0o7777
                };
                Ok(TreeEntry {
                    path: rel.as_os_str().as_bytes().to_vec(),
                    mode,
                    node,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.put_tree(&Tree { entries })
    }

    /// Writes a tree out under `dest` (which must not exist yet or be empty). Refuses any
    /// entry whose path would leave `dest`.
    pub fn materialize_tree(&self, digest: &TreeDigest, dest: &Path) -> Result<()> {
        let tree = self.get_tree(digest)?;
        fs::create_dir_all(dest).map_err(StoreError::io("create directory", dest))?;
        let mut entries: Vec<&TreeEntry> = tree.entries.iter().collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
        let mut links: std::collections::HashSet<&Path> = std::collections::HashSet::new();
        for e in entries {
            let rel = safe_relative(&e.path).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "tree {digest} has an entry `{}` that escapes its root",
                    String::from_utf8_lossy(&e.path)
                ))
            })?;
            // A file written through a link the tree itself planted could land anywhere.
            if rel.ancestors().skip(1).any(|a| links.contains(a)) {
                return Err(StoreError::Invalid(format!(
                    "tree {digest} has an entry `{}` under a symlink",
                    rel.display()
                )));
            }
            let target = dest.join(rel);
            match &e.node {
                Node::Dir => {
                    fs::create_dir_all(&target)
                        .map_err(StoreError::io("create directory", &target))?;
                    dirs.push((target, e.mode));
                }
                Node::File(d) => self.materialize_blob(d, &target, e.mode)?,
                Node::Symlink(t) => {
                    std::os::unix::fs::symlink(OsStr::from_bytes(t), &target)
                        .map_err(StoreError::io("create symlink", &target))?;
                    links.insert(rel);
                }
            }
        }
        // Directory modes last, so a read-only directory does not block its own contents.
        for (d, mode) in dirs.into_iter().rev() {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode))
                .map_err(StoreError::io("set permissions of", &d))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_from_bytes_are_checked_against_their_digest() {
        let tree = Tree {
            entries: vec![TreeEntry {
                path: b"a".to_vec(),
                mode: 0o644,
                node: Node::File(BlobDigest::of_bytes(b"alpha")),
            }],
        };
        let bytes = tree.encode();
        assert_eq!(Tree::from_bytes(&bytes, &tree.digest()).unwrap(), tree);
        let other = Tree::default().digest();
        let err = Tree::from_bytes(&bytes, &other).unwrap_err();
        assert!(err.to_string().contains(&other.to_hex()), "{err}");
    }

    #[test]
    fn round_trip_and_sharing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub/empty")).unwrap();
        fs::write(src.join("a.txt"), b"alpha").unwrap();
        fs::write(src.join("sub/b.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(src.join("sub/b.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("../a.txt", src.join("sub/link")).unwrap();
        let t1 = store.put_dir(&src).unwrap();

        let out = tmp.path().join("out");
        store.materialize_tree(&t1, &out).unwrap();
        assert_eq!(fs::read(out.join("a.txt")).unwrap(), b"alpha");
        assert_eq!(
            fs::metadata(out.join("sub/b.sh")).unwrap().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_link(out.join("sub/link")).unwrap(),
            Path::new("../a.txt")
        );
        assert!(out.join("sub/empty").is_dir());
        // Stored again from the copy: the same digest.
        assert_eq!(store.put_dir(&out).unwrap(), t1);

        // One file changed: a new tree that shares the other blob.
        fs::write(src.join("a.txt"), b"alpha2").unwrap();
        let t2 = store.put_dir(&src).unwrap();
        assert_ne!(t1, t2);
        let (m1, m2) = (store.get_tree(&t1).unwrap(), store.get_tree(&t2).unwrap());
        let shared: Vec<_> = m1.blobs().filter(|b| m2.blobs().any(|c| c == *b)).collect();
        assert_eq!(shared.len(), 1);
    }

    #[test]
    fn escaping_entries_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let blob = store.put_bytes(b"x").unwrap();
        for bad in [&b"../evil"[..], b"/etc/evil", b"a/../../evil", b""] {
            let tree = Tree {
                entries: vec![TreeEntry {
                    path: bad.to_vec(),
                    mode: 0o644,
                    node: Node::File(blob),
                }],
            };
            let d = store.put_tree(&tree).unwrap();
            let err = store
                .materialize_tree(&d, &tmp.path().join("out"))
                .unwrap_err();
            assert!(err.to_string().contains("escapes its root"), "{err}");
        }
        assert!(!tmp.path().join("evil").exists());
    }

    #[test]
    fn writing_through_a_planted_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("store")).unwrap();
        let blob = store.put_bytes(b"x").unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        let tree = Tree {
            entries: vec![
                TreeEntry {
                    path: b"a".to_vec(),
                    mode: 0o777,
                    node: Node::Symlink(outside.as_os_str().as_bytes().to_vec()),
                },
                TreeEntry {
                    path: b"a/evil".to_vec(),
                    mode: 0o644,
                    node: Node::File(blob),
                },
            ],
        };
        let d = store.put_tree(&tree).unwrap();
        let err = store
            .materialize_tree(&d, &tmp.path().join("out"))
            .unwrap_err();
        assert!(err.to_string().contains("under a symlink"), "{err}");
        assert!(!outside.join("evil").exists());
    }
}
