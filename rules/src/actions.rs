//! From the package graph to the engine's action graph: one action per step of building
//! each source package, keyed by the digests of exactly what that step reads.
//!
//! For each spec built for the target architecture:
//!
//! - `source:<pkg>/<file>` ([`SourceFetchInputs`]) for each Source or Patch that is not in
//!   the spec's directory: fetched from the mirror and checked against the package's
//!   signatures file;
//! - `srpm:<pkg>` ([`SrpmPackInputs`]): the spec, the files beside it that it names, the
//!   tree's macro files and defines, and the fetched sources (dependency outputs);
//! - `rpm:<pkg>` ([`RpmBuildInputs`]): the SRPM, plus the RPM outputs of every package its
//!   build root needs (the build edges of the package graph, which already follow the
//!   Requires of what BuildRequires pulls in), plus the toolchain's fingerprint;
//! - and one `repo:<arch>` ([`RepoIndexInputs`]) over every `rpm:` action built.
//!
//! Spec and source files go into the store as they are hashed (the executor reads them
//! from there, never from the tree, so a file edited mid-build cannot change what an
//! already-keyed action sees).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::{PackageGraph, SpecId};
use anyhow::Context as _;
use keel_engine::{
    ActionId, Evr, ExecutorId, Graph, KeyInputs, RepoIndexInputs, RpmBuildInputs,
    SourceFetchInputs, SrpmPackInputs, ToolchainId,
};
use keel_specs::Spec;
use keel_store::{BlobDigest, Store};

/// What the action graph is built from, beyond the specs.
#[derive(Debug, Clone)]
pub struct ActionConfig {
    /// The tree's root: macro file names in keys are relative to it.
    pub root: PathBuf,
    pub target_arch: String,
    pub macro_files: Vec<PathBuf>,
    pub defines: BTreeMap<String, String>,
    pub toolchain: ToolchainId,
    /// The indexing tool's identity (`createrepo_c 1.1.2`).
    pub indexer: String,
    /// What runs the actions, named by every key.
    pub executor: ExecutorId,
    /// Defines of one spec only, by spec path, on top of `defines`: the tree's version
    /// macros that spec uses (`%azl_kernel_version`), so that a version bump rebuilds
    /// exactly the specs that name it.
    pub spec_defines: HashMap<PathBuf, BTreeMap<String, String>>,
    /// Whether `%check` runs (`[build] check` in keel.toml).
    pub check: bool,
    /// Settings of the build root from `[build]` (`sh`, `rcfile`), part of every `srpm:`
    /// and `rpm:` key.
    pub build_root: BTreeMap<String, String>,
}

