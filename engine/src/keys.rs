//! Action keys and output digests: what makes a result reusable, and what stops a cascade.
//!
//! # Keys
//!
//! An action's key is a BLAKE3 hash (under the store's action-key context) of:
//!
//! 1. a fixed preamble naming this scheme, so a key can never equal any other digest;
//! 2. the action's kind and that kind's `VERSION` (bumped whenever the kind's inputs or the
//!    way they are hashed change, which retires every old key of that kind at once);
//! 3. the kind's `KeyInputs`, field by field in the order of their numbered doc comments,
//!    each field length-prefixed, maps as a count followed by their entries in sorted order;
//! 4. the output digests of the actions it depends on, sorted by the dependency's name.
//!
//! Files enter a key by the digest of their bytes and a name relative to the tree (never an
//! absolute path, never an mtime); settings enter as the values the rule layer evaluated.
//! The job count, the store's location, the time and the machine are not inputs, so they
//! cannot be hashed by mistake: the `KeyInputs` structs have no field to put them in.
//!
//! # Early cutoff
//!
//! A dependency contributes its *output digest* to its dependents' keys, not its own key.
//! So when an action reruns because an input changed but produces the same output as
//! before, every dependent's key comes out exactly as it was and the dependents are cache
//! hits: the cascade stops there. The engine needs no bookkeeping for this; it follows
//! from what the key covers. What the engine does keep (the per-target index in the
//! store) is only used to *say* that it happened and why things reran.
//!
//! The output digest is derived from the records' outputs (name, kind and digest of each,
//! sorted by name). An executor whose raw outputs embed noise (build times in RPM headers)
//! can also store a *summary* blob — for RPMs, what an installed root sees (see
//! `keel_toolchain::rpmfile`) — as the output named [`SUMMARY_OUTPUT`].
//!
//! # Views: what a dependent reads decides what its key covers
//!
//! A summary is a claim about what some readers see, not about the bytes: two RPMs with
//! equal summaries may differ in their changelog, and a repository index or an image's
//! rpm database reads those bytes. So each action has two output digests
//! ([`OutputDigests`]): `bytes` covers every output (the summary blob included), `summary`
//! covers the summary blob alone (or is `bytes` when there is none). Which one enters a
//! dependent's key is decided by the dependent's kind, [`ActionKind::dependency_view`]: an
//! exhaustive match, so a new kind has to say what it reads, and the answer is
//! [`View::Bytes`] unless the kind provably reads no more than summaries cover. Getting
//! this wrong in the safe direction costs a rebuild; in the other it ships stale bytes.
//!
//! The view is part of what is hashed: the two digests hash under different prefixes, so
//! a dependent can never confuse one for the other.
//!
//! # Why dependency names are hashed
//!
//! Each dependency's output digest is hashed with the dependency's name. Two dependencies
//! producing identical bytes then still count separately, and swapping which provider
//! fills a role changes the key even if the bytes happen to match. The cost — renaming a
//! target reruns its dependents — is the safe side of the trade.

use std::collections::BTreeMap;
use std::fmt;

use keel_store::{
    ActionKey, ActionKeyKind, ActionOutput, BlobDigest, Digest, DigestHasher, DigestKind, ObjectRef,
};
use serde::{Deserialize, Serialize};

/// Marker for digests of an action's output (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutputKind {}

impl DigestKind for OutputKind {
    const CONTEXT: Option<&'static str> = Some("keel-engine 2026-11-27 action output v1");
    const NAME: &'static str = "output";
}

/// The digest of what an action produced, as its dependents see it.
pub type OutputDigest = Digest<OutputKind>;

/// The output name under which an executor may store a summary blob: when present, the
/// [`View::Summary`] digest covers that blob alone, so dependents that read no more than
/// it covers cut off on outputs that differ only in what they do not read.
pub const SUMMARY_OUTPUT: &str = "keel:summary";

/// Preamble of every key: the version of this module's scheme as a whole.
const KEY_SCHEME: &[u8] = b"keel-engine action key scheme 1";

