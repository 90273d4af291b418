//! The layouts of the real Azure Linux tree that stopped `keel build` from planning it
//! (issue 15): several specs in one directory sharing its sources (golang's four), a
//! lowercase `signatures` key (libsepol), patches in a `SOURCES/` folder beside the spec
//! (rt-tests), one package name in SPECS and SPECS-EXTENDED (rdma-core, ucx), a source
//! named through another spec's version macro (`%azl_mlnx_ofa_kernel_version`), and specs
//! that cannot be read or planned among ones that build. Each is reproduced in a small
//! tree and built for real with rpmbuild: what can build does, the rest is excluded with
//! its file and reason, and with what needs it.

use std::collections::BTreeMap;

use crate::build::build_json;
use crate::support::*;

/// A noarch spec installing each of `files` (sources and patches as `%{SOURCEn}`) under
/// `/usr/share/<dir>/`; `extra` goes into the preamble.
fn spec(name: &str, version: &str, dir: &str, sources: &[&str], extra: &str) -> String {
    let mut s = format!(
        "Name: {name}\nVersion: {version}\nRelease: 1%{{?dist}}\nSummary: {name}\n\
         License: MIT\nBuildArch: noarch\n{extra}"
    );
    for (i, f) in sources.iter().enumerate() {
        s.push_str(&format!("Source{i}: {f}\n"));
    }
    s.push_str(&format!(
        "\n%description\nA test package.\n\n%install\n\
         mkdir -p %{{buildroot}}/usr/share/{dir}\necho {name} > %{{buildroot}}/usr/share/{dir}/{name}\n"
    ));
    for i in 0..sources.len() {
        s.push_str(&format!(
            "install -D -m 0644 %{{SOURCE{i}}} %{{buildroot}}/usr/share/{dir}/$(basename %{{SOURCE{i}}})\n"
        ));
    }
    s.push_str(&format!(
        "\n%files\n/usr/share/{dir}\n\n%changelog\n* Fri Dec 04 2026 keel <keel@example.invalid> - {version}-1\n- Test.\n"
    ));
    s
}

fn signatures(entries: &[(&str, &str)], key: &str) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(f, sha)| format!("  \"{f}\": \"{sha}\""))
        .collect();
    format!("{{\n \"{key}\": {{\n{}\n }}\n}}\n", body.join(",\n"))
}

fn sha256(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, bytes).unwrap();
    keel_sources::sha256_file(&f).unwrap()
}

/// Every RPM under `out/`.
fn rpm_files(p: &Project) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![p.path("tree/out")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().ends_with(".rpm") {
                found.push(e.path());
            }
        }
    }
    found
}

