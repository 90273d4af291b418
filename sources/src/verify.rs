//! `keel sources verify`: checking a spec directory against its signatures, offline.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::fetch::sha256_file;
use crate::signatures::Signatures;

/// Something wrong between a spec's sources, its directory and its signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A source of the spec with no entry in the signatures file.
    Unsigned { file: String },
    /// A source present in the spec's directory whose SHA-256 is not the signed one.
    Mismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// An entry in the signatures file for a file that is not a source of the spec.
    Stale { file: String },
    /// A source present in the spec's directory that could not be read.
    Unreadable { path: PathBuf, error: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unsigned { file } => {
                write!(f, "{file} has no entry in the signatures file")
            }
            Problem::Mismatch {
                path,
                expected,
                actual,
            } => write!(
                f,
                "{} has SHA-256 {actual}, expected {expected}",
                path.display()
            ),
            Problem::Stale { file } => write!(
                f,
                "{file} is in the signatures file but is not a source of the spec"
            ),
            Problem::Unreadable { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
        }
    }
}

/// Checks the sources of one spec: every one of `sources` (the spec's Source and Patch
/// file names, after `#/` renames) must have a signature, every one present in `spec_dir`
/// must match it, and every signature must belong to a source. Sources absent from
/// `spec_dir` are not problems: they come from the mirror. Problems come sorted by file.
pub fn verify_dir(spec_dir: &Path, signatures: &Signatures, sources: &[String]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut sorted: Vec<&String> = sources.iter().collect();
    sorted.sort();
    sorted.dedup();
    for file in sorted {
        let path = spec_dir.join(file);
        let Some(expected) = signatures.get(file) else {
            problems.push(Problem::Unsigned { file: file.clone() });
            continue;
        };
        match sha256_file(&path) {
            Ok(actual) if actual == expected => {}
            Ok(actual) => problems.push(Problem::Mismatch {
                path,
                expected: expected.to_owned(),
                actual,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => problems.push(Problem::Unreadable {
                path,
                error: e.to_string(),
            }),
        }
    }
    for (file, _) in signatures.iter() {
        if !sources.iter().any(|s| s == file) {
            problems.push(Problem::Stale {
                file: file.to_owned(),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn finds_every_kind_of_problem() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("good.tar.gz"), b"abc").unwrap();
        fs::write(dir.path().join("bad.patch"), b"abc").unwrap();
        fs::write(dir.path().join("unsigned.txt"), b"").unwrap();
        let mut sigs = Signatures::new();
        sigs.set("good.tar.gz", ABC);
        sigs.set("bad.patch", EMPTY);
        sigs.set("on-mirror.tar.gz", EMPTY);
        sigs.set("old-1.0.tar.gz", EMPTY);
        let sources: Vec<String> = [
            "good.tar.gz",
            "bad.patch",
            "unsigned.txt",
            "on-mirror.tar.gz",
        ]
        .map(String::from)
        .to_vec();
        let problems = verify_dir(dir.path(), &sigs, &sources);
        assert_eq!(
            problems,
            vec![
                Problem::Mismatch {
                    path: dir.path().join("bad.patch"),
                    expected: EMPTY.into(),
                    actual: ABC.into(),
                },
                Problem::Unsigned {
                    file: "unsigned.txt".into()
                },
                Problem::Stale {
                    file: "old-1.0.tar.gz".into()
                },
            ]
        );
        let text = problems[0].to_string();
        assert!(text.contains("bad.patch has SHA-256 ba78"), "{text}");
        assert!(text.contains(&format!("expected {EMPTY}")), "{text}");
        assert_eq!(
            problems[2].to_string(),
            "old-1.0.tar.gz is in the signatures file but is not a source of the spec"
        );
    }

    #[test]
    fn a_clean_directory_has_no_problems() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.tar.gz"), b"abc").unwrap();
        let mut sigs = Signatures::new();
        sigs.set("a.tar.gz", ABC);
        assert_eq!(verify_dir(dir.path(), &sigs, &["a.tar.gz".into()]), vec![]);
    }
}
