//! Early cutoff never hides bytes from whoever reads them: a dependent is keyed on the
//! view of its dependency it really reads (`ActionKind::dependency_view`), and the RPM
//! summary that dependent builds are keyed on sees everything their build root sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// `keel build --json` in the project's tree: the final status of every action.
fn build(p: &Project) -> BTreeMap<String, String> {
    let (run, status) = crate::build::build_json(p, &[]);
    run.success();
    status
}

const CHANGELOG: &str = "%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- First.
";

/// `lib` ships a message; `user` copies it at build time; the image holds `lib`.
fn changelog_tree() -> Project {
    let lib = format!(
        "Name: lib
Version: 1
Release: 1
Summary: A message
License: MIT
BuildArch: noarch

%description
Ships a message.

%install
mkdir -p %{{buildroot}}/usr/share/lib
echo lib 1 > %{{buildroot}}/usr/share/lib/msg

%files
/usr/share/lib/msg

{CHANGELOG}"
    );
    let user = format!(
        "Name: user
Version: 1
Release: 1
Summary: Copies the message
License: MIT
BuildArch: noarch
BuildRequires: lib

%description
Copies lib's message.

%install
install -D -m 0644 /usr/share/lib/msg %{{buildroot}}/usr/share/user/msg

%files
/usr/share/user/msg

{CHANGELOG}"
    );
    project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\n[images]\nconfigs = [\"images/app.json\"]\n",
        )
        .file("tree/SPECS/lib/lib.spec", lib)
        .file("tree/SPECS/user/user.spec", user)
        .file(
            "tree/images/app.json",
            r#"{
    "Disks": [{"Artifacts": [{"Name": "app", "Compression": "tar.gz"}]}],
    "SystemConfigs": [{"Name": "App", "PackageLists": ["lists/app.json"], "Hostname": "app"}]
}"#,
        )
        .file("tree/images/lists/app.json", r#"{"packages": ["lib"]}"#)
        .build()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The one published RPM whose file name starts with `name-`.
fn published_rpm(p: &Project, name: &str) -> PathBuf {
    let dir = p.path("tree/out/RPMS/noarch");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

/// The `pkgid` that the published repository's `primary.xml` gives package `name`.
fn repodata_pkgid(p: &Project, name: &str) -> String {
    let repodata = p.path("tree/out/RPMS/repodata");
    let primary = std::fs::read_dir(&repodata)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .contains("primary.xml")
        })
        .unwrap_or_else(|| panic!("no primary.xml in {}", repodata.display()));
    let file = primary.file_name().unwrap().to_string_lossy().into_owned();
    let xml = if file.ends_with(".zst") {
        run_ok(Command::new("zstd").args(["-dc"]).arg(&primary))
    } else if file.ends_with(".gz") {
        run_ok(Command::new("gzip").args(["-dc"]).arg(&primary))
    } else if file.ends_with(".xz") {
        run_ok(Command::new("xz").args(["-dc"]).arg(&primary))
    } else {
        std::fs::read_to_string(&primary).unwrap()
    };
    let start = xml
        .find(&format!("<name>{name}</name>"))
        .unwrap_or_else(|| panic!("{name} not in {file}"));
    let rest = &xml[start..];
    let id = rest
        .split("<checksum type=\"sha256\" pkgid=\"YES\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap_or_else(|| panic!("no sha256 pkgid for {name} in {file}"));
    id.to_owned()
}

fn sha256_of(path: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// `rpm -q --changelog name` against the rpm database inside the published image.
fn image_changelog(p: &Project, name: &str) -> String {
    let tar = p.path("tree/out/images/app/app.tar.gz");
    let root = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tar)
            .arg("-C")
            .arg(root.path()),
    );
    run_ok(
        Command::new("rpm")
            .arg("--dbpath")
            .arg(root.path().join("var/lib/rpm"))
            .args(["-q", "--changelog", name]),
    )
}

