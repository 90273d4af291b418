//! Running a command in an isolated build root.
//!
//! # The root
//!
//! The sandbox's `/` is made of the toolchain's top-level directories (for
//! [`Toolchain::Host`]: `/usr` without `/usr/local` (a tmpfs hides it), the `/bin`,
//! `/sbin`, `/lib*` symlinks or directories, an `/etc` staged from exactly the entries
//! [`HOST_ETC`] names plus keel's own `passwd`, `group` and `hosts`, and a `/var` that
//! holds only `tmp`; never the host's `/opt`, `/home`, `/root`, shadow files or keys.
//! For [`Toolchain::Dir`] every top-level entry of the directory
//! but `proc`, `sys`, `dev`, `tmp` and `build`), each with the build's layers stacked over
//! it in an overlay whose upper layer is a scratch tmpfs: a build can write anywhere, and
//! nothing it writes outside `/build` survives it or reaches the host. A layer directory
//! that is a symlink in the toolchain (a package shipping `/bin/sed` on a merged-`/usr`
//! root, where `/bin` is `usr/bin`) goes where rpm would install it, through the symlink:
//! an overlay of its own at the target (`/usr/bin`) holds the layers' files of both
//! places over the toolchain's. `/build` is a writable bind of
//! [`SandboxSpec::build_dir`], `/tmp` a tmpfs, `/proc` a new procfs, `/dev` a minimal one
//! (null, zero, random, tty, pts, shm).
//!
//! Layers are ordered bottom to top: a later layer's file hides an earlier one's.
//! overlayfs limits the length of its mount options to a page and the stack depth to a few
//! hundred layers, so when a build has more than [`MAX_OVERLAY_LAYERS`] layers they are
//! first merged into one hard-link farm ([`crate::LayerCache::merged`]), cached by the
//! ordered list of layers: setup stays flat however large the build closure grows.
//!
//! # The namespaces
//!
//! bubblewrap (`bwrap`) makes the PID, IPC, UTS (hostname `keel`), cgroup and network
//! namespaces (only loopback; [`SandboxSpec::network`] keeps the host's network, for tests
//! and tools that must fetch) and the final mount namespace, and runs the command with a
//! reaper as PID 1, killed with everything in it when keel dies or the timeout fires.
//! bubblewrap 0.8 cannot mount overlays, so keel mounts them itself in a private mount
//! namespace of the `bwrap` process, between `fork` and `exec`; `bwrap` then binds them
//! into its root. As root that is a plain mount namespace; as any other user keel first
//! makes a user namespace mapping the caller to root (files written to `/build` belong to
//! the caller), which needs unprivileged user namespaces and Linux ≥ 5.11.
//!
//! Either way the command runs as uid 0 of a user namespace (as root bwrap makes it, root
//! mapped to root) with every capability dropped (`--cap-drop ALL`, bwrap's no-new-privs):
//! it cannot mount, make device nodes, or act on anything outside its namespaces, and it
//! is the same whoever started keel. Only an image's scripts in a [`SandboxSpec::writable_root`]
//! keep root's capabilities, over that root. When neither
//! works [`run`] fails with [`Error::SandboxUnavailable`] saying what failed and how to fix
//! it.
//!
//! # The process
//!
//! The environment is cleared, then holds `PATH=/usr/bin:/bin:/usr/sbin:/sbin`,
//! `HOME=/build`, `TZ=UTC`, `LANG=C.UTF-8`, `PWD=/build` (bubblewrap's) and the caller's [`SandboxSpec::env`] (which
//! is where `SOURCE_DATE_EPOCH` comes from). stdin is empty; stdout and stderr go to the
//! log file. [`Isolation::Unsandboxed`] runs the command directly on the host, in
//! `build_dir` and without layers, with a warning: for machines where namespaces are
//! impossible, never for builds whose output is trusted.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, LayerCache, Toolchain};

/// Where [`SandboxSpec::build_dir`] appears inside the sandbox.
pub const BUILD_DIR: &str = "/build";

/// More layers than this are merged into one before mounting.
pub const MAX_OVERLAY_LAYERS: usize = 32;

/// overlayfs's mount options must fit in a page; leave room for upper and work dirs.
const MAX_LOWERDIR_LEN: usize = 3000;

/// The `PATH` inside the sandbox.
pub const SANDBOX_PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin";

/// Top-level host directories that make up a [`Toolchain::Host`] root as they are.
/// `/etc` and `/var` are staged (see [`HOST_ETC`]); `/opt`, `/home`, `/root`, `/srv`… are
/// not part of a build root at all.
const HOST_ROOT: [&str; 7] = ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// The entries of the host's `/etc` a build on [`Toolchain::Host`] sees, copied as they
/// are (missing ones are skipped): the loader's cache and configuration, Debian's
/// alternatives (`/usr/bin/awk` points there), rpm's and popt's configuration, the
/// name-service switch, Perl's and Python's configuration (`@INC` and `sitecustomize`
/// point there on Debian), libmagic's and the XML catalogs, asciidoc's configuration,
/// locale and time-zone data, and the static network tables. Nothing else: never `shadow`, `gshadow`, `ssh/`,
/// `ssl/private`, credentials or the host's own users. `passwd`, `group` and `hosts` are
/// written by keel ([`HOST_ETC_GENERATED`]).
pub const HOST_ETC: [&str; 26] = [
    "alternatives",
    "asciidoc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "rpm",
    "rpmrc",
    "popt",
    "popt.d",
    "nsswitch.conf",
    "perl",
    "python3",
    "magic",
    "magic.mime",
    "mime.types",
    "xml",
    "sgml",
    "xattr.conf",
    "locale.alias",
    "locale.conf",
    "localtime",
    "os-release",
    "shells",
    "services",
    "protocols",
    "mtab",
];

/// The files keel writes into a [`Toolchain::Host`] build root's `/etc`: the users and
/// groups a build may name (root, the usual system ids, mock's `mockbuild`/`mock`, nobody)
/// and a loopback-only `hosts`. The same on every machine, so no host account leaks in
/// and none changes a build.
pub const HOST_ETC_GENERATED: [(&str, &str); 3] = [
    (
        "passwd",
        "root:x:0:0:root:/root:/bin/sh\n\
         bin:x:1:1:bin:/bin:/sbin/nologin\n\
         daemon:x:2:2:daemon:/sbin:/sbin/nologin\n\
         mockbuild:x:1000:135::/build:/bin/sh\n\
         nobody:x:65534:65534:nobody:/:/sbin/nologin\n",
    ),
    (
        "group",
        "root:x:0:\nbin:x:1:\ndaemon:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\ndisk:x:6:\n\
         wheel:x:10:\nmock:x:135:mockbuild\nnobody:x:65534:\nnogroup:x:65534:\n",
    ),
    ("hosts", "127.0.0.1 localhost\n::1 localhost\n"),
];

/// The host entries under `/etc` that [`HOST_ETC`] names and that exist, with their paths
/// on the host, in [`HOST_ETC`]'s order (symlinks are not followed).
pub fn host_etc_entries() -> Vec<(&'static str, PathBuf)> {
    HOST_ETC
        .iter()
        .map(|n| (*n, Path::new("/etc").join(n)))
        .filter(|(_, p)| fs::symlink_metadata(p).is_ok())
        .collect()
}

