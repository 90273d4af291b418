//! Layers: an RPM's payload unpacked into a directory, to be stacked as an overlay lower
//! layer of a build root ([`unpack_payload`]), kept once per RPM by [`LayerCache`].
//!
//! # Trust
//!
//! An RPM is untrusted input here: it may come from a remote cache or a hostile spec.
//! Unpacking therefore:
//!
//! - checks the header digests (SHA-256 and any other the `rpm` crate recognises) and the
//!   digest of the compressed payload (`RPMTAG_PAYLOADDIGEST`, rpm ≥ 4.14) before reading
//!   any file data. A payload whose digest matched is the payload the header describes,
//!   byte for byte, so its files are not hashed again; a package without a payload digest
//!   has every regular file's bytes checked against its `FILEDIGESTS` entry before that
//!   file is written. Either way a package whose file digests use an algorithm keel
//!   cannot check (MD5 from very old rpm, SHA-3) is refused. What is not detected: a
//!   package whose builder wrote file digests that disagree with the payload it also
//!   digested (`rpm -V` in the image would report those files). The digest of the
//!   *uncompressed* payload (`PAYLOADDIGESTALT`) is not checked;
//! - never writes outside `dest`: every path must be absolute and free of `.`, `..` and
//!   empty components, every parent directory is opened with `O_NOFOLLOW | O_DIRECTORY`
//!   one component at a time (so a symlink planted by an earlier entry is never followed),
//!   files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`. Symlinks are created as they
//!   are, absolute targets included: they only mean something inside the sandbox's root;
//! - never creates hard links: members of an rpm hard-link set are written as copies, so a
//!   link can never point out of the layer;
//! - refuses device nodes (unless [`UnpackOptions::allow_devices`]), FIFOs and sockets,
//!   naming the package and the path;
//! - caps the total size of file data ([`UnpackOptions::max_bytes`]) before decompressing,
//!   and refuses a file whose payload data is longer or shorter than its header declares;
//! - never holds a large file in memory: a file above [`STREAM_ABOVE`] bytes is streamed
//!   in 1 MiB chunks into a temporary name beside its own, checked (size, and digest when
//!   the payload has none) and only then linked into place;
//! - strips setuid and setgid bits unless [`UnpackOptions::allow_setuid`] is set;
//! - sets every file's and directory's mtime to [`UnpackOptions::mtime`] so a layer's
//!   content is the same whenever it was unpacked.
//!
//! Ownership is not applied: a layer belongs to the user running keel. Ghost files are not
//! created (rpm does not create them either).
//!
//! Checking and writing are two steps ([`verify_payload`], then
//! [`VerifiedPayload::unpack_into`]), so that a caller can check packages in parallel
//! and write them in order; [`unpack_payload_with`] does both. The first step checks
//! everything but file data (header and payload digests, paths, types, declared sizes);
//! the second decompresses the payload once, into one buffer reused for every small
//! file (streaming the large ones), and checks each regular file's size (and, without a
//! payload digest, its digest) before the file appears under its name. A file refused is
//! never written, but the files before it in the payload were: on an error the caller
//! discards the destination.
//!
//! [`merge_packages`] stacks the layers of a set of packages into one root (a toolchain
//! made of RPMs) and refuses, as unpacking them all into one directory does, any path two
//! packages both claim other than a directory they share.
//!
//! Known limit: the whole package (compressed) is held in memory; a single payload entry
//! can claim at most 4 GiB (cpio's limit).

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rpm::{DigestAlgorithm, FileFlags, FileType, IndexTag, Package};
use sha2::Digest as _;

use crate::Error;

/// How [`unpack_payload_with`] treats a payload.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// The limit on a package's file data (the sum of its regular files' declared sizes):
    /// a package must declare less.
    pub max_bytes: u64,
    /// Keep setuid/setgid bits (stripped by default: a build root needs none).
    pub allow_setuid: bool,
    /// The mtime given to every unpacked entry, in seconds since the epoch.
    pub mtime: i64,
    /// Create character and block device nodes (needs root; refused by default: a build
    /// root needs none, an image root may).
    pub allow_devices: bool,
    /// After unpacking, set the mtime of every directory under `dest`, not only those the
    /// package made (on by default). Off for callers that unpack many packages into one
    /// directory and stamp it once at the end.
    pub stamp_all_dirs: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            max_bytes: 8 << 30,
            allow_setuid: false,
            mtime: 0,
            allow_devices: false,
            stamp_all_dirs: true,
        }
    }
}

/// What an unpack wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Regular files written (members of a hard-link set count once each).
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// Unpacks `rpm`'s payload into `dest` (created if missing) with the default
/// [`UnpackOptions`].
pub fn unpack_payload(rpm: &Path, dest: &Path) -> Result<UnpackStats, Error> {
    unpack_payload_with(rpm, dest, &UnpackOptions::default())
}

