//! Which toolchain a tree builds in, from keel.toml's `[toolchain]`:
//!
//! - nothing: the host's own `/usr`, `/etc`… (`Toolchain::Host`);
//! - `root = "DIR"`: a worker chroot kept as a directory;
//! - `root = "FILE.tar[.gz|.xz|.zst]"`: a worker chroot as a tarball (Azure Linux's
//!   `worker_chroot.tar.gz`), unpacked once into the store under its digest;
//! - `rpms = "DIR"`: the toolchain's RPMs, each unpacked once as a layer and merged into a
//!   root (no scriptlets run: a root made of payloads, like every build's dependencies).
//!
//! The tarball's and the RPM set's identity is the digest of their bytes, which is cheap to
//! re-check (the store's stat cache) and exactly what can change a build.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use keel_store::BlobDigest;
use keel_toolchain::Toolchain;

use crate::config::Tree;

/// A toolchain and, for a tarball or an RPM set, its identity.
pub struct Resolved {
    pub toolchain: Toolchain,
    /// `(name, fingerprint)` when known without walking the root.
    pub id: Option<(String, BlobDigest)>,
    /// Files whose change changes the toolchain (for the build stamp).
    pub inputs: Vec<PathBuf>,
}

fn is_tarball(p: &Path) -> bool {
    let n = p.to_string_lossy();
    [".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst"]
        .iter()
        .any(|s| n.ends_with(s))
}

/// Resolves the tree's toolchain, unpacking a tarball or an RPM set the first time.
pub fn resolve(tree: &Tree, store: &keel_store::Store) -> anyhow::Result<Resolved> {
    let tc = &tree.config.toolchain;
    anyhow::ensure!(
        tc.root.is_none() || tc.rpms.is_none(),
        "keel.toml: [toolchain] takes `root` or `rpms`, not both"
    );
    if let Some(dir) = &tc.rpms {
        return from_rpms(&tree.root.join(dir), store);
    }
    let Some(root) = &tc.root else {
        return Ok(Resolved {
            toolchain: Toolchain::Host,
            id: None,
            inputs: Vec::new(),
        });
    };
    let root = tree.root.join(root);
    if root.is_dir() {
        return Ok(Resolved {
            toolchain: Toolchain::Dir(root),
            id: None,
            inputs: Vec::new(),
        });
    }
    anyhow::ensure!(
        root.is_file() && is_tarball(&root),
        "keel.toml: [toolchain] root {} is neither a directory nor a tarball (.tar, .tar.gz, .tar.xz, .tar.zst)",
        root.display()
    );
    let digest = store
        .file_digest(&root)
        .with_context(|| format!("failed to read the toolchain tarball {}", root.display()))?;
    let dest = store.root().join("toolchains").join(digest.to_hex());
    if !dest.is_dir() {
        let parent = store.root().join("toolchains");
        std::fs::create_dir_all(&parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&parent)?;
        let out = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&root)
            .arg("-C")
            .arg(tmp.path())
            .args(["--numeric-owner", "--no-same-permissions"])
            .output()
            .context("failed to run tar")?;
        anyhow::ensure!(
            out.status.success(),
            "failed to unpack the toolchain tarball {}: {}",
            root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::fs::rename(tmp.keep(), &dest)
            .with_context(|| format!("failed to keep {}", dest.display()))?;
    }
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Resolved {
        toolchain: Toolchain::Dir(dest),
        id: Some((format!("tarball:{name}"), digest)),
        inputs: vec![root],
    })
}

fn from_rpms(dir: &Path, store: &keel_store::Store) -> anyhow::Result<Resolved> {
    let mut rpms: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to list the toolchain RPMs in {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rpm"))
        .collect();
    rpms.sort();
    anyhow::ensure!(
        !rpms.is_empty(),
        "no RPMs in the toolchain directory {}",
        dir.display()
    );
    let cache = keel_toolchain::LayerCache::new(&store.root().join("layers"));
    let mut text = String::new();
    let mut layers = Vec::new();
    for r in &rpms {
        let d = store
            .file_digest(r)
            .with_context(|| format!("failed to read {}", r.display()))?;
        text.push_str(&format!(
            "{} {}\n",
            d.to_hex(),
            r.file_name().unwrap_or_default().to_string_lossy()
        ));
        layers.push(
            cache
                .layer_for_digest(r, &d)
                .with_context(|| format!("failed to unpack {}", r.display()))?,
        );
    }
    let fingerprint = BlobDigest::of_bytes(text.as_bytes());
    let dest = store
        .root()
        .join("toolchains")
        .join(format!("rpms-{}", fingerprint.to_hex()));
    if !dest.is_dir() {
        let parent = store.root().join("toolchains");
        std::fs::create_dir_all(&parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(".merge-")
            .tempdir_in(&parent)?;
        let staging = tmp.path().join("root");
        keel_toolchain::layer::merge_layers(&layers, &staging)
            .context("failed to merge the toolchain RPMs")?;
        std::fs::rename(&staging, &dest)
            .with_context(|| format!("failed to keep {}", dest.display()))?;
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut inputs = rpms;
    inputs.push(dir.to_owned());
    Ok(Resolved {
        toolchain: Toolchain::Dir(dest),
        id: Some((format!("rpms:{name}"), fingerprint)),
        inputs,
    })
}