/// Copies `src` (a file, symlink or directory, recursively) to `dest`. Entries the caller
/// cannot read are skipped: what keel cannot read, a build could not either.
fn copy_entry(src: &Path, dest: &Path) -> Result<(), Error> {
    let Ok(meta) = fs::symlink_metadata(src) else {
        return Ok(());
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(Error::io("read symlink", src))?;
        std::os::unix::fs::symlink(&target, dest).map_err(Error::io("create symlink", dest))?;
    } else if ft.is_dir() {
        fs::create_dir(dest).map_err(Error::io("create directory", dest))?;
        let Ok(rd) = fs::read_dir(src) else {
            return Ok(());
        };
        for e in rd.flatten() {
            copy_entry(&e.path(), &dest.join(e.file_name()))?;
        }
    } else if ft.is_file() {
        match fs::copy(src, dest) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
            Err(e) => return Err(Error::io("copy", src)(e)),
        }
    }
    Ok(())
}

/// Makes the `/etc` and `/var` a [`Toolchain::Host`] build root starts from, under `stage`:
/// [`HOST_ETC`] copied from the host plus [`HOST_ETC_GENERATED`], and a `/var` holding only
/// an empty, sticky `tmp` (rpmbuild's `%_tmppath`).
fn stage_host(stage: &Path) -> Result<(), Error> {
    let etc = stage.join("etc");
    let var = stage.join("var");
    for d in [&etc, &var] {
        fs::create_dir_all(d).map_err(Error::io("create directory", d))?;
    }
    for (name, src) in host_etc_entries() {
        copy_entry(&src, &etc.join(name))?;
    }
    for (name, text) in HOST_ETC_GENERATED {
        let p = etc.join(name);
        fs::write(&p, text).map_err(Error::io("write", &p))?;
    }
    let tmp = var.join("tmp");
    fs::create_dir(&tmp).map_err(Error::io("create directory", &tmp))?;
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .map_err(Error::io("set permissions of", &tmp))?;
    Ok(())
}

/// A staged host `/etc` and `/var` (see [`stage_host`]) under `cache`, made once per state
/// of the host's entries and shared by every run after: they are only ever overlay lower
/// layers, never written. Staging copies hundreds of entries (`/etc/alternatives`,
/// `/etc/ssl/certs`), and creating that many inodes for every action was a visible part
/// of a small build's time.
fn cached_host_stage(cache: &Path) -> Result<PathBuf, Error> {
    let dir = cache.join(format!("host-etc-{}", host_etc_stamp()));
    // A stage appears whole (by rename) or not at all.
    if dir.is_dir() {
        return Ok(dir);
    }
    fs::create_dir_all(cache).map_err(Error::io("create directory", cache))?;
    let tmp = tempfile::Builder::new()
        .prefix(".host-etc-")
        .tempdir_in(cache)
        .map_err(Error::io("create a temporary directory in", cache))?;
    stage_host(tmp.path())?;
    match fs::rename(tmp.path(), &dir) {
        Ok(()) => {
            let _ = tmp.keep();
            Ok(dir)
        }
        // Another keel staged the same state first; ours goes with `tmp`.
        Err(_) if dir.is_dir() => Ok(dir),
        Err(e) => Err(Error::io("rename", tmp.path())(e)),
    }
}

/// A stamp of what [`stage_host`] copies: every entry under the [`HOST_ETC`] names (path,
/// mode, size, modification and change times, inode), and what keel writes itself. Any
/// change on the host (a package installed, a certificate added) gives another stamp.
fn host_etc_stamp() -> String {
    use std::os::unix::fs::MetadataExt;
    fn walk(path: &Path, h: &mut blake3::Hasher) {
        let Ok(m) = fs::symlink_metadata(path) else {
            return;
        };
        h.update(path.as_os_str().as_bytes());
        h.update(
            format!(
                "\0{:o} {} {}.{} {}.{} {}\n",
                m.mode(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                m.ino()
            )
            .as_bytes(),
        );
        if m.is_dir() {
            let mut names: Vec<_> = match fs::read_dir(path) {
                Ok(rd) => rd.flatten().map(|e| e.file_name()).collect(),
                Err(_) => {
                    h.update(b"unreadable\n");
                    return;
                }
            };
            names.sort();
            for n in names {
                walk(&path.join(n), h);
            }
        }
    }
    let mut h = blake3::Hasher::new();
    h.update(b"keel host-etc 1\n");
    for (_, path) in host_etc_entries() {
        walk(&path, &mut h);
    }
    for (name, text) in HOST_ETC_GENERATED {
        h.update(format!("{name}\0{}\0{text}\n", text.len()).as_bytes());
    }
    h.finalize().to_hex()[..32].to_owned()
}

/// Top-level entries of a [`Toolchain::Dir`] that the sandbox provides itself.
const PROVIDED: [&str; 5] = ["proc", "sys", "dev", "tmp", "build"];

/// Whether a command really runs isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// In namespaces, with the overlay root (the default).
    Sandboxed,
    /// Directly on the host, in `build_dir`, without layers; warns on every run.
    Unsandboxed,
}

/// Everything about the environment a command runs in.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// Layer directories, bottom to top (a later layer wins).
    pub layers: Vec<PathBuf>,
    /// The base of the root.
    pub toolchain: Toolchain,
    /// The host directory mounted writable at [`BUILD_DIR`].
    pub build_dir: PathBuf,
    /// Extra environment variables (`SOURCE_DATE_EPOCH`, …), over the fixed allowlist.
    pub env: BTreeMap<String, String>,
    /// Wall-clock limit; the whole sandbox is killed when it passes.
    pub timeout: Duration,
    /// Keep the host's network (false: loopback only).
    pub network: bool,
    /// Sandboxed or not.
    pub isolation: Isolation,
    /// Where merged layers are kept when there are more than [`MAX_OVERLAY_LAYERS`], and
    /// a [`Toolchain::Host`] root's staged `/etc` for every run on the same host state; a
    /// per-run temporary directory when `None` (correct, but slow every time).
    pub merge_cache: Option<PathBuf>,
    /// With a [`Toolchain::Dir`] and no layers: bind the directory's top-level entries
    /// read-write instead of under a scratch overlay, so what the command writes outside
    /// `/build` stays in the directory (image post-install scripts).
    pub writable_root: bool,
    /// What `/bin/sh` is in the root (`/bin/bash`: Azure Linux's scripts, `brp-compress`
    /// among them, use bash under `#!/bin/sh`; Debian's is dash), as a symlink in a layer
    /// of its own over every other; `None`: the toolchain's own.
    pub sh: Option<String>,
}

impl SandboxSpec {
    /// A sandboxed spec with no layers, no extra environment, no network and a one-hour
    /// timeout.
    pub fn new(toolchain: Toolchain, build_dir: &Path) -> SandboxSpec {
        SandboxSpec {
            layers: Vec::new(),
            toolchain,
            build_dir: build_dir.to_owned(),
            env: BTreeMap::new(),
            timeout: Duration::from_secs(3600),
            network: false,
            isolation: Isolation::Sandboxed,
            merge_cache: None,
            writable_root: false,
            sh: None,
        }
    }

