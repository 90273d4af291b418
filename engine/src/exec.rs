//! The [`Executor`] trait: how one action is run. The engine decides *whether* to run;
//! an executor only runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keel_store::{ActionKey, ActionOutput, ActionRecord, BlobDigest, Store};

use crate::error::ExecError;
use crate::graph::{Action, ActionId};

/// A flag that asks a build to stop (Ctrl-C). Cheap to clone; every clone sees the same
/// flag. Once set, the engine starts nothing new and executors should stop what runs.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks the build to stop. Safe to call from a signal-handling thread.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything an executor gets to run one action.
#[derive(Debug)]
pub struct ExecContext<'a> {
    pub store: &'a Store,
    pub id: ActionId,
    pub action: &'a Action,
    /// The key the result will be recorded under.
    pub key: ActionKey,
    /// Each dependency's name and the record of its result (its outputs are in `store`).
    pub deps: Vec<(&'a str, &'a ActionRecord)>,
    /// Poll this while running; when set, stop and return [`ExecError::Cancelled`].
    pub cancel: &'a CancelToken,
}

/// What a successful execution produced. Every object named must already be stored.
#[derive(Debug, Clone, Default)]
pub struct ExecOutcome {
    pub outputs: Vec<ActionOutput>,
    /// The action's log, if it kept one.
    pub log: Option<BlobDigest>,
}

/// Runs one action. Called from several threads at once.
pub trait Executor: Sync {
    /// Runs the action and stores its outputs. Must depend only on what `ctx` gives it
    /// (the action's key inputs and its dependencies' outputs): that is what makes a
    /// cached result as good as a fresh one.
    fn execute(&self, ctx: &ExecContext<'_>) -> Result<ExecOutcome, ExecError>;
}
