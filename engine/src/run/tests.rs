//! The engine against a real store with the deterministic test executor.

use std::collections::BTreeSet;
use std::time::Duration;

use keel_store::Store;

use super::*;
use crate::testing::{Distro, TestExecutor};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    Fixture { _dir: dir, store }
}

fn config(jobs: usize) -> Config {
    Config {
        jobs,
        ..Config::default()
    }
}

fn build(store: &Store, graph: &Graph, exec: &TestExecutor, cfg: &Config) -> BuildReport {
    Engine::new(store)
        .run(graph, exec, cfg, &mut |_| {})
        .unwrap()
}

fn status_of<'a>(report: &'a BuildReport, graph: &Graph, name: &str) -> &'a Status {
    &report.get(graph.find(name).unwrap()).unwrap().status
}

fn executed(report: &BuildReport) -> BTreeSet<String> {
    report.executed().map(|a| a.name.clone()).collect()
}

#[test]
fn second_build_is_all_cached() {
    let f = fixture();
    let distro = Distro::generate(20, 4, 1);
    let g = distro.graph(&f.store).unwrap();
    let exec = TestExecutor::new();
    let first = build(&f.store, &g, &exec, &config(2));
    assert!(first.success());
    assert_eq!(first.summary.ran, g.len());
    assert_eq!(first.summary.hit_rate, 0.0);
    let second = build(&f.store, &g, &exec, &config(2));
    assert_eq!(second.summary.cached, g.len());
    assert_eq!(second.summary.ran, 0);
    assert_eq!(second.summary.hit_rate, 1.0);
    assert_eq!(exec.executed().len(), g.len());
    // Outputs are the same either way.
    for id in g.ids() {
        assert_eq!(
            first.get(id).unwrap().output,
            second.get(id).unwrap().output
        );
    }
}

#[test]
fn comment_only_edit_is_cut_off_at_the_rpm() {
    let f = fixture();
    let mut distro = Distro::generate(20, 4, 2);
    let exec = TestExecutor::new();
    build(
        &f.store,
        &distro.graph(&f.store).unwrap(),
        &exec,
        &config(2),
    );
    distro.packages[0].spec.comment += 1;
    let g = distro.graph(&f.store).unwrap();
    let r = build(&f.store, &g, &exec, &config(2));
    // The spec's bytes changed, so both actions reading it ran; both came out the same,
    // so nothing above them did.
    assert_eq!(
        executed(&r),
        BTreeSet::from(["rpm:pkg0000".to_owned(), "srpm:pkg0000".to_owned()])
    );
    assert_eq!(*status_of(&r, &g, "rpm:pkg0000"), Status::CutOff);
    assert_eq!(*status_of(&r, &g, "srpm:pkg0000"), Status::CutOff);
    assert_eq!(*status_of(&r, &g, "rpm:pkg0001"), Status::Cached);
    assert_eq!(r.summary.cut_off, 2);
    let rpm = r.get(g.find("rpm:pkg0000").unwrap()).unwrap();
    assert!(rpm.is_root(), "its own spec changed");
}

#[test]
fn content_edit_cascades_to_dependents() {
    let f = fixture();
    let mut distro = Distro::generate(20, 4, 3);
    let exec = TestExecutor::new();
    build(
        &f.store,
        &distro.graph(&f.store).unwrap(),
        &exec,
        &config(2),
    );
    distro.packages[1].release += 1;
    let g = distro.graph(&f.store).unwrap();
    let r = build(&f.store, &g, &exec, &config(2));
    let ran = executed(&r);
    assert!(
        ran.contains("rpm:pkg0002"),
        "pkg0002 builds against pkg0001"
    );
    assert!(ran.contains("repo:base") && ran.contains("image:core"));
    assert!(!ran.contains("rpm:pkg0000"));
    let dependent = r.get(g.find("rpm:pkg0002").unwrap()).unwrap();
    assert_eq!(
        dependent.reasons,
        vec![DirtyReason::DependencyOutputChanged {
            dep: "rpm:pkg0001".into()
        }]
    );
    assert!(!dependent.is_root());
    let root = r.get(g.find("srpm:pkg0001").unwrap()).unwrap();
    assert_eq!(root.reasons.len(), 1);
    assert_eq!(root.reasons[0].to_string(), "spec changed (Release 1 -> 2)");
}