    /// The path the command sees `build_dir` at: [`BUILD_DIR`], or `build_dir` itself when
    /// unsandboxed.
    pub fn build_dir_inside(&self) -> PathBuf {
        match self.isolation {
            Isolation::Sandboxed => PathBuf::from(BUILD_DIR),
            Isolation::Unsandboxed => self.build_dir.clone(),
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
    /// The timeout passed and the sandbox was killed.
    TimedOut,
}

impl Outcome {
    /// Exited with code 0.
    pub fn success(self) -> bool {
        self == Outcome::Exited(0)
    }
}

/// The result of [`run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunResult {
    /// How the command ended.
    pub outcome: Outcome,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
}

/// One overlay to mount before `bwrap` starts.
#[derive(Debug)]
struct Overlay {
    /// Where it appears in the sandbox (`/usr`).
    dest: String,
    /// Lower directories, top first (overlayfs's order).
    lower: Vec<PathBuf>,
}

#[derive(Debug, Default)]
struct Plan {
    overlays: Vec<Overlay>,
    symlinks: Vec<(String, String)>,
}

fn check_overlay_path(p: &Path) -> Result<(), Error> {
    let b = p.as_os_str().as_bytes();
    if b.iter()
        .any(|c| matches!(c, b':' | b',' | b'\\' | b'\n' | 0))
    {
        return Err(Error::SandboxConfig(format!(
            "layer path {} contains a character overlayfs cannot take (':', ',', '\\')",
            p.display()
        )));
    }
    Ok(())
}

/// The [`Toolchain::Host`] build root read-only, as a build sees it without layers: the
/// host's `/usr` (without `/usr/local`), `/bin`, `/sbin` and `/lib*`, and the staged `/etc`
/// and `/var` (see [`HOST_ETC`]). Reading a tree runs `%(shell)` in this view.
///
/// A stage of its own belongs to the value and is removed when it is dropped, so a holder
/// keeps it as long as anything may run with [`HostView::args`].
#[derive(Debug)]
pub struct HostView {
    args: Vec<String>,
    _stage: Option<tempfile::TempDir>,
}

impl HostView {
    /// With `cache` (the directory builds keep merged layers in, see
    /// [`SandboxSpec::merge_cache`]), the `/etc` and `/var` builds on this host state
    /// use, staged there once; without, staged in a new directory under the system's
    /// temporary directory, removed with the value.
    pub fn new(cache: Option<&Path>) -> Result<HostView, Error> {
        let (stage, owned) = match cache {
            Some(c) => (cached_host_stage(c)?, None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("keel-host-view-")
                    .tempdir()
                    .map_err(Error::io(
                        "create a temporary directory in",
                        std::env::temp_dir(),
                    ))?;
                stage_host(t.path())?;
                (t.path().to_owned(), Some(t))
            }
        };
        let mut args: Vec<String> = Vec::new();
        for name in HOST_ROOT {
            let p = Path::new("/").join(name);
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            let dest = format!("/{name}");
            if m.file_type().is_symlink() {
                let target = fs::read_link(&p).map_err(Error::io("read symlink", &p))?;
                args.extend([
                    "--symlink".into(),
                    target.to_string_lossy().into_owned(),
                    dest,
                ]);
            } else if m.is_dir() {
                args.extend(["--ro-bind".into(), dest.clone(), dest]);
            }
        }
        for name in ["etc", "var"] {
            args.extend([
                "--ro-bind".into(),
                stage.join(name).to_string_lossy().into_owned(),
                format!("/{name}"),
            ]);
        }
        if Path::new("/usr/local").is_dir() {
            args.extend(["--tmpfs".into(), "/usr/local".into()]);
        }
        Ok(HostView {
            args,
            _stage: owned,
        })
    }

    /// bubblewrap arguments that build the view.
    pub fn args(&self) -> &[String] {
        &self.args
    }
}

/// Whether the build root `toolchain` makes (before any layer) has the absolute `path`,
/// resolved as inside it: on the host, only what a build sees of it (`/usr` but
/// `/usr/local`, `/bin`, `/sbin`, `/lib*`, the staged `/etc`); in a toolchain directory,
/// with its symlinks resolved within it. File dependencies the toolchain satisfies
/// (`/sbin/ldconfig`) are found this way.
pub fn root_has(toolchain: &Toolchain, path: &str) -> bool {
    match toolchain {
        Toolchain::Host => {
            let Ok(real) = Path::new(path).canonicalize() else {
                return false;
            };
            let mut parts = real.components().skip(1).map(|c| c.as_os_str());
            match parts.next().and_then(|c| c.to_str()) {
                Some("usr") => parts.next().is_none_or(|c| c != "local"),
                Some("etc") => parts.next().and_then(|c| c.to_str()).is_some_and(|c| {
                    HOST_ETC.contains(&c) || HOST_ETC_GENERATED.iter().any(|(n, _)| *n == c)
                }),
                Some(top) => HOST_ROOT.contains(&top),
                None => false,
            }
        }
        Toolchain::Dir(dir) => resolve_within(dir, Path::new(path)).is_some(),
    }
}

/// `path` (absolute, as seen inside `root`) resolved within `root`: every symlink on the
/// way read and followed as the root's own (an absolute target starts again at `root`,
/// `..` never leaves it), at most 40 of them; the resolved path under `root` if it exists.
fn resolve_within(root: &Path, path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    // The components still to walk, the next one last.
    let reversed = |p: &Path| -> Vec<std::ffi::OsString> {
        p.components()
            .rev()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let mut todo = reversed(path);
    let mut cur = PathBuf::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&c);
        let m = fs::symlink_metadata(root.join(&next)).ok()?;
        if !m.file_type().is_symlink() {
            cur = next;
            continue;
        }
        hops += 1;
        if hops > 40 {
            return None;
        }
        let target = fs::read_link(root.join(&next)).ok()?;
        if target.is_absolute() {
            cur = PathBuf::new();
        }
        todo.extend(reversed(&target));
    }
    Some(root.join(cur))
}

/// A [`Toolchain::Dir`] build root read-only, as a build sees it without layers: every
/// top-level entry of `dir` but those the sandbox provides itself (`proc`, `sys`, `dev`,
/// `tmp`, `build`), bound read-only or made the same symlink. Reading a tree whose builds
/// run in such a root runs `%(shell)` in this view, so a command sees what it sees under
/// rpmbuild there, not the host.
pub fn dir_view_args(dir: &Path) -> Result<Vec<String>, Error> {
    let mut args = Vec::new();
    let entries = fs::read_dir(dir).map_err(Error::io("read directory", dir))?;
    let mut names: Vec<_> = entries
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(Error::io("read directory", dir))?;
    names.sort();
    for name in names {
        let n = name.to_string_lossy().into_owned();
        if PROVIDED.contains(&n.as_str()) {
            continue;
        }
        let p = dir.join(&name);
        let m = fs::symlink_metadata(&p).map_err(Error::io("stat", &p))?;
        if m.file_type().is_symlink() {
            let target = fs::read_link(&p).map_err(Error::io("read symlink", &p))?;
            args.extend([
                "--symlink".into(),
                target.to_string_lossy().into_owned(),
                format!("/{n}"),
            ]);
        } else {
            args.extend([
                "--ro-bind".into(),
                p.to_string_lossy().into_owned(),
                format!("/{n}"),
            ]);
        }
    }
    Ok(args)
}

