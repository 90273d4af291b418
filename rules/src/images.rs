//! Images as actions: which packages of the tree an image is made of, and the
//! `image:<name>` action that depends on exactly their `rpm:` actions.
//!
//! The binary reads each image config (the rules layer never parses JSON configs: that is
//! keel-image's job) and hands over an [`ImageRequest`]: the packages the system config
//! asks for and the key inputs. [`image_closure`] resolves those names and their
//! `Requires` over the package graph, tree packages only (an image is made of the tree's
//! RPMs; a capability only the build root or the seed offers is reported as
//! [`ImageClosure::external`]). [`add_image`] then adds the action.
//!
//! # Why the build edges of the closure's specs are dependencies too
//!
//! The `Requires` a spec declares are known before anything is built, but the ones
//! rpmbuild generates (sonames, interpreters) only after. They almost always point at
//! what the package was built against, so each spec of the closure brings the specs it
//! build-depends on. This over-approximates (a build-only tool that changes can rebuild
//! an image), never under-approximates in the usual case; the exact closure is taken
//! again from the built RPMs when the image is assembled, and a capability missing there
//! is an error naming the chain.
//!
//! Dependencies are whole `rpm:` actions: a change to any binary package of a spec in
//! the closure rebuilds the image, a change to a spec outside it never does, and a
//! rebuild whose RPMs come out the same (early cutoff) leaves the image's key unchanged.

use std::collections::{BTreeSet, HashMap, VecDeque};

use anyhow::Context as _;
use keel_engine::{ActionId, Graph, ImageInputs, KeyInputs};
use keel_specs::deps::Dep;

use crate::graph::{PackageGraph, SpecId};
use crate::index::{BinId, ProviderSource};
use crate::resolve::Resolution;

/// An image the tree asks for, as the binary read it from its config.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    /// The config file as keel.toml names it, for messages.
    pub config: String,
    /// The packages the system config asks for (package names, or capabilities).
    pub packages: Vec<String>,
    /// The action's key inputs.
    pub inputs: ImageInputs,
}

/// The packages of the tree an image needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageClosure {
    /// The binary packages of the runtime closure, by id.
    pub packages: BTreeSet<BinId>,
    /// The specs whose `rpm:` actions the image depends on: those of the packages, and
    /// what they build-depend on (see the module docs).
    pub specs: BTreeSet<SpecId>,
    /// `(package, dependency)` pairs that only the build root or the seed satisfies (and no
    /// external repository).
    pub external: Vec<(String, String)>,
}

/// Dependencies that name rpm itself or are otherwise not packages.
fn is_internal(dep: &Dep) -> bool {
    dep.name.starts_with("rpmlib(") || dep.name.starts_with("config(")
}

/// The image's packages: `packages` (names, else capabilities) and the closure of their
/// `Requires` over the tree's packages. A requested package nothing in the tree provides
/// is an error naming `config` and the package, unless `elsewhere` says an external
/// repository has it (then neither it nor a dependency only it satisfies is the tree's
/// business: the image's assembly takes it from there).
pub fn image_closure(
    pg: &PackageGraph,
    config: &str,
    packages: &[String],
    elsewhere: &dyn Fn(&str) -> bool,
) -> anyhow::Result<ImageClosure> {
    let built = |b: &BinId| pg.specs[pg.bins[b.0].spec.0].excluded.is_none();
    let names = |p: ProviderSource| -> Option<String> {
        match p {
            ProviderSource::Package(b) => Some(pg.bins[b.0].name.clone()),
            _ => None,
        }
    };
    let mut out = ImageClosure::default();
    let mut queue = VecDeque::new();
    for name in packages {
        let by_name = (0..pg.bins.len())
            .map(BinId)
            .find(|b| pg.bins[b.0].name == *name && built(b));
        let chosen = by_name.or_else(|| {
            pg.index
                .whatprovides(name, 0, "")
                .into_iter()
                .filter_map(|p| match p {
                    ProviderSource::Package(b) if built(&b) => Some(b),
                    _ => None,
                })
                .min()
        });
        let Some(b) = chosen else {
            if elsewhere(name) {
                continue;
            }
            let elsewhere = if pg.index.whatprovides(name, 0, "").is_empty() {
                String::new()
            } else {
                " (only the build root or the bootstrap seed has it; an image is made of the tree's packages)".to_owned()
            };
            anyhow::bail!(
                "image config {config}: package `{name}` is provided by no package of the tree{elsewhere}"
            );
        };
        if out.packages.insert(b) {
            queue.push_back(b);
        }
    }
    while let Some(b) = queue.pop_front() {
        for dep in pg.bins[b.0].requires.iter().filter(|d| !is_internal(d)) {
            let providers: Vec<BinId> = if dep.rich.is_some() {
                match pg.index.resolve(dep, &names) {
                    Resolution::NotNeeded => continue,
                    Resolution::Satisfied(ps) => ps
                        .into_iter()
                        .filter_map(|p| match p {
                            ProviderSource::Package(b) => Some(b),
                            _ => None,
                        })
                        .collect(),
                    Resolution::Unresolved => Vec::new(),
                }
            } else {
                // Not `resolve`, which prefers the build root: an image wants the tree's
                // own package whenever there is one.
                let all: Vec<BinId> = pg
                    .index
                    .whatprovides(&dep.name, dep.flags, &dep.evr)
                    .into_iter()
                    .filter_map(|p| match p {
                        ProviderSource::Package(b) if built(&b) => Some(b),
                        _ => None,
                    })
                    .collect();
                let pick = all
                    .iter()
                    .find(|c| out.packages.contains(c))
                    .or_else(|| all.iter().find(|c| pg.bins[c.0].name == dep.name))
                    .or_else(|| all.first());
                pick.into_iter().copied().collect()
            };
            if providers.is_empty() && !elsewhere(&dep.name) {
                out.external.push((pg.bins[b.0].name.clone(), dep.nevr()));
            }
            for p in providers {
                if out.packages.insert(p) {
                    queue.push_back(p);
                }
            }
        }
    }
    for b in &out.packages {
        let s = pg.bins[b.0].spec;
        out.specs.insert(s);
        out.specs.extend(pg.deps(s).map(|e| e.to));
    }
    out.external.sort();
    out.external.dedup();
    Ok(out)
}

/// Adds `image:<name>` to `graph`, depending on the `rpm:` actions of `closure`'s specs.
pub fn add_image(
    graph: &mut Graph,
    pg: &PackageGraph,
    rpm_action: &HashMap<SpecId, ActionId>,
    request: ImageRequest,
    closure: &ImageClosure,
) -> anyhow::Result<ActionId> {
    let mut deps = Vec::new();
    for s in &closure.specs {
        let a = rpm_action.get(s).with_context(|| {
            format!(
                "image {}: {} is not among the packages to build",
                request.inputs.name, pg.specs[s.0].name
            )
        })?;
        deps.push(*a);
    }
    deps.sort();
    Ok(graph.add(
        format!("image:{}", request.inputs.name),
        KeyInputs::Image(request.inputs),
        &deps,
    )?)
}
