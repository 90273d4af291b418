//! `keel build` with real rpmbuild in the sandbox, on the example distribution and on
//! small trees made for one behaviour each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

pub(crate) fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/distro")
}

/// Copies a directory tree (without `out/`).
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == "out" {
            continue;
        }
        let dest = to.join(&name);
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A copy of the example distribution with its own store.
pub(crate) fn example_copy() -> Project {
    let p = project().build();
    copy_tree(&example(), &p.path("tree"));
    p
}

/// The example distribution built once from nothing in a fresh store, with the status of
/// every action: shared by the tests that continue from a clean build or compare against
/// one (a clean build with real rpmbuild and both images is the suite's most expensive
/// step). Never changed: tests take [`Project::copy`]s.
pub(crate) struct CleanBuild {
    pub p: Project,
    pub status: BTreeMap<String, String>,
    pub stderr: String,
}

pub(crate) fn clean_example() -> &'static CleanBuild {
    static BUILT: std::sync::OnceLock<CleanBuild> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let p = project().build_shared();
        copy_tree(&example(), &p.path("tree"));
        let (run, status) = build_json(&p, &[]);
        let run = run.success();
        CleanBuild {
            p,
            status,
            stderr: run.stderr(),
        }
    })
}

/// `keel build --json` in the project's tree: the final status of every action.
pub(crate) fn build_json(p: &Project, extra: &[&str]) -> (Run, BTreeMap<String, String>) {
    let mut args = vec!["-C", "tree", "--json", "build"];
    args.extend_from_slice(extra);
    let run = p.keel(&args).run();
    let mut status = BTreeMap::new();
    for line in run.stdout().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        // A build may run twice (remote entries refused after their records were used):
        // an action that ran in either run ran.
        if v["event"] == "action_finished" {
            let name = v["name"].as_str().unwrap().to_owned();
            let ran = |s: &String| s == "ran" || s == "cut_off";
            if !status.get(&name).is_some_and(ran) {
                status.insert(name, v["status"].as_str().unwrap().to_owned());
            }
        }
    }
    (run, status)
}

pub(crate) fn executed(status: &BTreeMap<String, String>) -> Vec<&str> {
    status
        .iter()
        .filter(|(_, s)| *s == "ran" || *s == "cut_off")
        .map(|(n, _)| n.as_str())
        .collect()
}

/// Every RPM under `out/`, by file name, with its bytes' digest.
pub(crate) fn rpms(out: &Path) -> BTreeMap<String, String> {
    files(out)
        .into_iter()
        .filter(|(rel, _)| rel.ends_with(".rpm"))
        .map(|(rel, d)| (rel.rsplit('/').next().unwrap_or(&rel).to_owned(), d))
        .collect()
}

