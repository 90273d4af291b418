//! Reading built RPMs: their identity, dependencies and files ([`read_rpm`]), and their
//! *semantic summary* ([`semantic_summary`], [`semantic_digest`]).
//!
//! # What the summary is
//!
//! The semantic summary of an RPM is **everything that can change what an installed root
//! or a dependent build sees**: two RPMs with equal summaries, installed with `rpm -i`,
//! lay down the same files (paths, types, contents, modes, owners, link targets, hard-link
//! sets, capabilities, device numbers) and leave the same record of how rpm installs,
//! orders, verifies, upgrades and removes them — every field of the header but the
//! excluded ones below. A dependent build that unpacks the payload as a layer sees a
//! subset of that. It is an `rpm:` action's summary output, which dependents that read
//! no more than it covers (`keel_engine::ActionKind::dependency_view`) hash instead of the
//! RPM's bytes, so a rebuild that changes only what they do not see cuts off. The property
//! test `equal_summaries_install_equal_roots` holds it: equal summaries only for packages
//! whose installed roots and header metadata are identical.
//!
//! # How it is computed
//!
//! The summary is the main header, entry by entry in tag order (tag number, rpm type and
//! each value length-prefixed), **minus an explicit exclusion list**, followed by one line
//! per file computed from the payload itself. Including by default is the safe direction:
//! a header tag a future rpm adds is covered until someone decides, with a reason, that it
//! cannot change what is installed. Covered therefore, among others: name, epoch,
//! version, release, arch, os; summary, description, license, URL, group, vendor,
//! packager, distribution, bug URL, source RPM name and the rpm version and flags that
//! built it; every dependency list with its flags and EVRs (provides, requires including
//! `rpmlib()`, conflicts, obsoletes, recommends, suggests, supplements, enhances,
//! `OrderWithRequires`); every scriptlet with its interpreter and flags (`%pre`, `%post`,
//! `%preun`, `%postun`, `%pretrans`, `%posttrans`, `%preuntrans`, `%postuntrans`,
//! `%verifyscript`); triggers, file triggers and transaction file triggers with their
//! conditions, priorities, interpreters and scripts; prefixes (relocation);
//! per file: path (basenames, dirnames, dir indexes), size, mode, owner, group, rdev,
//! link target, flags (config, doc, ghost, …), verify flags, language, capabilities,
//! colors and classes, file dependencies, SELinux contexts, IMA signatures, and rpm's own
//! file digests with their algorithm; the installed size.
//!
//! Excluded, each because it records how or when the package was made rather than what
//! it installs, or because another line of the summary stands for it:
//!
//! - `BUILDTIME`, `BUILDHOST`, `COOKIE` (host and time): provenance, different on every
//!   build of the same inputs;
//! - `CHANGELOGTIME`, `CHANGELOGNAME`, `CHANGELOGTEXT`: history, shown by `rpm -q
//!   --changelog` and nothing else, edited without any change to the package;
//! - `FILEMTIMES`: a dependent build's layer stamps every file with one fixed time, and
//!   readers that see real mtimes (repositories, images) read the RPM's bytes;
//! - `FILEINODES`, `FILEDEVICES`: numbers rpmbuild makes up; what they mean (which files
//!   are one hard-link set) is in the file lines instead;
//! - `ARCHIVESIZE`, `PAYLOADFORMAT`, `PAYLOADCOMPRESSOR`, `PAYLOADFLAGS`, the payload's
//!   digests (`PAYLOADDIGEST`, `PAYLOADDIGESTALGO`, `PAYLOADDIGESTALT` and rpm 6's
//!   SHA-512 and SHA3-256 ones) and sizes (`PAYLOADSIZE`, `PAYLOADSIZEALT`): how the
//!   payload is encoded and compressed (its digests cover mtimes and inodes); its decoded
//!   content is in the file lines;
//! - `PACKAGEDIGESTS`, `PACKAGEDIGESTALGOS`: digests of the encoded package;
//! - `HEADERIMAGE`, `HEADERSIGNATURES`, `HEADERIMMUTABLE` (region markers, whose values
//!   are offsets into the header blob) and the whole signature header (signatures,
//!   header and payload digests, sizes of the encoding).
//!
//! Each file line holds the path, the BLAKE3 of the bytes the installed file has (for a
//! hard-link set, whose content the payload carries once, the content of the set for
//! every member) and the set it belongs to (named by its smallest path; empty for a file
//! alone), so moving a name from one set to another changes the summary even when sizes
//! and digests of every path stayed the same.
//!
//! [`SUMMARY_FORMAT`] is in the summary: a change to what it covers changes every summary.