#[test]
fn keep_going_builds_everything_not_depending_on_a_failure() {
    let f = fixture();
    let distro = Distro::generate(30, 3, 4);
    let g = distro.graph(&f.store).unwrap();
    let exec = TestExecutor::new().fail("rpm:pkg0010");
    let cfg = Config {
        keep_going: true,
        ..config(2)
    };
    let r = build(&f.store, &g, &exec, &cfg);
    assert!(!r.success());
    assert_eq!(r.summary.failed, 1);
    let closure_of_failure = {
        // Everything that transitively depends on the failed action.
        let failed = g.find("rpm:pkg0010").unwrap();
        let mut hit = vec![false; g.len()];
        hit[failed.index()] = true;
        for (id, a) in g.iter() {
            if a.deps.iter().any(|d| hit[d.index()]) {
                hit[id.index()] = true;
            }
        }
        hit
    };
    for (id, a) in g.iter() {
        let status = &r.get(id).unwrap().status;
        if a.name == "rpm:pkg0010" {
            assert!(matches!(status, Status::Failed { error } if error.contains("told to fail")));
        } else if closure_of_failure[id.index()] {
            assert_eq!(
                *status,
                Status::DependencyFailed {
                    dep: "rpm:pkg0010".into()
                },
                "{}",
                a.name
            );
        } else {
            assert_eq!(
                *status,
                Status::Ran,
                "{} does not depend on the failure",
                a.name
            );
        }
    }
    // Nothing was recorded for the failure: without the knob, only it and its
    // dependents run next time.
    let exec = TestExecutor::new();
    let r2 = build(&f.store, &g, &exec, &config(2));
    let expected: BTreeSet<String> = g
        .iter()
        .filter(|(id, _)| closure_of_failure[id.index()])
        .map(|(_, a)| a.name.clone())
        .collect();
    assert_eq!(executed(&r2), expected);
}

#[test]
fn without_keep_going_a_failure_stops_the_build() {
    let f = fixture();
    let distro = Distro::generate(30, 3, 5);
    let g = distro.graph(&f.store).unwrap();
    // The first core package: everything else waits on it or on little else.
    let exec = TestExecutor::new().fail("source:pkg0000");
    let r = build(&f.store, &g, &exec, &config(1));
    assert_eq!(r.summary.failed, 1);
    assert!(r.summary.skipped > 0);
    assert!(r.summary.ran < g.len() - r.summary.skipped);
    let stopped = r
        .actions
        .iter()
        .flatten()
        .filter(|a| a.status == Status::Stopped)
        .count();
    assert!(
        stopped > 0,
        "independent actions are not started after a failure"
    );
}

#[test]
fn a_panicking_executor_is_a_failed_action() {
    let f = fixture();
    let g = Distro::generate(3, 1, 6).graph(&f.store).unwrap();
    let exec = TestExecutor::new().panic("srpm:pkg0001");
    let r = build(
        &f.store,
        &g,
        &exec,
        &Config {
            keep_going: true,
            ..config(2)
        },
    );
    assert!(matches!(
        status_of(&r, &g, "srpm:pkg0001"),
        Status::Failed { error } if error.contains("panicked")
    ));
    assert_eq!(*status_of(&r, &g, "rpm:pkg0000"), Status::Ran);
}

