//! Why an action runs: [`DirtyReason`], computed by comparing the key inputs of this build
//! with the ones stored beside the previous build of the same target; the dry-run
//! [`plan`] and [`explain`] built on it.

use std::collections::BTreeMap;
use std::fmt;

use keel_store::{ActionKey, ActionRecord, BlobDigest, Store};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::graph::{ActionId, Graph};
use crate::keys::{ActionKind, Evr, KeyInputs, KeyRecord, OutputDigests, compute_key};

/// How a named input changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Modified,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Modified => "changed",
        }
    }
}

/// One reason an action is not up to date. Displayed as a plain phrase
/// ("spec changed (Release 3 -> 4)").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DirtyReason {
    /// No build of this target is known.
    NeverBuilt,
    /// A previous build is known but its record is gone or unreadable, so what changed
    /// cannot be said.
    PreviousRecordLost,
    /// The inputs are exactly those of the previous build, but its cached result is gone.
    OutputsLost,
    /// keel changed how this kind of action is keyed.
    KeyVersionChanged {
        kind: ActionKind,
        old: u32,
        new: u32,
    },
    /// The spec file's bytes changed; `old`/`new` are the evaluated EVRs.
    SpecChanged {
        old: Evr,
        new: Evr,
    },
    /// The evaluated EVR changed while the spec did not (a macro or define did it).
    EvrChanged {
        old: Evr,
        new: Evr,
    },
    /// A source or patch (fetched or in the tree).
    SourceChanged {
        name: String,
        change: Change,
    },
    MacroFileChanged {
        name: String,
        change: Change,
    },
    DefineChanged {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// The build root changed (old and new name with a short fingerprint).
    ToolchainChanged {
        old: String,
        new: String,
        /// The two whole fingerprints, by which a caller that keeps toolchain
        /// descriptions can name what changed ([`DirtyReason::name_toolchain_parts`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprints: Option<(BlobDigest, BlobDigest)>,
        /// The parts of the build root that differ (`packages`, `/usr/lib/rpm`, `gcc`…),
        /// when they could be named.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        parts: Vec<String>,
    },
    EnvChanged {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// Any other input, by its field name.
    InputChanged {
        field: String,
        old: String,
        new: String,
    },
    /// A dependency was rebuilt and its output differs from the one this action last used.
    DependencyOutputChanged {
        dep: String,
    },
    /// A dependency that was not there before.
    DependencyAdded {
        dep: String,
    },
    /// A dependency that is gone.
    DependencyRemoved {
        dep: String,
    },
    /// Dry run only: a dependency will run first, and this action reruns only if that
    /// changes its output.
    DependencyPending {
        dep: String,
    },
    /// The key changed but no input did: a key encoding changed without a version bump.
    /// Always a bug in keel.
    Unexplained,
}

impl DirtyReason {
    /// Whether this reason is only a consequence of a dependency's rebuild (a cascade),
    /// rather than a change to the action's own inputs (a root).
    pub fn is_cascade(&self) -> bool {
        matches!(
            self,
            DirtyReason::DependencyOutputChanged { .. } | DirtyReason::DependencyPending { .. }
        )
    }
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("unset")
}

fn evr_delta(old: &Evr, new: &Evr) -> String {
    let mut parts = Vec::new();
    if old.epoch != new.epoch {
        let e = |x: Option<u32>| x.map_or("none".to_owned(), |e| e.to_string());
        parts.push(format!("Epoch {} -> {}", e(old.epoch), e(new.epoch)));
    }
    if old.version != new.version {
        parts.push(format!("Version {} -> {}", old.version, new.version));
    }
    if old.release != new.release {
        parts.push(format!("Release {} -> {}", old.release, new.release));
    }
    parts.join(", ")
}

impl DirtyReason {
    /// Names the parts of the build root behind a "toolchain changed", with `parts`
    /// (given the old and new fingerprints; the engine does not know where toolchain
    /// descriptions are kept). Any other reason is left as it is.
    pub fn name_toolchain_parts(
        &mut self,
        parts: &dyn Fn(&BlobDigest, &BlobDigest) -> Option<Vec<String>>,
    ) {
        if let DirtyReason::ToolchainChanged {
            fingerprints: Some((old, new)),
            parts: named,
            ..
        } = self
            && named.is_empty()
            && let Some(found) = parts(old, new)
        {
            *named = found;
        }
    }
}

impl fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirtyReason::NeverBuilt => f.write_str("never built"),
            DirtyReason::PreviousRecordLost => {
                f.write_str("the previous build's record is gone, so what changed is unknown")
            }
            DirtyReason::OutputsLost => {
                f.write_str("inputs unchanged, but the cached result is gone from the store")
            }
            DirtyReason::KeyVersionChanged { kind, old, new } => {
                write!(f, "keel's key format for {kind} changed (v{old} -> v{new})")
            }
            DirtyReason::SpecChanged { old, new } => {
                if old == new {
                    write!(f, "spec changed ({new} unchanged)")
                } else {
                    write!(f, "spec changed ({})", evr_delta(old, new))
                }
            }
            DirtyReason::EvrChanged { old, new } => write!(
                f,
                "evaluated version changed without a spec edit ({})",
                evr_delta(old, new)
            ),
            DirtyReason::SourceChanged { name, change } => {
                write!(f, "source {name} {}", change.verb())
            }
            DirtyReason::MacroFileChanged { name, change } => {
                write!(f, "macro file {name} {}", change.verb())
            }
            DirtyReason::DefineChanged { name, old, new } => {
                write!(f, "define {name} changed ({} -> {})", opt(old), opt(new))
            }
            DirtyReason::ToolchainChanged {
                old, new, parts, ..
            } if parts.is_empty() => {
                write!(f, "toolchain changed ({old} -> {new})")
            }
            DirtyReason::ToolchainChanged {
                old, new, parts, ..
            } => write!(
                f,
                "toolchain changed ({old} -> {new}: {} changed)",
                parts.join(", ")
            ),
            DirtyReason::EnvChanged { name, old, new } => write!(
                f,
                "environment variable {name} changed ({} -> {})",
                opt(old),
                opt(new)
            ),
            DirtyReason::InputChanged { field, old, new } => {
                write!(f, "{field} changed ({old} -> {new})")
            }
            DirtyReason::DependencyOutputChanged { dep } => {
                write!(f, "rebuilt because {dep}'s output changed")
            }
            DirtyReason::DependencyAdded { dep } => write!(f, "new dependency on {dep}"),
            DirtyReason::DependencyRemoved { dep } => write!(f, "no longer depends on {dep}"),
            DirtyReason::DependencyPending { dep } => {
                write!(
                    f,
                    "{dep} runs first; this reruns only if its output changes"
                )
            }
            DirtyReason::Unexplained => {
                f.write_str("key changed with identical inputs (a keel bug: report it)")
            }
        }
    }
}

