//! `keel graph`: the tree's package graph, with what did not resolve and the cycles.

use std::path::Path;

use keel_rules::{PackageGraph, SpecId, UnresolvedKind};
use serde::Serialize;

use super::Context;
use crate::exit_codes;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// A summary, every unresolved dependency and every cycle
    Text,
    /// Graphviz
    Dot,
    /// Nodes, edges, unresolved dependencies and cycles
    Json,
}

#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// How to print it: `text` (a summary, every unresolved dependency and every cycle),
    /// `dot` (Graphviz) or `json`
    #[arg(long, value_enum, default_value = "text", hide_possible_values = true)]
    pub format: Format,
}

fn rel<'a>(root: &Path, p: &'a Path) -> std::borrow::Cow<'a, str> {
    match p.strip_prefix(root) {
        Ok(r) => r.to_string_lossy(),
        Err(_) => p.to_string_lossy(),
    }
}

pub fn run(ctx: &Context, args: GraphArgs) -> anyhow::Result<i32> {
    let tree = crate::tree::require(ctx.tree.as_ref())?;
    let store = ctx.store_for_reading()?;
    let loaded = crate::tree::load_with(tree, store.as_ref())?;
    for f in &loaded.failures {
        ctx.out.status(&format!(
            "{}:{}: {}",
            rel(&tree.root, &f.file),
            f.line,
            f.message
        ));
    }
    let g = &loaded.graph;
    let name = |s: SpecId| g.specs[s.0].name.as_str();
    match args.format {
        Format::Dot => ctx.out.line(g.to_dot().trim_end())?,
        Format::Json => ctx
            .out
            .json_value(&JsonGraph::of(g, &tree.root, loaded.failures.len()))?,
        Format::Text => {
            let o = &ctx.out;
            let excluded = g.specs.iter().filter(|s| s.excluded.is_some()).count();
            o.line(&format!(
                "specs       {} read in {:.2} s, {} failed, {} not built for {}",
                g.specs.len(),
                loaded.read_time.as_secs_f64(),
                loaded.failures.len(),
                excluded,
                g.target_arch()
            ))?;
            o.line(&format!("packages    {} binary packages", g.bins.len()))?;
            o.line(&format!("edges       {} build edges", g.edges.len()))?;
            o.line(&format!("unresolved  {}", g.unresolved.len()))?;
            for u in &g.unresolved {
                let what = match &u.kind {
                    UnresolvedKind::BuildRequires => "BuildRequires".to_owned(),
                    UnresolvedKind::Requires { package } => format!("{package} Requires"),
                };
                let closest = if u.closest.is_empty() {
                    String::new()
                } else {
                    format!(" (closest: {})", u.closest.join(", "))
                };
                o.line(&format!(
                    "  {}: {what}: {}{closest}",
                    rel(&tree.root, &g.specs[u.spec.0].path),
                    u.dep
                ))?;
            }
            o.line(&format!("cycles      {}", g.cycles.len()))?;
            for c in &g.cycles {
                let mut line = format!("  {}", name(c.steps[0].from));
                for s in &c.steps {
                    line.push_str(&format!(" -[{}]-> {}", s.via, name(s.to)));
                }
                line.push_str(&format!(
                    "; a seed of `{}` would break it",
                    c.seed_suggestion
                ));
                o.line(&line)?;
            }
        }
    }
    Ok(exit_codes::SUCCESS)
}

#[derive(Serialize)]
struct JsonGraph<'a> {
    specs: Vec<JsonSpec<'a>>,
    edges: Vec<JsonEdge<'a>>,
    unresolved: Vec<JsonUnresolved<'a>>,
    cycles: Vec<Vec<JsonEdge<'a>>>,
    failed_specs: usize,
}

#[derive(Serialize)]
struct JsonSpec<'a> {
    name: &'a str,
    evr: &'a str,
    path: String,
    packages: Vec<&'a str>,
    excluded: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonEdge<'a> {
    from: &'a str,
    to: &'a str,
    via: &'a str,
    provider: &'a str,
}

#[derive(Serialize)]
struct JsonUnresolved<'a> {
    spec: &'a str,
    kind: &'a UnresolvedKind,
    dep: &'a str,
    closest: &'a [String],
}

impl<'a> JsonGraph<'a> {
    fn of(g: &'a PackageGraph, root: &Path, failed_specs: usize) -> Self {
        let name = |s: SpecId| g.specs[s.0].name.as_str();
        JsonGraph {
            specs: g
                .specs
                .iter()
                .map(|s| JsonSpec {
                    name: &s.name,
                    evr: &s.evr,
                    path: rel(root, &s.path).into_owned(),
                    packages: s
                        .packages
                        .iter()
                        .map(|b| g.bins[b.0].name.as_str())
                        .collect(),
                    excluded: s.excluded.as_deref(),
                })
                .collect(),
            edges: g
                .edges
                .iter()
                .map(|e| JsonEdge {
                    from: name(e.from),
                    to: name(e.to),
                    via: &e.via,
                    provider: &g.bins[e.provider.0].name,
                })
                .collect(),
            unresolved: g
                .unresolved
                .iter()
                .map(|u| JsonUnresolved {
                    spec: name(u.spec),
                    kind: &u.kind,
                    dep: &u.dep,
                    closest: &u.closest,
                })
                .collect(),
            cycles: g
                .cycles
                .iter()
                .map(|c| {
                    c.steps
                        .iter()
                        .map(|s| JsonEdge {
                            from: name(s.from),
                            to: name(s.to),
                            via: &s.via,
                            provider: &s.provider,
                        })
                        .collect()
                })
                .collect(),
            failed_specs,
        }
    }
}
