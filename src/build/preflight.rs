//! Before a package builds: does its build root have the programs the build will call?
//!
//! A build root that lacks `patch` fails deep in `%prep` with `/usr/bin/patch: not found`,
//! after the sources were unpacked, and says nothing about the toolchain. This check runs
//! before rpmbuild does and names the missing program, what needs it (the spec and the
//! line, or the toolchain manifest's package), and where it looked.
//!
//! What a build needs, as far as keel can tell without running it:
//! - `rpmbuild` itself and `sh`;
//! - the commands of the packages the toolchain manifest lists, where a package maps to
//!   one ([`MANIFEST_COMMANDS`]): a manifest is a promise about the build root;
//! - `patch` for a spec with a `Patch` tag or a `%patch`/`%autopatch` line;
//! - the unpacker of each source archive by its extension (`tar`, `gzip`, `bzip2`, `xz`,
//!   `unzip`, `zstd`).
//!
//! A program a spec's `BuildRequires` names is left to its dependency layer (the package
//! of that name, built in the tree, brings it). What it deliberately does not do: guess
//! the commands a `%build` script runs.

use std::path::{Path, PathBuf};

/// Directories a build's `PATH` searches (the sandbox's `PATH`), relative to the root.
const SEARCH: [&str; 4] = ["usr/bin", "bin", "usr/sbin", "sbin"];

/// Toolchain manifest packages and the command each one must provide.
pub const MANIFEST_COMMANDS: [(&str, &str); 50] = [
    ("asciidoc", "asciidoc"),
    ("autoconf", "autoconf"),
    ("automake", "automake"),
    ("bash", "bash"),
    ("binutils", "ld"),
    ("bison", "bison"),
    ("bzip2", "bzip2"),
    ("cmake", "cmake"),
    ("coreutils", "cp"),
    ("cpio", "cpio"),
    ("debugedit", "find-debuginfo"),
    ("diffutils", "diff"),
    ("dwz", "dwz"),
    ("elfutils", "eu-strip"),
    ("file", "file"),
    ("findutils", "find"),
    ("flex", "flex"),
    ("gawk", "awk"),
    ("gcc", "gcc"),
    ("gcc-c++", "g++"),
    ("gettext", "msgfmt"),
    ("gfortran", "gfortran"),
    ("gperf", "gperf"),
    ("grep", "grep"),
    ("gtk-doc", "gtkdocize"),
    ("gzip", "gzip"),
    ("intltool", "intltoolize"),
    ("itstool", "itstool"),
    ("libtool", "libtoolize"),
    ("libxslt", "xsltproc"),
    ("lua", "lua"),
    ("m4", "m4"),
    ("make", "make"),
    ("meson", "meson"),
    ("ninja-build", "ninja"),
    ("patch", "patch"),
    ("perl", "perl"),
    ("pkgconf", "pkgconf"),
    ("procps-ng", "ps"),
    ("python3", "python3"),
    ("rpm-build", "rpmbuild"),
    ("sed", "sed"),
    ("swig", "swig"),
    ("tar", "tar"),
    ("texinfo", "makeinfo"),
    ("unzip", "unzip"),
    ("which", "which"),
    ("xz", "xz"),
    ("zip", "zip"),
    ("zstd", "zstd"),
];

/// Archive extensions and the programs that unpack them.
const ARCHIVES: [(&str, &[&str]); 11] = [
    (".tar.gz", &["tar", "gzip"]),
    (".tgz", &["tar", "gzip"]),
    (".tar.bz2", &["tar", "bzip2"]),
    (".tbz2", &["tar", "bzip2"]),
    (".tar.xz", &["tar", "xz"]),
    (".txz", &["tar", "xz"]),
    (".tar.zst", &["tar", "zstd"]),
    (".tar", &["tar"]),
    (".zip", &["unzip"]),
    (".gz", &["gzip"]),
    (".xz", &["xz"]),
];

/// One program a build needs, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub program: String,
    /// What needs it: `greet-fortune.spec:7: Patch0: …`, `toolchain manifest: patch`.
    pub why: String,
}

fn need(program: &str, why: String) -> Need {
    Need {
        program: program.to_owned(),
        why,
    }
}

/// What every build needs, and what the toolchain manifest's packages promise.
pub fn base_needs(manifest: &[String]) -> Vec<Need> {
    let mut out = vec![
        need("rpmbuild", "every build (rpmbuild runs it)".into()),
        need("sh", "every build (rpmbuild's scripts)".into()),
    ];
    for name in manifest {
        if let Some((_, cmd)) = MANIFEST_COMMANDS.iter().find(|(p, _)| p == name) {
            out.push(need(
                cmd,
                format!("the toolchain manifest's package {name}"),
            ));
        }
    }
    out
}

