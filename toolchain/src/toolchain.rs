//! The base of every build root, and its identity.
//!
//! A [`Toolchain`] is either the machine keel runs on ([`Toolchain::Host`], for development
//! and CI) or a worker chroot unpacked into a directory ([`Toolchain::Dir`]). Its
//! fingerprint is part of every build's key, so upgrading the compiler rebuilds everything
//! it built.
//!
//! - **Host**: the BLAKE3 of a canonical text listing the installed packages
//!   (`dpkg-query` on Debian-like hosts, `rpm -qa` on rpm hosts, sorted) and the first line
//!   of `rpmbuild --version`, `gcc --version` and `ld --version` (a missing tool is
//!   recorded as absent, not an error). [`fingerprint_cached`] keeps it on disk keyed by
//!   the modification times of the package database and of those tools, so a no-op build
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
        let (name, d) = self.fingerprint()?;
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
        let (mtime, size) = fs::metadata(p)
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
    // Each tool's version is a process of its own: asked side by side, a fresh store's
    // first build waits for the slowest one rather than for all of them in turn.
    let (versions, packages) = std::thread::scope(|s| {
        let probes: Vec<_> = HOST_TOOLS
            .iter()
            .map(|(tool, args)| s.spawn(move || first_line_of(tool, args)))
            .collect();
        let packages = if Path::new("/var/lib/dpkg/status").exists() {
            Command::new("dpkg-query")
                .args(["-W", "-f", "${Package} ${Version} ${Architecture}\\n"])
                .output()
        } else {
            Command::new("rpm")
                .args([
                    "-qa",
                    "--qf",
                    "%{NAME} %{EPOCHNUM}:%{VERSION}-%{RELEASE} %{ARCH}\\n",
                ])
                .output()
        };
        let versions: Vec<String> = probes
            .into_iter()
            .map(|p| p.join().unwrap_or_else(|_| "unknown".to_owned()))
            .collect();
        (versions, packages)
    });
    let mut text = String::from("keel host toolchain v1\n");
    match packages {
        Ok(out) if out.status.success() => {
            let list = String::from_utf8_lossy(&out.stdout);
            let mut lines: Vec<&str> = list.lines().filter(|l| !l.trim().is_empty()).collect();
            lines.sort_unstable();
            text.push_str("packages:\n");
            for l in lines {
                text.push_str(l);
                text.push('\n');
            }
        }
        _ => text.push_str("packages: unknown\n"),
    }
    for ((tool, _), version) in HOST_TOOLS.iter().zip(versions) {
        let _ = writeln!(text, "{tool}: {version}");
    }
    text
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