struct Diff(Vec<DirtyReason>);

impl Diff {
    fn field(&mut self, field: &str, old: &str, new: &str) {
        if old != new {
            self.0.push(DirtyReason::InputChanged {
                field: field.to_owned(),
                old: old.to_owned(),
                new: new.to_owned(),
            });
        }
    }

    fn blobs(
        &mut self,
        old: &BTreeMap<String, BlobDigest>,
        new: &BTreeMap<String, BlobDigest>,
        reason: impl Fn(String, Change) -> DirtyReason,
    ) {
        for (name, change) in map_changes(old, new) {
            self.0.push(reason(name, change));
        }
    }

    fn strings(
        &mut self,
        old: &BTreeMap<String, String>,
        new: &BTreeMap<String, String>,
        reason: impl Fn(String, Option<String>, Option<String>) -> DirtyReason,
    ) {
        for (name, _) in map_changes(old, new) {
            let o = old.get(&name).cloned();
            let n = new.get(&name).cloned();
            self.0.push(reason(name, o, n));
        }
    }

    /// `[build]`'s build root settings: `sh` shows as `/bin/sh`, an unset one as the
    /// toolchain's own.
    fn build_root(&mut self, old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) {
        self.strings(old, new, |name, o, n| {
            let show = |v: Option<String>| v.unwrap_or_else(|| "the toolchain's".into());
            DirtyReason::InputChanged {
                field: if name == "sh" { "/bin/sh".into() } else { name },
                old: show(o),
                new: show(n),
            }
        });
    }

