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

/// A host path no test has written: where a spec that could write on the host would.
fn host_marker(what: &str) -> String {
    format!(
        "/tmp/keel-{what}-probe-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn shell_in_a_spec_cannot_write_on_the_host_when_a_tree_is_read() {
    let marker = host_marker("touch");
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

/// The view `%(shell)` runs in is staged for each process (a copy of the host's `/etc`):
/// it must go when keel exits, from the system's temporary directory (no store open yet)
/// and from the store's.
#[test]
fn reading_a_tree_leaves_no_staged_view_behind() {
    let p = project()
        .file("tree/keel.toml", TOML)
        .file(
            "tree/SPECS/shelly/shelly.spec",
            spec("shelly", "%(echo 3)", ""),
        )
        .file("tmp/.keep", "")
        .build();
    let tmp = p.path("tmp");
    let leftovers = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains("host-view"))
                    .collect()
            })
            .unwrap_or_default()
    };
    for args in [
        &["-C", "tree", "graph"][..],
        &["-C", "tree", "build", "--dry-run"],
        &["-C", "tree", "query", "whatprovides", "shelly"],
    ] {
        let out = p.keel(args).env("TMPDIR", &tmp).run().success().stdout();
        assert!(
            !out.is_empty() || args[2] != "query",
            "{args:?} printed nothing"
        );
        assert_eq!(
            leftovers(&tmp),
            Vec::<String>::new(),
            "keel {args:?} left them in TMPDIR"
        );
        assert_eq!(
            leftovers(&p.store().join("tmp")),
            Vec::<String>::new(),
            "keel {args:?} left them in the store"
        );
    }
    assert!(whatprovides(&p, "shelly").starts_with("shelly-1.0-3."));
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

/// With a toolchain of its own, a tree's `%(shell)` runs in that build root (where
/// rpmbuild will run it), not on the host: here a root of bash alone, holding a file the
/// host does not have.
#[test]
fn shell_in_a_spec_runs_in_the_trees_own_toolchain() {
    let p = project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\n[toolchain]\nroot = \"root\"\n",
        )
        .file(
            "tree/SPECS/rooted/rooted.spec",
            spec(
                "rooted",
                "%(read x < /etc/keel-toolchain-marker; echo $x)",
                "",
            ),
        )
        .file("tree/root/etc/keel-toolchain-marker", "7\n")
        .build();
    assert!(!Path::new("/etc/keel-toolchain-marker").exists());
    let root = p.path("tree/root");
    let status = Command::new("sh")
        .arg("-c")
        .arg(
            "set -e; cd \"$1\"; mkdir -p bin tmp var/tmp
             for f in /usr/bin/bash $(ldd /usr/bin/bash | grep -o '/[^ ]*'); do
               install -D -m 0755 \"$f\" \".$f\"
             done
             ln -s /usr/bin/bash bin/sh",
        )
        .arg("sh")
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(whatprovides(&p, "rooted").starts_with("rooted-1.0-7."));
    // With a store (after a build's dry run), through the shell cache, the same.
    p.keel(&["-C", "tree", "build", "--dry-run"])
        .run()
        .success();
    assert!(whatprovides(&p, "rooted").starts_with("rooted-1.0-7."));
    // The root changes: the cached result does not outlive it.
    std::fs::write(root.join("etc/keel-toolchain-marker"), "8\n").unwrap();
    assert!(whatprovides(&p, "rooted").starts_with("rooted-1.0-8."));
}

/// Lua runs in keel's own process: contained, it can neither start a process nor write,
/// and the spec that tries is an error that says so.
#[test]
fn lua_in_a_spec_cannot_write_on_the_host_when_a_tree_is_read() {
    let marker = host_marker("lua");
    for (name, lua) in [
        ("luaexec", format!("os.execute('touch {marker}')")),
        ("luaopen", format!("io.open('{marker}', 'w'):write('x')")),
    ] {
        let p = project()
            .file("tree/keel.toml", TOML)
            .file(
                &format!("tree/SPECS/{name}/{name}.spec"),
                spec(name, &format!("1%{{lua: {lua}}}"), ""),
            )
            .build();
        let out = p.keel(&["-C", "tree", "graph"]).run();
        assert!(!Path::new(&marker).exists(), "keel graph wrote {marker}");
        let text = format!("{}{}", out.stdout(), out.stderr());
        assert!(
            text.contains("not permitted while reading a spec") && text.contains(name),
            "{text}"
        );
    }
}

/// A `%(…)` runs the build root's programs, not the caller's: a shim early in keel's
/// `PATH` (a pyenv `python3`) is not what a spec's command finds.
#[test]
fn shell_in_a_spec_finds_the_build_roots_programs_not_the_callers() {
    let p = project()
        .file("tree/keel.toml", TOML)
        .file(
            "tree/SPECS/pathprobe/pathprobe.spec",
            spec(
                "pathprobe",
                "1%(command -v keel-shim-probe >/dev/null && echo 9)",
                "",
            ),
        )
        .file("shims/keel-shim-probe", "#!/bin/sh\necho shim\n")
        .build();
    let shim = p.path("shims/keel-shim-probe");
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        p.path("shims").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = p
        .keel(&["-C", "tree", "query", "whatprovides", "pathprobe"])
        .env("PATH", path)
        .run()
        .success()
        .stdout();
    assert!(out.starts_with("pathprobe-1.0-1."), "{out}");
}

/// Lua and `%{getenv:}` read the environment too: contained, they see what `%(env)` sees.
#[test]
fn lua_and_getenv_in_a_spec_see_no_keel_variable() {
    let p = project()
        .file("tree/keel.toml", TOML)
        .file(
            "tree/SPECS/luaenv/luaenv.spec",
            spec(
                "luaenv",
                "%{lua: print(os.getenv('KEEL_REMOTE_TOKEN') and 1 or 0)}\
                 %{lua: print(posix.getenv('KEEL_REMOTE_TOKEN') and 1 or 0)}\
                 %{getenv:KEEL_REMOTE_TOKEN}%{lua: print(os.getenv('PATH') and 1 or 0)}",
                "",
            ),
        )
        .build();
    let out = p
        .keel(&["-C", "tree", "query", "whatprovides", "luaenv"])
        .env("KEEL_REMOTE_TOKEN", "a-secret-token")
        .run()
        .success()
        .stdout();
    // Nothing of the token, and the build's own PATH is there.
    assert!(out.starts_with("luaenv-1.0-001."), "{out}");
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

/// A `%(shell)` result persists in the store: the next process reads the same spec
/// without running the command again — a command whose output changes every time it runs
/// gives the same package to every `keel` run after the first build (`query` and `graph`
/// read through the store's caches too), so nothing rebuilds for it.
#[test]
fn a_shell_result_is_reused_by_the_next_process() {
    let p = project()
        .file("tree/keel.toml", TOML)
        .file(
            "tree/SPECS/dice/dice.spec",
            spec("dice", "%(od -An -N4 -tu4 /dev/urandom | tr -d ' ')", ""),
        )
        .build();
    let dry_run = || {
        p.keel(&["-C", "tree", "build", "--dry-run"])
            .run()
            .success();
    };
    dry_run();
    let first = whatprovides(&p, "dice");
    assert!(first.starts_with("dice-1.0-"), "{first}");
    assert_eq!(whatprovides(&p, "dice"), first, "the command ran again");
    // Another edit of the spec: the spec is read again, the command's result is reused.
    let path = p.path("tree/SPECS/dice/dice.spec");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("Contained shell probe", "Edited probe")).unwrap();
    dry_run();
    assert_eq!(whatprovides(&p, "dice"), first, "the command ran again");
}