use std::path::Path;

use std::collections::{BTreeMap, HashMap};

use rpm::{
    Dependency, DependencyFlags, FileFlags, FileType, IndexData, IndexTag, Package, PackageMetadata,
};

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
pub const SEMANTIC_CONTEXT: &str = "keel-toolchain 2026-12-04 rpm semantic summary v2";

/// The first line of every summary: bumped with any change to what the summary covers.
pub const SUMMARY_FORMAT: &str = "keel rpm semantic summary 2";

/// Header tags left out of the summary (see the module docs for why each one is).
pub const EXCLUDED_TAGS: &[IndexTag] = &[
    IndexTag::RPMTAG_HEADERIMAGE,
    IndexTag::RPMTAG_HEADERSIGNATURES,
    IndexTag::RPMTAG_HEADERIMMUTABLE,
    IndexTag::RPMTAG_BUILDTIME,
    IndexTag::RPMTAG_BUILDHOST,
    IndexTag::RPMTAG_COOKIE,
    IndexTag::RPMTAG_CHANGELOGTIME,
    IndexTag::RPMTAG_CHANGELOGNAME,
    IndexTag::RPMTAG_CHANGELOGTEXT,
    IndexTag::RPMTAG_FILEMTIMES,
    IndexTag::RPMTAG_FILEINODES,
    IndexTag::RPMTAG_FILEDEVICES,
    IndexTag::RPMTAG_ARCHIVESIZE,
    IndexTag::RPMTAG_PAYLOADFORMAT,
    IndexTag::RPMTAG_PAYLOADCOMPRESSOR,
    IndexTag::RPMTAG_PAYLOADFLAGS,
    IndexTag::RPMTAG_PAYLOADSHA256,
    IndexTag::RPMTAG_PAYLOADSHA256ALGO,
    IndexTag::RPMTAG_PAYLOADSHA256ALT,
    IndexTag::RPMTAG_PAYLOAD_SHA512,
    IndexTag::RPMTAG_PAYLOAD_SHA512_ALT,
    IndexTag::RPMTAG_PAYLOAD_SHA3_256,
    IndexTag::RPMTAG_PAYLOAD_SHA3_256_ALT,
    IndexTag::RPMTAG_PAYLOADSIZE,
    IndexTag::RPMTAG_PAYLOADSIZEALT,
    IndexTag::RPMTAG_PACKAGEDIGESTS,
    IndexTag::RPMTAG_PACKAGEDIGESTALGOS,
];

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

/// A file's (device, inode) in the header: members of a hard-link set share it.
type LinkIdentity = (u32, u32);

/// One payload entry, as the summary sees it.
struct PayloadFile {
    path: String,
    /// Its hard-link identity (regular, non-ghost files only).
    identity: Option<LinkIdentity>,
    /// The BLAKE3 of its bytes, when this entry carries the bytes.
    content: Option<String>,
}

/// The members of one hard-link set and the content the payload carries for it.
#[derive(Default)]
struct LinkSet<'a> {
    members: Vec<&'a str>,
    content: Option<&'a str>,
}

/// Appends one header entry's value: its rpm type, then each element length-prefixed.
fn encode_entry(data: &IndexData) -> Vec<u8> {
    let mut v = Vec::new();
    let mut put = |x: &[u8]| {
        v.extend_from_slice(&(x.len() as u64).to_le_bytes());
        v.extend_from_slice(x);
    };
    match data {
        IndexData::Null => put(b"null"),
        IndexData::Char(b) => {
            put(b"char");
            put(b);
        }
        IndexData::Int8(b) => {
            put(b"int8");
            put(b);
        }
        IndexData::Int16(n) => {
            put(b"int16");
            n.iter().for_each(|x| put(&x.to_le_bytes()));
        }
        IndexData::Int32(n) => {
            put(b"int32");
            n.iter().for_each(|x| put(&x.to_le_bytes()));
        }
        IndexData::Int64(n) => {
            put(b"int64");
            n.iter().for_each(|x| put(&x.to_le_bytes()));
        }
        IndexData::StringTag(t) => {
            put(b"string");
            put(t.as_bytes());
        }
        IndexData::Bin(b) => {
            put(b"bin");
            put(b);
        }
        IndexData::StringArray(a) => {
            put(b"string_array");
            a.iter().for_each(|x| put(x.as_bytes()));
        }
        IndexData::I18NString(a) => {
            put(b"i18n_string");
            a.iter().for_each(|x| put(x.as_bytes()));
        }
    }
    v
}

