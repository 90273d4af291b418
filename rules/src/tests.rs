//! Graph tests on small trees of real spec files, read by keel-specs.

use std::path::Path;

use keel_specs::{EngineConfig, MacroSetup, ReaderConfig, load_macros, read_spec};

use crate::*;

/// Writes `specs` (name, text) into a temporary tree and reads them.
fn read_tree(specs: &[(&str, &str)]) -> (tempfile::TempDir, Vec<keel_specs::Spec>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EngineConfig::default();
    // The tree's own macros only: these tests must not depend on the host's rpm.
    let setup = MacroSetup {
        macro_path: String::new(),
        target: Some("x86_64-linux".into()),
        cli: Vec::new(),
    };
    let (table, _) = load_macros(&setup, &cfg).unwrap();
    let reader = ReaderConfig::new(table, cfg);
    let mut out = Vec::new();
    for (name, text) in specs {
        let p = dir.path().join(format!("{name}.spec"));
        std::fs::write(&p, text).unwrap();
        out.push(read_spec(&p, &reader).unwrap_or_else(|e| panic!("{e}")));
    }
    (dir, out)
}

fn spec(name: &str, extra: &str) -> String {
    format!(
        "Name: {name}\nVersion: 1.0\nRelease: 1\nSummary: s\nLicense: MIT\n{extra}\n%description\nd\n%files\n/usr/bin/{name}\n"
    )
}

fn cfg() -> GraphConfig {
    GraphConfig {
        target_arch: "x86_64".into(),
        ..Default::default()
    }
}

