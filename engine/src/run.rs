//! Running a graph: cache lookups, execution, recording, scheduling, keep-going and
//! cancellation.
//!
//! Before the build, the previous record of every target is read (and verified by the
//! store) on `jobs` threads. Then one coordinator thread owns all build state: it takes the
//! ready action with the longest remaining path, computes its key, and when the key is the
//! previous build's it completes the action itself (the common case of an incremental
//! build). Otherwise it hands the action to one of `jobs` worker threads — only when one is
//! free, so priorities hold — which looks the key up, runs the action on a miss and records
//! the result *before* reporting back, so a crash loses only what was in flight.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{LineWriter, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_store::{ActionKey, ActionRecord, ObjectRef, Store};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, ExecError};
use crate::exec::{CancelToken, ExecContext, Executor};
use crate::explain::{
    self, DirtyReason, Explanation, Plan, Previous, load_all_previous, reasons_against,
};
use crate::graph::{ActionId, Graph};
use crate::keys::{ActionKind, KeyRecord, OutputDigest, OutputDigests, compute_key};
use crate::remote::RemoteCache;
use crate::sched::{ReadyQueue, compute_priorities};

/// How to run a build.
#[derive(Debug, Clone)]
pub struct Config {
    /// Actions run at once (`-j`). Not an input of any key.
    pub jobs: usize,
    /// Keep building everything that does not depend on a failure.
    pub keep_going: bool,
    /// Set it to stop the build (Ctrl-C).
    pub cancel: CancelToken,
    /// Where to write this build's event log (JSON lines), if anywhere.
    pub event_log: Option<PathBuf>,
    /// The targets to build with their dependencies; empty builds everything.
    pub targets: Vec<ActionId>,
    /// A shared cache asked after the local store misses and told every new result.
    pub remote: Option<Arc<dyn RemoteCache>>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            keep_going: false,
            cancel: CancelToken::new(),
            event_log: None,
            targets: Vec::new(),
            remote: None,
        }
    }
}

/// What happened to one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Status {
    /// Its key was in the cache.
    Cached,
    /// Its key was in the remote cache.
    Remote,
    /// It ran and its output differs from the previous build's (or there was none).
    Ran,
    /// It ran and produced the same output as the previous build, byte for byte: its
    /// dependents' keys are unchanged (early cutoff). An action whose bytes changed but
    /// whose summary did not is `Ran`; dependents reading only the summary are then
    /// `Cached`.
    CutOff,
    Failed {
        error: String,
    },
    /// Not run because `dep` (the action that failed first) failed.
    DependencyFailed {
        dep: String,
    },
    /// Not started because the build stopped after a failure (without keep-going).
    Stopped,
    /// Not started, or stopped while running, because the build was cancelled. Nothing
    /// was recorded for it.
    Cancelled,
}

impl Status {
    /// Whether the action was executed (not answered from the cache).
    pub fn executed(&self) -> bool {
        matches!(self, Status::Ran | Status::CutOff)
    }

    /// Whether the action was answered from a cache, local or remote.
    pub fn cached(&self) -> bool {
        matches!(self, Status::Cached | Status::Remote)
    }
}

/// The result of one action in a build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionReport {
    pub name: String,
    pub kind: ActionKind,
    pub status: Status,
    /// Absent when the action was never reached.
    pub key: Option<ActionKey>,
    /// Its [`View::Bytes`](crate::View::Bytes) output digest.
    pub output: Option<OutputDigest>,
    /// Its [`View::Summary`](crate::View::Summary) output digest.
    #[serde(default)]
    pub summary_output: Option<OutputDigest>,
    /// Why it ran (empty when it did not).
    pub reasons: Vec<DirtyReason>,
    /// Milliseconds since the build started, when the action was handed to a worker.
    pub start_ms: u64,
    /// Wall time spent on it, lookup included.
    pub duration_ms: u64,
}

impl ActionReport {
    /// Both output digests, when it has a result.
    pub fn outputs(&self) -> Option<crate::OutputDigests> {
        Some(crate::OutputDigests {
            bytes: self.output?,
            summary: self.summary_output?,
        })
    }

    /// Whether it ran because of its own inputs (a root) rather than only because a
    /// dependency's output changed (a cascade).
    pub fn is_root(&self) -> bool {
        self.status.executed() && !self.reasons.iter().all(DirtyReason::is_cascade)
    }
}