/// The kinds of actions, one per step of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Fetch a source file from the mirror and verify it against the tree's signatures.
    SourceFetch,
    /// Pack a spec, its sources and patches into a source RPM.
    SrpmPack,
    /// Build the binary RPMs of one source package.
    RpmBuild,
    /// Index a set of RPMs as a package repository.
    RepoIndex,
    /// Assemble an OS image from a repository.
    Image,
}

impl ActionKind {
    /// The name hashed into keys and shown to users.
    pub const fn tag(self) -> &'static str {
        match self {
            ActionKind::SourceFetch => "source_fetch",
            ActionKind::SrpmPack => "srpm_pack",
            ActionKind::RpmBuild => "rpm_build",
            ActionKind::RepoIndex => "repo_index",
            ActionKind::Image => "image",
        }
    }

    /// The version of this kind's key inputs.
    pub const fn key_version(self) -> u32 {
        match self {
            ActionKind::SourceFetch => SourceFetchInputs::VERSION,
            ActionKind::SrpmPack => SrpmPackInputs::VERSION,
            ActionKind::RpmBuild => RpmBuildInputs::VERSION,
            ActionKind::RepoIndex => RepoIndexInputs::VERSION,
            ActionKind::Image => ImageInputs::VERSION,
        }
    }
}

/// Which digest of a dependency's result enters a dependent's key (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum View {
    /// Every output, byte for byte: for readers of the files themselves.
    Bytes,
    /// The [`SUMMARY_OUTPUT`] blob alone when the dependency stored one (its bytes
    /// otherwise): for readers that see no more than the summary covers.
    Summary,
}

impl ActionKind {
    /// What an action of this kind reads of its dependencies' results, and so which of
    /// their [`OutputDigests`] its key covers. [`View::Summary`] only where the executor
    /// provably reads no more than a summary covers:
    ///
    /// - `rpm_build` unpacks each dependency RPM's *payload* as a layer of its build root
    ///   (files, directories, symlinks, modes, contents; no ownership, no rpm database, no
    ///   header: rpmbuild runs with `--nodeps`), and the RPM summary covers every one of
    ///   those; the SRPM it reads has no summary, so it is read as bytes;
    /// - `srpm_pack` packs the fetched sources (which have no summary: read as bytes) in a
    ///   root with the payloads of the packages the build root carries as layers, as
    ///   `rpm_build` does;
    /// - `repo_index` hashes the RPM files themselves (`pkgid`, header ranges, changelog);
    /// - `image` writes every header into the image's rpm database and ships the files;
    /// - `source_fetch` has no dependencies.
    pub const fn dependency_view(self) -> View {
        match self {
            ActionKind::RpmBuild | ActionKind::SrpmPack => View::Summary,
            ActionKind::SourceFetch | ActionKind::RepoIndex | ActionKind::Image => View::Bytes,
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// A package's epoch, version and release, as the rule layer evaluated them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Evr {
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
}

impl Evr {
    /// An EVR without an epoch.
    pub fn new(version: &str, release: &str) -> Evr {
        Evr {
            epoch: None,
            version: version.to_owned(),
            release: release.to_owned(),
        }
    }

    fn hash_into(&self, w: &mut KeyWriter) {
        match self.epoch {
            None => w.str(""),
            Some(e) => w.str(&e.to_string()),
        }
        w.str(&self.version);
        w.str(&self.release);
    }
}

impl fmt::Display for Evr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = self.epoch {
            write!(f, "{e}:")?;
        }
        write!(f, "{}-{}", self.version, self.release)
    }
}

/// The build root packages are built in: a name for people and the fingerprint of its
/// exact contents (for example the digest of its package manifest).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ToolchainId {
    pub name: String,
    pub fingerprint: BlobDigest,
}

