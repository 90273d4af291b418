//! Ordering work: critical path first, and an exact simulation of that policy.
//!
//! When more actions are ready than there are workers, the engine starts the one with the
//! longest *remaining path*: its own expected duration plus the longest chain of expected
//! durations through the actions that wait on it. This is the classic list-scheduling
//! heuristic (HLFET); it keeps the workers busy on whatever would otherwise end up on the
//! critical path late. [`simulate`] runs the same policy on simulated durations, so the
//! policy's quality can be measured exactly against the lower bound
//! max(critical path, total work / workers).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::graph::{ActionId, Graph};

/// Each action's remaining-path length under `durations` (indexed by id), counting only
/// actions in `mask` (pure).
pub fn compute_priorities(graph: &Graph, mask: &[bool], durations: &[u64]) -> Vec<u64> {
    let mut prio = vec![0u64; graph.len()];
    for id in graph.ids().rev() {
        if !mask[id.index()] {
            continue;
        }
        let tail = graph
            .dependents(id)
            .iter()
            .filter(|d| mask[d.index()])
            .map(|d| prio[d.index()])
            .max()
            .unwrap_or(0);
        prio[id.index()] = durations[id.index()] + tail;
    }
    prio
}

/// The ready queue: highest priority first, ties to the lower id (deterministic).
#[derive(Debug, Default)]
pub(crate) struct ReadyQueue(BinaryHeap<(u64, Reverse<ActionId>)>);

impl ReadyQueue {
    pub fn push(&mut self, prio: u64, id: ActionId) {
        self.0.push((prio, Reverse(id)));
    }

    pub fn pop(&mut self) -> Option<ActionId> {
        self.0.pop().map(|(_, Reverse(id))| id)
    }
}

/// The outcome of a simulated build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulation {
    pub workers: usize,
    /// When the last action finished.
    pub wall: u64,
    /// The longest chain of durations through the graph.
    pub critical_path: u64,
    /// The sum of all durations.
    pub total_work: u64,
}

impl Simulation {
    /// max(critical path, total work / workers): no schedule can beat it.
    pub fn lower_bound(&self) -> u64 {
        self.critical_path
            .max(self.total_work.div_ceil(self.workers as u64))
    }

    /// How far above the lower bound the schedule came, as a fraction (0.05 = 5%).
    pub fn overhead(&self) -> f64 {
        self.wall as f64 / self.lower_bound().max(1) as f64 - 1.0
    }
}

/// Runs the engine's scheduling policy on `durations` (indexed by id) with `workers`
/// workers, in simulated time (pure).
pub fn simulate(graph: &Graph, durations: &[u64], workers: usize) -> Simulation {
    let workers = workers.max(1);
    let mask = vec![true; graph.len()];
    let prio = compute_priorities(graph, &mask, durations);
    let mut remaining: Vec<usize> = graph.ids().map(|id| graph.action(id).deps.len()).collect();
    let mut ready = ReadyQueue::default();
    for id in graph.ids() {
        if remaining[id.index()] == 0 {
            ready.push(prio[id.index()], id);
        }
    }
    let mut running: BinaryHeap<Reverse<(u64, ActionId)>> = BinaryHeap::new();
    let mut now = 0u64;
    loop {
        while running.len() < workers {
            let Some(id) = ready.pop() else { break };
            running.push(Reverse((now + durations[id.index()], id)));
        }
        let Some(Reverse((end, _))) = running.peek().copied() else {
            break;
        };
        now = end;
        while let Some(Reverse((e, id))) = running.peek().copied() {
            if e != now {
                break;
            }
            running.pop();
            for d in graph.dependents(id) {
                remaining[d.index()] -= 1;
                if remaining[d.index()] == 0 {
                    ready.push(prio[d.index()], *d);
                }
            }
        }
    }
    Simulation {
        workers,
        wall: now,
        critical_path: prio.iter().copied().max().unwrap_or(0),
        total_work: durations.iter().sum(),
    }
}