/// Rebuilds libgreet's tarball from `src` with `edit` applied, and its signature.
fn edit_libgreet_source(tree: &Path, edit: impl Fn(&str) -> String) {
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("libgreet-1.0");
    copy_tree(&tree.join("src/libgreet-1.0"), &src);
    let c = src.join("greet.c");
    let text = std::fs::read_to_string(&c).unwrap();
    std::fs::write(&c, edit(&text)).unwrap();
    let tarball = tree.join("SPECS/libgreet/libgreet-1.0.tar.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C {} -c libgreet-1.0 | gzip -n > {}",
            scratch.path().display(),
            tarball.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let sha = std::process::Command::new("sha256sum")
        .arg(&tarball)
        .output()
        .unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(
        tree.join("SPECS/libgreet/libgreet.signatures.json"),
        format!("{{\"Signatures\": {{\"libgreet-1.0.tar.gz\": \"{sha}\"}}}}"),
    )
    .unwrap();
}

#[test]
fn the_example_distribution_builds_runs_and_rebuilds_only_what_changed() {
    let clean = clean_example();
    let first = &clean.status;
    assert!(
        first.values().all(|s| s == "ran"),
        "{first:?}\n{}",
        clean.stderr
    );
    // Everything below continues in a copy of the clean build, at another path: the keys
    // name no path, so the copy is as built as the original.
    let p = clean.p.copy();
    let tree = p.path("tree");
    let out = rpms(&tree.join("out"));
    // The images keel.toml names were built with the packages and published.
    assert_eq!(first["image:docs-container"], "ran", "{first:?}");
    assert!(tree.join("out/images/docs-container/docs.tar.gz").is_file());
    assert!(tree.join("out/images/demo-disk/demo.qcow2").is_file());
    for want in [
        "libgreet-1.0-1.kl1.x86_64.rpm",
        "libgreet-devel-1.0-1.kl1.x86_64.rpm",
        "hello-1.0-1.kl1.x86_64.rpm",
        "greet-scripts-1.0-1.kl1.noarch.rpm",
        "hello-1.0-1.kl1.src.rpm",
    ] {
        assert!(out.contains_key(want), "{want} not in {out:?}");
    }
    assert!(tree.join("out/RPMS/repodata/repomd.xml").is_file());

    // The program built against the library runs in a sandbox made of its runtime
    // closure (hello Requires libgreet.so.1()(64bit), which only libgreet provides).
    let run = p
        .keel(&["-C", "tree", "run", "-p", "hello", "--", "hello"])
        .run()
        .success();
    assert_eq!(run.stdout().trim(), "Hello, world!", "{}", run.stderr());
    // Dependencies first, as an image installs them.
    assert!(run.stderr().contains("libgreet, hello"), "{}", run.stderr());

    // Nothing changed: nothing runs.
    let (run, again) = build_json(&p, &[]);
    run.success();
    assert!(executed(&again).is_empty(), "{again:?}");

    // A comment in the library's spec: the library is rebuilt, its RPMs' payload and
    // dependencies come out the same, and the program is not rebuilt.
    let spec = tree.join("SPECS/libgreet/libgreet.spec");
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str("# a comment that changes nothing built\n");
    std::fs::write(&spec, text).unwrap();
    let (run, after_comment) = build_json(&p, &[]);
    run.success();
    assert_eq!(
        after_comment["rpm:libgreet"], "cut_off",
        "{after_comment:?}"
    );
    assert!(
        !executed(&after_comment).contains(&"rpm:hello"),
        "{after_comment:?}"
    );
    let human = p.keel(&["-C", "tree", "build"]).run().success();
    assert!(human.stderr().contains("Fresh") || human.stderr().contains("0 run"));

    // The library's source changes: the library and the program are rebuilt, the other
    // packages stay cached.
    edit_libgreet_source(&tree, |t| t.replace("Hello", "Howdy"));
    let (run, after_source) = build_json(&p, &[]);
    run.success();
    let ran = executed(&after_source);
    // Neither image has libgreet or hello in its closure: both stay cached.
    assert_eq!(
        ran,
        vec!["repo:x86_64", "rpm:hello", "rpm:libgreet", "srpm:libgreet"],
        "{after_source:?}"
    );
    assert_eq!(
        after_source["image:demo-disk"], "cached",
        "{after_source:?}"
    );
    assert_eq!(
        after_source["image:docs-container"], "cached",
        "{after_source:?}"
    );
    let run = p
        .keel(&["-C", "tree", "run", "-p", "hello", "--", "hello"])
        .run()
        .success();
    assert_eq!(run.stdout().trim(), "Howdy, world!");

    // An image of the tree's packages: the closure of its package list, nothing more;
    // `keel image` makes the same bytes as the image action of `keel build` did.
    let built = std::fs::read(tree.join("out/images/docs-container/docs.tar.gz")).unwrap();
    let run = p
        .keel(&[
            "-C",
            "tree",
            "image",
            "tree/imageconfigs/docs-container.json",
        ])
        .run()
        .success();
    assert!(
        run.stdout()
            .contains("out/images/docs-container/docs.tar.gz"),
        "{}",
        run.stdout()
    );
    let list = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(tree.join("out/images/docs-container/docs.tar.gz"))
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(list.contains("usr/share/man/man1/tally.1"), "{list}");
    assert!(
        list.contains("usr/lib/rpm/macros.d/macros.example"),
        "{list}"
    );
    assert!(!list.contains("usr/bin/hello"), "{list}");
    assert!(
        std::fs::read(tree.join("out/images/docs-container/docs.tar.gz")).unwrap() == built,
        "keel image and keel build made different tarballs"
    );

    // explain names the reasons.
    let run = p.keel(&["-C", "tree", "explain", "hello"]).run().success();
    assert!(
        run.stdout().contains("rpm:hello is up to date"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stdout()
            .contains("rebuilt because rpm:libgreet's output changed")
            || run.stdout().contains("libgreet"),
        "{}",
        run.stdout()
    );
}

#[test]
fn two_clean_builds_in_fresh_stores_give_identical_rpms_and_images() {
    let a = &clean_example().p;
    let b = example_copy();
    build_json(&b, &[]).0.success();
    let ra = rpms(&a.path("tree/out"));
    let rb = rpms(&b.path("tree/out"));
    assert!(ra.len() >= 15, "{ra:?}");
    assert_eq!(ra, rb, "the same tree built twice gave different RPMs");
    // And the images built from them: the container's tarball and OCI layout, the disk's
    // raw and qcow2 files, the manifests.
    let ia = files(&a.path("tree/out/images"));
    let ib = files(&b.path("tree/out/images"));
    for want in [
        "docs-container/docs.tar.gz",
        "docs-container/docs.oci/index.json",
        "docs-container/Docs.manifest.json",
        "demo-disk/demo.raw",
        "demo-disk/demo.qcow2",
        "demo-disk/Demo.manifest.json",
    ] {
        assert!(ia.contains_key(want), "{want} not in {ia:?}");
    }
    assert_eq!(ia, ib, "the same tree built twice gave different images");
}

/// Every file under `dir`, by path relative to it, with its bytes' digest.
pub(crate) fn files(dir: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                m.insert(rel, b3(&std::fs::read(&p).unwrap()));
            }
        }
    }
    m
}

