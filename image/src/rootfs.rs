//! Assembling an image's root directory from its packages.
//!
//! [`assemble_rootfs`] unpacks every package of the closure into one directory with
//! keel-toolchain's safe unpacker, on worker threads, with the result (and the error)
//! that unpacking them one after the other in dependency order would give (see
//! `unpack_in_order`): header and payload digests checked (file digests when a payload
//! has none), sizes capped (per package, and for the whole image:
//! [`RootfsOptions::max_bytes_total`]), nothing written outside the root, no symlink ever followed —
//! including a directory symlink that an *earlier* package planted (a later package that
//! writes through it is refused, naming both the package and the path). Then it applies
//! the owners the headers name (user and group names looked up in the root's own
//! `/etc/passwd` and `/etc/group`, as rpm does, root when unknown), adds the config's
//! users, writes `/etc/hostname`, reports the setuid, setgid and world-writable files the
//! packages ship ([`SpecialFile`], a warning each), and records the packages in the root's rpm
//! database with `rpm --justdb` unless the config says `RemoveRpmDb` (run into a
//! scratch root while the packages are unpacked, and moved in when all are).
//!
//! Every file keel itself writes into the root (users, hostname) is opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative to the root, so a package that
//! ships `/etc/passwd` as a symlink to a host path cannot make keel write there.
//!
//! [`run_post_install_scripts`] runs the config's scripts in keel's sandbox with the root
//! as its whole, writable `/` and no network; [`stamp_tree`] then gives every entry the
//! same mtime so the artifacts made from the root are reproducible.
//!
//! Not done: file capabilities (`%caps`) are not applied (a warning names the file),
//! SELinux labels are not set, scriptlets of the packages themselves are not run (like
//! `rpm --noscripts`), and two packages may not ship the same file (rpm accepts identical
//! shared files; keel refuses the second one, naming both).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_toolchain::{RpmInfo, UnpackOptions, VerifiedPayload};
use rpm::{FileFlags, FileType};

use crate::Error;
use crate::config::User;

/// The default limit on the file data an image's packages may unpack, all together:
/// 32 GiB, several times the largest Azure Linux image, and well short of filling a
/// build machine's disk.
pub const DEFAULT_MAX_ROOT_BYTES: u64 = 32 << 30;

/// How a root is assembled.
#[derive(Debug, Clone)]
pub struct RootfsOptions {
    /// The image (its system config's name), for messages.
    pub image: String,
    /// Keep setuid and setgid bits (stripped otherwise).
    pub allow_setuid: bool,
    /// Create device nodes packages ship (refused otherwise).
    pub allow_devices: bool,
    /// The limit on the file data one package may unpack (it must declare less).
    pub max_bytes_per_package: u64,
    /// The limit on the file data all the packages may unpack together (they must declare
    /// less); the package that reaches it is refused before it is written.
    pub max_bytes_total: u64,
    /// `SOURCE_DATE_EPOCH`: the mtime of everything in the root.
    pub sde: u64,
    /// Write the rpm database (`/var/lib/rpm`) with `rpm --justdb`, while unpacking.
    pub rpm_db: bool,
    /// Threads verifying and writing packages; 0 for one per core (at least 2).
    pub jobs: usize,
}

impl Default for RootfsOptions {
    fn default() -> Self {
        RootfsOptions {
            image: String::new(),
            allow_setuid: true,
            allow_devices: false,
            max_bytes_per_package: 8 << 30,
            max_bytes_total: DEFAULT_MAX_ROOT_BYTES,
            sde: 0,
            rpm_db: true,
            jobs: 0,
        }
    }
}

/// One line of the package manifest written beside an image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// Package name.
    pub name: String,
    /// `[E:]V-R`.
    pub evr: String,
    /// Architecture.
    pub arch: String,
    /// The BLAKE3 of the RPM file, hex (what `b3sum` prints).
    pub blake3: String,
}

/// The package manifest: the image's packages in install order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Format version of this file.
    pub format: u32,
    /// The image (system config) name.
    pub image: String,
    /// Packages in install order.
    pub packages: Vec<ManifestEntry>,
    /// The setuid, setgid and world-writable files the packages ship, in install order.
    #[serde(default)]
    pub special_files: Vec<SpecialFile>,
}

/// A file whose mode lets it act with more rights than its caller (setuid, setgid), or
/// lets anyone change it (world-writable), as a package ships it into an image. Each one
/// is also a warning when the image is assembled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpecialFile {
    /// The package that ships it.
    pub package: String,
    /// Its path in the image.
    pub path: String,
    /// Its mode as the image has it, in octal (`4755`).
    pub mode: String,
    /// What makes it special: `setuid`, `setgid`, `world-writable`.
    pub why: Vec<String>,
}

/// What is special about an entry of `mode` (permission bits as applied), of type `ft`:
/// setuid and setgid on regular files (a setgid directory only passes its group on),
/// writable by anyone on a regular file or a directory that is not sticky (`/tmp` is:
/// anyone may add, no one may remove another's files). A symlink's mode means nothing and
/// a device's is the kernel's business (`/dev/null` is 0666).
fn special_bits(ft: FileType, mode: u32) -> Vec<String> {
    let mut why = Vec::new();
    if ft == FileType::Regular {
        if mode & 0o4000 != 0 {
            why.push("setuid".to_owned());
        }
        if mode & 0o2000 != 0 {
            why.push("setgid".to_owned());
        }
    }
    let sticky_dir = ft == FileType::Dir && mode & 0o1000 != 0;
    let file_or_dir = matches!(ft, FileType::Regular | FileType::Dir);
    if file_or_dir && mode & 0o002 != 0 && !sticky_dir {
        why.push("world-writable".to_owned());
    }
    why
}

/// What [`assemble_rootfs`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// The manifest entries of the packages, in install order.
    pub packages: Vec<ManifestEntry>,
    /// The setuid, setgid and world-writable files they ship.
    pub special_files: Vec<SpecialFile>,
}

/// The manifest entry of one package.
pub fn manifest_entry(rpm: &Path, info: &RpmInfo) -> Result<ManifestEntry, Error> {
    let digest = keel_store::hash_file(rpm).map_err(Error::io("read", rpm))?;
    Ok(entry_with_digest(info, &digest))
}

/// The manifest entry of a package whose file was hashed already.
fn entry_with_digest(info: &RpmInfo, digest: &keel_store::BlobDigest) -> ManifestEntry {
    ManifestEntry {
        name: info.name.clone(),
        evr: crate::closure::package_evr(info),
        arch: info.arch.clone(),
        blake3: digest.to_hex(),
    }
}

/// The kernel's `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// A directory opened once, inside which paths are resolved without ever following a
/// symlink or leaving it.
#[derive(Debug)]
pub(crate) struct SafeRoot {
    fd: OwnedFd,
    path: PathBuf,
}

