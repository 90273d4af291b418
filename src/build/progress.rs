//! Showing a build as it happens: bars on a terminal, plain lines otherwise, JSON events
//! on stdout with `--json`.
//!
//! Both human forms carry a [`Tally`]: how many actions are done, running, queued, failed
//! and cut off, what runs and for how long, and an estimate of the time left from the
//! durations earlier builds of the tree recorded ([`Durations`]). On a terminal it is the
//! total bar's message; in a log (a nightly build's) it is a `Progress` line every
//! `KEEL_PROGRESS_INTERVAL` seconds (60 by default; 0: after every action that ran).

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use keel_engine::{Event, Status};

use crate::output::{Output, error_line};

/// Renders engine events.
pub struct Progress {
    out: Output,
    bars: Option<Bars>,
    tally: Arc<Mutex<Tally>>,
    /// Plain mode: when the last `Progress` line was printed, and how often to print one.
    plain_every: Option<Duration>,
    last_line: Instant,
    ticker: Option<Ticker>,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    running: HashMap<String, ProgressBar>,
}

/// Prints a `Progress` line while nothing else happens (a long action).
struct Ticker {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// How long each action took when it last ran, by name, for one tree and executor:
/// `<store>/builds/durations-<tree>-<executor>.json`.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Durations {
    ms: BTreeMap<String, u64>,
}

impl Durations {
    pub fn path(store_root: &Path, tree_root: &Path, executor: &str) -> PathBuf {
        let mut p = super::per_tree_path(store_root, tree_root, "durations").into_os_string();
        p.push(format!("-{executor}.json"));
        PathBuf::from(p)
    }

    /// The recorded durations; none when the file is missing or unreadable (an estimate
    /// is a convenience, never a reason to fail).
    pub fn load(path: &Path) -> Durations {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Records how long the actions of `finished` took, over the earlier durations, and
    /// saves them.
    pub fn record(&mut self, path: &Path, finished: &[(String, u64)]) {
        for (name, ms) in finished {
            self.ms.insert(name.clone(), *ms);
        }
        let tmp = path.with_extension("json.tmp");
        let saved = serde_json::to_vec(self)
            .ok()
            .and_then(|b| std::fs::write(&tmp, b).ok())
            .and_then(|()| std::fs::rename(&tmp, path).ok());
        if saved.is_none() {
            tracing::warn!("could not save action durations to {}", path.display());
        }
    }
}

/// A build's counts as it goes, and its estimate of the time left.
#[derive(Debug)]
pub struct Tally {
    total: usize,
    jobs: usize,
    done: usize,
    failed: usize,
    cut_off: usize,
    running: BTreeMap<String, Instant>,
    /// Expected milliseconds of every action not yet done, by name.
    expected: HashMap<String, u64>,
    /// Whether any expectation came from a recorded duration (else no estimate).
    informed: bool,
    /// The actions that ran in this build and how long each took, for [`Durations`].
    pub ran: Vec<(String, u64)>,
}

impl Tally {
    /// For a build of `names`, with `known` durations of earlier builds; an action never
    /// timed before is expected to take the median of those known.
    pub fn new(names: impl IntoIterator<Item = String>, known: &Durations) -> Tally {
        let names: Vec<String> = names.into_iter().collect();
        let mut seen: Vec<u64> = names
            .iter()
            .filter_map(|n| known.ms.get(n).copied())
            .collect();
        seen.sort_unstable();
        let median = seen.get(seen.len() / 2).copied().unwrap_or(0);
        let expected = names
            .iter()
            .map(|n| (n.clone(), known.ms.get(n).copied().unwrap_or(median)))
            .collect();
        Tally {
            total: names.len(),
            jobs: 1,
            done: 0,
            failed: 0,
            cut_off: 0,
            running: BTreeMap::new(),
            expected,
            informed: !seen.is_empty(),
            ran: Vec::new(),
        }
    }

