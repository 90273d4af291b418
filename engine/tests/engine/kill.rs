//! After a `kill -9` in the middle of a build, the next build redoes only what had not
//! finished. The test runs itself as a child process (selected by an environment
//! variable), kills it with SIGKILL while an action is running, and builds again.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use keel_engine::testing::{Distro, TestExecutor};
use keel_engine::{Config, Engine};
use keel_store::Store;

const CHILD: &str = "KEEL_ENGINE_TEST_KILL_CHILD";
const SLEEPER: &str = "rpm:pkg0003";

fn distro() -> Distro {
    Distro::generate(8, 3, 7)
}

/// In the child: build with one action that never ends, logging events.
fn child(dir: &Path) {
    let store = Store::open(&dir.join("store")).unwrap();
    let g = distro().graph(&store).unwrap();
    let exec = TestExecutor::new().sleep(SLEEPER, Duration::from_secs(600));
    let cfg = Config {
        jobs: 1,
        event_log: Some(dir.join("events.jsonl")),
        ..Config::default()
    };
    Engine::new(&store)
        .run(&g, &exec, &cfg, &mut |_| {})
        .unwrap();
    unreachable!("the parent kills this process first");
}

fn events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn kill_9_loses_only_in_flight_work() {
    if let Some(dir) = std::env::var_os(CHILD) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut proc = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill::kill_9_loses_only_in_flight_work",
            "--test-threads=1",
        ])
        .env(CHILD, dir.path())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let started = events(dir.path())
            .iter()
            .any(|e| e["event"] == "action_started" && e["name"] == SLEEPER);
        if started {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the child never reached {SLEEPER}"
        );
        assert!(proc.try_wait().unwrap().is_none(), "the child exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    proc.kill().unwrap(); // SIGKILL
    proc.wait().unwrap();

    let finished: BTreeSet<String> = events(dir.path())
        .iter()
        .filter(|e| e["event"] == "action_finished" && e["status"] == "ran")
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(!finished.is_empty());
    assert!(!finished.contains(SLEEPER));

    let store = Store::open(&dir.path().join("store")).unwrap();
    let g = distro().graph(&store).unwrap();
    let r = Engine::new(&store)
        .run(&g, &TestExecutor::new(), &Config::default(), &mut |_| {})
        .unwrap();
    assert!(r.success());
    let rerun: BTreeSet<String> = r.executed().map(|a| a.name.clone()).collect();
    let all: BTreeSet<String> = g.iter().map(|(_, a)| a.name.clone()).collect();
    let unfinished: BTreeSet<String> = all.difference(&finished).cloned().collect();
    assert_eq!(rerun, unfinished, "exactly what had not finished is redone");
}