fn cpath(p: &str) -> io::Result<CString> {
    CString::new(p).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

impl SafeRoot {
    pub(crate) fn open(path: &Path) -> Result<SafeRoot, Error> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::io("open", path)(io::Error::other("NUL in path")))?;
        // SAFETY: valid C string.
        let raw = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(Error::io("open directory", path)(io::Error::last_os_error()));
        }
        Ok(SafeRoot {
            // SAFETY: freshly opened fd owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
            path: path.to_owned(),
        })
    }

    fn err(&self, rel: &str, what: &str) -> impl FnOnce(io::Error) -> Error {
        let root = self.path.clone();
        let path = format!("/{}", rel.trim_start_matches('/'));
        let what = what.to_owned();
        move |e| Error::Rootfs {
            root,
            path,
            message: format!("{what}: {e}"),
        }
    }

    /// `openat2` beneath the root, refusing any symlink on the way.
    fn openat2(&self, rel: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
        let rel = rel.trim_start_matches('/');
        let c = cpath(if rel.is_empty() { "." } else { rel })?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: if flags & libc::O_CREAT != 0 {
                u64::from(mode)
            } else {
                0
            },
            resolve: libc::RESOLVE_BENEATH
                | libc::RESOLVE_NO_SYMLINKS
                | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: valid fd, C string and open_how of the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new fd.
        Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
    }

    pub(crate) fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, Error> {
        match self.openat2(rel, libc::O_RDONLY | libc::O_NOFOLLOW, 0) {
            Ok(fd) => {
                let mut f = fs::File::from(fd);
                let mut buf = Vec::new();
                io::Read::read_to_end(&mut f, &mut buf).map_err(self.err(rel, "read"))?;
                Ok(Some(buf))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(self.err(rel, "open")(e)),
        }
    }

    /// Creates the parent directories of `rel` (mode 0755) that are missing.
    pub(crate) fn mkdir_parents(&self, rel: &str) -> Result<(), Error> {
        let rel = rel.trim_start_matches('/');
        let comps: Vec<&str> = rel.split('/').collect();
        for i in 1..comps.len() {
            self.mkdir(&comps[..i].join("/"), 0o755)?;
        }
        Ok(())
    }

    /// Creates directory `rel` unless it exists (as a directory).
    pub(crate) fn mkdir(&self, rel: &str, mode: u32) -> Result<bool, Error> {
        let rel = rel.trim_start_matches('/');
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let pfd = self
            .openat2(parent, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(self.err(parent, "open directory"))?;
        let c = cpath(name).map_err(self.err(rel, "create directory"))?;
        // SAFETY: valid fd and C string.
        if unsafe { libc::mkdirat(pfd.as_raw_fd(), c.as_ptr(), mode) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EEXIST) {
            self.openat2(rel, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(self.err(rel, "exists and is not a directory"))?;
            return Ok(false);
        }
        Err(self.err(rel, "create directory")(e))
    }

    /// Replaces the content of `rel` (created with `mode` when missing).
    pub(crate) fn write(&self, rel: &str, bytes: &[u8], mode: u32) -> Result<(), Error> {
        self.mkdir_parents(rel)?;
        let fd = self
            .openat2(
                rel,
                libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
                mode,
            )
            .map_err(self.err(rel, "open for writing"))?;
        let mut f = fs::File::from(fd);
        f.write_all(bytes).map_err(self.err(rel, "write"))
    }

    /// Removes the file `rel` if it exists.
    pub(crate) fn remove(&self, rel: &str) -> Result<(), Error> {
        let rel = rel.trim_start_matches('/');
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let pfd = match self.openat2(parent, libc::O_PATH | libc::O_DIRECTORY, 0) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(self.err(rel, "open parent directory")(e)),
        };
        let c = cpath(name).map_err(self.err(rel, "remove"))?;
        // SAFETY: valid fd and C string.
        if unsafe { libc::unlinkat(pfd.as_raw_fd(), c.as_ptr(), 0) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(self.err(rel, "remove")(e));
            }
        }
        Ok(())
    }

    /// Sets owner and, for non-symlinks, mode of `rel` without following a symlink.
    fn chown(&self, rel: &str, uid: u32, gid: u32, mode: Option<u32>) -> Result<(), Error> {
        let rel = rel.trim_start_matches('/');
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let pfd = self
            .openat2(parent, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(self.err(rel, "open parent directory"))?;
        let c = cpath(name).map_err(self.err(rel, "chown"))?;
        // SAFETY: valid fd and C string.
        let rc = unsafe {
            libc::fchownat(
                pfd.as_raw_fd(),
                c.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc < 0 {
            return Err(self.err(rel, "set owner")(io::Error::last_os_error()));
        }
        if let Some(mode) = mode {
            // chown clears setuid/setgid: put the mode back. The entry is not a symlink
            // (the caller knows its type), and fchmodat never follows the last component
            // of a regular file or directory.
            // SAFETY: valid fd and C string.
            if unsafe { libc::fchmodat(pfd.as_raw_fd(), c.as_ptr(), mode, 0) } < 0 {
                return Err(self.err(rel, "set mode")(io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

/// Name -> id from an `/etc/passwd` or `/etc/group` text (third field).
fn ids(text: &str) -> BTreeMap<String, u32> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id = f.nth(1)?.parse().ok()?;
            Some((name.to_owned(), id))
        })
        .collect()
}

/// Unpacks `rpms` (in order) into `root` (which must be missing or empty) and applies
/// owners; returns the manifest entries in the same order and the special files.
pub fn assemble_rootfs(
    root: &Path,
    rpms: &[(PathBuf, RpmInfo)],
    opts: &RootfsOptions,
) -> Result<Assembled, Error> {
    fs::create_dir_all(root).map_err(Error::io("create directory", root))?;
    if fs::read_dir(root)
        .map_err(Error::io("read directory", root))?
        .next()
        .is_some()
    {
        return Err(Error::Rootfs {
            root: root.to_owned(),
            path: "/".into(),
            message: "the root directory is not empty".into(),
        });
    }
    let unpack = UnpackOptions {
        max_bytes: opts.max_bytes_per_package,
        allow_setuid: opts.allow_setuid,
        mtime: opts.sde as i64,
        allow_devices: opts.allow_devices,
        stamp_all_dirs: false,
    };
    // The database depends on the headers only: rpm writes it into a scratch root while
    // the packages are unpacked, and it is moved in afterwards.
    let db = if opts.rpm_db && !rpms.is_empty() {
        Some(RpmDbJob::start(root, rpms, opts.sde)?)
    } else {
        None
    };
    let unpacked = unpack_in_order(root, rpms, &unpack, opts)?;
    let special_files = apply_owners(root, &unpacked, opts)?;
    if let Some(db) = db {
        db.finish(root)?;
    }
    stamp_dirs(root, opts.sde)?;
    Ok(Assembled {
        packages: unpacked.into_iter().map(|(_, entry)| entry).collect(),
        special_files,
    })
}

/// The error for the package that takes the image's file data to its limit.
fn too_large(opts: &RootfsOptions, rpm: &Path, package: &str, total: u64) -> Error {
    Error::RootTooLarge {
        image: opts.image.clone(),
        package: package.to_owned(),
        rpm: rpm.to_owned(),
        total,
        limit: opts.max_bytes_total,
    }
}

/// What one package's unpacking gave: its headers (for owners) and manifest line.
type Unpacked = (rpm::PackageMetadata, ManifestEntry);

/// Unpacks `rpms` into `root` on worker threads, with the result (files, and the error when
/// one is refused) that unpacking them one after the other in the order given would have:
/// an error must not depend on thread timing.
///
/// Each worker checks a package's headers and payload digest and hands its list of paths to
/// this thread, which replays the lists in package order on an in-memory tree. A package
/// whose paths meet no earlier entry except shared directories, and no entry of its own, is
/// cleared and written by its worker (decompressing and writing: most of the time), in
/// parallel with the others: packages cleared together touch disjoint paths, so the order
/// they are written in cannot change what is written or make one fail. The first package
/// that meets something (the same file in two packages, a path under another package's
/// symlink or file — each a refusal in waiting) stops the parallel part: once the packages
/// before it are written, it and the rest are unpacked one after the other, failing exactly
/// as the sequential unpacker does. Safety does not rest on this check: every write still
/// goes through the safe unpacker (exclusive creation, no symlink followed). What the order
/// could still change (modes of directories two packages own, mtimes) is set afterwards. A
/// package refused while it is written (a file size or digest that does not match) does not
/// stop the others; the error returned is still the first package's, in order, that fails,
/// and the root is then not to be used.
///
/// The packages' declared sizes are added up in the same order: the package whose files
/// take the total to [`RootfsOptions::max_bytes_total`] is refused before it is written.
fn unpack_in_order(
    root: &Path,
    rpms: &[(PathBuf, RpmInfo)],
    unpack: &UnpackOptions,
    opts: &RootfsOptions,
) -> Result<Vec<Unpacked>, Error> {
    let jobs = opts.jobs;
    /// A package's paths and declared bytes.
    type Paths = Result<(Vec<(String, bool)>, u64), Error>;
    struct Shared {
        next_claim: usize,
        /// Packages below this may be written.
        cleared: usize,
        /// Packages from this one on are not written by the workers.
        stop_at: usize,
        paths: Vec<Option<Paths>>,
        written: Vec<Option<Result<Unpacked, Error>>>,
    }
    let n = rpms.len();
    let workers = match jobs {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(2, 8),
        j => j,
    };
    // How far checking may run ahead: each checked package waiting to be written holds
    // the whole RPM file in memory.
    let window = 2 * workers;
    let state = std::sync::Mutex::new(Shared {
        next_claim: 0,
        cleared: 0,
        stop_at: n,
        paths: (0..n).map(|_| None).collect(),
        written: (0..n).map(|_| None).collect(),
    });
    let changed = std::sync::Condvar::new();
    let lock = || state.lock().expect("no thread panics holding the lock");
    let wait = |g| changed.wait(g).expect("no thread panics holding the lock");
    let verify = |i: usize| -> Result<(VerifiedPayload, ManifestEntry), Error> {
        let (rpm, info) = &rpms[i];
        refusing_panics(rpm, "reading", || {
            let v = keel_toolchain::verify_payload(rpm, unpack)?;
            // The bytes that were checked and will be unpacked, not the file read again.
            let entry = entry_with_digest(info, &v.blake3());
            Ok((v, entry))
        })
    };
    let parallel_end = std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut s = lock();
                        while s.next_claim < s.stop_at && s.next_claim >= s.cleared + window {
                            s = wait(s);
                        }
                        if s.next_claim >= s.stop_at {
                            return;
                        }
                        s.next_claim += 1;
                        s.next_claim - 1
                    };
                    let (payload, entry) = match verify(i) {
                        Ok(v) => v,
                        Err(e) => {
                            lock().paths[i] = Some(Err(e));
                            changed.notify_all();
                            continue;
                        }
                    };
                    lock().paths[i] = Some(Ok((
                        payload_paths(payload.metadata()),
                        payload.declared_bytes(),
                    )));
                    changed.notify_all();
                    {
                        let mut s = lock();
                        while i >= s.cleared && i < s.stop_at {
                            s = wait(s);
                        }
                        if i >= s.stop_at {
                            continue;
                        }
                    }
                    let result = refusing_panics(&rpms[i].0, "unpacking", || {
                        payload.unpack_into(root).map_err(Error::from)
                    })
                    .map(|_| (payload.into_metadata(), entry));
                    lock().written[i] = Some(result);
                    changed.notify_all();
                }
            });
        }
        // Replay each package's paths in order; clear it, or stop at it.
        let mut tree = PathTree::default();
        let mut refused = None;
        let mut total: u64 = 0;
        for (i, (rpm, info)) in rpms.iter().enumerate() {
            let paths = {
                let mut s = lock();
                loop {
                    if let Some(p) = s.paths[i].take() {
                        break p;
                    }
                    s = wait(s);
                }
            };
            match paths {
                Ok((_, bytes)) if total.saturating_add(bytes) >= opts.max_bytes_total => {
                    refused = Some(too_large(opts, rpm, &info.name, total + bytes));
                    break;
                }
                Ok((paths, bytes)) => match tree.add(i, &paths) {
                    Ok(()) => {
                        total += bytes;
                        lock().cleared = i + 1;
                        changed.notify_all();
                    }
                    // Another package's file, symlink or directory is in the way: the
                    // unpacker would refuse this package, but could name only it.
                    Err(m) if m.owner != i => {
                        let (earlier_rpm, earlier) = &rpms[m.owner];
                        let what = if m.at == m.path {
                            "shipped this path first".to_owned()
                        } else {
                            format!("made {} a file or symlink first", m.at)
                        };
                        refused = Some(
                            keel_toolchain::Error::UnsafePayload {
                                package: info.name.clone(),
                                rpm: rpm.clone(),
                                path: m.path,
                                reason: format!(
                                    "package {} ({}) {what}; two packages of an image may \
                                     share directories only",
                                    earlier.name,
                                    earlier_rpm.display()
                                ),
                            }
                            .into(),
                        );
                        break;
                    }
                    // The package meets itself: the unpacker says what and where.
                    Err(_) => break,
                },
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let mut s = lock();
        s.stop_at = s.cleared;
        changed.notify_all();
        while s.written[..s.cleared].iter().any(Option::is_none) {
            s = wait(s);
        }
        let end = s.cleared;
        drop(s);
        (end, refused, total)
    });
    let (end, refused, mut total) = parallel_end;
    let shared = state
        .into_inner()
        .expect("no thread panics holding the lock");
    let mut out = Vec::with_capacity(n);
    for w in shared.written.into_iter().take(end) {
        out.push(w.expect("every cleared package was written")?);
    }
    if let Some(e) = refused {
        return Err(e);
    }
    // Something met something: the rest one by one, as the sequential unpacker would.
    for (rpm, info) in &rpms[end..] {
        let payload = refusing_panics(rpm, "reading", || {
            Ok(keel_toolchain::verify_payload(rpm, unpack)?)
        })?;
        total = total.saturating_add(payload.declared_bytes());
        if total >= opts.max_bytes_total {
            return Err(too_large(opts, rpm, &info.name, total));
        }
        refusing_panics(rpm, "unpacking", || Ok(payload.unpack_into(root)?))?;
        let entry = entry_with_digest(info, &payload.blake3());
        out.push((payload.into_metadata(), entry));
    }
    Ok(out)
}

/// Runs `f`, which reads `rpm` with the rpm crate: that crate parses untrusted bytes, when
/// checking and when unpacking, and a panic in it is a refused package (which must not
/// leave a worker's slot empty forever).
fn refusing_panics<T>(
    rpm: &Path,
    what: &str,
    f: impl FnOnce() -> Result<T, Error>,
) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(keel_toolchain::Error::Rpm {
            path: rpm.to_owned(),
            message: format!("{what} the package panicked"),
        }
        .into())
    })
}

