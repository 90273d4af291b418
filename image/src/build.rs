//! [`build_image`]: everything from a config and a set of RPMs to the artifacts.

use std::fs;
use std::path::{Path, PathBuf};

use keel_toolchain::RpmInfo;

use crate::artifacts::{self, TarCompression};
use crate::config::{ArtifactKind, FsType, ImageConfig, SystemConfig};
use crate::rootfs::{self, Manifest, RootfsOptions};
use crate::{Error, resolve_closure};

/// What [`build_image`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOutput {
    /// The artifacts, in the config's order (an OCI layout is a directory).
    pub artifacts: Vec<PathBuf>,
    /// The package manifest (`<system>.manifest.json`).
    pub manifest: PathBuf,
}

/// Builds every artifact of `config`'s system config named `system` from `rpms` (the
/// packages available; the image gets the closure of what the system asks for) into
/// `out_dir`, using `work` (emptied first) as scratch space, with every time set to `sde`
/// (`SOURCE_DATE_EPOCH`).
pub fn build_image(
    config: &ImageConfig,
    system: &str,
    rpms: &[(PathBuf, RpmInfo)],
    work: &Path,
    out_dir: &Path,
    sde: u64,
) -> Result<ImageOutput, Error> {
    let sys = config.system(system).ok_or_else(|| Error::Config {
        file: config.file.clone(),
        field: "SystemConfigs".into(),
        message: format!("no system config is named {system:?}"),
    })?;
    let disk = config.disks.first();
    let wanted = disk.map(|d| d.artifacts.as_slice()).unwrap_or_default();
    if wanted.is_empty() {
        return Err(Error::Config {
            file: config.file.clone(),
            field: "Disks".into(),
            message: "the config names no artifact to make".into(),
        });
    }
    let closure = resolve_closure(&sys.name, &sys.packages, rpms)?;
    let ordered: Vec<(PathBuf, RpmInfo)> = closure.order.iter().map(|i| rpms[*i].clone()).collect();

    if work.exists() {
        fs::remove_dir_all(work).map_err(Error::io("empty", work))?;
    }
    fs::create_dir_all(work).map_err(Error::io("create directory", work))?;
    fs::create_dir_all(out_dir).map_err(Error::io("create directory", out_dir))?;
    let root = work.join("root");
    let opts = RootfsOptions {
        image: sys.name.clone(),
        allow_setuid: true,
        allow_devices: false,
        max_bytes_total: sys
            .max_root_size_mib
            .map_or(rootfs::DEFAULT_MAX_ROOT_BYTES, |mib| {
                mib.saturating_mul(1 << 20)
            }),
        sde,
        rpm_db: !sys.remove_rpm_db,
        ..RootfsOptions::default()
    };
    let assembled = rootfs::assemble_rootfs(&root, &ordered, &opts)?;
    if let Some(h) = &sys.hostname {
        rootfs::write_hostname(&root, h)?;
    }
    rootfs::add_users(&root, &sys.users, sde)?;
    // The disk's identifiers are derived from the config's file name and the system.
    let stem = config
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seed = format!("{stem}/{}", sys.name);
    let layout = disk
        .filter(|d| !d.partitions.is_empty())
        .map(|d| artifacts::plan_disk(d, &seed));
    if let Some(layout) = &layout {
        write_fstab(&root, sys, layout)?;
    }
    rootfs::run_post_install_scripts(&root, &sys.post_install_scripts, work, sde)?;
    rootfs::stamp_tree(&root, sde)?;

    let arch = ordered
        .iter()
        .map(|(_, i)| i.arch.as_str())
        .find(|a| *a != "noarch")
        .unwrap_or(std::env::consts::ARCH)
        .to_owned();
    let mut made: Vec<(usize, PathBuf)> = Vec::new();
    // Whole-root artifacts first: disks split the root into partitions afterwards.
    for (i, a) in wanted.iter().enumerate() {
        let out = out_dir.join(a.file_name());
        match a.kind {
            ArtifactKind::TarGz => {
                artifacts::write_rootfs_tar(&root, &out, TarCompression::Gzip, sde)?
            }
            ArtifactKind::TarZst => {
                artifacts::write_rootfs_tar(&root, &out, TarCompression::Zstd, sde)?
            }
            ArtifactKind::Oci => {
                if out.exists() {
                    fs::remove_dir_all(&out).map_err(Error::io("remove", &out))?;
                }
                artifacts::write_oci_layout(&root, &out, &a.name, &arch, sde)?;
            }
            ArtifactKind::Squashfs => artifacts::make_squashfs(&root, &out, sde)?,
            ArtifactKind::Iso => {
                let sq = work.join(format!("{}.squashfs", a.name));
                artifacts::make_squashfs(&root, &sq, sde)?;
                let paths: Vec<PathBuf> = ordered.iter().map(|(p, _)| p.clone()).collect();
                let label: String = a
                    .name
                    .to_uppercase()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(32)
                    .collect();
                artifacts::make_iso(&sq, &paths, &out, &label, &work.join("iso-work"), sde)?;
            }
            _ => continue,
        }
        made.push((i, out));
    }
    if wanted.iter().any(|a| a.kind.is_disk()) {
        let layout = layout.as_ref().ok_or_else(|| Error::Config {
            file: config.file.clone(),
            field: "Disks[0].Partitions".into(),
            message: "a disk artifact needs partitions".into(),
        })?;
        let raw = make_raw_disk(&root, sys, layout, work, &seed, sde)?;
        for (i, a) in wanted.iter().enumerate() {
            let out = out_dir.join(a.file_name());
            match a.kind {
                ArtifactKind::Raw => {
                    fs::copy(&raw, &out).map_err(Error::io("copy into", &out))?;
                }
                ArtifactKind::Qcow2 => artifacts::qemu_convert(&raw, &out, "qcow2")?,
                ArtifactKind::Vhdx => artifacts::write_vhdx(&raw, &out, &seed)?,
                ArtifactKind::Vhd => artifacts::write_vhd_fixed(&raw, &out, &seed, sde)?,
                _ => continue,
            }
            made.push((i, out));
        }
    }
    made.sort();
    let manifest = out_dir.join(format!("{}.manifest.json", sys.name));
    let m = Manifest {
        format: 1,
        image: sys.name.clone(),
        packages: assembled.packages,
        special_files: assembled.special_files,
    };
    let mut bytes = serde_json::to_vec_pretty(&m).expect("the manifest serializes");
    bytes.push(b'\n');
    fs::write(&manifest, bytes).map_err(Error::io("write", &manifest))?;
    Ok(ImageOutput {
        artifacts: made.into_iter().map(|(_, p)| p).collect(),
        manifest,
    })
}

