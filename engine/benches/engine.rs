//! Engine benchmarks on a generated distribution of 1,000 packages (3,002 actions: a source
//! fetch, an SRPM and an RPM build per package, one repository, one image) with the
//! deterministic test executor.
//!
//! - `noop_build`: everything cached, `Engine::run` from start to report.
//! - `decide_after_leaf_change`: one leaf spec edited; the dry run that decides what
//!   rebuilds (`Engine::plan`).
//! - `per_action_overhead`: 100 independent actions that miss, with an executor that does
//!   nothing; the time is the engine's and the store's (lookup, record, index), per batch.
//! - `schedule_simulation`: the scheduling policy on simulated durations for 2, 8 and 64
//!   workers. The simulated wall times against max(critical path, work / workers) are
//!   printed once; they are exact, not measurements.
//!
//! `cargo bench -p keel-engine --bench engine`

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use keel_engine::sched::simulate;
use keel_engine::testing::{Distro, TestExecutor, distro_durations};
use keel_engine::{
    Config, Engine, ExecContext, ExecError, ExecOutcome, Executor, Graph, KeyInputs,
    RepoIndexInputs,
};
use keel_store::Store;

const PACKAGES: usize = 1000;
const CORE: usize = 20;

fn config() -> Config {
    Config {
        jobs: 2,
        ..Config::default()
    }
}

fn built_store(distro: &Distro) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let g = distro.graph(&store).unwrap();
    let r = Engine::new(&store)
        .run(&g, &TestExecutor::new(), &config(), &mut |_| {})
        .unwrap();
    assert!(r.success());
    (dir, store)
}

fn noop_build(c: &mut Criterion) {
    let distro = Distro::generate(PACKAGES, CORE, 42);
    let (_dir, store) = built_store(&distro);
    let g = distro.graph(&store).unwrap();
    let exec = TestExecutor::new();
    c.bench_function("noop_build_3002_actions", |b| {
        b.iter(|| {
            let r = Engine::new(&store)
                .run(&g, &exec, &config(), &mut |_| {})
                .unwrap();
            assert_eq!(r.summary.cached, g.len());
        })
    });
}

fn decide_after_leaf_change(c: &mut Criterion) {
    let mut distro = Distro::generate(PACKAGES, CORE, 43);
    let (_dir, store) = built_store(&distro);
    distro.packages[PACKAGES - 1].spec.content += 1;
    let g = distro.graph(&store).unwrap();
    c.bench_function("decide_after_leaf_change_3002_actions", |b| {
        b.iter(|| {
            let plan = Engine::new(&store).plan(&g, &[]).unwrap();
            // The leaf's SRPM and RPM will run; the repository and image may.
            assert_eq!(plan.to_run().count(), 4);
        })
    });
}

/// An executor that does nothing: what remains is the engine's own cost.
struct Nothing;

impl Executor for Nothing {
    fn execute(&self, _: &ExecContext<'_>) -> Result<ExecOutcome, ExecError> {
        Ok(ExecOutcome::default())
    }
}

fn independent(n: usize, salt: u64) -> Graph {
    let mut g = Graph::new();
    for i in 0..n {
        g.add(
            format!("a{i}"),
            KeyInputs::RepoIndex(RepoIndexInputs {
                name: format!("a{i}"),
                target_arch: "x86_64".into(),
                indexer: format!("salt {salt}"),
                options: Default::default(),
                executor: keel_engine::ExecutorId::new("test", "none"),
            }),
            &[],
        )
        .unwrap();
    }
    g
}

fn per_action_overhead(c: &mut Criterion) {
    const BATCH: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut salt = 0u64;
    let mut group = c.benchmark_group("per_action_overhead");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("100_misses_null_executor", |b| {
        b.iter_batched(
            || {
                salt += 1;
                independent(BATCH, salt)
            },
            |g| {
                let r = Engine::new(&store)
                    .run(&g, &Nothing, &config(), &mut |_| {})
                    .unwrap();
                assert_eq!(r.summary.ran, BATCH);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn depth(g: &Graph) -> usize {
    let mut d = vec![0usize; g.len()];
    for (id, a) in g.iter() {
        d[id.index()] = 1 + a.deps.iter().map(|x| d[x.index()]).max().unwrap_or(0);
    }
    d.into_iter().max().unwrap_or(0)
}

#[expect(clippy::print_stdout, reason = "a benchmark reports its simulation")]
fn schedule_simulation(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let g = Distro::generate(PACKAGES, CORE, 44).graph(&store).unwrap();
    let dur = distro_durations(&g, 7);
    println!(
        "schedule simulation: {} actions, longest dependency chain {} actions",
        g.len(),
        depth(&g)
    );
    for workers in [2, 8, 64] {
        let s = simulate(&g, &dur, workers);
        println!(
            "  {workers:>2} workers: wall {} s, critical path {} s, work/workers {} s, \
             lower bound {} s, over the bound {:.2}%",
            s.wall,
            s.critical_path,
            s.total_work.div_ceil(workers as u64),
            s.lower_bound(),
            s.overhead() * 100.0
        );
    }
    c.bench_function("simulate_3002_actions_64_workers", |b| {
        b.iter(|| simulate(&g, &dur, 64))
    });
}

fn quick() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = quick();
    targets = noop_build, decide_after_leaf_change, per_action_overhead, schedule_simulation
}
criterion_main!(benches);