/// Each entry a package writes (ghosts and `/` left out), and whether it is a directory.
fn payload_paths(meta: &rpm::PackageMetadata) -> Vec<(String, bool)> {
    meta.get_file_entries()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !e.flags().contains(FileFlags::GHOST))
        .map(|e| {
            (
                e.path().to_string_lossy().into_owned(),
                e.file_type() == FileType::Dir,
            )
        })
        .filter(|(p, _)| p != "/")
        .collect()
}

/// The paths written so far: which are directories (parents included), and the index of
/// the package that wrote (or implied) each.
#[derive(Default)]
struct PathTree {
    is_dir: std::collections::HashMap<String, (bool, usize)>,
}

/// Where a package's path met what another (or an earlier path of its own) put there.
struct Meeting {
    /// The package's own path.
    path: String,
    /// Where it met: the path itself, or a parent that is not a directory.
    at: String,
    owner: usize,
}

impl PathTree {
    /// Adds the paths of package `pkg`; the first that meets an existing non-directory
    /// (as itself or as a parent), or a directory as a non-directory, is an error.
    fn add(&mut self, pkg: usize, paths: &[(String, bool)]) -> Result<(), Meeting> {
        for (path, dir) in paths {
            for (i, _) in path.match_indices('/').skip(1) {
                match self.is_dir.get(&path[..i]) {
                    Some(&(false, owner)) => {
                        return Err(Meeting {
                            path: path.clone(),
                            at: path[..i].to_owned(),
                            owner,
                        });
                    }
                    Some(_) => {}
                    None => {
                        self.is_dir.insert(path[..i].to_owned(), (true, pkg));
                    }
                }
            }
            match self.is_dir.get(path.as_str()) {
                Some(&(true, _)) if *dir => {}
                Some(&(_, owner)) => {
                    return Err(Meeting {
                        path: path.clone(),
                        at: path.clone(),
                        owner,
                    });
                }
                None => {
                    self.is_dir.insert(path.clone(), (*dir, pkg));
                }
            }
        }
        Ok(())
    }
}

