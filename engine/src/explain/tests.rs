//! Every `DirtyReason` variant, its wording, and the dry run / explain built on them.

use std::collections::BTreeMap;

use keel_store::{ActionKey, BlobDigest, Store};

use super::*;
use crate::keys::*;
use crate::run::{Config, Engine};
use crate::testing::{Distro, TestExecutor};

fn blob(s: &str) -> BlobDigest {
    BlobDigest::of_bytes(s.as_bytes())
}

fn rpm() -> RpmBuildInputs {
    RpmBuildInputs {
        name: "foo".into(),
        evr: Evr::new("1.2", "3"),
        spec: blob("spec"),
        macro_files: [("macros.dist".to_owned(), blob("m"))].into(),
        defines: [("with_check".to_owned(), "1".to_owned())].into(),
        target_arch: "x86_64".into(),
        toolchain: ToolchainId {
            name: "azl3".into(),
            fingerprint: blob("t1"),
        },
        env: BTreeMap::new(),
        executor: ExecutorId::new("rpmbuild", "sandboxed"),
        check: true,
        build_root: Default::default(),
    }
}

fn rec(inputs: KeyInputs, deps: &[(&str, &str)]) -> KeyRecord {
    KeyRecord::new(
        inputs,
        deps.iter()
            .map(|(n, o)| ((*n).to_owned(), OutputDigest::of_bytes(o.as_bytes())))
            .collect(),
    )
}

/// The reasons for going from `old` to `new` RPM inputs, with no dependencies.
fn rpm_change(change: impl FnOnce(&mut RpmBuildInputs)) -> Vec<DirtyReason> {
    let mut new = rpm();
    change(&mut new);
    compute_reasons(
        &rec(KeyInputs::RpmBuild(rpm()), &[]),
        &rec(KeyInputs::RpmBuild(new), &[]),
        &[],
    )
}

fn words(reasons: &[DirtyReason]) -> Vec<String> {
    reasons.iter().map(ToString::to_string).collect()
}

#[test]
fn unchanged_inputs_have_no_reasons() {
    assert_eq!(rpm_change(|_| {}), vec![]);
}

#[test]
fn spec_changed_names_the_evr_change() {
    let r = rpm_change(|i| {
        i.spec = blob("spec 2");
        i.evr.release = "4".into();
    });
    assert_eq!(words(&r), ["spec changed (Release 3 -> 4)"]);
    let r = rpm_change(|i| {
        i.spec = blob("spec 2");
        i.evr = Evr {
            epoch: Some(1),
            version: "1.3".into(),
            release: "1".into(),
        };
    });
    assert_eq!(
        words(&r),
        ["spec changed (Epoch none -> 1, Version 1.2 -> 1.3, Release 3 -> 1)"]
    );
    let r = rpm_change(|i| i.spec = blob("spec 2"));
    assert_eq!(words(&r), ["spec changed (1.2-3 unchanged)"]);
}

#[test]
fn evr_changed_without_spec_edit() {
    let r = rpm_change(|i| i.evr.release = "3.1".into());
    assert_eq!(
        r,
        vec![DirtyReason::EvrChanged {
            old: Evr::new("1.2", "3"),
            new: Evr::new("1.2", "3.1")
        }]
    );
    assert_eq!(
        words(&r),
        ["evaluated version changed without a spec edit (Release 3 -> 3.1)"]
    );
}