/// Decides the root's shape from the toolchain and the (already merged) layers.
/// `host_stage` holds the staged `/etc` and `/var` of a [`Toolchain::Host`] root.
fn plan(toolchain: &Toolchain, layers: &[PathBuf], host_stage: &Path) -> Result<Plan, Error> {
    // name -> where the toolchain's top-level entry of that name is.
    let bases: BTreeMap<String, PathBuf> = match toolchain {
        Toolchain::Host => HOST_ROOT
            .iter()
            .map(|s| ((*s).to_owned(), Path::new("/").join(s)))
            .chain(["etc", "var"].map(|s| (s.to_owned(), host_stage.join(s))))
            .collect(),
        Toolchain::Dir(d) => {
            let mut names = BTreeMap::new();
            for e in fs::read_dir(d).map_err(Error::io("read toolchain directory", d))? {
                let e = e.map_err(Error::io("read toolchain directory", d))?;
                let n = e.file_name().to_string_lossy().into_owned();
                if !PROVIDED.contains(&n.as_str()) {
                    names.insert(n, e.path());
                }
            }
            names
        }
    };
    // name -> layer subdirectories, bottom to top.
    let mut from_layers: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for layer in layers {
        let rd = fs::read_dir(layer).map_err(Error::io("read layer", layer))?;
        for e in rd {
            let e = e.map_err(Error::io("read layer", layer))?;
            let n = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().map_err(Error::io("stat", e.path()))?;
            if PROVIDED.contains(&n.as_str()) {
                // /tmp, /dev… are the sandbox's own; a package's files there are not visible.
                continue;
            }
            if !ft.is_dir() {
                return Err(Error::SandboxConfig(format!(
                    "layer {} has /{n} which is not a directory; layers may only add directories at the top level",
                    layer.display()
                )));
            }
            from_layers.entry(n).or_default().push(e.path());
        }
    }
    let mut all: Vec<String> = bases.keys().cloned().collect();
    all.extend(from_layers.keys().cloned());
    all.sort();
    all.dedup();
    let mut p = Plan::default();
    // Top-level directories of layers that the toolchain makes symlinks (a package's
    // `/bin/sed` on a merged-/usr root): where they go instead, as rpm would install them
    // through the symlink, and the layers' directories of that name.
    let mut redirected: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for name in all {
        let base_path = bases.get(&name).cloned().unwrap_or_default();
        let meta = bases.get(&name).and_then(|b| fs::symlink_metadata(b).ok());
        let from = from_layers.remove(&name).unwrap_or_default();
        match meta {
            Some(m) if m.file_type().is_symlink() => {
                let target =
                    fs::read_link(&base_path).map_err(Error::io("read symlink", &base_path))?;
                if !from.is_empty() {
                    redirected.push((merged_usr_target(&name, &target, &from)?, from));
                }
                p.symlinks
                    .push((target.to_string_lossy().into_owned(), format!("/{name}")));
            }
            Some(m) if m.is_dir() => {
                let mut lower: Vec<PathBuf> = from.into_iter().rev().collect();
                lower.push(base_path);
                p.overlays.push(Overlay {
                    dest: format!("/{name}"),
                    lower,
                });
            }
            // Files at the toolchain's top level (and absent host dirs) are not part of a root.
            Some(_) => {}
            None if !from.is_empty() => {
                p.overlays.push(Overlay {
                    dest: format!("/{name}"),
                    lower: from.into_iter().rev().collect(),
                });
            }
            None => {}
        }
    }
    // Each redirected directory is an overlay of its own over its target, mounted after
    // the target's top-level overlay: every layer's files of both places, a higher layer
    // first, over the toolchain's.
    for (target, from) in redirected {
        let mut lower = Vec::new();
        for layer in layers.iter().rev() {
            lower.extend(
                from.iter()
                    .filter(|d| d.parent() == Some(layer.as_path()))
                    .cloned(),
            );
            let own = layer.join(&target);
            if own.is_dir() {
                lower.push(own);
            }
        }
        let (top, rest) = target.split_once('/').unwrap_or((target.as_str(), ""));
        if let Some(base) = bases.get(top) {
            let base = base.join(rest);
            if base.is_dir() {
                lower.push(base);
            }
        }
        p.overlays.push(Overlay {
            dest: format!("/{target}"),
            lower,
        });
    }
    for o in &p.overlays {
        for l in &o.lower {
            check_overlay_path(l)?;
        }
    }
    Ok(p)
}

/// Where the layer directories `from` (of the top-level name `name`) go when the toolchain
/// makes `/name` a symlink to `target`: `usr/bin` for `/bin -> usr/bin` (or `/usr/bin`).
/// Only a path into another top-level directory of the root is followed.
fn merged_usr_target(name: &str, target: &Path, from: &[PathBuf]) -> Result<String, Error> {
    use std::path::Component;
    let parts: Option<Vec<&str>> = target
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .collect();
    match parts {
        Some(parts) if parts.len() >= 2 && parts[0] != name => Ok(parts.join("/")),
        _ => Err(Error::SandboxConfig(format!(
            "layer {} has a directory /{name}, and the toolchain's /{name} is a symlink to {}, \
             which is not a directory of another top-level directory to put its files in",
            from[0].parent().unwrap_or(&from[0]).display(),
            target.display()
        ))),
    }
}

/// The layers as mounted: merged into one when there are too many or their paths too long.
fn effective_layers(spec: &SandboxSpec, tmp: &Path) -> Result<Vec<PathBuf>, Error> {
    let total: usize = spec.layers.iter().map(|l| l.as_os_str().len() + 8).sum();
    if spec.layers.len() <= MAX_OVERLAY_LAYERS && total <= MAX_LOWERDIR_LEN {
        return Ok(spec.layers.clone());
    }
    let cache = match &spec.merge_cache {
        Some(dir) => LayerCache::new(dir),
        None => LayerCache::new(&tmp.join("merge")),
    };
    Ok(vec![cache.merged(&spec.layers)?])
}

fn c_path(p: &Path) -> Result<CString, Error> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::SandboxConfig(format!("path {} has a NUL byte", p.display())))
}

/// Strings the child needs after `fork`, prepared before it (no allocation in the child).
struct ChildMounts {
    /// For a caller that is not root: `/proc/self/uid_map` and `gid_map` contents mapping
    /// the caller to root in a new user namespace.
    user_maps: Option<(CString, CString)>,
    scratch: CString,
    /// (dirs to make, mount point, options) per overlay.
    overlays: Vec<([CString; 4], CString)>,
    status_fd: i32,
}

const MOUNT_HINT: &str = "keel's sandbox mounts overlays: as root, or as another user in a user namespace, which needs unprivileged user namespaces enabled (sysctl user.max_user_namespaces > 0, kernel.unprivileged_userns_clone=1 where it exists, no AppArmor restriction) and Linux >= 5.11 for overlayfs in a user namespace; run keel as root, enable them, or use the unsandboxed mode (not for trusted output)";
const BWRAP_HINT: &str = "install bubblewrap (apt install bubblewrap, dnf install bubblewrap) or run scripts/install-deps.sh test";

fn errno_check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the child between `fork` and `exec`: only async-signal-safe calls.
/// In a build's child process: keel turns transparent huge pages off for itself, and
/// the setting is inherited across exec. A build runs with the system's own setting.
fn restore_huge_pages() {
    // SAFETY: prctl with integer arguments, async-signal-safe; failure changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
    }
}