#[test]
fn cancel_stops_running_actions_and_records_nothing_half_done() {
    let f = fixture();
    let distro = Distro::generate(6, 2, 7);
    let g = distro.graph(&f.store).unwrap();
    let exec = TestExecutor::new().sleep("rpm:pkg0001", Duration::from_secs(30));
    let cfg = config(2);
    let cancel = cfg.cancel.clone();
    let started = std::time::Instant::now();
    let r = Engine::new(&f.store)
        .run(&g, &exec, &cfg, &mut |e| {
            if let Event::ActionStarted { name, .. } = e
                && name == "rpm:pkg0001"
            {
                cancel.cancel();
            }
        })
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the sleeper was stopped"
    );
    assert_eq!(*status_of(&r, &g, "rpm:pkg0001"), Status::Cancelled);
    assert!(r.summary.cancelled > 1, "its dependents were not started");
    let key = r.get(g.find("rpm:pkg0001").unwrap()).unwrap().key.unwrap();
    assert!(f.store.ac_get(&key).unwrap().is_none(), "nothing recorded");

    // The next build redoes only what had not finished.
    let before: BTreeSet<String> = executed(&r);
    let exec = TestExecutor::new();
    let r2 = build(&f.store, &g, &exec, &config(2));
    assert!(r2.success());
    let redone = executed(&r2);
    assert!(redone.contains("rpm:pkg0001"));
    assert!(before.is_disjoint(&redone), "finished work is not redone");
    assert_eq!(before.len() + redone.len(), g.len());
}

/// Inputs of a stand-in action named `name` (a repository index: no files to read).
fn ri(name: &str) -> crate::keys::KeyInputs {
    crate::keys::KeyInputs::RepoIndex(crate::keys::RepoIndexInputs {
        name: name.into(),
        target_arch: "x86_64".into(),
        indexer: String::new(),
        options: Default::default(),
        executor: crate::keys::ExecutorId::new("test", "none"),
    })
}

#[test]
fn critical_path_goes_first() {
    let f = fixture();
    let mut g = Graph::new();
    // Two independent chains; `long` heads the longer one, so it goes first, and then its
    // tail (100) outranks `short` (10).
    let short = g.add("short", ri("short"), &[]).unwrap();
    let long = g.add("long", ri("long"), &[]).unwrap();
    let tail = g.add("tail", ri("tail"), &[long]).unwrap();
    g.set_estimate(short, 10);
    g.set_estimate(long, 10);
    g.set_estimate(tail, 100);
    let exec = TestExecutor::new();
    build(&f.store, &g, &exec, &config(1));
    assert_eq!(exec.executed(), ["long", "tail", "short"]);
}

/// Outputs of `big` bytes for actions whose name starts with "big", 10 bytes otherwise;
/// records the order actions ran in.
#[derive(Default)]
struct SizedExecutor(std::sync::Mutex<Vec<String>>);

impl crate::exec::Executor for SizedExecutor {
    fn execute(
        &self,
        ctx: &crate::exec::ExecContext<'_>,
    ) -> Result<crate::exec::ExecOutcome, crate::error::ExecError> {
        let name = ctx.action.name.clone();
        let n = if name.starts_with("big") {
            300 * 1024
        } else {
            10
        };
        let blob = ctx.store.put_bytes(&vec![b'x'; n])?;
        self.0.lock().unwrap().push(name);
        Ok(crate::exec::ExecOutcome {
            outputs: vec![keel_store::ActionOutput {
                name: "out".into(),
                object: keel_store::ObjectRef::Blob(blob),
            }],
            log: None,
        })
    }
}

/// From an empty store nothing has a duration: once an action's inputs exist, their size
/// stands in for one, so the build of the larger input goes first (as fftw's should go
/// before a small Perl module's).
#[test]
fn without_history_the_larger_input_goes_first() {
    let f = fixture();
    let mut g = Graph::new();
    let small_src = g.add("small-src", ri("small-src"), &[]).unwrap();
    let big_src = g.add("big-src", ri("big-src"), &[]).unwrap();
    // Added first: without a guess, the tie would go to it.
    g.add("small-build", ri("small-build"), &[small_src])
        .unwrap();
    g.add("big-build", ri("big-build"), &[big_src]).unwrap();
    // The sources go before both builds.
    g.set_estimate(small_src, 1_000_000);
    g.set_estimate(big_src, 1_000_000);
    let exec = SizedExecutor::default();
    let engine = Engine::new(&f.store);
    let r = engine.run(&g, &exec, &config(1), &mut |_| {}).unwrap();
    assert!(r.success());
    let order = exec.0.lock().unwrap().clone();
    assert_eq!(&order[2..], ["big-build", "small-build"], "{order:?}");
}

