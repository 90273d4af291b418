//! Reading a tree runs a spec's `%(shell)` contained: no host writes, no keel variables,
//! and a result that follows the files beside the spec it reads.

use std::path::Path;
use std::process::Command;

use crate::support::*;

fn spec(name: &str, release: &str, extra: &str) -> String {
    format!(
        "Name: {name}
Version: 1.0
Release: {release}
Summary: Contained shell probe
License: MIT
BuildArch: noarch
{extra}
%description
Probe.

%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo ok > %{{buildroot}}/usr/share/{name}/ok

%files
/usr/share/{name}/ok

%changelog
* Fri Dec 04 2026 keel <keel@example.invalid> - 1.0-1
- Probe.
"
    )
}

const TOML: &str = "[specs]\ndirs = [\"SPECS\"]\n";

fn whatprovides(p: &Project, name: &str) -> String {
    p.keel(&["-C", "tree", "query", "whatprovides", name])
        .run()
        .success()
        .stdout()
}

#[test]
fn shell_in_a_spec_cannot_write_on_the_host_when_a_tree_is_read() {
    let marker = format!(
        "/tmp/keel-touch-probe-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let p = project()
        .file("tree/keel.toml", TOML)
        .file(
            "tree/SPECS/toucher/toucher.spec",
            spec("toucher", &format!("1%(touch {marker})"), ""),
        )
        .build();
    p.keel(&["-C", "tree", "graph"]).run().success();
    assert!(!Path::new(&marker).exists(), "keel graph wrote {marker}");
    p.keel(&["-C", "tree", "build", "--dry-run"])
        .run()
        .success();
    assert!(
        !Path::new(&marker).exists(),
        "keel build --dry-run wrote {marker}"
    );
    // The command did run (and saw a writable /tmp of its own): the spec still reads.
    assert!(
        whatprovides(&p, "toucher").starts_with("toucher-1.0-1."),
        "the spec did not read"
    );
}

#[test]
fn shell_in_a_spec_sees_no_keel_variable() {
    let p = project()
        .file("tree/keel.toml", TOML)
        .file(
            "tree/SPECS/envprobe/envprobe.spec",
            spec("envprobe", "%(env | grep -c KEEL_)", ""),
        )
        .build();
    let out = p
        .keel(&["-C", "tree", "query", "whatprovides", "envprobe"])
        .env("KEEL_REMOTE_TOKEN", "a-secret-token")
        .run()
        .success()
        .stdout();
    assert!(out.starts_with("envprobe-1.0-0."), "{out}");
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

fn write_release(p: &Project, release: &str) {
    let file = p.path("tree/SPECS/relfile/release.txt");
    std::fs::write(&file, format!("{release}\n")).unwrap();
    std::fs::write(
        p.path("tree/SPECS/relfile/relfile.signatures.json"),
        format!(
            "{{\n \"Signatures\": {{\n  \"release.txt\": \"{}\"\n }}\n}}\n",
            sha256(&file)
        ),
    )
    .unwrap();
}

#[test]
fn a_release_read_by_shell_from_beside_the_spec_is_never_stale() {
    let p = project()
        .file("tree/keel.toml", TOML)
        .file(
            "tree/SPECS/relfile/relfile.spec",
            spec(
                "relfile",
                "%(cat %{_sourcedir}/release.txt)",
                "Source0: release.txt\n",
            ),
        )
        .build();
    write_release(&p, "5");
    let q = whatprovides(&p, "relfile");
    assert!(q.starts_with("relfile-1.0-5.noarch"), "{q}");
    write_release(&p, "6");
    let q = whatprovides(&p, "relfile");
    assert!(q.starts_with("relfile-1.0-6.noarch"), "stale: {q}");
    // The graph's NEVRA is the built RPM's.
    p.keel(&["-C", "tree", "build"]).run().success();
    assert!(
        p.path("tree/out/RPMS/noarch/relfile-1.0-6.noarch.rpm")
            .exists(),
        "{:?}",
        std::fs::read_dir(p.path("tree/out/RPMS/noarch"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
}
