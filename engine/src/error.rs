//! The engine's error types. Messages are lowercase and read after "failed to …".

use std::path::PathBuf;

use keel_store::StoreError;

use crate::graph::ActionId;

/// A graph that cannot be built as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("add action `{name}`: an action with that name is already in the graph")]
    DuplicateName { name: String },
    #[error("add action `{action}`: dependency {dependency} is not in the graph yet")]
    UnknownDependency {
        action: String,
        dependency: ActionId,
    },
}

/// Why a build or an explanation could not proceed at all. A failing *action* is not an
/// error of the build: it is reported in the [`crate::BuildReport`].
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{what}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },
    #[error("write event log {}", path.display())]
    EventLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("explain `{target}`: no such target in the graph")]
    UnknownTarget { target: String },
}

impl EngineError {
    pub(crate) fn store(what: impl Into<String>) -> impl FnOnce(StoreError) -> EngineError {
        let what = what.into();
        move |source| EngineError::Store { what, source }
    }
}

/// How one execution of an action ended, when it did not produce outputs.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The action ran and failed (a non-zero exit, a build error…).
    #[error("{message}")]
    Failed { message: String },
    /// The build was cancelled while the action ran; it stopped without producing outputs.
    #[error("cancelled")]
    Cancelled,
    /// The store could not take the action's outputs.
    #[error("store outputs")]
    Store(#[from] StoreError),
}
