//! A deterministic tar writer: entries sorted by path, numeric owners only, every mtime
//! `SOURCE_DATE_EPOCH`, POSIX ustar headers with pax records for long names.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::Error;

const BLOCK: usize = 512;

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    // Values that do not fit go to a pax record; callers check before.
    let bytes = s.as_bytes();
    let start = bytes.len().saturating_sub(width);
    field[..width].copy_from_slice(&bytes[start..]);
    field[width] = 0;
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // The length prefix counts itself: grow it until it is stable.
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

struct Entry<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    typeflag: u8,
    link: &'a [u8],
    dev: (u32, u32),
}

/// Writes tar archives of a directory to a byte stream.
pub(crate) struct TarWriter<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(out: W, mtime: u64) -> Self {
        TarWriter { out, mtime }
    }

    fn header(&mut self, e: &Entry<'_>) -> io::Result<()> {
        let mut pax = Vec::new();
        if e.name.len() > 100 {
            pax_record(&mut pax, "path", e.name);
        }
        if e.link.len() > 100 {
            pax_record(&mut pax, "linkpath", e.link);
        }
        if e.size >= 1 << 33 {
            pax_record(&mut pax, "size", e.size.to_string().as_bytes());
        }
        if !pax.is_empty() {
            let pax_entry = Entry {
                name: b"././@PaxHeader",
                mode: 0o644,
                uid: 0,
                gid: 0,
                size: pax.len() as u64,
                typeflag: b'x',
                link: b"",
                dev: (0, 0),
            };
            self.raw_header(&pax_entry)?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        self.raw_header(e)
    }

    fn raw_header(&mut self, e: &Entry<'_>) -> io::Result<()> {
        let mut h = [0u8; BLOCK];
        let n = e.name.len().min(100);
        h[..n].copy_from_slice(&e.name[..n]);
        octal(&mut h[100..108], u64::from(e.mode));
        octal(&mut h[108..116], u64::from(e.uid));
        octal(&mut h[116..124], u64::from(e.gid));
        octal(&mut h[124..136], e.size.min((1 << 33) - 1));
        octal(&mut h[136..148], self.mtime);
        h[156] = e.typeflag;
        let l = e.link.len().min(100);
        h[157..157 + l].copy_from_slice(&e.link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        octal(&mut h[329..337], u64::from(e.dev.0));
        octal(&mut h[337..345], u64::from(e.dev.1));
        h[148..156].fill(b' ');
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.write_all(&h)
    }

    fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Appends every entry under `root` (not `root` itself), sorted by path, with names
    /// relative to it (`etc/`, `etc/passwd`).
    pub(crate) fn append_tree(&mut self, root: &Path) -> Result<(), Error> {
        let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        for entry in walkdir::WalkDir::new(root)
            .min_depth(1)
            .sort_by_file_name()
            .follow_links(false)
        {
            let entry = entry.map_err(|e| Error::io("walk", root)(e.into()))?;
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("walkdir stays under its root");
            let m = fs::symlink_metadata(path).map_err(Error::io("stat", path))?;
            let ft = m.file_type();
            let mut name = rel.as_os_str().as_bytes().to_vec();
            let target;
            let mut e = Entry {
                name: &[],
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: 0,
                typeflag: b'0',
                link: b"",
                dev: (0, 0),
            };
            let io = |what| Error::io(what, path);
            if ft.is_dir() {
                name.push(b'/');
                e.typeflag = b'5';
            } else if ft.is_symlink() {
                target = fs::read_link(path).map_err(io("read symlink"))?;
                e.typeflag = b'2';
                e.link = target.as_os_str().as_bytes();
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    if let Some(first) = links.get(&(m.dev(), m.ino())) {
                        e.typeflag = b'1';
                        let first = first.clone();
                        e.link = &first;
                        e.name = &name;
                        self.header(&e).map_err(io("write tar entry for"))?;
                        continue;
                    }
                    links.insert((m.dev(), m.ino()), name.clone());
                }
                e.size = m.len();
            } else if ft.is_char_device() || ft.is_block_device() {
                e.typeflag = if ft.is_char_device() { b'3' } else { b'4' };
                e.dev = (libc::major(m.rdev()), libc::minor(m.rdev()));
            } else if ft.is_fifo() {
                e.typeflag = b'6';
            } else {
                return Err(Error::Rootfs {
                    root: root.to_owned(),
                    path: format!("/{}", rel.display()),
                    message: "sockets cannot be put in a tar archive".into(),
                });
            }
            e.name = &name;
            self.header(&e).map_err(io("write tar entry for"))?;
            if e.typeflag == b'0' {
                let mut f = fs::File::open(path).map_err(io("open"))?;
                let copied = io::copy(&mut (&mut f).take(e.size), &mut self.out)
                    .map_err(io("copy into tar"))?;
                if copied != e.size {
                    return Err(io("copy into tar")(io::Error::other(
                        "file shrank while being read",
                    )));
                }
                self.pad(e.size).map_err(io("write tar entry for"))?;
            }
        }
        Ok(())
    }

    /// Writes the end-of-archive blocks and returns the stream.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}