fn fs_name(fs: FsType) -> &'static str {
    match fs {
        FsType::Ext4 => "ext4",
        FsType::Fat32 | FsType::Fat16 => "vfat",
    }
}

/// `/etc/fstab` naming each mounted partition by its GPT `PARTUUID`.
fn write_fstab(
    root: &Path,
    sys: &SystemConfig,
    layout: &artifacts::DiskLayout,
) -> Result<(), Error> {
    let mut settings: Vec<_> = sys
        .partition_settings
        .iter()
        .filter(|s| !s.mount_point.is_empty())
        .collect();
    settings
        .sort_by_key(|s| s.mount_point.matches('/').count() - usize::from(s.mount_point == "/"));
    let mut text = String::new();
    for s in settings {
        let p = layout
            .partitions
            .iter()
            .find(|p| p.id == s.id)
            .expect("partition settings were checked against the partitions");
        let pass = if s.mount_point == "/" { 1 } else { 2 };
        text.push_str(&format!(
            "PARTUUID={} {} {} {} 0 {pass}\n",
            artifacts::guid_string(&p.guid),
            s.mount_point,
            fs_name(p.fs),
            s.mount_options
        ));
    }
    crate::rootfs::SafeRoot::open(root)?.write("etc/fstab", text.as_bytes(), 0o644)
}