const SANDBOX_SPEC: &str = "Name: probe
Version: 1
Release: 1
Summary: Tries to leave its sandbox
License: MIT

%description
Tries the network and the host's file system during its build.

%build
# The host listens on this port: a build that reaches it has the network.
if (exec 3<>/dev/tcp/127.0.0.1/@PORT@) 2>/dev/null; then
  echo 'probe: reached the host network' >&2
  exit 1
fi
echo 'probe: no network, as expected'
# Writes outside the build root must not reach the host.
echo escaped > /usr/keel-probe-@PORT@ 2>/dev/null || true
echo escaped > /keel-probe-@PORT@ 2>/dev/null || true

%install
mkdir -p %{buildroot}/usr/share/probe
echo ok > %{buildroot}/usr/share/probe/ok

%files
/usr/share/probe/ok

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- Probe.
";

#[test]
fn a_build_cannot_reach_the_network_or_write_outside_its_root() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let p = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file(
            "tree/SPECS/probe/probe.spec",
            SANDBOX_SPEC.replace("@PORT@", &port),
        )
        .build();
    let run = p.keel(&["-C", "tree", "build"]).run();
    let run = run.success();
    assert!(
        std::fs::read_to_string(p.store().join("logs/rpm_probe.log"))
            .unwrap()
            .contains("no network, as expected"),
        "{}",
        run.stderr()
    );
    for escaped in [
        format!("/usr/keel-probe-{port}"),
        format!("/keel-probe-{port}"),
    ] {
        assert!(!Path::new(&escaped).exists(), "{escaped} reached the host");
    }
    drop(listener);
}

const FAILING_SPEC: &str = "Name: broken
Version: 1
Release: 1
Summary: Fails to build
License: MIT

%description
Fails.

%build
echo 'compiling the broken thing'
echo 'error: the broken thing is broken' >&2
exit 3

%files

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- Broken.
";

pub(crate) const GOOD_SPEC: &str = "Name: fine
Version: 1
Release: 1
Summary: Builds
License: MIT
BuildArch: noarch

%description
Fine.