/// Every RPM under `out/`, by file name.
fn published(p: &Project) -> Vec<String> {
    let mut names: Vec<String> = rpm_files(p)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The RPM of `out/` named `rpm`.
fn rpm_path(p: &Project, rpm: &str) -> std::path::PathBuf {
    rpm_files(p)
        .into_iter()
        .find(|f| f.file_name().is_some_and(|n| n == rpm))
        .unwrap_or_else(|| panic!("{rpm} is not published"))
}

/// The payload paths of an RPM of `out/`.
fn payload(p: &Project, rpm: &str) -> String {
    let out = std::process::Command::new("rpm")
        .args(["-qpl", "--nosignature"])
        .arg(rpm_path(p, rpm))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn azure_like_tree() -> Project {
    let shared = b"one tarball, two specs\n";
    let sepol = b"a source listed under a lowercase key\n";
    let p = project()
        .file("mirror/shared-1.txt", shared)
        .file("mirror/sepol-3.txt", sepol)
        // Two specs of one package name in one directory, both naming one fetched source
        // (golang.spec and golang-1.23.spec).
        .file(
            "tree/SPECS/twins/twins.spec",
            spec("twins", "1.0", "twins-1", &["shared-1.txt"], ""),
        )
        .file(
            "tree/SPECS/twins/twins-2.spec",
            spec("twins", "2.0", "twins-2", &["shared-1.txt"], ""),
        )
        .file(
            "tree/SPECS/twins/twins.signatures.json",
            signatures(&[("shared-1.txt", &sha256(shared))], "Signatures"),
        )
        .file(
            "tree/SPECS/twins/twins-2.signatures.json",
            signatures(&[("shared-1.txt", &sha256(shared))], "Signatures"),
        )
        // `signatures`, as libsepol spells it.
        .file(
            "tree/SPECS/sepol/sepol.spec",
            spec("sepol", "3", "sepol", &["sepol-3.txt"], ""),
        )
        .file(
            "tree/SPECS/sepol/sepol.signatures.json",
            signatures(&[("sepol-3.txt", &sha256(sepol))], "signatures"),
        )
        // A patch kept in SOURCES/ beside the spec (rt-tests), applied in %prep.
        .file(
            "tree/SPECS/rt/rt.spec",
            spec("rt", "1", "rt", &["rt.txt"], "Patch0: fix-rt.patch\n").replace(
                "%install\n",
                "%prep\n%setup -q -c -T\ncp %{SOURCE0} .\n%patch -P 0 -p1\n\n%install\n\
                 install -D -m 0644 rt.txt %{buildroot}/usr/share/rt/patched.txt\n",
            ),
        )
        .file("tree/SPECS/rt/rt.txt", "before\n")
        .file(
            "tree/SPECS/rt/SOURCES/fix-rt.patch",
            "--- a/rt.txt\n+++ b/rt.txt\n@@ -1 +1 @@\n-before\n+after\n",
        )
        // One name in two spec directories (rdma-core): the first directory's is built.
        .file(
            "tree/SPECS/dup/dup.spec",
            spec("dup", "1", "dup-core", &["dup.txt"], ""),
        )
        .file("tree/SPECS/dup/dup.txt", "core\n")
        .file(
            "tree/SPECS-EXTENDED/dup/dup.spec",
            spec("dup", "9", "dup-extended", &["dup.txt"], ""),
        )
        .file("tree/SPECS-EXTENDED/dup/dup.txt", "extended\n")
        // A source named through another spec's version macro (iser's
        // `%azl_mlnx_ofa_kernel_version`), from the tree's version macros.
        .file(
            "tree/SPECS/ofa-kernel/ofa-kernel.spec",
            spec("ofa-kernel", "4.2", "ofa", &["ofa.txt"], ""),
        )
        .file("tree/SPECS/ofa-kernel/ofa.txt", "ofa\n")
        .file(
            "tree/SPECS/iser/iser.spec",
            spec(
                "iser",
                "1",
                "iser",
                &["iser-%{xt_ofa_kernel_version}-%{xt_ofa_kernel_release}.txt"],
                "BuildRequires: ofa-kernel\n",
            ),
        )
        .file("tree/SPECS/iser/iser-4.2-1.txt", "iser\n")
        // A spec that cannot be read, among ones that build.
        .file(
            "tree/SPECS/broken/broken.spec",
            "Name: broken\nVersion: 1\nRelease: 1\nSummary: x\nLicense: MIT\n\
             %if 1\n%description\nx\n",
        )
        // A spec whose patch does not exist, and one that needs it.
        .file(
            "tree/SPECS/nopatch/nopatch.spec",
            spec(
                "nopatch",
                "1",
                "nopatch",
                &["nopatch.txt"],
                "Patch0: gone.patch\n",
            ),
        )
        .file("tree/SPECS/nopatch/nopatch.txt", "x\n")
        .file(
            "tree/SPECS/user/user.spec",
            spec(
                "user",
                "1",
                "user",
                &["user.txt"],
                "BuildRequires: nopatch\n",
            ),
        )
        .file("tree/SPECS/user/user.txt", "x\n")
        .build();
    let mirror = format!("file://{}", p.path("mirror").display());
    std::fs::write(
        p.path("tree/keel.toml"),
        format!(
            "[specs]\ndirs = [\"SPECS\", \"SPECS-EXTENDED\"]\n\
             defines = {{ dist = \".t1\" }}\nversion_macros = \"xt\"\n\n\
             [sources]\nmirrors = [\"{mirror}\"]\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn the_azure_linux_layouts_plan_and_build_and_a_broken_spec_excludes_only_itself() {
    let p = azure_like_tree();

    // The plan: everything but the broken spec, the one without its patch and the one
    // that needs it; each named with its file and why, in a short summary.
    let plan = p
        .keel(&["-C", "tree", "build", "--dry-run"])
        .run()
        .code_is(1);
    let out = plan.stdout();
    for a in [
        "source:twins/shared-1.txt",
        "source:twins-2/shared-1.txt",
        "rpm:twins",
        "rpm:twins-2",
        "source:sepol/sepol-3.txt",
        "rpm:rt",
        "rpm:dup",
        "rpm:ofa-kernel",
        "rpm:iser",
    ] {
        assert!(
            out.contains(&format!(" {a}:")),
            "{a} is not planned:\n{out}"
        );
    }
    for a in ["rpm:broken", "rpm:nopatch", "rpm:user"] {
        assert!(!out.contains(a), "{a} is planned:\n{out}");
    }
    let err = plan.stderr();
    for needle in [
        "Excluded 4 spec(s) from the plan (3 for errors)",
        "SPECS/broken/broken.spec:",
        "SPECS/nopatch/nopatch.spec: Patch0",
        "gone.patch does not exist",
        "SPECS/user/user.spec: needs nopatch (BuildRequires: nopatch), which is excluded",
        "SPECS-EXTENDED/dup/dup.spec: dup is built from SPECS/dup/dup.spec",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(!err.contains("already in the graph"), "{err}");
    // The machine-readable list has every exclusion with its cause.
    let json = p
        .keel(&["-C", "tree", "--json", "build", "--dry-run"])
        .run()
        .code_is(1);
    let first: serde_json::Value =
        serde_json::from_str(json.stdout().lines().next().unwrap()).unwrap();
    let causes: BTreeMap<String, String> = first["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["spec"].as_str().unwrap().to_owned(),
                e["cause"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("SPECS/broken/broken.spec", "unreadable"),
        ("SPECS/nopatch/nopatch.spec", "unplannable"),
        ("SPECS/user/user.spec", "needs-excluded"),
        ("SPECS-EXTENDED/dup/dup.spec", "shadowed"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(causes, expected);

    // Without -k a build refuses to start; with it, everything else is built for real.
    p.keel(&["-C", "tree", "build"])
        .run()
        .code_is(1)
        .stderr_has("3 spec(s) cannot be built");
    let (run, status) = build_json(&p, &["-k"]);
    let run = run.code_is(1);
    for a in [
        "rpm:twins",
        "rpm:twins-2",
        "rpm:sepol",
        "rpm:rt",
        "rpm:dup",
        "rpm:ofa-kernel",
        "rpm:iser",
    ] {
        assert_eq!(
            status.get(a).map(String::as_str),
            Some("ran"),
            "{a}: {status:?}\n{}",
            run.stderr()
        );
    }
    let rpms = published(&p);
    for want in [
        "twins-1.0-1.t1.noarch.rpm",
        "twins-2.0-1.t1.noarch.rpm",
        "twins-1.0-1.t1.src.rpm",
        "twins-2.0-1.t1.src.rpm",
        "sepol-3-1.t1.noarch.rpm",
        "rt-1-1.t1.noarch.rpm",
        "dup-1-1.t1.noarch.rpm",
        "ofa-kernel-4.2-1.t1.noarch.rpm",
        "iser-1-1.t1.noarch.rpm",
    ] {
        assert!(rpms.iter().any(|r| r == want), "{want} not in {rpms:?}");
    }
    assert!(
        !rpms.iter().any(|r| r.starts_with("dup-9")
            || r.starts_with("broken")
            || r.starts_with("nopatch")
            || r.starts_with("user")),
        "{rpms:?}"
    );
    // The patch from SOURCES/ was applied, and the macro named the source rpmbuild used.
    assert!(payload(&p, "rt-1-1.t1.noarch.rpm").contains("/usr/share/rt/patched.txt"));
    let patched = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "rpm2archive - < '{}' | tar -xzOf - ./usr/share/rt/patched.txt",
            rpm_path(&p, "rt-1-1.t1.noarch.rpm").display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&patched.stdout), "after\n");
    assert!(
        payload(&p, "iser-1-1.t1.noarch.rpm").contains("/usr/share/iser/iser-4.2-1.txt"),
        "{}",
        payload(&p, "iser-1-1.t1.noarch.rpm")
    );

    // Fixing the broken specs brings them (and what needs them) back, and nothing else
    // runs again.
    std::fs::write(
        p.path("tree/SPECS/broken/broken.spec"),
        spec("broken", "1", "broken", &[], ""),
    )
    .unwrap();
    std::fs::write(p.path("tree/SPECS/nopatch/gone.patch"), "").unwrap();
    let (run, status) = build_json(&p, &[]);
    run.success();
    for a in ["rpm:broken", "rpm:nopatch", "rpm:user"] {
        assert_eq!(
            status.get(a).map(String::as_str),
            Some("ran"),
            "{a}: {status:?}"
        );
    }
    assert_eq!(
        status.get("rpm:twins").map(String::as_str),
        Some("cached"),
        "{status:?}"
    );
}

/// The version macro tracks the spec it names: a version bump there changes the source
/// the user spec asks for (and so its plan).
#[test]
fn a_version_macro_follows_the_spec_it_names() {
    let p = azure_like_tree();
    std::fs::write(
        p.path("tree/SPECS/ofa-kernel/ofa-kernel.spec"),
        spec("ofa-kernel", "4.3", "ofa", &["ofa.txt"], ""),
    )
    .unwrap();
    p.keel(&["-C", "tree", "build", "--dry-run"])
        .run()
        .code_is(1)
        .stderr_has("SPECS/iser/iser.spec: Source0 iser-4.3-1.txt is neither kept beside the spec");
}

/// A patch kept in `SOURCES/` is an input like one beside the spec: editing it rebuilds
/// the package, on the incremental path that re-reads only changed spec directories too.
#[test]
fn an_edit_in_sources_below_the_spec_rebuilds_it() {
    let p = project()
        .file(
            "tree/SPECS/rt/rt.spec",
            spec("rt", "1", "rt", &["rt.txt"], "Patch0: fix-rt.patch\n"),
        )
        .file("tree/SPECS/rt/rt.txt", "before\n")
        .file("tree/SPECS/rt/SOURCES/fix-rt.patch", "one\n")
        .file(
            "tree/SPECS/other/other.spec",
            spec("other", "1", "other", &[], ""),
        )
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .build();
    // Every write is dated well before the build, out of the racy window where keel
    // hashes what it would otherwise trust by its metadata: the edit must be seen anyway.
    let patch = p.path("tree/SPECS/rt/SOURCES/fix-rt.patch");
    let write_dated = |text: &str, ago: u64| {
        std::fs::write(&patch, text).unwrap();
        let when = std::time::SystemTime::now() - std::time::Duration::from_secs(ago);
        std::fs::File::options()
            .write(true)
            .open(&patch)
            .unwrap()
            .set_modified(when)
            .unwrap();
    };
    write_dated("one\n", 300);
    let (run, status) = build_json(&p, &["--executor", "test"]);
    run.success();
    assert_eq!(status.get("srpm:rt").map(String::as_str), Some("ran"));
    for (edit, ago) in [("two\n", 200), ("three, longer\n", 100)] {
        write_dated(edit, ago);
        let (run, status) = build_json(&p, &["--executor", "test"]);
        run.success();
        assert_eq!(
            status.get("srpm:rt").map(String::as_str),
            Some("ran"),
            "{edit:?}: {status:?}"
        );
        assert_eq!(
            status.get("srpm:other").map(String::as_str),
            Some("cached"),
            "{status:?}"
        );
    }
}
