//! The package graph: source packages, the build edges between them, what did not
//! resolve, and the cycles.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;

use keel_specs::Spec;
use keel_specs::deps::Dep;

use crate::index::{BinId, BinPkg, ProviderSource, ProvidersIndex};
use crate::manifest::RpmName;
use crate::resolve::Resolution;

/// A source package (one spec) of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct SpecId(pub usize);

/// How to build the graph.
#[derive(Debug, Clone, Default)]
pub struct GraphConfig {
    /// The architecture being built (`x86_64`, `aarch64`).
    pub target_arch: String,
    /// The build root's packages: their capabilities need no build edge.
    pub toolchain: Vec<RpmName>,
    /// A bootstrap seed (prebuilt RPMs): like the toolchain, it satisfies dependencies
    /// without an edge, which breaks the cycles it covers.
    pub seed: Vec<RpmName>,
    /// The build root's own files, for file dependencies nothing else provides.
    pub root_files: Option<crate::index::RootFiles>,
    /// Packages of the tree the build root carries (`[toolchain] from_tree`: Azure
    /// Linux's rpm macros, which its real toolchain has installed): every spec builds with
    /// them — an edge as if it had `BuildRequires: NAME` — except the specs they are built
    /// from and need, which would otherwise depend on themselves.
    pub from_tree: Vec<String>,
}

/// A spec in the graph.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpecNode {
    /// The spec file, as given.
    pub path: PathBuf,
    /// The source package's name, unique in the graph: specs that share one (golang's
    /// four, one per Go release, in one directory) are told apart by their spec file's
    /// stem (`golang-1.23`), see [`distinct_names`]. Actions are named after it.
    pub name: String,
    pub evr: String,
    pub packages: Vec<BinId>,
    /// Why the spec is not built for the target architecture, if it is not.
    pub excluded: Option<String>,
    #[serde(skip)]
    build_requires: Vec<Dep>,
}

/// `from` needs `to` built first, because of `via`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildEdge {
    pub from: SpecId,
    pub to: SpecId,
    /// The dependency that made the edge: `BuildRequires: foo-devel >= 2`, or
    /// `foo-devel Requires: libbar` for a package the build root pulls in.
    pub via: String,
    /// The binary package that satisfies it.
    pub provider: BinId,
}

/// Where an unresolved dependency was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum UnresolvedKind {
    BuildRequires,
    /// A `Requires` of a binary package that some build root pulls in.
    Requires {
        package: String,
    },
}

/// A dependency nothing provides.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unresolved {
    pub spec: SpecId,
    pub kind: UnresolvedKind,
    pub dep: String,
    /// What came closest: the same name at other versions, or similar names.
    pub closest: Vec<String>,
}

/// One edge of a cycle.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CycleStep {
    pub from: SpecId,
    pub to: SpecId,
    pub via: String,
    pub provider: String,
}

/// A build cycle, with the edge to seed to break it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Cycle {
    pub steps: Vec<CycleStep>,
    /// The binary package whose prebuilt copy (in the bootstrap seed) would break it.
    pub seed_suggestion: String,
}

/// The graph of a tree.
#[derive(Debug)]
pub struct PackageGraph {
    pub specs: Vec<SpecNode>,
    pub bins: Vec<BinPkg>,
    pub index: ProvidersIndex,
    pub edges: Vec<BuildEdge>,
    pub unresolved: Vec<Unresolved>,
    pub cycles: Vec<Cycle>,
    out: Vec<Vec<usize>>,
    inc: Vec<Vec<usize>>,
    target_arch: String,
    /// [`GraphConfig::from_tree`].
    from_tree: Vec<String>,
    /// The specs the carried packages are built from and pull in (see
    /// [`PackageGraph::builds_bare`]).
    carried_closure: HashSet<usize>,
}

/// One spec's build edges as they are found: each provider's spec once per reason, and
/// the packages whose Requires the build root pulls in too.
#[derive(Default)]
struct Pull {
    seen_edge: HashSet<(usize, String)>,
    queue: VecDeque<BinId>,
    visited: HashSet<BinId>,
}