impl ActionConfig {
    /// The defines `spec` is packed and built with.
    pub fn defines_of(&self, spec: &Path) -> BTreeMap<String, String> {
        let mut d = self.defines.clone();
        if let Some(extra) = self.spec_defines.get(spec) {
            d.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        d
    }
}

/// A spec left out of the action graph, with why; the rest of the tree is still planned.
#[derive(Debug, Clone)]
pub struct Excluded {
    pub spec: SpecId,
    /// What is wrong, naming the file (and line, when known).
    pub reason: String,
    /// The excluded spec this one needs (directly or not), when that is why.
    pub because_of: Option<SpecId>,
}

/// The action graph of a tree, with the way back to its specs.
#[derive(Debug)]
pub struct ActionGraph {
    pub graph: Graph,
    /// `rpm:` action of each spec that is built.
    pub rpm_action: HashMap<SpecId, ActionId>,
    pub spec_of: HashMap<ActionId, SpecId>,
    pub repo: Option<ActionId>,
    /// Wanted specs that could not be planned, in build order, with what needs them.
    pub excluded: Vec<Excluded>,
}

/// A file of the tree in the store: its digest, stored if it was not already.
pub fn stored_file(store: &Store, path: &Path) -> anyhow::Result<BlobDigest> {
    let d = store
        .file_digest(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    if !store.contains_blob(&d) {
        store
            .put_file(path)
            .with_context(|| format!("failed to store {}", path.display()))?;
    }
    Ok(d)
}

/// `<dir>/<name>.signatures.json` for `<dir>/<name>.spec`.
pub fn signatures_path(spec_path: &Path) -> PathBuf {
    let stem = spec_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    spec_path.with_file_name(format!("{stem}.signatures.json"))
}

/// The signatures of a package's `<pkg>.signatures.json` (file name -> SHA-256), empty
/// when the file does not exist. Read by `keel-sources`, as the toolkit reads it (keys
/// ignoring case).
fn signatures(spec_path: &Path) -> anyhow::Result<keel_sources::Signatures> {
    let path = signatures_path(spec_path);
    if !path.exists() {
        return Ok(keel_sources::Signatures::new());
    }
    Ok(keel_sources::Signatures::load(&path)?)
}

/// The epoch, version and release of a spec's main package.
fn evr_of(spec: &Spec) -> Evr {
    let p = spec.packages.first();
    Evr {
        epoch: p.and_then(|p| p.epoch),
        version: p.map(|p| p.version.clone()).unwrap_or_default(),
        release: p.map(|p| p.release.clone()).unwrap_or_default(),
    }
}

/// The specs in an order where every spec comes after those it build-depends on, and
/// the wanted specs that have no place in it (in a build cycle, or needing one), each
/// with why.
fn build_order(pg: &PackageGraph, wanted: &[bool]) -> (Vec<SpecId>, Vec<Excluded>) {
    let n = pg.specs.len();
    let mut indeg = vec![0usize; n];
    for e in &pg.edges {
        if wanted[e.from.0] && wanted[e.to.0] && e.from != e.to {
            indeg[e.from.0] += 1;
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| wanted[i] && indeg[i] == 0).collect();
    ready.reverse();
    let mut order = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while let Some(i) = ready.pop() {
        order.push(SpecId(i));
        placed[i] = true;
        for e in pg.rdeps(SpecId(i)) {
            if wanted[e.from.0] && e.from != e.to {
                indeg[e.from.0] -= 1;
                if indeg[e.from.0] == 0 {
                    ready.push(e.from.0);
                }
            }
        }
    }
    let mut unplaced = Vec::new();
    if order.len() < wanted.iter().filter(|w| **w).count() {
        let mut in_cycle: HashMap<usize, String> = HashMap::new();
        for c in &pg.cycles {
            if !c.steps.iter().all(|s| wanted[s.from.0]) {
                continue;
            }
            let names: Vec<String> = c
                .steps
                .iter()
                .map(|s| format!("{} ({})", pg.specs[s.from.0].name, s.via))
                .collect();
            let msg = format!(
                "in a build cycle: {} -> {}; break it with a bootstrap seed: add the RPM of {} to [bootstrap] seed in keel.toml",
                names.join(" -> "),
                pg.specs[c.steps[0].from.0].name,
                c.seed_suggestion
            );
            for st in &c.steps {
                in_cycle.entry(st.from.0).or_insert_with(|| msg.clone());
            }
        }
        for i in (0..n).filter(|&i| wanted[i] && !placed[i]) {
            if let Some(why) = in_cycle.get(&i) {
                unplaced.push(Excluded {
                    spec: SpecId(i),
                    reason: why.clone(),
                    because_of: None,
                });
                continue;
            }
            let blocked: std::collections::BTreeSet<SpecId> = pg
                .deps(SpecId(i))
                .filter(|e| e.to.0 != i && wanted[e.to.0] && !placed[e.to.0])
                .map(|e| e.to)
                .collect();
            let names: Vec<&str> = blocked
                .iter()
                .map(|s| pg.specs[s.0].name.as_str())
                .collect();
            // What it waits for, preferably a member of a cycle.
            let cause = blocked
                .iter()
                .find(|s| in_cycle.contains_key(&s.0))
                .or(blocked.first())
                .copied();
            unplaced.push(Excluded {
                spec: SpecId(i),
                reason: format!(
                    "needs {}, which cannot be built before it (a build cycle)",
                    names.join(", ")
                ),
                because_of: cause,
            });
        }
    }
    (order, unplaced)
}

/// Which specs a build of `targets` (package or spec names; all when empty) needs: the
/// targets and everything they build-depend on.
pub fn wanted_specs(pg: &PackageGraph, targets: &[String]) -> anyhow::Result<Vec<bool>> {
    let n = pg.specs.len();
    if targets.is_empty() {
        return Ok(pg.specs.iter().map(|s| s.excluded.is_none()).collect());
    }
    let mut wanted = vec![false; n];
    let mut stack = Vec::new();
    for t in targets {
        let t = t
            .strip_prefix("rpm:")
            .or_else(|| t.strip_prefix("srpm:"))
            .unwrap_or(t);
        let s = pg
            .find(t)
            .with_context(|| format!("no package or spec named `{t}` in the tree"))?;
        if let Some(why) = &pg.specs[s.0].excluded {
            anyhow::bail!("{t} is not built for {}: {why}", pg.target_arch());
        }
        stack.push(s);
    }
    while let Some(s) = stack.pop() {
        if std::mem::replace(&mut wanted[s.0], true) {
            continue;
        }
        stack.extend(pg.deps(s).map(|e| e.to));
    }
    Ok(wanted)
}

/// Builds the action graph for the `wanted` specs (`specs[i]` is `SpecId(i)`). A spec
/// that cannot be planned (a patch that does not exist, a source nobody vouches for, a
/// build cycle) is left out with what needs it, and the rest is planned: see
/// [`ActionGraph::excluded`].
pub fn action_graph(
    store: &Store,
    pg: &PackageGraph,
    specs: &[Spec],
    wanted: &[bool],
    cfg: &ActionConfig,
    with_repo: bool,
) -> anyhow::Result<ActionGraph> {
    let (order, mut excluded) = build_order(pg, wanted);
    let macro_files = macro_digests(store, cfg)?;
    // What the build root carries is built in the bare root: no tree macro files, no
    // rpmrc of theirs (see `PackageGraph::builds_bare`).
    let bare_cfg = ActionConfig {
        build_root: cfg
            .build_root
            .iter()
            .filter(|(k, _)| *k != "rcfile")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..cfg.clone()
    };
    // Hashing (and, the first time, storing) the files of every spec is the bulk of the
    // work: do it on every core.
    let per_spec: Vec<anyhow::Result<SpecActions>> = {
        use rayon::prelude::*;
        order
            .par_iter()
            .map(|s| {
                if pg.builds_bare(*s) {
                    spec_actions(store, &pg.specs[s.0].name, &specs[s.0], &[], &bare_cfg)
                } else {
                    spec_actions(store, &pg.specs[s.0].name, &specs[s.0], &macro_files, cfg)
                }
            })
            .collect()
    };
    let mut g = Graph::new();
    let mut rpm_action = HashMap::new();
    let mut spec_of = HashMap::new();
    // The excluded spec at the root of each exclusion.
    let mut out: HashMap<SpecId, SpecId> = HashMap::new();
    for (s, sa) in order.iter().zip(per_spec) {
        // What needs a spec that is left out is left out with it.
        if let Some(e) = pg.deps(*s).find(|e| e.to != *s && out.contains_key(&e.to)) {
            let root = out[&e.to];
            out.insert(*s, root);
            excluded.push(Excluded {
                spec: *s,
                reason: format!(
                    "needs {} ({}), which is excluded",
                    pg.specs[e.to.0].name, e.via
                ),
                because_of: Some(root),
            });
            continue;
        }
        let sa = match sa {
            Ok(sa) => sa,
            Err(e) => {
                out.insert(*s, *s);
                excluded.push(Excluded {
                    spec: *s,
                    reason: format!("{e:#}"),
                    because_of: None,
                });
                continue;
            }
        };
        // Names are made distinct by the package graph; a clash left is the spec's, and
        // never half-adds its actions.
        let mut mine = std::collections::HashSet::new();
        let names = sa
            .sources
            .iter()
            .map(|(n, _)| n)
            .chain([&sa.srpm.0, &sa.rpm.0]);
        if let Some(taken) = names
            .into_iter()
            .find(|n| g.find(n).is_some() || !mine.insert(*n))
        {
            out.insert(*s, *s);
            excluded.push(Excluded {
                spec: *s,
                reason: format!(
                    "{}: its action {taken} is already in the graph",
                    pg.specs[s.0].path.display()
                ),
                because_of: None,
            });
            continue;
        }
        let mut srpm_deps = Vec::new();
        for (name, inputs) in sa.sources {
            srpm_deps.push(g.add(name, inputs, &[])?);
        }
        // Packing reads the spec with the tree's macros too (`%python_provide` requires
        // the carried Lua modules, the rpmrc is the carried one): the packages the build
        // root carries are layered into the packing root as into the build's.
        if !pg.builds_bare(*s) {
            let mut carried: Vec<ActionId> = pg
                .deps(*s)
                .filter(|e| e.to != *s && pg.builds_bare(e.to))
                .filter_map(|e| rpm_action.get(&e.to).copied())
                .collect();
            carried.sort();
            carried.dedup();
            srpm_deps.extend(carried);
        }
        let srpm = g.add(sa.srpm.0, sa.srpm.1, &srpm_deps)?;
        spec_of.insert(srpm, *s);
        let mut deps = vec![srpm];
        for e in pg.deps(*s) {
            if e.to != *s
                && let Some(a) = rpm_action.get(&e.to)
            {
                deps.push(*a);
            }
        }
        let rpm = g.add(sa.rpm.0, sa.rpm.1, &deps)?;
        rpm_action.insert(*s, rpm);
        spec_of.insert(rpm, *s);
    }
    let repo = if with_repo && !rpm_action.is_empty() {
        let mut deps: Vec<ActionId> = rpm_action.values().copied().collect();
        deps.sort();
        Some(g.add(
            format!("repo:{}", cfg.target_arch),
            KeyInputs::RepoIndex(RepoIndexInputs {
                name: cfg.target_arch.clone(),
                target_arch: cfg.target_arch.clone(),
                indexer: cfg.indexer.clone(),
                options: BTreeMap::new(),
                executor: cfg.executor.clone(),
            }),
            &deps,
        )?)
    } else {
        None
    };
    Ok(ActionGraph {
        graph: g,
        rpm_action,
        spec_of,
        repo,
        excluded,
    })
}

/// The tree's macro files by name (relative to the root), stored, in `cfg.macro_files`'
/// order: the order the reader loaded them in, which rpmbuild must load them in too.
pub fn macro_digests(
    store: &Store,
    cfg: &ActionConfig,
) -> anyhow::Result<Vec<(String, BlobDigest)>> {
    let mut macro_files = Vec::with_capacity(cfg.macro_files.len());
    for f in &cfg.macro_files {
        let name = f.strip_prefix(&cfg.root).unwrap_or(f);
        macro_files.push((name.to_string_lossy().into_owned(), stored_file(store, f)?));
    }
    Ok(macro_files)
}

/// The actions of one spec, as (name, key inputs): what [`action_graph`] adds for it,
/// in that order (the `source:` actions, then `srpm:`, then `rpm:`).
#[derive(Debug, Clone)]
pub struct SpecActions {
    pub sources: Vec<(String, KeyInputs)>,
    pub srpm: (String, KeyInputs),
    pub rpm: (String, KeyInputs),
}

/// The actions of the spec named `name` in the package graph, its files hashed and
/// stored; `macro_files` from [`macro_digests`]. Dependencies are the caller's: each
/// `source:` feeds the `srpm:`, which feeds the `rpm:` with the build edges' `rpm:`s.
pub fn spec_actions(
    store: &Store,
    name: &str,
    spec: &Spec,
    macro_files: &[(String, BlobDigest)],
    cfg: &ActionConfig,
) -> anyhow::Result<SpecActions> {
    let files = spec_files(store, spec)?;
    let evr = evr_of(spec);
    let sources = files
        .fetched
        .iter()
        .map(|(file, sha256)| {
            (
                format!("source:{name}/{file}"),
                KeyInputs::SourceFetch(SourceFetchInputs {
                    file_name: file.clone(),
                    sha256: sha256.clone(),
                    executor: cfg.executor.clone(),
                }),
            )
        })
        .collect();
    let srpm = KeyInputs::SrpmPack(SrpmPackInputs {
        name: name.to_owned(),
        evr: evr.clone(),
        spec: files.spec,
        files: files.local,
        macro_files: macro_files.to_vec(),
        defines: cfg.defines_of(&spec.path),
        target_arch: cfg.target_arch.clone(),
        toolchain: cfg.toolchain.clone(),
        executor: cfg.executor.clone(),
        build_root: cfg.build_root.clone(),
    });
    let mut env = BTreeMap::new();
    env.insert(
        "SOURCE_DATE_EPOCH".to_owned(),
        spec.source.changelog_newest.unwrap_or(0).to_string(),
    );
    let rpm = KeyInputs::RpmBuild(RpmBuildInputs {
        name: name.to_owned(),
        evr,
        spec: files.spec,
        macro_files: macro_files.to_vec(),
        defines: cfg.defines_of(&spec.path),
        target_arch: cfg.target_arch.clone(),
        toolchain: cfg.toolchain.clone(),
        env,
        executor: cfg.executor.clone(),
        check: cfg.check,
        build_root: cfg.build_root.clone(),
    });
    Ok(SpecActions {
        sources,
        srpm: (format!("srpm:{name}"), srpm),
        rpm: (format!("rpm:{name}"), rpm),
    })
}

/// The files a spec's build reads from the tree.
struct SpecFiles {
    spec: BlobDigest,
    /// Sources and patches beside the spec.
    local: BTreeMap<String, BlobDigest>,
    /// Sources to fetch: file name -> SHA-256 from the signatures file.
    fetched: Vec<(String, String)>,
}

/// Where the toolkit's srpmpacker finds a source or patch kept in the tree: by file name
/// anywhere under the spec's directory (it walks the directory, so `SOURCES/` beside the
/// spec works, as rt-tests, python-dns and python-pyrsistent use). Beside the spec comes
/// first; below it, the walk's order (names sorted, depth first), the first match winning
/// as in the toolkit.
fn find_kept(dir: &Path, file: &str) -> Option<PathBuf> {
    let beside = dir.join(file);
    if beside.is_file() {
        return Some(beside);
    }
    fn walk(dir: &Path, file: &str, depth: usize) -> Option<PathBuf> {
        if depth > 8 {
            return None;
        }
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir).ok()?.flatten().collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                if let Some(p) = walk(&e.path(), file, depth + 1) {
                    return Some(p);
                }
            } else if depth > 0 && e.file_name() == std::ffi::OsStr::new(file) && t.is_file() {
                return Some(e.path());
            }
        }
        None
    }
    // A source's name is a file name; one with a slash is never looked for below.
    if file.contains('/') {
        return None;
    }
    walk(dir, file, 0)
}

