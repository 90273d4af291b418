//! What survives a crash: an object whose name the store gave out is on disk under that
//! name, not only in the page cache.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use crate::support::*;

const FINE_SPEC: &str = "Name: fine
Version: 1
Release: 1
Summary: Builds
License: MIT
BuildArch: noarch

%description
Fine.

%files

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- Fine.
";

#[test]
fn every_object_directory_is_fsynced_after_an_object_is_renamed_into_it() {
    let p = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("tree/SPECS/fine/fine.spec", FINE_SPEC)
        .build();
    let log = p.path("strace.log");
    // strace -y names each descriptor's file: `fsync(7</…/blobs/ab>) = 0`.
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&log)
        .arg(env!("CARGO_BIN_EXE_keel"))
        .arg("--store")
        .arg(p.store())
        .args(["-C", "tree", "build", "--executor", "test"])
        .current_dir(p.root());
    for (k, _) in std::env::vars() {
        if k.starts_with("KEEL_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("strace runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trace = std::fs::read_to_string(&log).unwrap();
    let synced: BTreeSet<PathBuf> = trace
        .lines()
        .filter(|l| l.contains("fsync("))
        .filter_map(|l| {
            let start = l.find('<')? + 1;
            let end = start + l[start..].find('>')?;
            Some(PathBuf::from(&l[start..end]))
        })
        .collect();
    let mut dirs = BTreeSet::new();
    for kind in ["blobs", "trees", "actions"] {
        for fan in std::fs::read_dir(p.store().join(kind))
            .into_iter()
            .flatten()
        {
            let fan = fan.unwrap().path();
            if fan.is_dir() && std::fs::read_dir(&fan).unwrap().next().is_some() {
                dirs.insert(fan);
            }
        }
    }
    assert!(!dirs.is_empty(), "the build stored nothing");
    let unsynced: Vec<&PathBuf> = dirs.iter().filter(|d| !synced.contains(*d)).collect();
    assert!(
        unsynced.is_empty(),
        "objects renamed into {unsynced:?} without an fsync of the directory"
    );
}
