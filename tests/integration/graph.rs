//! `keel graph` and `keel query` on the example distribution and on small trees.

use crate::support::*;

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/distro")
}

#[test]
fn the_example_distribution_resolves_completely() {
    let run = keel_cmd()
        .arg("-C")
        .arg(example())
        .arg("graph")
        .run()
        .success();
    let out = run.stdout();
    assert!(out.contains("specs       10 read"), "{out}");
    assert!(out.contains("0 failed"), "{out}");
    assert!(out.contains("unresolved  0"), "{out}");
    assert!(out.contains("cycles      0"), "{out}");
    let json = keel_cmd()
        .arg("-C")
        .arg(example())
        .args(["graph", "--format", "json"])
        .run()
        .success()
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let edges: Vec<(&str, &str, &str)> = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap();
            (s("from"), s("to"), s("via"))
        })
        .collect();
    // cyc-a builds in bootstrap mode by default, so only cyc-b -> cyc-a remains of the
    // cyc-a/cyc-b cycle (examples/distro/README.md).
    assert_eq!(
        edges,
        [
            ("cyc-b", "cyc-a", "BuildRequires: cyc-a-devel"),
            (
                "greet-banner",
                "example-rpm-macros",
                "BuildRequires: example-rpm-macros"
            ),
            ("hello", "libgreet", "BuildRequires: libgreet-devel"),
        ],
        "{v}"
    );
}

#[test]
fn queries_answer_from_the_graph() {
    let q = |args: &[&str]| {
        keel_cmd()
            .arg("-C")
            .arg(example())
            .arg("query")
            .args(args)
            .run()
    };
    assert_eq!(
        q(&["deps", "hello"]).success().stdout(),
        "libgreet\tBuildRequires: libgreet-devel\n"
    );
    assert_eq!(
        q(&["rdeps", "libgreet-devel"]).success().stdout(),
        "hello\tBuildRequires: libgreet-devel\n"
    );
    let wp = q(&["whatprovides", "libgreet-devel", ">=", "1.0"])
        .success()
        .stdout();
    assert!(wp.starts_with("libgreet-devel-1.0-1.kl1."), "{wp}");
    assert!(
        q(&["whatprovides", "/usr/include/greet.h"])
            .success()
            .stdout()
            .starts_with("libgreet-devel-")
    );
    assert!(
        q(&["whatprovides", "gcc"])
            .success()
            .stdout()
            .contains("(toolchain)")
    );
    q(&["whatprovides", "libgreet-devel", ">", "2"])
        .code_is(1)
        .stderr_has("nothing provides");
    assert_eq!(
        q(&["path", "hello", "libgreet"]).success().stdout(),
        "hello -[BuildRequires: libgreet-devel]-> libgreet\n"
    );
    q(&["path", "greet-scripts", "libgreet"])
        .code_is(1)
        .stderr_has("does not depend on");
    q(&["deps", "nosuch"])
        .code_is(1)
        .stderr_has("no package `nosuch`");
}

fn spec(name: &str, extra: &str) -> String {
    format!(
        "Name: {name}\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n{extra}\n%description\nd\n%files\n/usr/bin/{name}\n"
    )
}

