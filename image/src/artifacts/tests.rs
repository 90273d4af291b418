use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::disk::{VHD_CREATOR_APP, vhd_geometry};
use super::*;
use crate::config::{Disk, FsType, Partition, PartitionFlag, PartitionTableType};
use crate::tools::output;

const SDE: u64 = 1_700_000_000;

/// A small root with a directory, files, a long name, a symlink and a non-root owner.
fn sample_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("boot/efi/EFI/BOOT")).unwrap();
    fs::write(root.join("etc/os-release"), "NAME=keel\n").unwrap();
    fs::write(root.join("usr/bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
    fs::write(root.join("boot/efi/EFI/BOOT/BOOTX64.EFI"), "not really efi").unwrap();
    let long = "d".repeat(120);
    fs::create_dir_all(root.join("usr/share").join(&long)).unwrap();
    fs::write(root.join("usr/share").join(&long).join("f"), "long").unwrap();
    std::os::unix::fs::symlink("../etc/os-release", root.join("usr/os-release")).unwrap();
    std::os::unix::fs::chown(root.join("usr/bin/hello"), Some(8), Some(12)).unwrap();
    crate::rootfs::stamp_tree(&root, SDE).unwrap();
    root
}

fn same_bytes(a: &Path, b: &Path) {
    assert!(
        fs::read(a).unwrap() == fs::read(b).unwrap(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
}

#[test]
fn tarballs_are_reproducible_and_read_by_gnu_tar() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path());
    for (c, ext, flag) in [
        (TarCompression::Gzip, "tar.gz", "-z"),
        (TarCompression::Zstd, "tar.zst", "--zstd"),
    ] {
        let a = dir.path().join(format!("a.{ext}"));
        let b = dir.path().join(format!("b.{ext}"));
        write_rootfs_tar(&root, &a, c, SDE).unwrap();
        write_rootfs_tar(&root, &b, c, SDE).unwrap();
        same_bytes(&a, &b);
        let list = output(
            Command::new("tar")
                .arg(flag)
                .args(["-tvf"])
                .arg(&a)
                .arg("--numeric-owner"),
        );
        assert!(
            list.contains("8/12") && list.contains("usr/bin/hello"),
            "{list}"
        );
        assert!(
            list.contains("usr/os-release -> ../etc/os-release"),
            "{list}"
        );
        assert!(list.contains(&format!("{}/f", "d".repeat(120))), "{list}");
        assert!(list.contains("2023-11-14 22:13"), "{list}");
        let x = dir.path().join(format!("x-{ext}"));
        fs::create_dir(&x).unwrap();
        output(
            Command::new("tar")
                .arg(flag)
                .arg("-xf")
                .arg(&a)
                .arg("-C")
                .arg(&x),
        );
        assert_eq!(
            fs::read_to_string(x.join("etc/os-release")).unwrap(),
            "NAME=keel\n"
        );
    }
}

#[test]
fn oci_layout_is_read_by_umoci_and_skopeo() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path());
    let a = dir.path().join("a.oci");
    let b = dir.path().join("b.oci");
    write_oci_layout(&root, &a, "core", "x86_64", SDE).unwrap();
    write_oci_layout(&root, &b, "core", "x86_64", SDE).unwrap();
    same_bytes(&a.join("index.json"), &b.join("index.json"));
    let info = output(
        Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:core", a.display())),
    );
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["Architecture"], "amd64");
    assert_eq!(v["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(v["Created"], "2023-11-14T22:13:20Z");
    let bundle = dir.path().join("bundle");
    output(
        Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:core", a.display()))
            .arg(&bundle),
    );
    assert_eq!(
        fs::read_to_string(bundle.join("rootfs/etc/os-release")).unwrap(),
        "NAME=keel\n"
    );
}

fn disk_config() -> Disk {
    Disk {
        partition_table: Some(PartitionTableType::Gpt),
        max_size_mib: 48,
        artifacts: vec![],
        partitions: vec![
            Partition {
                id: "boot".into(),
                name: "esp".into(),
                start_mib: 1,
                end_mib: 9,
                fs: FsType::Fat32,
                flags: vec![PartitionFlag::Esp, PartitionFlag::Boot],
            },
            Partition {
                id: "rootfs".into(),
                name: "rootfs".into(),
                start_mib: 9,
                end_mib: 0,
                fs: FsType::Ext4,
                flags: vec![],
            },
        ],
    }
}

#[test]
fn gpt_disk_with_esp_and_ext4_root_is_reproducible_and_checked_by_real_tools() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path());
    let layout = plan_disk(&disk_config(), "core");
    let esp_src = root.join("boot/efi");
    let mk = |tag: &str| -> PathBuf {
        let esp = dir.path().join(format!("esp-{tag}.img"));
        make_vfat(
            &esp_src,
            &esp,
            layout.partitions[0].size(),
            FsType::Fat32,
            0x1234_abcd,
            "ESP",
            SDE,
        )
        .unwrap();
        let ext4 = dir.path().join(format!("root-{tag}.img"));
        make_ext4(
            &root,
            &ext4,
            layout.partitions[1].size(),
            &fs_uuid("core", "rootfs"),
            "rootfs",
            SDE,
        )
        .unwrap();
        let raw = dir.path().join(format!("disk-{tag}.raw"));
        write_gpt_disk(&raw, &layout, &[Some(&esp), Some(&ext4)]).unwrap();
        raw
    };
    let (a, b) = (mk("a"), mk("b"));
    same_bytes(&dir.path().join("esp-a.img"), &dir.path().join("esp-b.img"));
    same_bytes(
        &dir.path().join("root-a.img"),
        &dir.path().join("root-b.img"),
    );
    same_bytes(&a, &b);

    let dump = output(Command::new("sfdisk").arg("--json").arg(&a));
    let v: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let t = &v["partitiontable"];
    assert_eq!(t["label"], "gpt");
    assert_eq!(
        t["id"].as_str().unwrap().to_lowercase(),
        guid_string(&layout.disk_guid)
    );
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[0]["size"], 8 * 2048);
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(parts[0]["name"], "esp");
    assert_eq!(parts[1]["start"], 9 * 2048);
    assert_eq!(
        parts[1]["uuid"].as_str().unwrap().to_lowercase(),
        guid_string(&layout.partitions[1].guid)
    );
    let verify = Command::new("sfdisk")
        .arg("--verify")
        .arg(&a)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    let esp = output(
        Command::new("mdir")
            .arg("-i")
            .arg(format!("{}@@1M", a.display()))
            .arg("::/EFI/BOOT")
            .env("MTOOLS_SKIP_CHECK", "1"),
    );
    assert!(esp.contains("BOOTX64") && esp.contains("EFI"), "{esp}");
    let root_img = dir.path().join("root-a.img");
    let ls = output(
        Command::new("debugfs")
            .arg("-R")
            .arg("ls -l /usr/bin")
            .arg(&root_img),
    );
    assert!(ls.contains("hello"), "{ls}");
    // The partition in the disk holds the same filesystem.
    let disk = fs::read(&a).unwrap();
    let img = fs::read(&root_img).unwrap();
    assert!(disk[9 << 20..(9 << 20) + img.len()] == img[..]);

    // Conversions.
    let qcow = |tag: &str| {
        let q = dir.path().join(format!("disk-{tag}.qcow2"));
        qemu_convert(&a, &q, "qcow2").unwrap();
        q
    };
    same_bytes(&qcow("1"), &qcow("2"));
    let info = output(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(qcow("1")),
    );
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        (v["format"].as_str(), v["virtual-size"].as_u64()),
        (Some("qcow2"), Some(48 << 20))
    );
    let vhd = |tag: &str| {
        let p = dir.path().join(format!("disk-{tag}.vhd"));
        write_vhd_fixed(&a, &p, "core", SDE).unwrap();
        p
    };
    same_bytes(&vhd("1"), &vhd("2"));
    // A fixed VHD has no header for qemu to probe: name the format.
    let info = output(
        Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json"])
            .arg(vhd("1")),
    );
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["format"], "vpc", "{info}");
    assert_eq!(v["virtual-size"].as_u64(), Some(48 << 20), "{info}");
    let check = output(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vpc"])
            .arg(&a)
            .arg(vhd("1")),
    );
    assert!(check.contains("identical"), "{check}");
    check_vhdx(dir.path(), &a);
}

