//! Toolchain manifests: lists of RPM file names, one per line, as Azure Linux keeps them
//! (`toolkit/resources/manifests/package/toolchain_x86_64.txt`).

use std::path::{Path, PathBuf};

/// `name-version-release.arch.rpm`, split.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RpmName {
    pub name: String,
    pub version: String,
    pub release: String,
    pub arch: String,
}

impl RpmName {
    /// `V-R`.
    pub fn vr(&self) -> String {
        format!("{}-{}", self.version, self.release)
    }
}

/// A manifest that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("failed to read toolchain manifest {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: `{text}` is not an RPM file name (name-version-release.arch.rpm)", path.display())]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

/// Splits an RPM file name. `None` when it does not have the four parts.
pub fn parse_rpm_filename(file: &str) -> Option<RpmName> {
    let base = file.rsplit('/').next()?.strip_suffix(".rpm")?;
    let (nvr, arch) = base.rsplit_once('.')?;
    let (nv, release) = nvr.rsplit_once('-')?;
    let (name, version) = nv.rsplit_once('-')?;
    if name.is_empty() || version.is_empty() || release.is_empty() || arch.is_empty() {
        return None;
    }
    Some(RpmName {
        name: name.into(),
        version: version.into(),
        release: release.into(),
        arch: arch.into(),
    })
}

/// Reads a manifest: one RPM file name per line; blank lines and `#` comments skipped.
pub fn parse_manifest(path: &Path) -> Result<Vec<RpmName>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.into(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        match parse_rpm_filename(t) {
            Some(r) => out.push(r),
            None => {
                return Err(ManifestError::BadLine {
                    path: path.into(),
                    line: i + 1,
                    text: t.into(),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_names_with_dashes_and_dots() {
        let r = parse_rpm_filename("perl-File-Path-2.18-506.azl3.noarch.rpm").unwrap();
        assert_eq!(
            (
                r.name.as_str(),
                r.version.as_str(),
                r.release.as_str(),
                r.arch.as_str()
            ),
            ("perl-File-Path", "2.18", "506.azl3", "noarch")
        );
        let r = parse_rpm_filename("gcc-c++-13.2.0-7.azl3.x86_64.rpm").unwrap();
        assert_eq!(r.name, "gcc-c++");
        assert!(parse_rpm_filename("notanrpm.txt").is_none());
        assert!(parse_rpm_filename("x.rpm").is_none());
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.txt");
        std::fs::write(
            &p,
            "# toolchain\nbash-5.2.15-1.azl3.x86_64.rpm\n\nnonsense\n",
        )
        .unwrap();
        let err = parse_manifest(&p).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "m.txt:4: `nonsense` is not an RPM file name (name-version-release.arch.rpm)"
            ),
            "{err}"
        );
    }
}
