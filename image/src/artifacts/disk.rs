//! Disks: a GUID partition table written natively, ext4 and FAT filesystems made with
//! `mkfs.ext4 -d` and `mkfs.vfat` + mtools (no loop mounts), a fixed VHD footer written
//! natively, and the conversion to qcow2 with `qemu-img` (VHDX is in [`super::vhdx`]).

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use crate::Error;
use crate::config::{Disk, FsType, PartitionFlag};
use crate::tools::run;

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
/// Sectors of a 128-entry partition array (128 × 128 bytes).
const ENTRY_SECTORS: u64 = 32;

/// GPT type of an EFI system partition.
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type of a Linux filesystem.
const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// GPT type of a BIOS boot partition.
const BIOS_BOOT_TYPE: &str = "21686148-6449-6E6F-744E-656564454649";

/// A GUID in its printed byte order (`00112233-4455-…` is `[0x00, 0x11, …]`).
pub type Guid = [u8; 16];

pub(crate) fn parse_guid(s: &str) -> Guid {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut g = [0u8; 16];
    for (i, b) in g.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("a valid GUID constant");
    }
    g
}

/// `00112233-4455-6677-8899-aabbccddeeff`.
pub fn guid_string(g: &Guid) -> String {
    let h: Vec<String> = g.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// GPT (and VHDX) store the first three fields little-endian.
pub(crate) fn guid_on_disk(g: &Guid) -> [u8; 16] {
    let mut o = *g;
    o[0..4].reverse();
    o[4..6].reverse();
    o[6..8].reverse();
    o
}

/// A version-4-shaped GUID derived from `seed` and `what`: fixed for the same image, and
/// different for each disk, partition and filesystem of it.
pub fn derive_guid(seed: &str, what: &str) -> Guid {
    let mut h = blake3::Hasher::new_derive_key("keel-image 2026-11-27 disk identifiers v1");
    h.update(&(seed.len() as u64).to_le_bytes());
    h.update(seed.as_bytes());
    h.update(what.as_bytes());
    let mut g = [0u8; 16];
    g.copy_from_slice(&h.finalize().as_bytes()[..16]);
    g[6] = (g[6] & 0x0f) | 0x40;
    g[8] = (g[8] & 0x3f) | 0x80;
    g
}

/// A filesystem UUID derived like [`derive_guid`], as text.
pub fn fs_uuid(seed: &str, what: &str) -> String {
    guid_string(&derive_guid(seed, &format!("fs:{what}")))
}

/// One partition as laid out on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    /// The config's partition ID.
    pub id: String,
    /// The GPT partition name.
    pub name: String,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// GPT partition type.
    pub type_guid: Guid,
    /// GPT unique partition GUID (fstab's `PARTUUID`).
    pub guid: Guid,
    /// GPT attribute bits (bit 2: legacy BIOS bootable).
    pub attributes: u64,
    /// Filesystem to make in it.
    pub fs: FsType,
}

impl PartitionPlan {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }
}

/// A whole disk's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    /// Total size in bytes.
    pub size: u64,
    /// The disk GUID.
    pub disk_guid: Guid,
    /// Partitions in table order.
    pub partitions: Vec<PartitionPlan>,
}

/// Lays out `disk`'s partitions (`Start`/`End` in MiB, `End` 0 meaning the end of the
/// usable space), with GUIDs derived from `seed`.
pub fn plan_disk(disk: &Disk, seed: &str) -> DiskLayout {
    let size = disk.max_size_mib * MIB;
    let sectors = size / SECTOR;
    let last_usable = sectors - 2 - ENTRY_SECTORS;
    let partitions = disk
        .partitions
        .iter()
        .map(|p| {
            let first_lba = p.start_mib * MIB / SECTOR;
            let last_lba = if p.end_mib == 0 {
                last_usable
            } else {
                (p.end_mib * MIB / SECTOR - 1).min(last_usable)
            };
            let esp = p.flags.contains(&PartitionFlag::Esp);
            let type_guid = if esp {
                parse_guid(ESP_TYPE)
            } else if p.flags.contains(&PartitionFlag::BiosGrub) {
                parse_guid(BIOS_BOOT_TYPE)
            } else {
                parse_guid(LINUX_TYPE)
            };
            let attributes = if !esp && p.flags.contains(&PartitionFlag::Boot) {
                1 << 2
            } else {
                0
            };
            PartitionPlan {
                id: p.id.clone(),
                name: p.name.clone(),
                first_lba,
                last_lba,
                type_guid,
                guid: derive_guid(seed, &format!("partition:{}", p.id)),
                attributes,
                fs: p.fs,
            }
        })
        .collect();
    DiskLayout {
        size,
        disk_guid: derive_guid(seed, "disk"),
        partitions,
    }
}