/// Creator applications whose footer size qemu 7.2 (Debian 12's `qemu-img`) trusts; for
/// any other it takes the CHS geometry.
const QEMU_7_2_CURRENT_SIZE_CREATORS: [&[u8; 4]; 5] =
    [b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0"];
/// Creator applications for which qemu 10 takes the CHS geometry.
const QEMU_10_CHS_CREATORS: [&[u8; 4]; 2] = [b"vpc ", b"qemu"];

#[test]
fn a_fixed_vhd_reads_at_its_exact_size_in_old_and_new_qemu() {
    use std::io::{Read, Seek, SeekFrom};
    let dir = tempfile::tempdir().unwrap();
    let layout = plan_disk(&disk_config(), "core");
    let raw = dir.path().join("disk.raw");
    write_gpt_disk(&raw, &layout, &[None, None]).unwrap();
    let vhd = dir.path().join("disk.vhd");
    write_vhd_fixed(&raw, &vhd, "core", SDE).unwrap();
    let size = fs::metadata(&raw).unwrap().len();
    assert_eq!(size, 48 << 20);
    assert_eq!(fs::metadata(&vhd).unwrap().len(), size + 512);

    let mut f = fs::File::open(&vhd).unwrap();
    // The disk keeps its size: the backup GPT header is still its last sector.
    let mut backup = [0u8; 512];
    f.seek(SeekFrom::Start(size - 512)).unwrap();
    f.read_exact(&mut backup).unwrap();
    assert_eq!(&backup[..8], b"EFI PART");
    let mut footer = [0u8; 512];
    f.read_exact(&mut footer).unwrap();
    assert_eq!(&footer[..8], b"conectix");
    let be64 = |at: usize| u64::from_be_bytes(footer[at..at + 8].try_into().unwrap());
    assert_eq!(
        (be64(40), be64(48)),
        (size, size),
        "original and current size"
    );
    let mut unsummed = footer;
    unsummed[64..68].fill(0);
    let sum: u32 = unsummed.iter().map(|b| u32::from(*b)).sum();
    assert_eq!(footer[64..68], (!sum).to_be_bytes(), "checksum");
    // The geometry is the specification's, and it covers less than the disk: a reader
    // that trusted it would cut off the backup GPT header.
    let (c, h, s) = vhd_geometry(size);
    assert_eq!(
        (
            u16::from_be_bytes([footer[56], footer[57]]),
            footer[58],
            footer[59]
        ),
        (c, h, s)
    );
    let chs_bytes = u64::from(c) * u64::from(h) * u64::from(s) * 512;
    assert_eq!(chs_bytes, 50_291_712);
    // So the creator application must be one every qemu reads by the current size.
    let creator: &[u8; 4] = footer[28..32].try_into().unwrap();
    assert!(
        QEMU_7_2_CURRENT_SIZE_CREATORS.contains(&creator)
            && !QEMU_10_CHS_CREATORS.contains(&creator),
        "creator application {:?} is read by its CHS geometry in some qemu",
        String::from_utf8_lossy(creator)
    );
    assert_eq!(creator, &VHD_CREATOR_APP);
    // And the qemu-img on this machine agrees.
    let info = output(
        Command::new("qemu-img")
            .args(["info", "-f", "vpc", "--output=json"])
            .arg(&vhd),
    );
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["virtual-size"].as_u64(), Some(size), "{info}");
}