/// The totals of a build.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Actions in the build (the targets and their dependencies).
    pub actions: usize,
    /// Actions executed, cut-off ones included.
    pub ran: usize,
    /// Actions answered from a cache, the remote included.
    pub cached: usize,
    /// Of those, the ones the remote cache answered.
    #[serde(default)]
    pub remote: usize,
    /// Executed actions whose output came out as before.
    pub cut_off: usize,
    pub failed: usize,
    /// Not run because of a failure (dependency failed, or the build stopped).
    pub skipped: usize,
    pub cancelled: usize,
    /// cached / (cached + ran + failed), remote hits included; 0 when nothing was looked up.
    pub hit_rate: f64,
    pub wall_ms: u64,
    /// The chain of executed actions that determined the build's length, first to last, by the
    /// measured duration of each.
    pub critical_path: Vec<String>,
    pub critical_path_ms: u64,
}

/// Everything a build did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildReport {
    /// Indexed by [`ActionId::index`]; `None` for actions outside the requested targets.
    pub actions: Vec<Option<ActionReport>>,
    pub summary: Summary,
}

impl BuildReport {
    /// Whether every action in the build is cached or ran successfully.
    pub fn success(&self) -> bool {
        self.summary.failed == 0 && self.summary.skipped == 0 && self.summary.cancelled == 0
    }

    pub fn get(&self, id: ActionId) -> Option<&ActionReport> {
        self.actions[id.index()].as_ref()
    }

    /// The reports of the actions that were executed.
    pub fn executed(&self) -> impl Iterator<Item = &ActionReport> {
        self.actions
            .iter()
            .flatten()
            .filter(|a| a.status.executed())
    }
}

/// A build event, as given to the observer and written to the event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    BuildStarted {
        actions: usize,
        jobs: usize,
    },
    /// An action missed the cache and starts executing.
    ActionStarted {
        name: String,
        kind: ActionKind,
        reasons: Vec<DirtyReason>,
        t_ms: u64,
    },
    /// An action's outcome is decided (cached, ran, failed, skipped…).
    ActionFinished {
        name: String,
        kind: ActionKind,
        #[serde(flatten)]
        status: Status,
        duration_ms: u64,
        t_ms: u64,
    },
    BuildFinished {
        summary: Summary,
    },
}

/// Runs graphs against one store.
#[derive(Debug, Clone, Copy)]
pub struct Engine<'s> {
    store: &'s Store,
}

struct Job {
    id: ActionId,
    key: ActionKey,
    current: KeyRecord,
    previous: Option<Previous>,
    deps: Vec<(String, Arc<ActionRecord>)>,
}

enum Outcome {
    Hit(ActionRecord),
    RemoteHit(ActionRecord),
    Ran { record: ActionRecord, cut_off: bool },
    Failed(String),
    Cancelled,
}

enum Msg {
    Started {
        id: ActionId,
        reasons: Vec<DirtyReason>,
    },
    Done {
        id: ActionId,
        key: ActionKey,
        outcome: Box<Outcome>,
        reasons: Vec<DirtyReason>,
        elapsed: Duration,
    },
}

