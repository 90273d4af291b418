//! keel's rule layer: from specs to a package graph.
//!
//! Given the specs of a tree (read by `keel-specs`), it builds a [`ProvidersIndex`] — every
//! capability the tree's binary packages offer: their names, explicit `Provides` with
//! versions, the literal paths of their `%files` — and resolves each spec's
//! `BuildRequires`, and the `Requires` of what those pull into the build root, to the
//! packages that provide them, honouring versions (rpm's comparison and range overlap),
//! rich dependencies and `ExclusiveArch`/`ExcludeArch`. Capabilities of the build root (the
//! toolchain manifest) and of a bootstrap seed are satisfied without an edge, which is how
//! distributions break build cycles. The result is a [`PackageGraph`]: source packages and
//! the build edges between them, each edge labelled with the dependency that made it,
//! plus everything that did not resolve (with what came closest) and every cycle (with the
//! full path and a suggested edge to seed).
//!
//! Capabilities learned later, from built RPMs (sonames, pkgconfig, auto-provides), are
//! added with [`ProvidersIndex::learn`] and the graph is resolved again.
//!
//! Then [`actions`] turns the graph into the engine's action graph: per spec, fetching
//! the sources, packing the SRPM and building the RPMs, each keyed by the digests of
//! exactly the files and settings it reads (hashed through the store's stat cache), plus
//! the repository over them. (This is why `rules` depends on `keel-engine` and
//! `keel-store`, not the other way round: the engine stays generic over actions and never
//! learns what a spec is.)
//!
//! What it deliberately does not do: read specs other than through `keel-specs`, or run
//! builds (the engine does, from the actions the graph implies).

pub mod actions;
pub mod gentree;
mod graph;
pub mod images;
mod index;
mod manifest;
mod resolve;
pub mod speccache;

pub use graph::{
    BuildEdge, Cycle, CycleStep, GraphConfig, PackageGraph, SpecId, SpecNode, Unresolved,
    UnresolvedKind,
};
pub use index::{BinId, BinPkg, Provider, ProviderSource, ProvidersIndex, RootFiles};
pub use manifest::{ManifestError, RpmName, parse_manifest, parse_rpm_filename};
pub use resolve::{Resolution, overlaps};
#[cfg(test)]
mod tests;