    fn macro_files(&mut self, old: &[(String, BlobDigest)], new: &[(String, BlobDigest)]) {
        let map = |v: &[(String, BlobDigest)]| -> BTreeMap<String, BlobDigest> {
            v.iter().cloned().collect()
        };
        let (o, n) = (map(old), map(new));
        self.blobs(&o, &n, |name, change| DirtyReason::MacroFileChanged {
            name,
            change,
        });
        if o == n && old != new {
            let names = |v: &[(String, BlobDigest)]| {
                v.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            self.field("macro file order", &names(old), &names(new));
        }
    }

    fn toolchain(&mut self, old: &crate::keys::ToolchainId, new: &crate::keys::ToolchainId) {
        if old != new {
            let show =
                |t: &crate::keys::ToolchainId| format!("{} {}", t.name, short(&t.fingerprint));
            self.0.push(DirtyReason::ToolchainChanged {
                old: show(old),
                new: show(new),
                fingerprints: Some((old.fingerprint, new.fingerprint)),
                parts: Vec::new(),
            });
        }
    }

    fn spec(&mut self, old: (&BlobDigest, &Evr), new: (&BlobDigest, &Evr)) {
        let (o, n) = (old.1.clone(), new.1.clone());
        if old.0 != new.0 {
            self.0.push(DirtyReason::SpecChanged { old: o, new: n });
        } else if o != n {
            self.0.push(DirtyReason::EvrChanged { old: o, new: n });
        }
    }
}

fn map_changes<V: PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
) -> Vec<(String, Change)> {
    let mut out = Vec::new();
    for (k, v) in new {
        match old.get(k) {
            None => out.push((k.clone(), Change::Added)),
            Some(o) if o != v => out.push((k.clone(), Change::Modified)),
            Some(_) => {}
        }
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            out.push((k.clone(), Change::Removed));
        }
    }
    out.sort();
    out
}

fn short(d: &BlobDigest) -> String {
    d.short()
}