%install
mkdir -p %{buildroot}/usr/share/fine
echo ok > %{buildroot}/usr/share/fine/ok

%files
/usr/share/fine/ok

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- Fine.
";

#[test]
fn a_failing_build_names_the_package_and_its_log_and_keep_going_builds_the_rest() {
    let p = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("tree/SPECS/broken/broken.spec", FAILING_SPEC)
        .file("tree/SPECS/fine/fine.spec", GOOD_SPEC)
        .build();
    let run = p
        .keel(&["-C", "tree", "-j", "1", "build", "--keep-going"])
        .run()
        .code_is(1)
        .stderr_has("rpm:broken failed")
        .stderr_has("error: the broken thing is broken")
        .stderr_has("rpm_broken.log");
    assert!(
        p.path("tree/out").exists() || run.stderr().contains("1 failed"),
        "{}",
        run.stderr()
    );
    // With --keep-going the other package was built all the same.
    let (_, status) = build_json(&p, &["--keep-going"]);
    assert_eq!(
        status.get("rpm:fine").map(String::as_str),
        Some("cached"),
        "{status:?}"
    );
}

#[test]
fn a_source_that_does_not_match_its_signature_is_refused() {
    let p = example_copy();
    let tree = p.path("tree");
    let sig = tree.join("SPECS/hello/hello.signatures.json");
    let text = std::fs::read_to_string(&sig).unwrap();
    let wrong = "0".repeat(64);
    let start = text.find(": \"").unwrap() + 3;
    let mut bad = text.clone();
    bad.replace_range(start..start + 64, &wrong);
    std::fs::write(&sig, bad).unwrap();
    p.keel(&["-C", "tree", "build", "hello"])
        .run()
        .code_is(1)
        .stderr_has("hello-1.0.tar.gz")
        .stderr_has(&wrong);
}

const NOISY_SPEC: &str = "Name: noisy
Version: 1
Release: 1
Summary: Records the time it was built
License: MIT
BuildArch: noarch

%description
Not reproducible on purpose.

%install
mkdir -p %{buildroot}/usr/share/noisy
date +%s%N > %{buildroot}/usr/share/noisy/stamp

%files
/usr/share/noisy/stamp

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- Noisy.
";

#[test]
fn check_reproducible_names_the_rpm_and_the_file_that_differ() {
    let p = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("tree/SPECS/noisy/noisy.spec", NOISY_SPEC)
        .file("tree/SPECS/fine/fine.spec", GOOD_SPEC)
        .build();
    let run = p
        .keel(&["-C", "tree", "build", "--check-reproducible"])
        .run()
        .code_is(1)
        .stderr_has("not reproducible: noisy-1-1.noarch.rpm")
        .stderr_has("/usr/share/noisy/stamp");
    assert!(
        !run.stderr().contains("not reproducible: fine"),
        "{}",
        run.stderr()
    );
    p.keel(&["-C", "tree", "build", "--check-reproducible", "fine"])
        .run()
        .success()
        .stderr_has("byte for byte the same");
}

const SONAME_SPEC: &str = "Name: soname-user
Version: 1
Release: 1
Summary: Needs a library only by its soname
License: MIT
BuildRequires: libgreet.so.1()(64bit)

%description
Its build root must hold what provides libgreet.so.1, which only the built RPM says.

%build
test -e /usr/lib64/libgreet.so.1

%install
mkdir -p %{buildroot}/usr/share/soname-user
echo ok > %{buildroot}/usr/share/soname-user/ok

%files
/usr/share/soname-user/ok

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- Soname.
";

#[test]
fn capabilities_of_built_rpms_resolve_dependencies_on_the_next_build() {
    let p = example_copy();
    let spec_dir = p.path("tree/SPECS/soname-user");
    std::fs::create_dir_all(&spec_dir).unwrap();
    std::fs::write(spec_dir.join("soname-user.spec"), SONAME_SPEC).unwrap();
    // Before libgreet was ever built, nothing in the tree declares the soname.
    p.keel(&["-C", "tree", "build", "--dry-run", "soname-user"])
        .run()
        .success()
        .stderr_has("libgreet.so.1()(64bit) is provided by nothing");
    p.keel(&["-C", "tree", "build", "libgreet"]).run().success();
    // libgreet's RPM provides it: the edge exists, and the library is in the build root.
    let (run, status) = build_json(&p, &["soname-user"]);
    run.success();
    assert_eq!(status["rpm:soname-user"], "ran", "{status:?}");
    assert_eq!(status["rpm:libgreet"], "cached", "{status:?}");
}

