//! Which toolchain a tree builds in, from keel.toml's `[toolchain]`:
//!
//! - nothing: the host's own `/usr`, `/etc`… (`Toolchain::Host`);
//! - `root = "DIR"`: a worker chroot kept as a directory;
//! - `root = "FILE.tar[.gz|.xz|.zst]"`: a worker chroot as a tarball (Azure Linux's
//!   `worker_chroot.tar.gz`), unpacked once into the store under its digest;
//! - `rpms = "DIR"`: the toolchain's RPMs, each unpacked once as a layer and merged into a
//!   root (no scriptlets run: a root made of payloads, like every build's dependencies);
//!   two packages claiming one path (other than a directory both have) are refused, as
//!   in an image.
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
    // `tar-v2-`: roots unpacked before their modes were made exact (their modes depended
    // on keel's umask) are not reused.
    let dest = store
        .root()
        .join("toolchains")
        .join(format!("tar-v2-{}", digest.to_hex()));
    if !dest.is_dir() {
        let parent = store.root().join("toolchains");
        std::fs::create_dir_all(&parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&parent)?;
        unpack_tarball(&root, tmp.path())?;
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

/// Unpacks the toolchain tarball `tarball` into the empty directory `dest` so that the
/// root's modes are the tarball's, whoever runs keel and however it was started.
///
/// Three things used to leak in. `dest` is a temporary directory (mode 0700), and a
/// tarball without a `./` entry never sets the top directory's mode; `--no-same-permissions`
/// gave every entry its mode minus keel's umask (umask 077: every directory 0700); and as
/// root, tar gave files the owners recorded in the tarball, as another user the user's own.
/// A build root of 0700 directories owned by someone else can then be entered only with
/// `CAP_DAC_OVERRIDE`, which a sandbox may or may not keep (`bwrap: execvp /bin/sh:
/// Permission denied`). Now: the top directory is 0755 (a `./` entry's mode replaces it),
/// entries get exactly the tarball's modes (`--same-permissions`), directories tar makes
/// for entries whose parents the tarball lacks get 0755 (tar runs under umask 022), and
/// everything belongs to the user running keel (`--no-same-owner`), like a layer unpacked
/// from an RPM.
fn unpack_tarball(tarball: &Path, dest: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to set the mode of {}", dest.display()))?;
    let mut tar = std::process::Command::new("tar");
    tar.arg("-xf").arg(tarball).arg("-C").arg(dest).args([
        "--same-permissions",
        "--no-same-owner",
        "--numeric-owner",
    ]);
    // SAFETY: umask(2) is async-signal-safe and cannot fail.
    unsafe {
        tar.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let out = tar.output().context("failed to run tar")?;
    anyhow::ensure!(
        out.status.success(),
        "failed to unpack the toolchain tarball {}: {}",
        tarball.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
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
        let package = keel_toolchain::read_rpm(r)
            .with_context(|| format!("failed to read {}", r.display()))?
            .name;
        layers.push(keel_toolchain::layer::PackageLayer {
            package,
            rpm: r.clone(),
            layer: cache
                .layer_for_digest(r, &d)
                .with_context(|| format!("failed to unpack {}", r.display()))?,
        });
    }
    let fingerprint = BlobDigest::of_bytes(text.as_bytes());
    // `rpms-v2-`: a root merged before conflicts were refused may hide one.
    let dest = store
        .root()
        .join("toolchains")
        .join(format!("rpms-v2-{}", fingerprint.to_hex()));
    if !dest.is_dir() {
        let parent = store.root().join("toolchains");
        std::fs::create_dir_all(&parent)?;
        let tmp = tempfile::Builder::new()
            .prefix(".merge-")
            .tempdir_in(&parent)?;
        let staging = tmp.path().join("root");
        keel_toolchain::layer::merge_packages(&layers, &staging)
            .with_context(|| format!("failed to merge the toolchain RPMs of {}", dir.display()))?;
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