/// VHDX: reproducible, read by `qemu-img` (`info`, `check`), and holding the raw disk.
fn check_vhdx(dir: &Path, raw: &Path) {
    let vhdx = |tag: &str| {
        let p = dir.join(format!("disk-{tag}.vhdx"));
        write_vhdx(raw, &p, "core").unwrap();
        p
    };
    let (x, y) = (vhdx("1"), vhdx("2"));
    same_bytes(&x, &y);
    let info = output(
        Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&x),
    );
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        (v["format"].as_str(), v["virtual-size"].as_u64()),
        (Some("vhdx"), Some(48 << 20)),
        "{info}"
    );
    let check = Command::new("qemu-img")
        .args(["check", "-f", "vhdx"])
        .arg(&x)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    // Back to raw, byte for byte.
    let back = dir.join("disk-back.raw");
    output(
        Command::new("qemu-img")
            .args(["convert", "-f", "vhdx", "-O", "raw"])
            .arg(&x)
            .arg(&back),
    );
    same_bytes(raw, &back);
    // Only the blocks holding data take space: the disk is mostly zeros.
    let len = fs::metadata(&x).unwrap().len();
    assert!(len < 30 << 20, "{len} bytes");
    // Another image gets another disk id, the same content the same blocks.
    let other = dir.join("disk-other.vhdx");
    write_vhdx(raw, &other, "other").unwrap();
    assert!(fs::read(&other).unwrap() != fs::read(&x).unwrap());
}