const MINIBASH_SPEC: &str = "Name: minibash
Version: 1
Release: 1
Summary: bash and its libraries, taken from the build root: a toolchain in one RPM
License: GPL
# rpm's brp-elfperms (run when the host has elfutils) takes the executable bit off shared
# objects, the dynamic loader included: this root must run bash.
%global __brp_elfperms %{nil}

%description
Enough of a root to run a shell in.

%install
for f in /usr/bin/bash $(ldd /usr/bin/bash | grep -o '/[^ ]*'); do
  install -D -m 0755 \"$f\" \"%{buildroot}$f\"
  echo \"$f\" >> files.list
done
mkdir -p %{buildroot}/bin
ln -s /usr/bin/bash %{buildroot}/bin/sh
echo /bin/sh >> files.list

%files -f files.list

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- Minibash.
";

/// Lists the root a `keel run` sees, from inside it.
const PROBE: &str = "echo fine:$(< /usr/share/fine/ok); if test -e /usr/bin/gcc; then echo gcc:yes; else echo gcc:no; fi";

/// `keel run` of [`PROBE`] in a sandbox of `fine`.
fn probe(p: &Project) -> Run {
    p.keel(&[
        "-C",
        "tree",
        "run",
        "-p",
        "fine",
        "--",
        "/usr/bin/bash",
        "-c",
        PROBE,
    ])
    .run()
    .success()
}

#[test]
fn a_toolchain_can_be_a_tarball_or_a_set_of_rpms() {
    let p = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("tree/SPECS/minibash/minibash.spec", MINIBASH_SPEC)
        .file("tree/SPECS/fine/fine.spec", GOOD_SPEC)
        .build();
    p.keel(&["-C", "tree", "build"]).run().success();
    // On the host toolchain, the host's gcc is there.
    let run = probe(&p);
    assert_eq!(run.stdout().trim(), "fine:ok\ngcc:yes");

    // The toolchain as a set of RPMs: only minibash's payload under fine's.
    let tc = p.path("tree/tc-rpms");
    std::fs::create_dir_all(&tc).unwrap();
    let arch = std::env::consts::ARCH;
    let rpm = format!("minibash-1-1.{arch}.rpm");
    std::fs::copy(
        p.path(&format!("tree/out/RPMS/{arch}/{rpm}")),
        tc.join(&rpm),
    )
    .unwrap();
    std::fs::write(
        p.path("tree/keel.toml"),
        "[specs]\ndirs = [\"SPECS\"]\n[toolchain]\nrpms = \"tc-rpms\"\n",
    )
    .unwrap();
    let run = probe(&p);
    assert_eq!(run.stdout().trim(), "fine:ok\ngcc:no", "{}", run.stderr());

    // The same root as a tarball (Azure Linux's worker_chroot.tar.gz).
    let root = p.path("chroot");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkdir -p {root} && rpm -i --root {root} --nodeps --noscripts --nosignature {rpm} && tar -czf {tar} -C {root} .",
            root = root.display(),
            rpm = tc.join(&rpm).display(),
            tar = p.path("tree/chroot.tar.gz").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        p.path("tree/keel.toml"),
        "[specs]\ndirs = [\"SPECS\"]\n[toolchain]\nroot = \"chroot.tar.gz\"\n",
    )
    .unwrap();
    let run = probe(&p);
    assert_eq!(run.stdout().trim(), "fine:ok\ngcc:no", "{}", run.stderr());
    // A different toolchain is a different key: a build in it reruns (and here fails,
    // for want of rpmbuild in a root that has only bash), naming the toolchain change.
    let run = p
        .keel(&["-C", "tree", "build", "--dry-run", "fine"])
        .run()
        .success();
    assert!(
        run.stdout().contains("toolchain changed"),
        "{}",
        run.stdout()
    );
}

