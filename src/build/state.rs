//! The incremental fast path after an edit: what the last successful build of a tree
//! knew, kept beside its [stamp](super::stamp), so that the next build or dry run re-reads
//! only the spec directories whose files changed.
//!
//! The state holds the metadata of every file and directory the build read (split into
//! *global* entries — keel itself, keel.toml, macro files, the toolchain manifest, every
//! directory that holds no spec — and *spec directories*, each with its files), a
//! signature of each spec's graph-relevant fields (everything but its sources, changelog
//! date and messages), and the action graph: each action's key inputs and dependencies
//! with the key and output digest it had in that build.
//!
//! [`State::fast`] stats every entry. Any global change, a spec directory that gains or
//! loses a spec or a subdirectory, a spec that cannot be read, a signature that differs
//! (the package graph could differ: dependencies, provides, EVRs, arches…) or a spec
//! whose set of actions changes sends the build down the normal path. Otherwise the
//! changed directories' specs are read again, their actions' inputs recomputed by
//! [`keel_rules::actions::spec_actions`] (the function the normal path uses), and the
//! engine plans with the kept keys and outputs ([`keel_engine::plan_known`]) instead of
//! reading every previous record.
//!
//! Entries modified within two seconds before they were statted cannot vouch for their
//! contents (see [`super::stamp`]); they are hashed then, and hashed again when the state
//! is saved after the build: only if the contents and metadata are unchanged and no longer
//! racy is the metadata kept, otherwise the entry counts as changed next time.
//!
//! Only builds with the test executor and the host toolchain keep a state: rpmbuild's
//! graph also depends on what the built RPMs provide (`learn_from_builds`) and its
//! repository key on createrepo_c's version, which this state does not track yet.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use keel_engine::{BuildReport, Graph, KeyInputs, Known, OutputDigests, ToolchainId};
use keel_rules::actions::{self, ActionConfig, SpecActions};
use keel_specs::Spec;
use keel_store::{ActionKey, BlobDigest, Store};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::ExecutorKind;
use super::stamp::{self, Meta, RACY_NS};
use crate::config::Tree;

// 3: each action keeps both output digests (bytes and summary); states are kept per
// executor and isolation. 4: whether `%check` runs. 5: the build root's settings (`sh`, `rcfile`).
// 6: signatures are typed digests.
const VERSION: u32 = 6;

/// The state file beside the stamp at `stamp_path` (named like it, so that `keel store
/// gc` removes both).
pub fn path(stamp_path: &Path) -> PathBuf {
    let mut p = stamp_path.as_os_str().to_owned();
    p.push(".state");
    PathBuf::from(p)
}

/// Whether builds of `tree` with `kind` keep a state (see the module docs). Not with
/// images: an image's closure spans the whole graph and its files are not tracked here.
pub fn applies(tree: &Tree, kind: ExecutorKind) -> bool {
    kind == ExecutorKind::Test
        // A version bump changes what the specs that name it read: this path re-reads
        // only the directories that changed, so such a tree takes the whole-tree path.
        && tree.config.specs.version_macros.is_none()
        && tree.config.toolchain.root.is_none()
        && tree.config.toolchain.rpms.is_none()
        // The build root's packages from the tree add edges to every spec.
        && tree.config.toolchain.from_tree.is_empty()
        && tree.config.images.configs.is_empty()
}

/// A file or directory as last seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Seen {
    path: PathBuf,
    /// `None`: unknown, counts as changed.
    meta: Option<Meta>,
    is_dir: bool,
    /// For an entry racy when seen: its contents then (see the module docs).
    #[serde(skip)]
    racy: Option<BlobDigest>,
}

/// What a directory's or file's contents are, for the racy check: a file's digest, or a
/// directory's sorted names.
fn contents(store: &Store, path: &Path, is_dir: bool) -> Option<BlobDigest> {
    if is_dir {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        let mut text = Vec::new();
        for n in names {
            text.extend_from_slice(n.as_encoded_bytes());
            text.push(0);
        }
        Some(BlobDigest::of_bytes(&text))
    } else {
        store.file_digest(path).ok()
    }
}

fn see(store: &Store, path: PathBuf, now: i128) -> Seen {
    let m = std::fs::symlink_metadata(&path).ok();
    let is_dir = m.as_ref().is_some_and(|m| m.is_dir());
    let meta = m.as_ref().map(stamp::meta_of);
    let racy = match &meta {
        Some(m) if now - m.changed_ns() <= RACY_NS => contents(store, &path, is_dir),
        _ => None,
    };
    Seen {
        path,
        meta,
        is_dir,
        racy,
    }
}