/// `rpm --justdb` running into a scratch root; see [`write_rpm_db`].
struct RpmDbJob {
    child: Option<std::process::Child>,
    scratch: tempfile::TempDir,
}

impl RpmDbJob {
    fn start(root: &Path, rpms: &[(PathBuf, RpmInfo)], sde: u64) -> Result<RpmDbJob, Error> {
        // rpm ends its transaction with syncfs(2), which waits until every dirty page of
        // the scratch root's filesystem is on disk: beside the root, that is the files
        // being unpacked meanwhile (0.5-2 s for 500 MiB here). On tmpfs it is free.
        let beside = root.parent().unwrap_or(root);
        let scratch = tempfile::Builder::new()
            .prefix("keel-rpmdb-")
            .tempdir_in("/dev/shm")
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix(".rpmdb-")
                    .tempdir_in(beside)
            })
            .map_err(Error::io("create temporary directory in", beside))?;
        let db_root = scratch.path().join("root");
        fs::create_dir(&db_root).map_err(Error::io("create directory", &db_root))?;
        let log_path = scratch.path().join("rpm.log");
        let log = fs::File::create(&log_path).map_err(Error::io("create", &log_path))?;
        let log2 = log.try_clone().map_err(Error::io("open", &log_path))?;
        let mut cmd = rpm_db_command(&db_root, rpms, sde);
        cmd.stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd.spawn().map_err(|e| Error::Tool {
            program: "rpm".into(),
            artifact: root.join("var/lib/rpm"),
            message: format!("cannot start it ({e}); is it installed?"),
        })?;
        Ok(RpmDbJob {
            child: Some(child),
            scratch,
        })
    }

    /// Waits for rpm and moves the database into `root`'s `/var/lib/rpm`.
    fn finish(mut self, root: &Path) -> Result<(), Error> {
        let artifact = root.join("var/lib/rpm");
        let mut child = self.child.take().expect("finish is called once");
        let status = child.wait().map_err(|e| Error::Tool {
            program: "rpm".into(),
            artifact: artifact.clone(),
            message: format!("cannot wait for it: {e}"),
        })?;
        if !status.success() {
            let log = fs::read_to_string(self.scratch.path().join("rpm.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(Error::Tool {
                program: "rpm".into(),
                artifact,
                message: format!("{status}: {}", tail.join("\n")),
            });
        }
        let sr = SafeRoot::open(root)?;
        let made = self.scratch.path().join("root/var/lib/rpm");
        // sqlite's shared-memory index is scratch state that differs run to run; the
        // write-ahead log is empty once rpm has closed the database.
        for name in ["rpmdb.sqlite", ".rpm.lock"] {
            let from = made.join(name);
            let bytes = match fs::read(&from) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound && name != "rpmdb.sqlite" => {
                    continue;
                }
                Err(e) => return Err(Error::io("read", &from)(e)),
            };
            sr.write(&format!("var/lib/rpm/{name}"), &bytes, 0o644)?;
        }
        Ok(())
    }
}