#[test]
fn vhdx_of_a_disk_whose_size_is_not_a_whole_block_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("odd.raw");
    // 2.5 MiB: a short last block, with data at both ends and a zero block between.
    let mut bytes = vec![0u8; (5 << 20) / 2];
    bytes[..4096].fill(0xa5);
    let n = bytes.len();
    bytes[n - 512..].fill(0x5a);
    fs::write(&raw, &bytes).unwrap();
    check_roundtrip(dir.path(), &raw);
}

fn check_roundtrip(dir: &Path, raw: &Path) {
    let vhdx = dir.join("rt.vhdx");
    write_vhdx(raw, &vhdx, "rt").unwrap();
    let check = Command::new("qemu-img")
        .args(["check", "-f", "vhdx"])
        .arg(&vhdx)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let back = dir.join("rt-back.raw");
    output(
        Command::new("qemu-img")
            .args(["convert", "-f", "vhdx", "-O", "raw"])
            .arg(&vhdx)
            .arg(&back),
    );
    same_bytes(raw, &back);
}

#[test]
fn squashfs_and_iso_are_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample_root(dir.path());
    let rpm = crate::testutil::crafted(dir.path(), "pkg", |b| {
        crate::testutil::file(b, "/usr/share/p", b"p", 0o644)
    });
    let mk = |tag: &str| {
        let sq = dir.path().join(format!("root-{tag}.squashfs"));
        make_squashfs(&root, &sq, SDE).unwrap();
        let iso = dir.path().join(format!("image-{tag}.iso"));
        make_iso(
            &sq,
            std::slice::from_ref(&rpm.0),
            &iso,
            "KEEL",
            &dir.path().join(format!("w-{tag}")),
            SDE,
        )
        .unwrap();
        (sq, iso)
    };
    let (sa, ia) = mk("a");
    let (sb, ib) = mk("b");
    same_bytes(&sa, &sb);
    let ls = output(Command::new("unsquashfs").args(["-lln"]).arg(&sa));
    assert!(ls.contains("8/12") && ls.contains("usr/bin/hello"), "{ls}");
    let files = output(
        Command::new("xorriso")
            .args(["-indev"])
            .arg(&ia)
            .args(["-find", "/", "-type", "f"]),
    );
    assert!(
        files.contains("/LiveOS/rootfs.img")
            && files.contains("/RPMS/pkg.rpm")
            && files.contains("/RPMS/repodata/repomd.xml"),
        "{files}"
    );
    same_bytes(&ia, &ib);
}

#[test]
fn a_symlink_on_a_fat_partition_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("esp");
    fs::create_dir_all(src.join("EFI")).unwrap();
    let secret = dir.path().join("host-secret");
    fs::write(&secret, "secret").unwrap();
    std::os::unix::fs::symlink(&secret, src.join("EFI/leak")).unwrap();
    let img = dir.path().join("esp.img");
    let err = make_vfat(&src, &img, 8 << 20, FsType::Fat32, 1, "ESP", SDE)
        .unwrap_err()
        .to_string();
    assert!(err.contains("EFI/leak") && err.contains("symlink"), "{err}");
}
