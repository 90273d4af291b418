//! `keel build` after an edit through the state the last build kept
//! (`src/build/state.rs`): the plan and the build are the ones the whole-tree path makes,
//! and changes the state cannot follow fall back to that path.

use std::path::PathBuf;
use std::time::Duration;

use keel_engine::testing::Distro;
use keel_rules::gentree::write_tree;

use crate::support::*;

const FAST: &str = "spec directories changed";
const SLOW: &str = "reading the whole tree";

/// A generated tree built once with the test executor, its files older than the racy
/// window (as they are after any real edit-build cycle).
fn built_tree() -> (Project, Distro) {
    let p = project().build();
    let d = Distro::generate(30, 4, 7);
    write_tree(&d, &p.path("tree")).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    build(&p);
    (p, d)
}

fn build(p: &Project) -> Run {
    p.keel(&["-C", "tree", "-q", "build", "--executor", "test"])
        .env("KEEL_LOG", "keel::build::state=debug")
        .run()
        .success()
}

/// `build --dry-run` as text and as JSON, with the state's debug lines on stderr.
fn dry_run(p: &Project) -> (String, String, String) {
    let text = p
        .keel(&["-C", "tree", "build", "--dry-run", "--executor", "test"])
        .env("KEEL_LOG", "keel::build::state=debug")
        .run()
        .success();
    let json = p
        .keel(&[
            "-C",
            "tree",
            "--json",
            "build",
            "--dry-run",
            "--executor",
            "test",
        ])
        .run()
        .success();
    (text.stdout(), json.stdout(), text.stderr())
}

