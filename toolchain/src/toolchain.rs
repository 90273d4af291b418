//! The base of every build root, and its identity.
//!
//! A [`Toolchain`] is either the machine keel runs on ([`Toolchain::Host`], for development
//! and CI) or a worker chroot unpacked into a directory ([`Toolchain::Dir`]). Its
//! fingerprint is part of every build's key, so upgrading the compiler rebuilds everything
//! it built.
//!
//! - **Host**: the BLAKE3 of a canonical text in parts, one digest each, covering what a
//!   build on the host sees (see [`crate::sandbox`]): the installed packages (`dpkg-query`
//!   on Debian-like hosts, `rpm -qa` on rpm hosts, sorted; dpkg's removed-but-configured
//!   entries leave nothing in the build root and are not part of it), rpm's configuration
//!   directories by content ([`HOST_RPM_CONFIG`]: macros, `macros.d`, rpmrc, platform and
//!   Lua files), the staged `/etc` by content, and the first line of `rpmbuild --version`,
//!   `gcc --version` and `ld --version` (a missing tool is recorded as absent, not an
//!   error). `/usr/local`, `/opt` and the rest of `/etc` are not in the build root, so not
//!   in the key. [`changed_parts`] names the parts two descriptions differ in.
//!   [`Toolchain::fingerprint_cached`] keeps it on disk keyed by the modification times of
//!   the package database, of those directories and of those tools, so a no-op build
//!   forks nothing.
//! - **Dir**: the BLAKE3 of a manifest of the whole tree: every path, type, mode, size,
//!   symlink target and the BLAKE3 of every file. Slow on a big chroot, so it is computed
//!   once per process.
//!
//! Both are returned as a [`keel_store::BlobDigest`]: the plain BLAKE3 of that canonical
//! text, which [`describe`] returns for explaining a change.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use keel_store::BlobDigest;

use crate::Error;

/// The base of a build root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Toolchain {
    /// The machine's own `/usr`, `/etc`, `/bin`, `/lib*`, `/sbin`, `/opt` and `/var`,
    /// read-only under the sandbox's overlays.
    Host,
    /// A worker chroot unpacked into this directory; it becomes the sandbox's root.
    Dir(PathBuf),
}

