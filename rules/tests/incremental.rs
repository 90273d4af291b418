//! The incremental law on real spec files: a generated tree of 200+ specs is written to
//! disk, read by `keel-specs` (through the spec cache), resolved into a package graph,
//! turned into actions and built by the engine with the deterministic test executor.
//! Random changes — spec edits (significant or comment only), release bumps, source and
//! patch edits, macro file edits, a define change, toolchain changes, reverts, and a
//! touch that changes no byte — are applied to the files, and after each one:
//!
//! (a) every action's output equals that of a clean build of the same tree in a fresh
//!     store (every `CLEAN_EVERY` changes and after the last; the model below checks
//!     every step);
//! (b) the set of actions executed is exactly the set whose inputs, after early cutoff,
//!     were never built before, and those reported as cut off are exactly those whose
//!     output equals the previous build's. Both sets come from a model that knows only
//!     the tree's state, not how keys or the cache work.
//!
//! Four test functions (run in parallel by the harness) × 2 cases × 125 changes: 1,000.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use keel_engine::testing::{Distro, FileState, TestExecutor};
use keel_engine::{BuildReport, Config, Engine, Graph, OutputDigest, Status, ToolchainId};
use keel_rules::actions::{ActionConfig, action_graph, wanted_specs};
use keel_rules::gentree::write_tree;
use keel_rules::speccache::SpecCache;
use keel_rules::{GraphConfig, PackageGraph, parse_manifest};
use keel_specs::{CliMacro, EngineConfig, MacroSetup, ReaderConfig};
use keel_store::{BlobDigest, Store};
use proptest::prelude::*;
use proptest::sample::Index;

const CASES: u32 = 2;
const CHANGES_PER_CASE: usize = 125;
const CLEAN_EVERY: usize = 50;

#[derive(Debug, Clone)]
enum Change {
    Spec { pkg: Index, comment_only: bool },
    ReleaseBump { pkg: Index },
    Source { pkg: Index },
    Patch { pkg: Index, comment_only: bool },
    RevertSpec { pkg: Index },
    Macros { comment_only: bool },
    WithCheck,
    Toolchain { comment_only: bool },
    Touch { pkg: Index },
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        20 => (any::<Index>(), any::<bool>())
            .prop_map(|(pkg, comment_only)| Change::Spec { pkg, comment_only }),
        8 => any::<Index>().prop_map(|pkg| Change::ReleaseBump { pkg }),
        8 => any::<Index>().prop_map(|pkg| Change::Source { pkg }),
        8 => (any::<Index>(), any::<bool>())
            .prop_map(|(pkg, comment_only)| Change::Patch { pkg, comment_only }),
        8 => any::<Index>().prop_map(|pkg| Change::RevertSpec { pkg }),
        // Tree-wide changes rebuild every package: rarer, or the test takes minutes.
        1 => any::<bool>().prop_map(|comment_only| Change::Macros { comment_only }),
        1 => Just(Change::WithCheck),
        1 => any::<bool>().prop_map(|comment_only| Change::Toolchain { comment_only }),
        4 => any::<Index>().prop_map(|pkg| Change::Touch { pkg }),
    ]
}

fn bump(f: &mut FileState, comment_only: bool) {
    if comment_only {
        f.comment += 1;
    } else {
        f.content += 1;
    }
}

/// Applies `c` to the state; returns the file to touch, if any.
fn apply(d: &mut Distro, c: &Change, root: &Path) -> Option<PathBuf> {
    let n = d.packages.len();
    match c {
        Change::Spec { pkg, comment_only } => {
            bump(&mut d.packages[pkg.index(n)].spec, *comment_only)
        }
        Change::ReleaseBump { pkg } => d.packages[pkg.index(n)].release += 1,
        Change::Source { pkg } => d.packages[pkg.index(n)].source += 1,
        Change::Patch { pkg, comment_only } => {
            bump(&mut d.packages[pkg.index(n)].patch, *comment_only)
        }
        Change::RevertSpec { pkg } => {
            let s = &mut d.packages[pkg.index(n)].spec;
            s.content = s.content.saturating_sub(1);
        }
        Change::Macros { comment_only } => bump(&mut d.macros, *comment_only),
        Change::WithCheck => d.with_check = !d.with_check,
        Change::Toolchain { comment_only } => bump(&mut d.toolchain, *comment_only),
        Change::Touch { pkg } => {
            let name = &d.packages[pkg.index(n)].name;
            return Some(root.join(format!("SPECS/{name}/{name}.spec")));
        }
    }
    None
}