/// What runs an action, as every key names it: the executor (`rpmbuild`, or `test`, the
/// stand-in whose outputs are fakes) and the isolation its builds run under (`sandboxed`,
/// `unsandboxed`). A result made one way is never taken for one made another way: a
/// stand-in's record must not satisfy a real build, and an unsandboxed build (which saw
/// the whole machine) must not pass for a sandboxed one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecutorId {
    pub name: String,
    pub isolation: String,
}

impl ExecutorId {
    /// The executor `name` under `isolation`.
    pub fn new(name: &str, isolation: &str) -> ExecutorId {
        ExecutorId {
            name: name.to_owned(),
            isolation: isolation.to_owned(),
        }
    }

    fn hash_into(&self, w: &mut KeyWriter) {
        w.str(&self.name);
        w.str(&self.isolation);
    }
}

impl fmt::Display for ExecutorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.isolation)
    }
}

/// Inputs of a [`ActionKind::SourceFetch`] action. `VERSION` 2:
///
/// 1. `file_name` — the source's file name as the spec names it (`foo-1.2.tar.gz`).
/// 2. `sha256` — the expected SHA-256 from the package's `signatures.json`, lowercase hex.
/// 3. `executor` — what runs the action (see [`ExecutorId`]).
///
/// The URL and the mirror are not inputs: the checksum fixes the content, wherever it is
/// fetched from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFetchInputs {
    pub file_name: String,
    pub sha256: String,
    pub executor: ExecutorId,
}

impl SourceFetchInputs {
    pub const VERSION: u32 = 2;

    fn hash_into(&self, w: &mut KeyWriter) {
        w.str(&self.file_name);
        w.str(&self.sha256);
        self.executor.hash_into(w);
    }
}

/// Inputs of a [`ActionKind::SrpmPack`] action. `VERSION` 4:
///
/// 1. `name` — the source package's name.
/// 2. `evr` — its epoch, version and release as evaluated.
/// 3. `spec` — the digest of the spec file.
/// 4. `files` — sources and patches kept in the tree, by file name (fetched sources come
///    in as dependency outputs).
/// 5. `macro_files` — the macro files the spec was evaluated with, by tree-relative name,
///    in the order they are loaded (a later file's definitions win, so the order is an
///    input: the reader, this key and rpmbuild all use this one list).
/// 6. `defines` — the defines in effect (`dist`, `with_check`…).
/// 7. `target_arch` — the architecture the package is built for.
/// 8. `toolchain` — the build root rpmbuild packs the SRPM in (its macros and rpm's
///    version shape the SRPM's header).
/// 9. `executor` — what runs the action (see [`ExecutorId`]).
/// 10. `build_root` — settings of the build root from `[build]` (`sh`: what `/bin/sh`
///     is, which runs the spec's `%(…)`; `rcfile`: an rpmrc read after rpm's own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrpmPackInputs {
    pub name: String,
    pub evr: Evr,
    pub spec: BlobDigest,
    pub files: BTreeMap<String, BlobDigest>,
    pub macro_files: Vec<(String, BlobDigest)>,
    pub defines: BTreeMap<String, String>,
    pub target_arch: String,
    pub toolchain: ToolchainId,
    pub executor: ExecutorId,
    pub build_root: BTreeMap<String, String>,
}

impl SrpmPackInputs {
    pub const VERSION: u32 = 4;

    fn hash_into(&self, w: &mut KeyWriter) {
        w.str(&self.name);
        self.evr.hash_into(w);
        w.blob(&self.spec);
        w.blob_map(&self.files);
        w.blob_list(&self.macro_files);
        w.str_map(&self.defines);
        w.str(&self.target_arch);
        w.str(&self.toolchain.name);
        w.blob(&self.toolchain.fingerprint);
        self.executor.hash_into(w);
        w.str_map(&self.build_root);
    }
}