/// What changed from `old` to `new` (pure). `pending` names dependencies whose output is
/// not known yet (dry run): they are reported as [`DirtyReason::DependencyPending`] and
/// not as added or removed.
pub fn compute_reasons(old: &KeyRecord, new: &KeyRecord, pending: &[String]) -> Vec<DirtyReason> {
    let kind = new.inputs.kind();
    if old.inputs.kind() != kind || old.version != new.version {
        return vec![DirtyReason::KeyVersionChanged {
            kind,
            old: old.version,
            new: new.version,
        }];
    }
    let mut d = Diff(Vec::new());
    match (&old.inputs, &new.inputs) {
        (KeyInputs::SourceFetch(o), KeyInputs::SourceFetch(n)) => {
            d.field("source file name", &o.file_name, &n.file_name);
            if o.sha256 != n.sha256 {
                d.0.push(DirtyReason::SourceChanged {
                    name: n.file_name.clone(),
                    change: Change::Modified,
                });
            }
        }
        (KeyInputs::SrpmPack(o), KeyInputs::SrpmPack(n)) => {
            d.field("package name", &o.name, &n.name);
            d.spec((&o.spec, &o.evr), (&n.spec, &n.evr));
            d.blobs(&o.files, &n.files, |name, change| {
                DirtyReason::SourceChanged { name, change }
            });
            d.macro_files(&o.macro_files, &n.macro_files);
            d.strings(&o.defines, &n.defines, |name, old, new| {
                DirtyReason::DefineChanged { name, old, new }
            });
            d.field("target arch", &o.target_arch, &n.target_arch);
            d.toolchain(&o.toolchain, &n.toolchain);
            d.build_root(&o.build_root, &n.build_root);
        }
        (KeyInputs::RpmBuild(o), KeyInputs::RpmBuild(n)) => {
            d.field("package name", &o.name, &n.name);
            d.spec((&o.spec, &o.evr), (&n.spec, &n.evr));
            d.macro_files(&o.macro_files, &n.macro_files);
            d.strings(&o.defines, &n.defines, |name, old, new| {
                DirtyReason::DefineChanged { name, old, new }
            });
            d.field("target arch", &o.target_arch, &n.target_arch);
            d.toolchain(&o.toolchain, &n.toolchain);
            d.strings(&o.env, &n.env, |name, old, new| DirtyReason::EnvChanged {
                name,
                old,
                new,
            });
            let check = |c: bool| if c { "run" } else { "skipped" };
            d.field("%check", check(o.check), check(n.check));
            d.build_root(&o.build_root, &n.build_root);
        }
        (KeyInputs::RepoIndex(o), KeyInputs::RepoIndex(n)) => {
            d.field("repository name", &o.name, &n.name);
            d.field("target arch", &o.target_arch, &n.target_arch);
            d.field("indexer", &o.indexer, &n.indexer);
            d.strings(&o.options, &n.options, |name, old, new| {
                DirtyReason::InputChanged {
                    field: format!("indexer option {name}"),
                    old: opt(&old).to_owned(),
                    new: opt(&new).to_owned(),
                }
            });
        }
        (KeyInputs::Image(o), KeyInputs::Image(n)) => {
            d.field("image name", &o.name, &n.name);
            d.field("image config", &short(&o.config), &short(&n.config));
            for (name, _) in map_changes(&o.package_lists, &n.package_lists) {
                let show = |m: &BTreeMap<String, BlobDigest>| {
                    m.get(&name).map_or_else(|| "absent".to_owned(), short)
                };
                d.0.push(DirtyReason::InputChanged {
                    field: format!("package list {name}"),
                    old: show(&o.package_lists),
                    new: show(&n.package_lists),
                });
            }
            d.field("image tools", &short(&o.tools), &short(&n.tools));
            d.field("image format", &o.format, &n.format);
            d.field("target arch", &o.target_arch, &n.target_arch);
            d.field("image system config", &o.system, &n.system);
            for (what, old, new) in [
                ("post-install script", &o.scripts, &n.scripts),
                ("external package", &o.external, &n.external),
            ] {
                for (name, _) in map_changes(old, new) {
                    let show = |m: &BTreeMap<String, BlobDigest>| {
                        m.get(&name).map_or_else(|| "absent".to_owned(), short)
                    };
                    d.0.push(DirtyReason::InputChanged {
                        field: format!("{what} {name}"),
                        old: show(old),
                        new: show(new),
                    });
                }
            }
            d.strings(&o.env, &n.env, |name, old, new| DirtyReason::EnvChanged {
                name,
                old,
                new,
            });
        }
        _ => unreachable!("kinds compared equal above"),
    }
    let executor = |i: &KeyInputs| match i {
        KeyInputs::SourceFetch(i) => i.executor.to_string(),
        KeyInputs::SrpmPack(i) => i.executor.to_string(),
        KeyInputs::RpmBuild(i) => i.executor.to_string(),
        KeyInputs::RepoIndex(i) => i.executor.to_string(),
        KeyInputs::Image(i) => i.executor.to_string(),
    };
    d.field("executor", &executor(&old.inputs), &executor(&new.inputs));
    for (dep, change) in map_changes(&old.deps, &new.deps) {
        if pending.contains(&dep) {
            continue;
        }
        d.0.push(match change {
            Change::Added => DirtyReason::DependencyAdded { dep },
            Change::Removed => DirtyReason::DependencyRemoved { dep },
            Change::Modified => DirtyReason::DependencyOutputChanged { dep },
        });
    }
    for dep in pending {
        d.0.push(DirtyReason::DependencyPending { dep: dep.clone() });
    }
    if d.0.is_empty() && old.compute_key() != new.compute_key() {
        d.0.push(DirtyReason::Unexplained);
    }
    d.0
}

/// The previous build of a target, as the store remembers it.
#[derive(Debug, Clone)]
pub(crate) struct Previous {
    pub key: ActionKey,
    /// `None` when the record is gone or damaged.
    pub record: Option<ActionRecord>,
}

impl Previous {
    pub fn output(&self) -> Option<OutputDigests> {
        self.record.as_ref().map(|r| OutputDigests::of(&r.outputs))
    }
}

/// Reads what the store remembers of the previous build of `target`. A failed read is
/// no previous build, with a warning: explanations degrade, results do not.
pub(crate) fn load_previous(store: &Store, target: &str) -> Option<Previous> {
    let key = match store.target_get(target) {
        Ok(k) => k?,
        Err(e) => {
            tracing::warn!(target, error = %e, "cannot read the target index");
            return None;
        }
    };
    let record = store.ac_get(&key).unwrap_or_else(|e| {
        tracing::warn!(target, error = %e, "cannot read the previous record");
        None
    });
    Some(Previous { key, record })
}

