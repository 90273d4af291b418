//! The action graph: actions, their key inputs, and which actions' outputs each one reads.
//!
//! A graph is built by adding actions after the actions they depend on, so it is acyclic
//! by construction and its insertion order is a topological order. Finding and reporting
//! cycles between packages is the rule layer's job, before anything reaches this type.

use std::collections::HashMap;
use std::fmt;

use crate::error::GraphError;
use crate::keys::{ActionKind, KeyInputs};

/// An action's position in its graph. Dependencies always have smaller ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActionId(u32);

impl ActionId {
    /// The position as an index into per-action vectors.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One action: a unique target name, its key inputs and its dependencies.
#[derive(Debug, Clone)]
pub struct Action {
    /// The target's name, unique in the graph. Rules use `kind:package` forms such as
    /// `rpm:bash`, `srpm:bash`, `source:bash/bash-5.2.tar.gz`, `repo:base`, `image:core`.
    pub name: String,
    pub inputs: KeyInputs,
    /// The actions whose outputs this one reads, sorted and without duplicates.
    pub deps: Vec<ActionId>,
    /// How long the action is expected to take, when the rules know better than the
    /// previous build's duration (used only to order work).
    pub estimate_ms: Option<u64>,
}

impl Action {
    pub fn kind(&self) -> ActionKind {
        self.inputs.kind()
    }
}

/// A directed acyclic graph of actions.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    actions: Vec<Action>,
    dependents: Vec<Vec<ActionId>>,
    by_name: HashMap<String, ActionId>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds an action depending on actions already in the graph.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        inputs: KeyInputs,
        deps: &[ActionId],
    ) -> Result<ActionId, GraphError> {
        let name = name.into();
        if self.by_name.contains_key(&name) {
            return Err(GraphError::DuplicateName { name });
        }
        if let Some(bad) = deps.iter().find(|d| d.index() >= self.actions.len()) {
            return Err(GraphError::UnknownDependency {
                action: name,
                dependency: *bad,
            });
        }
        let id = ActionId(u32::try_from(self.actions.len()).expect("fewer than 2^32 actions"));
        let mut deps = deps.to_vec();
        deps.sort_unstable();
        deps.dedup();
        for d in &deps {
            self.dependents[d.index()].push(id);
        }
        self.by_name.insert(name.clone(), id);
        self.actions.push(Action {
            name,
            inputs,
            deps,
            estimate_ms: None,
        });
        self.dependents.push(Vec::new());
        Ok(id)
    }

    /// Sets the expected duration of an action (see [`Action::estimate_ms`]).
    pub fn set_estimate(&mut self, id: ActionId, ms: u64) {
        self.actions[id.index()].estimate_ms = Some(ms);
    }

    /// The action with this id. Panics on an id from another graph that is out of range.
    pub fn action(&self, id: ActionId) -> &Action {
        &self.actions[id.index()]
    }

    /// The id of the action named `name`.
    pub fn find(&self, name: &str) -> Option<ActionId> {
        self.by_name.get(name).copied()
    }

    /// The actions that read `id`'s output.
    pub fn dependents(&self, id: ActionId) -> &[ActionId] {
        &self.dependents[id.index()]
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// Every id, dependencies before dependents.
    pub fn ids(&self) -> impl DoubleEndedIterator<Item = ActionId> + ExactSizeIterator {
        (0..self.actions.len() as u32).map(ActionId)
    }

    /// Every action with its id, dependencies first.
    pub fn iter(&self) -> impl Iterator<Item = (ActionId, &Action)> {
        self.ids().zip(&self.actions)
    }

    /// `targets` and everything they depend on, as a membership mask indexed by id.
    pub fn closure(&self, targets: &[ActionId]) -> Vec<bool> {
        let mut mask = vec![false; self.len()];
        let mut stack: Vec<ActionId> = targets.to_vec();
        while let Some(id) = stack.pop() {
            if !std::mem::replace(&mut mask[id.index()], true) {
                stack.extend(&self.actions[id.index()].deps);
            }
        }
        mask
    }
}
