//! The command line explains itself: every command's help, plain text where no terminal
//! reads it, paths in messages that exist after keel exits, summaries that are true and
//! short at thousands of packages, completions, the man page and `make install`.

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_engine::testing::Distro;
use keel_rules::gentree::write_tree;

use crate::support::*;

/// `keel ARGS` outside any tree.
fn keel(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    keel_cmd().current_dir(dir.path()).args(args).run()
}

/// The subcommand names a help text lists under "Commands:" (`help` aside).
fn commands_in(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A description that wraps goes on indented further.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// The options each command takes besides the global ones, one entry per option.
const OPTIONS: &[(&str, &[&str])] = &[
    (
        "build",
        &[
            "--dry-run",
            "--keep-going",
            "--executor",
            "--unsandboxed",
            "--check-reproducible",
        ],
    ),
    ("explain", &["--executor"]),
    ("completions", &[]),
    (
        "spec",
        &[
            "-P, --parse",
            "-q, --query",
            "--srpm",
            "--rpms",
            "--builtrpms",
            "--qf, --queryformat",
            "--requires",
            "--provides",
            "--conflicts",
            "--obsoletes",
            "--buildrequires",
            "--buildconflicts",
            "-D, --define",
            "--load",
            "--target",
            "--with",
            "--without",
            "--macros",
            "--shell",
            "--shell-timeout",
            "--lua-path",
            "--contain",
            "--sourcedir-is-specdir",
            "--keel-toml",
            "--passes",
        ],
    ),
];

const GLOBAL: &[&str] = &["--store", "--tree", "--jobs", "--json", "--quiet"];

/// Whether a word of a help line is part of the option's names and value, not its
/// description: `-C,`, `--tree`, `<DIR>`, `'NAME`, `BODY'`, `CPU[-OS]`.
fn is_option_word(w: &str) -> bool {
    w.starts_with(['-', '<', '[', '\''])
        || (w.chars().any(|c| c.is_ascii_uppercase()) && w.chars().all(|c| !c.is_ascii_lowercase()))
}

/// `option` ("-P, --parse") has one line in `help` with each of its names and, on the
/// same line, its description.
#[track_caller]
fn assert_option_line(help: &str, option: &str, what: &str) {
    let names: Vec<&str> = option.split(", ").collect();
    let line = help
        .lines()
        .find(|l| {
            let words: Vec<&str> = l
                .split_whitespace()
                .take_while(|w| is_option_word(w))
                .map(|w| w.trim_end_matches(','))
                .collect();
            names.iter().all(|n| words.contains(n))
        })
        .unwrap_or_else(|| panic!("{what}: no line for {option}:\n{help}"));
    let description: Vec<&str> = line
        .split_whitespace()
        .skip_while(|w| is_option_word(w))
        .collect();
    assert!(
        !description.is_empty(),
        "{what}: {option} has no description on its line {line:?}:\n{help}"
    );
}

#[test]
fn every_command_answers_help_and_lists_each_of_its_options() {
    let top = keel(&["--help"]).success();
    let help = top.stdout();
    assert!(help.contains("Start here"), "{help}");
    for first in ["keel build", "keel explain", "keel graph"] {
        assert!(
            help.contains(first),
            "keel --help does not mention {first}:\n{help}"
        );
    }
    let mut queue: Vec<Vec<String>> = commands_in(&help).into_iter().map(|c| vec![c]).collect();
    assert!(queue.len() >= 10, "{help}");
    let mut seen = 0;
    while let Some(path) = queue.pop() {
        seen += 1;
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let run = keel(&args).success();
        let sub = run.stdout();
        let what = path.join(" ");
        assert!(!sub.contains('\x1b'), "{what}: colour codes in a pipe");
        for o in GLOBAL {
            assert_option_line(&sub, o, &what);
        }
        if let Some((_, options)) = OPTIONS.iter().find(|(c, _)| *c == what) {
            for o in *options {
                assert_option_line(&sub, o, &what);
            }
        }
        // `keel help SUB` says the same.
        let mut help_args = vec!["help"];
        help_args.extend(path.iter().map(String::as_str));
        let again = keel(&help_args).success();
        assert_eq!(again.stdout(), sub, "keel help {what}");
        for c in commands_in(&sub) {
            let mut next = path.clone();
            next.push(c);
            queue.push(next);
        }
    }
    assert!(seen > 20, "only {seen} commands");
}

#[test]
fn spec_takes_help_and_still_refuses_what_it_does_not_know() {
    let run = keel(&["spec", "--help"]).success();
    assert!(run.stdout().contains("rpmspec options"), "{}", run.stdout());
    assert!(!run.stdout().contains('\x1b'), "colour codes in a pipe");
    keel(&["spec", "-h"]).success();
    keel(&["spec", "--no-such-option", "x.spec"])
        .code_is(1)
        .stderr_has("unknown option: --no-such-option");
}

/// A tree of one spec that needs what nothing provides: reading it warns.
fn warning_tree() -> Project {
    project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file(
            "tree/SPECS/lonely/lonely.spec",
            "Name: lonely\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n\
             BuildRequires: nothing-provides-this\n\n%description\nd\n\n%files\n",
        )
        .build()
}

const WARNS: &[&str] = &["-C", "tree", "build", "--dry-run", "--executor", "test"];

#[test]
fn warnings_are_plain_text_unless_a_terminal_reads_them() {
    let p = warning_tree();
    // stderr is a pipe here.
    let piped = p.keel(WARNS).run().success();
    let err = piped.stderr();
    assert!(err.contains("nothing-provides-this"), "{err}");
    assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");

    // On a terminal (script(1) gives keel one), colour; with NO_COLOR, none.
    let on_tty = |no_color: bool| {
        let mut line = format!(
            "{} --store {}",
            env!("CARGO_BIN_EXE_keel"),
            p.store().display()
        );
        for a in WARNS {
            line.push(' ');
            line.push_str(a);
        }
        let mut c = Command::new("script");
        c.current_dir(p.root())
            .args(["-qec", &line, "/dev/null"])
            .env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        let out = c.output().expect("script(1) runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tty = on_tty(false);
    assert!(tty.contains("nothing-provides-this"), "{tty}");
    assert!(tty.contains('\x1b'), "no colour on a terminal: {tty:?}");
    let plain = on_tty(true);
    assert!(plain.contains("nothing-provides-this"), "{plain}");
    assert!(
        !plain.contains('\x1b'),
        "colour despite NO_COLOR: {plain:?}"
    );
}

/// Every `see PATH` in a message: the paths it sends the user to.
fn seen_paths(stderr: &str) -> Vec<PathBuf> {
    stderr
        .match_indices("see ")
        .filter_map(|(i, _)| {
            let rest = &stderr[i + 4..];
            let end = rest.find([';', ' ', '\n']).unwrap_or(rest.len());
            let p = &rest[..end];
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

const FAILING: &str = "Version: 1
Release: 1
Summary: s
License: MIT
BuildArch: noarch

%description
d

%build
echo 'the build of this package broke here' >&2
exit 3

%files
";

#[test]
fn a_failed_build_names_logs_that_outlive_keel_and_hold_the_error() {
    // An SRPM rpmbuild refuses to pack (an architecture this machine cannot build for),
    // and a package whose %build fails.
    let other = if std::env::consts::ARCH == "s390x" {
        "x86_64"
    } else {
        "s390x"
    };
    let p = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file(
            "tree/SPECS/elsewhere/elsewhere.spec",
            format!(
                "Name: elsewhere\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n\
                 BuildArch: {other}\n\n%description\nd\n\n%files\n"
            ),
        )
        .file(
            "tree/SPECS/broken/broken.spec",
            format!("Name: broken\n{FAILING}"),
        )
        .build();
    let run = p.keel(&["-C", "tree", "build", "-k"]).run().code_is(1);
    let err = run.stderr();
    let logs = seen_paths(&err);
    assert!(logs.len() >= 2, "no log named for each failure: {err}");
    let mut found = (false, false);
    for log in &logs {
        assert!(
            log.is_file(),
            "{} does not exist after keel exited: {err}",
            log.display()
        );
        let text = std::fs::read_to_string(log).unwrap();
        found.0 |= text.contains("No compatible architectures found for build");
        found.1 |= text.contains("the build of this package broke here");
    }
    assert_eq!(found, (true, true), "the logs lack the errors: {logs:?}");
    // Neither the SRPM nor the RPM came from a cache.
    assert!(!err.contains("cache hit rate 100%"), "{err}");
}

#[test]
fn a_missing_source_names_the_spec_directory_not_a_scratch_directory() {
    let p = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file(
            "tree/SPECS/gone/gone.spec",
            "Name: gone\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n\
             Source0: gone-1.tar.gz\n\n%description\nd\n\n%files\n",
        )
        .file(
            "tree/SPECS/gone/gone.signatures.json",
            format!(
                "{{\"Signatures\": {{\"gone-1.tar.gz\": \"{}\"}}}}",
                "ab".repeat(32)
            ),
        )
        .build();
    let run = p.keel(&["-C", "tree", "build"]).run().code_is(1);
    let err = run.stderr();
    // The spec's directory, as the user named the tree (`-C tree`, from the project).
    assert!(
        err.contains("tried: tree/SPECS/gone/gone-1.tar.gz (no such file)"),
        "the spec directory is not among the places tried: {err}"
    );
    assert!(p.path("tree/SPECS/gone").is_dir());
    assert!(!err.contains("/tmp/gone-1.tar.gz"), "{err}");
    assert!(
        err.contains("mirrors"),
        "nothing says where mirrors are set: {err}"
    );
    // The only action failed: nothing was looked up in a cache and found there.
    assert!(!err.contains("cache hit rate 100%"), "{err}");
}

/// The names on the summary's "Critical" line.
fn critical_path(stderr: &str) -> Vec<String> {
    let line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("Critical "))
        .unwrap_or_else(|| panic!("no Critical line: {stderr}"));
    let chain = line.trim_start()["Critical ".len()..].trim();
    let chain = chain.rsplit_once(" (").map_or(chain, |(c, _)| c);
    chain
        .split(" -> ")
        .filter(|n| !n.starts_with("..."))
        .map(str::to_owned)
        .collect()
}

#[test]
fn summaries_are_true_and_short_at_hundreds_of_packages() {
    let p = project().build();
    let d = Distro::generate(200, 6, 11);
    write_tree(&d, &p.path("tree")).unwrap();
    let test = ["-C", "tree", "build", "--executor", "test"];
    let cold = p.keel(&test).run().success();
    for l in cold.stderr().lines() {
        assert!(l.len() < 400, "a line of {} characters: {l}", l.len());
    }

    // Every action of a cold build is a root of it: the explanation counts them.
    let name = &d.packages[5].name;
    let explain = p
        .keel(&["-C", "tree", "explain", name, "--executor", "test"])
        .run()
        .success();
    let out = explain.stdout();
    let roots = out
        .lines()
        .find(|l| l.starts_with("last build's roots"))
        .unwrap_or_else(|| panic!("no roots line: {out}"));
    assert!(roots.len() < 400, "{roots}");
    assert!(roots.contains(" more"), "{roots}");

    // An edit: the critical path holds what ran, never what was cached.
    let spec = p.path(&format!("tree/SPECS/{name}/{name}.spec"));
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str("# an edit\n");
    std::fs::write(&spec, text).unwrap();
    let warm = p.keel(&test).run().success();
    let err = warm.stderr();
    let ran: Vec<&str> = err
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("Finished "))
        .filter_map(|l| l.split(" in ").next())
        .collect();
    let critical = critical_path(&err);
    assert!(!critical.is_empty(), "{err}");
    for c in &critical {
        assert!(
            ran.contains(&c.as_str()),
            "{c} is on the critical path but did not run: {err}"
        );
    }
}

#[test]
fn spec_refuses_a_build_arch_this_machine_cannot_build_as_rpmspec_does() {
    let dir = tempfile::tempdir().unwrap();
    let other = if std::env::consts::ARCH == "s390x" {
        "x86_64"
    } else {
        "s390x"
    };
    let host = std::env::consts::ARCH;
    let cases = [
        ("buildarch", format!("BuildArch: {other}")),
        ("exclusive", format!("ExclusiveArch: {other}")),
        ("exclude", format!("ExcludeArch: {host}")),
        ("either", format!("BuildArch: {other} noarch")),
    ];
    for (name, tag) in &cases {
        let file = dir.path().join(format!("{name}.spec"));
        std::fs::write(
            &file,
            format!(
                "Name: {name}\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n{tag}\n\n\
                 %description\nd\n\n%files\n"
            ),
        )
        .unwrap();
        for mode in ["-P", "-q"] {
            let rpm = Command::new("rpmspec")
                .current_dir(dir.path())
                .args([mode, file.to_str().unwrap()])
                .output()
                .expect("rpmspec runs");
            let ours = keel_cmd()
                .current_dir(dir.path())
                .args(["spec", mode, file.to_str().unwrap()])
                .run();
            let errors = |s: &[u8]| -> Vec<String> {
                String::from_utf8_lossy(s)
                    .lines()
                    .filter(|l| l.starts_with("error:"))
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(
                ours.code(),
                rpm.status.code().unwrap(),
                "{tag} {mode}: rpmspec said {}; keel said {}",
                String::from_utf8_lossy(&rpm.stderr),
                ours.stderr()
            );
            assert_eq!(
                errors(&ours.out.stderr),
                errors(&rpm.stderr),
                "{tag} {mode}"
            );
        }
    }
    // The case the comparison is about did fail.
    keel_cmd()
        .current_dir(dir.path())
        .args(["spec", "-q", "buildarch.spec"])
        .run()
        .code_is(1)
        .stderr_has("error: No compatible architectures found for build");
}

#[test]
fn an_image_of_external_packages_only_builds_no_package_of_the_tree() {
    const SPEC: &str = "Name: NAME
Version: 1
Release: 1
Summary: s
License: MIT
BuildArch: noarch

%description
d

%install
mkdir -p %{buildroot}/usr/share/NAME
echo NAME > %{buildroot}/usr/share/NAME/msg

%files
/usr/share/NAME/msg
";
    let spec = |n: &str| SPEC.replace("NAME", n);
    // The vendor's package, built once elsewhere.
    let vendor = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("tree/SPECS/vendored/vendored.spec", spec("vendored"))
        .build();
    vendor.keel(&["-C", "tree", "build"]).run().success();
    let rpm = "vendored-1-1.noarch.rpm";
    let p = project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\n[images]\nrepos = [\"../vendor\"]\n\
             configs = [\"images/app.json\"]\n",
        )
        .file("tree/SPECS/inside/inside.spec", spec("inside"))
        .file("tree/SPECS/other/other.spec", spec("other"))
        .file(
            "tree/images/app.json",
            r#"{
    "Disks": [{"Artifacts": [{"Name": "app", "Compression": "tar.gz"}]}],
    "SystemConfigs": [{"Name": "App", "PackageLists": ["lists/app.json"], "Hostname": "app"}]
}"#,
        )
        .file(
            "tree/images/lists/app.json",
            r#"{"packages": ["vendored"]}"#,
        )
        .build();
    std::fs::create_dir_all(p.path("vendor")).unwrap();
    std::fs::copy(
        vendor.path(&format!("tree/out/RPMS/noarch/{rpm}")),
        p.path(&format!("vendor/{rpm}")),
    )
    .unwrap();
    let (run, status) = crate::build::build_json(&p, &["image:app"]);
    run.success();
    assert_eq!(
        status.get("image:app").map(String::as_str),
        Some("ran"),
        "{status:?}"
    );
    let tree_actions: Vec<&String> = status.keys().filter(|a| *a != "image:app").collect();
    assert!(
        tree_actions.is_empty(),
        "an image of external packages built the tree's {tree_actions:?}"
    );
    assert!(!p.path("tree/out/RPMS").exists());
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn completions_for_each_shell_know_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let run = keel(&["completions", shell]).success();
        let script = run.stdout();
        for cmd in ["build", "explain", "graph", "spec", "completions"] {
            assert!(script.contains(cmd), "{shell} completions lack {cmd}");
        }
    }
    let bash = keel(&["completions", "bash"]).success();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keel.bash");
    std::fs::write(&file, bash.stdout()).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(check.status.success(), "bash -n: {check:?}");
    // Sourced, it completes keel's commands.
    let complete = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(keel ex); COMP_CWORD=1; COMP_LINE='keel ex'; \
             COMP_POINT=7; _keel keel ex keel; echo \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&complete.stdout);
    assert!(
        words.split_whitespace().any(|w| w == "explain"),
        "{complete:?}"
    );
    keel(&["completions", "tcsh"]).code_is(2);
}

#[test]
fn the_man_page_is_roff_that_man_renders_with_every_command() {
    let run = keel(&["man"]).success();
    let page = run.stdout();
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
    assert!(page.contains(".TH keel 1"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keel.1");
    std::fs::write(&file, &page).unwrap();
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output();
    // man(1) comes from `make test` (scripts/install-deps.sh): rendered for real.
    let rendered = rendered.expect("man runs (apt-get install man-db)");
    assert!(
        rendered.status.success(),
        "man -l failed: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let text = String::from_utf8_lossy(&rendered.stdout).into_owned();
    for cmd in ["build", "explain", "graph", "spec", "completions", "store"] {
        assert!(text.contains(cmd), "the man page lacks {cmd}:\n{text}");
    }
    assert!(text.contains("Start here"), "{text}");
}

#[test]
fn make_install_puts_keel_its_completions_and_its_man_page_under_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let check = |root: &Path| {
        let bin = root.join("bin/keel");
        let run = Command::new(&bin).arg("--version").output().unwrap();
        assert!(run.status.success(), "{} does not run", bin.display());
        for f in [
            "share/bash-completion/completions/keel",
            "share/zsh/site-functions/_keel",
            "share/fish/vendor_completions.d/keel.fish",
            "share/man/man1/keel.1",
        ] {
            let path = root.join(f);
            let len = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .len();
            assert!(len > 100, "{} is {len} bytes", path.display());
        }
    };
    let make = |args: &[String]| {
        let out = Command::new("make")
            .current_dir(manifest_dir())
            .arg("--no-print-directory")
            .arg("install")
            .arg(format!("KEEL_BIN={}", env!("CARGO_BIN_EXE_keel")))
            .args(args)
            .output()
            .expect("make runs");
        assert!(out.status.success(), "make install: {out:?}");
    };
    let prefix = dir.path().join("prefix");
    make(&[format!("PREFIX={}", prefix.display())]);
    check(&prefix);
    let staged = dir.path().join("staged");
    make(&[
        "PREFIX=/opt/keel".into(),
        format!("DESTDIR={}", staged.display()),
    ]);
    check(&staged.join("opt/keel"));
}