impl Pull {
    /// `si` needs `b` in its build root, because of `via`.
    fn edge(
        &mut self,
        g: &PackageGraph,
        edges: &mut Vec<BuildEdge>,
        si: usize,
        b: BinId,
        via: String,
    ) {
        let to = g.bins[b.0].spec.0;
        if self.seen_edge.insert((to, via.clone())) {
            edges.push(BuildEdge {
                from: SpecId(si),
                to: SpecId(to),
                via,
                provider: b,
            });
        }
        if self.visited.insert(b) {
            self.queue.push_back(b);
        }
    }

    /// What the build root pulls in through Requires of the packages found so far.
    fn requires(
        &mut self,
        g: &PackageGraph,
        edges: &mut Vec<BuildEdge>,
        si: usize,
        req_cache: &mut HashMap<BinId, Vec<(String, Resolution)>>,
    ) {
        while let Some(b) = self.queue.pop_front() {
            for (text, res) in g.requires_of(b, req_cache) {
                let Resolution::Satisfied(ps) = res else {
                    continue;
                };
                for p in ps {
                    let ProviderSource::Package(nb) = *p else {
                        continue;
                    };
                    if g.bins[nb.0].spec.0 == g.bins[b.0].spec.0 {
                        // A package's own spec is where it comes from, not an edge.
                        if self.visited.insert(nb) {
                            self.queue.push_back(nb);
                        }
                    } else {
                        let via = format!("{} Requires: {text}", g.bins[b.0].name);
                        self.edge(g, edges, si, nb, via);
                    }
                }
            }
        }
    }
}

fn arch_excluded(spec: &Spec, arch: &str) -> Option<String> {
    let s = &spec.source;
    let matches = |list: &[String]| {
        list.iter()
            .any(|a| a == arch || (a == "noarch" && arch == "noarch"))
    };
    if !s.exclusive_arch.is_empty() && !matches(&s.exclusive_arch) {
        let all_noarch = spec.packages.iter().all(|p| p.arch == "noarch");
        if !(all_noarch && s.exclusive_arch.iter().any(|a| a == "noarch")) {
            return Some(format!("ExclusiveArch: {}", s.exclusive_arch.join(" ")));
        }
    }
    if matches(&s.exclude_arch) {
        return Some(format!("ExcludeArch: {}", s.exclude_arch.join(" ")));
    }
    None
}

/// Gives specs that share a source package name names of their own. Azure Linux's
/// toolkit packs and builds each spec (its SRPM file is named by version too), so golang's
/// four specs are four packages; keel's actions are named by package, so each needs a
/// name: the first whose file stem is the shared name (else the first) keeps it, the
/// others take their file stem (`golang-1.23.spec` is `golang-1.23`), or, when that is
/// taken too, `name-version-release`, then a counter.
fn distinct_names(nodes: &mut [SpecNode]) {
    let mut count: HashMap<String, usize> = HashMap::new();
    for n in nodes.iter() {
        *count.entry(n.name.clone()).or_default() += 1;
    }
    if count.values().all(|c| *c == 1) {
        return;
    }
    let mut taken: HashSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let stem = |n: &SpecNode| {
        n.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let shared: BTreeSet<String> = count
        .into_iter()
        .filter(|(_, c)| *c > 1)
        .map(|(n, _)| n)
        .collect();
    for name in shared {
        let members: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].name == name)
            .collect();
        let keeper = members
            .iter()
            .copied()
            .find(|&i| stem(&nodes[i]) == name)
            .unwrap_or(members[0]);
        for i in members.into_iter().filter(|&i| i != keeper) {
            let evr = nodes[i]
                .evr
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_owned();
            let mut candidates = vec![stem(&nodes[i]), format!("{name}-{evr}")].into_iter();
            let new = candidates
                .find(|c| !c.is_empty() && !taken.contains(c))
                .unwrap_or_else(|| {
                    (2..)
                        .map(|k| format!("{name}-{evr}~{k}"))
                        .find(|c| !taken.contains(c))
                        .expect("an unbounded range has a free name")
                });
            taken.insert(new.clone());
            nodes[i].name = new;
        }
    }
}