fn edge_names(g: &PackageGraph) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = g
        .edges
        .iter()
        .map(|e| {
            (
                g.specs[e.from.0].name.clone(),
                g.specs[e.to.0].name.clone(),
                e.via.clone(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn build_requires_resolve_through_subpackages_versions_and_files() {
    let lib = "Name: libfoo\nVersion: 2.1\nRelease: 3\nSummary: s\nLicense: MIT\n%description\nd\n\
               %package devel\nSummary: d\nRequires: libfoo = %{version}-%{release}\nProvides: pkgconfig(foo) = 2.1\n%description devel\nd\n\
               %files\n/usr/lib64/libfoo.so.2\n%files devel\n/usr/include/foo.h\n/usr/share/foo/\n";
    let (_d, specs) = read_tree(&[
        ("libfoo", lib),
        (
            "app",
            &spec(
                "app",
                "BuildRequires: libfoo-devel >= 2.0\nBuildRequires: pkgconfig(foo)\nBuildRequires: /usr/share/foo/data.txt",
            ),
        ),
    ]);
    let g = PackageGraph::build(&specs, &cfg());
    assert!(g.unresolved.is_empty(), "{:?}", g.unresolved);
    let e = edge_names(&g);
    assert!(
        e.contains(&(
            "app".into(),
            "libfoo".into(),
            "BuildRequires: libfoo-devel >= 2.0".into()
        )),
        "{e:?}"
    );
    assert!(
        e.contains(&(
            "app".into(),
            "libfoo".into(),
            "BuildRequires: pkgconfig(foo)".into()
        )),
        "{e:?}"
    );
    assert!(
        e.contains(&(
            "app".into(),
            "libfoo".into(),
            "BuildRequires: /usr/share/foo/data.txt".into()
        )),
        "{e:?}"
    );
    assert!(g.cycles.is_empty());
}

#[test]
fn version_mismatch_is_unresolved_and_names_what_came_closest() {
    let (_d, specs) = read_tree(&[
        ("libfoo", &spec("libfoo", "")),
        (
            "app",
            &spec(
                "app",
                "BuildRequires: libfoo >= 2.0\nBuildRequires: lib_foo",
            ),
        ),
    ]);
    let g = PackageGraph::build(&specs, &cfg());
    let u: Vec<(&str, &[String])> = g
        .unresolved
        .iter()
        .map(|u| (u.dep.as_str(), u.closest.as_slice()))
        .collect();
    assert_eq!(u.len(), 2, "{u:?}");
    assert!(
        u.contains(&("libfoo >= 2.0", &["libfoo = 1.0-1".to_owned()][..])),
        "{u:?}"
    );
    assert!(
        u.iter()
            .any(|(d, c)| *d == "lib_foo" && c.contains(&"libfoo".to_owned())),
        "{u:?}"
    );
    assert!(g.edges.is_empty());
}

#[test]
fn requires_of_the_build_root_pull_in_more_specs() {
    let (_d, specs) = read_tree(&[
        ("base", &spec("base", "")),
        ("mid", &spec("mid", "Requires: base")),
        ("top", &spec("top", "BuildRequires: mid")),
    ]);
    let g = PackageGraph::build(&specs, &cfg());
    let e = edge_names(&g);
    assert!(
        e.contains(&("top".into(), "base".into(), "mid Requires: base".into())),
        "{e:?}"
    );
    assert!(
        !e.iter().any(|(a, _, _)| a == "mid"),
        "Requires are not build edges of their own spec: {e:?}"
    );
}

#[test]
fn rich_dependencies() {
    let (_d, specs) = read_tree(&[
        ("a", &spec("a", "")),
        ("b", &spec("b", "")),
        (
            "x",
            &spec(
                "x",
                "BuildRequires: (nothere or b)\nBuildRequires: (a if nothere)\nBuildRequires: (a and b)",
            ),
        ),
        ("y", &spec("y", "BuildRequires: (nothere1 or nothere2)")),
    ]);
    let g = PackageGraph::build(&specs, &cfg());
    let e = edge_names(&g);
    assert!(
        e.contains(&(
            "x".into(),
            "b".into(),
            "BuildRequires: (nothere or b)".into()
        )),
        "{e:?}"
    );
    assert!(
        !e.iter().any(|(_, _, via)| via.contains("if nothere")),
        "condition false: no edge: {e:?}"
    );
    assert!(
        e.contains(&("x".into(), "a".into(), "BuildRequires: (a and b)".into())),
        "{e:?}"
    );
    assert_eq!(g.unresolved.len(), 1);
    assert_eq!(g.unresolved[0].dep, "(nothere1 or nothere2)");
}

#[test]
fn excluded_architectures_provide_nothing() {
    let (_d, specs) = read_tree(&[
        ("armonly", &spec("armonly", "ExclusiveArch: aarch64")),
        ("notx86", &spec("notx86", "ExcludeArch: x86_64")),
        (
            "app",
            &spec("app", "BuildRequires: armonly\nBuildRequires: notx86"),
        ),
    ]);
    let g = PackageGraph::build(&specs, &cfg());
    assert_eq!(
        g.specs[0].excluded.as_deref(),
        Some("ExclusiveArch: aarch64")
    );
    assert_eq!(g.specs[1].excluded.as_deref(), Some("ExcludeArch: x86_64"));
    assert_eq!(g.unresolved.len(), 2);
    let arm = GraphConfig {
        target_arch: "aarch64".into(),
        ..Default::default()
    };
    let g = PackageGraph::build(&specs, &arm);
    assert!(g.specs[0].excluded.is_none());
    assert_eq!(g.unresolved.len(), 0, "{:?}", g.unresolved);
}

#[test]
fn cycles_are_reported_with_their_path_and_broken_by_a_seed() {
    let (_d, specs) = read_tree(&[
        ("a", &spec("a", "BuildRequires: b")),
        ("b", &spec("b", "BuildRequires: c")),
        ("c", &spec("c", "BuildRequires: a")),
        ("d", &spec("d", "BuildRequires: a")),
    ]);
    let g = PackageGraph::build(&specs, &cfg());
    assert_eq!(g.cycles.len(), 1);
    let path: Vec<String> = g.cycles[0]
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} -> {} ({})",
                g.specs[s.from.0].name, g.specs[s.to.0].name, s.via
            )
        })
        .collect();
    assert_eq!(
        path,
        [
            "a -> b (BuildRequires: b)",
            "b -> c (BuildRequires: c)",
            "c -> a (BuildRequires: a)"
        ]
    );
    assert_eq!(g.cycles[0].seed_suggestion, "a");

    let seeded = GraphConfig {
        seed: vec![parse_rpm_filename("a-1.0-1.x86_64.rpm").unwrap()],
        ..cfg()
    };
    let g = PackageGraph::build(&specs, &seeded);
    assert!(g.cycles.is_empty(), "{:?}", g.cycles);
    assert!(
        !edge_names(&g).iter().any(|(_, to, _)| to == "a"),
        "the seed satisfies BuildRequires: a"
    );
}

#[test]
fn the_toolchain_satisfies_without_edges_and_with_its_packages_provides() {
    let (_d, specs) = read_tree(&[
        ("gcc", &spec("gcc", "Provides: cc")),
        (
            "app",
            &spec("app", "BuildRequires: cc\nBuildRequires: gcc >= 1"),
        ),
    ]);
    let tc = GraphConfig {
        toolchain: vec![parse_rpm_filename("gcc-1.0-1.x86_64.rpm").unwrap()],
        ..cfg()
    };
    let g = PackageGraph::build(&specs, &tc);
    assert!(g.edges.is_empty(), "{:?}", edge_names(&g));
    assert!(g.unresolved.is_empty());
}

