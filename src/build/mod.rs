//! Building a tree: the action graph of its specs, the executor that runs the actions,
//! and publishing the results.

pub mod excluded;
pub mod exec;
pub mod images;
pub mod preflight;
pub mod progress;
pub mod remote;
pub mod repro;
pub mod stamp;
pub mod state;
pub mod toolchains;

use std::collections::BTreeMap;

use anyhow::Context as _;
use keel_engine::{BuildReport, Executor, ToolchainId};
use keel_store::{BlobDigest, Store};

use crate::commands::Context;
use crate::config::Tree;
use keel_rules::actions::{self, ActionConfig, ActionGraph};

/// How actions are executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// rpmbuild in a sandbox: real SRPMs and RPMs
    Rpmbuild,
    /// A deterministic stand-in whose outputs are a function of the inputs
    Test,
}

impl ExecutorKind {
    pub fn name(self) -> &'static str {
        match self {
            ExecutorKind::Rpmbuild => "rpmbuild",
            ExecutorKind::Test => "test",
        }
    }

    /// What every key of a build names as its executor: this kind and the isolation
    /// its builds run under. Results of the stand-in or of an unsandboxed build then never
    /// satisfy a sandboxed rpmbuild's lookup.
    pub fn id(self, unsandboxed: bool) -> keel_engine::ExecutorId {
        match self {
            ExecutorKind::Test => keel_engine::ExecutorId::new("test", "none"),
            ExecutorKind::Rpmbuild if unsandboxed => {
                keel_engine::ExecutorId::new("rpmbuild", "unsandboxed")
            }
            ExecutorKind::Rpmbuild => keel_engine::ExecutorId::new("rpmbuild", "sandboxed"),
        }
    }
}

/// What the build stamp compares to tell whether the toolchain changed (see
/// [`stamp`]): empty for the test executor, which builds in no toolchain; the host's
/// fingerprint (cached against its package database); a chroot directory's fingerprint;
/// and for a tarball or an RPM set a constant, their files being in the stamp itself.
pub fn toolchain_fingerprint(
    tree: &Tree,
    store_root: &std::path::Path,
    kind: ExecutorKind,
) -> anyhow::Result<String> {
    if kind != ExecutorKind::Rpmbuild {
        return Ok(String::new());
    }
    let tc = &tree.config.toolchain;
    if tc.rpms.is_some() {
        return Ok("rpm set (files in the stamp)".into());
    }
    let toolchain = match &tc.root {
        None => keel_toolchain::Toolchain::Host,
        Some(r) if tree.root.join(r).is_dir() => keel_toolchain::Toolchain::Dir(tree.root.join(r)),
        Some(_) => return Ok("tarball (file in the stamp)".into()),
    };
    let (_, fp) = toolchain
        .fingerprint_cached(store_root)
        .context("failed to fingerprint the toolchain")?;
    Ok(fp.to_hex())
}

/// A tree read and turned into actions, ready to plan, explain or build.
pub struct Session {
    pub loaded: crate::tree::LoadedTree,
    pub actions: ActionGraph,
    /// Specs left out of the plan, and why (the rest is planned).
    pub excluded: Vec<excluded::Exclusion>,
    /// The images this session builds (`image:<stem>` actions of `actions`).
    pub images: Vec<images::PlannedImage>,
    pub kind: ExecutorKind,
    /// Where results are published (`<tree>/out`).
    pub out_dir: std::path::PathBuf,
    toolchain: keel_toolchain::Toolchain,
    /// The package names of the toolchain manifest (what the build root promises).
    toolchain_packages: Vec<String>,
    /// Files the toolchain was made from (a tarball, RPMs), for the build stamp.
    pub toolchain_inputs: Vec<std::path::PathBuf>,
    /// How the actions were made (kept by [`state`]).
    pub action_config: ActionConfig,
    /// The warnings printed while loading (kept by [`state`]).
    pub warnings: Vec<String>,
    stamp_fingerprint: String,
    /// The actions the command line named (`None`: it named none, so everything).
    requested: Option<std::collections::BTreeSet<String>>,
    mirrors: Vec<String>,
    store_root: std::path::PathBuf,
    jobs: usize,
    unsandboxed: bool,
    /// How long one rpmbuild may run (`[build] timeout`).
    build_timeout: std::time::Duration,
}

