//! A build root without a program a package needs is named before rpmbuild runs.

use crate::support::*;

const PATCHED: &str = "Name: patched
Version: 1
Release: 1
Summary: Needs patch
License: MIT
BuildArch: noarch
Patch0: fix.patch

%description
Needs patch.

%prep
%setup -q -c -T
%autopatch -p1

%files

%changelog
* Fri Dec 04 2026 keel <keel@example.invalid> - 1-1
- Patched.
";

#[test]
fn a_build_root_without_patch_is_named_before_the_build() {
    let p = project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\n[toolchain]\nroot = \"chroot\"\n",
        )
        .file("tree/SPECS/patched/patched.spec", PATCHED)
        .file("tree/SPECS/patched/fix.patch", "")
        // A build root with a shell and rpmbuild's helpers, but no patch.
        .file("tree/chroot/usr/bin/sh", "")
        .file("tree/chroot/usr/bin/rpmbuild", "")
        .build();
    let run = p.keel(&["-C", "tree", "build"]).run().code_is(1);
    let err = run.stderr();
    assert!(
        err.contains("`patch`, needed by patched.spec:7: Patch0: fix.patch"),
        "{err}"
    );
    assert!(
        !err.contains("`sh`") && !err.contains("`rpmbuild`"),
        "{err}"
    );
    assert!(err.contains("chroot/usr/bin"), "{err}");
}
