//! The engine's correctness law, as a property test.
//!
//! On a generated distribution of 200+ packages (a toolchain core most packages build
//! against, chains above it, a repository and an image over everything), apply random
//! sequences of changes — spec edits, release bumps, source and patch edits, macro file,
//! define and toolchain changes, image config edits, edits of comments only (the action
//! reruns but produces the same output), reverts to an earlier state, and touches that
//! change nothing — and after each one build incrementally and check:
//!
//! (a) every action's output equals that of a clean build of the same state: after every
//!     change, a from-scratch evaluation that runs the test executor's output function on
//!     every action in dependency order (no cache, no keys, no engine); and every
//!     `CLEAN_EVERY` changes and after the last, a real clean build by the engine in a
//!     fresh store (that one costs half a second in debug, too much for every step);
//! (b) the set of actions executed is exactly the set whose key inputs, after early
//!     cutoff, were never built before — computed by an independent model below that
//!     knows nothing of the engine's keys, only of the tree's state — and the actions
//!     reported as cut off are exactly those whose output equals the previous build's.
//!
//! Four test functions (so that the test harness runs them in parallel) of 2 cases of 125
//! changes each: 1,000 changes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use keel_engine::keys::compute_output_digest;
use keel_engine::testing::{Distro, TestExecutor};
use keel_engine::{BuildReport, Config, Engine, Graph, OutputDigest, Status};
use keel_store::{ActionOutput, BlobDigest, ObjectRef, Store};
use proptest::prelude::*;
use proptest::sample::Index;

const CASES: u32 = 2;
const FUNCTIONS: usize = 4;
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
    ImageConfig { comment_only: bool },
    Touch,
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
        3 => any::<bool>().prop_map(|comment_only| Change::ImageConfig { comment_only }),
        3 => Just(Change::Touch),
    ]
}

fn bump(f: &mut keel_engine::testing::FileState, comment_only: bool) {
    if comment_only {
        f.comment += 1;
    } else {
        f.content += 1;
    }
}

fn apply(d: &mut Distro, c: &Change) {
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
        Change::ImageConfig { comment_only } => bump(&mut d.image_config, *comment_only),
        Change::Touch => {}
    }
}

/// What one action should be in the model: a digest of everything it reads, and a
/// digest of what it produces.
struct Expected {
    name: String,
    key: BlobDigest,
    out: BlobDigest,
}

fn h(s: &str) -> BlobDigest {
    BlobDigest::of_bytes(s.as_bytes())
}

