//! Whole-root filesystem images: squashfs (`mksquashfs`) and an ISO 9660 image
//! (`xorriso`) holding the squashfs root and a package repository.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;
use crate::tools::run;

/// Makes a squashfs of `root` at `out` with every time set to `sde`. Owners are kept as
/// they are in the root (keel applies the packages' owners), extended attributes dropped.
pub fn make_squashfs(root: &Path, out: &Path, sde: u64) -> Result<(), Error> {
    let mut cmd = Command::new("mksquashfs");
    cmd.arg(root)
        .arg(out)
        .args([
            "-noappend",
            "-no-xattrs",
            "-no-progress",
            "-quiet",
            "-mkfs-time",
        ])
        .arg(sde.to_string())
        .arg("-all-time")
        .arg(sde.to_string());
    run(&mut cmd, "mksquashfs", out)
}

/// Makes an ISO at `out` labelled `label` holding `squashfs` as `/LiveOS/rootfs.img` and
/// the `rpms` as a repository in `/RPMS` (indexed with `createrepo_c`), every time set to
/// `sde`. `work` is a scratch directory.
pub fn make_iso(
    squashfs: &Path,
    rpms: &[PathBuf],
    out: &Path,
    label: &str,
    work: &Path,
    sde: u64,
) -> Result<(), Error> {
    let stage = work.join("iso");
    let live = stage.join("LiveOS");
    let repo = stage.join("RPMS");
    for d in [&live, &repo] {
        fs::create_dir_all(d).map_err(Error::io("create directory", d))?;
    }
    let img = live.join("rootfs.img");
    fs::copy(squashfs, &img).map_err(Error::io("copy into", &img))?;
    for rpm in rpms {
        let name = rpm.file_name().ok_or_else(|| Error::Artifact {
            artifact: out.to_owned(),
            message: format!("package path {} has no file name", rpm.display()),
        })?;
        let dst = repo.join(name);
        fs::copy(rpm, &dst).map_err(Error::io("copy into", &dst))?;
    }
    crate::rootfs::stamp_tree(&stage, sde)?;
    let mut cmd = Command::new("createrepo_c");
    cmd.args([
        "--quiet",
        "--no-database",
        "--simple-md-filenames",
        "--workers",
        "1",
    ])
    .arg("--revision")
    .arg(sde.to_string())
    .arg("--set-timestamp-to-revision")
    .arg(&repo)
    .env("SOURCE_DATE_EPOCH", sde.to_string());
    run(&mut cmd, "createrepo_c", out)?;
    crate::rootfs::stamp_tree(&stage, sde)?;
    let mut cmd = Command::new("xorriso");
    cmd.args(["-as", "mkisofs", "-quiet", "-R", "-J", "-V", label, "-o"])
        .arg(out)
        .arg(&stage)
        .env("SOURCE_DATE_EPOCH", sde.to_string())
        .env("TZ", "UTC");
    run(&mut cmd, "xorriso", out)
}