/// Metadata of everything a build reads from the tree, taken before it reads anything.
pub struct Snapshot {
    global: Vec<Seen>,
    /// Every entry under the spec directories' roots that is not global.
    tree: Vec<Seen>,
}

impl Snapshot {
    /// Stats `global` files and everything under `roots`.
    pub fn take(store: &Store, global: Vec<PathBuf>, roots: &[PathBuf]) -> Snapshot {
        let now = stamp::now_ns();
        let global_set: HashSet<PathBuf> = global.iter().cloned().collect();
        let mut walked = Vec::new();
        stamp::walk(roots, &mut walked);
        walked.retain(|p| !global_set.contains(p));
        let mut global: Vec<PathBuf> = global_set.into_iter().collect();
        global.sort();
        Snapshot {
            global: global.into_par_iter().map(|p| see(store, p, now)).collect(),
            tree: walked.into_par_iter().map(|p| see(store, p, now)).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Dir {
    dir: Seen,
    files: Vec<Seen>,
    /// Indices into [`State::specs`], sorted by path.
    specs: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptSpec {
    path: PathBuf,
    /// The source package's name in the package graph.
    name: String,
    signature: BlobDigest,
    /// Its actions, in the order [`SpecActions`] lists them; empty when it is not built.
    actions: Vec<u32>,
}

/// [`KeyInputs`] in a form bincode can read back (it is internally tagged for JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Inputs {
    SourceFetch(keel_engine::SourceFetchInputs),
    SrpmPack(keel_engine::SrpmPackInputs),
    RpmBuild(keel_engine::RpmBuildInputs),
    RepoIndex(keel_engine::RepoIndexInputs),
    Image(keel_engine::ImageInputs),
}

impl From<KeyInputs> for Inputs {
    fn from(k: KeyInputs) -> Inputs {
        match k {
            KeyInputs::SourceFetch(i) => Inputs::SourceFetch(i),
            KeyInputs::SrpmPack(i) => Inputs::SrpmPack(i),
            KeyInputs::RpmBuild(i) => Inputs::RpmBuild(i),
            KeyInputs::RepoIndex(i) => Inputs::RepoIndex(i),
            KeyInputs::Image(i) => Inputs::Image(i),
        }
    }
}

impl From<Inputs> for KeyInputs {
    fn from(k: Inputs) -> KeyInputs {
        match k {
            Inputs::SourceFetch(i) => KeyInputs::SourceFetch(i),
            Inputs::SrpmPack(i) => KeyInputs::SrpmPack(i),
            Inputs::RpmBuild(i) => KeyInputs::RpmBuild(i),
            Inputs::RepoIndex(i) => KeyInputs::RepoIndex(i),
            Inputs::Image(i) => KeyInputs::Image(i),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptAction {
    name: String,
    inputs: Inputs,
    deps: Vec<u32>,
    /// The key and output digests in the build that saved the state.
    key: Option<ActionKey>,
    output: Option<OutputDigests>,
}

/// What [`ActionConfig`] held, but the macro files' digests (global files, unchanged).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeptConfig {
    root: PathBuf,
    target_arch: String,
    macro_files: Vec<PathBuf>,
    defines: BTreeMap<String, String>,
    toolchain: ToolchainId,
    indexer: String,
    executor: keel_engine::ExecutorId,
    check: bool,
    build_root: BTreeMap<String, String>,
}

/// What the last successful build of a tree knew (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    version: u32,
    /// The toolchain fingerprint the build used (as in the stamp).
    pub toolchain: String,
    global: Vec<Seen>,
    dirs: Vec<Dir>,
    specs: Vec<KeptSpec>,
    actions: Vec<KeptAction>,
    config: KeptConfig,
    /// Warnings the normal path prints on every build (unresolved dependencies).
    warnings: Vec<String>,
}

/// The fields of a spec the package graph and the build order can depend on, hashed:
/// all of it but what only action keys read (sources, the changelog date) and messages.
pub fn signature(spec: &Spec) -> BlobDigest {
    let mut s = spec.clone();
    s.parsed.clear();
    s.source.sources.clear();
    s.source.changelog_newest = None;
    s.warnings.clear();
    s.errors.clear();
    s.notices.clear();
    let bytes = bincode::serde::encode_to_vec(&s, bincode::config::standard())
        .expect("a spec always encodes");
    BlobDigest::of_bytes(&bytes)
}

/// The package a `source:`, `srpm:` or `rpm:` action belongs to.
fn package_of(action: &str) -> Option<&str> {
    if let Some(rest) = action.strip_prefix("source:") {
        return rest.split_once('/').map(|(p, _)| p);
    }
    action
        .strip_prefix("srpm:")
        .or_else(|| action.strip_prefix("rpm:"))
}

/// The tree read through the fast path, ready to plan or build.
pub struct Fast {
    pub graph: Graph,
    pub known: Vec<Option<Known>>,
    state: State,
}

impl Fast {
    /// Warnings the normal path would print.
    pub fn warnings(&self) -> &[String] {
        &self.state.warnings
    }

    /// The toolchain fingerprint (see [`super::toolchain_fingerprint`]).
    pub fn toolchain_fingerprint(&self) -> String {
        self.state.toolchain.clone()
    }

    /// The files and directories a stamp of this build covers.
    pub fn stamp_inputs(&self) -> Vec<PathBuf> {
        self.state.paths()
    }

    /// Keeps the state of the successful build that `report` describes.
    pub fn save(mut self, store: &Store, report: &BuildReport, path: &Path) {
        for (a, (_, action)) in self.state.actions.iter_mut().zip(self.graph.iter()) {
            a.inputs = action.inputs.clone().into();
        }
        self.state.save(store, &self.graph, report, path);
    }
}

impl State {
    /// The state of a successful build through the normal path: `snapshot` taken before
    /// the tree was read, then `specs` (in the package graph's order, with their names)
    /// read into `graph`.
    pub fn new(
        snapshot: Snapshot,
        specs: &[Spec],
        names: &[String],
        graph: &Graph,
        cfg: &ActionConfig,
        toolchain: String,
        warnings: Vec<String>,
    ) -> State {
        let mut by_dir: BTreeMap<PathBuf, Vec<u32>> = BTreeMap::new();
        let mut kept_specs = Vec::with_capacity(specs.len());
        let mut spec_index: HashMap<&str, usize> = HashMap::new();
        let signatures: Vec<BlobDigest> = specs.par_iter().map(signature).collect();
        for (i, (spec, sig)) in specs.iter().zip(signatures).enumerate() {
            let dir = spec.path.parent().unwrap_or(Path::new("")).to_owned();
            by_dir.entry(dir).or_default().push(i as u32);
            spec_index.insert(&names[i], i);
            kept_specs.push(KeptSpec {
                path: spec.path.clone(),
                name: names[i].clone(),
                signature: sig,
                actions: Vec::new(),
            });
        }
        let mut actions = Vec::with_capacity(graph.len());
        for (id, a) in graph.iter() {
            if let Some(&s) = package_of(&a.name).and_then(|p| spec_index.get(p)) {
                kept_specs[s].actions.push(id.index() as u32);
            }
            actions.push(KeptAction {
                name: a.name.clone(),
                inputs: a.inputs.clone().into(),
                deps: a.deps.iter().map(|d| d.index() as u32).collect(),
                key: None,
                output: None,
            });
        }
        let mut dirs: BTreeMap<PathBuf, Dir> = BTreeMap::new();
        let mut global = snapshot.global;
        for seen in snapshot.tree {
            let spec_dir = if seen.is_dir {
                by_dir.contains_key(&seen.path).then(|| seen.path.clone())
            } else {
                seen.path
                    .parent()
                    .filter(|p| by_dir.contains_key(*p))
                    .map(Path::to_owned)
            };
            match spec_dir {
                None => global.push(seen),
                Some(d) => {
                    let dir = dirs.entry(d.clone()).or_insert_with(|| Dir {
                        dir: Seen {
                            path: d.clone(),
                            meta: None,
                            is_dir: true,
                            racy: None,
                        },
                        files: Vec::new(),
                        specs: by_dir[&d].clone(),
                    });
                    if seen.is_dir {
                        dir.dir = seen;
                    } else {
                        dir.files.push(seen);
                    }
                }
            }
        }
        // A spec directory the walk did not see (outside the roots) keeps an unknown
        // entry: it is read again every time.
        for (d, specs) in by_dir {
            dirs.entry(d.clone()).or_insert_with(|| Dir {
                dir: Seen {
                    path: d,
                    meta: None,
                    is_dir: true,
                    racy: None,
                },
                files: Vec::new(),
                specs,
            });
        }
        State {
            version: VERSION,
            toolchain,
            global,
            dirs: dirs.into_values().collect(),
            specs: kept_specs,
            actions,
            config: KeptConfig {
                root: cfg.root.clone(),
                target_arch: cfg.target_arch.clone(),
                macro_files: cfg.macro_files.clone(),
                defines: cfg.defines.clone(),
                toolchain: cfg.toolchain.clone(),
                indexer: cfg.indexer.clone(),
                executor: cfg.executor.clone(),
                check: cfg.check,
                build_root: cfg.build_root.clone(),
            },
            warnings,
        }
    }

    /// Every file and directory in the state.
    fn paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.global.iter().map(|s| s.path.clone()).collect();
        for d in &self.dirs {
            out.push(d.dir.path.clone());
            out.extend(d.files.iter().map(|s| s.path.clone()));
        }
        out
    }

    /// Writes the state after the successful build `report` of `graph` (this state's
    /// graph), settling racy entries (see the module docs). A failure is a warning.
    pub fn save(mut self, store: &Store, graph: &Graph, report: &BuildReport, path: &Path) {
        for (id, _) in graph.iter() {
            let Some(r) = report.get(id) else {
                tracing::debug!("build state: not saved, the build left actions out");
                let _ = std::fs::remove_file(path);
                return;
            };
            let (Some(key), Some(output)) = (r.key, r.outputs()) else {
                let _ = std::fs::remove_file(path);
                return;
            };
            let a = &mut self.actions[id.index()];
            a.key = Some(key);
            a.output = Some(output);
        }
        let now = stamp::now_ns();
        let settle = |s: &mut Seen| {
            let Some(then) = s.racy.take() else { return };
            let m = stamp::meta(&s.path);
            let holds = m.is_some()
                && m == s.meta
                && m.as_ref().is_some_and(|m| now - m.changed_ns() > RACY_NS)
                && contents(store, &s.path, s.is_dir) == Some(then);
            if !holds {
                s.meta = None;
            }
        };
        self.global.par_iter_mut().for_each(settle);
        self.dirs.par_iter_mut().for_each(|d| {
            settle(&mut d.dir);
            d.files.iter_mut().for_each(settle);
        });
        let tmp = {
            let mut p = path.as_os_str().to_owned();
            p.push(".tmp");
            PathBuf::from(p)
        };
        let mut bytes = VERSION.to_le_bytes().to_vec();
        let ok =
            bincode::serde::encode_into_std_write(&self, &mut bytes, bincode::config::standard())
                .ok()
                .and_then(|_| std::fs::write(&tmp, &bytes).ok())
                .and_then(|()| std::fs::rename(&tmp, path).ok());
        if ok.is_none() {
            tracing::warn!("could not write the build state {}", path.display());
        }
    }

    /// The state at `path`, if there is a readable one of this version.
    pub fn load(path: &Path) -> Option<State> {
        let bytes = std::fs::read(path).ok()?;
        let rest = bytes.strip_prefix(VERSION.to_le_bytes().as_slice())?;
        let (s, _): (State, _) =
            bincode::serde::decode_from_slice(rest, bincode::config::standard()).ok()?;
        (s.version == VERSION).then_some(s)
    }

    /// The tree as it is now, from this state and the spec directories that changed, or
    /// `None` when the normal path must decide (see the module docs).
    pub fn fast(mut self, tree: &Tree, store: &Store, kind: ExecutorKind) -> Option<Fast> {
        let why = |what: &str| {
            tracing::debug!("build state: {what}; reading the whole tree");
        };
        if super::toolchain_fingerprint(tree, store.root(), kind).ok()? != self.toolchain {
            why("the toolchain changed");
            return None;
        }
        let now = stamp::now_ns();
        let fresh = |s: &Seen| {
            s.meta.is_some()
                && stamp::meta(&s.path).as_ref() == s.meta.as_ref()
                && s.meta
                    .as_ref()
                    .is_some_and(|m| now - m.changed_ns() > RACY_NS)
        };
        if let Some(s) = self.global.par_iter().find_any(|s| !fresh(s)) {
            why(&format!("{} changed", s.path.display()));
            return None;
        }
        let changed: Vec<usize> = self
            .dirs
            .par_iter()
            .enumerate()
            .filter(|(_, d)| !fresh(&d.dir) || !d.files.iter().all(fresh))
            .map(|(i, _)| i)
            .collect();
        tracing::debug!("build state: {} spec directories changed", changed.len());
        let mut replaced: HashMap<u32, KeyInputs> = HashMap::new();
        if !changed.is_empty() {
            let reader = crate::tree::reader_config(tree, Some(store)).ok()?;
            let cfg = ActionConfig {
                root: self.config.root.clone(),
                target_arch: self.config.target_arch.clone(),
                macro_files: self.config.macro_files.clone(),
                defines: self.config.defines.clone(),
                toolchain: self.config.toolchain.clone(),
                indexer: self.config.indexer.clone(),
                executor: self.config.executor.clone(),
                // `applies` keeps trees with version macros off this path.
                spec_defines: HashMap::new(),
                check: self.config.check,
                build_root: self.config.build_root.clone(),
            };
            let macro_files = actions::macro_digests(store, &cfg).ok()?;
            for i in changed {
                let dir = &mut self.dirs[i];
                let path = dir.dir.path.clone();
                let mut files = Vec::new();
                for e in std::fs::read_dir(&path).ok()? {
                    let e = e.ok()?;
                    if e.file_type().ok()?.is_dir() {
                        why(&format!("{} has a subdirectory", path.display()));
                        return None;
                    }
                    files.push(e.path());
                }
                files.sort();
                let spec_files: Vec<&PathBuf> = files
                    .iter()
                    .filter(|p| p.extension().is_some_and(|x| x == "spec"))
                    .collect();
                let kept: Vec<&PathBuf> = dir
                    .specs
                    .iter()
                    .map(|s| &self.specs[*s as usize].path)
                    .collect();
                if spec_files != kept {
                    why(&format!("the specs in {} changed", path.display()));
                    return None;
                }
                // Seen before reading, so that what is read is at least as new.
                dir.dir = see(store, path, now);
                dir.files = files.into_iter().map(|p| see(store, p, now)).collect();
                for s in dir.specs.clone() {
                    let kept = &self.specs[s as usize];
                    let spec = match keel_specs::read_spec(&kept.path, &reader) {
                        Ok(spec) => spec,
                        Err(e) => {
                            why(&format!("{}: {}", kept.path.display(), e.message));
                            return None;
                        }
                    };
                    if signature(&spec) != kept.signature {
                        why(&format!(
                            "{} changed what the graph sees",
                            kept.path.display()
                        ));
                        return None;
                    }
                    if kept.actions.is_empty() {
                        continue;
                    }
                    let sa =
                        actions::spec_actions(store, &kept.name, &spec, &macro_files, &cfg).ok()?;
                    let SpecActions { sources, srpm, rpm } = sa;
                    let new: Vec<(String, KeyInputs)> =
                        sources.into_iter().chain([srpm, rpm]).collect();
                    let same_names = new.len() == kept.actions.len()
                        && new
                            .iter()
                            .zip(&kept.actions)
                            .all(|((n, _), a)| *n == self.actions[*a as usize].name);
                    if !same_names {
                        why(&format!("{}'s actions changed", kept.name));
                        return None;
                    }
                    for ((_, inputs), a) in new.into_iter().zip(&kept.actions) {
                        replaced.insert(*a, inputs);
                    }
                }
            }
        }
        let mut graph = Graph::new();
        let mut ids = Vec::with_capacity(self.actions.len());
        let mut known = Vec::with_capacity(self.actions.len());
        for (i, a) in self.actions.iter().enumerate() {
            let old: KeyInputs = a.inputs.clone().into();
            let (inputs, same_inputs) = match replaced.remove(&(i as u32)) {
                Some(new) => {
                    let same = new == old;
                    (new, same)
                }
                None => (old, true),
            };
            let deps: Vec<keel_engine::ActionId> = a
                .deps
                .iter()
                .map(|d| ids.get(*d as usize).copied())
                .collect::<Option<_>>()?;
            ids.push(graph.add(a.name.clone(), inputs, &deps).ok()?);
            known.push(Some(Known {
                key: a.key?,
                output: a.output?,
                same_inputs,
            }));
        }
        Some(Fast {
            graph,
            known,
            state: self,
        })
    }
}