    pub fn event(&mut self, e: &Event, now: Instant) {
        match e {
            Event::BuildStarted { actions, jobs } => {
                // A rerun (the remote cache's) starts over.
                self.total = *actions;
                self.jobs = (*jobs).max(1);
                self.done = 0;
                self.failed = 0;
                self.cut_off = 0;
                self.running.clear();
            }
            Event::ActionStarted { name, .. } => {
                self.running.insert(name.clone(), now);
            }
            Event::ActionFinished {
                name,
                status,
                duration_ms,
                ..
            } => {
                self.running.remove(name);
                self.expected.remove(name);
                self.done += 1;
                match status {
                    Status::Failed { .. } => self.failed += 1,
                    Status::CutOff => self.cut_off += 1,
                    _ => {}
                }
                if matches!(status, Status::Ran | Status::CutOff) {
                    self.ran.push((name.clone(), *duration_ms));
                }
            }
            Event::BuildFinished { .. } => {}
        }
    }

    /// The estimate of the time left: the expected work of what is queued plus what the
    /// running actions have still to do, shared by the jobs — never less than the longest
    /// of those still to finish. `None` without any recorded duration.
    pub fn left(&self, now: Instant) -> Option<Duration> {
        if !self.informed {
            return None;
        }
        let mut work: u64 = 0;
        let mut longest: u64 = 0;
        for (name, ms) in &self.expected {
            let rest = match self.running.get(name) {
                Some(started) => {
                    ms.saturating_sub(now.saturating_duration_since(*started).as_millis() as u64)
                }
                None => *ms,
            };
            work += rest;
            longest = longest.max(rest);
        }
        Some(Duration::from_millis(
            (work / self.jobs as u64).max(longest),
        ))
    }

    /// `812/7080 done (400 cut off, 3 failed), 2 running, 6266 queued, about 2h 10m left`.
    pub fn summary(&self, now: Instant) -> String {
        let queued = self.total.saturating_sub(self.done + self.running.len());
        let mut s = format!(
            "{}/{} done ({} cut off, {} failed), {} running, {queued} queued",
            self.done,
            self.total,
            self.cut_off,
            self.failed,
            self.running.len()
        );
        if let Some(left) = self.left(now) {
            s.push_str(&format!(", about {} left", span(left)));
        }
        s
    }

    /// The running actions, longest-running first, with their elapsed time.
    pub fn running(&self, now: Instant) -> Vec<(String, Duration)> {
        let mut r: Vec<_> = self
            .running
            .iter()
            .map(|(n, t)| (n.clone(), now.saturating_duration_since(*t)))
            .collect();
        r.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        r
    }

    /// One log line: the summary and what runs.
    pub fn line(&self, now: Instant) -> String {
        let mut s = format!("{:>12} {}", "Progress", self.summary(now));
        let running = self.running(now);
        if !running.is_empty() {
            let shown: Vec<String> = running
                .iter()
                .take(8)
                .map(|(n, d)| format!("{n} {}", span(*d)))
                .collect();
            s.push_str("; running: ");
            s.push_str(&shown.join(", "));
            if running.len() > shown.len() {
                s.push_str(&format!(" and {} more", running.len() - shown.len()));
            }
        }
        s
    }
}

/// `2h 10m`, `4m 05s`, `12s`, `<1s`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "<1s".to_owned(),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `KEEL_PROGRESS_INTERVAL`: seconds between plain `Progress` lines (60 by default).
fn plain_interval() -> Duration {
    std::env::var("KEEL_PROGRESS_INTERVAL")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(60), Duration::from_secs_f64)
}

