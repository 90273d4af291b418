//! `keel build`: build the tree (or some packages), running only what changed.

use anyhow::Context as _;
use keel_engine::{BuildReport, CancelToken, Config, Decision, Engine, Status};

use super::Context;
use crate::build::progress::{Progress, secs};
use crate::build::stamp;
use crate::build::{self, ExecutorKind};
use crate::exit_codes;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Packages to build (binary or source package names), with what they need; the
    /// whole tree when none are named
    pub targets: Vec<String>,
    /// Say what would run and why, without running anything
    #[arg(long)]
    pub dry_run: bool,
    /// Keep building everything that does not depend on a failure
    #[arg(short = 'k', long)]
    pub keep_going: bool,
    /// How actions run: `rpmbuild` in a sandbox, or `test`, a deterministic stand-in
    /// that builds nothing (for benchmarks and for trying the engine on a tree)
    #[arg(
        long,
        value_enum,
        default_value = "rpmbuild",
        hide_possible_values = true
    )]
    pub executor: ExecutorKind,
    /// Run rpmbuild directly on this machine, without namespaces or layers (warns)
    #[arg(long)]
    pub unsandboxed: bool,
    /// After the build, build these packages (all when none are named) a second time in
    /// fresh sandboxes and report every RPM whose bytes differ
    #[arg(long, value_name = "PKG", num_args = 0.., value_delimiter = ',')]
    pub check_reproducible: Option<Vec<String>>,
    #[command(flatten)]
    pub remote: build::remote::RemoteArgs,
}

/// How many times a build runs again for remote entries refused after their records
/// were used (each refusal is final, so this bounds only a remote that keeps lying).
const MAX_REMOTE_RERUNS: usize = 3;