#[test]
fn unresolved_dependencies_cycles_and_broken_specs_are_reported() {
    let p = project()
        .file("keel.toml", "[specs]\nhost_macros = false\n")
        .file("SPECS/a/a.spec", spec("a", "BuildRequires: b"))
        .file(
            "SPECS/b/b.spec",
            spec(
                "b",
                "BuildRequires: a\nBuildRequires: nothing-provides-this >= 2",
            ),
        )
        .file("SPECS/broken/broken.spec", "Name: broken\n%if 1\n")
        .build();
    let run = keel_cmd()
        .current_dir(p.root())
        .arg("graph")
        .run()
        .success();
    let out = run.stdout();
    assert!(out.contains("specs       2 read"), "{out}");
    assert!(out.contains("1 failed"), "{out}");
    assert!(
        out.contains("SPECS/b/b.spec: BuildRequires: nothing-provides-this >= 2"),
        "{out}"
    );
    assert!(out.contains("cycles      1"), "{out}");
    assert!(
        out.contains(
            "a -[BuildRequires: b]-> b -[BuildRequires: a]-> a; a seed of `a` would break it"
        ),
        "{out}"
    );
    run.stderr_has("SPECS/broken/broken.spec:");

    // The seed the message suggests breaks the cycle.
    std::fs::write(
        p.path("keel.toml"),
        "[specs]\nhost_macros = false\n[bootstrap]\nseed = [\"a-1-1.x86_64.rpm\"]\n",
    )
    .unwrap();
    let out = keel_cmd()
        .current_dir(p.root())
        .arg("graph")
        .run()
        .success()
        .stdout();
    assert!(out.contains("cycles      0"), "{out}");
}

#[test]
fn a_missing_spec_directory_or_macro_file_is_named() {
    let p = project()
        .file("keel.toml", "[specs]\ndirs = [\"NOPE\"]\n")
        .build();
    keel_cmd()
        .current_dir(p.root())
        .arg("graph")
        .run()
        .code_is(1)
        .stderr_has("NOPE");
    std::fs::create_dir_all(p.path("SPECS")).unwrap();
    std::fs::write(
        p.path("keel.toml"),
        "[specs]\nmacro_files = [\"macros/missing\"]\n",
    )
    .unwrap();
    keel_cmd()
        .current_dir(p.root())
        .arg("graph")
        .run()
        .code_is(1)
        .stderr_has("macros/missing");
    let q = project().build();
    keel_cmd()
        .current_dir(q.root())
        .arg("graph")
        .run()
        .code_is(1)
        .stderr_has("no keel.toml");
}

#[test]
fn spec_reads_with_the_trees_keel_toml_when_asked() {
    let spec = example().join("SPECS/greet-banner/greet-banner.spec");
    let q = |extra: &[&str]| {
        let mut c = keel_cmd();
        c.arg("-C").arg(example()).arg("spec").args(extra);
        c.args(["-q", "--srpm", "--qf", "%{release} %{url}\n"])
            .arg(&spec);
        c.run().success().stdout()
    };
    // Alone, keel spec is rpmspec: no dist define.
    assert!(q(&[]).starts_with("1 "), "{}", q(&[]));
    // With keel.toml: its defines (dist .kl1) and macro files, as keel build reads it.
    assert!(
        q(&["--keel-toml"]).starts_with("1.kl1 "),
        "{}",
        q(&["--keel-toml"])
    );
    // A define on the command line still wins.
    assert!(
        q(&["--keel-toml", "-D", "dist .x"]).starts_with("1.x "),
        "{}",
        q(&["--keel-toml", "-D", "dist .x"])
    );
}

/// A file dependency nothing of the tree provides is satisfied by the build root when it
/// has the file as a build sees it (the host's `/usr`, `/bin`, `/sbin`, `/lib*`, its staged
/// `/etc`), and only then: the host's `/etc/shadow` is not in a build's root.
#[test]
fn the_build_root_satisfies_file_dependencies_it_has() {
    let spec = "Name: needy
Version: 1
Release: 1
Summary: Needs files
License: MIT
BuildArch: noarch
BuildRequires: /bin/sh
BuildRequires: /etc/shadow

%description
Needy.

%files
";
    let p = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("tree/SPECS/needy/needy.spec", spec)
        .build();
    let out = p
        .keel(&["-C", "tree", "query", "whatprovides", "/bin/sh"])
        .run()
        .success()
        .stdout();
    assert_eq!(out.trim(), "/bin/sh\t(the build root)");
    let run = p.keel(&["-C", "tree", "graph"]).run().success();
    let text = format!("{}{}", run.stdout(), run.stderr());
    assert!(text.contains("unresolved  1"), "{text}");
    assert!(
        text.contains("/etc/shadow") && !text.contains("/bin/sh is"),
        "{text}"
    );
}