#[test]
fn source_changed_for_fetched_and_tree_sources() {
    let fetch = |sha: &str| {
        rec(
            KeyInputs::SourceFetch(SourceFetchInputs {
                file_name: "foo-1.2.tar.gz".into(),
                sha256: sha.into(),
                executor: ExecutorId::new("rpmbuild", "sandboxed"),
            }),
            &[],
        )
    };
    let r = compute_reasons(&fetch("aa"), &fetch("bb"), &[]);
    assert_eq!(words(&r), ["source foo-1.2.tar.gz changed"]);

    let srpm = |files: &[(&str, &str)]| {
        rec(
            KeyInputs::SrpmPack(SrpmPackInputs {
                name: "foo".into(),
                evr: Evr::new("1", "1"),
                spec: blob("s"),
                files: files
                    .iter()
                    .map(|(n, c)| ((*n).to_owned(), blob(c)))
                    .collect(),
                macro_files: Vec::new(),
                defines: BTreeMap::new(),
                target_arch: "x86_64".into(),
                toolchain: ToolchainId {
                    name: "azl3".into(),
                    fingerprint: blob("t1"),
                },
                executor: ExecutorId::new("rpmbuild", "sandboxed"),
                build_root: Default::default(),
            }),
            &[],
        )
    };
    let r = compute_reasons(
        &srpm(&[("a.patch", "1"), ("b.patch", "1")]),
        &srpm(&[("a.patch", "2"), ("c.patch", "1")]),
        &[],
    );
    assert_eq!(
        words(&r),
        [
            "source a.patch changed",
            "source b.patch removed",
            "source c.patch added"
        ]
    );
}

#[test]
fn macro_file_changed() {
    let r = rpm_change(|i| {
        i.macro_files[0].1 = blob("m2");
    });
    assert_eq!(words(&r), ["macro file macros.dist changed"]);
    assert_eq!(
        r,
        vec![DirtyReason::MacroFileChanged {
            name: "macros.dist".into(),
            change: Change::Modified
        }]
    );
}

#[test]
fn define_changed() {
    let r = rpm_change(|i| {
        i.defines.insert("with_check".into(), "0".into());
        i.defines.insert("dist".into(), ".azl3".into());
    });
    assert_eq!(
        words(&r),
        [
            "define dist changed (unset -> .azl3)",
            "define with_check changed (1 -> 0)"
        ]
    );
}

#[test]
fn toolchain_changed() {
    let r = rpm_change(|i| i.toolchain.fingerprint = blob("t2"));
    let [DirtyReason::ToolchainChanged { old, new, .. }] = r.as_slice() else {
        panic!("{r:?}")
    };
    assert_eq!(*old, format!("azl3 {}", blob("t1").short()));
    assert_eq!(*new, format!("azl3 {}", blob("t2").short()));
    assert!(r[0].to_string().starts_with("toolchain changed (azl3 "));
    // Named by whoever keeps the descriptions behind the two fingerprints.
    let mut named = r[0].clone();
    named.name_toolchain_parts(&|o, n| {
        (*o == blob("t1") && *n == blob("t2")).then(|| vec!["packages".into(), "gcc".into()])
    });
    assert_eq!(
        named.to_string(),
        format!(
            "toolchain changed (azl3 {} -> azl3 {}: packages, gcc changed)",
            blob("t1").short(),
            blob("t2").short()
        )
    );
}

#[test]
fn env_changed() {
    let r = rpm_change(|i| {
        i.env.insert("SOURCE_DATE_EPOCH".into(), "1".into());
    });
    assert_eq!(
        words(&r),
        ["environment variable SOURCE_DATE_EPOCH changed (unset -> 1)"]
    );
}

#[test]
fn other_inputs_changed_by_field_name() {
    let r = rpm_change(|i| i.target_arch = "aarch64".into());
    assert_eq!(words(&r), ["target arch changed (x86_64 -> aarch64)"]);
    let repo = |indexer: &str| {
        rec(
            KeyInputs::RepoIndex(RepoIndexInputs {
                name: "base".into(),
                target_arch: "x86_64".into(),
                indexer: indexer.into(),
                options: BTreeMap::new(),
                executor: ExecutorId::new("rpmbuild", "sandboxed"),
            }),
            &[],
        )
    };
    let r = compute_reasons(&repo("createrepo_c 1.1"), &repo("createrepo_c 1.2"), &[]);
    assert_eq!(
        r,
        vec![DirtyReason::InputChanged {
            field: "indexer".into(),
            old: "createrepo_c 1.1".into(),
            new: "createrepo_c 1.2".into()
        }]
    );
}