fn mount_in_child(m: &ChildMounts) -> io::Result<()> {
    restore_huge_pages();
    // SAFETY (whole function): raw syscalls on C strings prepared before the fork.
    unsafe {
        match &m.user_maps {
            None => errno_check(libc::unshare(libc::CLONE_NEWNS))?,
            Some((uid_map, gid_map)) => {
                errno_check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS))?;
                write_proc(c"/proc/self/setgroups", c"deny")?;
                write_proc(c"/proc/self/uid_map", uid_map)?;
                write_proc(c"/proc/self/gid_map", gid_map)?;
            }
        }
        errno_check(libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        errno_check(libc::mount(
            c"keel-scratch".as_ptr(),
            m.scratch.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755".as_ptr().cast(),
        ))?;
        for (dirs, opts) in &m.overlays {
            for d in dirs {
                errno_check(libc::mkdir(d.as_ptr(), 0o755))?;
            }
            errno_check(libc::mount(
                c"overlay".as_ptr(),
                dirs[3].as_ptr(),
                c"overlay".as_ptr(),
                0,
                opts.as_ptr().cast(),
            ))?;
        }
        if m.status_fd == 3 {
            // dup2 onto itself keeps close-on-exec set.
            errno_check(libc::fcntl(3, libc::F_SETFD, 0))?;
        } else {
            errno_check(libc::dup2(m.status_fd, 3))?;
        }
    }
    Ok(())
}

/// Writes `data` to a /proc file with raw syscalls (safe between fork and exec).
fn write_proc(path: &std::ffi::CStr, data: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: valid C strings; the fd is closed before returning.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        errno_check(fd)?;
        let bytes = data.to_bytes();
        let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: a two-int array for pipe2.
    errno_check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn base_env(spec: &SandboxSpec, home: &Path) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), SANDBOX_PATH.to_owned());
    env.insert("HOME".to_owned(), home.to_string_lossy().into_owned());
    env.insert("TZ".to_owned(), "UTC".to_owned());
    env.insert("LANG".to_owned(), "C.UTF-8".to_owned());
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Runs `argv` as [`SandboxSpec`] says, stdout and stderr to `log` (created or truncated).
///
/// A command that fails is an [`Outcome`], not an error; errors are for a sandbox that
/// could not be set up (with what failed and how to fix it) or a log that cannot be written.
pub fn run(spec: &SandboxSpec, argv: &[&str], log: &Path) -> Result<RunResult, Error> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::SandboxConfig("no command to run".into()));
    };
    let log_file = fs::File::create(log).map_err(Error::io("create log", log))?;
    let stdout = log_file.try_clone().map_err(Error::io("open log", log))?;
    fs::create_dir_all(&spec.build_dir).map_err(Error::io("create directory", &spec.build_dir))?;

    if spec.isolation == Isolation::Unsandboxed {
        tracing::warn!(
            "running {program} UNSANDBOXED in {}: the build can reach the network and the whole host{}",
            spec.build_dir.display(),
            if spec.layers.is_empty() {
                String::new()
            } else {
                format!(", and its {} layers are ignored", spec.layers.len())
            }
        );
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&spec.build_dir)
            .env_clear()
            .envs(base_env(spec, &spec.build_dir))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .process_group(0);
        // SAFETY: the hook makes one raw syscall.
        unsafe {
            cmd.pre_exec(|| {
                restore_huge_pages();
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            program: (*program).to_owned(),
            source,
        })?;
        return wait_with_timeout(child, spec.timeout, true);
    }

    let scratch = tempfile::Builder::new()
        .prefix("keel-sandbox-")
        .tempdir()
        .map_err(Error::io(
            "create temporary directory in",
            std::env::temp_dir(),
        ))?;
    let mut layers = effective_layers(spec, scratch.path())?;
    if let Some(sh) = &spec.sh {
        // `bin/sh` even on a merged-/usr root: `plan` puts it where `/bin` leads.
        let l = scratch.path().join("sh");
        let bin = l.join("bin");
        fs::create_dir_all(&bin).map_err(Error::io("create directory", &bin))?;
        std::os::unix::fs::symlink(sh, bin.join("sh"))
            .map_err(Error::io("create symlink", bin.join("sh")))?;
        layers.push(l);
    }
    let mut stage = scratch.path().join("stage");
    if spec.toolchain == Toolchain::Host {
        match &spec.merge_cache {
            Some(cache) => stage = cached_host_stage(cache)?,
            None => stage_host(&stage)?,
        }
    }
    let root_plan = plan(&spec.toolchain, &layers, &stage)?;

    let mnt = scratch.path().join("mnt");
    fs::create_dir(&mnt).map_err(Error::io("create directory", &mnt))?;
    let mut overlays = Vec::new();
    let mut bwrap = Command::new("bwrap");
    bwrap.args([
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "keel",
        "--die-with-parent",
        "--new-session",
    ]);
    if !spec.network {
        bwrap.arg("--unshare-net");
    }
    // A build holds no capability, whoever runs keel: as root bwrap makes the user
    // namespace itself (root inside is root outside, without any capability), as
    // another user keel made it before (see `mount_in_child`). An image's scripts in a
    // writable root keep root's rights over that root: they chown and set modes there.
    // SAFETY: a getter without preconditions.
    let euid = unsafe { libc::geteuid() };
    if !spec.writable_root {
        if euid == 0 {
            bwrap.args(["--unshare-user", "--uid", "0", "--gid", "0"]);
        }
        bwrap.args(["--cap-drop", "ALL"]);
    }
    if spec.writable_root && (!layers.is_empty() || spec.toolchain == Toolchain::Host) {
        return Err(Error::SandboxConfig(
            "a writable root needs a directory toolchain and no layers".into(),
        ));
    }
    for (i, o) in root_plan.overlays.iter().enumerate() {
        if spec.writable_root {
            bwrap.arg("--bind").arg(&o.lower[0]).arg(&o.dest);
            continue;
        }
        let d = mnt.join(i.to_string());
        let (up, work, merged) = (d.join("u"), d.join("w"), d.join("m"));
        let mut opts = String::from("lowerdir=");
        for (j, l) in o.lower.iter().enumerate() {
            if j > 0 {
                opts.push(':');
            }
            opts.push_str(&l.to_string_lossy());
        }
        opts.push_str(&format!(
            ",upperdir={},workdir={}",
            up.display(),
            work.display()
        ));
        overlays.push((
            [c_path(&d)?, c_path(&up)?, c_path(&work)?, c_path(&merged)?],
            CString::new(opts)
                .map_err(|_| Error::SandboxConfig("NUL in overlay options".into()))?,
        ));
        bwrap.arg("--bind").arg(&merged).arg(&o.dest);
    }
    for (target, dest) in &root_plan.symlinks {
        bwrap.args(["--symlink", target, dest]);
    }
    // The host's /usr/local is the machine's own, not part of any build root.
    if spec.toolchain == Toolchain::Host && Path::new("/usr/local").is_dir() {
        bwrap.args(["--tmpfs", "/usr/local"]);
    }
    bwrap.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
    bwrap.arg("--bind").arg(&spec.build_dir).arg(BUILD_DIR);
    bwrap.args(["--chdir", BUILD_DIR, "--json-status-fd", "3", "--"]);
    bwrap.arg(program).args(args);
    bwrap
        .env_clear()
        .envs(base_env(spec, Path::new(BUILD_DIR)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_file);

    let (status_r, status_w) = pipe().map_err(|source| Error::Spawn {
        program: "pipe".into(),
        source,
    })?;
    // SAFETY: getters without preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let user_maps = (euid != 0).then(|| {
        (
            CString::new(format!("0 {uid} 1")).expect("no NUL"),
            CString::new(format!("0 {gid} 1")).expect("no NUL"),
        )
    });
    let child_mounts = ChildMounts {
        user_maps,
        scratch: c_path(&mnt)?,
        overlays,
        status_fd: status_w.as_raw_fd(),
    };
    // SAFETY: the hook only makes raw syscalls on memory prepared before the fork.
    unsafe {
        bwrap.pre_exec(move || mount_in_child(&child_mounts));
    }
    let child = match bwrap.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::SandboxUnavailable {
                what: "bwrap is not installed".into(),
                hint: BWRAP_HINT,
            });
        }
        Err(e) => {
            return Err(Error::SandboxUnavailable {
                what: format!("preparing the overlay root (unshare and mount) failed: {e}"),
                hint: MOUNT_HINT,
            });
        }
    };
    drop(status_w);
    let result = wait_with_timeout(child, spec.timeout, false)?;
    let mut status = String::new();
    let _ = fs::File::from(status_r).read_to_string(&mut status);
    if !status.contains("child-pid") && result.outcome != Outcome::TimedOut {
        let tail = log_tail(log, 5);
        return Err(Error::SandboxUnavailable {
            what: format!("bwrap could not create the sandbox: {}", tail.trim()),
            hint: "keel needs namespaces: run as root, or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1), or use the unsandboxed mode",
        });
    }
    Ok(result)
}