#[test]
fn lost_outputs_are_rebuilt_and_said_so() {
    let f = fixture();
    let g = Distro::generate(2, 1, 8).graph(&f.store).unwrap();
    let exec = TestExecutor::new();
    let first = build(&f.store, &g, &exec, &config(1));
    // Lose the stored output of the image (gc, quarantine): the cache must not serve it.
    let image = first.get(g.find("image:core").unwrap()).unwrap();
    let record = f.store.ac_get(&image.key.unwrap()).unwrap().unwrap();
    let keel_store::ObjectRef::Blob(d) = record.outputs[0].object else {
        panic!("test executor outputs blobs")
    };
    let path = walk_find(f.store.root(), &d.to_hex()[2..]);
    std::fs::remove_file(&path).unwrap();
    let r = build(&f.store, &g, &exec, &config(1));
    let image = r.get(g.find("image:core").unwrap()).unwrap();
    // Rebuilt. Whether its output is the same as before cannot be known (the record that
    // said so went with the output), so it is not counted as cut off — but it is the
    // same, so nothing else reran.
    assert_eq!(image.status, Status::Ran);
    assert_eq!(image.reasons, vec![DirtyReason::OutputsLost]);
    assert_eq!(r.summary.ran, 1);
}

fn walk_find(root: &std::path::Path, file_name: &str) -> std::path::PathBuf {
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == file_name) {
                return p;
            }
        }
    }
    panic!("{file_name} not found under {}", root.display())
}

#[test]
fn key_inputs_are_stored_beside_each_result() {
    let f = fixture();
    let g = Distro::generate(3, 1, 9).graph(&f.store).unwrap();
    let r = build(&f.store, &g, &TestExecutor::new(), &config(2));
    for (id, action) in g.iter() {
        let key = r.get(id).unwrap().key.unwrap();
        let record = f.store.ac_get(&key).unwrap().unwrap();
        let stored = KeyRecord::from_json(&record.inputs_json).unwrap();
        assert_eq!(stored.inputs, action.inputs);
        assert_eq!(stored.compute_key(), key);
        assert_eq!(stored.deps.len(), action.deps.len());
    }
}