fn spec_files(store: &Store, spec: &Spec) -> anyhow::Result<SpecFiles> {
    let dir = spec.path.parent().unwrap_or(Path::new("."));
    let digest = stored_file(store, &spec.path)?;
    let sigs = signatures(&spec.path)?;
    let mut local = BTreeMap::new();
    let mut fetched = Vec::new();
    for src in &spec.source.sources {
        if let Some(path) = find_kept(dir, &src.file) {
            local.insert(src.file.clone(), stored_file(store, &path)?);
        } else if src.is_patch {
            anyhow::bail!(
                "{}: Patch{} {} does not exist (patches are kept beside the spec or in SOURCES/ below it)",
                spec.path.display(),
                src.num,
                dir.join(&src.file).display()
            );
        } else {
            let Some(sha) = sigs.get(&src.file) else {
                let unexpanded = if src.file.contains('%') {
                    " (it names a macro that is not defined)"
                } else {
                    ""
                };
                anyhow::bail!(
                    "{}: Source{} {} is neither kept beside the spec nor listed in {}{unexpanded}",
                    spec.path.display(),
                    src.num,
                    src.file,
                    signatures_path(&spec.path)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                );
            };
            // Two tags may name one file (go-rpm-macros: Source0 and `%{forgesource}`):
            // the toolkit fetches each file name once, and so does keel.
            if !fetched.iter().any(|(f, _)| *f == src.file) {
                fetched.push((src.file.clone(), sha.to_owned()));
            }
        }
    }
    // The signatures file travels with the sources it vouches for: the SRPM is packed
    // only from sources that match it.
    let sig_path = signatures_path(&spec.path);
    if sig_path.is_file() {
        let name = sig_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        local.insert(name, stored_file(store, &sig_path)?);
    }
    Ok(SpecFiles {
        spec: digest,
        local,
        fetched,
    })
}
