//! VHDX (MS-VHDX v1.0) written natively, so that the same raw disk always gives the same
//! bytes: `qemu-img convert -O vhdx` fills the headers with random GUIDs (file and data
//! write GUIDs, the virtual disk id) and leaves log entries with a random log GUID behind.
//!
//! Layout, all offsets 1 MiB-aligned as the specification asks:
//!
//! | offset  | what                                                                  |
//! |---------|-----------------------------------------------------------------------|
//! | 0       | file type identifier (`vhdxfile`, creator `keel`), two headers (sequence numbers 1 and 2, CRC-32C), two identical region tables (CRC-32C) |
//! | 1 MiB   | the log, 1 MiB, empty: the headers' log GUID is zero, so nothing is replayed |
//! | 2 MiB   | metadata: file parameters, virtual disk size, page 83 data (disk id), logical (512) and physical (4096) sector sizes |
//! | 3 MiB   | the block allocation table (BAT), rounded up to whole MiB              |
//! | after   | payload blocks of 1 MiB, in disk order, only those holding a non-zero byte |
//!
//! Blocks are 1 MiB, the size Microsoft recommends for ext4 in a dynamic VHDX (ext4
//! spreads its metadata, which would make larger blocks mostly zeros). A block of zeros is
//! `PAYLOAD_BLOCK_ZERO` (defined to read as zeros) and takes no space. Sector bitmap
//! entries of the BAT stay `NOT_PRESENT`: the disk has no parent.
//!
//! Identifiers: the virtual disk id is derived from the image's seed (it names the disk,
//! like the GPT disk GUID); the file and data write GUIDs from the seed and the BLAKE3 of
//! the disk's content, so they change exactly when the content does (a differencing disk
//! uses the data write GUID to notice a changed parent).

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::Error;
use crate::artifacts::disk::{Guid, derive_guid, guid_on_disk, parse_guid};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const LOG_OFFSET: u64 = MIB;
const LOG_LENGTH: u64 = MIB;
const METADATA_OFFSET: u64 = 2 * MIB;
const METADATA_LENGTH: u64 = MIB;
const BAT_OFFSET: u64 = 3 * MIB;
/// Payload block size (1 MiB: see the module docs).
const BLOCK_SIZE: u64 = MIB;
const LOGICAL_SECTOR: u32 = 512;
const PHYSICAL_SECTOR: u32 = 4096;
/// Payload blocks per sector bitmap block: 2^23 sectors of a bitmap block over the
/// sectors of a payload block.
const CHUNK_RATIO: u64 = (1 << 23) * LOGICAL_SECTOR as u64 / BLOCK_SIZE;

const PAYLOAD_BLOCK_ZERO: u64 = 2;
const PAYLOAD_BLOCK_FULLY_PRESENT: u64 = 6;

const BAT_REGION: &str = "2DC27766-F623-4200-9D64-115E9BFD4A08";
const METADATA_REGION: &str = "8B7CA206-4790-4B9A-B8FE-575F050F886E";
const FILE_PARAMETERS: &str = "CAA16737-FA36-4D43-B3B6-33F0AA44E76B";
const VIRTUAL_DISK_SIZE: &str = "2FA54224-CD1B-4876-B211-5DBED83BF4B8";
const PAGE_83_DATA: &str = "BECA12AB-B2E6-4523-93EF-C309E000C746";
const LOGICAL_SECTOR_SIZE: &str = "8141BF1D-A96F-4709-BA47-F233A8FAAB5F";
const PHYSICAL_SECTOR_SIZE: &str = "CDA348C7-445D-4471-9CC9-E9885251C556";