/// What `path` holds in a sandbox of `pkg`'s runtime closure (`keel run`).
fn cat_in(p: &Project, pkg: &str, path: &str) -> String {
    p.keel(&["-C", "tree", "run", "-p", pkg, "--", "/usr/bin/cat", path])
        .run()
        .success()
        .stdout()
}

const CHECKED_SPEC: &str = "Name: checked
Version: 1
Release: 1
Summary: A failing check, and the cores the build was given
License: MIT
BuildArch: noarch

%description
Checked.

%install
mkdir -p %{buildroot}/usr/share/checked
echo %{_smp_build_ncpus} %{?_smp_mflags} > %{buildroot}/usr/share/checked/cores

%check
echo the test suite fails
exit 1

%files
/usr/share/checked/cores

%changelog
* Sun Dec 06 2026 keel <keel@example.invalid> - 1-1
- Checked.
";

/// `[build] check = false` is `rpmbuild --nocheck`, and part of the key; builds side by
/// side share the machine's cores.
#[test]
fn check_can_be_skipped_by_the_tree_and_parallel_builds_share_the_cores() {
    let p = project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\n[build]\ncheck = false\n",
        )
        .file("tree/SPECS/checked/checked.spec", CHECKED_SPEC)
        .build();
    p.keel(&["-C", "tree", "-j", "2", "build"]).run().success();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = (cores / 2).max(1);
    let out = cat_in(&p, "checked", "/usr/share/checked/cores");
    assert_eq!(out.trim(), format!("{share} -j{share}"));
    // Checks on again: a different key, and the failing check fails the build.
    std::fs::write(p.path("tree/keel.toml"), "[specs]\ndirs = [\"SPECS\"]\n").unwrap();
    let plan = p
        .keel(&["-C", "tree", "build", "--dry-run"])
        .run()
        .success()
        .stdout();
    assert!(
        plan.contains("rpm:checked") && plan.contains("%check changed (skipped -> run)"),
        "{plan}"
    );
    p.keel(&["-C", "tree", "build"])
        .run()
        .code_is(1)
        .stderr_has("checked");
}

const TREE_MACROS_SPEC: &str = "Name: tree-macros
Version: 1
Release: 1
Summary: The tree's own rpm macros, which the build root carries
License: MIT
BuildArch: noarch
Source0: name.lua

%description
Macros.

%prep

%install
mkdir -p %{buildroot}/usr/lib/rpm/macros.d %{buildroot}/usr/lib/rpm/treedemo
mkdir -p %{buildroot}/usr/lib/rpm/lua/treedemo
echo '%%treedemo_val 42' > %{buildroot}/usr/lib/rpm/macros.d/macros.treedemo
printf '#!/bin/sh\\ntrue\\n' > %{buildroot}/usr/lib/rpm/treedemo/prep-helper
chmod 755 %{buildroot}/usr/lib/rpm/treedemo/prep-helper
install -m 644 %{SOURCE0} %{buildroot}/usr/lib/rpm/lua/treedemo/name.lua

%files
/usr/lib/rpm/macros.d/macros.treedemo
/usr/lib/rpm/treedemo/prep-helper
/usr/lib/rpm/lua/treedemo/name.lua

%changelog
* Sun Dec 06 2026 keel <keel@example.invalid> - 1-1
- Macros.
";

const MACRO_USER_SPEC: &str = "Name: macro-user
Version: 1
Release: 1
Summary: Uses the tree's macros without asking for them
License: MIT
BuildArch: noarch
# A Lua module of the carried package, required while the spec is read: packing the
# SRPM reads it too (as Azure Linux's %python_provide requires azl.srpm.python).
Provides: macro-user-%{treedemo_lua}

%description
User.

%prep

%install
mkdir -p %{buildroot}/usr/share/macro-user
echo %{?treedemo_val}%{!?treedemo_val:undefined} > %{buildroot}/usr/share/macro-user/val