/// Reads the previous build of every action in `mask`, on `threads` threads.
pub(crate) fn load_all_previous(
    store: &Store,
    graph: &Graph,
    mask: &[bool],
    threads: usize,
) -> Vec<Option<Previous>> {
    let ids: Vec<ActionId> = graph.ids().filter(|id| mask[id.index()]).collect();
    let mut out: Vec<Option<Previous>> = vec![None; graph.len()];
    if ids.is_empty() {
        return out;
    }
    let chunk = ids.len().div_ceil(threads.max(1));
    let loaded: Vec<Vec<(ActionId, Option<Previous>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|id| (*id, load_previous(store, &graph.action(*id).name)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("loading previous records does not panic"))
            .collect()
    });
    for (id, p) in loaded.into_iter().flatten() {
        out[id.index()] = p;
    }
    out
}

/// Why an action whose current key is `key` is not a cache hit (pure).
pub(crate) fn reasons_against(
    previous: Option<&Previous>,
    current: &KeyRecord,
    key: &ActionKey,
    pending: &[String],
) -> Vec<DirtyReason> {
    let Some(prev) = previous else {
        return vec![DirtyReason::NeverBuilt];
    };
    if prev.key == *key {
        return vec![DirtyReason::OutputsLost];
    }
    match prev
        .record
        .as_ref()
        .and_then(|r| KeyRecord::from_json(&r.inputs_json))
    {
        Some(old) => compute_reasons(&old, current, pending),
        None => vec![DirtyReason::PreviousRecordLost],
    }
}

/// What a build would do with one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Its key is in the cache.
    UpToDate,
    /// It will run, for these reasons.
    WillRun { reasons: Vec<DirtyReason> },
    /// Its own inputs are unchanged but dependencies will run first; it runs only if one
    /// of their outputs changes (early cutoff may spare it).
    MayRun { reasons: Vec<DirtyReason> },
}

/// One action in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    #[serde(skip)]
    pub id: Option<ActionId>,
    pub name: String,
    pub kind: ActionKind,
    pub decision: Decision,
}

/// What a build would do, without doing it (`keel build --dry-run`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Every action considered, dependencies first.
    pub actions: Vec<PlannedAction>,
}

impl Plan {
    /// The actions that will or may run.
    pub fn to_run(&self) -> impl Iterator<Item = &PlannedAction> {
        self.actions
            .iter()
            .filter(|a| a.decision != Decision::UpToDate)
    }
}

/// Decides, without running anything, what a build of `targets` (every action if empty)
/// would do and why.
pub fn plan(store: &Store, graph: &Graph, targets: &[ActionId]) -> Result<Plan, EngineError> {
    let mask = if targets.is_empty() {
        vec![true; graph.len()]
    } else {
        graph.closure(targets)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut previous = load_all_previous(store, graph, &mask, threads);
    plan_with(store, graph, &mask, None, |id| previous[id.index()].take())
}

/// What a caller kept of an action from the last successful build of the same graph
/// (see [`plan_known`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The action's key and output digests in that build.
    pub key: ActionKey,
    pub output: OutputDigests,
    /// Whether the action's own inputs are those it had then (its dependencies' outputs
    /// may still differ).
    pub same_inputs: bool,
}

/// [`plan`] of every action, given what the last successful build of this graph left
/// (`known`, indexed by id): an action whose own inputs and dependencies' outputs are as
/// they were is up to date without reading anything, and the previous record is read only
/// for an action that will or may run, for its reasons. The caller vouches that the
/// results `known` names are still in the store (nothing but `keel store gc` removes
/// them, and it forgets what callers keep). The plan is the one [`plan`] makes.
pub fn plan_known(
    store: &Store,
    graph: &Graph,
    known: &[Option<Known>],
) -> Result<Plan, EngineError> {
    assert_eq!(known.len(), graph.len(), "one `Known` slot per action");
    let mask = vec![true; graph.len()];
    plan_with(store, graph, &mask, Some(known), |id| {
        load_previous(store, &graph.action(id).name)
    })
}