impl<'s> Engine<'s> {
    pub fn new(store: &'s Store) -> Engine<'s> {
        Engine { store }
    }

    /// What a build would do, without running anything (`--dry-run`).
    pub fn plan(&self, graph: &Graph, targets: &[ActionId]) -> Result<Plan, EngineError> {
        explain::plan(self.store, graph, targets)
    }

    /// Why `target` is or is not up to date.
    pub fn explain(&self, graph: &Graph, target: &str) -> Result<Explanation, EngineError> {
        explain::explain(self.store, graph, target)
    }

    /// Builds `config.targets` (or everything). Events go to `on_event` as they happen,
    /// on the calling thread. A failing action is reported, not returned as an error; an
    /// error means the build could not be carried out (the event log cannot be written).
    pub fn run(
        &self,
        graph: &Graph,
        executor: &dyn Executor,
        config: &Config,
        on_event: &mut dyn FnMut(&Event),
    ) -> Result<BuildReport, EngineError> {
        let started = Instant::now();
        let jobs = config.jobs.max(1);
        let mut log = match &config.event_log {
            None => None,
            Some(path) => Some((
                LineWriter::new(File::create(path).map_err(|source| EngineError::EventLog {
                    path: path.clone(),
                    source,
                })?),
                path.clone(),
            )),
        };
        let mut emit = |e: Event| -> Result<(), EngineError> {
            if let Some((w, path)) = log.as_mut() {
                serde_json::to_writer(&mut *w, &e)
                    .map_err(std::io::Error::from)
                    .and_then(|()| w.write_all(b"\n"))
                    .map_err(|source| EngineError::EventLog {
                        path: path.clone(),
                        source,
                    })?;
            }
            on_event(&e);
            Ok(())
        };

        let n = graph.len();
        let mask = if config.targets.is_empty() {
            vec![true; n]
        } else {
            graph.closure(&config.targets)
        };
        let in_build = mask.iter().filter(|m| **m).count();
        emit(Event::BuildStarted {
            actions: in_build,
            jobs,
        })?;

        let mut previous = load_all_previous(self.store, graph, &mask, jobs);
        // Each action's expected duration: the rules' estimate, else the previous run's.
        let known: Vec<Option<u64>> = graph
            .iter()
            .map(|(id, a)| {
                a.estimate_ms.or_else(|| {
                    previous[id.index()]
                        .as_ref()
                        .and_then(|p| p.record.as_ref())
                        .map(|r| r.duration_ms)
                })
            })
            .collect();
        let durations: Vec<u64> = known.iter().map(|d| d.unwrap_or(0) + 1).collect();
        let prio = compute_priorities(graph, &mask, &durations);
        // Without either, an action's inputs stand in for its duration once they exist
        // (see `guess_from_inputs`).
        let guessed: Vec<bool> = known.iter().map(Option::is_none).collect();

        let mut st = BuildState {
            graph,
            mask: &mask,
            prio,
            guessed,
            remaining: graph.iter().map(|(_, a)| a.deps.len()).collect(),
            ready: ReadyQueue::default(),
            records: vec![None; n],
            outputs: vec![None; n],
            reports: vec![None; n],
            stopping: false,
            keep_going: config.keep_going,
            started,
        };
        for id in graph.ids() {
            if mask[id.index()] && st.remaining[id.index()] == 0 {
                st.ready.push(st.prio[id.index()], id);
            }
        }
        let mut running = 0usize;

        // Remote lookups wait on the network, not on the machine: with a remote, more
        // actions are taken up at once than `jobs`, and only `jobs` of them execute.
        let slots = if config.remote.is_some() {
            jobs + REMOTE_LOOKAHEAD
        } else {
            jobs
        };
        let permits = Permits::new(jobs);
        let (job_tx, job_rx) = mpsc::channel::<Job>();
        let job_rx = Mutex::new(job_rx);
        let (msg_tx, msg_rx) = mpsc::channel::<Msg>();
        let store = self.store;

        std::thread::scope(|scope| -> Result<(), EngineError> {
            for _ in 0..slots {
                let msg_tx = msg_tx.clone();
                let permits = &permits;
                let job_rx = &job_rx;
                let cancel = &config.cancel;
                let remote = config.remote.as_deref();
                scope.spawn(move || {
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        work(
                            store, graph, executor, remote, permits, cancel, job, &msg_tx,
                        );
                    }
                });
            }
            drop(msg_tx);
            loop {
                if config.cancel.is_cancelled() {
                    st.stopping = true;
                }
                while !st.stopping {
                    let Some(id) = st.ready.pop() else { break };
                    let action = graph.action(id);
                    let mut deps = BTreeMap::new();
                    let view = action.kind().dependency_view();
                    for d in &action.deps {
                        let out = st.outputs[d.index()].expect("a ready action's deps are done");
                        deps.insert(graph.action(*d).name.clone(), out.view(view));
                    }
                    let key = compute_key(&action.inputs, &deps);
                    let prev = &mut previous[id.index()];
                    // The common case of an incremental build, decided here without a
                    // round trip to a worker: the same key as last time, whose record
                    // (read and verified before the build) is still in the store.
                    if let Some(p) = prev.as_ref()
                        && p.key == key
                        && let Some(record) = p.record.clone()
                    {
                        st.dispatched(id, key);
                        let event =
                            st.finish(id, key, Outcome::Hit(record), Vec::new(), Duration::ZERO);
                        emit(event)?;
                        continue;
                    }
                    if running == slots {
                        st.ready.push(st.prio[id.index()], id);
                        break;
                    }
                    st.dispatched(id, key);
                    let job = Job {
                        id,
                        key,
                        current: KeyRecord::new(action.inputs.clone(), deps),
                        previous: prev.take(),
                        deps: action
                            .deps
                            .iter()
                            .map(|d| {
                                let rec = st.records[d.index()].clone();
                                (
                                    graph.action(*d).name.clone(),
                                    rec.expect("done deps have records"),
                                )
                            })
                            .collect(),
                    };
                    job_tx
                        .send(job)
                        .expect("workers outlive the coordinator loop");
                    running += 1;
                }
                if running == 0 {
                    break;
                }
                let msg = match msg_rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                match msg {
                    Msg::Started { id, reasons } => {
                        let a = graph.action(id);
                        emit(Event::ActionStarted {
                            name: a.name.clone(),
                            kind: a.kind(),
                            reasons,
                            t_ms: started.elapsed().as_millis() as u64,
                        })?;
                    }
                    Msg::Done {
                        id,
                        key,
                        outcome,
                        reasons,
                        elapsed,
                    } => {
                        running -= 1;
                        let event = st.finish(id, key, *outcome, reasons, elapsed);
                        emit(event)?;
                    }
                }
            }
            drop(job_tx);
            Ok(())
        })?;
        let mut reports = st.reports;

        // Everything never reached: say why.
        for (id, action) in graph.iter() {
            if !mask[id.index()] || reports[id.index()].is_some() {
                continue;
            }
            let failed_dep = action.deps.iter().find_map(|d| {
                match reports[d.index()].as_ref().map(|r| &r.status) {
                    Some(Status::Failed { .. }) => Some(graph.action(*d).name.clone()),
                    Some(Status::DependencyFailed { dep }) => Some(dep.clone()),
                    _ => None,
                }
            });
            let status = match failed_dep {
                Some(dep) => Status::DependencyFailed { dep },
                None if config.cancel.is_cancelled() => Status::Cancelled,
                None => Status::Stopped,
            };
            emit(Event::ActionFinished {
                name: action.name.clone(),
                kind: action.kind(),
                status: status.clone(),
                duration_ms: 0,
                t_ms: started.elapsed().as_millis() as u64,
            })?;
            reports[id.index()] = Some(ActionReport {
                name: action.name.clone(),
                kind: action.kind(),
                status,
                key: None,
                output: None,
                summary_output: None,
                reasons: Vec::new(),
                start_ms: 0,
                duration_ms: 0,
            });
        }

        let summary = summarize(graph, &reports, started.elapsed());
        emit(Event::BuildFinished {
            summary: summary.clone(),
        })?;
        Ok(BuildReport {
            actions: reports,
            summary,
        })
    }
}

