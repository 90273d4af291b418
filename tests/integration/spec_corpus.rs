//! The spec corpus harness: every spec under `tests/spec_corpus/` is read by the real
//! `rpmspec` and by `keel spec` with identical arguments, for the six queries measured on
//! real trees, and the outputs (stdout and exit code) must agree byte for byte.
//!
//! rpmspec must be installed (Debian/Ubuntu: `apt-get install rpm`); the test fails
//! rather than skips without it.

use std::path::{Path, PathBuf};
use std::process::Command;

const NEVRA: &str = "%{NAME}|%{EPOCH}|%{VERSION}|%{RELEASE}|%{ARCH}\\n";

fn queries() -> Vec<(&'static str, Vec<String>)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        ("P", s(&["-P"])),
        ("q_srpm", s(&["-q", "--srpm", "--qf", NEVRA])),
        ("q_bin", s(&["-q", "--qf", NEVRA])),
        ("q_br", s(&["-q", "--buildrequires"])),
        (
            "q_deps",
            s(&[
                "-q",
                "--qf",
                "[%{=NAME} P %{PROVIDENEVRS}\\n][%{=NAME} R %{REQUIRENEVRS}\\n][%{=NAME} C %{CONFLICTNEVRS}\\n][%{=NAME} O %{OBSOLETENEVRS}\\n]",
            ]),
        ),
        (
            "q_arch",
            s(&[
                "-q",
                "--srpm",
                "--qf",
                "[%{EXCLUSIVEARCH} ]|[%{EXCLUDEARCH} ]\\n",
            ]),
        ),
    ]
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec_corpus")
}

fn corpus_specs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(corpus_dir()).expect("corpus dir") {
        let d = e.expect("entry").path();
        if let Ok(rd) = std::fs::read_dir(&d) {
            for f in rd.flatten() {
                if f.path().extension().is_some_and(|x| x == "spec") {
                    v.push(f.path());
                }
            }
        }
    }
    v.sort();
    v
}

/// Per-spec extra arguments, so the command-line options are exercised too.
fn extra_args(spec: &Path) -> Vec<String> {
    let name = spec
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.as_str() {
        "with-without-cli" => vec!["--with".into(), "feature".into()],
        "dist-macros" => vec![
            "-D".into(),
            "dist .corpus1".into(),
            "--define=extra 1".into(),
        ],
        _ => Vec::new(),
    }
}

fn run(program: &str, pre: &[&str], args: &[String], home: &Path) -> (Option<i32>, Vec<u8>) {
    let out = Command::new(program)
        .args(pre)
        .args(args)
        .env("HOME", home)
        .env("LC_ALL", "C.UTF-8")
        .env("TZ", "UTC")
        .env_remove("KEEL_CORPUS_UNSET_VAR")
        .output()
        .unwrap_or_else(|e| panic!("failed to run {program} (is rpm installed?): {e}"));
    (out.status.code(), out.stdout)
}

#[test]
fn corpus_agrees_with_rpmspec_on_all_six_queries() {
    let keel = env!("CARGO_BIN_EXE_keel");
    let home = tempfile::tempdir().expect("tempdir");
    let specs = corpus_specs();
    assert!(
        specs.len() >= 60,
        "the corpus must have at least 60 specs, found {}",
        specs.len()
    );
    let mut jobs = Vec::new();
    for spec in &specs {
        for (id, q) in queries() {
            let dir = spec
                .parent()
                .expect("spec dir")
                .to_string_lossy()
                .into_owned();
            let mut args = vec!["-D".to_string(), format!("_sourcedir {dir}")];
            args.extend(extra_args(spec));
            args.extend(q);
            args.push(spec.to_string_lossy().into_owned());
            jobs.push((spec.clone(), id, args));
        }
    }
    let failures = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((spec, id, args)) = jobs.get(i) else { break };
                    let r = run("rpmspec", &[], args, home.path());
                    let k = run(keel, &["spec"], args, home.path());
                    let is_error_spec = spec.file_stem().is_some_and(|s| s.to_string_lossy().starts_with("error-"));
                    if *id == "P" && !is_error_spec && (r.0 != Some(0) || r.1.is_empty()) {
                        failures.lock().expect("lock").push(format!(
                            "{}: rpmspec -P failed (rc {:?}): the corpus spec itself is broken",
                            spec.display(),
                            r.0
                        ));
                    }
                    if r != k {
                        failures.lock().expect("lock").push(format!(
                            "{} [{id}]: rpmspec rc={:?} keel rc={:?}\n--- rpmspec\n{}\n--- keel\n{}",
                            spec.display(),
                            r.0,
                            k.0,
                            String::from_utf8_lossy(&r.1),
                            String::from_utf8_lossy(&k.1)
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    let total = jobs.len();
    assert!(
        failures.is_empty(),
        "{} of {total} spec/query pairs disagree with rpmspec:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn corpus_contains_failing_specs_that_rpm_rejects() {
    // The error specs only prove something if rpm really rejects them.
    let home = tempfile::tempdir().expect("tempdir");
    let errs: Vec<PathBuf> = corpus_specs()
        .into_iter()
        .filter(|p| {
            p.file_stem()
                .is_some_and(|s| s.to_string_lossy().starts_with("error-"))
        })
        .collect();
    assert!(errs.len() >= 8);
    for spec in errs {
        let (rc, _) = run(
            "rpmspec",
            &["-P"],
            &[spec.to_string_lossy().into_owned()],
            home.path(),
        );
        assert_eq!(rc, Some(1), "rpmspec accepted {}", spec.display());
    }
}

#[test]
fn spec_check_reports_failures_with_path_and_line() {
    let keel = env!("CARGO_BIN_EXE_keel");
    let out = Command::new(keel)
        .args(["spec", "check"])
        .arg(corpus_dir().join("error-unknown-tag"))
        .arg(corpus_dir().join("define-global"))
        .output()
        .expect("run keel");
    assert_eq!(out.status.code(), Some(1));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("error-unknown-tag.spec:6: line 6: Unknown tag: Frobnicate: yes"),
        "{s}"
    );
    assert!(!s.contains("define-global"), "{s}");
    let ok = Command::new(keel)
        .args(["spec", "check"])
        .arg(corpus_dir().join("define-global"))
        .output()
        .expect("run keel");
    assert_eq!(ok.status.code(), Some(0));
}