impl Toolchain {
    /// A short name for messages and key inputs: `host`, or `dir:<last component>` (never
    /// the absolute path, which must not reach a key).
    pub fn name(&self) -> String {
        match self {
            Toolchain::Host => "host".into(),
            Toolchain::Dir(p) => format!(
                "dir:{}",
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        }
    }

    /// The toolchain's name and fingerprint, computed once per process.
    pub fn fingerprint(&self) -> Result<(String, BlobDigest), Error> {
        static CACHE: OnceLock<Mutex<HashMap<Toolchain, BlobDigest>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(d) = cache.lock().expect("fingerprint cache poisoned").get(self) {
            return Ok((self.name(), *d));
        }
        let text = describe(self)?;
        let d = BlobDigest::of_bytes(text.as_bytes());
        cache
            .lock()
            .expect("fingerprint cache poisoned")
            .insert(self.clone(), d);
        Ok((self.name(), d))
    }

    /// Like [`Toolchain::fingerprint`], but for [`Toolchain::Host`] also kept in
    /// `cache_dir/toolchain-host.json` and recomputed only when the package database's or
    /// the tools' modification times change. A cache file that cannot be read or written
    /// is ignored (with a warning for writes).
    pub fn fingerprint_cached(&self, cache_dir: &Path) -> Result<(String, BlobDigest), Error> {
        if *self != Toolchain::Host {
            return self.fingerprint();
        }
        let stamp = host_stamp();
        let file = cache_dir.join("toolchain-host.json");
        if let Ok(bytes) = fs::read(&file)
            && let Ok(saved) = serde_json::from_slice::<SavedFingerprint>(&bytes)
            && saved.stamp == stamp
            && let Ok(d) = BlobDigest::parse_hex(&saved.digest)
        {
            return Ok((self.name(), BlobDigest::from_parts(*d.hash(), saved.size)));
        }
        let text = describe(self)?;
        let d = BlobDigest::of_bytes(text.as_bytes());
        let name = self.name();
        keep_description(cache_dir, &d, &text);
        let saved = SavedFingerprint {
            stamp,
            digest: d.to_hex(),
            size: d.size(),
        };
        let write = || -> std::io::Result<()> {
            fs::create_dir_all(cache_dir)?;
            let tmp = tempfile::NamedTempFile::new_in(cache_dir)?;
            fs::write(
                tmp.path(),
                serde_json::to_vec(&saved).expect("serializable"),
            )?;
            tmp.persist(&file).map_err(|e| e.error)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(
                "could not save the host toolchain fingerprint to {}: {e}",
                file.display()
            );
        }
        Ok((name, d))
    }
}

/// Where [`Toolchain::fingerprint_cached`] keeps the host descriptions it computed, by
/// fingerprint, so that a later "toolchain changed" can name the parts that changed
/// ([`changed_parts_between`]).
const DESCRIPTIONS: &str = "toolchain-host";
/// How many descriptions are kept (the newest; a host changes a few times a week).
const DESCRIPTIONS_KEPT: usize = 16;

fn description_path(cache_dir: &Path, d: &BlobDigest) -> std::path::PathBuf {
    cache_dir
        .join(DESCRIPTIONS)
        .join(format!("{}.txt", d.to_hex()))
}

/// Keeps `text`, the description whose fingerprint is `d`, and drops the oldest beyond
/// [`DESCRIPTIONS_KEPT`]. Best effort: without it a change is still detected, only not
/// named.
fn keep_description(cache_dir: &Path, d: &BlobDigest, text: &str) {
    let dir = cache_dir.join(DESCRIPTIONS);
    let write = || -> std::io::Result<()> {
        fs::create_dir_all(&dir)?;
        let tmp = tempfile::NamedTempFile::new_in(&dir)?;
        fs::write(tmp.path(), text)?;
        tmp.persist(description_path(cache_dir, d))
            .map_err(|e| e.error)?;
        let mut kept: Vec<(std::time::SystemTime, std::path::PathBuf)> = fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        kept.sort();
        let excess = kept.len().saturating_sub(DESCRIPTIONS_KEPT);
        for (_, old) in kept.into_iter().take(excess) {
            let _ = fs::remove_file(old);
        }
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!(
            "could not keep the host toolchain's description in {}: {e}",
            dir.display()
        );
    }
}

/// The parts of the host build root ([`changed_parts`]) that differ between the
/// fingerprints `old` and `new`, from the descriptions [`Toolchain::fingerprint_cached`]
/// kept in `cache_dir`; `None` when either is not kept (computed elsewhere, or dropped).
pub fn changed_parts_between(
    cache_dir: &Path,
    old: &BlobDigest,
    new: &BlobDigest,
) -> Option<Vec<String>> {
    let read = |d: &BlobDigest| fs::read_to_string(description_path(cache_dir, d)).ok();
    let parts = changed_parts(&read(old)?, &read(new)?);
    (!parts.is_empty()).then_some(parts)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedFingerprint {
    stamp: String,
    digest: String,
    size: u64,
}

/// The tools whose versions are part of the host fingerprint.
const HOST_TOOLS: [(&str, &[&str]); 3] = [
    ("rpmbuild", &["--version"]),
    ("gcc", &["--version"]),
    ("ld", &["--version"]),
];

/// Package databases whose change means the installed set changed.
const PACKAGE_DBS: [&str; 3] = [
    "/var/lib/dpkg/status",
    "/var/lib/rpm",
    "/usr/lib/sysimage/rpm",
];

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// What must be unchanged for a saved host fingerprint to still hold.
fn host_stamp() -> String {
    let mut s = String::new();
    let stamp_of = |s: &mut String, p: &Path| {
        // A link into /proc (`/etc/mtab` -> `/proc/self/mounts`) is stamped as a link:
        // /proc's times are those of whichever process looks, so following it would miss
        // the cache in every process.
        let into_proc = fs::read_link(p).is_ok_and(|t| {
            p.parent()
                .unwrap_or(Path::new("/"))
                .join(t)
                .canonicalize()
                .is_ok_and(|t| t.starts_with("/proc"))
        });
        let meta = if into_proc {
            fs::symlink_metadata(p)
        } else {
            fs::metadata(p)
        };
        let (mtime, size) = meta
            .map(|m| {
                (
                    m.mtime_nsec() as i128 + m.mtime() as i128 * 1_000_000_000,
                    m.size(),
                )
            })
            .unwrap_or((-1, 0));
        let _ = writeln!(s, "{} {mtime} {size}", p.display());
        // A database directory (rpm's) changes its files, not always itself.
        if let Ok(rd) = fs::read_dir(p) {
            let mut entries: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
            entries.sort();
            for e in entries {
                if let Ok(m) = fs::metadata(&e) {
                    let _ = writeln!(
                        s,
                        "{} {} {} {}",
                        e.display(),
                        m.mtime(),
                        m.mtime_nsec(),
                        m.size()
                    );
                }
            }
        }
    };
    for db in PACKAGE_DBS {
        stamp_of(&mut s, Path::new(db));
    }
    // rpm's configuration and the rest of the /etc a build sees: a file added, removed or
    // replaced changes its directory's listing; one edited in place its own entry.
    for dir in HOST_RPM_CONFIG {
        let dir = Path::new("/").join(dir);
        stamp_of(&mut s, &dir);
        if let Ok(rd) = fs::read_dir(&dir) {
            let mut subdirs: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            subdirs.sort();
            for d in subdirs {
                stamp_of(&mut s, &d);
            }
        }
    }
    for (_, p) in crate::sandbox::host_etc_entries() {
        stamp_of(&mut s, &p);
    }
    for (tool, _) in HOST_TOOLS {
        match find_in_path(tool) {
            Some(p) => {
                let real = fs::canonicalize(&p).unwrap_or(p);
                stamp_of(&mut s, &real);
            }
            None => s.push_str(&format!("{tool} absent\n")),
        }
    }
    s
}

fn first_line_of(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        Ok(out) => format!("failed ({})", out.status),
        Err(_) => "absent".into(),
    }
}

/// The canonical text a toolchain's fingerprint hashes.
pub fn describe(toolchain: &Toolchain) -> Result<String, Error> {
    match toolchain {
        Toolchain::Host => Ok(describe_host()),
        Toolchain::Dir(dir) => describe_dir(dir),
    }
}

fn describe_host() -> String {
    describe_host_at(Path::new("/"))
}

/// Directories of rpm's configuration a build on the host reads (macros, `macros.d`,
/// rpmrc, platform files, Lua, scripts), each hashed by content.
pub const HOST_RPM_CONFIG: [&str; 2] = ["usr/lib/rpm", "etc/rpm"];

/// The BLAKE3 of everything under `dir`: each entry's relative path, type, mode, and the
/// content of a file or the target of a symlink. `absent` when there is no `dir`.
fn tree_digest(dir: &Path) -> String {
    if fs::symlink_metadata(dir).is_err() {
        return "absent".into();
    }
    let mut h = blake3::Hasher::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .flatten()
    {
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let ft = entry.file_type();
        let mode = entry.metadata().map(|m| m.mode()).unwrap_or(0);
        let detail = if ft.is_symlink() {
            fs::read_link(entry.path())
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else if ft.is_file() {
            keel_store::hash_file(entry.path())
                .map(|d| d.to_hex())
                .unwrap_or_else(|_| "unreadable".into())
        } else {
            String::new()
        };
        h.update(format!("{}\0{mode:o}\0{detail}\n", rel.display()).as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The host's installed packages, sorted: those whose files are on disk (dpkg's
/// `config-files` and `not-installed` entries leave nothing a build sees).
fn host_packages(root: &Path) -> Option<Vec<String>> {
    let admindir = root.join("var/lib/dpkg");
    let out = if admindir.join("status").exists() {
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", admindir.display()))
            .args([
                "-W",
                "-f",
                "${db:Status-Abbrev}|${Package} ${Version} ${Architecture}\n",
            ])
            .stderr(std::process::Stdio::null())
            .output()
    } else {
        Command::new("rpm")
            .arg("--root")
            .arg(root)
            .args([
                "-qa",
                "--qf",
                "ii |%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE} %{ARCH}\\n",
            ])
            .output()
    };
    let out = out.ok().filter(|o| o.status.success())?;
    let list = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_once('|'))
        .filter(|(status, _)| !matches!(status.as_bytes().get(1), Some(b'n' | b'c')))
        .map(|(_, pkg)| pkg.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    lines.sort_unstable();
    Some(lines)
}

/// The host build root under `root` (`/` but in tests), in parts: one `part NAME DIGEST`
/// line each, so a change can be named ([`changed_parts`]), then the details.
fn describe_host_at(root: &Path) -> String {
    // Each tool's version is a process of its own: asked side by side, a fresh store's
    // first build waits for the slowest one rather than for all of them in turn.
    let (versions, packages) = std::thread::scope(|s| {
        let probes: Vec<_> = HOST_TOOLS
            .iter()
            .map(|(tool, args)| s.spawn(move || first_line_of(tool, args)))
            .collect();
        let packages = host_packages(root);
        let versions: Vec<String> = probes
            .into_iter()
            .map(|p| p.join().unwrap_or_else(|_| "unknown".to_owned()))
            .collect();
        (versions, packages)
    });
    let mut text = String::from("keel host toolchain v2\n");
    let package_text = match &packages {
        Some(list) => list.join("\n"),
        None => "unknown".into(),
    };
    let _ = writeln!(
        text,
        "part packages {}",
        blake3::hash(package_text.as_bytes()).to_hex()
    );
    for dir in HOST_RPM_CONFIG {
        let _ = writeln!(text, "part /{dir} {}", tree_digest(&root.join(dir)));
    }
    // The rest of /etc a build sees (see crate::sandbox::HOST_ETC).
    let mut etc = blake3::Hasher::new();
    for name in crate::sandbox::HOST_ETC {
        if name == "rpm" {
            continue;
        }
        etc.update(format!("{name}\0{}\n", tree_digest(&root.join("etc").join(name))).as_bytes());
    }
    for (name, content) in crate::sandbox::HOST_ETC_GENERATED {
        etc.update(format!("{name}\0{content}\n").as_bytes());
    }
    let _ = writeln!(text, "part /etc {}", etc.finalize().to_hex());
    for ((tool, _), version) in HOST_TOOLS.iter().zip(&versions) {
        let _ = writeln!(text, "part {tool} {version}");
    }
    for ((tool, _), version) in HOST_TOOLS.iter().zip(&versions) {
        let _ = writeln!(text, "{tool}: {version}");
    }
    text.push_str("packages:\n");
    text.push_str(&package_text);
    text.push('\n');
    text
}

/// The parts of two host descriptions ([`describe`]) that differ, by name (`packages`,
/// `/usr/lib/rpm`, `/etc`, `gcc`…): what a "toolchain changed" can say beyond two digests.
pub fn changed_parts(old: &str, new: &str) -> Vec<String> {
    let parts = |t: &str| -> std::collections::BTreeMap<String, String> {
        t.lines()
            .filter_map(|l| l.strip_prefix("part "))
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let (a, b) = (parts(old), parts(new));
    let mut names: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
    names.sort();
    names.dedup();
    names.retain(|n| a.get(n) != b.get(n));
    names
}

fn describe_dir(dir: &Path) -> Result<String, Error> {
    let mut text = String::from("keel dir toolchain v1\n");
    let walk = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.map_err(|e| Error::Io {
            action: "walk toolchain directory",
            path: dir.to_owned(),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(dir).expect("under the root");
        let m = entry.metadata().map_err(|e| Error::Io {
            action: "stat",
            path: entry.path().to_owned(),
            source: e.into(),
        })?;
        let mode = m.mode();
        let ft = entry.file_type();
        let detail = if ft.is_symlink() {
            fs::read_link(entry.path())
                .map_err(Error::io("read symlink", entry.path()))?
                .to_string_lossy()
                .into_owned()
        } else if ft.is_file() {
            keel_store::hash_file(entry.path())
                .map_err(Error::io("read", entry.path()))?
                .to_hex()
        } else {
            String::new()
        };
        let _ = writeln!(
            text,
            "/{}\t{mode:o}\t{}\t{}\t{}\t{detail}",
            rel.display(),
            m.uid(),
            m.gid(),
            if ft.is_file() { m.size() } else { 0 }
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_description_lists_packages_and_tools() {
        let text = describe(&Toolchain::Host).unwrap();
        assert!(text.contains("\nrpmbuild: RPM version"), "{text}");
        assert!(text.contains("\ngcc: gcc"), "{text}");
        assert!(text.contains("\nld: GNU ld"), "{text}");
        // dpkg on Debian, rpm elsewhere: either way bash is installed.
        assert!(text.lines().any(|l| l.starts_with("bash ")), "{text}");
    }

    /// A fake host root: one installed package and rpm's configuration.
    fn fake_host(root: &Path) {
        fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
        fs::write(
            root.join("var/lib/dpkg/status"),
            "Package: rpm\nStatus: install ok installed\nArchitecture: amd64\nVersion: 4.18\n\n",
        )
        .unwrap();
        fs::create_dir_all(root.join("usr/lib/rpm/macros.d")).unwrap();
        fs::write(root.join("usr/lib/rpm/macros"), "%_topdir /build\n").unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
    }

    #[test]
    fn host_key_covers_rpm_configuration_and_names_the_part() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_host(root);
        let before = describe_host_at(root);
        assert!(before.contains("\nrpm 4.18 amd64\n"), "{before}");
        fs::write(root.join("usr/lib/rpm/macros.d/macros.extra"), "%x 1\n").unwrap();
        let added = describe_host_at(root);
        assert_ne!(before, added);
        assert_eq!(changed_parts(&before, &added), ["/usr/lib/rpm"]);
        fs::create_dir_all(root.join("etc/rpm")).unwrap();
        fs::write(root.join("etc/rpm/macros.dist"), "%dist .x\n").unwrap();
        let etc_rpm = describe_host_at(root);
        assert_eq!(changed_parts(&added, &etc_rpm), ["/etc/rpm"]);
        fs::write(root.join("etc/ld.so.conf"), "/opt/lib\n").unwrap();
        assert_eq!(changed_parts(&etc_rpm, &describe_host_at(root)), ["/etc"]);
    }

    /// A "toolchain changed" can name its parts later: the descriptions behind the
    /// fingerprints are kept (the newest few) beside the fingerprint cache.
    #[test]
    fn kept_descriptions_name_what_changed_between_two_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let (root, cache) = (dir.path().join("root"), dir.path().join("cache"));
        fake_host(&root);
        let keep = |text: &str| {
            let d = BlobDigest::of_bytes(text.as_bytes());
            keep_description(&cache, &d, text);
            d
        };
        let before = keep(&describe_host_at(&root));
        fs::write(root.join("usr/lib/rpm/macros.d/macros.extra"), "%x 1\n").unwrap();
        let after = keep(&describe_host_at(&root));
        assert_eq!(
            changed_parts_between(&cache, &before, &after),
            Some(vec!["/usr/lib/rpm".to_owned()])
        );
        let unknown = BlobDigest::of_bytes(b"computed elsewhere");
        assert_eq!(changed_parts_between(&cache, &before, &unknown), None);
        // Only the newest are kept.
        for i in 0..DESCRIPTIONS_KEPT {
            std::thread::sleep(std::time::Duration::from_millis(2));
            keep(&format!("keel host toolchain v2\npart packages {i}\n"));
        }
        assert_eq!(
            fs::read_dir(cache.join(DESCRIPTIONS)).unwrap().count(),
            DESCRIPTIONS_KEPT
        );
        assert_eq!(changed_parts_between(&cache, &before, &after), None);
    }

    #[test]
    fn host_key_ignores_what_the_build_root_does_not_hold() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_host(root);
        let before = describe_host_at(root);
        // A package removed with its configuration kept (`dpkg -r`): no file in the root.
        let mut status = fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap();
        status.push_str(
            "Package: nginx\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.22\n\n",
        );
        fs::write(root.join("var/lib/dpkg/status"), &status).unwrap();
        // Host-only places: /usr/local, /opt, an /etc file no build sees.
        for f in [
            "usr/local/lib/rpm/macros",
            "opt/tool/bin/x",
            "etc/nginx/nginx.conf",
            "etc/shadow",
        ] {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, "x").unwrap();
        }
        assert_eq!(before, describe_host_at(root));
        // The same package installed is part of the key, and named.
        fs::write(
            root.join("var/lib/dpkg/status"),
            status.replace("deinstall ok config-files", "install ok installed"),
        )
        .unwrap();
        assert_eq!(
            changed_parts(&before, &describe_host_at(root)),
            ["packages"]
        );
    }

    #[test]
    fn host_fingerprint_is_stable_and_cached_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (name, d1) = Toolchain::Host.fingerprint().unwrap();
        assert_eq!(name, "host");
        let (_, d2) = Toolchain::Host.fingerprint_cached(dir.path()).unwrap();
        assert_eq!(d1, d2);
        let file = dir.path().join("toolchain-host.json");
        let saved: SavedFingerprint = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        assert_eq!(saved.digest, d1.to_hex());
        // A saved entry with the current stamp is believed without recomputing…
        let forged = SavedFingerprint {
            digest: "ab".repeat(32),
            ..saved
        };
        fs::write(&file, serde_json::to_vec(&forged).unwrap()).unwrap();
        let (_, d3) = Toolchain::Host.fingerprint_cached(dir.path()).unwrap();
        assert_eq!(d3.to_hex(), "ab".repeat(32));
        // …and one whose stamp no longer matches is recomputed.
        let stale = SavedFingerprint {
            stamp: "old".into(),
            ..forged
        };
        fs::write(&file, serde_json::to_vec(&stale).unwrap()).unwrap();
        let (_, d4) = Toolchain::Host.fingerprint_cached(dir.path()).unwrap();
        assert_eq!(d4, d1);
    }

    #[test]
    fn dir_fingerprint_covers_content_mode_and_symlinks() {
        let fp = |f: &dyn Fn(&Path)| {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("chroot");
            fs::create_dir_all(root.join("usr/bin")).unwrap();
            fs::write(root.join("usr/bin/cc"), b"compiler").unwrap();
            std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
            f(&root);
            BlobDigest::of_bytes(describe(&Toolchain::Dir(root)).unwrap().as_bytes())
        };
        let base = fp(&|_| {});
        assert_eq!(base, fp(&|_| {}), "independent of where the tree lives");
        assert_ne!(
            base,
            fp(&|r| fs::write(r.join("usr/bin/cc"), b"compileR").unwrap())
        );
        assert_ne!(
            base,
            fp(
                &|r| fs::set_permissions(r.join("usr/bin/cc"), fs::Permissions::from_mode(0o700))
                    .unwrap()
            )
        );
        assert_ne!(
            base,
            fp(&|r| {
                fs::remove_file(r.join("bin")).unwrap();
                std::os::unix::fs::symlink("usr/sbin", r.join("bin")).unwrap();
            })
        );
        assert_eq!(
            Toolchain::Dir(PathBuf::from("/x/worker")).name(),
            "dir:worker"
        );
    }
}