/// What a build asks of the session besides the tree.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run rpmbuild without namespaces (warns on every build).
    pub unsandboxed: bool,
}

impl Session {
    /// Reads the tree and builds the action graph of `targets` (everything when empty).
    /// The tools' identities (the toolchain's fingerprint, the indexer's and the image
    /// tools' versions: a few processes each, the bulk of a fresh store's start) are found
    /// while the tree is read.
    pub fn load(
        ctx: &Context,
        tree: &Tree,
        store: &Store,
        kind: ExecutorKind,
        targets: &[String],
        opts: &Options,
    ) -> anyhow::Result<Session> {
        std::thread::scope(|s| {
            let fingerprint = s.spawn(|| toolchain_fingerprint(tree, store.root(), kind));
            let indexer = s.spawn(move || indexer_id(kind));
            let stems = || {
                tree.config
                    .images
                    .configs
                    .iter()
                    .filter_map(|c| c.file_stem())
            };
            let images = targets.is_empty()
                || targets.iter().any(|t| {
                    t.starts_with("image:") || stems().any(|s| s == std::ffi::OsStr::new(t))
                });
            if kind == ExecutorKind::Rpmbuild && images {
                s.spawn(|| images::probe_tools(tree));
            }
            Session::load_with(ctx, tree, store, kind, targets, opts, || {
                (join(fingerprint), join(indexer))
            })
        })
    }