#[test]
fn a_changelog_only_edit_reindexes_the_repository_and_the_image() {
    let p = changelog_tree();
    let first = build(&p);
    assert_eq!(first["rpm:lib"], "ran", "{first:?}");
    assert_eq!(first["image:app"], "ran", "{first:?}");

    let spec = p.path("tree/SPECS/lib/lib.spec");
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "%changelog\n",
        "%changelog\n* Sat Nov 28 2026 keel <keel@example.invalid> - 1-1\n- Second thoughts.\n\n",
    );
    std::fs::write(&spec, text).unwrap();
    let second = build(&p);
    // lib's RPM changed (its header), not what a build root sees of it: the build that
    // copies its message is cut off, whoever reads the RPM itself is not.
    assert_eq!(second["rpm:lib"], "ran", "{second:?}");
    assert_eq!(second["rpm:user"], "cached", "{second:?}");
    assert_eq!(second["repo:x86_64"], "ran", "{second:?}");
    assert_eq!(second["image:app"], "ran", "{second:?}");

    let rpm = published_rpm(&p, "lib");
    assert_eq!(
        repodata_pkgid(&p, "lib"),
        sha256_of(&rpm),
        "primary.xml is stale"
    );
    let user = published_rpm(&p, "user");
    assert_eq!(repodata_pkgid(&p, "user"), sha256_of(&user));
    let log = image_changelog(&p, "lib");
    assert!(log.contains("Second thoughts."), "{log}");
}

/// `demo` ships four names in two hard-link sets, made by `links`; `copier` copies
/// `/usr/share/demo/a` at build time.
fn demo_spec(links: &str) -> String {
    format!(
        "Name: demo
Version: 1
Release: 1
Summary: Hard links
License: MIT
BuildArch: noarch

%description
Two hard-link sets.

%install
mkdir -p %{{buildroot}}/usr/share/demo
cd %{{buildroot}}/usr/share/demo
echo XXXX > c
echo YYYY > d
{links}

%files
/usr/share/demo
"
    )
}

const COPIER: &str = "Name: copier
Version: 1
Release: 1
Summary: Copies demo's a
License: MIT
BuildArch: noarch
BuildRequires: demo

%description
Copies a file of demo at build time.

%install
install -D -m 0644 /usr/share/demo/a %{buildroot}/usr/share/copier/a

%files
/usr/share/copier/a
";

/// The content of `path` inside the RPM `rpm` (the whole payload unpacked, so that a
/// member of a hard-link set reads as rpm would install it).
fn file_in_rpm(rpm: &Path, path: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("rpm2archive - < '{}' | tar -xzf -", rpm.display()))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.path().join(path.trim_start_matches('/'))).unwrap()
}

#[test]
fn moving_a_name_to_another_hard_link_set_rebuilds_its_readers() {
    let p = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("tree/SPECS/demo/demo.spec", demo_spec("ln c a\nln d b"))
        .file("tree/SPECS/copier/copier.spec", COPIER)
        .build();
    let first = build(&p);
    assert_eq!(first["rpm:copier"], "ran", "{first:?}");
    assert_eq!(
        file_in_rpm(&published_rpm(&p, "copier"), "/usr/share/copier/a"),
        "XXXX\n"
    );

    std::fs::write(
        p.path("tree/SPECS/demo/demo.spec"),
        demo_spec("ln c b\nln d a"),
    )
    .unwrap();
    let second = build(&p);
    assert_eq!(second["rpm:demo"], "ran", "{second:?}");
    assert_eq!(second["rpm:copier"], "ran", "{second:?}");
    assert_eq!(
        file_in_rpm(&published_rpm(&p, "demo"), "/usr/share/demo/a"),
        "YYYY\n"
    );
    assert_eq!(
        file_in_rpm(&published_rpm(&p, "copier"), "/usr/share/copier/a"),
        "YYYY\n",
        "copier ships the old content of demo's a"
    );
}
