//! How toolchains are unpacked: a build root's modes and owners come from the toolchain
//! itself, never from how keel was started (umask, user, capabilities).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use crate::support::{RunExt as _, project};

const SPEC: &str = "Name: tiny
Version: 1
Release: 1
Summary: a package
License: MIT
BuildArch: noarch

%description
A package.

%install
mkdir -p %{buildroot}/usr/share/tiny
echo ok > %{buildroot}/usr/share/tiny/ok

%files
/usr/share/tiny/ok
";

fn set_mode(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn a_toolchain_tarball_keeps_its_modes_whatever_keels_umask() {
    let p = project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\n[toolchain]\nroot = \"chroot.tar.gz\"\n",
        )
        .file("tree/SPECS/tiny/tiny.spec", SPEC)
        .build();
    // A root whose tarball has no `./` entry, and one file whose parents it lacks.
    let src = p.path("src");
    for d in ["usr/bin", "usr/share/private", "opt/x"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
    std::fs::write(src.join("opt/x/file"), "x").unwrap();
    std::os::unix::fs::symlink("usr/bin", src.join("bin")).unwrap();
    for (path, m) in [
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/bin/tool", 0o750),
        ("usr/share", 0o755),
        ("usr/share/private", 0o700),
        ("opt/x/file", 0o644),
    ] {
        set_mode(&src.join(path), m);
    }
    let tar = Command::new("tar")
        .arg("-czf")
        .arg(p.path("tree/chroot.tar.gz"))
        .arg("-C")
        .arg(&src)
        .args(["--owner=4321", "--group=4321", "usr", "bin", "opt/x/file"])
        .status()
        .unwrap();
    assert!(tar.success());

    let mut keel = p.keel(&["-C", "tree", "build", "--dry-run"]);
    // SAFETY: umask(2) is async-signal-safe.
    unsafe {
        keel.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    keel.run().success();

    let toolchains = p.store().join("toolchains");
    let roots: Vec<_> = std::fs::read_dir(&toolchains)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|e| !e.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    let root = &roots[0];
    let modes: Vec<(&str, u32)> = [
        "",
        "usr",
        "usr/bin",
        "usr/bin/tool",
        "usr/share/private",
        "opt",
        "opt/x",
        "opt/x/file",
    ]
    .into_iter()
    .map(|rel| (rel, mode(&root.join(rel))))
    .collect();
    assert_eq!(
        modes,
        [
            ("", 0o755),
            ("usr", 0o755),
            ("usr/bin", 0o755),
            ("usr/bin/tool", 0o750),
            ("usr/share/private", 0o700),
            ("opt", 0o755),
            ("opt/x", 0o755),
            ("opt/x/file", 0o644),
        ]
    );
    assert_eq!(
        std::fs::read_link(root.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    // The files are the user's who runs keel, as a layer unpacked from an RPM is.
    // SAFETY: no preconditions.
    let me = unsafe { libc::geteuid() };
    for rel in ["", "usr/bin/tool", "opt/x/file"] {
        assert_eq!(
            std::fs::symlink_metadata(root.join(rel)).unwrap().uid(),
            me,
            "{rel}"
        );
    }
}

/// A noarch package `name` whose `%install` runs `install`, built with the host's
/// rpmbuild into `out`.
fn rpmbuild(work: &Path, out: &Path, name: &str, install: &str, files: &str) -> std::path::PathBuf {
    let spec = work.join(format!("{name}.spec"));
    std::fs::write(
        &spec,
        format!(
            "Name: {name}\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\nBuildArch: noarch\n\
             %description\nd\n%install\n{install}\n%files\n{files}\n"
        ),
    )
    .unwrap();
    let status = Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", work.join(name).display()))
        .arg("--define")
        .arg(format!("_rpmdir {}", out.display()))
        .arg("--define")
        .arg("_build_name_fmt %{NAME}.rpm")
        .arg(&spec)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "rpmbuild {name}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    out.join(format!("{name}.rpm"))
}

#[test]
fn toolchain_rpms_whose_paths_conflict_are_refused_naming_both() {
    let p = project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\n[toolchain]\nrpms = \"tc-rpms\"\n",
        )
        .file("tree/SPECS/tiny/tiny.spec", SPEC)
        .build();
    let tc = p.path("tree/tc-rpms");
    std::fs::create_dir_all(&tc).unwrap();
    let work = p.path("work");
    std::fs::create_dir_all(&work).unwrap();
    // `a-libs` has a directory of files; `b-link`, merged after it, a symlink at its path.
    rpmbuild(
        &work,
        &tc,
        "a-libs",
        "mkdir -p %{buildroot}/usr/lib/keel-tc && echo x > %{buildroot}/usr/lib/keel-tc/libx.so.1",
        "/usr/lib/keel-tc",
    );
    rpmbuild(
        &work,
        &tc,
        "b-link",
        "mkdir -p %{buildroot}/usr/lib && ln -s /opt/elsewhere %{buildroot}/usr/lib/keel-tc",
        "/usr/lib/keel-tc",
    );
    let run = p.keel(&["-C", "tree", "build", "--dry-run"]).run();
    assert_ne!(run.code(), 0, "{}", run.stdout());
    let err = run.stderr();
    assert!(
        err.contains("b-link")
            && err.contains("a-libs")
            && err.contains("/usr/lib/keel-tc:")
            && err.contains("drop its files"),
        "{err}"
    );
}