/// What the spec `spec_name` (its text `spec`) needs beyond [`base_needs`].
pub fn spec_needs(spec_name: &str, spec: &str) -> Vec<Need> {
    let mut out = Vec::new();
    let mut build_requires = Vec::new();
    for (i, line) in spec.lines().enumerate() {
        let t = line.trim();
        let lower = t.to_ascii_lowercase();
        let at = || format!("{spec_name}:{}: {t}", i + 1);
        if let Some(rest) = lower.strip_prefix("buildrequires:") {
            build_requires.extend(
                rest.split([',', ' ', '\t'])
                    .filter(|w| !w.is_empty())
                    .map(str::to_owned),
            );
        }
        let tag_value = |tag: &str| -> Option<&str> {
            let rest = lower.strip_prefix(tag)?;
            let colon = rest.find(':')?;
            rest[..colon]
                .chars()
                .all(|c| c.is_ascii_digit())
                .then(|| t[tag.len() + colon + 1..].trim())
        };
        if tag_value("patch").is_some()
            || lower.starts_with("%patch")
            || lower.starts_with("%autopatch")
        {
            out.push(need("patch", at()));
        }
        if let Some(src) = tag_value("source") {
            let file = src.rsplit('/').next().unwrap_or(src).to_ascii_lowercase();
            if let Some((_, programs)) = ARCHIVES.iter().find(|(ext, _)| file.ends_with(ext)) {
                for p in *programs {
                    out.push(need(p, at()));
                }
            }
        }
    }
    out.retain(|n| !build_requires.contains(&n.program));
    out
}

/// Whether `program` is in one of the build root's `PATH` directories under `root`.
fn present(root: &Path, program: &str) -> bool {
    SEARCH
        .iter()
        .any(|d| std::fs::symlink_metadata(root.join(d).join(program)).is_ok())
}

/// The needs `root` (the build root's top, `/` for the host toolchain) does not meet, as
/// one message naming each missing program and what needs it; `None` when all are met.
pub fn check(root: &Path, needs: &[Need]) -> Option<String> {
    let mut missing: Vec<&Need> = Vec::new();
    for n in needs {
        if !present(root, &n.program) && !missing.iter().any(|m| m.program == n.program) {
            missing.push(n);
        }
    }
    if missing.is_empty() {
        return None;
    }
    let looked: Vec<PathBuf> = SEARCH.iter().map(|d| root.join(d)).collect();
    let mut msg = String::from("the build root lacks what this build needs:");
    for m in &missing {
        msg.push_str(&format!("\n  `{}`, needed by {}", m.program, m.why));
    }
    msg.push_str(&format!(
        "\n(looked in {}; install the missing programs{} or add their packages to the toolchain)",
        looked
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if root == Path::new("/") {
            " on this machine (scripts/install-deps.sh)"
        } else {
            ""
        }
    ));
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "Name: greet-fortune
Version: 1
Source0: https://example.invalid/greet-fortune-1.tar.xz
Patch0: fix.patch
BuildRequires: gcc

%prep
%autosetup -p1
";

    fn root_with(programs: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        for p in programs {
            std::fs::write(dir.path().join("usr/bin").join(p), "").unwrap();
        }
        dir
    }

    #[test]
    fn a_root_without_patch_is_named_with_the_spec_line_that_needs_it() {
        let root = root_with(&["rpmbuild", "sh", "tar", "xz"]);
        let needs = spec_needs("greet-fortune.spec", SPEC);
        let msg = check(root.path(), &needs).expect("patch is missing");
        assert!(
            msg.contains("`patch`, needed by greet-fortune.spec:4: Patch0: fix.patch"),
            "{msg}"
        );
        assert!(!msg.contains("`tar`") && !msg.contains("`xz`"), "{msg}");
        assert!(msg.contains(&root.path().join("usr/bin").display().to_string()));
    }

    #[test]
    fn a_root_with_everything_passes() {
        let root = root_with(&["rpmbuild", "sh", "tar", "xz", "patch", "make"]);
        let mut needs = base_needs(&["make".into(), "glibc-devel".into()]);
        needs.extend(spec_needs("greet-fortune.spec", SPEC));
        assert_eq!(check(root.path(), &needs), None);
    }

    #[test]
    fn archives_and_manifest_packages_name_their_programs() {
        let root = root_with(&["sh", "rpmbuild"]);
        let mut needs = base_needs(&["make".into()]);
        needs.extend(spec_needs(
            "x.spec",
            "Source0: a.zip\nSource1: b.tar.bz2\nSource2: notes.txt\n",
        ));
        let msg = check(root.path(), &needs).unwrap();
        for (p, why) in [
            ("make", "manifest's package make"),
            ("unzip", "x.spec:1"),
            ("bzip2", "x.spec:2"),
            ("tar", "x.spec:2"),
        ] {
            assert!(
                msg.contains(&format!("`{p}`, needed by the toolchain {why}"))
                    || msg.contains(&format!("`{p}`, needed by {why}")),
                "{p}: {msg}"
            );
        }
        assert_eq!(msg.matches("needed by").count(), 4, "{msg}");
    }

    /// rpmbuild's `%install` ends in find-debuginfo, which calls `eu-strip`: a Debian host
    /// without elfutils failed every arch build there, after compiling. The manifest lists
    /// elfutils and debugedit, so the check names them first.
    #[test]
    fn the_debuginfo_tools_the_manifest_promises_are_named() {
        let root = root_with(&["sh", "rpmbuild", "find-debuginfo"]);
        let needs = base_needs(&["elfutils".into(), "debugedit".into(), "nosuchpkg".into()]);
        let msg = check(root.path(), &needs).unwrap();
        assert!(
            msg.contains("`eu-strip`, needed by the toolchain manifest's package elfutils"),
            "{msg}"
        );
        assert_eq!(msg.matches("needed by").count(), 1, "{msg}");
    }

    #[test]
    fn a_program_the_spec_build_requires_is_left_to_its_layer() {
        let root = root_with(&["sh", "rpmbuild"]);
        let needs = spec_needs("p.spec", "BuildRequires: patch\nPatch1: x.patch\n");
        assert_eq!(check(root.path(), &needs), None);
    }
}