/// The coordinator's view of a build in progress.
struct BuildState<'g> {
    graph: &'g Graph,
    mask: &'g [bool],
    prio: Vec<u64>,
    /// Actions with no duration to go by (no estimate, no previous record).
    guessed: Vec<bool>,
    /// Dependencies not yet done, per action.
    remaining: Vec<usize>,
    ready: ReadyQueue,
    records: Vec<Option<Arc<ActionRecord>>>,
    outputs: Vec<Option<OutputDigests>>,
    reports: Vec<Option<ActionReport>>,
    /// No new work is started (a failure without keep-going, or cancellation).
    stopping: bool,
    keep_going: bool,
    started: Instant,
}

/// Expected milliseconds of work per KiB of input, for an action with no history.
const GUESS_MS_PER_KIB: u64 = 10;

/// A duration for an action that has none to go by, once its dependencies are done:
/// proportional to the bytes they produced for it ([`GUESS_MS_PER_KIB`]). From an empty
/// store every build is such an action, and a package whose SRPM is ten times larger is
/// more likely the one that should not start last.
fn guess_from_inputs(graph: &Graph, records: &[Option<Arc<ActionRecord>>], id: ActionId) -> u64 {
    let bytes: u64 = graph
        .action(id)
        .deps
        .iter()
        .filter_map(|d| records[d.index()].as_deref())
        .flat_map(|r| &r.outputs)
        .map(|o| match &o.object {
            ObjectRef::Blob(b) => b.size(),
            ObjectRef::Tree(t) => t.size(),
        })
        .sum();
    bytes / 1024 * GUESS_MS_PER_KIB
}