#[test]
fn checkout_path_mtime_and_jobs_do_not_change_keys() {
    use std::collections::BTreeMap;
    // The same tree checked out twice, at different paths, written at different times,
    // built with different -j, into different stores.
    let keys_of = |jobs: usize, sleep: bool| {
        let dir = tempfile::tempdir().unwrap();
        let checkout = dir.path().join(format!("checkout-{jobs}"));
        std::fs::create_dir_all(checkout.join("SPECS/foo")).unwrap();
        if sleep {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::write(checkout.join("SPECS/foo/foo.spec"), "Name: foo\n").unwrap();
        std::fs::write(checkout.join("SPECS/foo/fix.patch"), "--- a\n").unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        // What the rule layer does: digest files, name them relative to the tree.
        let spec = store
            .put_file(&checkout.join("SPECS/foo/foo.spec"))
            .unwrap();
        let patch = store
            .put_file(&checkout.join("SPECS/foo/fix.patch"))
            .unwrap();
        let mut g = Graph::new();
        let srpm = g
            .add(
                "srpm:foo",
                crate::keys::KeyInputs::SrpmPack(crate::keys::SrpmPackInputs {
                    name: "foo".into(),
                    evr: crate::keys::Evr::new("1", "1"),
                    spec,
                    files: [("fix.patch".to_owned(), patch)].into(),
                    macro_files: Vec::new(),
                    defines: BTreeMap::new(),
                    target_arch: "x86_64".into(),
                    toolchain: crate::keys::ToolchainId {
                        name: "host".into(),
                        fingerprint: spec,
                    },
                    executor: crate::keys::ExecutorId::new("test", "none"),
                    build_root: Default::default(),
                }),
                &[],
            )
            .unwrap();
        let mut others = Distro::generate(8, 2, 10).graph(&store).unwrap();
        let extra = others
            .add("extra", g.action(srpm).inputs.clone(), &[])
            .unwrap();
        let r = build(&store, &others, &TestExecutor::new(), &config(jobs));
        let mut keys: Vec<_> = others.ids().map(|id| r.get(id).unwrap().key).collect();
        keys.push(r.get(extra).unwrap().key);
        keys
    };
    assert_eq!(keys_of(1, false), keys_of(4, true));
}

#[test]
fn event_log_and_observer_see_every_decision() {
    let f = fixture();
    let g = Distro::generate(4, 2, 11).graph(&f.store).unwrap();
    let log = f.store.root().parent().unwrap().join("events.jsonl");
    let cfg = Config {
        event_log: Some(log.clone()),
        ..config(2)
    };
    let mut seen = Vec::new();
    let r = Engine::new(&f.store)
        .run(&g, &TestExecutor::new(), &cfg, &mut |e| {
            seen.push(e.clone())
        })
        .unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), seen.len());
    assert_eq!(lines[0]["event"], "build_started");
    assert_eq!(lines.last().unwrap()["event"], "build_finished");
    let started = lines
        .iter()
        .filter(|l| l["event"] == "action_started")
        .count();
    let finished = lines
        .iter()
        .filter(|l| l["event"] == "action_finished")
        .count();
    assert_eq!(started, g.len());
    assert_eq!(finished, g.len());
    let first = lines
        .iter()
        .find(|l| l["event"] == "action_started")
        .unwrap();
    assert_eq!(first["reasons"][0]["reason"], "never_built");
    assert_eq!(r.summary.actions, g.len());
    // The critical path ends at the image, which depends on everything.
    assert_eq!(r.summary.critical_path.last().unwrap(), "image:core");
    assert!(r.summary.critical_path.len() >= 4);
}

#[test]
fn targets_limit_the_build_to_their_closure() {
    let f = fixture();
    let g = Distro::generate(10, 2, 12).graph(&f.store).unwrap();
    let target = g.find("rpm:pkg0001").unwrap();
    let cfg = Config {
        targets: vec![target],
        ..config(2)
    };
    let r = build(&f.store, &g, &TestExecutor::new(), &cfg);
    // pkg0001 builds against pkg0000: two packages' three actions each.
    assert_eq!(r.summary.actions, 6);
    assert!(r.get(g.find("image:core").unwrap()).is_none());
}

/// A second store standing in for a shared cache: records and their blobs are copied
/// between the stores, as a real remote would transfer them.
#[derive(Debug)]
struct StoreRemote {
    shared: Store,
    lookups: Mutex<Vec<String>>,
    published: Mutex<Vec<String>>,
}

impl StoreRemote {
    fn copy(from: &Store, to: &Store, record: &ActionRecord) {
        for o in record.objects() {
            if let keel_store::ObjectRef::Blob(d) = o {
                to.put_bytes(&from.read_blob(&d).unwrap()).unwrap();
            }
        }
        to.ac_put(record).unwrap();
    }
}

impl RemoteCache for StoreRemote {
    fn lookup(
        &self,
        store: &Store,
        action: &crate::Action,
        key: &ActionKey,
    ) -> Option<crate::RemoteHit> {
        self.lookups.lock().unwrap().push(action.name.clone());
        let record = self.shared.ac_get(key).unwrap()?;
        StoreRemote::copy(&self.shared, store, &record);
        Some(crate::RemoteHit {
            record,
            local: true,
        })
    }