/// Moves each non-root mount point's content out of the root into its own staging
/// directory, makes every partition's filesystem and writes the raw disk.
fn make_raw_disk(
    root: &Path,
    sys: &SystemConfig,
    layout: &artifacts::DiskLayout,
    work: &Path,
    seed: &str,
    sde: u64,
) -> Result<PathBuf, Error> {
    // Deepest mount points first, so /boot/efi leaves /boot before /boot moves.
    let mut settings: Vec<_> = sys.partition_settings.iter().collect();
    settings.sort_by_key(|s| std::cmp::Reverse(s.mount_point.matches('/').count()));
    let mut staged: Vec<(String, PathBuf)> = Vec::new();
    for s in settings {
        if s.mount_point.is_empty() {
            continue;
        }
        if s.mount_point == "/" {
            staged.push((s.id.clone(), root.to_owned()));
            continue;
        }
        let stage = work.join(format!("part-{}", s.id));
        move_mount_point(root, &s.mount_point, &stage)?;
        staged.push((s.id.clone(), stage));
    }
    rootfs::stamp_tree(root, sde)?;
    let mut images = Vec::new();
    for p in &layout.partitions {
        let Some((_, src)) = staged.iter().find(|(id, _)| *id == p.id) else {
            images.push(None);
            continue;
        };
        let img = work.join(format!("part-{}.img", p.id));
        match p.fs {
            FsType::Ext4 => {
                let label: String = p.name.chars().take(16).collect();
                artifacts::make_ext4(
                    src,
                    &img,
                    p.size(),
                    &artifacts::fs_uuid(seed, &p.id),
                    &label,
                    sde,
                )?;
            }
            FsType::Fat32 | FsType::Fat16 => {
                let g = artifacts::derive_guid(seed, &format!("vfat:{}", p.id));
                let id = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
                let label: String = p
                    .name
                    .to_uppercase()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(11)
                    .collect();
                artifacts::make_vfat(src, &img, p.size(), p.fs, id, &label, sde)?;
            }
        }
        images.push(Some(img));
    }
    let raw = work.join("disk.raw");
    let refs: Vec<Option<&Path>> = images.iter().map(|i| i.as_deref()).collect();
    artifacts::write_gpt_disk(&raw, layout, &refs)?;
    Ok(raw)
}