#[test]
fn image_inputs_changed_by_field_name() {
    let image = |lists: &[(&str, &str)], format: &str| {
        rec(
            KeyInputs::Image(ImageInputs {
                name: "core".into(),
                config: blob("c"),
                package_lists: lists
                    .iter()
                    .map(|(n, c)| ((*n).to_owned(), blob(c)))
                    .collect(),
                tools: blob("t"),
                format: format.into(),
                target_arch: "x86_64".into(),
                system: "Standard".into(),
                scripts: BTreeMap::new(),
                env: BTreeMap::new(),
                external: BTreeMap::new(),
                executor: ExecutorId::new("rpmbuild", "sandboxed"),
            }),
            &[],
        )
    };
    let r = compute_reasons(
        &image(&[("base.json", "1")], "raw"),
        &image(&[("base.json", "1"), ("extra.json", "2")], "vhdx"),
        &[],
    );
    assert_eq!(
        words(&r),
        [
            format!(
                "package list extra.json changed (absent -> {})",
                blob("2").short()
            ),
            "image format changed (raw -> vhdx)".to_owned(),
        ]
    );
}

#[test]
fn key_version_changed() {
    let old = rec(KeyInputs::RpmBuild(rpm()), &[]);
    let mut new = old.clone();
    new.version += 1;
    let r = compute_reasons(&old, &new, &[]);
    assert_eq!(
        words(&r),
        [format!(
            "keel's key format for rpm_build changed (v{} -> v{})",
            old.version, new.version
        )]
    );
}

#[test]
fn dependency_output_changed_added_and_removed() {
    let old = rec(
        KeyInputs::RpmBuild(rpm()),
        &[
            ("rpm:libfoo-devel", "1"),
            ("rpm:gone", "1"),
            ("srpm:foo", "1"),
        ],
    );
    let new = rec(
        KeyInputs::RpmBuild(rpm()),
        &[
            ("rpm:libfoo-devel", "2"),
            ("rpm:new", "1"),
            ("srpm:foo", "1"),
        ],
    );
    let r = compute_reasons(&old, &new, &[]);
    assert_eq!(
        words(&r),
        [
            "no longer depends on rpm:gone",
            "rebuilt because rpm:libfoo-devel's output changed",
            "new dependency on rpm:new",
        ]
    );
    assert!(r[1].is_cascade());
    assert!(!r[0].is_cascade() && !r[2].is_cascade());
}

#[test]
fn dependency_pending_is_not_added_or_removed() {
    let old = rec(KeyInputs::RpmBuild(rpm()), &[("srpm:foo", "1")]);
    let new = rec(KeyInputs::RpmBuild(rpm()), &[]);
    let r = compute_reasons(&old, &new, &["srpm:foo".to_owned()]);
    assert_eq!(
        r,
        vec![DirtyReason::DependencyPending {
            dep: "srpm:foo".into()
        }]
    );
    assert!(r[0].is_cascade());
    assert_eq!(
        r[0].to_string(),
        "srpm:foo runs first; this reruns only if its output changes"
    );
}

#[test]
fn unexplained_when_the_key_differs_but_no_compared_input_does() {
    // Output digests compare by hash; the key also covers their size. A record whose
    // only difference is a dependency's size is a key difference the comparison cannot
    // name — the catch-all must say so rather than say nothing.
    let d = OutputDigest::of_bytes(b"x");
    let old = KeyRecord::new(
        KeyInputs::RpmBuild(rpm()),
        [(
            "srpm:foo".to_owned(),
            OutputDigest::from_parts(*d.hash(), 1),
        )]
        .into(),
    );
    let new = KeyRecord::new(
        KeyInputs::RpmBuild(rpm()),
        [(
            "srpm:foo".to_owned(),
            OutputDigest::from_parts(*d.hash(), 2),
        )]
        .into(),
    );
    assert_eq!(
        compute_reasons(&old, &new, &[]),
        vec![DirtyReason::Unexplained]
    );
}