    fn publish(&self, store: &Store, action: &crate::Action, record: &ActionRecord) {
        self.published.lock().unwrap().push(action.name.clone());
        StoreRemote::copy(store, &self.shared, record);
    }
}

#[test]
fn a_remote_answers_local_misses_and_hears_of_every_result() {
    let a = fixture();
    let b = fixture();
    let shared = fixture();
    let remote = Arc::new(StoreRemote {
        shared: Store::open(&shared._dir.path().join("shared")).unwrap(),
        lookups: Mutex::default(),
        published: Mutex::default(),
    });
    let distro = Distro::generate(20, 4, 5);
    let cfg = Config {
        remote: Some(remote.clone()),
        ..config(2)
    };
    // Machine A: everything misses everywhere, runs, and is published.
    let ga = distro.graph(&a.store).unwrap();
    let first = build(&a.store, &ga, &TestExecutor::new(), &cfg);
    assert_eq!(first.summary.ran, ga.len());
    assert_eq!(first.summary.remote, 0);
    assert_eq!(remote.published.lock().unwrap().len(), ga.len());
    assert_eq!(remote.lookups.lock().unwrap().len(), ga.len());

    // Machine B, a fresh store: nothing runs, everything comes from the remote, the
    // same outputs.
    remote.lookups.lock().unwrap().clear();
    let gb = distro.graph(&b.store).unwrap();
    let exec_b = TestExecutor::new();
    let second = build(&b.store, &gb, &exec_b, &cfg);
    assert!(exec_b.executed().is_empty());
    assert_eq!(second.summary.remote, gb.len());
    assert_eq!(second.summary.cached, gb.len());
    assert_eq!(second.summary.hit_rate, 1.0);
    assert_eq!(*status_of(&second, &gb, "rpm:pkg0001"), Status::Remote);
    for id in gb.ids() {
        assert_eq!(
            first.get(id).unwrap().output,
            second.get(id).unwrap().output
        );
    }
    // B again: local hits, the remote is not asked.
    remote.lookups.lock().unwrap().clear();
    let third = build(&b.store, &gb, &exec_b, &cfg);
    assert_eq!(third.summary.cached, gb.len());
    assert_eq!(third.summary.remote, 0);
    assert!(remote.lookups.lock().unwrap().is_empty());
}

#[test]
fn the_critical_path_of_an_incremental_build_holds_only_what_ran() {
    let f = fixture();
    let mut distro = Distro::generate(20, 4, 3);
    let exec = TestExecutor::new();
    build(
        &f.store,
        &distro.graph(&f.store).unwrap(),
        &exec,
        &config(2),
    );
    distro.packages[1].release += 1;
    let g = distro.graph(&f.store).unwrap();
    let r = build(&f.store, &g, &exec, &config(2));
    assert!(r.summary.cached > 0, "most of the tree is cached");
    let ran = executed(&r);
    assert!(!r.summary.critical_path.is_empty());
    for name in &r.summary.critical_path {
        assert!(
            ran.contains(name),
            "{name} is on the critical path {:?} but was not executed",
            r.summary.critical_path
        );
    }
}

#[test]
fn a_build_whose_first_action_fails_has_no_cache_hits_to_boast_of() {
    let f = fixture();
    let g = Distro::generate(30, 3, 5).graph(&f.store).unwrap();
    // A closure of one action, which fails: nothing ran, nothing was cached.
    let cfg = Config {
        targets: vec![g.find("source:pkg0000").unwrap()],
        ..config(1)
    };
    let exec = TestExecutor::new().fail("source:pkg0000");
    let r = build(&f.store, &g, &exec, &cfg);
    assert_eq!((r.summary.actions, r.summary.failed), (1, 1));
    assert_eq!(r.summary.hit_rate, 0.0, "{:?}", r.summary);
    assert!(build(&f.store, &g, &TestExecutor::new(), &cfg).success());
    let again = build(&f.store, &g, &TestExecutor::new(), &cfg);
    assert_eq!(again.summary.hit_rate, 1.0);
}