/// Dependencies that name rpm itself or are otherwise not packages.
fn is_internal(dep: &Dep) -> bool {
    dep.name.starts_with("rpmlib(") || dep.name.starts_with("config(")
}

impl PackageGraph {
    /// Builds the graph of `specs` for `cfg.target_arch`.
    pub fn build(specs: &[Spec], cfg: &GraphConfig) -> PackageGraph {
        let mut nodes = Vec::with_capacity(specs.len());
        let mut bins = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let excluded = arch_excluded(spec, &cfg.target_arch);
            let src = spec.packages.first();
            let mut node = SpecNode {
                path: spec.path.clone(),
                name: src.map(|p| p.name.clone()).unwrap_or_default(),
                evr: src.map(|p| p.evr()).unwrap_or_default(),
                packages: Vec::new(),
                excluded,
                build_requires: spec.source.build_requires.clone(),
            };
            for p in &spec.packages {
                if !p.has_files {
                    // rpm builds no package without a %files section.
                    continue;
                }
                node.packages.push(BinId(bins.len()));
                bins.push(BinPkg {
                    name: p.name.clone(),
                    evr: p.evr(),
                    arch: p.arch.clone(),
                    spec: SpecId(i),
                    requires: p.requires.clone(),
                    provides: p.provides.clone(),
                    files: p.files.clone(),
                });
            }
            nodes.push(node);
        }
        distinct_names(&mut nodes);
        let mut g = PackageGraph {
            specs: nodes,
            bins,
            index: ProvidersIndex::new(
                cfg.toolchain.clone(),
                cfg.seed.clone(),
                cfg.root_files.clone(),
            ),
            edges: Vec::new(),
            unresolved: Vec::new(),
            cycles: Vec::new(),
            out: Vec::new(),
            inc: Vec::new(),
            target_arch: cfg.target_arch.clone(),
            from_tree: cfg.from_tree.clone(),
            carried_closure: HashSet::new(),
        };
        g.index_all();
        g.resolve();
        g
    }

    fn index_all(&mut self) {
        let by_name: HashMap<&str, &BinPkg> =
            self.bins.iter().map(|b| (b.name.as_str(), b)).collect();
        // The build root and the seed provide what the tree's package of the same name
        // declares (they were built from it), plus their own name at their version.
        let mut extra = Vec::new();
        for (list, mk) in [
            (
                &self.index.toolchain,
                ProviderSource::Toolchain as fn(usize) -> ProviderSource,
            ),
            (
                &self.index.seed,
                ProviderSource::Seed as fn(usize) -> ProviderSource,
            ),
        ] {
            for (i, r) in list.iter().enumerate() {
                extra.push((
                    r.name.clone(),
                    r.vr(),
                    by_name.get(r.name.as_str()).map(|b| (*b).clone()),
                    mk(i),
                ));
            }
        }
        for (name, vr, pkg, src) in extra {
            self.index
                .add_cap(&name, keel_specs::deps::sense::EQUAL, &vr, src);
            if let Some(p) = pkg {
                self.index.add_package(&BinPkg { evr: vr, ..p }, src);
            }
        }
        let bins = std::mem::take(&mut self.bins);
        for (i, b) in bins.iter().enumerate() {
            if self.specs[b.spec.0].excluded.is_none() {
                self.index.add_package(b, ProviderSource::Package(BinId(i)));
            }
        }
        self.bins = bins;
    }

    /// Resolves every spec again (after [`ProvidersIndex::learn`]).
    pub fn resolve(&mut self) {
        self.edges.clear();
        self.unresolved.clear();
        let similar = Similar::new(self.index.names());
        let (mut edges, mut unresolved, mut req_cache) = self.resolve_specs(&similar);
        if !self.from_tree.is_empty() {
            // The specs the build root's own packages — and what they pull in — are built
            // from, and everything those need to build: they build without them. Closed
            // under build edges, and only specs outside get the new edges, so no cycle
            // can pass through one.
            let mut carried: Vec<BinId> = self.carried().into_iter().map(|(_, b)| b).collect();
            let mut seen: HashSet<BinId> = carried.iter().copied().collect();
            let mut todo: Vec<usize> = Vec::new();
            while let Some(b) = carried.pop() {
                todo.push(self.bins[b.0].spec.0);
                for (_, res) in self.requires_of(b, &mut req_cache) {
                    if let Resolution::Satisfied(ps) = res {
                        for p in ps {
                            if let ProviderSource::Package(nb) = p
                                && seen.insert(*nb)
                            {
                                carried.push(*nb);
                            }
                        }
                    }
                }
            }
            let mut needs: HashMap<usize, Vec<usize>> = HashMap::new();
            for e in &edges {
                needs.entry(e.from.0).or_default().push(e.to.0);
            }
            let mut below: HashSet<usize> = HashSet::new();
            while let Some(s) = todo.pop() {
                if below.insert(s) {
                    todo.extend(needs.get(&s).into_iter().flatten());
                }
            }
            self.add_carried(&mut edges, &below, &mut req_cache);
            self.carried_closure = below;
        }
        // Unresolved Requires are reported once, against the spec that declares them.
        for (b, list) in &req_cache {
            for (text, res) in list {
                if *res == Resolution::Unresolved {
                    let pkg = &self.bins[b.0];
                    let dep = pkg.requires.iter().find(|d| d.nevr() == *text).cloned();
                    unresolved.push(Unresolved {
                        spec: pkg.spec,
                        kind: UnresolvedKind::Requires {
                            package: pkg.name.clone(),
                        },
                        dep: text.clone(),
                        closest: dep.map(|d| self.closest(&d, &similar)).unwrap_or_default(),
                    });
                }
            }
        }
        unresolved.sort_by(|a, b| (a.spec, &a.dep).cmp(&(b.spec, &b.dep)));
        self.edges = edges;
        self.unresolved = unresolved;
        self.out = vec![Vec::new(); self.specs.len()];
        self.inc = vec![Vec::new(); self.specs.len()];
        for (i, e) in self.edges.iter().enumerate() {
            self.out[e.from.0].push(i);
            self.inc[e.to.0].push(i);
        }
        self.cycles = self.find_cycles();
    }

    /// Whether `spec` is one the build root's carried packages are built from or pull in
    /// ([`GraphConfig::from_tree`]): such a spec builds in the bare build root, as a
    /// toolchain is bootstrapped — without the tree's macro files and rpmrc, which assume
    /// those packages installed (Azure Linux's macros run its own helpers in every %prep).
    pub fn builds_bare(&self, spec: SpecId) -> bool {
        self.carried_closure.contains(&spec.0)
    }

    /// The tree's packages that provide [`GraphConfig::from_tree`]: the one of the same
    /// name, else the first — never the toolchain manifest's package of that name, which
    /// the build root is said to lack. A name no package provides is left out (keel.toml's
    /// error, which the caller reports).
    fn carried(&self) -> Vec<(&str, BinId)> {
        self.from_tree
            .iter()
            .filter_map(|name| {
                let bins: Vec<BinId> = self
                    .index
                    .whatprovides(name, 0, "")
                    .into_iter()
                    .filter_map(|p| match p {
                        ProviderSource::Package(b) => Some(b),
                        _ => None,
                    })
                    .collect();
                let same = bins.iter().find(|b| self.bins[b.0].name == *name);
                same.or(bins.first()).map(|b| (name.as_str(), *b))
            })
            .collect()
    }

    /// The Requires of `b`, each resolved once per resolution pass (`cache`): they
    /// resolve the same way for every spec whose build root pulls `b` in.
    fn requires_of<'c>(
        &self,
        b: BinId,
        cache: &'c mut HashMap<BinId, Vec<(String, Resolution)>>,
    ) -> &'c [(String, Resolution)] {
        cache.entry(b).or_insert_with(|| {
            let names = |p: ProviderSource| self.provider_name(p);
            self.bins[b.0]
                .requires
                .iter()
                .filter(|d| !is_internal(d))
                .map(|d| (d.nevr(), self.index.resolve(d, &names)))
                .collect()
        })
    }

    /// A provider's package name (to prefer a package named like the capability).
    fn provider_name(&self, p: ProviderSource) -> Option<String> {
        match p {
            ProviderSource::Package(b) => Some(self.bins[b.0].name.clone()),
            ProviderSource::Toolchain(i) => self.index.toolchain.get(i).map(|r| r.name.clone()),
            ProviderSource::Seed(i) => self.index.seed.get(i).map(|r| r.name.clone()),
            ProviderSource::BuildRoot => None,
        }
    }

    /// The build edges and unresolved build requirements of every spec, and each pulled-in
    /// package's resolved Requires.
    #[allow(clippy::type_complexity)]
    fn resolve_specs(
        &self,
        similar: &Similar,
    ) -> (
        Vec<BuildEdge>,
        Vec<Unresolved>,
        HashMap<BinId, Vec<(String, Resolution)>>,
    ) {
        let names = |p: ProviderSource| self.provider_name(p);
        let mut edges = Vec::new();
        let mut unresolved = Vec::new();
        // Requires of a binary package resolve the same way for every spec that pulls it
        // in: resolve each package's once.
        let mut req_cache: HashMap<BinId, Vec<(String, Resolution)>> = HashMap::new();
        for (si, spec) in self.specs.iter().enumerate() {
            if spec.excluded.is_some() {
                continue;
            }
            let mut pull = Pull::default();
            for dep in spec.build_requires.iter().filter(|d| !is_internal(d)) {
                let via = format!("BuildRequires: {}", dep.nevr());
                match self.index.resolve(dep, &names) {
                    Resolution::Satisfied(ps) => {
                        for p in ps {
                            if let ProviderSource::Package(b) = p {
                                pull.edge(self, &mut edges, si, b, via.clone());
                            }
                        }
                    }
                    Resolution::NotNeeded => {}
                    Resolution::Unresolved => unresolved.push(Unresolved {
                        spec: SpecId(si),
                        kind: UnresolvedKind::BuildRequires,
                        dep: dep.nevr(),
                        closest: self.closest(dep, similar),
                    }),
                }
            }
            pull.requires(self, &mut edges, si, &mut req_cache);
        }
        (edges, unresolved, req_cache)
    }

    /// Adds, to every spec outside `below`, the edges of the packages the build root
    /// carries ([`GraphConfig::from_tree`]) and of what they pull in.
    fn add_carried(
        &self,
        edges: &mut Vec<BuildEdge>,
        below: &HashSet<usize>,
        req_cache: &mut HashMap<BinId, Vec<(String, Resolution)>>,
    ) {
        let carried = self.carried();
        let mut had: HashMap<usize, HashSet<(usize, String)>> = HashMap::new();
        for e in edges.iter() {
            had.entry(e.from.0)
                .or_default()
                .insert((e.to.0, e.via.clone()));
        }
        for (si, spec) in self.specs.iter().enumerate() {
            if spec.excluded.is_some() || below.contains(&si) {
                continue;
            }
            let mut pull = Pull {
                seen_edge: had.remove(&si).unwrap_or_default(),
                ..Pull::default()
            };
            for (name, b) in &carried {
                pull.edge(
                    self,
                    edges,
                    si,
                    *b,
                    format!("the build root carries {name}"),
                );
            }
            pull.requires(self, edges, si, req_cache);
        }
    }

    /// Same name at other versions, else up to three capability names that differ only
    /// in case, punctuation or digits (`perl(Math::BigInt)` and `perl-Math-BigInt`,
    /// `python3-foo` and `python-foo`): a constant-time probe of `similar`.
    fn closest(&self, dep: &Dep, similar: &Similar) -> Vec<String> {
        let name = match &dep.rich {
            Some(_) => return Vec::new(),
            None => dep.name.as_str(),
        };
        let same: Vec<String> = self
            .index
            .providers(name)
            .iter()
            .map(|p| {
                if p.evr.is_empty() {
                    name.to_owned()
                } else {
                    format!("{name} = {}", p.evr)
                }
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !same.is_empty() {
            return same;
        }
        similar.lookup(name)
    }

    fn find_cycles(&self) -> Vec<Cycle> {
        let n = self.specs.len();
        let succ: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                self.out[i]
                    .iter()
                    .map(|&e| self.edges[e].to.0)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            })
            .collect();
        let mut cycles = Vec::new();
        for comp in tarjan(&succ) {
            let self_loop = comp.len() == 1 && succ[comp[0]].contains(&comp[0]);
            if comp.len() < 2 && !self_loop {
                continue;
            }
            let members: HashSet<usize> = comp.iter().copied().collect();
            let start = *comp
                .iter()
                .min_by_key(|&&i| &self.specs[i].name)
                .expect("non-empty");
            // Shortest way back to `start` within the component.
            let mut prev: HashMap<usize, usize> = HashMap::new();
            let mut q = VecDeque::from([start]);
            let mut closing = None;
            'bfs: while let Some(u) = q.pop_front() {
                for &e in &self.out[u] {
                    let v = self.edges[e].to.0;
                    if v == start {
                        closing = Some(e);
                        break 'bfs;
                    }
                    if members.contains(&v) && !prev.contains_key(&v) && v != start {
                        prev.insert(v, e);
                        q.push_back(v);
                    }
                }
            }
            let Some(last) = closing else { continue };
            let mut path = vec![last];
            let mut cur = self.edges[last].from.0;
            while cur != start {
                let e = prev[&cur];
                path.push(e);
                cur = self.edges[e].from.0;
            }
            path.reverse();
            let steps: Vec<CycleStep> = path
                .iter()
                .map(|&e| {
                    let ed = &self.edges[e];
                    CycleStep {
                        from: ed.from,
                        to: ed.to,
                        via: ed.via.clone(),
                        provider: self.bins[ed.provider.0].name.clone(),
                    }
                })
                .collect();
            let seed_suggestion = steps.last().map(|s| s.provider.clone()).unwrap_or_default();
            cycles.push(Cycle {
                steps,
                seed_suggestion,
            });
        }
        cycles.sort_by(|a, b| {
            self.specs[a.steps[0].from.0]
                .name
                .cmp(&self.specs[b.steps[0].from.0].name)
        });
        cycles
    }

    /// The architecture the graph was resolved for.
    pub fn target_arch(&self) -> &str {
        &self.target_arch
    }

    /// The spec with this source or binary package name.
    pub fn find(&self, name: &str) -> Option<SpecId> {
        self.specs
            .iter()
            .position(|s| s.name == name)
            .or_else(|| self.bins.iter().find(|b| b.name == name).map(|b| b.spec.0))
            .map(SpecId)
    }

    /// The edges out of a spec (what it needs built first).
    pub fn deps(&self, s: SpecId) -> impl Iterator<Item = &BuildEdge> {
        self.out[s.0].iter().map(|&e| &self.edges[e])
    }

    /// The edges into a spec (what needs it).
    pub fn rdeps(&self, s: SpecId) -> impl Iterator<Item = &BuildEdge> {
        self.inc[s.0].iter().map(|&e| &self.edges[e])
    }

    /// The shortest chain of build edges from `a` to `b`.
    pub fn path(&self, a: SpecId, b: SpecId) -> Option<Vec<&BuildEdge>> {
        let mut prev: HashMap<usize, usize> = HashMap::new();
        let mut q = VecDeque::from([a.0]);
        let mut seen = HashSet::from([a.0]);
        while let Some(u) = q.pop_front() {
            if u == b.0 {
                let mut out = Vec::new();
                let mut cur = u;
                while cur != a.0 {
                    let e = prev[&cur];
                    out.push(&self.edges[e]);
                    cur = self.edges[e].from.0;
                }
                out.reverse();
                return Some(out);
            }
            for &e in &self.out[u] {
                let v = self.edges[e].to.0;
                if seen.insert(v) {
                    prev.insert(v, e);
                    q.push_back(v);
                }
            }
        }
        None
    }

    /// Graphviz text: one node per buildable spec, one edge per dependency pair.
    pub fn to_dot(&self) -> String {
        let mut s = String::from("digraph keel {\n  rankdir=LR;\n  node [shape=box];\n");
        for sp in self.specs.iter().filter(|s| s.excluded.is_none()) {
            s.push_str(&format!("  \"{}\";\n", sp.name));
        }
        let pairs: BTreeSet<(&str, &str)> = self
            .edges
            .iter()
            .map(|e| {
                (
                    self.specs[e.from.0].name.as_str(),
                    self.specs[e.to.0].name.as_str(),
                )
            })
            .collect();
        for (a, b) in pairs {
            s.push_str(&format!("  \"{a}\" -> \"{b}\";\n"));
        }
        s.push_str("}\n");
        s
    }
}