/// Renames `root/<mount_point>` to `stage` and leaves an empty directory in its place,
/// refusing a mount point whose path in the root goes through a symlink.
fn move_mount_point(root: &Path, mount_point: &str, stage: &Path) -> Result<(), Error> {
    let mut p = root.to_owned();
    for c in mount_point.split('/').filter(|c| !c.is_empty()) {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::Rootfs {
                    root: root.to_owned(),
                    path: mount_point.to_owned(),
                    message: format!("{} is not a directory (a symlink?)", p.display()),
                });
            }
            Err(_) => {
                fs::create_dir(&p).map_err(Error::io("create directory", &p))?;
            }
        }
    }
    fs::rename(&p, stage).map_err(Error::io("move mount point", &p))?;
    fs::create_dir(&p).map_err(Error::io("create directory", &p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{crafted, file, host_shell, symlink};
    use crate::tools::output;
    use rpm::Dependency;
    use std::process::Command;

    const SDE: u64 = 1_700_000_000;

    /// Four packages: a shell, a setup package with passwd/group, a program that needs the
    /// shell by path, and an app that needs the program by version.
    fn packages(dir: &Path) -> Vec<(PathBuf, RpmInfo)> {
        let setup = crafted(dir, "setup", |b| {
            file(b, "/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644);
            file(b, "/etc/group", b"root:x:0:\n", 0o644);
            file(b, "/etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o000);
            b.with_dir_entry(rpm::FileOptions::dir("/boot/efi/EFI"))
                .unwrap();
            b.with_dir_entry(rpm::FileOptions::dir("/var/lib")).unwrap();
        });
        let sh = host_shell(dir);
        let hello = crafted(dir, "hello", |b| {
            file(b, "/usr/bin/hello", b"#!/bin/sh\necho hello\n", 0o755);
            file(b, "/boot/efi/EFI/hello.txt", b"on the ESP\n", 0o644);
            b.requires(Dependency::any("/usr/bin/sh"));
            b.requires(Dependency::any("setup"));
        });
        let app = crafted(dir, "app", |b| {
            file(b, "/usr/share/app/data", b"app data\n", 0o644);
            symlink(b, "/usr/bin/app", "hello");
            b.requires(Dependency::greater_eq("hello", "1.0"));
        });
        let unrelated = crafted(dir, "unrelated", |b| {
            file(b, "/usr/share/unrelated", b"no", 0o644)
        });
        vec![app, hello, sh, setup, unrelated]
    }

    fn config(dir: &Path) -> ImageConfig {
        let json = r#"{
            "Disks": [{
                "PartitionTableType": "gpt",
                "MaxSize": 48,
                "Artifacts": [
                    {"Name": "tiny", "Compression": "tar.gz"},
                    {"Name": "tiny", "Type": "raw"},
                    {"Name": "tiny", "Type": "qcow2"},
                    {"Name": "tiny", "Type": "vhd"},
                    {"Name": "tiny", "Type": "vhdx"}
                ],
                "Partitions": [
                    {"ID": "esp", "Flags": ["esp", "boot"], "Start": 1, "End": 9, "FsType": "fat32"},
                    {"ID": "rootfs", "Start": 9, "End": 0, "FsType": "ext4"}
                ]
            }],
            "SystemConfigs": [{
                "Name": "tiny",
                "Packages": ["app"],
                "Hostname": "tiny",
                "PartitionSettings": [
                    {"ID": "esp", "MountPoint": "/boot/efi", "MountOptions": "umask=0077"},
                    {"ID": "rootfs", "MountPoint": "/"}
                ],
                "Users": [{"Name": "alice", "UID": "1500"}],
                "PostInstallScripts": [{"Path": "motd.sh", "Args": "built-by-keel"}]
            }]
        }"#;
        crate::parse_config(&dir.join("tiny.json"), json.as_bytes(), &|rel| {
            assert_eq!(rel, "motd.sh");
            Ok(b"echo \"$1\" > /etc/motd\n".to_vec())
        })
        .unwrap()
    }

    #[test]
    fn builds_a_tiny_image_into_a_tarball_and_a_disk() {
        let dir = tempfile::tempdir().unwrap();
        let rpms = packages(dir.path());
        let cfg = config(dir.path());
        let out = dir.path().join("out");
        let res = build_image(&cfg, "tiny", &rpms, &dir.path().join("work"), &out, SDE).unwrap();
        let names: Vec<String> = res
            .artifacts
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "tiny.tar.gz",
                "tiny.raw",
                "tiny.qcow2",
                "tiny.vhd",
                "tiny.vhdx"
            ]
        );

        let m: Manifest = serde_json::from_slice(&fs::read(&res.manifest).unwrap()).unwrap();
        let pkgs: Vec<&str> = m.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pkgs, ["hostsh", "setup", "hello", "app"]);
        let app = rpms.iter().find(|(_, i)| i.name == "app").unwrap();
        assert_eq!(
            m.packages[3].blake3,
            blake3::hash(&fs::read(&app.0).unwrap()).to_hex().as_str()
        );
        assert_eq!(
            (m.packages[3].evr.as_str(), m.packages[3].arch.as_str()),
            ("1.0-1", "noarch")
        );

        let list = output(
            Command::new("tar")
                .args(["-tzvf"])
                .arg(&res.artifacts[0])
                .arg("--numeric-owner"),
        );
        for want in [
            "usr/bin/hello",
            "usr/bin/app -> hello",
            "etc/motd",
            "boot/efi/EFI/hello.txt",
            "home/alice/",
        ] {
            assert!(list.contains(want), "{want} missing from\n{list}");
        }
        assert!(!list.contains("unrelated"), "{list}");

        // The disk: the root partition has the files, the ESP the ESP's, fstab both.
        let raw = fs::read(&res.artifacts[1]).unwrap();
        let root_img = dir.path().join("root.img");
        fs::write(&root_img, &raw[9 << 20..48 << 20]).unwrap();
        let ls = output(
            Command::new("debugfs")
                .arg("-R")
                .arg("ls -l /usr/bin")
                .arg(&root_img),
        );
        assert!(ls.contains("hello") && ls.contains("app"), "{ls}");
        let cat = |p: &str| {
            output(
                Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("cat {p}"))
                    .arg(&root_img),
            )
        };
        assert_eq!(cat("/etc/motd"), "built-by-keel\n");
        assert_eq!(cat("/etc/hostname"), "tiny\n");
        assert!(cat("/etc/passwd").contains("alice:x:1500:1500::/home/alice:/bin/bash"));
        let fstab = cat("/etc/fstab");
        assert!(
            fstab.contains(" / ext4 defaults 0 1")
                && fstab.contains(" /boot/efi vfat umask=0077 0 2"),
            "{fstab}"
        );
        let esp_in_root = output(
            Command::new("debugfs")
                .arg("-R")
                .arg("ls /boot/efi")
                .arg(&root_img),
        );
        assert!(
            !esp_in_root.contains("EFI"),
            "the ESP's files are on the ESP only: {esp_in_root}"
        );
        let esp = output(
            Command::new("mtype")
                .arg("-i")
                .arg(format!("{}@@1M", res.artifacts[1].display()))
                .arg("::/EFI/hello.txt")
                .env("MTOOLS_SKIP_CHECK", "1"),
        );
        assert_eq!(esp, "on the ESP\n");
        let rpmdb = output(
            Command::new("debugfs")
                .arg("-R")
                .arg("ls /var/lib/rpm")
                .arg(&root_img),
        );
        assert!(rpmdb.contains("rpmdb.sqlite"), "{rpmdb}");
        let info = output(
            Command::new("qemu-img")
                .args(["info", "--output=json"])
                .arg(&res.artifacts[2]),
        );
        assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let rpms = packages(dir.path());
        let cfg = config(dir.path());
        let build = |tag: &str| {
            let out = dir.path().join(format!("out-{tag}"));
            build_image(
                &cfg,
                "tiny",
                &rpms,
                &dir.path().join(format!("work-{tag}")),
                &out,
                SDE,
            )
            .unwrap()
        };
        let (a, b) = (build("a"), build("b"));
        for (x, y) in a
            .artifacts
            .iter()
            .zip(&b.artifacts)
            .chain([(&a.manifest, &b.manifest)])
        {
            assert!(
                fs::read(x).unwrap() == fs::read(y).unwrap(),
                "{} differs from {}",
                x.display(),
                y.display()
            );
        }
    }

    #[test]
    fn an_unknown_system_or_a_missing_package_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let rpms = packages(dir.path());
        let cfg = config(dir.path());
        let err = build_image(
            &cfg,
            "nope",
            &rpms,
            &dir.path().join("w"),
            &dir.path().join("o"),
            SDE,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no system config is named \"nope\""), "{err}");
        let without_shell: Vec<_> = rpms
            .into_iter()
            .filter(|(_, i)| i.name != "hostsh")
            .collect();
        let err = build_image(
            &cfg,
            "tiny",
            &without_shell,
            &dir.path().join("w"),
            &dir.path().join("o"),
            SDE,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("image tiny -> app-1.0-1.noarch -> Requires: hello >= 1.0 -> hello-1.0-1.noarch -> Requires: /usr/bin/sh: nothing provides it"),
            "{err}"
        );
    }
}