impl Progress {
    pub fn new(out: Output, tally: Tally) -> Progress {
        let tally = Arc::new(Mutex::new(tally));
        let bars = (!out.json && !out.quiet && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total = multi.add(ProgressBar::new(0));
            total.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12.cyan.bold} [{bar:30}] {pos}/{len} {wide_msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            total.set_prefix("Building");
            total.enable_steady_tick(Duration::from_millis(200));
            Bars {
                multi,
                total,
                running: HashMap::new(),
            }
        });
        let plain_every = (bars.is_none() && !out.json && !out.quiet).then(plain_interval);
        let ticker = plain_every
            .filter(|d| !d.is_zero())
            .map(|every| Ticker::start(Arc::clone(&tally), every));
        Progress {
            out,
            bars,
            tally,
            plain_every,
            last_line: Instant::now(),
            ticker,
        }
    }

    pub fn event(&mut self, e: &Event) {
        let now = Instant::now();
        let mut tally = self.tally.lock().expect("tally lock");
        tally.event(e, now);
        if self.out.json {
            // A closed stdout must not stop the build; the summary reports the end.
            let _ = self.out.json_value(e);
            return;
        }
        match &mut self.bars {
            Some(b) => {
                b.event(e);
                b.total.set_message(tally.summary(now));
            }
            None => {
                self.plain(e);
                // After an action that ran, when the interval has passed (the ticker
                // covers the quiet times in between).
                if let (Some(every), Event::ActionFinished { status, .. }) = (self.plain_every, e)
                    && matches!(status, Status::Ran | Status::CutOff | Status::Failed { .. })
                    && now.saturating_duration_since(self.last_line) >= every
                {
                    error_line(&tally.line(now));
                    self.last_line = now;
                }
            }
        }
    }

    /// The actions that ran and how long each took (for [`Durations::record`]).
    pub fn ran(&self) -> Vec<(String, u64)> {
        self.tally.lock().expect("tally lock").ran.clone()
    }

    fn plain(&self, e: &Event) {
        if self.out.quiet {
            if let Event::ActionFinished {
                name,
                status: Status::Failed { error },
                ..
            } = e
            {
                error_line(&format!("error: {name} failed: {error}"));
            }
            return;
        }
        match e {
            Event::ActionStarted { name, reasons, .. } => {
                let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                error_line(&format!("{:>12} {name} ({})", "Running", why.join("; ")));
            }
            Event::ActionFinished {
                name,
                status,
                duration_ms,
                ..
            } => match status {
                Status::Ran => error_line(&format!(
                    "{:>12} {name} in {}",
                    "Finished",
                    secs(*duration_ms)
                )),
                Status::CutOff => error_line(&format!(
                    "{:>12} {name} in {} (output unchanged: dependents cut off)",
                    "Finished",
                    secs(*duration_ms)
                )),
                Status::Failed { error } => {
                    error_line(&format!("{:>12} {name}: {error}", "Failed"));
                }
                _ => {}
            },
            _ => {}
        }
    }

    pub fn finish(&mut self) {
        if let Some(t) = self.ticker.take() {
            drop(t.stop);
            let _ = t.thread.join();
        }
        if let Some(b) = self.bars.take() {
            b.total.finish_and_clear();
            for (_, bar) in b.running {
                bar.finish_and_clear();
            }
            let _ = b.multi.clear();
        }
    }
}

impl Ticker {
    fn start(tally: Arc<Mutex<Tally>>, every: Duration) -> Ticker {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // Until `stop` is dropped: a line whenever `every` passes in silence.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                let t = tally.lock().expect("tally lock");
                if t.done < t.total {
                    error_line(&t.line(Instant::now()));
                }
            }
        });
        Ticker { stop, thread }
    }
}

impl Bars {
    fn event(&mut self, e: &Event) {
        match e {
            Event::BuildStarted { actions, .. } => self.total.set_length(*actions as u64),
            Event::ActionStarted { name, reasons, .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>12.green} {msg} {elapsed}")
                        .expect("valid template"),
                );
                bar.set_prefix("Running");
                let why = reasons.first().map(ToString::to_string).unwrap_or_default();
                bar.set_message(format!("{name} ({why})"));
                bar.enable_steady_tick(Duration::from_millis(200));
                self.running.insert(name.clone(), bar);
            }
            Event::ActionFinished {
                name,
                status,
                duration_ms,
                ..
            } => {
                self.total.inc(1);
                if let Some(bar) = self.running.remove(name) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                let line = match status {
                    Status::Ran => Some(format!(
                        "{:>12} {name} in {}",
                        "Finished",
                        secs(*duration_ms)
                    )),
                    Status::CutOff => Some(format!(
                        "{:>12} {name} in {} (output unchanged: dependents cut off)",
                        "Finished",
                        secs(*duration_ms)
                    )),
                    Status::Failed { error } => Some(format!("{:>12} {name}: {error}", "Failed")),
                    _ => None,
                };
                if let Some(l) = line {
                    let _ = self.multi.println(l);
                }
            }
            Event::BuildFinished { .. } => {}
        }
    }
}

