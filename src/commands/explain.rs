//! `keel explain TARGET`: whether a package is up to date and, if not, why.

use keel_engine::{Decision, DirtyReason, PlannedAction, Status};

use super::Context;
use crate::build::{self, ExecutorKind};
use crate::exit_codes;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// A package (binary or source package name), an image (the stem of its config) or an
    /// action name (`rpm:hello`, `image:docs-container`)
    pub target: String,
    /// The executor the builds being explained used: `rpmbuild` or `test`
    #[arg(
        long,
        value_enum,
        default_value = "rpmbuild",
        hide_possible_values = true
    )]
    pub executor: ExecutorKind,
}

pub fn run(ctx: &Context, args: ExplainArgs) -> anyhow::Result<i32> {
    let tree = crate::tree::require(ctx.tree.as_ref())?;
    let store = ctx.open_store()?;
    let session = build::Session::load(
        ctx,
        tree,
        &store,
        args.executor,
        &[],
        &build::Options::default(),
    )?;
    let graph = &session.actions.graph;
    let image = format!("image:{}", args.target);
    let action = if graph.find(&args.target).is_some() {
        args.target.clone()
    } else if session.loaded.graph.find(&args.target).is_none() && graph.find(&image).is_some() {
        image
    } else {
        let pg = &session.loaded.graph;
        let spec = pg.find(&args.target).ok_or_else(|| {
            anyhow::anyhow!(
                "no package, spec or action named `{}` in the tree",
                args.target
            )
        })?;
        format!("rpm:{}", pg.specs[spec.0].name)
    };
    let engine = keel_engine::Engine::new(&store);
    let mut ex = engine.explain(graph, &action)?;
    let mut last = super::build::load_last(store.root());
    build::name_toolchain_parts(
        &store,
        std::iter::once(&mut ex.target)
            .chain(ex.chain.iter_mut())
            .flat_map(|a| build::reasons_mut(&mut a.decision))
            .chain(
                last.iter_mut()
                    .flat_map(|r| r.actions.iter_mut().flatten())
                    .filter(|a| a.name == action)
                    .flat_map(|a| a.reasons.iter_mut()),
            ),
    );
    if ctx.out.json {
        let last_report = last.as_ref().and_then(|r| {
            r.actions
                .iter()
                .flatten()
                .find(|a| a.name == action)
                .cloned()
        });
        ctx.out.json_value(&serde_json::json!({
            "explanation": ex,
            "last_build": last_report,
        }))?;
        return Ok(exit_codes::SUCCESS);
    }
    let o = &ctx.out;
    o.line(&describe(&ex.target))?;
    for step in &ex.chain {
        o.line(&format!("  because {}", describe(step)))?;
    }
    if let Some(r) = last
        .as_ref()
        .and_then(|r| r.actions.iter().flatten().find(|a| a.name == action))
    {
        let what = match &r.status {
            Status::Cached => "was cached".to_owned(),
            Status::Remote => "was fetched from the remote cache".to_owned(),
            Status::Ran | Status::CutOff => {
                let cut = if r.status == Status::CutOff {
                    ", its output came out unchanged (dependents cut off)"
                } else {
                    ""
                };
                let role = if r.is_root() {
                    "a root of the rebuild"
                } else {
                    "a cascade"
                };
                let why: Vec<String> = r.reasons.iter().map(ToString::to_string).collect();
                format!("was rebuilt, {role}: {}{cut}", why.join("; "))
            }
            Status::Failed { error } => format!("failed: {error}"),
            Status::DependencyFailed { dep } => format!("was not built: {dep} failed"),
            Status::Stopped => "was not started: the build stopped after a failure".to_owned(),
            Status::Cancelled => "was cancelled".to_owned(),
        };
        o.line(&format!("last build: {action} {what}"))?;
        let roots: Vec<&str> = r_roots(last.as_ref());
        if !roots.is_empty() {
            o.line(&format!(
                "last build's roots ({}): {}",
                roots.len(),
                crate::output::short_list(&roots, 10)
            ))?;
        }
    }
    Ok(exit_codes::SUCCESS)
}

fn r_roots(last: Option<&keel_engine::BuildReport>) -> Vec<&str> {
    last.map(|r| {
        r.actions
            .iter()
            .flatten()
            .filter(|a| a.is_root())
            .map(|a| a.name.as_str())
            .collect()
    })
    .unwrap_or_default()
}

fn describe(p: &PlannedAction) -> String {
    let list = |rs: &[DirtyReason]| {
        rs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    match &p.decision {
        Decision::UpToDate => format!("{} is up to date", p.name),
        Decision::WillRun { reasons } => format!("{} will be rebuilt: {}", p.name, list(reasons)),
        Decision::MayRun { reasons } => format!(
            "{} may be rebuilt (only if a dependency's output changes): {}",
            p.name,
            list(reasons)
        ),
    }
}
