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
}

/// The action graph of a tree, with the way back to its specs.
#[derive(Debug)]
pub struct ActionGraph {
    pub graph: Graph,
    /// `rpm:` action of each spec that is built.
    pub rpm_action: HashMap<SpecId, ActionId>,
    pub spec_of: HashMap<ActionId, SpecId>,
    pub repo: Option<ActionId>,
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

/// The `Signatures` of a package's `<pkg>.signatures.json` (file name -> SHA-256), empty
/// when the file does not exist.
fn signatures(spec_path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let path = signatures_path(spec_path);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(rename = "Signatures")]
        signatures: BTreeMap<String, String>,
    }
    let f: File =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
    Ok(f.signatures)
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

/// The specs in an order where every spec comes after those it build-depends on, or the
/// error naming a cycle.
fn build_order(pg: &PackageGraph, wanted: &[bool]) -> anyhow::Result<Vec<SpecId>> {
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
    while let Some(i) = ready.pop() {
        order.push(SpecId(i));
        for e in pg.rdeps(SpecId(i)) {
            if wanted[e.from.0] && e.from != e.to {
                indeg[e.from.0] -= 1;
                if indeg[e.from.0] == 0 {
                    ready.push(e.from.0);
                }
            }
        }
    }
    let want_count = wanted.iter().filter(|w| **w).count();
    if order.len() < want_count {
        let mut msg = String::from("the packages to build have a build cycle");
        for c in &pg.cycles {
            if c.steps.iter().any(|s| wanted[s.from.0]) {
                msg.push_str("\n  ");
                let names: Vec<String> = c
                    .steps
                    .iter()
                    .map(|s| format!("{} ({})", pg.specs[s.from.0].name, s.via))
                    .collect();
                msg.push_str(&names.join(" -> "));
                msg.push_str(&format!(
                    "\n  break it with a bootstrap seed: add the RPM of {} to [bootstrap] seed in keel.toml",
                    c.seed_suggestion
                ));
            }
        }
        anyhow::bail!(msg);
    }
    Ok(order)
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

/// Builds the action graph for the `wanted` specs (`specs[i]` is `SpecId(i)`).
pub fn action_graph(
    store: &Store,
    pg: &PackageGraph,
    specs: &[Spec],
    wanted: &[bool],
    cfg: &ActionConfig,
    with_repo: bool,
) -> anyhow::Result<ActionGraph> {
    let order = build_order(pg, wanted)?;
    let macro_files = macro_digests(store, cfg)?;
    // Hashing (and, the first time, storing) the files of every spec is the bulk of the
    // work: do it on every core.
    let per_spec: Vec<anyhow::Result<SpecActions>> = {
        use rayon::prelude::*;
        order
            .par_iter()
            .map(|s| spec_actions(store, &pg.specs[s.0].name, &specs[s.0], &macro_files, cfg))
            .collect()
    };
    let mut g = Graph::new();
    let mut rpm_action = HashMap::new();
    let mut spec_of = HashMap::new();
    for (s, sa) in order.iter().zip(per_spec) {
        let sa = sa?;
        let mut srpm_deps = Vec::new();
        for (name, inputs) in sa.sources {
            srpm_deps.push(g.add(name, inputs, &[])?);
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
        defines: cfg.defines.clone(),
        target_arch: cfg.target_arch.clone(),
        toolchain: cfg.toolchain.clone(),
        executor: cfg.executor.clone(),
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
        defines: cfg.defines.clone(),
        target_arch: cfg.target_arch.clone(),
        toolchain: cfg.toolchain.clone(),
        env,
        executor: cfg.executor.clone(),
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

fn spec_files(store: &Store, spec: &Spec) -> anyhow::Result<SpecFiles> {
    let dir = spec.path.parent().unwrap_or(Path::new("."));
    let digest = stored_file(store, &spec.path)?;
    let sigs = signatures(&spec.path)?;
    let mut local = BTreeMap::new();
    let mut fetched = Vec::new();
    for src in &spec.source.sources {
        let path = dir.join(&src.file);
        if path.is_file() {
            local.insert(src.file.clone(), stored_file(store, &path)?);
        } else if src.is_patch {
            anyhow::bail!(
                "{}: Patch{} {} does not exist (patches are kept beside the spec)",
                spec.path.display(),
                src.num,
                path.display()
            );
        } else {
            let Some(sha) = sigs.get(&src.file) else {
                anyhow::bail!(
                    "{}: Source{} {} is neither beside the spec nor listed in its signatures file",
                    spec.path.display(),
                    src.num,
                    src.file
                );
            };
            fetched.push((src.file.clone(), sha.clone()));
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