%files
/usr/share/macro-user/val

%changelog
* Sun Dec 06 2026 keel <keel@example.invalid> - 1-1
- User.
";

/// `[toolchain] from_tree`: packages of the tree the build root carries (Azure Linux's
/// macros on a Debian host) are built first and layered into every other build. The
/// tree's macro files run a helper that package installs in every %prep (as Azure
/// Linux's run `/usr/lib/rpm/azl/gen-ld-script.sh`): the carried package itself builds in
/// the bare root, without them.
#[test]
fn packages_the_build_root_carries_are_layered_into_every_build() {
    let p = project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\nmacro_files = [\"macros.prep\"]\n\
             [specs.lua_modules]\n\"treedemo.name\" = \"SPECS/tree-macros/name.lua\"\n\
             [toolchain]\nfrom_tree = [\"tree-macros\"]\n",
        )
        .file(
            "tree/macros.prep",
            "%__spec_prep_pre %{___build_pre}\\\n/usr/lib/rpm/treedemo/prep-helper\n\
             %treedemo_lua %{lua: print(require(\"treedemo.name\").name)}\n",
        )
        .file("tree/SPECS/tree-macros/tree-macros.spec", TREE_MACROS_SPEC)
        .file(
            "tree/SPECS/tree-macros/name.lua",
            "return { name = \"lua\" }\n",
        )
        .file("tree/SPECS/macro-user/macro-user.spec", MACRO_USER_SPEC)
        .build();
    let deps = p
        .keel(&["-C", "tree", "query", "deps", "macro-user"])
        .run()
        .success()
        .stdout();
    assert!(
        deps.contains("tree-macros\tthe build root carries tree-macros"),
        "{deps}"
    );
    p.keel(&["-C", "tree", "build"]).run().success();
    let out = cat_in(&p, "macro-user", "/usr/share/macro-user/val");
    assert_eq!(out.trim(), "42");
    let provides = p
        .keel(&["-C", "tree", "query", "whatprovides", "macro-user-lua"])
        .run()
        .success()
        .stdout();
    assert!(provides.contains("macro-user"), "{provides}");
    // A name no package of the tree provides is keel.toml's error.
    std::fs::write(
        p.path("tree/keel.toml"),
        "[specs]\ndirs = [\"SPECS\"]\n[toolchain]\nfrom_tree = [\"no-such-macros\"]\n",
    )
    .unwrap();
    p.keel(&["-C", "tree", "graph"])
        .run()
        .code_is(1)
        .stderr_has("from_tree names no-such-macros, which no package of the tree provides");
}

const SHELL_SPEC: &str = "Name: shelled
Version: 1
Release: 1
Summary: Records which shell ran its build scripts
License: MIT
BuildArch: noarch

%description
Shelled.

%install
mkdir -p %{buildroot}/usr/share/shelled
echo \"[${BASH_VERSION%%%%.*}]\" > %{buildroot}/usr/share/shelled/sh

%files
/usr/share/shelled/sh

%changelog
* Sun Dec 06 2026 keel <keel@example.invalid> - 1-1
- Shelled.
";

/// `[build] sh`: what `/bin/sh` is in the build root (Azure Linux's scripts need bash
/// there; Debian's is dash), part of the key.
#[test]
fn the_build_roots_bin_sh_is_the_trees_choice() {
    let p = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("tree/SPECS/shelled/shelled.spec", SHELL_SPEC)
        .build();
    let shell = |p: &Project| {
        p.keel(&["-C", "tree", "build"]).run().success();
        cat_in(p, "shelled", "/usr/share/shelled/sh")
    };
    assert_eq!(shell(&p).trim(), "[]", "Debian's /bin/sh is dash");
    std::fs::write(
        p.path("tree/keel.toml"),
        "[specs]\ndirs = [\"SPECS\"]\n[build]\nsh = \"/usr/bin/bash\"\n",
    )
    .unwrap();
    let plan = p
        .keel(&["-C", "tree", "build", "--dry-run"])
        .run()
        .success()
        .stdout();
    assert!(
        plan.contains("/bin/sh changed (the toolchain's -> /usr/bin/bash)"),
        "{plan}"
    );
    assert_eq!(shell(&p).trim(), "[5]");
    // A package that was not built is named, with where keel looked.
    p.keel(&["-C", "tree", "run", "-p", "nosuch", "--", "/usr/bin/true"])
        .run()
        .code_is(1)
        .stderr_has("keel run -> package nosuch: nothing provides it among the built packages of");
}

