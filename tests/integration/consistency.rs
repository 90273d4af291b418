//! What the graph says is what the build makes: the same macro files in the same order,
//! and nothing learned from another tree's builds.

use crate::build::rpms;
use crate::support::*;

const MO_SPEC: &str = "Name: mo
Version: 1.0
Release: %{demo_val}
Summary: Its release comes from the tree's macro files
License: MIT
BuildArch: noarch

%description
Mo.

%install
mkdir -p %{buildroot}/usr/share/mo
echo %{demo_val} > %{buildroot}/usr/share/mo/val

%files
/usr/share/mo/val

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1.0-1
- Mo.
";

/// `keel query whatprovides mo` names `nevr`.
fn assert_provider(p: &Project, nevr: &str) {
    let run = p
        .keel(&["-C", "tree", "query", "whatprovides", "mo"])
        .run()
        .success();
    assert!(run.stdout().contains(nevr), "{}", run.stdout());
}

#[test]
fn the_graph_and_rpmbuild_load_macro_files_in_the_same_order() {
    // keel.toml's order, not the names' order: a later file's definition wins.
    let p = project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\nmacro_files = [\"m/zz\", \"m/aa\"]\n",
        )
        .file("tree/m/zz", "%demo_val 1\n")
        .file("tree/m/aa", "%demo_val 2\n")
        .file("tree/SPECS/mo/mo.spec", MO_SPEC)
        .build();
    assert_provider(&p, "mo-1.0-2.noarch");
    p.keel(&["-C", "tree", "build"]).run().success();
    let built = rpms(&p.path("tree/out"));
    assert!(
        built.contains_key("mo-1.0-2.noarch.rpm") && built.contains_key("mo-1.0-2.src.rpm"),
        "{built:?}"
    );
    // Swapping the two entries swaps the winner, in the graph and in the build alike.
    std::fs::write(
        p.path("tree/keel.toml"),
        "[specs]\ndirs = [\"SPECS\"]\nmacro_files = [\"m/aa\", \"m/zz\"]\n",
    )
    .unwrap();
    assert_provider(&p, "mo-1.0-1.noarch");
    p.keel(&["-C", "tree", "build"]).run().success();
    let built = rpms(&p.path("tree/out"));
    assert!(built.contains_key("mo-1.0-1.noarch.rpm"), "{built:?}");
}

/// A package whose file list is known only once it is built (`%files -f`).
const SHARED_A: &str = "Name: shared
Version: 1
Release: 1
Summary: Ships data.txt, which its spec does not name
License: MIT
BuildArch: noarch

%description
Shared.

%install
mkdir -p %{buildroot}/usr/share/shared
echo a > %{buildroot}/usr/share/shared/data.txt
echo /usr/share/shared/data.txt > files.list

%files -f files.list

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- Shared.
";

/// Another tree's package of the same name, which ships no data.txt.
const SHARED_B: &str = "Name: shared
Version: 1
Release: 1
Summary: Ships other.txt
License: MIT
BuildArch: noarch

%description
Shared, the other one.

%install
mkdir -p %{buildroot}/usr/share/shared
echo b > %{buildroot}/usr/share/shared/other.txt

%files
/usr/share/shared/other.txt

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- Shared.
";

const USER: &str = "Name: user
Version: 1
Release: 1
Summary: Needs data.txt to build
License: MIT
BuildArch: noarch
BuildRequires: /usr/share/shared/data.txt

%description
User.

%install
mkdir -p %{buildroot}/usr/share/user
cp /usr/share/shared/data.txt %{buildroot}/usr/share/user/

%files
/usr/share/user/data.txt

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- User.
";

#[test]
fn capabilities_learned_from_one_tree_never_change_another_trees_graph() {
    let p = project()
        .file("a/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("a/SPECS/shared/shared.spec", SHARED_A)
        .file("a/SPECS/user/user.spec", USER)
        .file("b/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("b/SPECS/shared/shared.spec", SHARED_B)
        .file("b/SPECS/user/user.spec", USER)
        .build();
    let unresolved = "/usr/share/shared/data.txt is provided by nothing";
    // Tree a builds its `shared` in the store both trees use.
    p.keel(&["-C", "a", "build", "shared"]).run().success();
    // Tree a learned what its own build provides: user's build dependency resolves.
    let run = p
        .keel(&["-C", "a", "build", "--dry-run", "user"])
        .run()
        .success();
    assert!(!run.stderr().contains(unresolved), "{}", run.stderr());
    // Tree b's `shared` never shipped data.txt: a's build must not make b think so.
    p.keel(&["-C", "b", "build", "--dry-run", "user"])
        .run()
        .success()
        .stderr_has(unresolved);
    p.keel(&["-C", "b", "build", "shared"]).run().success();
    p.keel(&["-C", "b", "build", "--dry-run", "user"])
        .run()
        .success()
        .stderr_has(unresolved);
}