fn wait_with_timeout(
    mut child: std::process::Child,
    timeout: Duration,
    group: bool,
) -> Result<RunResult, Error> {
    let start = Instant::now();
    let pid = child.id() as libc::pid_t;
    // A pidfd wakes us the moment the child exits; polling with naps would add up to a
    // nap's length to every run (this is on the per-build setup path).
    // SAFETY: pidfd_open(2) on our own unreaped child.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    let pidfd = (raw >= 0).then(|| {
        // SAFETY: a fresh fd owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(raw) }
    });
    let mut nap = Duration::from_micros(200);
    loop {
        if let Some(status) = child.try_wait().map_err(|source| Error::Spawn {
            program: "wait".into(),
            source,
        })? {
            let outcome = match (status.code(), status.signal()) {
                (Some(c), _) => Outcome::Exited(c),
                (None, Some(s)) => Outcome::Signaled(s),
                (None, None) => Outcome::Signaled(0),
            };
            return Ok(RunResult {
                outcome,
                elapsed: start.elapsed(),
            });
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            // The child is not reaped yet, so its pid (and group) cannot have been reused.
            // SAFETY: plain kill(2).
            unsafe {
                libc::kill(if group { -pid } else { pid }, libc::SIGKILL);
            }
            let _ = child.wait();
            return Ok(RunResult {
                outcome: Outcome::TimedOut,
                elapsed: start.elapsed(),
            });
        }
        match &pidfd {
            Some(fd) => {
                let mut pfd = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd; EINTR just loops.
                unsafe { libc::poll(&mut pfd, 1, ms) };
            }
            None => {
                std::thread::sleep(nap.min(left));
                nap = (nap * 2).min(Duration::from_millis(20));
            }
        }
    }
}