    fn load_with(
        ctx: &Context,
        tree: &Tree,
        store: &Store,
        kind: ExecutorKind,
        targets: &[String],
        opts: &Options,
        tools: impl FnOnce() -> (anyhow::Result<String>, String),
    ) -> anyhow::Result<Session> {
        let mut loaded = crate::tree::load_with(tree, Some(store))?;
        if kind == ExecutorKind::Rpmbuild {
            learn_from_builds(store, &tree.root, &mut loaded.graph);
        }
        let pg = &loaded.graph;
        // Images: all of them for a whole-tree build, else those named; a build of
        // packages only does not read the image configs.
        let names_package = |t: &str| {
            let t = t
                .strip_prefix("rpm:")
                .or_else(|| t.strip_prefix("srpm:"))
                .unwrap_or(t);
            pg.find(t).is_some()
        };
        let mut planned = Vec::new();
        if targets.is_empty() || !targets.iter().all(|t| names_package(t)) {
            planned = images::plan(tree, store, &loaded, &kind.id(opts.unsandboxed))?;
            if !targets.is_empty() {
                planned.retain(|i| targets.iter().any(|t| *t == i.action || t == i.name()));
            }
        }
        let named_specs = targets_of_specs(&planned, targets);
        let mut spec_targets = named_specs.clone();
        if !targets.is_empty() {
            for i in &planned {
                spec_targets.extend(i.closure.specs.iter().map(|s| pg.specs[s.0].name.clone()));
            }
        }
        // Targets that name only images of external packages want no spec at all (an
        // empty list of targets would mean every spec).
        let wanted = if !targets.is_empty() && spec_targets.is_empty() {
            vec![false; pg.specs.len()]
        } else {
            actions::wanted_specs(pg, &spec_targets)?
        };
        // What `publish` copies when targets were named: the images named, not their
        // packages (they are inside); packages named, with everything they were built
        // with (what they need at run time is unknown until they were built: rpmbuild
        // generates Requires, and `keel run` takes its root from `out/`).
        let requested = if targets.is_empty() {
            None
        } else {
            let mut names = std::collections::BTreeSet::new();
            for t in targets {
                if let Some(i) = planned.iter().find(|i| *t == i.action || t == i.name()) {
                    names.insert(i.action.clone());
                }
            }
            let packages = if named_specs.is_empty() {
                Vec::new()
            } else {
                actions::wanted_specs(pg, &named_specs)?
            };
            for (i, wanted) in packages.iter().enumerate() {
                if *wanted {
                    names.insert(format!("rpm:{}", pg.specs[i].name));
                    names.insert(format!("srpm:{}", pg.specs[i].name));
                }
            }
            Some(names)
        };
        let mut warnings = Vec::new();
        for u in &pg.unresolved {
            if wanted[u.spec.0] {
                warnings.push(format!(
                    "{}: {} is provided by nothing in the tree or the toolchain",
                    pg.specs[u.spec.0].name, u.dep
                ));
            }
        }
        // A screenful however many: a tree of thousands of specs on a host toolchain has
        // thousands, and `keel graph` lists every one.
        const SHOWN: usize = 8;
        for w in warnings.iter().take(SHOWN) {
            tracing::warn!("{w}");
        }
        if warnings.len() > SHOWN {
            tracing::warn!(
                "… and {} more dependencies provided by nothing (all of them: `keel graph`)",
                warnings.len() - SHOWN
            );
        }
        let resolved = toolchains::resolve(tree, store)?;
        let toolchain_packages: Vec<String> = match &tree.config.toolchain.manifest {
            Some(m) => keel_rules::parse_manifest(&tree.root.join(m))?
                .into_iter()
                .map(|r| r.name)
                .collect(),
            None => Vec::new(),
        };
        let (stamp_fingerprint, indexer) = tools();
        let toolchain = resolved.toolchain.clone();
        let cfg = ActionConfig {
            root: tree.root.clone(),
            target_arch: pg.target_arch().to_owned(),
            macro_files: loaded.macro_files.clone(),
            defines: tree.config.specs.defines.clone(),
            toolchain: toolchain_id(tree, store, kind, &resolved)?,
            indexer,
            executor: kind.id(opts.unsandboxed),
            spec_defines: loaded.spec_defines.clone(),
            check: tree.config.build.check,
            build_root: tree.config.build.build_root(),
        };
        let mut actions =
            actions::action_graph(store, pg, &loaded.specs, &wanted, &cfg, targets.is_empty())?;
        let excluded = excluded::collect(&tree.root, &loaded, pg, &actions.excluded);
        for i in &planned {
            keel_rules::images::add_image(
                &mut actions.graph,
                pg,
                &actions.rpm_action,
                i.request.clone(),
                &i.closure,
            )?;
        }
        Ok(Session {
            loaded,
            actions,
            excluded,
            images: planned,
            kind,
            out_dir: tree.root.join("out"),
            toolchain,
            toolchain_packages,
            toolchain_inputs: resolved.inputs,
            action_config: cfg,
            warnings,
            stamp_fingerprint: stamp_fingerprint?,
            requested,
            mirrors: tree.config.sources.mirrors.clone(),
            store_root: store.root().to_owned(),
            jobs: ctx.jobs(),
            unsandboxed: opts.unsandboxed,
            build_timeout: std::time::Duration::from_secs(tree.config.build.timeout),
        })
    }

    /// The executor for this session's kind; `remote` supplies dependencies' outputs the
    /// store lacks (hits known only from the remote cache's record).
    pub fn executor(
        &self,
        remote: Option<std::sync::Arc<remote::SharedCache>>,
    ) -> anyhow::Result<Box<dyn Executor>> {
        match self.kind {
            ExecutorKind::Test => Ok(Box::new(keel_engine::testing::TestExecutor::new())),
            ExecutorKind::Rpmbuild => {
                let isolation = if self.unsandboxed {
                    tracing::warn!(
                        "building without a sandbox: builds see the whole machine and the network"
                    );
                    keel_toolchain::Isolation::Unsandboxed
                } else {
                    keel_toolchain::Isolation::Sandboxed
                };
                let fetcher = keel_sources::Fetcher::new(self.mirrors.clone())
                    .context("bad source mirror in keel.toml")?;
                let rpm = Box::new(exec::RpmExecutor {
                    toolchain: self.toolchain.clone(),
                    isolation,
                    fetcher,
                    layers: keel_toolchain::LayerCache::new(&self.store_root.join("layers")),
                    // Builds run side by side, each with a share of the cores: `-j 2`
                    // on two cores is two builds of `make -j1`, not two of `-j2`.
                    jobs_per_build: cores_per_build(self.jobs),
                    timeout: self.build_timeout,
                    log_dir: self.store_root.join("logs"),
                    spec_dirs: self
                        .loaded
                        .graph
                        .specs
                        .iter()
                        .map(|n| {
                            let dir = n.path.parent().unwrap_or(std::path::Path::new("."));
                            (n.name.clone(), dir.to_owned())
                        })
                        .collect(),
                    needs: preflight::base_needs(&self.toolchain_packages),
                });
                // The external RPMs are the `.rpm` files among the images' inputs.
                let external = self
                    .image_inputs()
                    .filter(|p| p.extension().is_some_and(|x| x == "rpm"))
                    .filter_map(|p| {
                        let name = p.file_name()?.to_string_lossy().into_owned();
                        Some((name, p.clone()))
                    })
                    .collect();
                Ok(Box::new(images::ImageExecutor {
                    inner: rpm,
                    remote,
                    external,
                }))
            }
        }
    }