// ---- against a store ------------------------------------------------------------------

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    Fixture { _dir: dir, store }
}

fn build(store: &Store, distro: &Distro) -> crate::run::BuildReport {
    let g = distro.graph(store).unwrap();
    Engine::new(store)
        .run(&g, &TestExecutor::new(), &Config::default(), &mut |_| {})
        .unwrap()
}

fn decision<'a>(plan: &'a Plan, name: &str) -> &'a Decision {
    &plan
        .actions
        .iter()
        .find(|a| a.name == name)
        .unwrap()
        .decision
}

#[test]
fn never_built() {
    let f = fixture();
    let distro = Distro::generate(3, 1, 1);
    let g = distro.graph(&f.store).unwrap();
    let plan = plan(&f.store, &g, &[]).unwrap();
    assert_eq!(
        *decision(&plan, "source:pkg0000"),
        Decision::WillRun {
            reasons: vec![DirtyReason::NeverBuilt]
        }
    );
    assert_eq!(DirtyReason::NeverBuilt.to_string(), "never built");
}

#[test]
fn outputs_lost() {
    let f = fixture();
    let distro = Distro::generate(3, 1, 2);
    let r = build(&f.store, &distro);
    let g = distro.graph(&f.store).unwrap();
    let id = g.find("source:pkg0001").unwrap();
    // A target index pointing at a key the cache no longer answers.
    let key = r.get(id).unwrap().key.unwrap();
    let previous = Previous { key, record: None };
    let current = KeyRecord::new(g.action(id).inputs.clone(), BTreeMap::new());
    assert_eq!(
        reasons_against(Some(&previous), &current, &key, &[]),
        vec![DirtyReason::OutputsLost]
    );
}

#[test]
fn previous_record_lost() {
    let f = fixture();
    let mut distro = Distro::generate(3, 1, 3);
    build(&f.store, &distro);
    // The target index names a build whose record is gone.
    let ghost = ActionKey::of_bytes(b"a record that was garbage-collected");
    f.store.target_set("source:pkg0000", &ghost).unwrap();
    distro.packages[0].source += 1;
    let g = distro.graph(&f.store).unwrap();
    let plan = plan(&f.store, &g, &[]).unwrap();
    assert_eq!(
        *decision(&plan, "source:pkg0000"),
        Decision::WillRun {
            reasons: vec![DirtyReason::PreviousRecordLost]
        }
    );
}

#[test]
fn dry_run_lists_what_would_run_and_runs_nothing() {
    let f = fixture();
    let mut distro = Distro::generate(12, 3, 4);
    build(&f.store, &distro);
    let records_before = f.store.ac_len();
    distro.packages[1].release += 1;
    let g = distro.graph(&f.store).unwrap();
    let plan = Engine::new(&f.store).plan(&g, &[]).unwrap();
    assert_eq!(f.store.ac_len(), records_before, "nothing ran");
    assert_eq!(
        *decision(&plan, "srpm:pkg0001"),
        Decision::WillRun {
            reasons: vec![DirtyReason::SpecChanged {
                old: Evr::new("1.0", "1"),
                new: Evr::new("1.0", "2")
            }]
        }
    );
    // Its RPM's own spec changed too, and it also waits on the SRPM.
    let Decision::WillRun { reasons } = decision(&plan, "rpm:pkg0001") else {
        panic!()
    };
    assert!(matches!(reasons[0], DirtyReason::SpecChanged { .. }));
    assert!(reasons.contains(&DirtyReason::DependencyPending {
        dep: "srpm:pkg0001".into()
    }));
    // pkg0002 builds against pkg0001: it may run, if pkg0001's RPM changes.
    assert_eq!(
        *decision(&plan, "rpm:pkg0002"),
        Decision::MayRun {
            reasons: vec![DirtyReason::DependencyPending {
                dep: "rpm:pkg0001".into()
            }]
        }
    );
    assert_eq!(*decision(&plan, "rpm:pkg0000"), Decision::UpToDate);
    assert_eq!(*decision(&plan, "source:pkg0001"), Decision::UpToDate);
    let to_run: Vec<&str> = plan.to_run().map(|a| a.name.as_str()).collect();
    assert!(to_run.contains(&"image:core"));
    assert!(!to_run.contains(&"rpm:pkg0000"));
}