fn state_files(p: &Project) -> Vec<PathBuf> {
    std::fs::read_dir(p.store().join("builds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| f.extension().is_some_and(|x| x == "state"))
        .collect()
}

/// The dry run through the state and through the whole tree (the state put aside, then
/// back): both plans, and the first run's log.
fn both_ways(p: &Project) -> ((String, String), (String, String), String) {
    let (text, json, log) = dry_run(p);
    let kept: Vec<(PathBuf, Vec<u8>)> = state_files(p)
        .into_iter()
        .map(|f| {
            let b = std::fs::read(&f).unwrap();
            (f, b)
        })
        .collect();
    assert_eq!(kept.len(), 1, "one build, one state");
    for (f, _) in &kept {
        std::fs::remove_file(f).unwrap();
    }
    let (slow_text, slow_json, _) = dry_run(p);
    for (f, b) in kept {
        std::fs::write(f, b).unwrap();
    }
    ((text, json), (slow_text, slow_json), log)
}

fn edit(p: &Project, d: &Distro, pkg: usize, f: impl FnOnce(String) -> String) {
    let name = &d.packages[pkg].name;
    let path = p.path(&format!("tree/SPECS/{name}/{name}.spec"));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, f(text)).unwrap();
}

#[test]
fn a_leaf_edit_plans_and_builds_as_the_whole_tree_does() {
    let (p, d) = built_tree();
    let leaf = d.packages.len() - 1;
    let name = d.packages[leaf].name.clone();
    edit(&p, &d, leaf, |t| {
        t.replace("%global gen_content 0", "%global gen_content 9")
    });
    let (fast, slow, log) = both_ways(&p);
    assert!(log.contains(&format!("1 {FAST}")), "{log}");
    assert_eq!(fast, slow);
    assert!(
        fast.0.contains(&format!("run srpm:{name}: spec changed")),
        "{}",
        fast.0
    );
    assert!(
        fast.0.contains("3 of 61 actions would run or may run"),
        "{}",
        fast.0
    );
    // The build goes the same way, runs what the plan said, and keeps a new state.
    let run = build(&p);
    assert!(
        run.stderr().contains(&format!("1 {FAST}")),
        "{}",
        run.stderr()
    );
    let (text, _, log) = dry_run(&p);
    assert!(!log.contains(SLOW), "{log}");
    assert!(
        text.contains("0 of 61 actions would run or may run"),
        "{text}"
    );
}

#[test]
fn a_touch_or_a_comment_plans_as_the_whole_tree_does() {
    let (p, d) = built_tree();
    edit(&p, &d, 3, |t| t);
    let (fast, slow, log) = both_ways(&p);
    assert!(log.contains(&format!("1 {FAST}")), "{log}");
    assert_eq!(fast, slow);
    assert!(fast.0.contains("0 of 61"), "{}", fast.0);
    // A comment in a spec the core depends on: its actions run, the rest may.
    edit(&p, &d, 0, |t| t.replacen("# comment 0", "# comment 1", 1));
    let (fast, slow, log) = both_ways(&p);
    assert!(log.contains(&format!("2 {FAST}")), "{log}");
    assert_eq!(fast, slow);
}

#[test]
fn a_dependency_or_macro_change_reads_the_whole_tree() {
    let (p, d) = built_tree();
    let leaf = d.packages.len() - 1;
    let dep = format!("BuildRequires: {}-devel\n", d.packages[1].name);
    edit(&p, &d, leaf, |t| {
        t.replacen("%global", &format!("{dep}%global"), 1)
    });
    let (fast, slow, log) = both_ways(&p);
    assert!(log.contains("changed what the graph sees"), "{log}");
    assert!(log.contains(SLOW), "{log}");
    assert_eq!(fast, slow);
    // The build takes the whole-tree path too and keeps a state for the new graph.
    let run = build(&p);
    assert!(run.stderr().contains(SLOW), "{}", run.stderr());
    let macros = p.path("tree/SPECS/gen-rpm-macros/macros.gen");
    std::thread::sleep(Duration::from_millis(2100));
    let text = std::fs::read_to_string(&macros).unwrap();
    std::fs::write(&macros, text.replace("# comment", "# a comment")).unwrap();
    let (fast, slow, log) = both_ways(&p);
    assert!(log.contains("macros.gen changed"), "{log}");
    assert_eq!(fast, slow);
}

#[test]
fn a_new_file_beside_a_spec_is_seen() {
    let (p, d) = built_tree();
    let name = &d.packages[5].name;
    std::fs::write(p.path(&format!("tree/SPECS/{name}/notes.txt")), "new\n").unwrap();
    let (fast, slow, log) = both_ways(&p);
    assert!(log.contains(&format!("1 {FAST}")), "{log}");
    assert_eq!(fast, slow);
    // A new spec directory is a change the state cannot follow.
    let dir = p.path("tree/SPECS/zzz-new");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("zzz-new.spec"),
        "Name: zzz-new\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n\n%description\nd\n\n%files\n/usr/lib/zzz\n",
    )
    .unwrap();
    let (fast, slow, log) = both_ways(&p);
    assert!(log.contains(SLOW), "{log}");
    assert_eq!(fast, slow);
    assert!(
        fast.0.contains("run rpm:zzz-new: never built"),
        "{}",
        fast.0
    );
}

/// A build that its stamp finds up to date reports every action as cached in its JSON
/// stream, as a full check of the unchanged tree does: a consumer sees the same statuses
/// whichever way keel found nothing to do.
#[test]
fn an_up_to_date_build_reports_every_action_as_cached_in_json() {
    let (p, d) = built_tree();
    p.keel(&["-C", "tree", "build", "--executor", "test"])
        .run()
        .success()
        .stderr_has("nothing changed since the last build");
    let out = p
        .keel(&["-C", "tree", "--json", "build", "--executor", "test"])
        .run()
        .success()
        .stdout();
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["event"], "build_started", "{out}");
    let finished = &events.last().unwrap()["summary"];
    let actions: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "action_finished")
        .collect();
    assert_eq!(
        Some(actions.len() as u64),
        finished["actions"].as_u64(),
        "{out}"
    );
    assert!(actions.iter().all(|a| a["status"] == "cached"), "{out}");
    let names: std::collections::BTreeSet<&str> = actions
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), actions.len(), "{out}");
    for pkg in &d.packages {
        assert!(
            names.contains(format!("rpm:{}", pkg.name).as_str()),
            "{out}"
        );
        assert!(
            names.contains(format!("srpm:{}", pkg.name).as_str()),
            "{out}"
        );
    }
}