/// Strongly connected components (Tarjan's algorithm, iterative so deep trees cannot
/// overflow the stack).
fn tarjan(succ: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = succ.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut comps = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut i)) = work.last_mut() {
            if *i < succ[v].len() {
                let w = succ[v][*i];
                *i += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some(&(u, _)) = work.last() {
                    low[u] = low[u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    loop {
                        let w = stack.pop().expect("v is on the stack");
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    comps.push(comp);
                }
            }
        }
    }
    comps
}

/// Capability names keyed by two loose forms: lowercase alphanumerics, and the same
/// without digits.
struct Similar<'a> {
    by_form: HashMap<String, BTreeSet<&'a str>>,
}

impl<'a> Similar<'a> {
    fn new(names: impl Iterator<Item = &'a str>) -> Self {
        let mut by_form: HashMap<String, BTreeSet<&'a str>> = HashMap::new();
        for n in names {
            for f in forms(n) {
                by_form.entry(f).or_default().insert(n);
            }
        }
        Similar { by_form }
    }

    fn lookup(&self, name: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        for f in forms(name) {
            if let Some(set) = self.by_form.get(&f) {
                out.extend(set.iter().filter(|n| **n != name).map(|n| (*n).to_owned()));
            }
        }
        out.into_iter().take(3).collect()
    }
}

fn forms(s: &str) -> [String; 2] {
    let alnum: String = s
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let letters: String = alnum.chars().filter(|c| !c.is_ascii_digit()).collect();
    [alnum, letters]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarjan_finds_components() {
        // 0 -> 1 -> 2 -> 0, 3 -> 3, 4 alone
        let succ = vec![vec![1], vec![2], vec![0], vec![3], vec![]];
        let mut comps: Vec<Vec<usize>> = tarjan(&succ)
            .into_iter()
            .map(|mut c| {
                c.sort();
                c
            })
            .collect();
        comps.sort();
        assert_eq!(comps, vec![vec![0, 1, 2], vec![3], vec![4]]);
    }

    #[test]
    fn similar_names() {
        let s = Similar::new(["perl-Math-BigInt", "python-foo", "zlib"].into_iter());
        assert_eq!(s.lookup("perl(Math::BigInt)"), ["perl-Math-BigInt"]);
        assert_eq!(s.lookup("python3-foo"), ["python-foo"]);
        assert!(s.lookup("openssl").is_empty());
    }
}