    /// The tree's files the images were read from (configs, package lists, scripts).
    pub fn image_inputs(&self) -> impl Iterator<Item = &std::path::PathBuf> {
        self.images.iter().flat_map(|i| &i.files)
    }

    /// The fingerprint this session's builds are keyed with (see [`toolchain_fingerprint`]).
    pub fn toolchain_fingerprint(&self) -> String {
        self.stamp_fingerprint.clone()
    }

    /// Whether `publish` copies `action`'s outputs to `out/`: packages, the repository and
    /// images, of everything or of what the command line named (not of what that needed:
    /// `keel build image:X` publishes the image, not its packages, which a remote cache
    /// then never has to send).
    fn publishes(&self, action: &keel_engine::Action) -> bool {
        use keel_engine::ActionKind as K;
        let kind = matches!(
            action.kind(),
            K::RpmBuild | K::SrpmPack | K::RepoIndex | K::Image
        );
        kind && self
            .requested
            .as_ref()
            .is_none_or(|r| r.contains(&action.name))
    }

    /// The keys of the results [`Session::publish`] reads, for fetching them first.
    pub fn publish_keys(&self, report: &BuildReport) -> Vec<keel_store::ActionKey> {
        if self.kind != ExecutorKind::Rpmbuild {
            return Vec::new();
        }
        self.actions
            .graph
            .iter()
            .filter(|(_, a)| self.publishes(a))
            .filter_map(|(id, _)| report.get(id).and_then(|r| r.key))
            .collect()
    }