pub fn run(ctx: &Context, args: BuildArgs) -> anyhow::Result<i32> {
    let tree = crate::tree::require(ctx.tree.as_ref())?;
    let stamp_path = stamp::path(
        &ctx.store_dir()?,
        &tree.root,
        &args.executor.id(args.unsandboxed).to_string(),
        &args.targets,
    );
    if !args.dry_run
        && let Some(actions) = nothing_changed(&stamp_path, tree, args.executor)?
    {
        let n = actions.len();
        let summary = keel_engine::Summary {
            actions: n,
            cached: n,
            hit_rate: 1.0,
            ..Default::default()
        };
        if ctx.out.json {
            // The same stream a full check of an unchanged tree gives, so that a consumer
            // sees every action's status whichever way keel found it up to date.
            use keel_engine::Event;
            ctx.out.json_value(&Event::BuildStarted {
                actions: n,
                jobs: ctx.jobs(),
            })?;
            for (name, kind) in actions {
                ctx.out.json_value(&Event::ActionFinished {
                    name,
                    kind,
                    status: keel_engine::Status::Cached,
                    duration_ms: 0,
                    t_ms: 0,
                })?;
            }
            ctx.out.json_value(&Event::BuildFinished { summary })?;
        } else {
            crate::output::error_line(&format!(
                "{:>12} {n} actions: nothing changed since the last build",
                "Fresh"
            ));
        }
        return Ok(exit_codes::SUCCESS);
    }
    let store = ctx.open_store()?;
    let state_path = build::state::path(&stamp_path);
    let keeps_state =
        build::state::applies(tree, args.executor) && args.check_reproducible.is_none();
    // After an edit: only the spec directories that changed are read again.
    let fast = if keeps_state {
        build::state::State::load(&state_path).and_then(|s| s.fast(tree, &store, args.executor))
    } else {
        None
    };
    let snapshot = if keeps_state && fast.is_none() && !args.dry_run {
        let global = stamp_inputs(tree, &[])?;
        Some(build::state::Snapshot::take(
            &store,
            global,
            &spec_roots(tree),
        ))
    } else {
        None
    };
    let session = match &fast {
        Some(f) => {
            for w in f.warnings() {
                tracing::warn!("{w}");
            }
            None
        }
        None => Some(build::Session::load(
            ctx,
            tree,
            &store,
            args.executor,
            &args.targets,
            &build::Options {
                unsandboxed: args.unsandboxed,
            },
        )?),
    };
    let graph = match (&fast, &session) {
        (Some(f), _) => &f.graph,
        (None, Some(s)) => &s.actions.graph,
        (None, None) => unreachable!("a build reads its tree one way or the other"),
    };
    let engine = Engine::new(&store);
    // Specs that cannot be planned are left out with what needs them; the rest plans.
    let excluded = session.as_ref().map_or(&[][..], |s| s.excluded.as_slice());
    let tree_errors = excluded.iter().filter(|e| e.cause.is_error()).count();
    if !ctx.out.json {
        for l in build::excluded::summary(excluded) {
            crate::output::error_line(&l);
        }
    }
    if tree_errors > 0 && !args.dry_run && !args.keep_going {
        anyhow::bail!(
            "{tree_errors} spec(s) cannot be built (see above); -k builds everything else"
        );
    }
    let done = |code: i32| {
        if tree_errors > 0 {
            exit_codes::ERROR
        } else {
            code
        }
    };

    if args.dry_run {
        let mut plan = match &fast {
            Some(f) => keel_engine::plan_known(&store, graph, &f.known)?,
            None => engine.plan(graph, &[])?,
        };
        build::name_toolchain_parts(
            &store,
            plan.actions
                .iter_mut()
                .flat_map(|a| build::reasons_mut(&mut a.decision)),
        );
        if ctx.out.json {
            if !excluded.is_empty() {
                ctx.out
                    .json_value(&serde_json::json!({ "excluded": excluded }))?;
            }
            ctx.out.json_value(&plan)?;
            return Ok(done(exit_codes::SUCCESS));
        }
        let mut n = 0;
        for a in plan.to_run() {
            n += 1;
            let (verb, reasons) = match &a.decision {
                Decision::WillRun { reasons } => ("run", reasons),
                Decision::MayRun { reasons } => ("maybe", reasons),
                Decision::UpToDate => continue,
            };
            let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
            ctx.out
                .line(&format!("{verb:>5} {}: {}", a.name, why.join("; ")))?;
        }
        ctx.out.line(&format!(
            "{n} of {} actions would run or may run (\"maybe\": only if a dependency's output changes)",
            plan.actions.len()
        ))?;
        return Ok(done(exit_codes::SUCCESS));
    }

    let cancel = CancelToken::new();
    {
        let c = cancel.clone();
        let out = ctx.out;
        // A second Ctrl-C while stopping falls through to the default (kill) only after
        // the process exits; the engine stops promptly on the first.
        let _ = ctrlc::set_handler(move || {
            if !c.is_cancelled() {
                out.status("    Stopping: waiting for running actions to stop (nothing half-done is recorded)");
            }
            c.cancel();
        });
    }
    let log_dir = store.root().join("builds");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("failed to create {}", log_dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let event_log = log_dir.join(format!("{stamp}.jsonl"));
    let uploads = match args.executor {
        ExecutorKind::Rpmbuild => build::remote::Uploads::Allowed,
        ExecutorKind::Test => {
            build::remote::Uploads::Never("--executor test makes stand-in results, not packages")
        }
    };
    let remote = build::remote::open(tree, &args.remote, &store, ctx.jobs(), uploads)?;
    let config = Config {
        jobs: ctx.jobs(),
        keep_going: args.keep_going,
        cancel: cancel.clone(),
        event_log: Some(event_log.clone()),
        targets: Vec::new(),
        remote: remote
            .clone()
            .map(|r| r as std::sync::Arc<dyn keel_engine::RemoteCache>),
    };
    let executor: Box<dyn keel_engine::Executor> = match &session {
        Some(s) => s.executor(remote.clone())?,
        None => Box::new(keel_engine::testing::TestExecutor::new()),
    };
    let durations_path = build::progress::Durations::path(
        store.root(),
        &tree.root,
        match args.executor {
            ExecutorKind::Rpmbuild => "rpmbuild",
            ExecutorKind::Test => "test",
        },
    );
    let mut durations = build::progress::Durations::load(&durations_path);
    let mut progress = Progress::new(
        ctx.out,
        build::progress::Tally::new(graph.iter().map(|(_, a)| a.name.clone()), &durations),
    );
    let mut report = engine.run(graph, executor.as_ref(), &config, &mut |e| {
        progress.event(e)
    });
    // Remote hits come as records; what is published is fetched now, all side by side.
    // An entry whose outputs cannot be had intact is refused, and the build runs again
    // to make it (and whatever depended on it) here.
    if let (Some(r), Some(s)) = (&remote, &session) {
        let mut runs = 1;
        while let Ok(done) = &report {
            // A failed build publishes nothing: only a refusal makes it worth another run.
            let fetched = !done.success() || r.materialize(&store, &s.publish_keys(done));
            if fetched & !r.take_refusals() {
                break;
            }
            if runs > MAX_REMOTE_RERUNS {
                anyhow::bail!(
                    "the remote cache kept answering with entries whose outputs could not be \
                     fetched intact ({runs} runs); build with --no-remote"
                );
            }
            runs += 1;
            ctx.out.status(&format!(
                "{:>12} what the remote cache could not deliver intact (run {runs})",
                "Rebuilding"
            ));
            let config = Config {
                event_log: Some(log_dir.join(format!("{stamp}-{runs}.jsonl"))),
                ..config.clone()
            };
            report = engine.run(graph, executor.as_ref(), &config, &mut |e| {
                progress.event(e)
            });
        }
    }
    progress.finish();
    durations.record(&durations_path, &progress.ran());
    let report = report?;
    store.flush()?;
    save_last(&log_dir, &report);
    let mut published = Vec::new();
    if report.success() {
        // What this build produced is what gc keeps first.
        let mut objects = Vec::new();
        for a in report.actions.iter().flatten() {
            if let Some(rec) = a.key.and_then(|k| store.ac_get(&k).ok().flatten()) {
                objects.extend(rec.objects());
            }
        }
        store.set_root(&format!("build:{}", tree.root.display()), &objects)?;
        if args.executor == ExecutorKind::Rpmbuild {
            build::save_learned(store.root(), &tree.root, graph, &report);
        }
        if let Some(s) = &session {
            published = s.publish(&store, &report)?;
        }
    }
    // A build that left specs out says so every time, until they are fixed: it keeps
    // neither the stamp that would call the next build fresh nor the state.
    if report.success() && tree_errors == 0 {
        let (inputs, fingerprint) = match (&fast, &session) {
            (Some(f), _) => (f.stamp_inputs(), f.toolchain_fingerprint()),
            (None, Some(s)) => {
                let mut inputs = stamp_inputs(tree, &s.toolchain_inputs)?;
                inputs.extend(s.image_inputs().cloned());
                stamp::walk(&spec_roots(tree), &mut inputs);
                (inputs, s.toolchain_fingerprint())
            }
            (None, None) => unreachable!("a build reads its tree one way or the other"),
        };
        let actions = graph
            .iter()
            .map(|(_, a)| (a.name.clone(), a.kind()))
            .collect();
        stamp::Stamp::take(inputs, published, fingerprint.clone(), actions).save(&stamp_path);
        match (fast, &session, snapshot) {
            (Some(f), _, _) => f.save(&store, &report, &state_path),
            (None, Some(s), Some(snapshot)) => {
                let names: Vec<String> = s
                    .loaded
                    .graph
                    .specs
                    .iter()
                    .map(|n| n.name.clone())
                    .collect();
                let graph = &s.actions.graph;
                build::state::State::new(
                    snapshot,
                    &s.loaded.specs,
                    &names,
                    graph,
                    &s.action_config,
                    fingerprint,
                    s.warnings.clone(),
                )
                .save(&store, graph, &report, &state_path);
            }
            _ => {
                let _ = std::fs::remove_file(&state_path);
            }
        }
    } else {
        let _ = std::fs::remove_file(&stamp_path);
        let _ = std::fs::remove_file(&state_path);
    }
    let remote_stats = remote
        .as_ref()
        .map(|r| build::remote::build_counters(&r.stats()))
        .unwrap_or_default();
    if !remote_stats.is_empty() {
        build::remote::record_stats(store.root(), &remote_stats);
    }
    print_summary(ctx, &report, &event_log, &remote_stats)?;
    if tree_errors > 0 && !ctx.out.json {
        crate::output::error_line(&format!(
            "error: {tree_errors} spec(s) were excluded from the plan (listed before the build)"
        ));
    }
    if let Some(only) = &args.check_reproducible
        && report.success()
    {
        let out = ctx.out;
        let session = session
            .as_ref()
            .expect("--check-reproducible always reads the whole tree");
        let diffs = build::repro::check(
            &store,
            session,
            &report,
            executor.as_ref(),
            only,
            &mut |n| {
                out.status(&format!("{:>12} {n} again", "Rebuilding"));
            },
        )?;
        if ctx.out.json {
            ctx.out.json_value(&diffs)?;
        }
        for d in &diffs {
            crate::output::error_line(&format!("not reproducible: {}", d.rpm));
            for (t, a, b) in &d.tags {
                crate::output::error_line(&format!("  {t}: {a} -> {b}"));
            }
            for f in d.files.iter().take(20) {
                crate::output::error_line(&format!("  {f}"));
            }
        }
        if !diffs.is_empty() {
            return Ok(exit_codes::ERROR);
        }
        ctx.out.status(&format!(
            "{:>12} every RPM came out byte for byte the same",
            "Reproducible"
        ));
    }
    Ok(if report.success() {
        done(exit_codes::SUCCESS)
    } else {
        exit_codes::ERROR
    })
}

/// What a build reads besides its spec directories: keel itself, keel.toml, the macro
/// files, the toolchain manifest and `toolchain` files; with the tree's spec roots.
fn stamp_inputs(
    tree: &crate::config::Tree,
    toolchain: &[std::path::PathBuf],
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut inputs = crate::tree::setup_files(tree)?;
    inputs.push(tree.root.join(crate::config::FILE_NAME));
    if let Some(m) = &tree.config.toolchain.manifest {
        inputs.push(tree.root.join(m));
    }
    inputs.extend(toolchain.iter().cloned());
    Ok(inputs)
}

/// The directories specs are found in.
fn spec_roots(tree: &crate::config::Tree) -> Vec<std::path::PathBuf> {
    tree.config
        .specs
        .dirs
        .iter()
        .map(|d| tree.root.join(d))
        .collect()
}

/// The number of actions of the last build, if a stamp says nothing it read changed.
fn nothing_changed(
    stamp_path: &std::path::Path,
    tree: &crate::config::Tree,
    kind: ExecutorKind,
) -> anyhow::Result<Option<Vec<(String, keel_engine::ActionKind)>>> {
    let Some(s) = stamp::Stamp::load(stamp_path) else {
        return Ok(None);
    };
    if !s.still_holds() {
        return Ok(None);
    }
    let store_root = stamp_path
        .parent()
        .and_then(|p| p.parent())
        .unwrap_or(std::path::Path::new("."));
    if build::toolchain_fingerprint(tree, store_root, kind)? != s.toolchain {
        return Ok(None);
    }
    Ok(Some(s.actions))
}

/// Keeps the report of the last build, for `keel explain`'s "last build" part.
fn save_last(dir: &std::path::Path, report: &BuildReport) {
    let path = dir.join("last.json");
    let tmp = dir.join("last.json.tmp");
    let ok = serde_json::to_vec(report)
        .ok()
        .and_then(|b| std::fs::write(&tmp, b).ok())
        .and_then(|()| std::fs::rename(&tmp, &path).ok());
    if ok.is_none() {
        tracing::warn!("could not save the build report to {}", path.display());
    }
}

/// The last build's report, if one was saved.
pub fn load_last(store_root: &std::path::Path) -> Option<BuildReport> {
    let bytes = std::fs::read(store_root.join("builds").join("last.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// How many failures the summary prints in full, how many names a list shows and how
/// many links of the critical path: a summary stays a screenful at 3,000 packages.
const FAILURES_SHOWN: usize = 10;
const LIST_SHOWN: usize = 10;
const CHAIN_SHOWN: usize = 8;

fn print_summary(
    ctx: &Context,
    report: &BuildReport,
    event_log: &std::path::Path,
    remote: &[(String, build::remote::Counters)],
) -> anyhow::Result<()> {
    let s = &report.summary;
    if ctx.out.json {
        // The events (BuildFinished among them) are already on stdout.
        return Ok(());
    }
    let failed: Vec<_> = report
        .actions
        .iter()
        .flatten()
        .filter_map(|a| match &a.status {
            Status::Failed { error } => Some((a, error)),
            _ => None,
        })
        .collect();
    // Every failure's message at a few, their names past that (each message was printed
    // as its action failed, and the event log has them all).
    for (a, error) in failed.iter().take(FAILURES_SHOWN) {
        crate::output::error_line(&format!("error: {} failed: {error}", a.name));
    }
    if failed.len() > FAILURES_SHOWN {
        let rest: Vec<&str> = failed[FAILURES_SHOWN..]
            .iter()
            .map(|(a, _)| a.name.as_str())
            .collect();
        crate::output::error_line(&format!(
            "error: also failed: {}",
            crate::output::short_list(&rest, LIST_SHOWN)
        ));
    }
    let status = if report.success() {
        "Finished"
    } else if s.cancelled > 0 {
        "Cancelled"
    } else {
        "Failed"
    };
    let mut line = format!(
        "{status:>12} {} actions in {}: {} run ({} cut off), {} cached, {} failed",
        s.actions,
        secs(s.wall_ms),
        s.ran,
        s.cut_off,
        s.cached,
        s.failed
    );
    if s.skipped > 0 {
        line.push_str(&format!(", {} skipped", s.skipped));
    }
    if s.cancelled > 0 {
        line.push_str(&format!(", {} cancelled", s.cancelled));
    }
    // A build that looked nothing up (its first action failed) has no hit rate.
    if s.cached + s.ran + s.failed > 0 {
        line.push_str(&format!("; cache hit rate {:.0}%", s.hit_rate * 100.0));
    }
    crate::output::error_line(&line);
    for (name, c) in remote {
        crate::output::error_line(&format!("{:>12} {name}: {}", "Remote", c.describe()));
    }
    if s.ran > 0 && !s.critical_path.is_empty() {
        crate::output::error_line(&format!(
            "{:>12} {} ({})",
            "Critical",
            crate::output::short_chain(&s.critical_path, CHAIN_SHOWN),
            secs(s.critical_path_ms)
        ));
    }
    if !ctx.out.quiet {
        crate::output::error_line(&format!("{:>12} {}", "Events", event_log.display()));
    }
    Ok(())
}
