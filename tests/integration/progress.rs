//! A long build's progress in a log: counts, what runs, and an estimate of the time left
//! from the durations earlier builds recorded.

use keel_engine::testing::Distro;
use keel_rules::gentree::write_tree;

use crate::support::*;

/// `keel build` with the test executor, a `Progress` line after every action that runs;
/// those lines.
fn progress_lines(p: &Project) -> Vec<String> {
    let run = p
        .keel(&["-C", "tree", "build", "--executor", "test"])
        .env("KEEL_PROGRESS_INTERVAL", "0")
        .run()
        .success();
    run.stderr()
        .lines()
        .filter(|l| l.trim_start().starts_with("Progress "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_build_log_shows_counts_and_then_an_estimate_from_earlier_builds() {
    let p = project().build();
    let mut d = Distro::generate(12, 3, 11);
    write_tree(&d, &p.path("tree")).unwrap();
    let first = progress_lines(&p);
    // Every action ran: one line each, the last with everything done; nothing was ever
    // timed, so no estimate.
    let last = first.last().expect("progress lines");
    let total = first.len();
    assert!(
        last.contains(&format!(
            "Progress {total}/{total} done (0 cut off, 0 failed), 0 running, 0 queued"
        )),
        "{last}"
    );
    assert!(first.iter().all(|l| !l.contains("left")), "{first:?}");
    assert!(
        first[0].contains(&format!("Progress 1/{total} done")),
        "{}",
        first[0]
    );
    // A comment in a leaf's spec: its SRPM and RPM rerun and are cut off, now with an
    // estimate from the first build's durations.
    let leaf = d.packages.len() - 1;
    d.packages[leaf].spec.comment += 1;
    write_tree(&d, &p.path("tree")).unwrap();
    let second = progress_lines(&p);
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second[1].contains("(2 cut off, 0 failed)"), "{}", second[1]);
    assert!(second.iter().all(|l| l.contains("left")), "{second:?}");
}