    /// Copies the built packages and the repository to the tree's `out/`: `RPMS/<arch>/`,
    /// `SRPMS/`, and `RPMS/repodata/` when the whole tree was built (only what the command
    /// line named, when it named something: see `publishes`). Packages no longer
    /// produced are removed from there; unchanged files are not rewritten.
    /// Returns the files published.
    pub fn publish(
        &self,
        store: &Store,
        report: &BuildReport,
    ) -> anyhow::Result<Vec<std::path::PathBuf>> {
        if self.kind != ExecutorKind::Rpmbuild {
            return Ok(Vec::new());
        }
        let rpms = self.out_dir.join("RPMS");
        let srpms = self.out_dir.join("SRPMS");
        let mut wanted: std::collections::BTreeSet<std::path::PathBuf> = Default::default();
        let mut repodata = None;
        // What to write, gathered first and then written side by side: a large image is
        // not waited for by the packages.
        enum Job {
            Blob(keel_store::BlobDigest, std::path::PathBuf),
            Tree(keel_store::TreeDigest, std::path::PathBuf),
            Image(keel_store::ActionRecord, std::path::PathBuf),
        }
        let mut jobs = Vec::new();
        for (id, action) in self.actions.graph.iter() {
            if !self.publishes(action) {
                continue;
            }
            let dest_dir = match action.kind() {
                keel_engine::ActionKind::RpmBuild => None,
                keel_engine::ActionKind::SrpmPack => Some(srpms.clone()),
                keel_engine::ActionKind::RepoIndex => {
                    if let Some(rec) = record_of(store, report, id)? {
                        for o in &rec.outputs {
                            if let keel_store::ObjectRef::Tree(t) = &o.object {
                                let dest = rpms.join("repodata");
                                repodata = Some(dest.clone());
                                if dest.exists() {
                                    std::fs::remove_dir_all(&dest).with_context(|| {
                                        format!("failed to replace {}", dest.display())
                                    })?;
                                }
                                jobs.push(Job::Tree(*t, dest));
                            }
                        }
                    }
                    continue;
                }
                keel_engine::ActionKind::Image => {
                    if let Some(rec) = record_of(store, report, id)? {
                        let stem = action.name.strip_prefix("image:").unwrap_or(&action.name);
                        jobs.push(Job::Image(rec, self.out_dir.join("images").join(stem)));
                    }
                    continue;
                }
                _ => continue,
            };
            let Some(rec) = record_of(store, report, id)? else {
                continue;
            };
            for o in &rec.outputs {
                let keel_store::ObjectRef::Blob(d) = &o.object else {
                    continue;
                };
                if !o.name.ends_with(".rpm") {
                    continue;
                }
                let dir = match &dest_dir {
                    Some(d) => d.clone(),
                    None => rpms.join(exec::rpm_arch(&o.name)),
                };
                let dest = dir.join(&o.name);
                wanted.insert(dest.clone());
                if store.file_digest(&dest).is_ok_and(|have| have == *d) {
                    continue;
                }
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
                let _ = std::fs::remove_file(&dest);
                jobs.push(Job::Blob(*d, dest));
            }
        }
        use rayon::prelude::*;
        let images_published: Vec<Vec<std::path::PathBuf>> = jobs
            .par_iter()
            .map(|job| match job {
                Job::Blob(d, dest) => Ok(store
                    .materialize_blob(d, dest, 0o644)
                    .map(|()| Vec::new())?),
                Job::Tree(t, dest) => Ok(store.materialize_tree(t, dest).map(|()| Vec::new())?),
                Job::Image(rec, dir) => images::publish(store, rec, dir),
            })
            .collect::<anyhow::Result<_>>()?;
        // Only a build of everything knows which packages are stale.
        if self.actions.repo.is_some() {
            for dir in [&rpms, &srpms] {
                for f in walk_rpms(dir) {
                    if !wanted.contains(&f) {
                        let _ = std::fs::remove_file(&f);
                    }
                }
            }
        }
        let mut published: Vec<std::path::PathBuf> = wanted.into_iter().collect();
        if let Some(r) = repodata {
            stamp::walk(&[r], &mut published);
        }
        published.extend(images_published.into_iter().flatten());
        Ok(published)
    }
}

/// The targets that name packages or specs rather than images.
fn targets_of_specs(planned: &[images::PlannedImage], targets: &[String]) -> Vec<String> {
    targets
        .iter()
        .filter(|t| !images::is_image_target(planned, t))
        .cloned()
        .collect()
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Where the keys of a tree's last `rpm:` results are kept for [`learn_from_builds`]: one
/// file per tree (by its root), in the store's `builds/`.
fn learned_path(store_root: &std::path::Path, tree_root: &std::path::Path) -> std::path::PathBuf {
    per_tree_path(store_root, tree_root, "learned")
}

/// The cores each of `jobs` builds running side by side gets (`%_smp_build_ncpus`): the
/// machine's, shared, at least one.
pub fn cores_per_build(jobs: usize) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores / jobs.max(1)).unwrap_or(1).max(1)
}

/// `<store>/builds/<kind>-<tree>`: a file kept for one tree, named by its root.
pub fn per_tree_path(
    store_root: &std::path::Path,
    tree_root: &std::path::Path,
    kind: &str,
) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt as _;
    // `-C tree` gives a relative root: the same tree by any path is one tree.
    let root = std::fs::canonicalize(tree_root).unwrap_or_else(|_| tree_root.to_owned());
    let h = BlobDigest::of_bytes(root.as_os_str().as_bytes());
    store_root
        .join("builds")
        .join(format!("{kind}-{}", &h.to_hex()[..16]))
}