/// Rewrites a file with the same bytes, after the clock has moved on.
fn touch(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    std::fs::write(path, bytes).unwrap();
}

fn h(s: &str) -> String {
    BlobDigest::of_bytes(s.as_bytes()).to_hex()
}

/// One action in the model: the digest of everything it reads (its identity) and of
/// what it produces.
struct Expected {
    name: String,
    identity: String,
    out: String,
}

/// The model, from the tree's state alone. An action reads every byte of its files and
/// its dependencies' outputs; it produces a function of those without comment lines
/// (what the test executor is documented to do).
fn model(d: &Distro) -> Vec<Expected> {
    let m = d.macros;
    let t = d.toolchain;
    let check = d.with_check;
    let mut out = Vec::new();
    let mut rpm_out: Vec<String> = Vec::new();
    for p in &d.packages {
        let (s, pa) = (p.spec, p.patch);
        // The SRPM is packed in the toolchain too: a new toolchain may pack it otherwise.
        let srpm_sig = format!(
            "srpm {} {} spec {} source {} patch {} macros {} check {check} toolchain {}",
            p.name, p.release, s.content, p.source, pa.content, m.content, t.content
        );
        let srpm_out = h(&srpm_sig);
        out.push(Expected {
            name: format!("srpm:{}", p.name),
            identity: h(&format!(
                "{srpm_sig} comments {} {} {} {}",
                s.comment, pa.comment, m.comment, t.comment
            )),
            out: srpm_out.clone(),
        });
        let deps: Vec<&str> = p
            .build_requires
            .iter()
            .map(|i| rpm_out[*i].as_str())
            .collect();
        let rpm_sig = format!(
            "rpm {} {} spec {} macros {} check {check} toolchain {} <- {srpm_out} {}",
            p.name,
            p.release,
            s.content,
            m.content,
            t.content,
            deps.join(" ")
        );
        let this = h(&rpm_sig);
        out.push(Expected {
            name: format!("rpm:{}", p.name),
            identity: h(&format!(
                "{rpm_sig} comments {} {} {}",
                s.comment, m.comment, t.comment
            )),
            out: this.clone(),
        });
        rpm_out.push(this);
    }
    let repo = h(&format!("repo {}", rpm_out.join(" ")));
    out.push(Expected {
        name: "repo:x86_64".into(),
        identity: repo.clone(),
        out: repo,
    });
    out
}

#[derive(Default)]
struct ModelState {
    built: HashSet<String>,
    last_out: BTreeMap<String, String>,
}

impl ModelState {
    fn build(&mut self, d: &Distro) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut run = BTreeSet::new();
        let mut cut = BTreeSet::new();
        for e in model(d) {
            if self.built.insert(e.identity) {
                if self.last_out.get(&e.name) == Some(&e.out) {
                    cut.insert(e.name.clone());
                }
                run.insert(e.name.clone());
            }
            self.last_out.insert(e.name, e.out);
        }
        (run, cut)
    }
}

