//! Artifacts made from an assembled root: tarballs, OCI layouts, filesystems, disks.
//!
//! Every writer is deterministic for the same root and `SOURCE_DATE_EPOCH`: tar entries
//! are sorted with numeric owners and fixed mtimes, compressors get no names or times,
//! identifiers (filesystem UUIDs, GPT GUIDs, FAT volume ids) are derived from a seed the
//! caller gives (the image's name), and the external tools run with their
//! reproducibility switches (`E2FSPROGS_FAKE_TIME` and `hash_seed` for `mkfs.ext4`,
//! `--invariant` for `mkfs.vfat`, `SOURCE_DATE_EPOCH` for mtools and xorriso,
//! `-mkfs-time`/`-all-time` for `mksquashfs`). Where a tool cannot be made reproducible
//! the format is written natively: the GPT, the VHD footer and VHDX (`qemu-img` puts the
//! time and random GUIDs in those).

mod disk;
mod fsimg;
mod oci;
mod tar;
mod vhdx;

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

pub use disk::{
    DiskLayout, Guid, PartitionPlan, derive_guid, fs_uuid, guid_string, make_ext4, make_vfat,
    plan_disk, qemu_convert, write_gpt_disk, write_vhd_fixed,
};
pub use fsimg::{make_iso, make_squashfs};
pub use oci::write_oci_layout;
pub use vhdx::write_vhdx;

use crate::Error;

/// How a rootfs tarball is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarCompression {
    /// gzip (no name, mtime 0 in its header).
    Gzip,
    /// zstd, level 19, single-threaded.
    Zstd,
}

/// Writes the tree under `root` as a compressed tarball at `out`.
pub fn write_rootfs_tar(
    root: &Path,
    out: &Path,
    compression: TarCompression,
    sde: u64,
) -> Result<(), Error> {
    let file = fs::File::create(out).map_err(Error::io("create", out))?;
    let buf = BufWriter::new(file);
    let io = |what| Error::io(what, out);
    match compression {
        TarCompression::Gzip => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(3)
                .write(buf, flate2::Compression::default());
            let mut t = tar::TarWriter::new(gz, sde);
            t.append_tree(root)?;
            t.finish()
                .map_err(io("write"))?
                .finish()
                .map_err(io("write"))?
                .flush()
                .map_err(io("write"))?;
        }
        TarCompression::Zstd => {
            let z = zstd::Encoder::new(buf, 19).map_err(io("start zstd for"))?;
            let mut t = tar::TarWriter::new(z, sde);
            t.append_tree(root)?;
            t.finish()
                .map_err(io("write"))?
                .finish()
                .map_err(io("write"))?
                .flush()
                .map_err(io("write"))?;
        }
    }
    Ok(())
}

/// Seconds since the epoch as RFC 3339 UTC (`2023-11-14T22:13:20Z`).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian), era-based.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests;