/// Unpacks `rpm`'s payload into `dest` (created if missing); see the module docs for every
/// check made on the way.
///
/// `dest` may already hold other packages' files (an image root is made by unpacking
/// every package into one directory): existing directories are reused, but an existing
/// file, symlink or device at a path the package writes is an error, and a symlink an
/// earlier package planted is never followed, not even as a parent directory.
pub fn unpack_payload_with(
    rpm: &Path,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, Error> {
    verify_payload(rpm, opts)?.unpack_into(dest)
}

/// Reads `rpm` and checks everything about it that can be checked before any file data
/// is needed: header and payload digests, that every entry's path and type may be
/// unpacked, that the file digests use an algorithm keel can check, and the declared size
/// against [`UnpackOptions::max_bytes`].
///
/// The payload is not decompressed here: [`VerifiedPayload::unpack_into`] decompresses it
/// once, checking each regular file's size (and digest, for a payload without one) before
/// that file is written, so a caller unpacking many packages into one directory can check
/// their headers on other threads while it decides in which order they may be written.
pub fn verify_payload(rpm: &Path, opts: &UnpackOptions) -> Result<VerifiedPayload, Error> {
    let bytes = fs::read(rpm).map_err(Error::io("read", rpm))?;
    let pkg = Package::parse(&mut bytes.as_slice()).map_err(Error::rpm(rpm))?;
    let package = pkg.metadata.get_name().unwrap_or("?").to_owned();
    let payload_digest = verify_package_digests(rpm, &pkg)?;
    let u = Unpacker {
        rpm,
        package: package.clone(),
        opts,
    };
    let declared_bytes = u.verify(&pkg.metadata)?;
    Ok(VerifiedPayload {
        rpm: rpm.to_owned(),
        package,
        declared_bytes,
        metadata: pkg.metadata,
        bytes: SharedBytes(std::sync::Arc::new(bytes)),
        file_digests: !payload_digest,
        opts: opts.clone(),
    })
}

/// A package [`verify_payload`] checked, held in memory (compressed) until it is written.
///
/// Only this type can be unpacked, and only with the options it was checked under.
/// Writing reads the very bytes whose header and payload digests were checked (the file
/// is not read again), and checks each regular file's size — and its digest when the
/// payload had no digest of its own — on its decompressed bytes before it writes that
/// file: no file is ever written with bytes that were not checked. A file refused stops
/// the unpack with an error, after the files before it in the payload were written; the
/// caller must then discard `dest` (a layer's staging directory, an image's root).
#[derive(Debug)]
pub struct VerifiedPayload {
    rpm: PathBuf,
    package: String,
    declared_bytes: u64,
    metadata: rpm::PackageMetadata,
    bytes: SharedBytes,
    /// Whether each file's digest is to be checked while writing: when the payload had
    /// no digest of its own.
    file_digests: bool,
    opts: UnpackOptions,
}

/// The whole RPM file as read, shared with the payload reader.
#[derive(Debug, Clone)]
struct SharedBytes(std::sync::Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl VerifiedPayload {
    /// The package's name.
    pub fn package(&self) -> &str {
        &self.package
    }

    /// The bytes of file data the package writes (the sum of its regular files'
    /// declared sizes; unpacking checks every file against its size).
    pub fn declared_bytes(&self) -> u64 {
        self.declared_bytes
    }

    /// The package file.
    pub fn rpm(&self) -> &Path {
        &self.rpm
    }

    /// The package's lead and headers.
    pub fn metadata(&self) -> &rpm::PackageMetadata {
        &self.metadata
    }

    /// The BLAKE3 of the RPM file, as read once and checked (what `b3sum` prints).
    pub fn blake3(&self) -> keel_store::BlobDigest {
        keel_store::BlobDigest::of_bytes(self.bytes.as_ref())
    }

    /// The lead and headers, dropping the payload.
    pub fn into_metadata(self) -> rpm::PackageMetadata {
        self.metadata
    }

    /// Writes the payload into `dest` (created if missing); see [`unpack_payload_with`].
    pub fn unpack_into(&self, dest: &Path) -> Result<UnpackStats, Error> {
        let u = Unpacker {
            rpm: &self.rpm,
            package: self.package.clone(),
            opts: &self.opts,
        };
        let reader = rpm::PackageReader::parse(io::Cursor::new(self.bytes.clone()))
            .map_err(Error::rpm(&self.rpm))?;
        u.run(&self.metadata, reader, self.file_digests, dest)
    }
}

/// Checks the header digests (one at least) and the payload digests present; returns
/// whether a payload digest was present (and matched).
fn verify_package_digests(rpm: &Path, pkg: &Package) -> Result<bool, Error> {
    let report = pkg.check_digests().map_err(Error::rpm(rpm))?;
    if !report.has_header_digest() {
        return Err(Error::Digest {
            path: rpm.to_owned(),
            what: "the package has no header digest".into(),
        });
    }
    let checked = [
        ("header SHA-1", &report.header_sha1),
        ("header SHA-256", &report.header_sha256),
        ("header SHA3-256", &report.header_sha3_256),
        ("payload SHA-256", &report.payload_sha256),
        ("payload SHA-512", &report.payload_sha512),
        ("payload SHA3-256", &report.payload_sha3_256),
    ];
    for (what, status) in checked {
        if let rpm::DigestStatus::Mismatch { expected, actual } = status {
            return Err(Error::Digest {
                path: rpm.to_owned(),
                what: format!("{what} mismatch: header says {expected}, content has {actual}"),
            });
        }
    }
    Ok(report.payload_sha256.is_verified()
        || report.payload_sha512.is_verified()
        || report.payload_sha3_256.is_verified())
}

/// Checks a payload path and splits it into its components.
fn components(path: &str) -> Result<Vec<&str>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| "path is not absolute".to_owned())?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for c in rest.split('/') {
        match c {
            "" => return Err("path has an empty component".into()),
            "." | ".." => return Err(format!("path has a '{c}' component")),
            _ if c.as_bytes().contains(&0) => return Err("path has a NUL byte".into()),
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn cstr(s: &str) -> CString {
    // Components were checked for NUL bytes by `components`.
    CString::new(s).expect("checked component has no NUL")
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn open_dir_at(parent: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    let c = cstr(name);
    // SAFETY: `parent` is an open directory fd and `c` a valid C string.
    let fd = unsafe {
        libc::openat(
            parent.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn mkdir_at(parent: &OwnedFd, name: &str) -> io::Result<()> {
    let c = cstr(name);
    // SAFETY: valid fd and C string.
    if unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o755) } < 0 {
        return Err(last_err());
    }
    Ok(())
}

fn set_times(fd: &OwnedFd, name: Option<&str>, mtime: i64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    let rc = match name {
        // SAFETY: valid fd and a two-element timespec array.
        None => unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) },
        Some(n) => {
            let c = cstr(n);
            // SAFETY: valid fd, C string and timespec array.
            unsafe {
                libc::utimensat(
                    fd.as_raw_fd(),
                    c.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            }
        }
    };
    if rc < 0 {
        return Err(last_err());
    }
    Ok(())
}

fn fchmod(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } < 0 {
        return Err(last_err());
    }
    Ok(())
}

/// Files larger than this are streamed to disk rather than read whole into memory first.
pub const STREAM_ABOVE: u64 = 4 << 20;
/// The piece of a streamed file read and written at a time.
const STREAM_CHUNK: usize = 1 << 20;

/// Makes the temporary names of streamed files unique within the process.
static STREAM_SEQ: AtomicU64 = AtomicU64::new(0);

/// The content of a hard-link set, for its members without payload data: the bytes of a
/// small file, or the large file already written (copied from, never held in memory).
enum LinkContent {
    Bytes(Vec<u8>),
    File(fs::File),
}

/// A file digest computed piece by piece.
enum StreamDigest {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    Sha384(sha2::Sha384),
    Sha224(sha2::Sha224),
}

impl StreamDigest {
    fn new(algo: DigestAlgorithm) -> Option<StreamDigest> {
        Some(match algo {
            DigestAlgorithm::Sha2_256 => StreamDigest::Sha256(sha2::Sha256::new()),
            DigestAlgorithm::Sha2_512 => StreamDigest::Sha512(sha2::Sha512::new()),
            DigestAlgorithm::Sha2_384 => StreamDigest::Sha384(sha2::Sha384::new()),
            DigestAlgorithm::Sha2_224 => StreamDigest::Sha224(sha2::Sha224::new()),
            _ => return None,
        })
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            StreamDigest::Sha256(h) => h.update(bytes),
            StreamDigest::Sha512(h) => h.update(bytes),
            StreamDigest::Sha384(h) => h.update(bytes),
            StreamDigest::Sha224(h) => h.update(bytes),
        }
    }

    fn hex(self) -> String {
        match self {
            StreamDigest::Sha256(h) => hex(&h.finalize()),
            StreamDigest::Sha512(h) => hex(&h.finalize()),
            StreamDigest::Sha384(h) => hex(&h.finalize()),
            StreamDigest::Sha224(h) => hex(&h.finalize()),
        }
    }
}

fn unlink_at(parent: &OwnedFd, name: &str) {
    let c = cstr(name);
    // SAFETY: valid fd and C string. A failure leaves a temporary file in a directory
    // the caller discards on error anyway.
    unsafe {
        libc::unlinkat(parent.as_raw_fd(), c.as_ptr(), 0);
    }
}

struct Unpacker<'a> {
    rpm: &'a Path,
    package: String,
    opts: &'a UnpackOptions,
}

impl Unpacker<'_> {
    fn refuse(&self, path: &str, reason: impl Into<String>) -> Error {
        Error::UnsafePayload {
            package: self.package.clone(),
            rpm: self.rpm.to_owned(),
            path: path.to_owned(),
            reason: reason.into(),
        }
    }

    fn io(&self, path: &str, what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
        let path = path.to_owned();
        let what = what.to_owned();
        move |e| self.refuse(&path, format!("{what}: {e}"))
    }

    /// Opens the directory that will hold `comps`' last component, creating missing
    /// parents, never following a symlink.
    fn parent_fd(&self, root: &OwnedFd, path: &str, comps: &[&str]) -> Result<OwnedFd, Error> {
        let mut fd = root
            .try_clone()
            .map_err(Error::io("duplicate fd of", self.rpm))?;
        for c in &comps[..comps.len().saturating_sub(1)] {
            fd = match open_dir_at(&fd, c) {
                Ok(next) => next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match mkdir_at(&fd, c) {
                        // Another unpack into the same directory made it meanwhile; if it
                        // made a symlink instead, opening it below refuses it.
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(self.io(path, "create parent directory")(e)),
                    }
                    open_dir_at(&fd, c).map_err(self.io(path, "open parent directory"))?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    return Err(self.refuse(
                        path,
                        format!("parent component '{c}' is a symlink or not a directory"),
                    ));
                }
                Err(e) => return Err(self.io(path, "open parent directory")(e)),
            };
        }
        Ok(fd)
    }

    /// The header's file entries, and each one's index by path.
    fn entries<'p>(
        &self,
        meta: &'p rpm::PackageMetadata,
    ) -> Result<(Vec<rpm::FileEntry<'p>>, HashMap<PathBuf, usize>), Error> {
        let entries = match meta.get_file_entries() {
            Ok(e) => e,
            Err(rpm::Error::TagNotFound(_)) => Vec::new(),
            Err(e) => return Err(Error::rpm(self.rpm)(e)),
        };
        let index_of = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path(), i))
            .collect();
        Ok((entries, index_of))
    }

    /// Everything [`verify_payload`] promises that needs no file data, before anything
    /// is written. Returns the bytes of file data the package declares.
    fn verify(&self, meta: &rpm::PackageMetadata) -> Result<u64, Error> {
        let (entries, _) = self.entries(meta)?;
        let algo = meta.get_file_digest_algorithm().ok();
        // Refuse what can never be in a layer before reading any data.
        let mut declared: u64 = 0;
        for e in &entries {
            let p = e.path().to_string_lossy().into_owned();
            if e.flags().contains(FileFlags::GHOST) {
                continue;
            }
            components(&p).map_err(|r| self.refuse(&p, r))?;
            match e.file_type() {
                FileType::Regular | FileType::Dir | FileType::SymbolicLink => {}
                FileType::CharacterDevice | FileType::BlockDevice if self.opts.allow_devices => {}
                other => {
                    return Err(
                        self.refuse(&p, format!("{other:?} entries are not allowed in a layer"))
                    );
                }
            }
            if e.file_type() == FileType::Regular {
                declared = declared.saturating_add(e.size() as u64);
                // A digest keel cannot check refuses the package before any of it is
                // written (rather than at that file).
                if let Some(d) = e.digest().filter(|d| !d.as_hex().is_empty()) {
                    digest_hex(algo.unwrap_or(d.algorithm()), b"").ok_or_else(|| {
                        self.refuse(
                            &p,
                            format!(
                                "file digest algorithm {:?} cannot be verified by keel",
                                algo.unwrap_or(d.algorithm())
                            ),
                        )
                    })?;
                }
            }
        }
        if declared >= self.opts.max_bytes {
            return Err(self.refuse(
                "/",
                format!(
                    "the package declares {declared} bytes of files, at or over the limit of {}",
                    self.opts.max_bytes
                ),
            ));
        }
        Ok(declared)
    }

    /// Reads the data of one payload entry into `buf` (kept initialized between files,
    /// so it is zeroed only when it grows): never more than one byte past what the
    /// header declares, so a payload entry longer than its header says (a decompression
    /// bomb, say) is refused after `declared + 1` bytes. Returns the data's length.
    fn read_content(
        &self,
        path: &str,
        declared: u64,
        data: &mut impl io::Read,
        buf: &mut Vec<u8>,
    ) -> Result<usize, Error> {
        // `verify` capped the sum of declared sizes at `max_bytes`.
        let want = usize::try_from(declared.saturating_add(1))
            .map_err(|_| self.refuse(path, "file is too large for this machine"))?;
        if buf.len() < want {
            buf.resize(want, 0);
        }
        let mut n = 0;
        while n < want {
            match data.read(&mut buf[n..want]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.refuse(path, format!("reading the payload: {e}"))),
            }
        }
        self.check_size(path, declared, &buf[..n])?;
        Ok(n)
    }

    /// Writes what `reader` yields into `dest`; with `file_digests`, each regular file's
    /// digest is checked before it is written (its size always is).
    fn run(
        &self,
        meta: &rpm::PackageMetadata,
        mut reader: rpm::PackageReader,
        file_digests: bool,
        dest: &Path,
    ) -> Result<UnpackStats, Error> {
        let (entries, index_of) = self.entries(meta)?;
        let algo = meta.get_file_digest_algorithm().ok();

        // Hard-link sets: header indexes sharing (device, inode).
        let inodes = meta
            .header
            .get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEINODES)
            .unwrap_or_default();
        let devices = meta
            .header
            .get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEDEVICES)
            .unwrap_or_default();
        let key_of = |i: usize| -> Option<(u32, u32)> { Some((*devices.get(i)?, *inodes.get(i)?)) };
        let mut set_sizes: HashMap<(u32, u32), usize> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            if e.file_type() == FileType::Regular
                && !e.flags().contains(FileFlags::GHOST)
                && let Some(k) = key_of(i)
            {
                *set_sizes.entry(k).or_default() += 1;
            }
        }

        fs::create_dir_all(dest).map_err(Error::io("create directory", dest))?;
        let dest_c = CString::new(dest.as_os_str().as_bytes())
            .map_err(|_| Error::SandboxConfig(format!("path {} has a NUL byte", dest.display())))?;
        // SAFETY: valid C string.
        let raw = unsafe {
            libc::open(
                dest_c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(Error::io("open directory", dest)(last_err()));
        }
        // SAFETY: freshly opened fd.
        let root = unsafe { OwnedFd::from_raw_fd(raw) };

        let mut stats = UnpackStats::default();
        let mut dir_modes: BTreeMap<Vec<String>, u32> = BTreeMap::new();
        let mut link_content: HashMap<(u32, u32), LinkContent> = HashMap::new();
        let mut deferred: Vec<(String, u32, (u32, u32))> = Vec::new();
        let mut last_parent: Option<(String, OwnedFd)> = None;
        // One buffer for every file's data: decompressed, checked and written while it is
        // still in the CPU's cache.
        let mut buf: Vec<u8> = Vec::new();
        while let Some(mut f) = reader.next_file().map_err(Error::rpm(self.rpm))? {
            let m = &f.metadata.clone();
            if m.flags().contains(FileFlags::GHOST) {
                continue;
            }
            let path = m.path().to_string_lossy().into_owned();
            // A member of a hard-link set may carry no data; a set is checked below to
            // have one member that does. A large file is read while it is written, below.
            let streamed = m.file_type() == FileType::Regular
                && f.has_payload()
                && m.size() as u64 > STREAM_ABOVE;
            let read = if streamed {
                Ok(None)
            } else if m.file_type() == FileType::Regular && f.has_payload() {
                self.read_content(&path, m.size() as u64, &mut f, &mut buf)
                    .map(Some)
            } else {
                // Another entry's data (a symlink's target) is not used: read past it, but
                // no further than its header's size allows, so that a payload entry
                // claiming gigabytes is refused rather than decompressed to nowhere.
                let limit = (m.size() as u64).max(4096) + 1;
                match io::copy(&mut io::Read::take(&mut f, limit), &mut io::sink()) {
                    Ok(n) if n < limit => Ok(None),
                    Ok(_) => {
                        Err(self.refuse(&path, "payload entry is longer than its header declares"))
                    }
                    Err(e) => Err(self.refuse(&path, format!("reading the payload: {e}"))),
                }
            };
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    // Dropping the entry would read (decompress) the rest of it.
                    std::mem::forget(f);
                    return Err(e);
                }
            };
            // Surface an error of the decompressor here rather than at the next entry.
            if !streamed {
                f.finish()
                    .map_err(|e| self.refuse(&path, format!("reading the payload: {e}")))?;
            }
            let content = n.map(|n| &buf[..n]);
            if let Some(content) = content
                && file_digests
            {
                self.check_content(&path, m.size() as u64, content, m.digest(), algo)?;
            }
            let comps = components(&path).map_err(|r| self.refuse(&path, r))?;
            let mode = u32::from(m.permissions()) & self.mode_mask();
            if comps.is_empty() {
                // "/" itself: nothing to create.
                continue;
            }
            let name = *comps.last().expect("non-empty");
            // Entries of one directory come together: keep its fd rather than walk from
            // the root again. Sound because an fd names the directory itself, not a path,
            // and nothing is ever removed or renamed while unpacking.
            let dir = &path[..path.len() - name.len()];
            if last_parent.as_ref().is_none_or(|(d, _)| d != dir) {
                last_parent = Some((dir.to_owned(), self.parent_fd(&root, &path, &comps)?));
            }
            let parent = &last_parent.as_ref().expect("set just above").1;
            match m.file_type() {
                FileType::Dir => {
                    match mkdir_at(parent, name) {
                        Ok(()) => stats.dirs += 1,
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            // Made earlier as a parent; it must be a real directory.
                            open_dir_at(parent, name)
                                .map_err(|_| self.refuse(&path, "exists and is not a directory"))?;
                        }
                        Err(e) => return Err(self.io(&path, "create directory")(e)),
                    }
                    dir_modes.insert(comps.iter().map(|s| (*s).to_owned()).collect(), mode);
                }
                FileType::SymbolicLink => {
                    let target = m.linkto().unwrap_or("");
                    if target.is_empty() || target.as_bytes().contains(&0) {
                        return Err(self.refuse(&path, "symlink has an empty or invalid target"));
                    }
                    let t = cstr(target);
                    let n = cstr(name);
                    // SAFETY: valid C strings and fd.
                    if unsafe { libc::symlinkat(t.as_ptr(), parent.as_raw_fd(), n.as_ptr()) } < 0 {
                        return Err(self.io(&path, "create symlink")(last_err()));
                    }
                    set_times(parent, Some(name), self.opts.mtime)
                        .map_err(self.io(&path, "set mtime"))?;
                    stats.symlinks += 1;
                }
                FileType::Regular => {
                    let idx = index_of.get(&m.path()).copied();
                    let set = idx
                        .and_then(key_of)
                        .filter(|k| set_sizes.get(k).copied().unwrap_or(0) > 1);
                    if streamed {
                        let check = if file_digests {
                            m.digest()
                                .filter(|d| !d.as_hex().is_empty())
                                .map(|d| (algo.unwrap_or(d.algorithm()), d.as_hex().to_owned()))
                        } else {
                            None
                        };
                        let declared = m.size() as u64;
                        let written = self.stream_file(
                            parent, name, &path, mode, declared, &mut f, check, &mut buf,
                        );
                        let file = match written {
                            Ok(file) => file,
                            Err(e) => {
                                // Dropping the entry would decompress the rest of it.
                                std::mem::forget(f);
                                return Err(e);
                            }
                        };
                        f.finish()
                            .map_err(|e| self.refuse(&path, format!("reading the payload: {e}")))?;
                        if let Some(k) = set {
                            link_content.insert(k, LinkContent::File(file));
                        }
                        stats.files += 1;
                        stats.bytes += declared;
                        continue;
                    }
                    let Some(content) = content else {
                        match set {
                            Some(k) => {
                                deferred.push((path.clone(), mode, k));
                                continue;
                            }
                            None => {
                                return Err(self.refuse(&path, "regular file has no payload data"));
                            }
                        }
                    };
                    if let Some(k) = set {
                        link_content.insert(k, LinkContent::Bytes(content.to_vec()));
                    }
                    self.write_file(parent, name, &path, mode, content)?;
                    stats.files += 1;
                    stats.bytes += content.len() as u64;
                }
                FileType::CharacterDevice | FileType::BlockDevice if self.opts.allow_devices => {
                    let kind = if m.file_type() == FileType::CharacterDevice {
                        libc::S_IFCHR
                    } else {
                        libc::S_IFBLK
                    };
                    let dev = libc::makedev(m.rdev_major().into(), m.rdev_minor().into());
                    let n = cstr(name);
                    // SAFETY: valid fd and C string.
                    let rc =
                        unsafe { libc::mknodat(parent.as_raw_fd(), n.as_ptr(), kind | mode, dev) };
                    if rc < 0 {
                        return Err(self.io(&path, "create device node")(last_err()));
                    }
                    set_times(parent, Some(name), self.opts.mtime)
                        .map_err(self.io(&path, "set mtime"))?;
                }
                other => {
                    return Err(self.refuse(
                        &path,
                        format!("{other:?} entries are not allowed in a layer"),
                    ));
                }
            }
        }
        for (path, mode, key) in deferred {
            let content = link_content.get(&key).ok_or_else(|| {
                self.refuse(&path, "hard link set has no member with payload data")
            })?;
            let comps = components(&path).map_err(|r| self.refuse(&path, r))?;
            let parent = self.parent_fd(&root, &path, &comps)?;
            let name = comps.last().expect("non-empty");
            stats.bytes += match content {
                LinkContent::Bytes(bytes) => {
                    self.write_file(&parent, name, &path, mode, bytes)?;
                    bytes.len() as u64
                }
                LinkContent::File(file) => self.copy_file(&parent, name, &path, mode, file)?,
            };
            stats.files += 1;
        }
        // Directory modes and times last, deepest first: a read-only directory must not stop
        // its own content from being written, and writing content changes a dir's mtime.
        for (comps, mode) in dir_modes.iter().rev() {
            let path = format!("/{}", comps.join("/"));
            let refs: Vec<&str> = comps.iter().map(String::as_str).collect();
            let parent = self.parent_fd(&root, &path, &refs)?;
            let fd = open_dir_at(&parent, refs.last().expect("non-empty"))
                .map_err(self.io(&path, "open directory"))?;
            fchmod(&fd, *mode).map_err(self.io(&path, "set mode"))?;
            if !self.opts.stamp_all_dirs {
                set_times(&fd, None, self.opts.mtime).map_err(self.io(&path, "set mtime"))?;
            }
        }
        if self.opts.stamp_all_dirs {
            self.set_dir_times(&root, dest)?;
        }
        Ok(stats)
    }

    fn mode_mask(&self) -> u32 {
        if self.opts.allow_setuid {
            0o7777
        } else {
            0o1777
        }
    }

    fn check_size(&self, path: &str, declared: u64, content: &[u8]) -> Result<(), Error> {
        if content.len() as u64 != declared {
            return Err(self.refuse(
                path,
                format!(
                    "payload has {} bytes of data, the header declares {declared}",
                    content.len()
                ),
            ));
        }
        Ok(())
    }

    fn check_content(
        &self,
        path: &str,
        declared: u64,
        content: &[u8],
        digest: Option<&rpm::FileDigest<'_>>,
        algo: Option<DigestAlgorithm>,
    ) -> Result<(), Error> {
        self.check_size(path, declared, content)?;
        let Some(d) = digest else {
            return Ok(());
        };
        if d.as_hex().is_empty() {
            return Ok(());
        }
        let algo = algo.unwrap_or(d.algorithm());
        let actual = digest_hex(algo, content).ok_or_else(|| {
            self.refuse(
                path,
                format!("file digest algorithm {algo:?} cannot be verified by keel"),
            )
        })?;
        if !actual.eq_ignore_ascii_case(d.as_hex()) {
            return Err(self.refuse(
                path,
                format!(
                    "content digest {actual} does not match the header's {}",
                    d.as_hex()
                ),
            ));
        }
        Ok(())
    }

    fn write_file(
        &self,
        parent: &OwnedFd,
        name: &str,
        path: &str,
        mode: u32,
        content: &[u8],
    ) -> Result<(), Error> {
        let n = cstr(name);
        // SAFETY: valid fd and C string.
        let raw = unsafe {
            libc::openat(
                parent.as_raw_fd(),
                n.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if raw < 0 {
            return Err(self.io(path, "create file")(last_err()));
        }
        // SAFETY: freshly opened fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut file = fs::File::from(fd);
        file.write_all(content)
            .map_err(self.io(path, "write file"))?;
        let fd = OwnedFd::from(file);
        fchmod(&fd, mode).map_err(self.io(path, "set mode"))?;
        set_times(&fd, None, self.opts.mtime).map_err(self.io(path, "set mtime"))?;
        Ok(())
    }

    /// Writes a large file from `data` in pieces: under a temporary name in `parent`,
    /// reading at most one byte past `declared`, checking the size and (with `check`) the
    /// digest, then links it to `name` (failing if `name` exists, like `O_EXCL`) and
    /// removes the temporary name. A file that fails a check never appears under its
    /// name. Returns the file, open for reading (a hard-link set's other members are
    /// copied from it).
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, all of it per-file state"
    )]
    fn stream_file(
        &self,
        parent: &OwnedFd,
        name: &str,
        path: &str,
        mode: u32,
        declared: u64,
        data: &mut impl io::Read,
        check: Option<(DigestAlgorithm, String)>,
        buf: &mut Vec<u8>,
    ) -> Result<fs::File, Error> {
        let tmp = format!(
            ".keel-unpack-{}-{}",
            std::process::id(),
            STREAM_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut file = self.create_new(parent, &tmp, path, libc::O_RDWR)?;
        let result = self.fill_and_link(
            parent, &tmp, name, path, mode, declared, data, check, buf, &mut file,
        );
        unlink_at(parent, &tmp);
        result.map(|()| file)
    }

    #[expect(clippy::too_many_arguments, reason = "the body of stream_file")]
    fn fill_and_link(
        &self,
        parent: &OwnedFd,
        tmp: &str,
        name: &str,
        path: &str,
        mode: u32,
        declared: u64,
        data: &mut impl io::Read,
        check: Option<(DigestAlgorithm, String)>,
        buf: &mut Vec<u8>,
        file: &mut fs::File,
    ) -> Result<(), Error> {
        let mut digest = match &check {
            Some((algo, _)) => Some(StreamDigest::new(*algo).ok_or_else(|| {
                self.refuse(
                    path,
                    format!("file digest algorithm {algo:?} cannot be verified by keel"),
                )
            })?),
            None => None,
        };
        if buf.len() < STREAM_CHUNK {
            buf.resize(STREAM_CHUNK, 0);
        }
        let limit = declared.saturating_add(1);
        let mut total: u64 = 0;
        while total < limit {
            let want = (limit - total).min(STREAM_CHUNK as u64) as usize;
            let k = match data.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.refuse(path, format!("reading the payload: {e}"))),
            };
            total += k as u64;
            if total > declared {
                break;
            }
            if let Some(d) = digest.as_mut() {
                d.update(&buf[..k]);
            }
            file.write_all(&buf[..k])
                .map_err(self.io(path, "write file"))?;
        }
        if total != declared {
            return Err(self.refuse(
                path,
                format!("payload has {total} bytes of data, the header declares {declared}"),
            ));
        }
        if let (Some(d), Some((_, expected))) = (digest, &check) {
            let actual = d.hex();
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(self.refuse(
                    path,
                    format!("content digest {actual} does not match the header's {expected}"),
                ));
            }
        }
        let fd = OwnedFd::from(file.try_clone().map_err(self.io(path, "duplicate fd of"))?);
        fchmod(&fd, mode).map_err(self.io(path, "set mode"))?;
        set_times(&fd, None, self.opts.mtime).map_err(self.io(path, "set mtime"))?;
        let (t, n) = (cstr(tmp), cstr(name));
        // SAFETY: valid fds and C strings; flags 0: the temporary name is not followed.
        let rc = unsafe {
            libc::linkat(
                parent.as_raw_fd(),
                t.as_ptr(),
                parent.as_raw_fd(),
                n.as_ptr(),
                0,
            )
        };
        if rc < 0 {
            return Err(self.io(path, "create file")(last_err()));
        }
        Ok(())
    }

    /// Creates `name` in `parent` (mode 0600, never through a symlink, never an existing
    /// file), opened with `access` (`O_RDWR` or `O_WRONLY`); `path` names it in errors.
    fn create_new(
        &self,
        parent: &OwnedFd,
        name: &str,
        path: &str,
        access: libc::c_int,
    ) -> Result<fs::File, Error> {
        let n = cstr(name);
        // SAFETY: valid fd and C string.
        let raw = unsafe {
            libc::openat(
                parent.as_raw_fd(),
                n.as_ptr(),
                access | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if raw < 0 {
            return Err(self.io(path, "create file")(last_err()));
        }
        // SAFETY: freshly opened fd, owned by nothing else.
        Ok(fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// Writes `name` as a copy of the file `from` (a hard-link set member of a large
    /// file), returning the bytes copied.
    fn copy_file(
        &self,
        parent: &OwnedFd,
        name: &str,
        path: &str,
        mode: u32,
        from: &fs::File,
    ) -> Result<u64, Error> {
        let mut to = self.create_new(parent, name, path, libc::O_WRONLY)?;
        let mut src = from
            .try_clone()
            .map_err(self.io(path, "reopen hard link source"))?;
        io::Seek::seek(&mut src, io::SeekFrom::Start(0))
            .map_err(self.io(path, "read hard link source"))?;
        let copied = io::copy(&mut src, &mut to).map_err(self.io(path, "write file"))?;
        let fd = OwnedFd::from(to);
        fchmod(&fd, mode).map_err(self.io(path, "set mode"))?;
        set_times(&fd, None, self.opts.mtime).map_err(self.io(path, "set mtime"))?;
        Ok(copied)
    }

    fn set_dir_times(&self, root: &OwnedFd, dest: &Path) -> Result<(), Error> {
        for entry in walkdir::WalkDir::new(dest)
            .contents_first(true)
            .follow_links(false)
        {
            let entry = entry.map_err(|e| Error::Io {
                action: "walk",
                path: dest.to_owned(),
                source: e.into(),
            })?;
            if entry.file_type().is_dir() {
                let c = CString::new(entry.path().as_os_str().as_bytes())
                    .map_err(|_| Error::SandboxConfig("NUL in path".into()))?;
                let ts = libc::timespec {
                    tv_sec: self.opts.mtime as libc::time_t,
                    tv_nsec: 0,
                };
                let times = [ts, ts];
                // SAFETY: valid C string, timespec array; AT_FDCWD-relative absolute path.
                let rc = unsafe {
                    libc::utimensat(
                        root.as_raw_fd(),
                        c.as_ptr(),
                        times.as_ptr(),
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                };
                if rc < 0 {
                    return Err(Error::io("set mtime of", entry.path())(last_err()));
                }
            }
        }
        Ok(())
    }
}

/// The hex digest of `content` with `algo`, if keel can compute it.
fn digest_hex(algo: DigestAlgorithm, content: &[u8]) -> Option<String> {
    Some(match algo {
        DigestAlgorithm::Sha2_256 => hex(&sha2::Sha256::digest(content)),
        DigestAlgorithm::Sha2_512 => hex(&sha2::Sha512::digest(content)),
        DigestAlgorithm::Sha2_384 => hex(&sha2::Sha384::digest(content)),
        DigestAlgorithm::Sha2_224 => hex(&sha2::Sha224::digest(content)),
        _ => return None,
    })
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Unpacked layers kept under one directory, one per RPM, named by the BLAKE3 of the RPM's
/// bytes (its [`keel_store::BlobDigest`]): `<root>/<hex>/`. Each RPM is unpacked at most
/// once: into a temporary directory beside the final one, its files flushed to disk, then
/// a completion marker `<root>/<hex>.complete` written and made durable, and only then the
/// directory renamed into place. A layer is used only when both exist: a directory without
/// its marker (a crash lost part of it, or an older keel made it) is made again, since its
/// name alone says nothing about whether its files are all there.
///
/// Also keeps *merged* layers (`<root>/merged/<hex>/`), hard-link farms of an ordered list
/// of layers that the sandbox uses when a build root has too many layers for one overlay
/// mount.
#[derive(Debug, Clone)]
pub struct LayerCache {
    root: PathBuf,
    opts: UnpackOptions,
}

/// The BLAKE3 derive-key context naming a merged layer by its ordered inputs.
const MERGED_CONTEXT: &str = "keel-toolchain 2026-11-27 merged layer v1";

impl LayerCache {
    /// A cache under `root` (created when needed) with default [`UnpackOptions`].
    pub fn new(root: &Path) -> LayerCache {
        LayerCache {
            root: root.to_owned(),
            opts: UnpackOptions::default(),
        }
    }

    /// The same cache with other unpack options.
    pub fn with_options(mut self, opts: UnpackOptions) -> LayerCache {
        self.opts = opts;
        self
    }

    /// The directory the cache lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The layer of `rpm`: hashes the file and unpacks it unless already there.
    pub fn layer(&self, rpm: &Path) -> Result<(keel_store::BlobDigest, PathBuf), Error> {
        let digest = keel_store::hash_file(rpm).map_err(Error::io("read", rpm))?;
        let path = self.layer_for_digest(rpm, &digest)?;
        Ok((digest, path))
    }

    /// The layer of the RPM whose BLAKE3 is `digest`, if it was made completely before.
    pub fn complete_layer(&self, digest: &keel_store::BlobDigest) -> Option<PathBuf> {
        let dir = self.root.join(digest.to_hex());
        is_complete(&dir).then_some(dir)
    }

    /// The layer of `rpm` whose BLAKE3 is already known (as the store gave it).
    pub fn layer_for_digest(
        &self,
        rpm: &Path,
        digest: &keel_store::BlobDigest,
    ) -> Result<PathBuf, Error> {
        let final_dir = self.root.join(digest.to_hex());
        if is_complete(&final_dir) {
            return Ok(final_dir);
        }
        discard_incomplete(&final_dir);
        fs::create_dir_all(&self.root).map_err(Error::io("create directory", &self.root))?;
        let tmp = tempfile::Builder::new()
            .prefix(".unpack-")
            .tempdir_in(&self.root)
            .map_err(Error::io("create temporary directory in", &self.root))?;
        let staging = tmp.path().join("layer");
        unpack_payload_with(rpm, &staging, &self.opts)?;
        publish(&staging, &final_dir)?;
        Ok(final_dir)
    }

    /// One directory holding `layers` stacked in order (later ones win), made of hard
    /// links to their files, kept under `<root>/merged/` and keyed by the ordered list of
    /// layer paths. Made once; later calls return it directly.
    pub fn merged(&self, layers: &[PathBuf]) -> Result<PathBuf, Error> {
        let mut h = blake3::Hasher::new_derive_key(MERGED_CONTEXT);
        for l in layers {
            let b = l.as_os_str().as_bytes();
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
        let dir = self.root.join("merged");
        let final_dir = dir.join(h.finalize().to_hex().as_str());
        if is_complete(&final_dir) {
            return Ok(final_dir);
        }
        discard_incomplete(&final_dir);
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(".merge-")
            .tempdir_in(&dir)
            .map_err(Error::io("create temporary directory in", &dir))?;
        let staging = tmp.path().join("layer");
        merge_layers(layers, &staging)?;
        publish(&staging, &final_dir)?;
        Ok(final_dir)
    }
}

/// The completion marker of the layer directory `dir` (see [`LayerCache`]).
fn completion_marker(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_owned();
    name.push(".complete");
    dir.with_file_name(name)
}

/// Whether the layer directory `dir` was made whole: it and its marker exist.
fn is_complete(dir: &Path) -> bool {
    dir.is_dir() && completion_marker(dir).is_file()
}

/// Moves a layer directory without its marker out of the way (renamed first, so that the
/// name is free at once) and removes it.
fn discard_incomplete(dir: &Path) {
    if fs::symlink_metadata(dir).is_err() {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let aside = dir.with_file_name(format!(".incomplete-{}-{nanos}", std::process::id()));
    if fs::rename(dir, &aside).is_ok() {
        let _ = fs::remove_dir_all(&aside);
    }
}

/// Flushes the filesystem holding `path` to disk.
fn sync_filesystem(path: &Path) -> Result<(), Error> {
    let dir = fs::File::open(path).map_err(Error::io("open", path))?;
    // SAFETY: `dir` is an open descriptor for the whole call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } < 0 {
        return Err(Error::io("flush to disk", path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes a finished staging directory the layer `final_dir`: its files flushed, then its
/// completion marker written and made durable, then the directory renamed into place (so
/// a layer directory that has its marker, even after a crash, has all its files). Losing
/// a race to another process that made the same layer is fine.
fn publish(staging: &Path, final_dir: &Path) -> Result<(), Error> {
    sync_filesystem(staging)?;
    let marker = completion_marker(final_dir);
    fs::File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("write", &marker))?;
    if let Some(parent) = final_dir.parent() {
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(Error::io("flush", parent))?;
    }
    match fs::rename(staging, final_dir) {
        Ok(()) => Ok(()),
        Err(_) if final_dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io("rename layer into", final_dir)(e)),
    }
}

/// Builds in `dest` a hard-link farm of `layers`, later layers replacing earlier ones'
/// entries at the same path. Files are hard-linked (copied when on another filesystem);
/// symlinks are recreated; directories are real.
pub fn merge_layers(layers: &[PathBuf], dest: &Path) -> Result<(), Error> {
    fs::create_dir_all(dest).map_err(Error::io("create directory", dest))?;
    for layer in layers {
        for entry in walkdir::WalkDir::new(layer)
            .min_depth(1)
            .follow_links(false)
        {
            let entry = entry.map_err(|e| Error::Io {
                action: "walk layer",
                path: layer.clone(),
                source: e.into(),
            })?;
            let rel = entry
                .path()
                .strip_prefix(layer)
                .expect("walkdir stays under its root");
            let target = dest.join(rel);
            let existing = fs::symlink_metadata(&target).ok();
            let ft = entry.file_type();
            if ft.is_dir() {
                match existing {
                    Some(m) if m.is_dir() => {}
                    Some(_) => {
                        fs::remove_file(&target).map_err(Error::io("remove", &target))?;
                        fs::create_dir(&target).map_err(Error::io("create directory", &target))?;
                    }
                    None => {
                        fs::create_dir(&target).map_err(Error::io("create directory", &target))?
                    }
                }
                let mode = entry.metadata().map_err(|e| Error::Io {
                    action: "stat",
                    path: entry.path().to_owned(),
                    source: e.into(),
                })?;
                fs::set_permissions(&target, mode.permissions())
                    .map_err(Error::io("set mode of", &target))?;
                continue;
            }
            match existing {
                Some(m) if m.is_dir() => {
                    fs::remove_dir_all(&target).map_err(Error::io("remove", &target))?
                }
                Some(_) => fs::remove_file(&target).map_err(Error::io("remove", &target))?,
                None => {}
            }
            link_or_copy(entry.path(), ft, &target)?;
        }
    }
    Ok(())
}

/// Places the file or symlink `from` (of type `ft`) at `target` in a merged root: a
/// symlink is recreated, a file hard-linked (copied across filesystems).
fn link_or_copy(from: &Path, ft: fs::FileType, target: &Path) -> Result<(), Error> {
    if ft.is_symlink() {
        let to = fs::read_link(from).map_err(Error::io("read symlink", from))?;
        std::os::unix::fs::symlink(&to, target).map_err(Error::io("create symlink", target))?;
    } else if fs::hard_link(from, target).is_err() {
        fs::copy(from, target).map_err(Error::io("copy into", target))?;
    }
    Ok(())
}

/// One package's layer, for [`merge_packages`].
#[derive(Debug, Clone)]
pub struct PackageLayer {
    /// The package's name.
    pub package: String,
    /// The package file (for messages).
    pub rpm: PathBuf,
    /// Its unpacked layer (from [`LayerCache`]).
    pub layer: PathBuf,
}

/// What an entry of a layer is, in messages.
fn kind(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symlink"
    } else if ft.is_file() {
        "a file"
    } else {
        "a special file"
    }
}

/// Builds in `dest` one root holding every package's layer (a hard-link farm, as
/// [`merge_layers`] makes), refusing what unpacking the packages into one directory
/// refuses: a path that two packages both have, unless both have a directory there. A
/// later package's symlink (or file) where an earlier one has a directory would replace
/// that directory and drop its files; the same file in two packages would keep one of
/// them. The error names both packages and the path.
///
/// Directories two packages share take the later one's mode, as they do in an image
/// root.
pub fn merge_packages(packages: &[PackageLayer], dest: &Path) -> Result<(), Error> {
    fs::create_dir_all(dest).map_err(Error::io("create directory", dest))?;
    // Each path made so far, and which package made it first.
    let mut owner: HashMap<PathBuf, usize> = HashMap::new();
    for (i, p) in packages.iter().enumerate() {
        // Sorted, so that which conflict is reported first does not depend on the order
        // the filesystem lists entries in.
        for entry in walkdir::WalkDir::new(&p.layer)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| Error::Io {
                action: "walk layer",
                path: p.layer.clone(),
                source: e.into(),
            })?;
            let rel = entry
                .path()
                .strip_prefix(&p.layer)
                .expect("walkdir stays under its root");
            let target = dest.join(rel);
            let ft = entry.file_type();
            if let Some(&first) = owner.get(rel) {
                // A conflict at a directory's path is reported there, so no entry is
                // ever made beneath another package's symlink or file.
                let existing = fs::symlink_metadata(&target)
                    .map_err(Error::io("stat", &target))?
                    .file_type();
                if ft.is_dir() && existing.is_dir() {
                    let mode = entry.metadata().map_err(|e| Error::Io {
                        action: "stat",
                        path: entry.path().to_owned(),
                        source: e.into(),
                    })?;
                    fs::set_permissions(&target, mode.permissions())
                        .map_err(Error::io("set mode of", &target))?;
                    continue;
                }
                let earlier = &packages[first];
                let consequence = if existing.is_dir() {
                    ", which would replace that directory and drop its files"
                } else {
                    ""
                };
                return Err(Error::UnsafePayload {
                    package: p.package.clone(),
                    rpm: p.rpm.clone(),
                    path: format!("/{}", rel.display()),
                    reason: format!(
                        "{} here conflicts with {} from package {} ({}){consequence}; two packages of a toolchain may share directories only",
                        kind(ft),
                        kind(existing),
                        earlier.package,
                        earlier.rpm.display()
                    ),
                });
            }
            owner.insert(rel.to_owned(), i);
            if ft.is_dir() {
                fs::create_dir(&target).map_err(Error::io("create directory", &target))?;
                let mode = entry.metadata().map_err(|e| Error::Io {
                    action: "stat",
                    path: entry.path().to_owned(),
                    source: e.into(),
                })?;
                fs::set_permissions(&target, mode.permissions())
                    .map_err(Error::io("set mode of", &target))?;
            } else {
                link_or_copy(entry.path(), ft, &target)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{data_spec, rpmbuild_host};
    use rpm::{FileOptions, PackageBuilder};
    use std::os::unix::fs::MetadataExt;

    /// Writes a package made with the `rpm` crate's builder, letting `f` add entries.
    fn crafted(dir: &Path, f: impl FnOnce(&mut PackageBuilder)) -> PathBuf {
        let mut b = PackageBuilder::new("hostile", "1.0", "MIT", "noarch", "crafted");
        f(&mut b);
        let pkg = b.build().unwrap();
        let path = dir.join("hostile.rpm");
        pkg.write_file(&path).unwrap();
        path
    }

    fn unpack_err(rpm: &Path, dest: &Path) -> String {
        unpack_payload(rpm, dest).unwrap_err().to_string()
    }

    #[test]
    fn unpacks_a_real_rpmbuild_package() {
        let dir = tempfile::tempdir().unwrap();
        let rpms = rpmbuild_host(dir.path(), &data_spec("hello", "0755", ""), &[], &[]);
        let dest = dir.path().join("layer");
        let stats = unpack_payload(&rpms[0], &dest).unwrap();
        assert_eq!((stats.files, stats.symlinks, stats.bytes), (1, 1, 5));
        let data = dest.join("usr/share/sem/data");
        assert_eq!(fs::read_to_string(&data).unwrap(), "hello");
        let m = fs::metadata(&data).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o755);
        assert_eq!(m.mtime(), 0);
        assert_eq!(
            fs::read_link(dest.join("usr/bin/sem-link")).unwrap(),
            Path::new("../share/sem/data")
        );
        assert_eq!(fs::metadata(dest.join("usr/share/sem")).unwrap().mtime(), 0);
    }

    #[test]
    fn refuses_dot_dot_components() {
        let dir = tempfile::tempdir().unwrap();
        let rpm = crafted(dir.path(), |b| {
            b.with_file_contents(b"x".to_vec(), FileOptions::new("/usr/../../escaped"))
                .unwrap();
        });
        let dest = dir.path().join("a/layer");
        let err = unpack_err(&rpm, &dest);
        assert!(err.contains("hostile") && err.contains("'..'"), "{err}");
        assert!(!dir.path().join("escaped").exists() && !dir.path().join("a/escaped").exists());
    }

    #[test]
    fn refuses_device_nodes_naming_package_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let rpm = crafted(dir.path(), |b| {
            b.with_special_file(FileOptions::character_device("/dev/kmem-ish", 1, 2))
                .unwrap();
        });
        let err = unpack_err(&rpm, &dir.path().join("layer"));
        assert!(
            err.contains("hostile") && err.contains("/dev/kmem-ish"),
            "{err}"
        );
        assert!(!dir.path().join("layer/dev/kmem-ish").exists());
    }

    #[test]
    fn never_follows_a_symlink_out_of_the_layer() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        // A symlink to a directory outside, then a file "under" it: rpm lets a payload say
        // this, and a naive unpacker writes to outside/pwned.
        let rpm = crafted(dir.path(), |b| {
            b.with_symlink(FileOptions::symlink("/usr/lib", outside.to_str().unwrap()))
                .unwrap();
            b.with_file_contents(b"x".to_vec(), FileOptions::new("/usr/lib/pwned"))
                .unwrap();
        });
        let dest = dir.path().join("layer");
        let err = unpack_err(&rpm, &dest);
        assert!(err.contains("/usr/lib"), "{err}");
        assert!(!outside.join("pwned").exists(), "wrote through the symlink");
    }

    #[test]
    fn keeps_absolute_symlinks_as_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let rpm = crafted(dir.path(), |b| {
            b.with_symlink(FileOptions::symlink("/usr/bin/sh-link", "/bin/bash"))
                .unwrap();
        });
        let dest = dir.path().join("layer");
        unpack_payload(&rpm, &dest).unwrap();
        assert_eq!(
            fs::read_link(dest.join("usr/bin/sh-link")).unwrap(),
            Path::new("/bin/bash")
        );
    }

    #[test]
    fn strips_setuid_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let rpm = crafted(dir.path(), |b| {
            b.with_file_contents(
                b"#!/bin/sh\n".to_vec(),
                FileOptions::new("/usr/bin/su-ish").permissions(0o4755),
            )
            .unwrap();
        });
        let dest = dir.path().join("layer");
        unpack_payload(&rpm, &dest).unwrap();
        assert_eq!(
            fs::metadata(dest.join("usr/bin/su-ish")).unwrap().mode() & 0o7777,
            0o755
        );
        let dest2 = dir.path().join("layer2");
        let opts = UnpackOptions {
            allow_setuid: true,
            ..UnpackOptions::default()
        };
        unpack_payload_with(&rpm, &dest2, &opts).unwrap();
        assert_eq!(
            fs::metadata(dest2.join("usr/bin/su-ish")).unwrap().mode() & 0o7777,
            0o4755
        );
    }

    #[test]
    fn caps_the_declared_size() {
        let dir = tempfile::tempdir().unwrap();
        let rpm = crafted(dir.path(), |b| {
            b.with_file_contents(vec![0u8; 4096], FileOptions::new("/usr/share/big"))
                .unwrap();
        });
        let opts = UnpackOptions {
            max_bytes: 1000,
            ..UnpackOptions::default()
        };
        let err = unpack_payload_with(&rpm, &dir.path().join("layer"), &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("4096") && err.contains("1000"), "{err}");
        assert!(!dir.path().join("layer/usr/share/big").exists());
    }

    #[test]
    fn refuses_a_tampered_payload() {
        let dir = tempfile::tempdir().unwrap();
        let rpm = crafted(dir.path(), |b| {
            b.with_file_contents(vec![7u8; 10_000], FileOptions::new("/usr/share/data"))
                .unwrap();
        });
        let mut bytes = fs::read(&rpm).unwrap();
        let n = bytes.len();
        bytes[n - 20] ^= 0xff;
        fs::write(&rpm, &bytes).unwrap();
        let err = unpack_err(&rpm, &dir.path().join("layer"));
        assert!(err.contains("hostile.rpm"), "{err}");
        assert!(!dir.path().join("layer/usr/share/data").exists());
    }

    #[test]
    fn writes_hard_link_sets_as_copies() {
        let dir = tempfile::tempdir().unwrap();
        let rpm = crafted(dir.path(), |b| {
            b.with_file_contents(
                b"same".to_vec(),
                FileOptions::new("/usr/bin/a").hardlink("set"),
            )
            .unwrap();
            b.with_file_contents(
                b"same".to_vec(),
                FileOptions::new("/usr/bin/b").hardlink("set"),
            )
            .unwrap();
        });
        let dest = dir.path().join("layer");
        unpack_payload(&rpm, &dest).unwrap();
        for n in ["a", "b"] {
            let p = dest.join("usr/bin").join(n);
            assert_eq!(fs::read(&p).unwrap(), b"same");
            assert_eq!(fs::metadata(&p).unwrap().nlink(), 1);
        }
    }

    /// Builds a package of `files`, rewrites its main header with `edit` (called with the
    /// basenames, a tag and its data; `None` drops the tag), makes its header digests
    /// again (the payload and its digest are untouched) and writes it.
    fn rewritten(
        dir: &Path,
        files: &[(&str, &[u8])],
        mut edit: impl FnMut(&[String], u32, rpm::IndexData) -> Option<rpm::IndexData>,
    ) -> PathBuf {
        let mut b = PackageBuilder::new("liar", "1.0", "MIT", "noarch", "test");
        for (path, data) in files {
            b.with_file_contents(data.to_vec(), FileOptions::new(*path))
                .unwrap();
        }
        let mut pkg = b.build().unwrap();
        let names: Vec<String> = pkg
            .metadata
            .header
            .get_entry_data_as_string_array(IndexTag::RPMTAG_BASENAMES)
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let entries: Vec<_> = pkg
            .metadata
            .header
            .get_all_entries()
            .unwrap()
            .into_iter()
            .filter(|(tag, _)| *tag != IndexTag::RPMTAG_HEADERIMMUTABLE as u32)
            .filter_map(|(tag, data)| {
                edit(&names, tag, data).map(|d| rpm::HeaderEntry::new(tag, d))
            })
            .collect();
        pkg.metadata.header = rpm::Header::from_entries(entries, IndexTag::RPMTAG_HEADERIMMUTABLE);
        pkg.clear_signatures().unwrap();
        let rpm = dir.join("liar.rpm");
        pkg.write_file(&rpm).unwrap();
        let report = Package::open(&rpm).unwrap().check_digests().unwrap();
        assert!(report.is_ok(), "the package's own digests hold: {report:?}");
        rpm
    }

    #[test]
    fn without_a_payload_digest_a_file_whose_digest_lies_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        // An old package: no payload digest. Its header claims other bytes for
        // /usr/share/b, so only the file digest can tell.
        let payload_digests = [
            IndexTag::RPMTAG_PAYLOADSHA256,
            IndexTag::RPMTAG_PAYLOADSHA256ALT,
            IndexTag::RPMTAG_PAYLOAD_SHA512,
            IndexTag::RPMTAG_PAYLOAD_SHA512_ALT,
            IndexTag::RPMTAG_PAYLOAD_SHA3_256,
            IndexTag::RPMTAG_PAYLOAD_SHA3_256_ALT,
        ]
        .map(|t| t as u32);
        let lie = hex(&sha2::Sha256::digest(b"other"));
        let files: [(&str, &[u8]); 2] = [("/usr/share/a", b"first"), ("/usr/share/b", b"second")];
        let rpm = rewritten(dir.path(), &files, |names, tag, data| {
            if payload_digests.contains(&tag) {
                return None;
            }
            Some(match data {
                rpm::IndexData::StringArray(mut digests)
                    if tag == IndexTag::RPMTAG_FILEDIGESTS as u32 =>
                {
                    let i = names.iter().position(|n| n == "b").unwrap();
                    digests[i] = lie.clone();
                    rpm::IndexData::StringArray(digests)
                }
                other => other,
            })
        });
        let report = Package::open(&rpm).unwrap().check_digests().unwrap();
        assert!(report.payload_sha256.is_not_present(), "{report:?}");
        let dest = dir.path().join("layer");
        let err = unpack_err(&rpm, &dest);
        assert!(
            err.contains("liar") && err.contains("/usr/share/b") && err.contains(&lie),
            "{err}"
        );
        assert!(!dest.join("usr/share/b").exists());
    }

    #[test]
    fn a_payload_entry_longer_than_its_header_says_is_refused_unwritten() {
        let dir = tempfile::tempdir().unwrap();
        // 64 MiB of zeros compress to almost nothing; the header says 10 bytes.
        let zeros = vec![0u8; 64 << 20];
        let files: [(&str, &[u8]); 1] = [("/usr/share/bomb", &zeros)];
        let rpm = rewritten(dir.path(), &files, |_, tag, data| {
            Some(match data {
                rpm::IndexData::Int32(mut sizes) if tag == IndexTag::RPMTAG_FILESIZES as u32 => {
                    sizes[0] = 10;
                    rpm::IndexData::Int32(sizes)
                }
                other => other,
            })
        });
        let dest = dir.path().join("layer");
        let err = unpack_err(&rpm, &dest);
        assert!(
            err.contains("/usr/share/bomb") && err.contains("11 bytes") && err.contains("10"),
            "{err}"
        );
        assert!(!dest.join("usr/share/bomb").exists());
    }

    #[test]
    fn checking_first_and_writing_later_gives_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let rpm = crafted(dir.path(), |b| {
            b.with_file_contents(vec![3u8; 5000], FileOptions::new("/usr/share/d/big"))
                .unwrap();
            b.with_symlink(FileOptions::symlink("/usr/share/d/link", "big"))
                .unwrap();
            b.with_file_contents(Vec::new(), FileOptions::new("/usr/share/d/empty"))
                .unwrap();
            for n in ["a", "b"] {
                b.with_file_contents(
                    b"same".to_vec(),
                    FileOptions::new(format!("/usr/bin/{n}")).hardlink("set"),
                )
                .unwrap();
            }
        });
        let verified = verify_payload(&rpm, &UnpackOptions::default()).unwrap();
        // The checked bytes are what is written, even if the file changes meanwhile.
        fs::write(&rpm, b"not an rpm any more").unwrap();
        let dest = dir.path().join("layer");
        let stats = verified.unpack_into(&dest).unwrap();
        assert_eq!((stats.files, stats.symlinks), (4, 1));
        assert_eq!(
            fs::read(dest.join("usr/share/d/big")).unwrap(),
            vec![3u8; 5000]
        );
        assert_eq!(fs::read(dest.join("usr/share/d/empty")).unwrap(), b"");
        for p in ["usr/bin/a", "usr/bin/b"] {
            assert_eq!(fs::read(dest.join(p)).unwrap(), b"same", "{p}");
        }
        assert_eq!(
            fs::read_link(dest.join("usr/share/d/link")).unwrap(),
            Path::new("big")
        );
        // The same package may be written again, elsewhere.
        verified.unpack_into(&dir.path().join("again")).unwrap();
        assert!(dir.path().join("again/usr/bin/b").is_file());
    }

    /// A package `name-1.0` made with the builder, at `<dir>/<name>.rpm`.
    fn named(dir: &Path, name: &str, f: impl FnOnce(&mut PackageBuilder)) -> PathBuf {
        let mut b = PackageBuilder::new(name, "1.0", "MIT", "noarch", "crafted");
        f(&mut b);
        let path = dir.join(format!("{name}.rpm"));
        b.build().unwrap().write_file(&path).unwrap();
        path
    }

    #[test]
    fn a_declared_size_exactly_at_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rpm = crafted(dir.path(), |b| {
            b.with_file_contents(vec![1u8; 4096], FileOptions::new("/usr/share/f"))
                .unwrap();
        });
        let with_cap = |max_bytes| UnpackOptions {
            max_bytes,
            ..UnpackOptions::default()
        };
        let err = unpack_payload_with(&rpm, &dir.path().join("at"), &with_cap(4096))
            .unwrap_err()
            .to_string();
        assert!(err.contains("4096") && err.contains("hostile"), "{err}");
        assert!(!dir.path().join("at/usr/share/f").exists());
        let stats = unpack_payload_with(&rpm, &dir.path().join("under"), &with_cap(4097)).unwrap();
        assert_eq!(stats.bytes, 4096);
    }

    fn package_layer(cache: &LayerCache, rpm: &Path, name: &str) -> PackageLayer {
        PackageLayer {
            package: name.to_owned(),
            rpm: rpm.to_owned(),
            layer: cache.layer(rpm).unwrap().1,
        }
    }

    #[test]
    fn merging_packages_refuses_a_symlink_over_another_packages_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(&dir.path().join("layers"));
        let libs = named(dir.path(), "libs", |b| {
            b.with_file_contents(b"x".to_vec(), FileOptions::new("/usr/lib/keel/libx.so.1"))
                .unwrap();
        });
        let linker = named(dir.path(), "linker", |b| {
            b.with_symlink(FileOptions::symlink("/usr/lib/keel", "/opt/elsewhere"))
                .unwrap();
        });
        let libs = package_layer(&cache, &libs, "libs");
        let linker = package_layer(&cache, &linker, "linker");
        let err = merge_packages(&[libs.clone(), linker], &dir.path().join("root"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unpack linker (")
                && err.contains("linker.rpm")
                && err.contains("package libs (")
                && err.contains("libs.rpm")
                && err.contains("/usr/lib/keel:")
                && err.contains("drop its files"),
            "{err}"
        );
        // The same file in two packages: one of them would be lost.
        let other = named(dir.path(), "other", |b| {
            b.with_file_contents(b"y".to_vec(), FileOptions::new("/usr/lib/keel/libx.so.1"))
                .unwrap();
        });
        let other = package_layer(&cache, &other, "other");
        let err = merge_packages(&[libs.clone(), other], &dir.path().join("root2"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("other")
                && err.contains("package libs")
                && err.contains("/usr/lib/keel/libx.so.1"),
            "{err}"
        );
        // Directories are shared.
        let more = named(dir.path(), "more", |b| {
            b.with_file_contents(b"z".to_vec(), FileOptions::new("/usr/lib/keel/liby.so.1"))
                .unwrap();
        });
        let more = package_layer(&cache, &more, "more");
        let root = dir.path().join("root3");
        merge_packages(&[libs, more], &root).unwrap();
        assert_eq!(fs::read(root.join("usr/lib/keel/libx.so.1")).unwrap(), b"x");
        assert_eq!(fs::read(root.join("usr/lib/keel/liby.so.1")).unwrap(), b"z");
    }

    /// Set in the child process [`a_large_file_is_streamed_not_held_in_memory`] starts:
    /// the package, the destination and the file to report the peak memory in, one per
    /// line.
    const STREAM_CHILD: &str = "KEEL_TEST_STREAM_CHILD";

    #[test]
    fn a_large_file_is_streamed_not_held_in_memory() {
        if let Ok(args) = std::env::var(STREAM_CHILD) {
            let args: Vec<&str> = args.lines().collect();
            unpack_payload(Path::new(args[0]), Path::new(args[1])).unwrap();
            // The peak resident memory of this process since it started (its own address
            // space: not the parent's, which getrusage would count from before exec).
            let status = fs::read_to_string("/proc/self/status").unwrap();
            let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
            fs::write(args[2], hwm).unwrap();
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // 256 MiB of one byte: a package of a few kilobytes holding a large file.
        const SIZE: usize = 256 << 20;
        let rpm = dir.path().join("big.rpm");
        {
            let mut b = PackageBuilder::new("big", "1.0", "MIT", "noarch", "crafted");
            b.using_config(
                rpm::BuildConfig::default().compression(rpm::CompressionWithLevel::Zstd(1)),
            );
            b.with_file_contents(vec![0x5au8; SIZE], FileOptions::new("/usr/share/big"))
                .unwrap();
            b.build().unwrap().write_file(&rpm).unwrap();
        }
        assert!(fs::metadata(&rpm).unwrap().len() < 1 << 20);
        // Unpacked in a child process, whose peak memory is its own.
        let dest = dir.path().join("layer");
        let report = dir.path().join("peak");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "layer::tests::a_large_file_is_streamed_not_held_in_memory",
                "--test-threads=1",
            ])
            .env(
                STREAM_CHILD,
                format!(
                    "{}\n{}\n{}",
                    rpm.display(),
                    dest.display(),
                    report.display()
                ),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let f = dest.join("usr/share/big");
        assert_eq!(fs::metadata(&f).unwrap().len(), SIZE as u64);
        let mut r = fs::File::open(&f).unwrap();
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..SIZE >> 20 {
            io::Read::read_exact(&mut r, &mut chunk).unwrap();
            assert!(chunk.iter().all(|b| *b == 0x5a));
        }
        // `VmHWM:   12345 kB`: the whole test process, harness included, stays far below
        // the file's size.
        let hwm = fs::read_to_string(&report).unwrap();
        let kib: u64 = hwm.split_whitespace().nth(1).unwrap().parse().unwrap();
        let peak_mib = kib / 1024;
        assert!(
            peak_mib < 48,
            "unpacking a 256 MiB file peaked at {peak_mib} MiB"
        );
    }

    #[test]
    fn a_large_file_is_checked_before_it_appears_and_hard_links_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![9u8; (STREAM_ABOVE + 1000) as usize];
        // The header says less than the payload holds.
        let files: [(&str, &[u8]); 1] = [("/usr/share/liar", &big)];
        let short = STREAM_ABOVE + 10;
        let rpm = rewritten(dir.path(), &files, |_, tag, data| {
            Some(match data {
                rpm::IndexData::Int32(mut sizes) if tag == IndexTag::RPMTAG_FILESIZES as u32 => {
                    sizes[0] = short as u32;
                    rpm::IndexData::Int32(sizes)
                }
                other => other,
            })
        });
        let dest = dir.path().join("layer");
        let err = unpack_err(&rpm, &dest);
        assert!(
            err.contains("/usr/share/liar")
                && err.contains(&format!("{} bytes", short + 1))
                && err.contains(&short.to_string()),
            "{err}"
        );
        let left: Vec<_> = fs::read_dir(dest.join("usr/share")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        // A hard-link set of large files: each member a full copy.
        let rpm = crafted(dir.path(), |b| {
            for n in ["a", "b"] {
                b.with_file_contents(
                    big.clone(),
                    FileOptions::new(format!("/usr/lib/{n}")).hardlink("set"),
                )
                .unwrap();
            }
        });
        let dest = dir.path().join("links");
        let stats = unpack_payload(&rpm, &dest).unwrap();
        assert_eq!((stats.files, stats.bytes), (2, 2 * big.len() as u64));
        for n in ["a", "b"] {
            let p = dest.join("usr/lib").join(n);
            assert!(fs::read(&p).unwrap() == big, "{n}");
            let m = fs::metadata(&p).unwrap();
            assert_eq!((m.nlink(), m.mode() & 0o7777, m.mtime()), (1, 0o644, 0));
        }
        let names: Vec<_> = fs::read_dir(dest.join("usr/lib"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn layer_cache_unpacks_once_and_merges_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(&dir.path().join("layers"));
        let a = crafted(&dir.path().join("."), |b| {
            b.with_file_contents(b"lower".to_vec(), FileOptions::new("/usr/share/f"))
                .unwrap();
            b.with_file_contents(b"only-a".to_vec(), FileOptions::new("/usr/share/a"))
                .unwrap();
        });
        let a_copy = dir.path().join("a.rpm");
        fs::rename(&a, &a_copy).unwrap();
        let b = crafted(dir.path(), |b| {
            b.with_file_contents(b"upper".to_vec(), FileOptions::new("/usr/share/f"))
                .unwrap();
        });
        let (da, la) = cache.layer(&a_copy).unwrap();
        assert_eq!(la, dir.path().join("layers").join(da.to_hex()));
        // A second call must not unpack again: a marker left in the layer survives.
        fs::write(la.join("marker"), b"").unwrap();
        let (_, la2) = cache.layer(&a_copy).unwrap();
        assert!(la2.join("marker").exists());
        fs::remove_file(la.join("marker")).unwrap();
        let (_, lb) = cache.layer(&b).unwrap();
        let merged = cache.merged(&[la.clone(), lb.clone()]).unwrap();
        assert_eq!(fs::read(merged.join("usr/share/f")).unwrap(), b"upper");
        assert_eq!(fs::read(merged.join("usr/share/a")).unwrap(), b"only-a");
        let other_order = cache.merged(&[lb, la]).unwrap();
        assert_ne!(merged, other_order);
        assert_eq!(fs::read(other_order.join("usr/share/f")).unwrap(), b"lower");
    }

    #[test]
    fn an_interrupted_layer_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(&dir.path().join("layers"));
        let rpm = crafted(dir.path(), |b| {
            b.with_file_contents(b"whole".to_vec(), FileOptions::new("/usr/share/w"))
                .unwrap();
        });
        let digest = keel_store::hash_file(&rpm).unwrap();
        // What an unpacking cut short leaves: the layer's directory, under its final
        // name, without its files.
        let half = dir.path().join("layers").join(digest.to_hex());
        fs::create_dir_all(half.join("usr")).unwrap();
        assert_eq!(cache.complete_layer(&digest), None);
        let (_, layer) = cache.layer(&rpm).unwrap();
        assert_eq!(layer, half);
        assert_eq!(fs::read(layer.join("usr/share/w")).unwrap(), b"whole");
        assert_eq!(cache.complete_layer(&digest), Some(layer.clone()));
        // Made whole, it is reused as it is.
        fs::write(layer.join("kept"), b"").unwrap();
        let (_, again) = cache.layer(&rpm).unwrap();
        assert!(again.join("kept").exists());
    }
}