/// The canonical bytes of everything that can change what an installed root or a
/// dependent build sees (see the module docs for what is in, what is out and why).
/// Decompresses the payload to hash every file's content.
pub fn semantic_summary(path: &Path) -> Result<Vec<u8>, Error> {
    let pkg = Package::open(path).map_err(Error::rpm(path))?;
    let header = &pkg.metadata.header;
    let mut out = Vec::new();
    field(&mut out, "format", SUMMARY_FORMAT.as_bytes());
    let excluded: Vec<u32> = EXCLUDED_TAGS.iter().map(|t| *t as u32).collect();
    let mut entries = header.get_all_entries().map_err(Error::rpm(path))?;
    entries.sort_by_key(|(tag, _)| *tag);
    for (tag, data) in &entries {
        if !excluded.contains(tag) {
            field(&mut out, &format!("tag {tag}"), &encode_entry(data));
        }
    }

    // Per file: the bytes it will hold once installed, and its hard-link set. rpm gives
    // each member of a set the same (device, inode); the payload carries the set's bytes
    // once, with one member.
    let devices = header
        .get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEDEVICES)
        .unwrap_or_default();
    let inodes = header
        .get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEINODES)
        .unwrap_or_default();
    let iter = match pkg.files() {
        Ok(it) => Some(it),
        // A package without files has no file tags at all.
        Err(rpm::Error::TagNotFound(_)) => None,
        Err(e) => return Err(Error::rpm(path)(e)),
    };
    let mut files: Vec<PayloadFile> = Vec::new();
    let entries_paths: Vec<String> = match pkg.metadata.get_file_paths() {
        Ok(v) => v
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        Err(rpm::Error::TagNotFound(_)) => Vec::new(),
        Err(e) => return Err(Error::rpm(path)(e)),
    };
    let identity_of: HashMap<&str, (u32, u32)> = entries_paths
        .iter()
        .enumerate()
        .filter_map(|(i, p)| Some((p.as_str(), (*devices.get(i)?, *inodes.get(i)?))))
        .collect();
    for f in iter.into_iter().flatten() {
        let f = f.map_err(Error::rpm(path))?;
        let m = &f.metadata;
        let p = m.path().to_string_lossy().into_owned();
        let regular = m.file_type() == FileType::Regular && !m.flags().contains(FileFlags::GHOST);
        let identity = if regular {
            identity_of.get(p.as_str()).copied()
        } else {
            None
        };
        let content = match f.content() {
            Some(bytes) if regular => Some(blake3::hash(bytes).to_hex().to_string()),
            _ => None,
        };
        files.push(PayloadFile {
            path: p,
            identity,
            content,
        });
    }
    // Members per identity, and the content of the set (from the member that carries it).
    let mut sets: BTreeMap<LinkIdentity, LinkSet<'_>> = BTreeMap::new();
    for f in &files {
        if let Some(id) = f.identity {
            let set = sets.entry(id).or_default();
            set.members.push(&f.path);
            if f.content.is_some() {
                set.content = f.content.as_deref();
            }
        }
    }
    let mut lines: Vec<String> = files
        .iter()
        .map(|f| {
            let (group, bytes) = match f.identity.and_then(|id| sets.get(&id)) {
                Some(set) if set.members.len() > 1 => (
                    set.members.iter().min().copied().unwrap_or_default(),
                    set.content.unwrap_or_default(),
                ),
                _ => ("", f.content.as_deref().unwrap_or_default()),
            };
            format!("{}\0{bytes}\0{group}", f.path)
        })
        .collect();
    lines.sort();
    for line in lines {
        field(&mut out, "file", line.as_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod law;

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