fn plan_with(
    store: &Store,
    graph: &Graph,
    mask: &[bool],
    known: Option<&[Option<Known>]>,
    mut previous_of: impl FnMut(ActionId) -> Option<Previous>,
) -> Result<Plan, EngineError> {
    let kept = |id: ActionId| known.and_then(|k| k[id.index()]);
    // Known output digests of actions that are up to date; `None` for those that will or
    // may run.
    let mut outputs: Vec<Option<OutputDigests>> = vec![None; graph.len()];
    let mut plan = Plan::default();
    for (id, action) in graph.iter() {
        if !mask[id.index()] {
            continue;
        }
        let planned = |decision| PlannedAction {
            id: Some(id),
            name: action.name.clone(),
            kind: action.kind(),
            decision,
        };
        // Its own inputs and every dependency's output as in the last build: so is its
        // key, and that build's result is its result.
        if let Some(k) = kept(id)
            && k.same_inputs
            && action.deps.iter().all(|d| {
                outputs[d.index()].is_some() && outputs[d.index()] == kept(*d).map(|dk| dk.output)
            })
        {
            outputs[id.index()] = Some(k.output);
            plan.actions.push(planned(Decision::UpToDate));
            continue;
        }
        let mut deps = BTreeMap::new();
        let mut pending = Vec::new();
        let view = action.kind().dependency_view();
        for d in &action.deps {
            let dep = graph.action(*d);
            match outputs[d.index()] {
                Some(o) => {
                    deps.insert(dep.name.clone(), o.view(view));
                }
                None => pending.push(dep.name.clone()),
            }
        }
        let key = compute_key(&action.inputs, &deps);
        let mut previous: Option<Option<Previous>> = None;
        let current = || KeyRecord::new(action.inputs.clone(), deps.clone());
        let decision = if pending.is_empty() {
            let hit = match kept(id) {
                Some(k) if k.key == key => Some(k.output),
                _ => match previous.get_or_insert_with(|| previous_of(id)) {
                    Some(p) if p.key == key && p.record.is_some() => p.output(),
                    _ => store
                        .ac_get(&key)
                        .map_err(EngineError::store(format!("look up {}", action.name)))?
                        .map(|r| OutputDigests::of(&r.outputs)),
                },
            };
            match hit {
                Some(output) => {
                    outputs[id.index()] = Some(output);
                    Decision::UpToDate
                }
                None => Decision::WillRun {
                    reasons: reasons_against(
                        previous.get_or_insert_with(|| previous_of(id)).as_ref(),
                        &current(),
                        &key,
                        &[],
                    ),
                },
            }
        } else {
            let previous = previous_of(id);
            let reasons = reasons_against(previous.as_ref(), &current(), &key, &pending);
            if reasons.iter().all(DirtyReason::is_cascade) {
                Decision::MayRun { reasons }
            } else {
                Decision::WillRun { reasons }
            }
        };
        plan.actions.push(planned(decision));
    }
    Ok(plan)
}

/// Whether `target` is up to date and, if not, the chain of reasons: the target's own
/// decision first, then each not-up-to-date dependency it waits on, nearest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    pub target: PlannedAction,
    /// The dependencies whose rebuild this target waits on, transitively, each with its
    /// own reasons; the roots of the cascade are those whose reasons are not all cascades.
    pub chain: Vec<PlannedAction>,
}

/// Explains `target` (`keel explain TARGET`): see [`Explanation`].
pub fn explain(store: &Store, graph: &Graph, target: &str) -> Result<Explanation, EngineError> {
    let id = graph
        .find(target)
        .ok_or_else(|| EngineError::UnknownTarget {
            target: target.to_owned(),
        })?;
    let plan = plan(store, graph, &[id])?;
    let by_name: BTreeMap<&str, &PlannedAction> =
        plan.actions.iter().map(|a| (a.name.as_str(), a)).collect();
    let target_plan = by_name[target].clone();
    let mut chain = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut queue = std::collections::VecDeque::from([target_plan.clone()]);
    while let Some(p) = queue.pop_front() {
        let reasons = match &p.decision {
            Decision::UpToDate => continue,
            Decision::WillRun { reasons } | Decision::MayRun { reasons } => reasons,
        };
        for r in reasons {
            if let DirtyReason::DependencyPending { dep } = r
                && seen.insert(dep.clone())
            {
                let d = by_name[dep.as_str()].clone();
                chain.push(d.clone());
                queue.push_back(d);
            }
        }
    }
    Ok(Explanation {
        target: target_plan,
        chain,
    })
}

#[cfg(test)]
mod tests;