const TREE_RC_SPEC: &str = "Name: tree-rc
Version: 1
Release: 1
Summary: An rpmrc of the tree's own, as azurelinux-rpm-macros ships one
License: MIT
BuildArch: noarch

%description
An rpmrc.

%install
mkdir -p %{buildroot}/usr/lib/rpm/treerc
printf 'optflags: x86_64 -O2 -keel-hardening\\noptflags: noarch -O2 -keel-hardening\\n' \\
  > %{buildroot}/usr/lib/rpm/treerc/rpmrc

%files
/usr/lib/rpm/treerc/rpmrc

%changelog
* Sun Dec 06 2026 keel <keel@example.invalid> - 1-1
- An rpmrc.
";

const OPTFLAGS_SPEC: &str = "Name: flagged
Version: 1
Release: 1
Summary: Records the optflags it was built with
License: MIT
BuildArch: noarch

%description
Flagged.

%install
mkdir -p %{buildroot}/usr/share/flagged
echo '%{optflags}' > %{buildroot}/usr/share/flagged/flags

%files
/usr/share/flagged/flags

%changelog
* Sun Dec 06 2026 keel <keel@example.invalid> - 1-1
- Flagged.
";

/// `[build] rcfile`: an rpmrc of the build root read after rpm's own, so a tree's
/// `%optflags` (Azure Linux's hardening flags) reach its builds — no macro file can set
/// them, since rpm sets `%optflags` from rpmrc after reading the macro files.
#[test]
fn the_trees_rpmrc_sets_optflags() {
    let p = project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\n[toolchain]\nfrom_tree = [\"tree-rc\"]\n\
             [build]\nrcfile = \"/usr/lib/rpm/treerc/rpmrc\"\n",
        )
        .file("tree/SPECS/tree-rc/tree-rc.spec", TREE_RC_SPEC)
        .file("tree/SPECS/flagged/flagged.spec", OPTFLAGS_SPEC)
        .build();
    p.keel(&["-C", "tree", "build"]).run().success();
    assert_eq!(
        cat_in(&p, "flagged", "/usr/share/flagged/flags").trim(),
        "-O2 -keel-hardening"
    );
}

/// `[build] timeout`: a build that runs longer is stopped and reported as timed out with
/// its package; the limit is not part of any key (changing it re-plans nothing).
#[test]
fn a_build_longer_than_the_trees_timeout_is_stopped_and_named() {
    let config = |secs: u64| format!("[specs]\ndirs = [\"SPECS\"]\n[build]\ntimeout = {secs}\n");
    let p = project()
        .file("tree/keel.toml", config(3600))
        .file(
            "tree/SPECS/slow/slow.spec",
            SHELL_SPEC.replace("Name: shelled", "Name: slow"),
        )
        .build();
    p.keel(&["-C", "tree", "build"]).run().success();
    std::fs::write(p.path("tree/keel.toml"), config(2)).unwrap();
    let plan = p
        .keel(&["-C", "tree", "build", "--dry-run"])
        .run()
        .success()
        .stdout();
    assert!(plan.contains("0 of 3 actions would run"), "{plan}");
    std::fs::write(
        p.path("tree/SPECS/slow/slow.spec"),
        SHELL_SPEC
            .replace("Name: shelled", "Name: slow")
            .replace("%install\n", "%install\nsleep 60\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    p.keel(&["-C", "tree", "build"])
        .run()
        .code_is(1)
        .stderr_has("rpm:slow failed: build slow: rpmbuild timed out");
    assert!(started.elapsed() < std::time::Duration::from_secs(50));
}