#[test]
fn the_build_roots_files_satisfy_file_dependencies_nothing_else_provides() {
    let (_d, specs) = read_tree(&[
        ("tool", &spec("tool", "")),
        (
            "app",
            &spec(
                "app",
                "BuildRequires: /sbin/ldconfig\nBuildRequires: /usr/bin/tool\nBuildRequires: /opt/missing",
            ),
        ),
    ]);
    let root = crate::RootFiles(std::sync::Arc::new(|p: &str| {
        ["/sbin/ldconfig", "/usr/bin/tool"].contains(&p)
    }));
    let with_root = GraphConfig {
        root_files: Some(root),
        ..cfg()
    };
    let unresolved = |g: &PackageGraph| -> Vec<String> {
        let mut v: Vec<String> = g.unresolved.iter().map(|u| u.dep.clone()).collect();
        v.sort();
        v
    };
    let without = PackageGraph::build(&specs, &cfg());
    assert_eq!(unresolved(&without), ["/opt/missing", "/sbin/ldconfig"]);
    let g = PackageGraph::build(&specs, &with_root);
    assert_eq!(unresolved(&g), ["/opt/missing"]);
    // A package of the tree still wins over the build root's file: the edge stays.
    assert_eq!(
        edge_names(&g),
        [(
            "app".to_owned(),
            "tool".to_owned(),
            "BuildRequires: /usr/bin/tool".to_owned()
        )]
    );
    assert_eq!(
        g.index.whatprovides("/sbin/ldconfig", 0, ""),
        [crate::ProviderSource::BuildRoot]
    );
}

#[test]
fn packages_the_build_root_carries_are_built_first_for_every_other_spec() {
    let (_d, specs) = read_tree(&[
        (
            "macros",
            &spec("macros", "BuildRequires: tool\nRequires: helper"),
        ),
        ("helper", &spec("helper", "")),
        ("tool", &spec("tool", "")),
        ("app", &spec("app", "BuildRequires: lib")),
        ("lib", &spec("lib", "")),
    ]);
    let carried = GraphConfig {
        from_tree: vec!["macros".into()],
        ..cfg()
    };
    let g = PackageGraph::build(&specs, &carried);
    let e = |from: &str, to: &str, via: &str| (from.to_owned(), to.to_owned(), via.to_owned());
    // What macros is built from and pulls in (tool, helper, macros) builds without it.
    assert_eq!(
        edge_names(&g),
        [
            e("app", "helper", "macros Requires: helper"),
            e("app", "lib", "BuildRequires: lib"),
            e("app", "macros", "the build root carries macros"),
            e("lib", "helper", "macros Requires: helper"),
            e("lib", "macros", "the build root carries macros"),
            e("macros", "tool", "BuildRequires: tool"),
        ]
    );
    assert!(g.cycles.is_empty(), "{:?}", g.cycles);
    assert!(g.unresolved.is_empty(), "{:?}", g.unresolved);
    // What macros is built from and pulls in builds in the bare root.
    let bare: Vec<&str> = g
        .specs
        .iter()
        .enumerate()
        .filter(|(i, _)| g.builds_bare(crate::graph::SpecId(*i)))
        .map(|(_, s)| s.name.as_str())
        .collect();
    let mut bare = bare;
    bare.sort_unstable();
    assert_eq!(bare, ["helper", "macros", "tool"]);
    // The manifest may list it too (Azure Linux's does): the root is said to lack it, so
    // the tree's package is still the one layered in.
    let listed = GraphConfig {
        toolchain: vec![parse_rpm_filename("macros-1.0-1.x86_64.rpm").unwrap()],
        ..carried
    };
    assert_eq!(
        edge_names(&PackageGraph::build(&specs, &listed)),
        edge_names(&g)
    );
}

#[test]
fn self_build_dependency_is_a_cycle() {
    let (_d, specs) = read_tree(&[("selfish", &spec("selfish", "BuildRequires: selfish"))]);
    let g = PackageGraph::build(&specs, &cfg());
    assert_eq!(g.cycles.len(), 1);
    assert_eq!(g.cycles[0].steps.len(), 1);
}