/// Inputs of a [`ActionKind::RpmBuild`] action. `VERSION` 5:
///
/// 1. `name` — the source package's name.
/// 2. `evr` — its epoch, version and release as evaluated.
/// 3. `spec` — the digest of the spec file (also inside the SRPM; hashed here too so that
///    an explanation can name the spec rather than "the SRPM changed").
/// 4. `macro_files` — the macro files in effect, by tree-relative name, in load order.
/// 5. `defines` — the defines in effect.
/// 6. `target_arch` — the architecture built for.
/// 7. `toolchain` — the build root (name and fingerprint).
/// 8. `env` — the allowlisted environment given to the build (`SOURCE_DATE_EPOCH`…).
/// 9. `executor` — what runs the action (see [`ExecutorId`]).
/// 10. `check` — whether `%check` runs (`[build] check`; `rpmbuild --nocheck` when not).
/// 11. `build_root` — settings of the build root from `[build]` (`sh`: what `/bin/sh`
///     is, which runs every build script; `rcfile`: an rpmrc read after rpm's own, where
///     `%optflags` comes from).
///
/// The SRPM and the RPMs providing the build requirements are dependency outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpmBuildInputs {
    pub name: String,
    pub evr: Evr,
    pub spec: BlobDigest,
    pub macro_files: Vec<(String, BlobDigest)>,
    pub defines: BTreeMap<String, String>,
    pub target_arch: String,
    pub toolchain: ToolchainId,
    pub env: BTreeMap<String, String>,
    pub executor: ExecutorId,
    pub check: bool,
    pub build_root: BTreeMap<String, String>,
}

impl RpmBuildInputs {
    pub const VERSION: u32 = 5;

    fn hash_into(&self, w: &mut KeyWriter) {
        w.str(&self.name);
        self.evr.hash_into(w);
        w.blob(&self.spec);
        w.blob_list(&self.macro_files);
        w.str_map(&self.defines);
        w.str(&self.target_arch);
        w.str(&self.toolchain.name);
        w.blob(&self.toolchain.fingerprint);
        w.str_map(&self.env);
        self.executor.hash_into(w);
        w.str(if self.check { "check" } else { "nocheck" });
        w.str_map(&self.build_root);
    }
}

/// Inputs of a [`ActionKind::RepoIndex`] action. `VERSION` 2:
///
/// 1. `name` — the repository's name.
/// 2. `target_arch` — the architecture indexed.
/// 3. `indexer` — the identity of the indexing tool (`createrepo_c 1.1.2`).
/// 4. `options` — the indexer's options (compression, checksum type…).
/// 5. `executor` — what runs the action (see [`ExecutorId`]).
///
/// The RPMs indexed are dependency outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoIndexInputs {
    pub name: String,
    pub target_arch: String,
    pub indexer: String,
    pub options: BTreeMap<String, String>,
    pub executor: ExecutorId,
}

impl RepoIndexInputs {
    pub const VERSION: u32 = 2;

    fn hash_into(&self, w: &mut KeyWriter) {
        w.str(&self.name);
        w.str(&self.target_arch);
        w.str(&self.indexer);
        w.str_map(&self.options);
        self.executor.hash_into(w);
    }
}

/// Inputs of a [`ActionKind::Image`] action. `VERSION` 4:
///
/// 1. `name` — the image's name (its config file's stem; it also seeds the disk's ids).
/// 2. `config` — the digest of the image configuration file.
/// 3. `package_lists` — the package lists it includes, by the name the config gives them.
/// 4. `tools` — the fingerprint of the image tools (keel-image's version and the versions
///    of the mkfs, qemu-img, rpm… that its artifacts need).
/// 5. `format` — the artifacts made (`docs.tar.gz docs.oci`).
/// 6. `target_arch` — the architecture of the image.
/// 7. `system` — which of the config's `SystemConfigs` is installed.
/// 8. `scripts` — the post-install scripts, by the name the config gives them.
/// 9. `env` — the allowlisted environment of the assembly (`SOURCE_DATE_EPOCH`).
/// 10. `external` — the prebuilt RPMs of the configured external repositories.
/// 11. `executor` — what runs the action (see [`ExecutorId`]).
///
/// The RPMs it installs from are dependency outputs (the `rpm:` actions of the specs its
/// runtime closure comes from).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInputs {
    pub name: String,
    pub config: BlobDigest,
    pub package_lists: BTreeMap<String, BlobDigest>,
    pub tools: BlobDigest,
    pub format: String,
    pub target_arch: String,
    pub system: String,
    pub scripts: BTreeMap<String, BlobDigest>,
    pub env: BTreeMap<String, String>,
    /// The prebuilt RPMs of the configured external repositories, by file name: what the
    /// image may take when the tree provides nothing.
    #[serde(default)]
    pub external: BTreeMap<String, BlobDigest>,
    pub executor: ExecutorId,
}