impl Drop for RpmDbJob {
    fn drop(&mut self) {
        // Unpacking failed: rpm's work is not wanted.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Gives every file the owner and group its header names, looked up in the root's
/// `/etc/passwd` and `/etc/group`; returns (and warns about) the setuid, setgid and
/// world-writable files.
fn apply_owners(
    root: &Path,
    unpacked: &[Unpacked],
    opts: &RootfsOptions,
) -> Result<Vec<SpecialFile>, Error> {
    let mut special = Vec::new();
    let sr = SafeRoot::open(root)?;
    let text = |rel: &str| -> Result<String, Error> {
        Ok(String::from_utf8_lossy(&sr.read(rel)?.unwrap_or_default()).into_owned())
    };
    let users = ids(&text("etc/passwd")?);
    let groups = ids(&text("etc/group")?);
    let mask = if opts.allow_setuid { 0o7777 } else { 0o1777 };
    for (meta, entry) in unpacked {
        let entries = match meta.get_file_entries() {
            Ok(e) => e,
            Err(rpm::Error::TagNotFound(_)) => continue,
            Err(e) => {
                return Err(keel_toolchain::Error::Rpm {
                    path: PathBuf::from(&entry.name),
                    message: e.to_string(),
                }
                .into());
            }
        };
        for e in entries {
            if e.flags().contains(FileFlags::GHOST) {
                continue;
            }
            let path = e.path().to_string_lossy().into_owned();
            if path == "/" {
                continue;
            }
            if e.caps().is_some_and(|c| !c.is_empty()) {
                tracing::warn!(
                    "{}: file capabilities of {path} are not applied by keel",
                    entry.name
                );
            }
            let uid = lookup(&users, e.user(), "user", &path);
            let gid = lookup(&groups, e.group(), "group", &path);
            let mode = match e.file_type() {
                FileType::SymbolicLink => None,
                _ => Some(u32::from(e.permissions()) & mask),
            };
            if let Some(m) = mode {
                let why = special_bits(e.file_type(), m);
                if !why.is_empty() {
                    tracing::warn!(
                        "image {}: package {} ships {path} {} (mode {m:04o})",
                        opts.image,
                        entry.name,
                        why.join(" and ")
                    );
                    special.push(SpecialFile {
                        package: entry.name.clone(),
                        path: path.clone(),
                        mode: format!("{m:04o}"),
                        why,
                    });
                }
            }
            if uid == 0
                && gid == 0
                && e.file_type() != FileType::Dir
                && !matches!(mode, Some(m) if m & 0o6000 != 0)
            {
                // Already root's (keel runs as root) and no bit for chown to clear.
                if is_root() {
                    continue;
                }
            }
            sr.chown(&path, uid, gid, mode)?;
        }
    }
    Ok(special)
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn lookup(table: &BTreeMap<String, u32>, name: &str, kind: &str, path: &str) -> u32 {
    if name == "root" {
        return 0;
    }
    match table.get(name) {
        Some(id) => *id,
        None => {
            tracing::warn!("{kind} {name} of {path} does not exist in the image, using root");
            0
        }
    }
}

/// Adds the config's users to `/etc/passwd`, `/etc/group` and `/etc/shadow` (in config
/// order, so the result is deterministic) and makes their home directories.
pub fn add_users(root: &Path, users: &[User], sde: u64) -> Result<(), Error> {
    if users.is_empty() {
        return Ok(());
    }
    let sr = SafeRoot::open(root)?;
    let text = |rel: &str| -> Result<String, Error> {
        Ok(String::from_utf8_lossy(&sr.read(rel)?.unwrap_or_default()).into_owned())
    };
    let mut passwd = text("etc/passwd")?;
    let mut group = text("etc/group")?;
    let mut shadow = text("etc/shadow")?;
    let days = sde / 86_400;
    let fail = |path: &str, message: String| Error::Rootfs {
        root: root.to_owned(),
        path: path.to_owned(),
        message,
    };
    for u in users {
        let existing = passwd
            .lines()
            .find(|l| l.split(':').next() == Some(u.name.as_str()))
            .map(str::to_owned);
        if let Some(line) = existing {
            let f: Vec<&str> = line.split(':').collect();
            let same = |want: &Option<String>, idx: usize| {
                want.as_deref().is_none_or(|w| f.get(idx) == Some(&w))
            };
            if u.uid
                .is_some_and(|id| f.get(2) != Some(&id.to_string().as_str()))
                || !same(&u.home, 5)
                || !same(&u.shell, 6)
            {
                return Err(fail(
                    "/etc/passwd",
                    format!(
                        "user {} exists with another UID, home or shell; changing an existing user is not supported by keel",
                        u.name
                    ),
                ));
            }
            if let Some(hash) = &u.password_hash {
                set_shadow_password(&mut shadow, &u.name, hash, days);
            }
            continue;
        }
        let table = ids(&passwd);
        let uid = match u.uid {
            Some(id) => {
                if table.values().any(|v| *v == id) {
                    return Err(fail(
                        "/etc/passwd",
                        format!("user {}: UID {id} is already taken", u.name),
                    ));
                }
                id
            }
            None => table
                .values()
                .filter(|v| (1000..60000).contains(*v))
                .max()
                .map_or(1000, |m| m + 1),
        };
        let gid = match ids(&group).get(&u.name) {
            Some(g) => *g,
            None => {
                push_line(&mut group, &format!("{}:x:{uid}:", u.name));
                uid
            }
        };
        let home = u.home.clone().unwrap_or_else(|| {
            if u.name == "root" {
                "/root".into()
            } else {
                format!("/home/{}", u.name)
            }
        });
        let shell = u.shell.clone().unwrap_or_else(|| "/bin/bash".into());
        push_line(
            &mut passwd,
            &format!("{}:x:{uid}:{gid}::{home}:{shell}", u.name),
        );
        let hash = u.password_hash.as_deref().unwrap_or("!");
        push_line(
            &mut shadow,
            &format!("{}:{hash}:{days}:0:99999:7:::", u.name),
        );
        if sr.mkdir_parents(&home).is_ok() && sr.mkdir(&home, 0o700)? {
            sr.chown(&home, uid, gid, Some(0o700))?;
        }
    }
    sr.write("etc/passwd", passwd.as_bytes(), 0o644)?;
    sr.write("etc/group", group.as_bytes(), 0o644)?;
    sr.write("etc/shadow", shadow.as_bytes(), 0o000)?;
    Ok(())
}

fn push_line(text: &mut String, line: &str) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
}

fn set_shadow_password(shadow: &mut String, name: &str, hash: &str, days: u64) {
    let mut found = false;
    let mut out = String::new();
    for l in shadow.lines() {
        let mut f: Vec<String> = l.split(':').map(str::to_owned).collect();
        if f.first().map(String::as_str) == Some(name) && f.len() > 1 {
            f[1] = hash.to_owned();
            found = true;
        }
        out.push_str(&f.join(":"));
        out.push('\n');
    }
    if !found {
        out.push_str(&format!("{name}:{hash}:{days}:0:99999:7:::\n"));
    }
    *shadow = out;
}

/// Writes `/etc/hostname`.
pub fn write_hostname(root: &Path, hostname: &str) -> Result<(), Error> {
    SafeRoot::open(root)?.write("etc/hostname", format!("{hostname}\n").as_bytes(), 0o644)
}

/// Records `rpms` in the root's rpm database (`/var/lib/rpm`, sqlite) with the host's
/// `rpm --justdb`: no files are touched, no scriptlets run. rpm takes install times from
/// `SOURCE_DATE_EPOCH`, so the database is reproducible. [`assemble_rootfs`] does this
/// itself (while it unpacks) when [`RootfsOptions::rpm_db`] is set; this is for a root
/// assembled without it.
pub fn write_rpm_db(root: &Path, rpms: &[(PathBuf, RpmInfo)], sde: u64) -> Result<(), Error> {
    if rpms.is_empty() {
        return Ok(());
    }
    let mut cmd = rpm_db_command(root, rpms, sde);
    crate::tools::run(&mut cmd, "rpm", &root.join("var/lib/rpm"))?;
    // sqlite's shared-memory index is scratch state that differs run to run; the
    // write-ahead log is empty once rpm has closed the database.
    let sr = SafeRoot::open(root)?;
    sr.remove("var/lib/rpm/rpmdb.sqlite-shm")?;
    sr.remove("var/lib/rpm/rpmdb.sqlite-wal")
}

/// `rpm --root db_root --justdb -i RPMS…`. The database holds the headers and nothing
/// read from the root, so it is the same whether `db_root` holds the files or is empty.
fn rpm_db_command(db_root: &Path, rpms: &[(PathBuf, RpmInfo)], sde: u64) -> Command {
    let mut cmd = Command::new("rpm");
    cmd.arg("--root")
        .arg(db_root)
        .args([
            "--dbpath",
            "/var/lib/rpm",
            "--define",
            "_db_backend sqlite",
            "--justdb",
            "--nodeps",
            "--noscripts",
            "--notriggers",
            "--ignorearch",
            "--ignoreos",
            // keel checks every digest while unpacking (and keeps no database of a
            // package it refused); rpm need not read the payloads again.
            "--nodigest",
            "--nosignature",
            "-i",
        ])
        .args(rpms.iter().map(|(p, _)| p))
        .env("SOURCE_DATE_EPOCH", sde.to_string())
        .env("TZ", "UTC");
    cmd
}

/// Runs each script in keel's sandbox with `root` as its writable `/`, no network, and
/// the script at `/build/<name>`; logs go to `work`. The root's top-level directories are
/// bound into the sandbox: what a script writes in them stays, a new top-level entry does
/// not (`/tmp` is the sandbox's own).
pub fn run_post_install_scripts(
    root: &Path,
    scripts: &[crate::config::InstallScript],
    work: &Path,
    sde: u64,
) -> Result<(), Error> {
    for (i, s) in scripts.iter().enumerate() {
        let build = work.join(format!("script-{i}"));
        fs::create_dir_all(&build).map_err(Error::io("create directory", &build))?;
        let name = Path::new(&s.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "script".into());
        let file = build.join(&name);
        fs::write(&file, &s.content).map_err(Error::io("write", &file))?;
        let mut spec = keel_toolchain::SandboxSpec::new(
            keel_toolchain::Toolchain::Dir(root.to_owned()),
            &build,
        );
        spec.writable_root = true;
        spec.timeout = std::time::Duration::from_secs(600);
        spec.env.insert("SOURCE_DATE_EPOCH".into(), sde.to_string());
        let inside = format!("{}/{name}", keel_toolchain::sandbox::BUILD_DIR);
        let mut argv: Vec<&str> = vec!["/bin/sh", &inside];
        argv.extend(s.args.iter().map(String::as_str));
        let log = work.join(format!("script-{i}.log"));
        let r = keel_toolchain::sandbox::run(&spec, &argv, &log)?;
        if !r.outcome.success() {
            return Err(Error::Tool {
                program: format!("post-install script {}", s.path),
                artifact: root.to_owned(),
                message: format!(
                    "{:?}; log {}:\n{}",
                    r.outcome,
                    log.display(),
                    keel_toolchain::sandbox::log_tail(&log, 20)
                ),
            });
        }
    }
    Ok(())
}

/// Sets the mtime of every directory under `root` to `sde`: after unpacking, only
/// directories can have another (files and symlinks were made with it, and adding
/// entries changes a directory's).
fn stamp_dirs(root: &Path, sde: u64) -> Result<(), Error> {
    stamp(root, sde, true)
}

/// Sets the mtime of every entry under `root` (symlinks themselves included) to `sde`.
pub fn stamp_tree(root: &Path, sde: u64) -> Result<(), Error> {
    stamp(root, sde, false)
}

fn stamp(root: &Path, sde: u64, dirs_only: bool) -> Result<(), Error> {
    let ts = libc::timespec {
        tv_sec: sde as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    for entry in walkdir::WalkDir::new(root).contents_first(true) {
        let entry = entry.map_err(|e| Error::io("walk", root)(e.into()))?;
        if dirs_only && !entry.file_type().is_dir() {
            continue;
        }
        let c = CString::new(entry.path().as_os_str().as_bytes())
            .map_err(|_| Error::io("stamp", entry.path())(io::Error::other("NUL in path")))?;
        // SAFETY: valid C string and a two-element timespec array.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc < 0 {
            return Err(Error::io("set mtime of", entry.path())(
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{crafted, file, host_shell, symlink};
    use rpm::FileOptions;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn assemble(
        dir: &Path,
        rpms: &[(PathBuf, RpmInfo)],
        opts: &RootfsOptions,
    ) -> Result<PathBuf, String> {
        let root = dir.join("root");
        assemble_rootfs(&root, rpms, opts)
            .map(|_| root)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_written_through_a_symlink_another_package_planted_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let a = crafted(dir.path(), "planter", |b| {
            symlink(b, "/usr/lib", outside.to_str().unwrap());
        });
        let b = crafted(dir.path(), "writer", |b| {
            file(b, "/usr/lib/pwned", b"x", 0o644)
        });
        let err = assemble(dir.path(), &[a, b], &RootfsOptions::default()).unwrap_err();
        assert!(
            err.contains("writer") && err.contains("/usr/lib") && err.contains("planter"),
            "{err}"
        );
        assert!(
            !outside.join("pwned").exists(),
            "wrote through the planted symlink"
        );
    }

    #[test]
    fn two_packages_shipping_one_file_are_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let rpms: Vec<_> = ["first", "middle", "second"]
            .iter()
            .map(|name| {
                crafted(dir.path(), name, |b| {
                    let path = if *name == "middle" {
                        "/usr/share/other".to_owned()
                    } else {
                        "/usr/share/same".to_owned()
                    };
                    file(b, &path, name.as_bytes(), 0o644)
                })
            })
            .collect();
        let err = assemble(dir.path(), &rpms, &RootfsOptions::default()).unwrap_err();
        assert!(
            err.contains("second")
                && err.contains("package first (")
                && err.contains("/usr/share/same")
                && !err.contains("middle"),
            "{err}"
        );
    }

    #[test]
    fn a_climbing_relative_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let a = crafted(dir.path(), "climber", |b| {
            symlink(b, "/usr/share/up", "../../..")
        });
        let b = crafted(dir.path(), "writer", |b| {
            file(b, "/usr/share/up/escaped", b"x", 0o644)
        });
        let err = assemble(dir.path(), &[a, b], &RootfsOptions::default()).unwrap_err();
        assert!(
            err.contains("writer") && err.contains("/usr/share/up/escaped"),
            "{err}"
        );
        assert!(!dir.path().join("escaped").exists());
    }

    #[test]
    fn packages_sharing_parent_directories_unpack_in_parallel() {
        // Regression: two unpacks racing to create the same missing parent failed with
        // "File exists".
        let dir = tempfile::tempdir().unwrap();
        let deep = "/usr/share/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p";
        let rpms: Vec<_> = (0..8)
            .map(|i| {
                crafted(dir.path(), &format!("p{i}"), |b| {
                    file(b, &format!("{deep}/p{i}"), b"x", 0o644)
                })
            })
            .collect();
        let opts = RootfsOptions {
            rpm_db: false,
            ..RootfsOptions::default()
        };
        for round in 0..60 {
            let root = dir.path().join(format!("root{round}"));
            assemble_rootfs(&root, &rpms, &opts).unwrap();
            assert!(root.join(&deep[1..]).join("p7").is_file());
        }
    }

    #[test]
    fn dot_dot_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = crafted(dir.path(), "dotdot", |b| {
            file(b, "/usr/../../escaped", b"x", 0o644)
        });
        let err = assemble(dir.path(), &[a], &RootfsOptions::default()).unwrap_err();
        assert!(err.contains("dotdot") && err.contains("'..'"), "{err}");
        assert!(!dir.path().join("escaped").exists());
    }

    #[test]
    fn a_hard_link_set_cannot_reach_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("hostetc");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("passwd"), b"host").unwrap();
        // A symlink to a host directory, then a hard-link set with a member "inside" it.
        let a = crafted(dir.path(), "planter", |b| {
            symlink(b, "/usr/lib64", outside.to_str().unwrap())
        });
        let b = crafted(dir.path(), "linker", |b| {
            b.with_file_contents(
                b"evil".to_vec(),
                FileOptions::new("/usr/bin/a").hardlink("s"),
            )
            .unwrap();
            b.with_file_contents(
                b"evil".to_vec(),
                FileOptions::new("/usr/lib64/passwd").hardlink("s"),
            )
            .unwrap();
        });
        let err = assemble(dir.path(), &[a, b.clone()], &RootfsOptions::default()).unwrap_err();
        assert!(
            err.contains("linker") && err.contains("/usr/lib64/passwd"),
            "{err}"
        );
        assert_eq!(fs::read(outside.join("passwd")).unwrap(), b"host");
        // Alone, the set is unpacked as separate copies: no link can point anywhere.
        let dir2 = tempfile::tempdir().unwrap();
        let root = assemble(dir2.path(), &[b], &RootfsOptions::default()).unwrap();
        let m = fs::metadata(root.join("usr/lib64/passwd")).unwrap();
        assert_eq!(m.nlink(), 1);
    }

    #[test]
    fn device_nodes_only_where_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let dev = crafted(dir.path(), "devs", |b| {
            b.with_special_file(FileOptions::character_device("/dev/console", 5, 1))
                .unwrap();
        });
        let err = assemble(
            dir.path(),
            std::slice::from_ref(&dev),
            &RootfsOptions::default(),
        )
        .unwrap_err();
        assert!(
            err.contains("devs") && err.contains("/dev/console"),
            "{err}"
        );
        let dir2 = tempfile::tempdir().unwrap();
        let opts = RootfsOptions {
            allow_devices: true,
            ..RootfsOptions::default()
        };
        let root = assemble(dir2.path(), &[dev], &opts).unwrap();
        let m = fs::symlink_metadata(root.join("dev/console")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!((libc::major(m.rdev()), libc::minor(m.rdev())), (5, 1));
    }

    #[test]
    fn setuid_is_stripped_unless_allowed_and_owners_come_from_the_roots_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let setup = crafted(dir.path(), "setup", |b| {
            file(
                b,
                "/etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\nmail:x:8:12::/var/mail:/sbin/nologin\n",
                0o644,
            );
            file(b, "/etc/group", b"root:x:0:\nmail:x:12:\n", 0o644);
        });
        let su = crafted(dir.path(), "su", |b| {
            b.with_file_contents(
                b"#!/bin/sh\n".to_vec(),
                FileOptions::new("/usr/bin/su-ish")
                    .permissions(0o4755)
                    .user("mail")
                    .group("mail"),
            )
            .unwrap();
        });
        let rpms = [setup, su];
        let strip = RootfsOptions {
            allow_setuid: false,
            ..RootfsOptions::default()
        };
        let root = assemble(dir.path(), &rpms, &strip).unwrap();
        let m = fs::metadata(root.join("usr/bin/su-ish")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 8, 12));
        let dir2 = tempfile::tempdir().unwrap();
        let root = assemble(dir2.path(), &rpms, &RootfsOptions::default()).unwrap();
        let m = fs::metadata(root.join("usr/bin/su-ish")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4755, 8, 12));
    }

    #[test]
    fn an_image_over_its_size_limit_is_refused_naming_the_image_and_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let rpms: Vec<_> = ["small", "medium", "large"]
            .iter()
            .map(|n| {
                crafted(dir.path(), n, |b| {
                    file(b, &format!("/usr/share/{n}"), &[7u8; 1000], 0o644)
                })
            })
            .collect();
        let opts = |limit| RootfsOptions {
            image: "tiny-core".into(),
            max_bytes_total: limit,
            rpm_db: false,
            ..RootfsOptions::default()
        };
        // 3000 bytes in all: a limit of 3000 is reached by the third package.
        let root = dir.path().join("root");
        let err = assemble_rootfs(&root, &rpms, &opts(3000))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tiny-core")
                && err.contains("package large")
                && err.contains("large.rpm")
                && err.contains("3000 bytes"),
            "{err}"
        );
        assert!(root.join("usr/share/medium").is_file());
        assert!(
            !root.join("usr/share/large").exists(),
            "written over the limit"
        );
        // A lower limit is reached by the second package already.
        let root = dir.path().join("root2");
        let err = assemble_rootfs(&root, &rpms, &opts(1500))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("package medium") && err.contains("2000"),
            "{err}"
        );
        let root = dir.path().join("root3");
        assemble_rootfs(&root, &rpms, &opts(3001)).unwrap();
        assert!(root.join("usr/share/large").is_file());
    }

    #[test]
    fn setuid_setgid_and_world_writable_files_are_reported_with_their_package() {
        let dir = tempfile::tempdir().unwrap();
        let tools = crafted(dir.path(), "tools", |b| {
            file(b, "/usr/bin/su-ish", b"#!/bin/sh\n", 0o4755);
            file(b, "/usr/bin/wall-ish", b"#!/bin/sh\n", 0o2755);
            file(b, "/usr/bin/plain", b"#!/bin/sh\n", 0o755);
            symlink(b, "/usr/bin/link", "plain");
        });
        let data = crafted(dir.path(), "data", |b| {
            file(b, "/var/lib/data/open", b"x", 0o666);
            b.with_dir_entry(FileOptions::dir("/var/tmp-ish").permissions(0o1777))
                .unwrap();
            b.with_dir_entry(FileOptions::dir("/var/drop").permissions(0o777))
                .unwrap();
            b.with_dir_entry(FileOptions::dir("/var/group-dir").permissions(0o2775))
                .unwrap();
        });
        let opts = RootfsOptions {
            image: "core".into(),
            rpm_db: false,
            ..RootfsOptions::default()
        };
        let root = dir.path().join("root");
        let made = assemble_rootfs(&root, &[tools.clone(), data.clone()], &opts).unwrap();
        let got: Vec<(&str, &str, &str, String)> = made
            .special_files
            .iter()
            .map(|f| {
                (
                    f.package.as_str(),
                    f.path.as_str(),
                    f.mode.as_str(),
                    f.why.join("+"),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("tools", "/usr/bin/su-ish", "4755", "setuid".to_owned()),
                ("tools", "/usr/bin/wall-ish", "2755", "setgid".to_owned()),
                ("data", "/var/drop", "0777", "world-writable".to_owned()),
                (
                    "data",
                    "/var/lib/data/open",
                    "0666",
                    "world-writable".to_owned()
                ),
            ]
        );
        // Stripped bits are not shipped, so not reported.
        let strip = RootfsOptions {
            allow_setuid: false,
            ..opts
        };
        let made = assemble_rootfs(&dir.path().join("root2"), &[tools], &strip).unwrap();
        assert!(made.special_files.is_empty(), "{:?}", made.special_files);
    }

    fn user(name: &str, uid: Option<u32>, hash: Option<&str>) -> User {
        User {
            name: name.into(),
            uid,
            password_hash: hash.map(str::to_owned),
            home: None,
            shell: None,
        }
    }

    #[test]
    fn users_are_appended_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
        let users = [
            user("root", None, Some("$6$salt$hash")),
            user("alice", None, None),
            user("bob", Some(2000), Some("$6$x$y")),
            user("carol", None, None),
        ];
        add_users(&root, &users, 86_400 * 20_000).unwrap();
        let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(
            read("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n\
             bob:x:2000:2000::/home/bob:/bin/bash\ncarol:x:2001:2001::/home/carol:/bin/bash\n"
        );
        assert_eq!(
            read("etc/group"),
            "root:x:0:\nalice:x:1000:\nbob:x:2000:\ncarol:x:2001:\n"
        );
        assert_eq!(
            read("etc/shadow"),
            "root:$6$salt$hash:19000:0:99999:7:::\nalice:!:20000:0:99999:7:::\n\
             bob:$6$x$y:20000:0:99999:7:::\ncarol:!:20000:0:99999:7:::\n"
        );
        let home = fs::metadata(root.join("home/bob")).unwrap();
        assert_eq!((home.uid(), home.mode() & 0o777), (2000, 0o700));
        let err = add_users(&root, &[user("bob", Some(3000), None)], 0).unwrap_err();
        assert!(err.to_string().contains("user bob exists"), "{err}");
    }

    #[test]
    fn keel_never_writes_users_through_a_symlinked_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host-passwd");
        fs::write(&host, "host\n").unwrap();
        let evil = crafted(dir.path(), "evil", |b| {
            symlink(b, "/etc/passwd", host.to_str().unwrap())
        });
        // Looking up owners refuses to read it...
        let err = assemble(dir.path(), &[evil], &RootfsOptions::default()).unwrap_err();
        assert!(err.contains("/etc/passwd"), "{err}");
        // ...and adding users refuses to write through it.
        let root = dir.path().join("root2");
        fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("etc/passwd")).unwrap();
        let err = add_users(&root, &[user("alice", None, None)], 0).unwrap_err();
        assert!(err.to_string().contains("/etc/passwd"), "{err}");
        assert_eq!(fs::read_to_string(&host).unwrap(), "host\n");
    }

    #[test]
    fn the_rpm_database_lists_the_packages() {
        let dir = tempfile::tempdir().unwrap();
        let a = crafted(dir.path(), "alpha", |b| {
            file(b, "/usr/share/alpha", b"a", 0o644)
        });
        let b = crafted(dir.path(), "beta", |b| {
            file(b, "/usr/share/beta", b"b", 0o644)
        });
        let rpms = [a, b];
        let opts = RootfsOptions {
            sde: 1_700_000_000,
            ..RootfsOptions::default()
        };
        let root = assemble(dir.path(), &rpms, &opts).unwrap();
        let db = |r: &Path| fs::read(r.join("var/lib/rpm/rpmdb.sqlite")).unwrap();
        let made = db(&root);
        // sqlite's scratch files are not moved in (the query below makes them again).
        for scratch in ["rpmdb.sqlite-shm", "rpmdb.sqlite-wal"] {
            assert!(!root.join("var/lib/rpm").join(scratch).exists());
        }
        let out = crate::tools::output(Command::new("rpm").arg("--root").arg(&root).args([
            "--dbpath",
            "/var/lib/rpm",
            "-qa",
            "--qf",
            "%{NAME}-%{VERSION}\\n",
        ]));
        let mut lines: Vec<&str> = out.lines().collect();
        lines.sort();
        assert_eq!(lines, ["alpha-1.0", "beta-1.0"]);
        // Written beside the root while unpacking, it is the database rpm writes into
        // the finished root.
        let dir2 = tempfile::tempdir().unwrap();
        let without = RootfsOptions {
            rpm_db: false,
            ..opts
        };
        let root2 = assemble(dir2.path(), &rpms, &without).unwrap();
        assert!(!root2.join("var/lib/rpm").exists());
        write_rpm_db(&root2, &rpms, 1_700_000_000).unwrap();
        assert!(made == db(&root2), "the databases differ");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".rpmdb-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn post_install_scripts_change_the_root_without_network() {
        let dir = tempfile::tempdir().unwrap();
        let sh = host_shell(dir.path());
        let etc = crafted(dir.path(), "etc", |b| {
            file(b, "/etc/issue", b"keel\n", 0o644)
        });
        let root = assemble(dir.path(), &[sh, etc], &RootfsOptions::default()).unwrap();
        let script = crate::config::InstallScript {
            path: "scripts/motd.sh".into(),
            args: vec!["hello".into()],
            content: b"echo \"$1 $SOURCE_DATE_EPOCH\" > /etc/motd\n\
                       while read -r l; do echo \"$l\"; done < /proc/net/dev > /etc/netdev\n"
                .to_vec(),
        };
        run_post_install_scripts(&root, &[script], &dir.path().join("work"), 1234).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("etc/motd")).unwrap(),
            "hello 1234\n"
        );
        // Only loopback inside, while the host has more (or the check proves nothing).
        let interfaces = |t: &str| -> Vec<String> {
            t.lines()
                .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned()))
                .collect()
        };
        let host = interfaces(&fs::read_to_string("/proc/net/dev").unwrap());
        assert!(host.iter().any(|i| i != "lo"), "the host has only {host:?}");
        let inside = interfaces(&fs::read_to_string(root.join("etc/netdev")).unwrap());
        assert_eq!(inside, ["lo"]);
        let failing = crate::config::InstallScript {
            path: "scripts/fail.sh".into(),
            args: vec![],
            content: b"echo broken >&2\nexit 3\n".to_vec(),
        };
        let err = run_post_install_scripts(&root, &[failing], &dir.path().join("work"), 0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scripts/fail.sh") && err.contains("broken"),
            "{err}"
        );
    }
}