#[test]
fn explain_gives_the_chain_down_to_the_root_cause() {
    let f = fixture();
    let mut distro = Distro::generate(6, 2, 5);
    build(&f.store, &distro);
    let g = distro.graph(&f.store).unwrap();
    let e = explain(&f.store, &g, "image:core").unwrap();
    assert_eq!(e.target.decision, Decision::UpToDate);
    assert!(e.chain.is_empty());

    distro.macros.content += 1;
    let g = distro.graph(&f.store).unwrap();
    let e = Engine::new(&f.store).explain(&g, "rpm:pkg0001").unwrap();
    let Decision::WillRun { reasons } = &e.target.decision else {
        panic!("{e:?}")
    };
    assert!(reasons.contains(&DirtyReason::MacroFileChanged {
        name: "macros.dist".into(),
        change: Change::Modified
    }));
    let chain: Vec<&str> = e.chain.iter().map(|a| a.name.as_str()).collect();
    // Breadth first: what it waits on directly (dependencies in graph order), then theirs.
    assert_eq!(chain, ["rpm:pkg0000", "srpm:pkg0001", "srpm:pkg0000"]);
    assert!(explain(&f.store, &g, "rpm:nope").is_err());
}

// ---- the plan from kept keys and outputs ----------------------------------------------

/// What the last build left, as a caller of [`plan_known`] keeps it.
fn kept(g: &Graph, r: &crate::run::BuildReport) -> Vec<(KeyInputs, Known)> {
    g.iter()
        .map(|(id, a)| {
            let rep = r.get(id).unwrap();
            (
                a.inputs.clone(),
                Known {
                    key: rep.key.unwrap(),
                    output: rep.outputs().unwrap(),
                    same_inputs: true,
                },
            )
        })
        .collect()
}

#[test]
fn plan_known_is_the_plan_after_any_change() {
    let f = fixture();
    let mut distro = Distro::generate(40, 6, 11);
    let g = distro.graph(&f.store).unwrap();
    let mut last = kept(&g, &build(&f.store, &distro));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for step in 0..40 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = distro.packages.len();
        let p = (x >> 8) as usize % n;
        match x % 9 {
            0 | 1 => distro.packages[p].spec.content += 1,
            2 => distro.packages[p].spec.comment += 1,
            3 => distro.packages[p].release += 1,
            4 => distro.packages[p].source += 1,
            5 => distro.packages[p].patch.comment += 1,
            6 => distro.macros.comment += 1,
            7 => distro.toolchain.content += 1,
            _ => {}
        }
        let g = distro.graph(&f.store).unwrap();
        let known: Vec<Option<Known>> = g
            .iter()
            .zip(&last)
            .map(|((_, a), (inputs, k))| {
                Some(Known {
                    same_inputs: a.inputs == *inputs,
                    ..*k
                })
            })
            .collect();
        let slow = plan(&f.store, &g, &[]).unwrap();
        let fast = plan_known(&f.store, &g, &known).unwrap();
        assert_eq!(fast.actions, slow.actions, "step {step}");
        // Build every other step, so that changes pile up between the builds too.
        if step % 2 == 1 {
            last = kept(&g, &build(&f.store, &distro));
        }
    }
}