/// The model: from the tree's state alone, each action's identity and output. An action
/// reads every field of its files (comments included) and its dependencies' outputs; it
/// produces a function of its inputs without the comments. This mirrors what the test
/// executor is documented to do, not how the engine keys anything.
fn model(d: &Distro) -> Vec<Expected> {
    let mut out = Vec::new();
    let m = d.macros;
    let t = d.toolchain;
    let check = d.with_check;
    let mut rpm_out = Vec::new();
    for p in &d.packages {
        let source = h(&format!("source {} {}", p.name, p.source));
        out.push(Expected {
            name: format!("source:{}", p.name),
            key: source,
            out: source,
        });
        let (s, pa) = (p.spec, p.patch);
        // The SRPM is packed in the toolchain too: a new toolchain may pack it otherwise.
        let srpm_sig = format!(
            "srpm {} {} spec {} patch {} macros {} check {check} toolchain {} <- {source}",
            p.name, p.release, s.content, pa.content, m.content, t.content
        );
        let srpm_out = h(&srpm_sig);
        out.push(Expected {
            name: format!("srpm:{}", p.name),
            key: h(&format!(
                "{srpm_sig} comments {} {} {} {}",
                s.comment, pa.comment, m.comment, t.comment
            )),
            out: srpm_out,
        });
        let deps: Vec<String> = p
            .build_requires
            .iter()
            .map(|i| rpm_out[*i])
            .map(|o: BlobDigest| o.to_hex())
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
        let this_out = h(&rpm_sig);
        out.push(Expected {
            name: format!("rpm:{}", p.name),
            key: h(&format!(
                "{rpm_sig} comments {} {} {}",
                s.comment, m.comment, t.comment
            )),
            out: this_out,
        });
        rpm_out.push(this_out);
    }
    let repo = h(&format!(
        "repo {}",
        rpm_out
            .iter()
            .map(|o| o.to_hex())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    out.push(Expected {
        name: "repo:base".into(),
        key: repo,
        out: repo,
    });
    let c = d.image_config;
    let image_sig = format!("image {} <- {repo}", c.content);
    out.push(Expected {
        name: "image:core".into(),
        key: h(&format!("{image_sig} comment {}", c.comment)),
        out: h(&image_sig),
    });
    out
}

/// The model's memory: every action identity ever built, and each target's last output.
#[derive(Default)]
struct ModelState {
    built: HashSet<BlobDigest>,
    last_out: BTreeMap<String, BlobDigest>,
}

impl ModelState {
    /// The actions a build of `d` must execute and those of them that must come out as
    /// before; remembers the build.
    fn build(&mut self, d: &Distro) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut run = BTreeSet::new();
        let mut cut = BTreeSet::new();
        for e in model(d) {
            if self.built.insert(e.key) {
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
    // tmpfs when there is one: thousands of stores are created, and fsync on a real disk
    // would make this test minutes long without testing anything more.
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new()
            .prefix("keel-prop-")
            .tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
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

/// A clean build without the engine: every action evaluated from scratch, in order.
fn from_scratch(exec: &TestExecutor, store: &Store, g: &Graph) -> BTreeMap<String, OutputDigest> {
    let mut outs: Vec<OutputDigest> = Vec::with_capacity(g.len());
    let mut by_name = BTreeMap::new();
    for (_, a) in g.iter() {
        let deps: Vec<(&str, String)> = a
            .deps
            .iter()
            .map(|d| (g.action(*d).name.as_str(), outs[d.index()].to_hex()))
            .collect();
        let text = exec.output_text(store, &a.inputs, &deps);
        let out = compute_output_digest(&[ActionOutput {
            name: "out".into(),
            object: ObjectRef::Blob(BlobDigest::of_bytes(text.as_bytes())),
        }]);
        outs.push(out);
        by_name.insert(a.name.clone(), out);
    }
    by_name
}

fn clean_build(d: &Distro) -> BTreeMap<String, OutputDigest> {
    let dir = scratch_dir();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let g = d.graph(&store).unwrap();
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
    let store = Store::open(&dir.path().join("store")).unwrap();
    let engine = Engine::new(&store);
    let exec = TestExecutor::new();
    let reference = TestExecutor::new();
    let mut model = ModelState::default();
    for (step, change) in std::iter::once(None)
        .chain(changes.iter().map(Some))
        .enumerate()
    {
        if let Some(c) = change {
            apply(&mut distro, c);
        }
        let g = distro.graph(&store).unwrap();
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
        let incremental = outputs(&g, &r);
        prop_assert_eq!(
            &incremental,
            &from_scratch(&reference, &store, &g),
            "step {} ({:?}): incremental differs from a from-scratch evaluation",
            step,
            change
        );
        if step % CLEAN_EVERY == 0 || step == changes.len() {
            prop_assert_eq!(
                &incremental,
                &clean_build(&distro),
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
        max_shrink_iters: 32,
        ..ProptestConfig::default()
    })]

    #[test]
    fn incremental_equals_clean_1(
        seed in any::<u64>(),
        extra in 0usize..30,
        changes in proptest::collection::vec(change(), CHANGES_PER_CASE),
    ) {
        check_sequence(seed, extra, &changes)?;
    }

    #[test]
    fn incremental_equals_clean_2(
        seed in any::<u64>(),
        extra in 0usize..30,
        changes in proptest::collection::vec(change(), CHANGES_PER_CASE),
    ) {
        check_sequence(seed, extra, &changes)?;
    }

    #[test]
    fn incremental_equals_clean_3(
        seed in any::<u64>(),
        extra in 0usize..30,
        changes in proptest::collection::vec(change(), CHANGES_PER_CASE),
    ) {
        check_sequence(seed, extra, &changes)?;
    }

    #[test]
    fn incremental_equals_clean_4(
        seed in any::<u64>(),
        extra in 0usize..30,
        changes in proptest::collection::vec(change(), CHANGES_PER_CASE),
    ) {
        check_sequence(seed, extra, &changes)?;
    }
}

#[test]
fn at_least_a_thousand_changes_are_checked() {
    assert!(FUNCTIONS * CASES as usize * CHANGES_PER_CASE >= 1000);
}

/// The model itself must not be trivially agreeable: a comment edit changes an identity
/// but not an output, and a content edit changes both.
#[test]
fn model_tells_identity_from_output() {
    let d = Distro::generate(20, 3, 1);
    let base = model(&d);
    let mut c = d.clone();
    c.packages[0].spec.comment += 1;
    let comment = model(&c);
    let srpm = 1; // source, srpm, rpm of package 0
    assert_ne!(base[srpm].key, comment[srpm].key);
    assert_eq!(base[srpm].out, comment[srpm].out);
    let mut e = d.clone();
    e.packages[0].spec.content += 1;
    let edit = model(&e);
    assert_ne!(base[srpm].out, edit[srpm].out);
    let mut m = ModelState::default();
    assert_eq!(m.build(&d).0.len(), d.action_count());
    assert!(m.build(&d).0.is_empty());
    let (run, cut) = m.build(&c);
    assert_eq!(
        run,
        BTreeSet::from(["rpm:pkg0000".into(), "srpm:pkg0000".into()])
    );
    assert_eq!(cut, run);
}
