//! Reading built RPMs: their identity, dependencies and files ([`read_rpm`]), and their
//! *semantic summary* ([`semantic_summary`], [`semantic_digest`]).
//!
//! The semantic summary is what keel uses as a package's output digest for early cutoff:
//! two RPMs with the same summary install the same thing, so a dependent build need not
//! run again. It is computed exactly, in the spirit of OBS's build-compare: it covers the
//! package's identity (name, epoch, version, release, arch), its descriptive text
//! (summary, description, license, URL, group), every dependency list (provides,
//! requires, conflicts, obsoletes and the weak ones, with their sense flags and EVRs),
//! the scriptlets, and per file: path, mode, owner, group, symlink target, flags (config,
//! doc, ghost, …), capabilities and the BLAKE3 of its bytes as found in the payload.
//!
//! It deliberately leaves out everything that changes between two builds of the same
//! inputs without changing what gets installed: build time and host, the cookie,
//! signatures and header digests, payload compression, file mtimes, the source RPM's file
//! name and the changelog (which in practice never changes without a release change).
//! Dependency lists are sorted, so their order in the header does not matter either.

use std::path::Path;

use rpm::{Dependency, DependencyFlags, FileType, Package, PackageMetadata};

use crate::Error;

/// One dependency as rpm stores it: a name, rpm's sense flags and an EVR (empty when the
/// dependency is unversioned).
///
/// `flags` keeps rpm's raw `RPMSENSE_*` bits, so [`RpmDep::LESS`], [`RpmDep::GREATER`] and
/// [`RpmDep::EQUAL`] can be fed straight into a range comparison; the other bits
/// (pre-requirement, script context, …) are kept as rpm wrote them.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct RpmDep {
    /// The capability name (`libfoo.so.1()(64bit)`, `/bin/sh`, `foo-devel`).
    pub name: String,
    /// rpm's `RPMSENSE_*` bits.
    pub flags: u32,
    /// `[epoch:]version[-release]`, or empty.
    pub evr: String,
}

impl RpmDep {
    /// `RPMSENSE_LESS`.
    pub const LESS: u32 = 1 << 1;
    /// `RPMSENSE_GREATER`.
    pub const GREATER: u32 = 1 << 2;
    /// `RPMSENSE_EQUAL`.
    pub const EQUAL: u32 = 1 << 3;
    /// The comparison bits of `flags` (`LESS | GREATER | EQUAL`).
    pub const SENSE_MASK: u32 = Self::LESS | Self::GREATER | Self::EQUAL;

    fn from_rpm(d: &Dependency) -> RpmDep {
        RpmDep {
            name: d.name.clone(),
            flags: d.flags.bits(),
            evr: d.version.clone(),
        }
    }
}

/// What keel needs to know about a built RPM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RpmInfo {
    /// Package name.
    pub name: String,
    /// Epoch, when the package has one.
    pub epoch: Option<u32>,
    /// Version.
    pub version: String,
    /// Release.
    pub release: String,
    /// Architecture (`x86_64`, `noarch`; a source package records its build arch).
    pub arch: String,
    /// Whether this is a source package.
    pub is_source: bool,
    /// The source package it was built from (empty for a source package).
    pub source_rpm: String,
    /// Provides, including the automatic ones (`libfoo.so.1()(64bit)`, `foo(x86-64)`).
    pub provides: Vec<RpmDep>,
    /// Requires, without rpm's internal `rpmlib(…)` feature dependencies.
    pub requires: Vec<RpmDep>,
    /// Conflicts.
    pub conflicts: Vec<RpmDep>,
    /// Obsoletes.
    pub obsoletes: Vec<RpmDep>,
    /// Recommends.
    pub recommends: Vec<RpmDep>,
    /// Suggests.
    pub suggests: Vec<RpmDep>,
    /// Supplements.
    pub supplements: Vec<RpmDep>,
    /// Enhances.
    pub enhances: Vec<RpmDep>,
    /// Every path the package owns, absolute, in header order (directories and ghosts
    /// included).
    pub files: Vec<String>,
}