#[test]
fn learned_capabilities_resolve_on_the_next_pass() {
    let (_d, specs) = read_tree(&[
        ("libz", &spec("libz", "")),
        ("app", &spec("app", "BuildRequires: libz.so.1()(64bit)")),
    ]);
    let mut g = PackageGraph::build(&specs, &cfg());
    assert_eq!(g.unresolved.len(), 1);
    let libz = g.find("libz").unwrap();
    let bin = g.specs[libz.0].packages[0];
    let dep = keel_specs::deps::parse_field("libz.so.1()(64bit)", 0, false).unwrap();
    g.index.learn(bin, &dep, &[]);
    g.resolve();
    assert!(g.unresolved.is_empty());
    assert_eq!(g.deps(g.find("app").unwrap()).count(), 1);
    let _ = Path::new("");
}

#[test]
fn queries() {
    let (_d, specs) = read_tree(&[
        ("a", &spec("a", "")),
        ("b", &spec("b", "BuildRequires: a")),
        ("c", &spec("c", "BuildRequires: b")),
    ]);
    let g = PackageGraph::build(&specs, &cfg());
    let (a, c) = (g.find("a").unwrap(), g.find("c").unwrap());
    let p = g.path(c, a).unwrap();
    assert_eq!(p.len(), 2);
    assert!(g.path(a, c).is_none());
    assert_eq!(g.rdeps(a).count(), 1);
    assert!(g.to_dot().contains("\"c\" -> \"b\";"));
}

/// The names of an image closure's packages and specs.
fn closure_names(g: &PackageGraph, c: &images::ImageClosure) -> (Vec<String>, Vec<String>) {
    let mut pkgs: Vec<String> = c
        .packages
        .iter()
        .map(|b| g.bins[b.0].name.clone())
        .collect();
    pkgs.sort();
    let mut specs: Vec<String> = c.specs.iter().map(|s| g.specs[s.0].name.clone()).collect();
    specs.sort();
    (pkgs, specs)
}

#[test]
fn an_image_closure_follows_requires_to_tree_packages_only() {
    let lib = "Name: libfoo\nVersion: 2.1\nRelease: 3\nSummary: s\nLicense: MIT\n%description\nd\n\
               %package devel\nSummary: d\nRequires: libfoo = %{version}-%{release}\n%description devel\nd\n\
               %files\n/usr/lib64/libfoo.so.2\n%files devel\n/usr/include/foo.h\n";
    let (_d, specs) = read_tree(&[
        ("libfoo", lib),
        (
            "app",
            &spec(
                "app",
                "BuildRequires: libfoo-devel\nBuildRequires: helper\nRequires: /usr/lib64/libfoo.so.2\nRequires: /bin/sh",
            ),
        ),
        ("helper", &spec("helper", "")),
        ("other", &spec("other", "Provides: webserver")),
        ("bash", &spec("bash", "")),
    ]);
    let tc = GraphConfig {
        toolchain: vec![parse_rpm_filename("sh-1.0-1.x86_64.rpm").unwrap()],
        ..cfg()
    };
    let g = PackageGraph::build(&specs, &tc);
    let c =
        images::image_closure(&g, "imageconfigs/app.json", &["app".into()], &|_| false).unwrap();
    let (pkgs, specs) = closure_names(&g, &c);
    // The file dependency pulls the library in; the build dependencies' specs come along
    // for what rpmbuild will add; `other` is outside.
    assert_eq!(pkgs, ["app", "libfoo"]);
    assert_eq!(specs, ["app", "helper", "libfoo"]);
    // /bin/sh is provided by nothing of the tree.
    assert_eq!(c.external, [("app".to_owned(), "/bin/sh".to_owned())]);

    // A capability picks its provider.
    let c = images::image_closure(&g, "x.json", &["webserver".into()], &|_| false).unwrap();
    assert_eq!(closure_names(&g, &c).0, ["other"]);

    let err = images::image_closure(&g, "imageconfigs/app.json", &["nginx".into()], &|_| false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("imageconfigs/app.json") && err.contains("`nginx`"),
        "{err}"
    );
    let err = images::image_closure(&g, "imageconfigs/app.json", &["sh".into()], &|_| false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("only the build root"), "{err}");

    // With an external repository that has nginx and /bin/sh, neither is an error nor a
    // gap: the image's assembly takes them from there.
    let repo = |n: &str| n == "nginx" || n == "/bin/sh";
    let c = images::image_closure(&g, "x.json", &["app".into(), "nginx".into()], &repo).unwrap();
    assert_eq!(closure_names(&g, &c).0, ["app", "libfoo"]);
    assert!(c.external.is_empty(), "{:?}", c.external);
}