/// Metadata entry flags.
const IS_VIRTUAL_DISK: u32 = 1 << 1;
const IS_REQUIRED: u32 = 1 << 2;

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as the headers and region
/// tables use. Small enough to carry instead of a dependency: it covers 136 KiB per file.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for b in bytes {
        crc = TABLE[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Fills the CRC-32C field at `at` of `buf`, computed with the field zero.
fn seal(buf: &mut [u8], at: usize) {
    buf[at..at + 4].fill(0);
    let crc = crc32c(buf);
    buf[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

fn header(seq: u64, file_write: &Guid, data_write: &Guid) -> Vec<u8> {
    let mut h = vec![0u8; (4 * KIB) as usize];
    h[0..4].copy_from_slice(b"head");
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..32].copy_from_slice(&guid_on_disk(file_write));
    h[32..48].copy_from_slice(&guid_on_disk(data_write));
    // 48..64: the log GUID, zero: there is no log to replay.
    h[64..66].copy_from_slice(&0u16.to_le_bytes()); // log version
    h[66..68].copy_from_slice(&1u16.to_le_bytes()); // version
    h[68..72].copy_from_slice(&(LOG_LENGTH as u32).to_le_bytes());
    h[72..80].copy_from_slice(&LOG_OFFSET.to_le_bytes());
    seal(&mut h, 4);
    h
}

fn region_table(bat_length: u64) -> Vec<u8> {
    let mut r = vec![0u8; (64 * KIB) as usize];
    r[0..4].copy_from_slice(b"regi");
    r[8..12].copy_from_slice(&2u32.to_le_bytes());
    let regions = [
        (BAT_REGION, BAT_OFFSET, bat_length),
        (METADATA_REGION, METADATA_OFFSET, METADATA_LENGTH),
    ];
    for (i, (guid, offset, length)) in regions.into_iter().enumerate() {
        let o = 16 + 32 * i;
        r[o..o + 16].copy_from_slice(&guid_on_disk(&parse_guid(guid)));
        r[o + 16..o + 24].copy_from_slice(&offset.to_le_bytes());
        r[o + 24..o + 28].copy_from_slice(&(length as u32).to_le_bytes());
        r[o + 28..o + 32].copy_from_slice(&1u32.to_le_bytes()); // required
    }
    seal(&mut r, 4);
    r
}

fn metadata(size: u64, disk_id: &Guid) -> Vec<u8> {
    let mut m = vec![0u8; METADATA_LENGTH as usize];
    m[0..8].copy_from_slice(b"metadata");
    let mut file_parameters = Vec::new();
    file_parameters.extend_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
    // Neither "leave blocks allocated" (a dynamic disk) nor "has parent".
    file_parameters.extend_from_slice(&0u32.to_le_bytes());
    let items: [(&str, Vec<u8>, u32); 5] = [
        (FILE_PARAMETERS, file_parameters, IS_REQUIRED),
        (
            VIRTUAL_DISK_SIZE,
            size.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            PAGE_83_DATA,
            guid_on_disk(disk_id).to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            LOGICAL_SECTOR_SIZE,
            LOGICAL_SECTOR.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
        (
            PHYSICAL_SECTOR_SIZE,
            PHYSICAL_SECTOR.to_le_bytes().to_vec(),
            IS_VIRTUAL_DISK | IS_REQUIRED,
        ),
    ];
    m[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    // Item data starts 64 KiB into the region, after the table.
    let mut data_at = 64 * KIB as usize;
    for (i, (guid, data, flags)) in items.iter().enumerate() {
        let o = 32 + 32 * i;
        m[o..o + 16].copy_from_slice(&guid_on_disk(&parse_guid(guid)));
        m[o + 16..o + 20].copy_from_slice(&(data_at as u32).to_le_bytes());
        m[o + 20..o + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        m[o + 24..o + 28].copy_from_slice(&flags.to_le_bytes());
        m[data_at..data_at + data.len()].copy_from_slice(data);
        data_at += data.len();
    }
    m
}

/// Writes a dynamic VHDX at `out` holding the raw disk `raw`, with identifiers derived
/// from `seed` (the image's name) and the disk's content: the same raw disk and seed give
/// the same bytes.
pub fn write_vhdx(raw: &Path, out: &Path, seed: &str) -> Result<(), Error> {
    let mut src = fs::File::open(raw).map_err(Error::io("open", raw))?;
    let size = src.metadata().map_err(Error::io("stat", raw))?.len();
    if size == 0 || size % u64::from(LOGICAL_SECTOR) != 0 {
        return Err(Error::Artifact {
            artifact: out.to_owned(),
            message: format!(
                "a VHDX's size must be a non-zero multiple of {LOGICAL_SECTOR} bytes, not {size}"
            ),
        });
    }
    let blocks = size.div_ceil(BLOCK_SIZE);
    let bat_entries = blocks + (blocks - 1) / CHUNK_RATIO;
    let bat_length = (bat_entries * 8).div_ceil(MIB) * MIB;
    let data_start = BAT_OFFSET + bat_length;

    let mut dst = fs::File::create(out).map_err(Error::io("create", out))?;
    let mut bat = vec![0u8; bat_length as usize];
    let mut content = blake3::Hasher::new();
    let mut next = data_start;
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
    for block in 0..blocks {
        let len = (size - block * BLOCK_SIZE).min(BLOCK_SIZE) as usize;
        src.read_exact(&mut buf[..len])
            .map_err(Error::io("read", raw))?;
        content.update(&buf[..len]);
        let entry = if buf[..len].iter().all(|b| *b == 0) {
            PAYLOAD_BLOCK_ZERO
        } else {
            // A short last block still takes a whole block in the file; its tail is
            // zeros (left as a hole).
            buf[len..].fill(0);
            dst.seek(SeekFrom::Start(next))
                .map_err(Error::io("seek in", out))?;
            dst.write_all(&buf).map_err(Error::io("write", out))?;
            let at = next;
            next += BLOCK_SIZE;
            PAYLOAD_BLOCK_FULLY_PRESENT | at
        };
        let i = (block + block / CHUNK_RATIO) as usize;
        bat[8 * i..8 * i + 8].copy_from_slice(&entry.to_le_bytes());
    }
    let digest = content.finalize().to_hex();
    let file_write = derive_guid(seed, &format!("vhdx:file-write:{digest}"));
    let data_write = derive_guid(seed, &format!("vhdx:data-write:{digest}"));
    let disk_id = derive_guid(seed, "vhdx:disk-id");

    let mut identifier = vec![0u8; (64 * KIB) as usize];
    identifier[0..8].copy_from_slice(b"vhdxfile");
    for (i, u) in "keel".encode_utf16().enumerate() {
        identifier[8 + 2 * i..10 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    let regions = region_table(bat_length);
    let parts: [(u64, &[u8]); 7] = [
        (0, &identifier),
        (64 * KIB, &header(1, &file_write, &data_write)),
        (128 * KIB, &header(2, &file_write, &data_write)),
        (192 * KIB, &regions),
        (256 * KIB, &regions),
        (METADATA_OFFSET, &metadata(size, &disk_id)),
        (BAT_OFFSET, &bat),
    ];
    for (offset, bytes) in parts {
        dst.seek(SeekFrom::Start(offset))
            .map_err(Error::io("seek in", out))?;
        dst.write_all(bytes).map_err(Error::io("write", out))?;
    }
    // The log region stays zeros; the file ends after the last block.
    dst.set_len(next.max(data_start))
        .map_err(Error::io("size", out))?;
    dst.sync_all().map_err(Error::io("sync", out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The CRC catalogue's check value for CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
