//! Helpers shared by the unit tests: real `rpmbuild` runs on tiny specs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `spec_text` with the host's rpmbuild (`-bb`, `_topdir` inside `dir`), with extra
/// `--define`s and environment, and returns the binary RPMs it wrote, sorted.
pub fn rpmbuild_host(
    dir: &Path,
    spec_text: &str,
    defines: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Vec<PathBuf> {
    let top = dir.join("top");
    std::fs::create_dir_all(&top).unwrap();
    let spec = dir.join("t.spec");
    std::fs::write(&spec, spec_text).unwrap();
    let mut cmd = Command::new("rpmbuild");
    cmd.arg("-bb")
        .arg("--nodeps")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()));
    for (k, v) in defines {
        cmd.arg("--define").arg(format!("{k} {v}"));
    }
    cmd.arg(&spec);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .expect("rpmbuild runs (install it with scripts/install-deps.sh test)");
    assert!(
        out.status.success(),
        "rpmbuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rpms: Vec<PathBuf> = walkdir::WalkDir::new(top.join("RPMS"))
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
        .collect();
    rpms.sort();
    rpms
}

/// A noarch spec whose one file holds `content` with `mode`, plus extra preamble lines.
pub fn data_spec(content: &str, mode: &str, preamble: &str) -> String {
    format!(
        "Name: sem\nVersion: 1.0\nRelease: 1\nSummary: s\nLicense: MIT\nBuildArch: noarch\n{preamble}\n\
%description\nd\n%install\nmkdir -p %{{buildroot}}/usr/share/sem %{{buildroot}}/usr/bin\n\
printf '%s' '{content}' > %{{buildroot}}/usr/share/sem/data\n\
ln -s ../share/sem/data %{{buildroot}}/usr/bin/sem-link\n\
%files\n%attr({mode},root,root) /usr/share/sem/data\n/usr/bin/sem-link\n%dir /usr/share/sem\n"
    )
}