impl RpmInfo {
    /// `name-[epoch:]version-release.arch`, as rpm prints a NEVRA.
    pub fn nevra(&self) -> String {
        match self.epoch {
            Some(e) => format!(
                "{}-{e}:{}-{}.{}",
                self.name, self.version, self.release, self.arch
            ),
            None => format!(
                "{}-{}-{}.{}",
                self.name, self.version, self.release, self.arch
            ),
        }
    }
}

fn deps(path: &Path, list: Result<Vec<Dependency>, rpm::Error>) -> Result<Vec<RpmDep>, Error> {
    match list {
        Ok(v) => Ok(v.iter().map(RpmDep::from_rpm).collect()),
        // An absent tag is an empty list, not an error.
        Err(rpm::Error::TagNotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(Error::rpm(path)(e)),
    }
}

fn is_rpmlib(d: &RpmDep) -> bool {
    d.name.starts_with("rpmlib(") || d.flags & DependencyFlags::RPMLIB.bits() != 0
}

fn optional_str(r: Result<&str, rpm::Error>) -> String {
    r.map(str::to_owned).unwrap_or_default()
}

/// Reads a package's header (the payload is not decompressed).
pub fn read_rpm(path: &Path) -> Result<RpmInfo, Error> {
    let meta = PackageMetadata::open(path).map_err(Error::rpm(path))?;
    info_from_metadata(path, &meta)
}

fn info_from_metadata(path: &Path, meta: &PackageMetadata) -> Result<RpmInfo, Error> {
    let e = Error::rpm;
    let mut requires = deps(path, meta.get_requires())?;
    requires.retain(|d| !is_rpmlib(d));
    let files = match meta.get_file_paths() {
        Ok(v) => v
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        Err(rpm::Error::TagNotFound(_)) => Vec::new(),
        Err(err) => return Err(e(path)(err)),
    };
    Ok(RpmInfo {
        name: meta.get_name().map_err(e(path))?.to_owned(),
        epoch: meta.get_epoch().ok(),
        version: meta.get_version().map_err(e(path))?.to_owned(),
        release: meta.get_release().map_err(e(path))?.to_owned(),
        arch: optional_str(meta.get_arch()),
        is_source: meta.is_source_package(),
        source_rpm: optional_str(meta.get_source_rpm()),
        provides: deps(path, meta.get_provides())?,
        requires,
        conflicts: deps(path, meta.get_conflicts())?,
        obsoletes: deps(path, meta.get_obsoletes())?,
        recommends: deps(path, meta.get_recommends())?,
        suggests: deps(path, meta.get_suggests())?,
        supplements: deps(path, meta.get_supplements())?,
        enhances: deps(path, meta.get_enhances())?,
        files,
    })
}

/// The BLAKE3 derive-key context of [`SemanticDigest`].
pub const SEMANTIC_CONTEXT: &str = "keel-toolchain 2026-11-27 rpm semantic summary v1";

/// The kind of a [`SemanticDigest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SemanticKind {}

impl keel_store::DigestKind for SemanticKind {
    const CONTEXT: Option<&'static str> = Some(SEMANTIC_CONTEXT);
    const NAME: &'static str = "rpm semantic digest";
}

/// The digest of an RPM's [`semantic_summary`]: its own kind, so it can never be mistaken
/// for the blob digest of the RPM's bytes.
pub type SemanticDigest = keel_store::Digest<SemanticKind>;

/// The [`SemanticDigest`] of the package at `path`: keel's output digest of a built RPM.
pub fn semantic_digest(path: &Path) -> Result<SemanticDigest, Error> {
    Ok(SemanticDigest::of_bytes(&semantic_summary(path)?))
}

/// Appends `key len:value\n`: unambiguous whatever the value holds.
fn field(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    out.extend_from_slice(key.as_bytes());
    out.push(b' ');
    out.extend_from_slice(value.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// The canonical bytes that describe what a package installs and declares (see the module
/// docs for what is in and what is deliberately out). Decompresses the payload to hash
/// every file's content.
pub fn semantic_summary(path: &Path) -> Result<Vec<u8>, Error> {
    let pkg = Package::open(path).map_err(Error::rpm(path))?;
    let meta = &pkg.metadata;
    let info = info_from_metadata(path, meta)?;
    let mut out = Vec::new();
    field(&mut out, "format", b"keel rpm semantic summary 1");
    field(&mut out, "name", info.name.as_bytes());
    field(
        &mut out,
        "epoch",
        info.epoch
            .map(|e| e.to_string())
            .unwrap_or_default()
            .as_bytes(),
    );
    field(&mut out, "version", info.version.as_bytes());
    field(&mut out, "release", info.release.as_bytes());
    field(&mut out, "arch", info.arch.as_bytes());
    field(&mut out, "source", if info.is_source { b"1" } else { b"0" });
    field(
        &mut out,
        "summary",
        optional_str(meta.get_summary()).as_bytes(),
    );
    field(
        &mut out,
        "description",
        optional_str(meta.get_description()).as_bytes(),
    );
    field(
        &mut out,
        "license",
        optional_str(meta.get_license()).as_bytes(),
    );
    field(&mut out, "url", optional_str(meta.get_url()).as_bytes());
    field(&mut out, "group", optional_str(meta.get_group()).as_bytes());

    // Requires keep their rpmlib() entries here: they change what rpm accepts to install.
    let all_requires = deps(path, meta.get_requires())?;
    let lists: [(&str, &[RpmDep]); 8] = [
        ("provides", &info.provides),
        ("requires", &all_requires),
        ("conflicts", &info.conflicts),
        ("obsoletes", &info.obsoletes),
        ("recommends", &info.recommends),
        ("suggests", &info.suggests),
        ("supplements", &info.supplements),
        ("enhances", &info.enhances),
    ];
    for (key, list) in lists {
        let mut sorted: Vec<&RpmDep> = list.iter().collect();
        sorted.sort();
        sorted.dedup();
        for d in sorted {
            let text = format!("{} {} {}", d.name, d.flags, d.evr);
            field(&mut out, key, text.as_bytes());
        }
    }

    let scripts = [
        ("pre", meta.get_pre_install_script()),
        ("post", meta.get_post_install_script()),
        ("preun", meta.get_pre_uninstall_script()),
        ("postun", meta.get_post_uninstall_script()),
        ("pretrans", meta.get_pre_trans_script()),
        ("posttrans", meta.get_post_trans_script()),
        ("verify", meta.get_verify_script()),
    ];
    for (key, script) in scripts {
        if let Ok(s) = script {
            let prog = s.program.map(|p| p.join(" ")).unwrap_or_default();
            let flags = s.flags.map(|f| f.bits()).unwrap_or(0);
            field(
                &mut out,
                &format!("script-{key}"),
                format!("{prog}\0{flags}\0{}", s.script).as_bytes(),
            );
        }
    }

    let mut files = Vec::new();
    let iter = match pkg.files() {
        Ok(it) => Some(it),
        // A package without files has no file tags at all.
        Err(rpm::Error::TagNotFound(_)) => None,
        Err(e) => return Err(Error::rpm(path)(e)),
    };
    for f in iter.into_iter().flatten() {
        let f = f.map_err(Error::rpm(path))?;
        let m = &f.metadata;
        let content = match f.content() {
            Some(bytes) if m.file_type() == FileType::Regular => {
                blake3::hash(bytes).to_hex().to_string()
            }
            _ => String::new(),
        };
        let line = format!(
            "{}\0{:o}\0{}\0{}\0{}\0{}\0{}\0{}\0{}",
            m.path().display(),
            m.mode().raw_mode(),
            m.user(),
            m.group(),
            m.linkto().unwrap_or(""),
            m.flags().bits(),
            m.caps().unwrap_or(""),
            m.rdev(),
            content
        );
        files.push(line);
    }
    files.sort();
    for line in files {
        field(&mut out, "file", line.as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{data_spec, rpmbuild_host};

    fn build(content: &str, mode: &str, preamble: &str, host: &str, epoch: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let rpms = rpmbuild_host(
            dir.path(),
            &data_spec(content, mode, preamble),
            &[
                ("_buildhost", host),
                ("use_source_date_epoch_as_buildtime", "1"),
            ],
            &[("SOURCE_DATE_EPOCH", epoch)],
        );
        assert_eq!(rpms.len(), 1);
        semantic_summary(&rpms[0]).unwrap()
    }

    #[test]
    fn read_rpm_reports_identity_deps_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let rpms = rpmbuild_host(
            dir.path(),
            &data_spec(
                "x",
                "0644",
                "Epoch: 3\nProvides: semcap = 2.0\nRequires: other >= 1.5\nConflicts: bad",
            ),
            &[],
            &[],
        );
        let info = read_rpm(&rpms[0]).unwrap();
        assert_eq!(info.name, "sem");
        assert_eq!(info.epoch, Some(3));
        assert_eq!(
            (
                info.version.as_str(),
                info.release.as_str(),
                info.arch.as_str()
            ),
            ("1.0", "1", "noarch")
        );
        assert!(!info.is_source);
        assert_eq!(info.nevra(), "sem-3:1.0-1.noarch");
        assert!(
            info.provides.contains(&RpmDep {
                name: "semcap".into(),
                flags: RpmDep::EQUAL,
                evr: "2.0".into()
            }),
            "{:?}",
            info.provides
        );
        let other = info
            .requires
            .iter()
            .find(|d| d.name == "other")
            .expect("Requires: other");
        assert_eq!(
            other.flags & RpmDep::SENSE_MASK,
            RpmDep::GREATER | RpmDep::EQUAL
        );
        assert_eq!(other.evr, "1.5");
        assert!(
            info.requires.iter().all(|d| !d.name.starts_with("rpmlib(")),
            "{:?}",
            info.requires
        );
        assert_eq!(info.conflicts.len(), 1);
        assert_eq!(
            info.files,
            vec!["/usr/bin/sem-link", "/usr/share/sem", "/usr/share/sem/data"]
        );
    }

    #[test]
    fn read_rpm_names_the_file_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.rpm");
        std::fs::write(&bogus, b"not an rpm").unwrap();
        let err = read_rpm(&bogus).unwrap_err().to_string();
        assert!(err.contains("bogus.rpm"), "{err}");
    }

    #[test]
    fn semantic_summary_ignores_build_host_and_time() {
        let a = build("hello", "0644", "", "host-a", "1000000");
        let b = build("hello", "0644", "", "host-b", "2000000");
        assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
    }

    #[test]
    fn semantic_summary_changes_with_content_mode_and_dependencies() {
        let base = build("hello", "0644", "", "h", "1000000");
        assert_ne!(
            base,
            build("hellO", "0644", "", "h", "1000000"),
            "file content"
        );
        assert_ne!(
            base,
            build("hello", "0755", "", "h", "1000000"),
            "file mode"
        );
        assert_ne!(
            base,
            build("hello", "0644", "Requires: zlib", "h", "1000000"),
            "requires"
        );
        assert_ne!(
            base,
            build("hello", "0644", "Provides: semcap", "h", "1000000"),
            "provides"
        );
        assert_ne!(
            base,
            build("hello", "0644", "Obsoletes: old", "h", "1000000"),
            "obsoletes"
        );
        assert_ne!(
            base,
            build("hello", "0644", "Recommends: nice", "h", "1000000"),
            "weak deps"
        );
    }

    #[test]
    fn semantic_digest_is_a_derived_hash_of_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        let rpms = rpmbuild_host(dir.path(), &data_spec("x", "0644", ""), &[], &[]);
        let summary = semantic_summary(&rpms[0]).unwrap();
        let digest = semantic_digest(&rpms[0]).unwrap();
        assert_ne!(
            digest.hash(),
            blake3::hash(&summary).as_bytes(),
            "derived, not the plain hash"
        );
        let expected = blake3::Hasher::new_derive_key(SEMANTIC_CONTEXT)
            .update(&summary)
            .finalize();
        assert_eq!(digest.hash(), expected.as_bytes());
        assert_eq!(digest.size(), summary.len() as u64);
    }
}