impl ImageInputs {
    pub const VERSION: u32 = 4;

    fn hash_into(&self, w: &mut KeyWriter) {
        w.str(&self.name);
        w.blob(&self.config);
        w.blob_map(&self.package_lists);
        w.blob(&self.tools);
        w.str(&self.format);
        w.str(&self.target_arch);
        w.str(&self.system);
        w.blob_map(&self.scripts);
        w.str_map(&self.env);
        w.blob_map(&self.external);
        self.executor.hash_into(w);
    }
}

/// The key inputs of one action, of whichever kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyInputs {
    SourceFetch(SourceFetchInputs),
    SrpmPack(SrpmPackInputs),
    RpmBuild(RpmBuildInputs),
    RepoIndex(RepoIndexInputs),
    Image(ImageInputs),
}

impl KeyInputs {
    /// The kind of action these inputs are for.
    pub const fn kind(&self) -> ActionKind {
        match self {
            KeyInputs::SourceFetch(_) => ActionKind::SourceFetch,
            KeyInputs::SrpmPack(_) => ActionKind::SrpmPack,
            KeyInputs::RpmBuild(_) => ActionKind::RpmBuild,
            KeyInputs::RepoIndex(_) => ActionKind::RepoIndex,
            KeyInputs::Image(_) => ActionKind::Image,
        }
    }

    fn hash_into(&self, w: &mut KeyWriter) {
        match self {
            KeyInputs::SourceFetch(i) => i.hash_into(w),
            KeyInputs::SrpmPack(i) => i.hash_into(w),
            KeyInputs::RpmBuild(i) => i.hash_into(w),
            KeyInputs::RepoIndex(i) => i.hash_into(w),
            KeyInputs::Image(i) => i.hash_into(w),
        }
    }
}

/// Everything a key covers, in a form that is stored beside the result as JSON
/// ([`keel_store::ActionRecord::inputs_json`]) so that a later miss can be explained field
/// by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The kind's key version when the key was made.
    pub version: u32,
    pub inputs: KeyInputs,
    /// Each dependency's output digest, by the dependency's name.
    pub deps: BTreeMap<String, OutputDigest>,
}

impl KeyRecord {
    /// A record for `inputs` with the current version.
    pub fn new(inputs: KeyInputs, deps: BTreeMap<String, OutputDigest>) -> KeyRecord {
        KeyRecord {
            version: inputs.kind().key_version(),
            inputs,
            deps,
        }
    }

    /// The key these inputs hash to (pure).
    pub fn compute_key(&self) -> ActionKey {
        key_of(self.version, &self.inputs, &self.deps)
    }

    /// The JSON stored beside the result.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("key records always serialize")
    }

    /// Reads back a stored record; `None` when it was written by an incompatible engine.
    pub fn from_json(json: &str) -> Option<KeyRecord> {
        serde_json::from_str(json).ok()
    }
}

/// The key of an action with these inputs and dependency outputs, under the current key
/// version of its kind (pure). The same as `KeyRecord::new(..).compute_key()`, without
/// copying the inputs.
pub fn compute_key(inputs: &KeyInputs, deps: &BTreeMap<String, OutputDigest>) -> ActionKey {
    key_of(inputs.kind().key_version(), inputs, deps)
}