/// The last `n` lines of a log file (lossy UTF-8), for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let bytes = fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A toolchain directory's symlinks resolve inside it, absolute ones included, and
    /// neither `..` nor a symlink loop leaves it or hangs.
    #[test]
    fn a_toolchain_directorys_files_are_found_through_its_own_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("usr/sbin")).unwrap();
        fs::write(r.join("usr/sbin/ldconfig"), "").unwrap();
        std::os::unix::fs::symlink("usr/sbin", r.join("sbin")).unwrap();
        fs::create_dir_all(r.join("etc/alternatives")).unwrap();
        std::os::unix::fs::symlink("/sbin/ldconfig", r.join("etc/alternatives/ld")).unwrap();
        std::os::unix::fs::symlink("../../../../../..", r.join("usr/up")).unwrap();
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        let tc = Toolchain::Dir(r.to_owned());
        assert!(root_has(&tc, "/sbin/ldconfig"));
        assert!(root_has(&tc, "/etc/alternatives/ld"));
        assert!(root_has(&tc, "/usr/up/usr/sbin/ldconfig"));
        assert!(!root_has(&tc, "/usr/up/tmp"));
        assert!(!root_has(&tc, "/loop/x"));
        assert!(!root_has(&tc, "/sbin/missing"));
        // The host: what a build sees of it only.
        assert!(root_has(&Toolchain::Host, "/bin/sh"));
        assert!(!root_has(&Toolchain::Host, "/etc/shadow"));
    }

    /// The host's `/etc` is staged once per host state in a cache and shared: the same
    /// directory for every run and view, whole, with nothing half-made beside it.
    #[test]
    fn the_host_stage_is_made_once_and_shared() {
        let cache = tempfile::tempdir().unwrap();
        let first = cached_host_stage(cache.path()).unwrap();
        let passwd = fs::read_to_string(first.join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
        let tmp = fs::metadata(first.join("var/tmp")).unwrap();
        assert_eq!(tmp.permissions().mode() & 0o7777, 0o1777);
        let marker = first.join("etc/keel-test-marker");
        fs::write(&marker, "").unwrap();
        assert_eq!(cached_host_stage(cache.path()).unwrap(), first);
        assert!(marker.exists(), "the stage was made again");
        let view = HostView::new(Some(cache.path())).unwrap();
        let etc = first.join("etc").to_string_lossy().into_owned();
        assert!(view.args().contains(&etc), "{:?}", view.args());
        let names: Vec<_> = fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    struct Fixture {
        dir: tempfile::TempDir,
        spec: SandboxSpec,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let spec = SandboxSpec::new(Toolchain::Host, &dir.path().join("build"));
        Fixture { dir, spec }
    }

    impl Fixture {
        fn layer(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
            let root = self.dir.path().join("layers").join(name);
            for (path, content) in files {
                let p = root.join(path.trim_start_matches('/'));
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, content).unwrap();
            }
            fs::create_dir_all(&root).unwrap();
            root
        }

        fn run(&self, argv: &[&str]) -> (Outcome, String) {
            let log = self.dir.path().join("log");
            let r = run(&self.spec, argv, &log).unwrap();
            (r.outcome, fs::read_to_string(&log).unwrap())
        }

        fn bash(&self, script: &str) -> (Outcome, String) {
            self.run(&["/bin/bash", "-c", script])
        }
    }

    #[test]
    fn network_is_loopback_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
        let mut f = fixture();
        let (o, log) = f.bash(&probe);
        assert_ne!(o, Outcome::Exited(0), "reached the host's loopback: {log}");
        let (o, log) = f.bash("exec 3<>/dev/tcp/192.0.2.1/80 && echo connected");
        assert_ne!(o, Outcome::Exited(0), "reached an external address: {log}");
        let (o, log) = f.bash("ip -o link 2>/dev/null || cat /proc/net/dev");
        assert!(o.success() && !log.contains("eth0"), "{log}");
        // The same probe with the network kept does connect: the test can tell.
        f.spec.network = true;
        let (o, log) = f.bash(&probe);
        assert!(o.success() && log.contains("connected"), "{o:?} {log}");
    }

    #[test]
    fn writes_outside_build_stay_in_the_sandbox() {
        let f = fixture();
        let probe = format!("/usr/keel-sandbox-probe-{}", std::process::id());
        let (o, log) = f.bash(&format!(
            "echo x > {probe} && echo y > /etc/keel-probe && echo z > /build/out && cat {probe}"
        ));
        assert!(o.success(), "{log}");
        assert!(
            !Path::new(&probe).exists(),
            "a write to /usr reached the host"
        );
        assert!(!Path::new("/etc/keel-probe").exists());
        assert_eq!(
            fs::read_to_string(f.spec.build_dir.join("out")).unwrap(),
            "z\n"
        );
    }

    #[test]
    fn layers_are_visible_and_later_layers_win() {
        let mut f = fixture();
        let lower = f.layer(
            "lower",
            &[
                ("/usr/share/keel-t/f", "lower"),
                ("/usr/share/keel-t/only-lower", "l"),
                ("/srv/keel/new-top", "n"),
            ],
        );
        let upper = f.layer("upper", &[("/usr/share/keel-t/f", "upper")]);
        f.spec.layers = vec![lower, upper];
        let (o, log) = f.bash("cat /usr/share/keel-t/f /usr/share/keel-t/only-lower /srv/keel/new-top; test -x /usr/bin/bash && echo host-visible");
        assert!(o.success(), "{log}");
        assert_eq!(log, "upperlnhost-visible\n");
        assert!(!Path::new("/usr/share/keel-t").exists());
    }

    /// On a merged-/usr root (Debian 12's: `/bin` is `usr/bin`), a package's `/bin/*`
    /// lands in `/usr/bin` as rpm would put it there, seen through both paths, with the
    /// host's own `/usr/bin` still there and a higher layer still winning.
    #[test]
    fn a_layers_bin_lands_in_usr_bin_on_a_merged_usr_root() {
        assert!(
            fs::symlink_metadata("/bin")
                .unwrap()
                .file_type()
                .is_symlink(),
            "this test needs a merged-/usr host (Debian 12 is one)"
        );
        let mut f = fixture();
        let lower = f.layer(
            "lower",
            &[("/bin/keel-sed", "lower"), ("/bin/keel-lower-only", "l")],
        );
        let upper = f.layer(
            "upper",
            &[("/usr/bin/keel-sed", "upper"), ("/sbin/keel-tool", "t")],
        );
        f.spec.layers = vec![lower, upper];
        let (o, log) = f.bash(
            "cat /bin/keel-sed /usr/bin/keel-sed /usr/bin/keel-lower-only /bin/keel-lower-only \
             /usr/sbin/keel-tool; test -x /usr/bin/bash && echo host-visible",
        );
        assert!(o.success(), "{log}");
        assert_eq!(log, "upperupperllthost-visible\n");
        assert!(!Path::new("/usr/bin/keel-sed").exists());
    }

    /// `sh` makes `/bin/sh` (through `/usr/bin/sh` on a merged-/usr root) the shell it
    /// names, for scripts that need bash under `#!/bin/sh`; the host's dash is untouched.
    #[test]
    fn the_roots_bin_sh_can_be_bash() {
        let mut f = fixture();
        let probe = ["/bin/sh", "-c", "echo \"[$BASH_VERSION]\""];
        let (o, log) = f.run(&probe);
        assert!(o.success(), "{log}");
        assert_eq!(log, "[]\n", "Debian's /bin/sh is dash");
        f.spec.sh = Some("/usr/bin/bash".into());
        let (o, log) = f.run(&probe);
        assert!(o.success(), "{log}");
        assert!(log.starts_with("[5."), "{log}");
        let (o, log) = f.run(&["/usr/bin/dash", "-c", "echo \"[$BASH_VERSION]\""]);
        assert!(o.success(), "{log}");
        assert_eq!(log, "[]\n");
    }

    #[test]
    fn many_layers_are_merged_and_keep_their_order() {
        let mut f = fixture();
        let mut layers = Vec::new();
        for i in 0..(MAX_OVERLAY_LAYERS + 8) {
            layers.push(f.layer(
                &format!("l{i}"),
                &[
                    ("/usr/share/keel-m/top", &i.to_string()),
                    (&format!("/usr/share/keel-m/{i}"), "x"),
                ],
            ));
        }
        f.spec.layers = layers;
        f.spec.merge_cache = Some(f.dir.path().join("merged"));
        let (o, log) = f.bash("cat /usr/share/keel-m/top; echo; ls /usr/share/keel-m | wc -l");
        assert!(o.success(), "{log}");
        assert_eq!(
            log,
            format!("{}\n{}\n", MAX_OVERLAY_LAYERS + 7, MAX_OVERLAY_LAYERS + 9)
        );
        // One merged layer is cached (beside it, its completion marker).
        let cached: Vec<_> = fs::read_dir(f.dir.path().join("merged/merged"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let dirs: Vec<_> = cached.iter().filter(|p| p.is_dir()).collect();
        assert_eq!(dirs.len(), 1, "{cached:?}");
        assert!(
            cached
                .iter()
                .any(|p| p.to_string_lossy().ends_with(".complete")),
            "{cached:?}"
        );
    }

    #[test]
    fn pid_namespace_hides_host_processes() {
        let f = fixture();
        let (o, log) = f.bash("ls /proc | grep -c '^[0-9]'; hostname");
        assert!(o.success(), "{log}");
        let mut lines = log.lines();
        let n: u32 = lines.next().unwrap().parse().unwrap();
        assert!(n < 6, "{n} processes visible");
        assert_eq!(lines.next(), Some("keel"));
    }

    #[test]
    fn environment_is_cleared_and_allowlisted() {
        let mut f = fixture();
        f.spec.env.insert("SOURCE_DATE_EPOCH".into(), "1234".into());
        let (o, log) = f.run(&["/usr/bin/env"]);
        assert!(o.success(), "{log}");
        let mut vars: Vec<&str> = log.lines().collect();
        vars.sort();
        assert_eq!(
            vars,
            [
                "HOME=/build",
                "LANG=C.UTF-8",
                "PATH=/usr/bin:/bin:/usr/sbin:/sbin",
                "PWD=/build",
                "SOURCE_DATE_EPOCH=1234",
                "TZ=UTC"
            ]
        );
    }

    #[test]
    fn timeout_kills_the_whole_sandbox() {
        let mut f = fixture();
        f.spec.timeout = Duration::from_millis(500);
        let start = Instant::now();
        let (o, _) = f.bash("(sleep 4; touch /build/late) & sleep 4; touch /build/late2");
        assert_eq!(o, Outcome::TimedOut);
        // Well before the command would have ended by itself, with room for setting the
        // sandbox up on a loaded machine (it copies the host's allowlisted /etc).
        assert!(start.elapsed() < Duration::from_millis(3500));
        std::thread::sleep(Duration::from_millis(4500));
        assert!(
            !f.spec.build_dir.join("late").exists(),
            "a background process survived the timeout"
        );
        assert!(!f.spec.build_dir.join("late2").exists());
    }

    #[test]
    fn exit_codes_are_reported() {
        let f = fixture();
        assert_eq!(f.bash("exit 7").0, Outcome::Exited(7));
        assert_eq!(
            f.bash("kill -TERM $$").0,
            Outcome::Exited(128 + libc::SIGTERM)
        );
    }

    /// A layer directory over a toolchain symlink that leads nowhere to put its files (not
    /// into another top-level directory) is refused, naming the layer.
    #[test]
    fn a_layer_dir_over_a_toolchain_symlink_to_no_directory_is_refused() {
        let mut f = fixture();
        let chroot = f.dir.path().join("chroot");
        bash_chroot(&chroot);
        std::os::unix::fs::symlink("/", chroot.join("odd")).unwrap();
        let bad = f.layer("bad", &[("/odd/libx.so", "x")]);
        f.spec.toolchain = Toolchain::Dir(chroot);
        f.spec.layers = vec![bad];
        let err = run(&f.spec, &["/bin/true"], &f.dir.path().join("log"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/odd") && err.contains("bad"), "{err}");
    }

    /// A chroot holding only bash and the libraries `ldd` says it needs.
    fn bash_chroot(root: &Path) {
        let ldd = std::process::Command::new("ldd")
            .arg("/bin/bash")
            .output()
            .unwrap();
        let mut paths = vec!["/bin/bash".to_owned()];
        for line in String::from_utf8(ldd.stdout).unwrap().lines() {
            if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
                paths.push(p.to_owned());
            }
        }
        for p in paths {
            let dest = root.join(p.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().unwrap()).unwrap();
            fs::copy(fs::canonicalize(&p).unwrap(), &dest).unwrap();
        }
    }

    #[test]
    fn a_directory_toolchain_is_the_whole_root() {
        let mut f = fixture();
        let chroot = f.dir.path().join("chroot");
        bash_chroot(&chroot);
        fs::create_dir_all(chroot.join("proc")).unwrap();
        let layer = f.layer("l", &[("/usr/share/keel-d", "from-layer")]);
        f.spec.toolchain = Toolchain::Dir(chroot.clone());
        f.spec.layers = vec![layer];
        let (o, log) = f.bash("echo $(< /usr/share/keel-d); test -e /usr/bin/gcc || echo no-host-gcc; echo w > /bin/new && echo wrote");
        assert!(o.success(), "{log}");
        assert_eq!(log, "from-layer\nno-host-gcc\nwrote\n");
        assert!(
            !chroot.join("bin/new").exists(),
            "a write reached the toolchain directory"
        );
    }

    /// The body of [`works_for_an_unprivileged_user`], run as that user.
    fn unprivileged_body(dir: &Path) {
        let mut spec = SandboxSpec::new(Toolchain::Host, &dir.join("build"));
        spec.layers = vec![dir.join("layer")];
        let log = dir.join("log");
        let r = run(
            &spec,
            &[
                "/bin/bash",
                "-c",
                "cat /usr/share/keel-u; echo out > /build/out; echo x > /usr/x && echo wrote-usr; id -u",
            ],
            &log,
        );
        let text = match r {
            Ok(r) => format!(
                "{:?}\n{}",
                r.outcome,
                fs::read_to_string(&log).unwrap_or_default()
            ),
            Err(e) => format!("error: {e}"),
        };
        fs::write(dir.join("result"), text).unwrap();
    }

    #[test]
    fn works_for_an_unprivileged_user() {
        const VAR: &str = "KEEL_TEST_UNPRIVILEGED_DIR";
        if let Some(dir) = std::env::var_os(VAR) {
            unprivileged_body(Path::new(&dir));
            return;
        }
        let f = fixture();
        let dir = f.dir.path();
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
        fs::create_dir_all(dir.join("build")).unwrap();
        fs::set_permissions(dir.join("build"), fs::Permissions::from_mode(0o777)).unwrap();
        f.layer("../layer", &[("/usr/share/keel-u", "from-layer")]);
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Run this same test again as nobody.
            let status = std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "sandbox::tests::works_for_an_unprivileged_user",
                    "--test-threads=1",
                ])
                .env(VAR, dir)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        } else {
            unprivileged_body(dir);
        }
        let result = fs::read_to_string(dir.join("result")).unwrap();
        assert_eq!(result, "Exited(0)\nfrom-layerwrote-usr\n0\n");
        let out = dir.join("build/out");
        assert_eq!(fs::read_to_string(&out).unwrap(), "out\n");
        assert_eq!(
            fs::metadata(&out).unwrap().uid(),
            if unsafe { libc::geteuid() } == 0 {
                65534
            } else {
                unsafe { libc::geteuid() }
            }
        );
    }

    #[test]
    fn a_missing_layer_is_named() {
        let mut f = fixture();
        let missing = f.dir.path().join("layers/never-unpacked");
        f.spec.layers = vec![missing];
        let err = run(&f.spec, &["/bin/true"], &f.dir.path().join("log"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("never-unpacked"), "{err}");
    }

    #[test]
    fn host_directories_outside_the_toolchain_are_not_visible() {
        let f = fixture();
        // The test's own temporary directory lives on the host too.
        let own = f.dir.path().display().to_string();
        let (o, log) = f.bash(&format!("for d in /root /home /work /mnt /srv {own}; do test -e $d && echo visible: $d; done; ls /"));
        assert!(o.success(), "{log}");
        assert!(!log.contains("visible:"), "{log}");
        assert!(
            log.lines().any(|l| l == "usr") && log.lines().any(|l| l == "build"),
            "{log}"
        );
    }

    #[test]
    fn a_host_root_has_no_capabilities_secrets_or_host_only_directories() {
        let f = fixture();
        let (o, log) = f.bash(
            "grep CapEff /proc/self/status; mkdir -p /build/m; \
             mount -t tmpfs none /build/m 2>/dev/null && echo mounted; \
             mknod /build/null c 1 3 2>/dev/null && echo mknod; \
             ls /etc | tr '\\n' ' '; echo; ls -A /var; ls -A /usr/local | wc -l; \
             test -e /opt && echo opt; cat /etc/passwd | cut -d: -f1 | tr '\\n' ' '",
        );
        assert!(o.success(), "{log}");
        let mut lines = log.lines();
        assert_eq!(lines.next(), Some("CapEff:\t0000000000000000"), "{log}");
        let etc: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        for name in &etc {
            assert!(
                HOST_ETC.contains(name) || HOST_ETC_GENERATED.iter().any(|(n, _)| n == name),
                "/etc/{name} is not one a build may see: {log}"
            );
        }
        for (name, _) in HOST_ETC_GENERATED {
            assert!(etc.contains(&name), "{log}");
        }
        assert!(!etc.contains(&"shadow") && !etc.contains(&"ssh"), "{log}");
        assert_eq!(lines.next(), Some("tmp"), "{log}");
        assert_eq!(lines.next(), Some("0"), "/usr/local is visible: {log}");
        assert_eq!(
            lines.next(),
            Some("root bin daemon mockbuild nobody "),
            "{log}"
        );
        assert_eq!(lines.next(), None, "{log}");
    }

    #[test]
    fn unsandboxed_runs_in_the_build_dir() {
        let mut f = fixture();
        f.spec.isolation = Isolation::Unsandboxed;
        assert_eq!(f.spec.build_dir_inside(), f.spec.build_dir);
        let (o, log) = f.bash("pwd; echo $HOME");
        assert!(o.success());
        let expected = format!("{0}\n{0}\n", f.spec.build_dir.display());
        assert_eq!(log, expected);
    }

    #[test]
    fn a_missing_program_is_a_failed_command() {
        let f = fixture();
        let (o, log) = f.run(&["/usr/bin/keel-no-such-program"]);
        assert_ne!(o, Outcome::Exited(0));
        assert!(log.contains("keel-no-such-program"), "{log}");
    }
}
