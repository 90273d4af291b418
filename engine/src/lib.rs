//! keel's incremental engine: runs a graph of actions against the store, reusing every
//! result whose inputs have been seen before and explaining every decision.
//!
//! # What it is for
//!
//! The rule layer turns a distribution tree into a [`Graph`] of actions — fetch a source,
//! pack an SRPM, build RPMs, index a repository, assemble an image — each with its
//! [`KeyInputs`] (the digests and values of everything it reads) and its dependencies on
//! other actions' outputs. The engine builds that graph: [`Engine::run`] with an
//! [`Executor`] that knows how to run one action, returning a [`BuildReport`].
//!
//! # How it works
//!
//! - **Keys** ([`keys`]): an action's key hashes its kind, its kind's key version, its
//!   inputs and its dependencies' *output digests*. The key is looked up in the store's
//!   action cache; a hit is used as is (the store verifies every object it serves).
//! - **Early cutoff**: because dependents hash their dependencies' output digests, a rerun
//!   that produces the same output leaves every dependent's key unchanged. The cascade
//!   stops by construction; [`Status::CutOff`] reports where it did. Each dependent hashes
//!   the [`View`] of its dependencies it reads: bytes, or a summary only where its kind
//!   provably reads no more than the summary covers ([`ActionKind::dependency_view`]).
//! - **Recording**: a result is put in the action cache by the worker that produced it,
//!   before anything else hears of it; a crash loses only what was in flight.
//! - **Scheduling** ([`sched`]): up to `jobs` actions at once, the ready action with the
//!   longest remaining path first (durations from the previous build or the rules'
//!   estimates; an action with neither is weighed by the size of its inputs once they
//!   exist). With `keep_going`, everything not depending on a failure still builds.
//!   A [`CancelToken`] stops the build: nothing new starts, running actions are asked to
//!   stop, and nothing is recorded for an action that did not finish.
//! - **Explanations** ([`explain`]): the key inputs are stored as JSON beside each result,
//!   and the store keeps the newest key of each target; comparing the two gives
//!   [`DirtyReason`]s such as "spec changed (Release 3 -> 4)". [`Engine::plan`] is the dry
//!   run, [`Engine::explain`] the chain of reasons for one target.
//! - **Events**: every decision is an [`Event`], given to the caller's observer (for
//!   progress bars) and written as JSON lines to the build's event log.
//!
//! ```
//! use keel_engine::{Config, Engine, Graph, KeyInputs, RepoIndexInputs, Status};
//! use keel_engine::testing::TestExecutor;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = keel_store::Store::open(&dir.path().join("store")).unwrap();
//! let mut graph = Graph::new();
//! graph.add("repo:base", KeyInputs::RepoIndex(RepoIndexInputs {
//!     name: "base".into(),
//!     target_arch: "x86_64".into(),
//!     indexer: "createrepo_c 1.1.2".into(),
//!     options: Default::default(),
//!     executor: keel_engine::ExecutorId::new("test", "none"),
//! }), &[]).unwrap();
//! let engine = Engine::new(&store);
//! let exec = TestExecutor::new();
//! let first = engine.run(&graph, &exec, &Config::default(), &mut |_| {}).unwrap();
//! assert_eq!(first.summary.ran, 1);
//! let second = engine.run(&graph, &exec, &Config::default(), &mut |_| {}).unwrap();
//! assert_eq!(second.actions[0].as_ref().unwrap().status, Status::Cached);
//! ```
//!
//! # What it deliberately does not do
//!
//! It does not read specs, resolve dependencies or find cycles (the rule layer does, and a
//! [`Graph`] is acyclic by construction); it does not run rpmbuild or build images (real
//! executors live with the toolchain); it does not speak any remote cache's protocol (a
//! [`RemoteCache`] given in the [`Config`] is asked after the local store misses); it prints nothing and installs no signal handler (the binary maps Ctrl-C to a
//! [`CancelToken`] and renders [`Event`]s).

mod error;
mod exec;
pub mod explain;
mod graph;
pub mod keys;
mod remote;
mod run;
pub mod sched;
pub mod testing;

pub use error::{EngineError, ExecError, GraphError};
pub use exec::{CancelToken, ExecContext, ExecOutcome, Executor};
pub use explain::{
    Change, Decision, DirtyReason, Explanation, Known, Plan, PlannedAction, plan_known,
};
pub use graph::{Action, ActionId, Graph};
pub use keys::{
    ActionKind, Evr, ExecutorId, ImageInputs, KeyInputs, KeyRecord, OutputDigest, OutputDigests,
    RepoIndexInputs, RpmBuildInputs, SUMMARY_OUTPUT, SourceFetchInputs, SrpmPackInputs,
    ToolchainId, View,
};
pub use remote::{RemoteCache, RemoteHit};
pub use run::{ActionReport, BuildReport, Config, Engine, Event, Status, Summary};