fn load_learned(path: &std::path::Path) -> BTreeMap<String, keel_store::ActionKey> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Keeps the key of every `rpm:` action this build of the tree at `tree_root` ended
/// with, for the next graph of this tree to learn from (see [`learn_from_builds`]). A
/// failure to save is a warning: the next graph then learns from older builds.
pub fn save_learned(
    store_root: &std::path::Path,
    tree_root: &std::path::Path,
    graph: &keel_engine::Graph,
    report: &BuildReport,
) {
    let path = learned_path(store_root, tree_root);
    let mut keys = load_learned(&path);
    for (id, action) in graph.iter() {
        if action.kind() != keel_engine::ActionKind::RpmBuild {
            continue;
        }
        if let Some(key) = report.get(id).and_then(|r| r.key) {
            keys.insert(action.name.clone(), key);
        }
    }
    let tmp = path.with_extension("tmp");
    let saved = path
        .parent()
        .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
        && serde_json::to_vec(&keys)
            .ok()
            .is_some_and(|b| std::fs::write(&tmp, b).is_ok())
        && std::fs::rename(&tmp, &path).is_ok();
    if !saved {
        tracing::warn!(
            "could not save what this build learned to {}: the next graph learns from older builds",
            path.display()
        );
    }
}

/// Teaches the graph what the packages' last builds really provided (sonames, pkgconfig,
/// language provides, files), so that dependencies only built RPMs satisfy resolve.
///
/// Only this tree's builds count: the results are found through the keys its own last
/// builds ended with ([`save_learned`]), never by action name across the store, where
/// another tree's package of the same name would change this tree's graph.
fn learn_from_builds(
    store: &Store,
    tree_root: &std::path::Path,
    pg: &mut keel_rules::PackageGraph,
) {
    let keys = load_learned(&learned_path(store.root(), tree_root));
    let mut learned_any = false;
    for i in 0..pg.specs.len() {
        let name = format!("rpm:{}", pg.specs[i].name);
        let Some(rec) = keys.get(&name).and_then(|k| store.ac_get(k).ok().flatten()) else {
            continue;
        };
        let Some(blob) = rec.outputs.iter().find_map(|o| match &o.object {
            keel_store::ObjectRef::Blob(d) if o.name == exec::PROVIDES_OUTPUT => Some(*d),
            _ => None,
        }) else {
            continue;
        };
        let Some(list) = store
            .read_blob(&blob)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<exec::Learned>>(&b).ok())
        else {
            continue;
        };
        for l in list {
            let Some(bin) = pg.specs[i]
                .packages
                .iter()
                .copied()
                .find(|b| pg.bins[b.0].name == l.package)
            else {
                continue;
            };
            let provides: Vec<keel_specs::deps::Dep> = l
                .provides
                .into_iter()
                .map(|(name, flags, evr)| keel_specs::deps::Dep {
                    name,
                    flags,
                    evr,
                    rich: None,
                })
                .collect();
            pg.index.learn(bin, &provides, &l.files);
            learned_any = true;
        }
    }
    if learned_any {
        pg.resolve();
    }
}

/// The record an action of this build ended with.
fn record_of(
    store: &Store,
    report: &BuildReport,
    id: keel_engine::ActionId,
) -> anyhow::Result<Option<keel_store::ActionRecord>> {
    let Some(key) = report.get(id).and_then(|r| r.key) else {
        return Ok(None);
    };
    Ok(store.ac_get(&key)?)
}

/// The `.rpm` files in `dir` and its immediate subdirectories.
fn walk_rpms(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            for f in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                if f.path().extension().is_some_and(|x| x == "rpm") {
                    out.push(f.path());
                }
            }
        } else if p.extension().is_some_and(|x| x == "rpm") {
            out.push(p);
        }
    }
    out
}