fn key_of(version: u32, inputs: &KeyInputs, deps: &BTreeMap<String, OutputDigest>) -> ActionKey {
    let mut w = KeyWriter(DigestHasher::new());
    w.0.field(KEY_SCHEME);
    w.str(inputs.kind().tag());
    w.u64(u64::from(version));
    inputs.hash_into(&mut w);
    w.u64(deps.len() as u64);
    for (name, out) in deps {
        w.str(name);
        w.0.field(out.hash());
        w.u64(out.size());
    }
    w.0.finalize()
}

/// An action's output digests, one per [`View`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutputDigests {
    /// Every output ([`compute_output_digest`]).
    pub bytes: OutputDigest,
    /// The summary blob, or `bytes` without one ([`compute_summary_digest`]).
    pub summary: OutputDigest,
}

impl OutputDigests {
    /// Both digests of a set of outputs (pure).
    pub fn of(outputs: &[ActionOutput]) -> OutputDigests {
        let bytes = compute_output_digest(outputs);
        OutputDigests {
            bytes,
            summary: summary_digest(outputs).unwrap_or(bytes),
        }
    }

    /// The digest a reader with this view sees.
    pub fn view(&self, view: View) -> OutputDigest {
        match view {
            View::Bytes => self.bytes,
            View::Summary => self.summary,
        }
    }
}

/// The [`View::Bytes`] digest of a set of outputs (pure): every output's name, kind and
/// digest in name order, the summary blob included.
pub fn compute_output_digest(outputs: &[ActionOutput]) -> OutputDigest {
    let mut sorted: Vec<&ActionOutput> = outputs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = DigestHasher::<OutputKind>::new();
    h.field(b"outputs");
    h.field(&(sorted.len() as u64).to_le_bytes());
    for o in sorted {
        h.field(o.name.as_bytes());
        hash_object(&mut h, &o.object);
    }
    h.finalize()
}

/// The [`View::Summary`] digest of a set of outputs (pure): the summary blob alone if
/// there is one, otherwise the same as [`compute_output_digest`].
pub fn compute_summary_digest(outputs: &[ActionOutput]) -> OutputDigest {
    summary_digest(outputs).unwrap_or_else(|| compute_output_digest(outputs))
}

fn summary_digest(outputs: &[ActionOutput]) -> Option<OutputDigest> {
    let summary = outputs.iter().find(|o| o.name == SUMMARY_OUTPUT)?;
    let mut h = DigestHasher::<OutputKind>::new();
    h.field(b"summary");
    hash_object(&mut h, &summary.object);
    Some(h.finalize())
}

fn hash_object(h: &mut DigestHasher<OutputKind>, object: &ObjectRef) {
    let (tag, hash, size) = match object {
        ObjectRef::Blob(d) => (b"blob".as_slice(), d.hash(), d.size()),
        ObjectRef::Tree(d) => (b"tree".as_slice(), d.hash(), d.size()),
    };
    h.field(tag).field(hash).field(&size.to_le_bytes());
}

/// Writes fields into a key hasher in the canonical encoding.
struct KeyWriter(DigestHasher<ActionKeyKind>);

impl KeyWriter {
    fn str(&mut self, s: &str) {
        self.0.field(s.as_bytes());
    }

    fn u64(&mut self, n: u64) {
        self.0.field(&n.to_le_bytes());
    }

    fn blob(&mut self, d: &BlobDigest) {
        self.0.field(d.hash());
        self.u64(d.size());
    }

    fn blob_map(&mut self, m: &BTreeMap<String, BlobDigest>) {
        self.u64(m.len() as u64);
        for (k, v) in m {
            self.str(k);
            self.blob(v);
        }
    }

    fn blob_list(&mut self, l: &[(String, BlobDigest)]) {
        self.u64(l.len() as u64);
        for (k, v) in l {
            self.str(k);
            self.blob(v);
        }
    }

    fn str_map(&mut self, m: &BTreeMap<String, String>) {
        self.u64(m.len() as u64);
        for (k, v) in m {
            self.str(k);
            self.str(v);
        }
    }
}

#[cfg(test)]
mod tests;