impl BuildState<'_> {
    /// Notes that `id` was taken up, with this key.
    fn dispatched(&mut self, id: ActionId, key: ActionKey) {
        let action = self.graph.action(id);
        self.reports[id.index()] = Some(ActionReport {
            name: action.name.clone(),
            kind: action.kind(),
            // Until a worker says otherwise: what a build interrupted now would report.
            status: Status::Cancelled,
            key: Some(key),
            output: None,
            summary_output: None,
            reasons: Vec::new(),
            start_ms: self.started.elapsed().as_millis() as u64,
            duration_ms: 0,
        });
    }

    /// Records how `id` ended, readies its dependents, and returns the event to emit.
    fn finish(
        &mut self,
        id: ActionId,
        key: ActionKey,
        outcome: Outcome,
        reasons: Vec<DirtyReason>,
        elapsed: Duration,
    ) -> Event {
        let report = self.reports[id.index()].as_mut().expect("dispatched");
        report.key = Some(key);
        report.reasons = reasons;
        report.duration_ms = elapsed.as_millis() as u64;
        let record = match outcome {
            Outcome::Hit(r) => {
                report.status = Status::Cached;
                Some(r)
            }
            Outcome::RemoteHit(r) => {
                report.status = Status::Remote;
                Some(r)
            }
            Outcome::Ran { record, cut_off } => {
                report.status = if cut_off { Status::CutOff } else { Status::Ran };
                Some(record)
            }
            Outcome::Failed(error) => {
                report.status = Status::Failed { error };
                if !self.keep_going {
                    self.stopping = true;
                }
                None
            }
            Outcome::Cancelled => {
                report.status = Status::Cancelled;
                None
            }
        };
        if let Some(record) = record {
            let out = OutputDigests::of(&record.outputs);
            report.output = Some(out.bytes);
            report.summary_output = Some(out.summary);
            self.outputs[id.index()] = Some(out);
            self.records[id.index()] = Some(Arc::new(record));
            for d in self.graph.dependents(id) {
                self.remaining[d.index()] -= 1;
                if self.remaining[d.index()] == 0 && self.mask[d.index()] {
                    if self.guessed[d.index()] {
                        self.prio[d.index()] += guess_from_inputs(self.graph, &self.records, *d);
                    }
                    self.ready.push(self.prio[d.index()], *d);
                }
            }
        }
        Event::ActionFinished {
            name: report.name.clone(),
            kind: report.kind,
            status: report.status.clone(),
            duration_ms: report.duration_ms,
            t_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// One action on a worker thread: look up, or run and record; then report.
#[expect(
    clippy::too_many_arguments,
    reason = "one worker's whole world, passed once"
)]
fn work(
    store: &Store,
    graph: &Graph,
    executor: &dyn Executor,
    remote: Option<&dyn RemoteCache>,
    permits: &Permits,
    cancel: &CancelToken,
    job: Job,
    tx: &mpsc::Sender<Msg>,
) {
    let begun = Instant::now();
    let action = graph.action(job.id);
    let span = tracing::info_span!("action", name = %action.name, kind = %action.kind());
    let _enter = span.enter();
    let key = job.key;
    let done = |outcome: Outcome, reasons: Vec<DirtyReason>| {
        let _ = tx.send(Msg::Done {
            id: job.id,
            key,
            outcome: Box::new(outcome),
            reasons,
            elapsed: begun.elapsed(),
        });
    };

    let previous = job.previous.as_ref();
    let hit = match previous {
        Some(p) if p.key == key && p.record.is_some() => p.record.clone(),
        _ => store.ac_get(&key).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "action cache lookup failed; treating as a miss");
            None
        }),
    };
    if let Some(record) = hit {
        if previous.is_none_or(|p| p.key != key) {
            remember(store, &action.name, &key);
        }
        tracing::debug!(%key, "cached");
        return done(Outcome::Hit(record), Vec::new());
    }
    if let Some(hit) = remote.and_then(|r| r.lookup(store, action, &key)) {
        if hit.local {
            remember(store, &action.name, &key);
        }
        tracing::debug!(%key, local = hit.local, "found in the remote cache");
        return done(Outcome::RemoteHit(hit.record), Vec::new());
    }
    let _permit = permits.acquire();
    if cancel.is_cancelled() {
        return done(Outcome::Cancelled, Vec::new());
    }
    let reasons = reasons_against(previous, &job.current, &key, &[]);
    tracing::info!(%key, reasons = ?reasons, "running");
    let _ = tx.send(Msg::Started {
        id: job.id,
        reasons: reasons.clone(),
    });

    let ctx = ExecContext {
        store,
        id: job.id,
        action,
        key,
        deps: job.deps.iter().map(|(n, r)| (n.as_str(), &**r)).collect(),
        cancel,
    };
    let exec_start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| executor.execute(&ctx))).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(ExecError::Failed {
            message: format!("executor panicked: {what}"),
        })
    });
    let outcome = match result {
        Ok(out) => {
            let mut record = ActionRecord::new(key, out.outputs, job.current.to_json());
            record.log = out.log;
            record.duration_ms = exec_start.elapsed().as_millis() as u64;
            // Recorded now, before anyone hears of it: a crash after this point keeps it.
            // A failed cache write never fails the build; the result is still used.
            if let Err(e) = store.ac_put(&record) {
                tracing::warn!(error = %e, "could not record the result in the action cache");
            } else {
                remember(store, &action.name, &key);
                if let Some(r) = remote {
                    r.publish(store, action, &record);
                }
            }
            // The bytes digest covers the summary too: equal bytes, every dependent cut off.
            let output = OutputDigests::of(&record.outputs).bytes;
            let cut_off = previous.and_then(Previous::output).map(|o| o.bytes) == Some(output);
            tracing::info!(%output, cut_off, "finished");
            Outcome::Ran { record, cut_off }
        }
        Err(ExecError::Cancelled) => {
            tracing::info!("cancelled");
            Outcome::Cancelled
        }
        Err(e) => {
            tracing::info!(error = %e, "failed");
            Outcome::Failed(error_chain(&e))
        }
    };
    done(outcome, reasons);
}