/// The build root's identity: the toolchain manifest's bytes and, for real builds, the
/// toolchain's fingerprint (for the host: its package list and tool versions).
fn toolchain_id(
    tree: &Tree,
    store: &Store,
    kind: ExecutorKind,
    resolved: &toolchains::Resolved,
) -> anyhow::Result<ToolchainId> {
    let toolchain = &resolved.toolchain;
    let mut parts: BTreeMap<&str, BlobDigest> = BTreeMap::new();
    if let Some(m) = &tree.config.toolchain.manifest {
        let path = tree.root.join(m);
        parts.insert(
            "manifest",
            actions::stored_file(store, &path)
                .with_context(|| format!("toolchain manifest {}", path.display()))?,
        );
    }
    let mut name = toolchain.name();
    if kind == ExecutorKind::Rpmbuild {
        let fp = match &resolved.id {
            Some((n, fp)) => {
                name = n.clone();
                *fp
            }
            None => {
                toolchain
                    .fingerprint_cached(store.root())
                    .context("failed to fingerprint the toolchain")?
                    .1
            }
        };
        parts.insert("toolchain", fp);
    }
    let text: String = parts
        .iter()
        .map(|(k, v)| format!("{k} {}\n", v.to_hex()))
        .collect();
    Ok(ToolchainId {
        name,
        fingerprint: store.put_bytes(text.as_bytes())?,
    })
}

/// How keel runs the indexer (`exec.rs`'s `repo`): part of the indexer's identity, so a
/// change of recipe re-indexes (2: package files' times fixed at 0).
const INDEX_RECIPE: &str = "recipe 2";

/// The indexing tool's identity, version included (a new createrepo_c rebuilds the
/// repository metadata), and keel's recipe for it.
fn indexer_id(kind: ExecutorKind) -> String {
    match kind {
        ExecutorKind::Test => "test".to_owned(),
        ExecutorKind::Rpmbuild => format!("{}; {INDEX_RECIPE}", createrepo_version()),
    }
}

fn createrepo_version() -> String {
    std::process::Command::new("createrepo_c")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "createrepo_c (version unknown)".to_owned())
}

/// Names the parts of the build root behind each "toolchain changed" among `reasons`:
/// `manifest` when the tree's toolchain manifest changed, and for the host's the parts
/// that differ (`packages`, `/usr/lib/rpm`, `gcc`…), from the descriptions the store
/// keeps beside its fingerprint cache. A toolchain's fingerprint is the stored text
/// [`toolchain_id`] made, which names the digests it combines. Each pair of fingerprints
/// is looked up once.
pub fn name_toolchain_parts<'a>(
    store: &Store,
    reasons: impl IntoIterator<Item = &'a mut keel_engine::DirtyReason>,
) {
    type Memo = std::collections::HashMap<(BlobDigest, BlobDigest), Option<Vec<String>>>;
    let memo = std::cell::RefCell::new(Memo::new());
    let combined = |d: &BlobDigest| -> Option<BTreeMap<String, String>> {
        let text = String::from_utf8(store.read_blob(d).ok()?).ok()?;
        Some(
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    };
    let parts = |o: &BlobDigest, n: &BlobDigest| -> Option<Vec<String>> {
        let (old, new) = (combined(o)?, combined(n)?);
        let mut named = Vec::new();
        if old.get("manifest") != new.get("manifest") {
            named.push("manifest".to_owned());
        }
        if let (Some(a), Some(b)) = (old.get("toolchain"), new.get("toolchain"))
            && a != b
        {
            let (a, b) = (
                BlobDigest::parse_hex(a).ok()?,
                BlobDigest::parse_hex(b).ok()?,
            );
            named.extend(
                keel_toolchain::toolchain::changed_parts_between(store.root(), &a, &b)
                    .unwrap_or_else(|| vec!["the build root".to_owned()]),
            );
        }
        (!named.is_empty()).then_some(named)
    };
    for r in reasons {
        r.name_toolchain_parts(&|o, n| {
            memo.borrow_mut()
                .entry((*o, *n))
                .or_insert_with(|| parts(o, n))
                .clone()
        });
    }
}

/// The reasons of a decision (none when up to date).
pub fn reasons_mut(d: &mut keel_engine::Decision) -> &mut [keel_engine::DirtyReason] {
    match d {
        keel_engine::Decision::UpToDate => &mut [],
        keel_engine::Decision::WillRun { reasons } | keel_engine::Decision::MayRun { reasons } => {
            reasons
        }
    }
}
