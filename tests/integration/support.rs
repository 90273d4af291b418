//! A small project builder in the spirit of cargo's test support: lay out files in a
//! temporary directory, run `keel` in it, assert on what it printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary directory to run keel in; its store is `<dir>/store` unless a test says
/// otherwise.
pub struct Project {
    dir: tempfile::TempDir,
}

pub struct ProjectBuilder {
    files: Vec<(PathBuf, Vec<u8>)>,
}

pub fn project() -> ProjectBuilder {
    ProjectBuilder { files: Vec::new() }
}

impl ProjectBuilder {
    pub fn file(mut self, path: &str, contents: impl AsRef<[u8]>) -> Self {
        self.files.push((path.into(), contents.as_ref().to_vec()));
        self
    }

    pub fn build(self) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("keel-test-")
            .tempdir()
            .expect("temporary directory");
        self.build_in(dir)
    }

    /// A project that lives as long as the test process, for an expensive setup that
    /// several tests share (a clean build of the example distribution): keep it in a
    /// `static` and hand out copies ([`Project::copy`]), never change it. It lives under
    /// cargo's target directory, and what an earlier test process left there is removed.
    pub fn build_shared(self) -> Project {
        let top = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let me = std::process::id();
        for e in std::fs::read_dir(top).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("shared-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| pid != me && !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("shared-{me}-"))
            .tempdir_in(top)
            .expect("temporary directory under the target directory");
        self.build_in(dir)
    }

    fn build_in(self, dir: tempfile::TempDir) -> Project {
        for (p, c) in self.files {
            let full = dir.path().join(p);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, c).unwrap();
        }
        Project { dir }
    }
}

impl Project {
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn store(&self) -> PathBuf {
        self.path("store")
    }

    /// A new project holding a copy of everything in this one (tree, store, `out/`), with
    /// modes, owners and times kept: a build continues from where this one's left off.
    pub fn copy(&self) -> Project {
        let copy = project().build();
        let status = Command::new("cp")
            .arg("-a")
            .arg(self.root().join("."))
            .arg(copy.root())
            .status()
            .expect("cp runs");
        assert!(status.success(), "cp -a {} failed", self.root().display());
        copy
    }

    /// `keel --store <dir>/store ARGS…` run in the project directory.
    pub fn keel(&self, args: &[&str]) -> Command {
        let mut c = keel_cmd();
        c.current_dir(self.root())
            .arg("--store")
            .arg(self.store())
            .args(args);
        c
    }
}

/// The keel binary under test, with a clean environment for its own variables.
pub fn keel_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    for (k, _) in std::env::vars() {
        if k.starts_with("KEEL_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// The result of running a command, with helpers that print everything on failure.
pub struct Run {
    pub out: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.out.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn describe(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code(),
            self.stdout(),
            self.stderr()
        )
    }
    #[track_caller]
    pub fn success(self) -> Run {
        assert!(
            self.out.status.success(),
            "expected success, got {}",
            self.describe()
        );
        self
    }
    #[track_caller]
    pub fn code_is(self, code: i32) -> Run {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code: {}",
            self.describe()
        );
        self
    }
    #[track_caller]
    pub fn stderr_has(self, needle: &str) -> Run {
        assert!(
            self.stderr().contains(needle),
            "stderr lacks {needle:?}: {}",
            self.describe()
        );
        self
    }
}

pub trait RunExt {
    fn run(&mut self) -> Run;
}

impl RunExt for Command {
    fn run(&mut self) -> Run {
        Run {
            out: self.output().expect("keel runs"),
        }
    }
}

/// BLAKE3 of bytes, from the blake3 crate (an independent implementation of what keel
/// prints; b3sum itself is compared in the benches and in `b3sum_agrees`).
pub fn b3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Deterministic pseudo-random bytes (xorshift), so large test inputs need no files in git.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
