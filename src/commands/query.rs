//! `keel query deps|rdeps|whatprovides|path`: questions about the package graph.

use anyhow::Context as _;
use keel_rules::{PackageGraph, ProviderSource, SpecId};

use super::Context;
use crate::exit_codes;

#[derive(Debug, clap::Subcommand)]
pub enum QueryCommand {
    /// What a package needs built first (its build edges), with the dependency of each
    Deps {
        /// A source or binary package name
        package: String,
    },
    /// What needs a package built first
    Rdeps {
        /// A source or binary package name
        package: String,
    },
    /// Which packages provide a capability (a name, `name >= 1.2`, or a file path)
    Whatprovides {
        /// The capability, optionally with a version: `foo`, `foo >= 1.2`, `/usr/bin/sh`
        #[arg(num_args = 1.., required = true)]
        capability: Vec<String>,
    },
    /// The shortest chain of build dependencies from A to B
    Path {
        /// The package the chain starts at (A)
        from: String,
        /// The package it ends at (B)
        to: String,
    },
}

fn find(g: &PackageGraph, name: &str) -> anyhow::Result<SpecId> {
    g.find(name)
        .with_context(|| format!("no package `{name}` in the tree"))
}

pub fn run(ctx: &Context, cmd: QueryCommand) -> anyhow::Result<i32> {
    let tree = crate::tree::require(ctx.tree.as_ref())?;
    let store = ctx.store_for_reading()?;
    let loaded = crate::tree::load_with(tree, store.as_ref())?;
    let g = &loaded.graph;
    let name = |s: SpecId| g.specs[s.0].name.as_str();
    let o = &ctx.out;
    match cmd {
        QueryCommand::Deps { package } => {
            for e in g.deps(find(g, &package)?) {
                o.line(&format!("{}\t{}", name(e.to), e.via))?;
            }
        }
        QueryCommand::Rdeps { package } => {
            for e in g.rdeps(find(g, &package)?) {
                o.line(&format!("{}\t{}", name(e.from), e.via))?;
            }
        }
        QueryCommand::Whatprovides { capability } => {
            let text = capability.join(" ");
            let dep = keel_specs::deps::parse_field(&text, 0, true)
                .map_err(|e| anyhow::anyhow!("`{text}` is not a dependency: {e}"))?;
            let dep = dep.first().with_context(|| format!("`{text}` is empty"))?;
            let found = g.index.whatprovides(&dep.name, dep.flags, &dep.evr);
            if found.is_empty() {
                o.status(&format!("nothing provides {text}"));
                return Ok(exit_codes::ERROR);
            }
            for p in found {
                let line = match p {
                    ProviderSource::Package(b) => {
                        let bin = &g.bins[b.0];
                        format!(
                            "{}-{}.{}\t{}",
                            bin.name,
                            bin.evr,
                            bin.arch,
                            g.specs[bin.spec.0].path.display()
                        )
                    }
                    ProviderSource::Toolchain(i) => {
                        format!("{}\t(toolchain)", g.index.toolchain_name(i))
                    }
                    ProviderSource::Seed(i) => {
                        format!("{}\t(bootstrap seed)", g.index.seed_name(i))
                    }
                    ProviderSource::BuildRoot => format!("{}\t(the build root)", dep.name),
                };
                o.line(&line)?;
            }
        }
        QueryCommand::Path { from, to } => {
            let (a, b) = (find(g, &from)?, find(g, &to)?);
            let Some(path) = g.path(a, b) else {
                o.status(&format!("{from} does not depend on {to}"));
                return Ok(exit_codes::ERROR);
            };
            let mut line = name(a).to_owned();
            for e in path {
                line.push_str(&format!(" -[{}]-> {}", e.via, name(e.to)));
            }
            o.line(&line)?;
        }
    }
    Ok(exit_codes::SUCCESS)
}