/// `1.2 s` / `35 ms`.
pub fn secs(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_engine::ActionKind;

    fn started(name: &str) -> Event {
        Event::ActionStarted {
            name: name.into(),
            kind: ActionKind::RpmBuild,
            reasons: Vec::new(),
            t_ms: 0,
        }
    }

    fn finished(name: &str, status: Status, ms: u64) -> Event {
        Event::ActionFinished {
            name: name.into(),
            kind: ActionKind::RpmBuild,
            status,
            duration_ms: ms,
            t_ms: 0,
        }
    }

    fn known(pairs: &[(&str, u64)]) -> Durations {
        Durations {
            ms: pairs.iter().map(|(n, m)| ((*n).to_owned(), *m)).collect(),
        }
    }

    #[test]
    fn counts_every_state_and_estimates_from_recorded_durations() {
        let names = ["a", "b", "c", "d", "e"].map(String::from);
        // `e` was never timed: it is expected to take the median of the others (20 s).
        let d = known(&[("a", 10_000), ("b", 20_000), ("c", 40_000), ("d", 20_000)]);
        let mut t = Tally::new(names, &d);
        let t0 = Instant::now();
        t.event(
            &Event::BuildStarted {
                actions: 5,
                jobs: 2,
            },
            t0,
        );
        // Nothing done: (10 + 20 + 40 + 20 + 20) s of work on two jobs.
        assert_eq!(t.left(t0), Some(Duration::from_secs(55)));
        t.event(&started("c"), t0);
        t.event(&finished("a", Status::Cached, 1), t0);
        t.event(
            &finished("b", Status::Failed { error: "x".into() }, 3_000),
            t0,
        );
        let later = t0 + Duration::from_secs(30);
        // c has 10 s to go, d and e 20 s each: 50 s on two jobs.
        assert_eq!(t.left(later), Some(Duration::from_secs(25)));
        assert_eq!(
            t.summary(later),
            "2/5 done (0 cut off, 1 failed), 1 running, 2 queued, about 25s left"
        );
        let line = t.line(later);
        assert!(line.ends_with("; running: c 30s"), "{line}");
        t.event(&finished("c", Status::CutOff, 41_000), later);
        t.event(&finished("d", Status::Ran, 19_000), later);
        // One action left: the estimate is never less than it.
        assert_eq!(t.left(later), Some(Duration::from_secs(20)));
        assert_eq!(
            t.ran,
            vec![("c".to_owned(), 41_000), ("d".to_owned(), 19_000)]
        );
    }

    #[test]
    fn no_estimate_without_a_recorded_duration() {
        let mut t = Tally::new(["a".to_owned()], &Durations::default());
        let now = Instant::now();
        t.event(
            &Event::BuildStarted {
                actions: 1,
                jobs: 1,
            },
            now,
        );
        assert_eq!(t.left(now), None);
        assert_eq!(
            t.summary(now),
            "0/1 done (0 cut off, 0 failed), 0 running, 1 queued"
        );
    }

    #[test]
    fn spans_read_like_a_clock() {
        let s = |secs| span(Duration::from_secs(secs));
        assert_eq!(
            [s(0), s(12), s(245), s(7_830)],
            ["<1s", "12s", "4m 05s", "2h 10m"]
        );
    }

    #[test]
    fn durations_survive_a_round_trip_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = Durations::path(dir.path(), dir.path(), "test");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut d = Durations::load(&path);
        d.record(&path, &[("a".into(), 5), ("b".into(), 7)]);
        let mut d = Durations::load(&path);
        d.record(&path, &[("a".into(), 9)]);
        let d = Durations::load(&path);
        assert_eq!(d.ms, [("a".into(), 9), ("b".into(), 7)].into());
    }
}
