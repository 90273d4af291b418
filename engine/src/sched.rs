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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyInputs, RepoIndexInputs};

    fn node(g: &mut Graph, name: &str, deps: &[ActionId]) -> ActionId {
        let inputs = KeyInputs::RepoIndex(RepoIndexInputs {
            name: name.into(),
            target_arch: String::new(),
            indexer: String::new(),
            options: Default::default(),
            executor: crate::keys::ExecutorId::new("test", "none"),
        });
        g.add(name, inputs, deps).unwrap()
    }

    #[test]
    fn priorities_are_remaining_path_lengths() {
        let mut g = Graph::new();
        let a = node(&mut g, "a", &[]);
        let b = node(&mut g, "b", &[a]);
        let c = node(&mut g, "c", &[a]);
        let _d = node(&mut g, "d", &[b, c]);
        let p = compute_priorities(&g, &[true; 4], &[1, 10, 100, 1000]);
        assert_eq!(p, [1 + 100 + 1000, 10 + 1000, 100 + 1000, 1000]);
        // Outside the mask, a dependent does not count.
        let p = compute_priorities(&g, &[true, true, true, false], &[1, 10, 100, 1000]);
        assert_eq!(p[0], 101);
    }

    #[test]
    fn chain_takes_the_sum_and_independent_work_spreads() {
        let mut g = Graph::new();
        let a = node(&mut g, "a", &[]);
        let b = node(&mut g, "b", &[a]);
        node(&mut g, "c", &[b]);
        let s = simulate(&g, &[3, 4, 5], 8);
        assert_eq!((s.wall, s.critical_path, s.total_work), (12, 12, 12));
        assert_eq!(s.overhead(), 0.0);

        let mut g = Graph::new();
        for i in 0..5 {
            node(&mut g, &format!("n{i}"), &[]);
        }
        let s = simulate(&g, &[10; 5], 2);
        assert_eq!(s.wall, 30);
        assert_eq!(s.lower_bound(), 25);
    }

    #[test]
    fn the_long_chain_starts_first() {
        // One worker would be idle at the end if the 1-unit jobs went first: with the
        // chain head started first, two workers finish at the critical path.
        let mut g = Graph::new();
        let head = node(&mut g, "head", &[]);
        node(&mut g, "tail", &[head]);
        for i in 0..4 {
            node(&mut g, &format!("small{i}"), &[]);
        }
        let s = simulate(&g, &[1, 4, 1, 1, 1, 1], 2);
        assert_eq!(s.critical_path, 5);
        assert_eq!(s.wall, 5);
    }

    #[test]
    fn distro_schedule_is_within_five_percent_of_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = keel_store::Store::open(&dir.path().join("s")).unwrap();
        for seed in [1, 2, 3] {
            let g = crate::testing::Distro::generate(1000, 20, seed)
                .graph(&store)
                .unwrap();
            let d = crate::testing::distro_durations(&g, seed);
            for workers in [2, 8, 64] {
                let s = simulate(&g, &d, workers);
                assert!(
                    s.overhead() <= 0.05,
                    "seed {seed}, {workers} workers: {s:?}, bound {}",
                    s.lower_bound()
                );
            }
        }
    }
}