/// Actions taken up beyond `jobs` when a remote cache may answer them.
const REMOTE_LOOKAHEAD: usize = 6;

/// A counting semaphore: at most `jobs` actions execute at once.
struct Permits {
    free: Mutex<usize>,
    freed: std::sync::Condvar,
}

struct Permit<'a>(&'a Permits);

impl Permits {
    fn new(n: usize) -> Permits {
        Permits {
            free: Mutex::new(n),
            freed: std::sync::Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

fn remember(store: &Store, target: &str, key: &ActionKey) {
    if let Err(e) = store.target_set(target, key) {
        tracing::warn!(target, error = %e, "could not update the target index");
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn summarize(graph: &Graph, reports: &[Option<ActionReport>], wall: Duration) -> Summary {
    let mut s = Summary {
        wall_ms: wall.as_millis() as u64,
        ..Summary::default()
    };
    // Longest chain of measured durations, following each action's slowest dependency,
    // through executed actions only: a cache hit took no time in this build and is no
    // link of its critical path (its duration is that of the build that made it).
    let mut chain_ms = vec![0u64; graph.len()];
    // Equal times (sub-millisecond actions) are broken by the longer chain, so the
    // critical path is the same whatever the clock said.
    let mut chain_len = vec![0usize; chain_ms.len()];
    let mut via: Vec<Option<ActionId>> = vec![None; graph.len()];
    let mut best: Option<ActionId> = None;
    for (id, action) in graph.iter() {
        let Some(r) = &reports[id.index()] else {
            continue;
        };
        s.actions += 1;
        match &r.status {
            Status::Cached => s.cached += 1,
            Status::Remote => {
                s.cached += 1;
                s.remote += 1;
            }
            Status::Ran => s.ran += 1,
            Status::CutOff => {
                s.ran += 1;
                s.cut_off += 1;
            }
            Status::Failed { .. } => s.failed += 1,
            Status::DependencyFailed { .. } | Status::Stopped => s.skipped += 1,
            Status::Cancelled => s.cancelled += 1,
        }
        if !matches!(
            r.status,
            Status::Ran | Status::CutOff | Status::Failed { .. }
        ) {
            continue;
        }
        let slowest = action
            .deps
            .iter()
            .filter(|d| chain_len[d.index()] > 0)
            .max_by_key(|d| (chain_ms[d.index()], chain_len[d.index()]));
        via[id.index()] = slowest.copied();
        chain_ms[id.index()] = r.duration_ms + slowest.map_or(0, |d| chain_ms[d.index()]);
        chain_len[id.index()] = 1 + slowest.map_or(0, |d| chain_len[d.index()]);
        let rank = |x: ActionId| (chain_ms[x.index()], chain_len[x.index()]);
        if best.is_none_or(|b| rank(id) > rank(b)) {
            best = Some(id);
        }
    }
    // A failed action was looked up and missed too; a build that looked nothing up has
    // no hit rate to speak of (0, not 100%).
    let decided = s.cached + s.ran + s.failed;
    s.hit_rate = if decided == 0 {
        0.0
    } else {
        s.cached as f64 / decided as f64
    };
    if let Some(b) = best {
        s.critical_path_ms = chain_ms[b.index()];
        let mut cur = Some(b);
        while let Some(id) = cur {
            s.critical_path.push(graph.action(id).name.clone());
            cur = via[id.index()];
        }
        s.critical_path.reverse();
    }
    s
}

#[cfg(test)]
mod tests;