fn scratch_dir() -> tempfile::TempDir {
    // tmpfs when there is one: fsync on a real disk would make this minutes long
    // without testing anything more.
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("keel-rules-prop-")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

/// Reads the tree at `root` the way `keel build` does and returns its action graph.
fn actions(root: &Path, store: &Store, cache: &mut SpecCache, d: &Distro) -> Graph {
    let macros = root.join("SPECS/gen-rpm-macros/macros.gen");
    let check = u8::from(d.with_check).to_string();
    let setup = MacroSetup {
        macro_path: String::new(),
        target: Some("x86_64-linux".into()),
        cli: vec![
            CliMacro::Load(macros.clone()),
            CliMacro::Define("dist .gen".into()),
            CliMacro::Define(format!("with_check {check}")),
        ],
    };
    let (table, _) = keel_specs::load_macros(&setup, &EngineConfig::default()).unwrap();
    let mut reader = ReaderConfig::new(table, EngineConfig::default());
    reader.sourcedir_is_specdir = true;
    let setup_digest = BlobDigest::of_bytes(
        format!("{} {check}", store.file_digest(&macros).unwrap().to_hex()).as_bytes(),
    );
    let files = keel_specs::find_specs(&root.join("SPECS"));
    let (results, _) = cache.read_all(store, &setup_digest, &files, &reader);
    let specs: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    let pg = PackageGraph::build(
        &specs,
        &GraphConfig {
            target_arch: "x86_64".into(),
            toolchain: parse_manifest(&root.join("toolchain.txt")).unwrap(),
            seed: Vec::new(),
            root_files: None,
            from_tree: Vec::new(),
        },
    );
    assert!(pg.unresolved.is_empty(), "{:?}", pg.unresolved);
    let manifest = keel_rules::actions::stored_file(store, &root.join("toolchain.txt")).unwrap();
    let mut defines = BTreeMap::new();
    defines.insert("dist".to_owned(), ".gen".to_owned());
    defines.insert("with_check".to_owned(), check);
    let cfg = ActionConfig {
        root: root.to_owned(),
        target_arch: "x86_64".into(),
        macro_files: vec![macros],
        defines,
        toolchain: ToolchainId {
            name: "gen".into(),
            fingerprint: manifest,
        },
        indexer: "test".into(),
        executor: keel_engine::ExecutorId::new("test", "none"),
        spec_defines: Default::default(),
        check: true,
        build_root: Default::default(),
    };
    let wanted = wanted_specs(&pg, &[]).unwrap();
    action_graph(store, &pg, &specs, &wanted, &cfg, true)
        .unwrap()
        .graph
}

fn config() -> Config {
    Config {
        jobs: 2,
        ..Config::default()
    }
}

fn outputs(g: &Graph, r: &BuildReport) -> BTreeMap<String, OutputDigest> {
    g.iter()
        .map(|(id, a)| (a.name.clone(), r.get(id).unwrap().output.unwrap()))
        .collect()
}

fn clean_build(root: &Path, d: &Distro) -> BTreeMap<String, OutputDigest> {
    let dir = scratch_dir();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut cache = SpecCache::load(&dir.path().join("specs.cache"));
    let g = actions(root, &store, &mut cache, d);
    let r = Engine::new(&store)
        .run(&g, &TestExecutor::new(), &config(), &mut |_| {})
        .unwrap();
    assert!(r.success());
    assert_eq!(r.summary.ran, g.len(), "a fresh store runs everything");
    outputs(&g, &r)
}

fn check_sequence(seed: u64, extra: usize, changes: &[Change]) -> Result<(), TestCaseError> {
    let mut distro = Distro::generate(200 + extra, 12, seed);
    let dir = scratch_dir();
    let root = dir.path().join("tree");
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut cache = SpecCache::load(&dir.path().join("specs.cache"));
    let engine = Engine::new(&store);
    let exec = TestExecutor::new();
    let mut model = ModelState::default();
    for (step, change) in std::iter::once(None)
        .chain(changes.iter().map(Some))
        .enumerate()
    {
        let touched = change.and_then(|c| apply(&mut distro, c, &root));
        write_tree(&distro, &root).unwrap();
        if let Some(t) = touched {
            touch(&t);
        }
        let g = actions(&root, &store, &mut cache, &distro);
        prop_assert_eq!(g.len(), distro.packages.len() * 2 + 1);
        let r = engine.run(&g, &exec, &config(), &mut |_| {}).unwrap();
        prop_assert!(r.success(), "step {step} ({change:?}) failed");
        let (expected_run, expected_cut) = model.build(&distro);
        let ran: BTreeSet<String> = r.executed().map(|a| a.name.clone()).collect();
        let under: Vec<_> = expected_run.difference(&ran).collect();
        let over: Vec<_> = ran.difference(&expected_run).collect();
        prop_assert!(
            under.is_empty() && over.is_empty(),
            "step {step} ({change:?}): under-built {under:?}, over-built {over:?}"
        );
        let cut: BTreeSet<String> = r
            .executed()
            .filter(|a| a.status == Status::CutOff)
            .map(|a| a.name.clone())
            .collect();
        prop_assert_eq!(
            &cut,
            &expected_cut,
            "step {} ({:?}): cut-off set",
            step,
            change
        );
        if step % CLEAN_EVERY == 0 || step == changes.len() {
            prop_assert_eq!(
                &outputs(&g, &r),
                &clean_build(&root, &distro),
                "step {} ({:?}): incremental differs from a clean build in a fresh store",
                step,
                change
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    })]

    #[test]
    fn specs_incremental_equals_clean_1(
        seed in any::<u64>(),
        extra in 0usize..20,
        changes in proptest::collection::vec(change(), CHANGES_PER_CASE),
    ) {
        check_sequence(seed, extra, &changes)?;
    }

    #[test]
    fn specs_incremental_equals_clean_2(
        seed in any::<u64>(),
        extra in 0usize..20,
        changes in proptest::collection::vec(change(), CHANGES_PER_CASE),
    ) {
        check_sequence(seed, extra, &changes)?;
    }

    #[test]
    fn specs_incremental_equals_clean_3(
        seed in any::<u64>(),
        extra in 0usize..20,
        changes in proptest::collection::vec(change(), CHANGES_PER_CASE),
    ) {
        check_sequence(seed, extra, &changes)?;
    }

    #[test]
    fn specs_incremental_equals_clean_4(
        seed in any::<u64>(),
        extra in 0usize..20,
        changes in proptest::collection::vec(change(), CHANGES_PER_CASE),
    ) {
        check_sequence(seed, extra, &changes)?;
    }
}

#[test]
fn at_least_a_thousand_changes_are_checked() {
    assert!(4 * CASES as usize * CHANGES_PER_CASE >= 1000);
}

#[test]
fn a_comment_edit_cuts_off_and_a_real_edit_cascades() {
    let mut d = Distro::generate(30, 4, 7);
    let dir = scratch_dir();
    let root = dir.path().join("tree");
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut cache = SpecCache::load(&dir.path().join("specs.cache"));
    let exec = TestExecutor::new();
    let engine = Engine::new(&store);
    write_tree(&d, &root).unwrap();
    let g = actions(&root, &store, &mut cache, &d);
    assert!(
        engine
            .run(&g, &exec, &config(), &mut |_| {})
            .unwrap()
            .success()
    );
    // A comment in the core's first spec: its two actions rerun and cut off.
    d.packages[0].spec.comment += 1;
    write_tree(&d, &root).unwrap();
    let g = actions(&root, &store, &mut cache, &d);
    let r = engine.run(&g, &exec, &config(), &mut |_| {}).unwrap();
    let ran: Vec<_> = r
        .executed()
        .map(|a| (a.name.clone(), a.status.clone()))
        .collect();
    assert_eq!(
        ran,
        vec![
            ("srpm:pkg0000".to_owned(), Status::CutOff),
            ("rpm:pkg0000".to_owned(), Status::CutOff)
        ]
    );
    // A real edit rebuilds everything above it.
    d.packages[0].spec.content += 1;
    write_tree(&d, &root).unwrap();
    let g = actions(&root, &store, &mut cache, &d);
    let r = engine.run(&g, &exec, &config(), &mut |_| {}).unwrap();
    assert!(r.summary.ran > 30, "{:?}", r.summary);
}