fn gpt_header(layout: &DiskLayout, entries_crc: u32, backup: bool) -> [u8; 512] {
    let sectors = layout.size / SECTOR;
    let (my, alt, entries) = if backup {
        (sectors - 1, 1, sectors - 1 - ENTRY_SECTORS)
    } else {
        (1, sectors - 1, 2)
    };
    let mut h = [0u8; 512];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&my.to_le_bytes());
    h[32..40].copy_from_slice(&alt.to_le_bytes());
    h[40..48].copy_from_slice(&(2 + ENTRY_SECTORS).to_le_bytes());
    h[48..56].copy_from_slice(&(sectors - 2 - ENTRY_SECTORS).to_le_bytes());
    h[56..72].copy_from_slice(&guid_on_disk(&layout.disk_guid));
    h[72..80].copy_from_slice(&entries.to_le_bytes());
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

fn gpt_entries(layout: &DiskLayout) -> Vec<u8> {
    let mut e = vec![0u8; (ENTRY_SECTORS * SECTOR) as usize];
    for (i, p) in layout.partitions.iter().enumerate() {
        let o = i * 128;
        e[o..o + 16].copy_from_slice(&guid_on_disk(&p.type_guid));
        e[o + 16..o + 32].copy_from_slice(&guid_on_disk(&p.guid));
        e[o + 32..o + 40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[o + 40..o + 48].copy_from_slice(&p.last_lba.to_le_bytes());
        e[o + 48..o + 56].copy_from_slice(&p.attributes.to_le_bytes());
        for (j, u) in p.name.encode_utf16().take(36).enumerate() {
            e[o + 56 + 2 * j..o + 58 + 2 * j].copy_from_slice(&u.to_le_bytes());
        }
    }
    e
}

fn protective_mbr(sectors: u64) -> [u8; 512] {
    let mut m = [0u8; 512];
    let p = &mut m[446..462];
    p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    p[4] = 0xEE;
    p[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    p[8..12].copy_from_slice(&1u32.to_le_bytes());
    let n = u32::try_from(sectors - 1).unwrap_or(u32::MAX);
    p[12..16].copy_from_slice(&n.to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

/// Copies `src` into `dst` (sized beforehand) at `offset`, leaving all-zero blocks as
/// holes.
fn copy_sparse(
    src: &Path,
    dst: &fs::File,
    offset: u64,
    limit: u64,
    out: &Path,
) -> Result<(), Error> {
    let mut f = fs::File::open(src).map_err(Error::io("open", src))?;
    let len = f.metadata().map_err(Error::io("stat", src))?.len();
    if len > limit {
        return Err(Error::Artifact {
            artifact: out.to_owned(),
            message: format!(
                "filesystem image {} ({len} bytes) is larger than its partition ({limit} bytes)",
                src.display()
            ),
        });
    }
    keel_store::write_sparse(&mut f, dst, offset)
        .map_err(Error::io("copy a filesystem image into", out))?;
    Ok(())
}

/// Writes a raw disk at `out`: protective MBR, primary and backup GPT, and each
/// partition's filesystem image (`images[i]` for `layout.partitions[i]`, `None` leaves
/// it empty).
pub fn write_gpt_disk(
    out: &Path,
    layout: &DiskLayout,
    images: &[Option<&Path>],
) -> Result<(), Error> {
    let sectors = layout.size / SECTOR;
    let mut f = fs::File::create(out).map_err(Error::io("create", out))?;
    f.set_len(layout.size).map_err(Error::io("size", out))?;
    let entries = gpt_entries(layout);
    let crc = crc32fast::hash(&entries);
    let mut put = |off: u64, bytes: &[u8]| -> Result<(), Error> {
        f.seek(SeekFrom::Start(off))
            .map_err(Error::io("seek in", out))?;
        f.write_all(bytes).map_err(Error::io("write", out))
    };
    put(0, &protective_mbr(sectors))?;
    put(SECTOR, &gpt_header(layout, crc, false))?;
    put(2 * SECTOR, &entries)?;
    put((sectors - 1 - ENTRY_SECTORS) * SECTOR, &entries)?;
    put((sectors - 1) * SECTOR, &gpt_header(layout, crc, true))?;
    for (p, img) in layout.partitions.iter().zip(images) {
        if let Some(img) = img {
            copy_sparse(img, &f, p.first_lba * SECTOR, p.size(), out)?;
        }
    }
    f.sync_all().map_err(Error::io("sync", out))
}

fn sized_file(out: &Path, size: u64) -> Result<(), Error> {
    let f = fs::File::create(out).map_err(Error::io("create", out))?;
    f.set_len(size).map_err(Error::io("size", out))
}

/// Makes an ext4 filesystem of `size` bytes at `out` holding the tree `src`, with a fixed
/// UUID, hash seed and time.
pub fn make_ext4(
    src: &Path,
    out: &Path,
    size: u64,
    uuid: &str,
    label: &str,
    sde: u64,
) -> Result<(), Error> {
    sized_file(out, size)?;
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F", "-t", "ext4", "-L", label, "-U", uuid])
        .arg("-E")
        .arg(format!("hash_seed={uuid},root_owner=0:0"))
        .arg("-d")
        .arg(src)
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", sde.to_string())
        .env("TZ", "UTC");
    run(&mut cmd, "mkfs.ext4", out)?;
    fix_ext4_times(src, out, sde)
}

/// `mkfs.ext4 -d` copies each source file's ctime and atime, which no one can set to a
/// fixed value on the host; set them to `sde` in the image with one `debugfs` run.
fn fix_ext4_times(src: &Path, out: &Path, sde: u64) -> Result<(), Error> {
    let mut cmds = String::new();
    for entry in walkdir::WalkDir::new(src).sort_by_file_name() {
        let entry = entry.map_err(|e| Error::io("walk", src)(e.into()))?;
        let rel = entry
            .path()
            .strip_prefix(src)
            .expect("walkdir stays under its root");
        let path = format!("/{}", rel.to_string_lossy());
        if path.contains(['"', '\n', '\\']) {
            return Err(Error::Artifact {
                artifact: out.to_owned(),
                message: format!("path {path:?} cannot be passed to debugfs"),
            });
        }
        for field in ["ctime", "atime"] {
            cmds.push_str(&format!("sif \"{path}\" {field} @{sde}\n"));
        }
    }
    let script = out.with_extension("debugfs");
    fs::write(&script, cmds).map_err(Error::io("write", &script))?;
    let result = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", sde.to_string())
        .output();
    let _ = fs::remove_file(&script);
    let o = result.map_err(|e| Error::Tool {
        program: "debugfs".into(),
        artifact: out.to_owned(),
        message: format!("cannot start it ({e}); is it installed?"),
    })?;
    let stderr = String::from_utf8_lossy(&o.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("debugfs "))
        .collect();
    if !o.status.success() || !errors.is_empty() {
        return Err(Error::Tool {
            program: "debugfs".into(),
            artifact: out.to_owned(),
            message: format!("{}: {}", o.status, errors.join("\n")),
        });
    }
    Ok(())
}

/// Makes a FAT filesystem of `size` bytes at `out` holding the tree `src` (copied with
/// mtools), with a fixed volume id.
pub fn make_vfat(
    src: &Path,
    out: &Path,
    size: u64,
    fs: FsType,
    volume_id: u32,
    label: &str,
    sde: u64,
) -> Result<(), Error> {
    // FAT holds no symlinks and mcopy would follow one, copying whatever it points to on
    // the host (a package or script could plant /boot/efi/x -> /etc/shadow): refuse.
    for entry in walkdir::WalkDir::new(src).follow_links(false) {
        let entry = entry.map_err(|e| Error::io("walk", src)(e.into()))?;
        let ft = entry.file_type();
        if !ft.is_dir() && !ft.is_file() {
            return Err(Error::Artifact {
                artifact: out.to_owned(),
                message: format!(
                    "{} is a symlink or special file, which a FAT filesystem cannot hold",
                    entry.path().display()
                ),
            });
        }
    }
    sized_file(out, size)?;
    // FAT32 needs at least 65525 clusters (about 33 MiB with 512-byte clusters); mtools
    // and firmware read a smaller "FAT32" as something else, so below that mkfs.vfat picks
    // the FAT size that fits (the Azure Linux configs ask for an 8 MiB fat32 ESP).
    let bits = match fs {
        _ if size < 33 * MIB => {
            tracing::info!(
                "{}: {} MiB is too small for FAT32, letting mkfs.vfat pick FAT12/16",
                out.display(),
                size / MIB
            );
            None
        }
        FsType::Fat16 => Some("16"),
        _ => Some("32"),
    };
    let mut cmd = Command::new("mkfs.vfat");
    cmd.arg("--invariant");
    if let Some(bits) = bits {
        cmd.args(["-F", bits]);
    }
    cmd.args(["-n", label, "-i"])
        .arg(format!("{volume_id:08X}"))
        .arg(out)
        .env("SOURCE_DATE_EPOCH", sde.to_string());
    run(&mut cmd, "mkfs.vfat", out)?;
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(Error::io("read directory", src))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    if entries.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new("mcopy");
    cmd.arg("-i")
        .arg(out)
        .args(["-s", "-p", "-m", "-Q"])
        .args(&entries)
        .arg("::/")
        .env("SOURCE_DATE_EPOCH", sde.to_string())
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("TZ", "UTC");
    run(&mut cmd, "mcopy", out)
}

/// The CHS geometry of a VHD of `size` bytes (the VHD specification's algorithm).
pub(crate) fn vhd_geometry(size: u64) -> (u16, u8, u8) {
    let total = (size / SECTOR).min(65_535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65_535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

/// The footer's creator application. Readers disagree on a VHD's size: Virtual PC takes
/// the CHS geometry (which rounds down: 48 MiB reads as 50,291,712 bytes), Hyper-V and
/// Azure the footer's current size, and `qemu-img` picks one by this field. qemu 7.2
/// (Debian 12's) trusts the geometry unless the creator is one it knows to mean the
/// current size (`win `, `qem2`, `d2v `, `CTXS`, `tap\0`); qemu 10 trusts the current size
/// unless the creator is `vpc ` or `qemu`. `qem2` is in both lists and is what
/// `qemu-img convert -o subformat=fixed,force_size` writes (the Azure Linux toolkit's and
/// Azure's documented way of making a VHD), so a keel VHD reads at its exact size in
/// every qemu and like the reference toolkit's; an unknown name such as `keel` would
/// silently shrink the disk, cutting off its backup GPT header, in older readers.
pub(crate) const VHD_CREATOR_APP: [u8; 4] = *b"qem2";

/// Writes a fixed VHD at `out`: the raw disk followed by a 512-byte footer whose time is
/// `sde` and whose unique id is derived from `seed`. Written natively because
/// `qemu-img`'s footer holds the current time and a random id.
pub fn write_vhd_fixed(raw: &Path, out: &Path, seed: &str, sde: u64) -> Result<(), Error> {
    let size = fs::metadata(raw).map_err(Error::io("stat", raw))?.len();
    if size % MIB != 0 {
        return Err(Error::Artifact {
            artifact: out.to_owned(),
            message: format!("a VHD's size must be a whole number of MiB, not {size} bytes"),
        });
    }
    let mut dst = fs::File::create(out).map_err(Error::io("create", out))?;
    dst.set_len(size).map_err(Error::io("size", out))?;
    copy_sparse(raw, &dst, 0, size, out)?;
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    let ts = u32::try_from(sde.saturating_sub(946_684_800)).unwrap_or(u32::MAX);
    f[24..28].copy_from_slice(&ts.to_be_bytes());
    f[28..32].copy_from_slice(&VHD_CREATOR_APP);
    f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    let (c, h, s) = vhd_geometry(size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&2u32.to_be_bytes());
    f[68..84].copy_from_slice(&derive_guid(seed, "vhd"));
    let sum: u32 = f.iter().map(|b| u32::from(*b)).sum();
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    dst.seek(SeekFrom::Start(size))
        .map_err(Error::io("seek in", out))?;
    dst.write_all(&f).map_err(Error::io("write", out))?;
    dst.sync_all().map_err(Error::io("sync", out))
}

/// Converts the raw disk to `format` (`qcow2`) with `qemu-img convert`. Not for VHDX,
/// whose headers `qemu-img` fills with random GUIDs: see [`super::write_vhdx`].
pub fn qemu_convert(raw: &Path, out: &Path, format: &str) -> Result<(), Error> {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-q", "-f", "raw", "-O", format]);
    cmd.arg(raw).arg(out);
    run(&mut cmd, "qemu-img", out)
}
