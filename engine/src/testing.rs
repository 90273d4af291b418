//! A deterministic executor for tests, benchmarks and demos of the engine itself.
//!
//! [`TestExecutor`] stores, as an action's single output, a text that is a pure function of
//! the action's key inputs and its dependencies' outputs — so a cached result is exactly
//! what a fresh run would give, which is the property the engine relies on. Files named by
//! digest (spec, patches, macro files, toolchain manifest, image config…) are read from the
//! store and their comment lines (starting with `#`) are left out of that function: editing
//! only a comment changes the action's key but not its output. That is the knob for "same
//! output despite changed inputs", and it exercises early cutoff the way a real build does
//! (a changelog edit rebuilds a package whose bits come out identical).
//!
//! Other knobs, per action name: fail, take real time (polling the cancel flag), panic.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_store::{ActionOutput, BlobDigest, ObjectRef, Store};

use crate::error::ExecError;
use crate::exec::{ExecContext, ExecOutcome, Executor};
use crate::keys::{KeyInputs, compute_output_digest};

/// See the module docs.
#[derive(Debug, Default)]
pub struct TestExecutor {
    fail: HashSet<String>,
    panic: HashSet<String>,
    sleep: HashMap<String, Duration>,
    executed: Mutex<Vec<String>>,
    /// File digest -> digest of its significant lines. Sound to keep: a digest names
    /// the same bytes forever.
    significant: Mutex<HashMap<BlobDigest, BlobDigest>>,
}

impl TestExecutor {
    pub fn new() -> TestExecutor {
        TestExecutor::default()
    }

    /// Makes the action named `name` fail.
    pub fn fail(mut self, name: &str) -> TestExecutor {
        self.fail.insert(name.to_owned());
        self
    }

    /// Makes the action named `name` panic.
    pub fn panic(mut self, name: &str) -> TestExecutor {
        self.panic.insert(name.to_owned());
        self
    }

    /// Makes the action named `name` take `d` of real time, stopping early if cancelled.
    pub fn sleep(mut self, name: &str, d: Duration) -> TestExecutor {
        self.sleep.insert(name.to_owned(), d);
        self
    }

    /// The names of the actions executed so far, in the order they finished.
    pub fn executed(&self) -> Vec<String> {
        self.executed.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Forgets which actions were executed.
    pub fn clear(&self) {
        if let Ok(mut v) = self.executed.lock() {
            v.clear();
        }
    }

    /// The text this executor outputs for an action whose dependencies' output digests
    /// (hex) are `deps` (pure but for reading blobs).
    pub fn output_text(
        &self,
        store: &Store,
        inputs: &KeyInputs,
        deps: &[(&str, String)],
    ) -> String {
        let mut significant = inputs.clone();
        let sig = |d: &mut BlobDigest| *d = self.significant_digest(store, d);
        match &mut significant {
            KeyInputs::SourceFetch(_) | KeyInputs::RepoIndex(_) => {}
            KeyInputs::SrpmPack(i) => {
                sig(&mut i.spec);
                i.files.values_mut().for_each(sig);
                i.macro_files.iter_mut().map(|(_, d)| d).for_each(sig);
                sig(&mut i.toolchain.fingerprint);
            }
            KeyInputs::RpmBuild(i) => {
                sig(&mut i.spec);
                i.macro_files.iter_mut().map(|(_, d)| d).for_each(sig);
                sig(&mut i.toolchain.fingerprint);
            }
            KeyInputs::Image(i) => {
                sig(&mut i.config);
                i.package_lists.values_mut().for_each(sig);
                sig(&mut i.tools);
            }
        }
        let mut text = serde_json::to_string(&significant).expect("inputs serialize");
        let mut deps = deps.to_vec();
        deps.sort();
        for (name, out) in deps {
            text.push('\n');
            text.push_str(name);
            text.push(' ');
            text.push_str(&out);
        }
        text
    }
}

impl TestExecutor {
    /// The digest of a stored file's bytes without its comment lines; the digest itself
    /// when the file is not in the store.
    fn significant_digest(&self, store: &Store, d: &BlobDigest) -> BlobDigest {
        if let Some(s) = self.significant.lock().ok().and_then(|m| m.get(d).copied()) {
            return s;
        }
        let s = match store.read_blob(d) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let kept: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .collect();
                BlobDigest::of_bytes(kept.join("\n").as_bytes())
            }
            Err(_) => return *d,
        };
        if let Ok(mut m) = self.significant.lock() {
            m.insert(*d, s);
        }
        s
    }
}

impl Executor for TestExecutor {
    fn execute(&self, ctx: &ExecContext<'_>) -> Result<ExecOutcome, ExecError> {
        let name = &ctx.action.name;
        if let Some(d) = self.sleep.get(name) {
            let until = Instant::now() + *d;
            while Instant::now() < until {
                if ctx.cancel.is_cancelled() {
                    return Err(ExecError::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(1).min(*d));
            }
        }
        if self.panic.contains(name) {
            panic!("test executor told to panic on {name}");
        }
        if self.fail.contains(name) {
            return Err(ExecError::Failed {
                message: format!("test executor told to fail {name}"),
            });
        }
        let deps: Vec<(&str, String)> = ctx
            .deps
            .iter()
            .map(|(n, r)| (*n, compute_output_digest(&r.outputs).to_hex()))
            .collect();
        let text = self.output_text(ctx.store, &ctx.action.inputs, &deps);
        let blob = ctx.store.put_bytes(text.as_bytes())?;
        if let Ok(mut v) = self.executed.lock() {
            v.push(name.clone());
        }
        Ok(ExecOutcome {
            outputs: vec![ActionOutput {
                name: "out".into(),
                object: ObjectRef::Blob(blob),
            }],
            log: None,
        })
    }
}

/// The state of one generated file: its significant content and its comment, each a
/// version number. Its text is `content N` and `# comment M` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileState {
    pub content: u32,
    pub comment: u32,
}

impl FileState {
    /// The file's bytes.
    pub fn text(&self, what: &str) -> String {
        format!(
            "{what}\ncontent {}\n# comment {}\n",
            self.content, self.comment
        )
    }
}

/// One generated source package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub release: u32,
    pub spec: FileState,
    /// A patch kept in the tree.
    pub patch: FileState,
    /// The version of its fetched source tarball (part of the file name and checksum).
    pub source: u32,
    /// Indices of earlier packages whose RPMs it builds against.
    pub build_requires: Vec<usize>,
}

/// A generated distribution tree, shaped like a real one: a toolchain core that most
/// packages build against, chains of libraries above it, and one repository and image
/// over everything. Every input can be edited; [`Distro::graph`] stores the files and
/// returns the action graph for the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distro {
    pub packages: Vec<Package>,
    pub macros: FileState,
    pub toolchain: FileState,
    pub with_check: bool,
    pub image_config: FileState,
}

/// A small deterministic generator (SplitMix64), so that generated trees need no crate.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

impl Distro {
    /// No package outside the core depends on a chain longer than this.
    pub const MAX_DEPTH: usize = 20;

    /// `packages` packages of which the first `core` form the toolchain core (each core
    /// package builds against the previous one; every other package against one or two
    /// core packages and up to three packages shortly before it, which gives chains). Chains
    /// of build requirements stay within about [`Distro::MAX_DEPTH`] packages (the core's
    /// own chain aside), like a real distribution's.
    pub fn generate(packages: usize, core: usize, seed: u64) -> Distro {
        let mut rng = SplitMix(seed);
        let core = core.clamp(1, packages.max(1));
        let mut pkgs = Vec::with_capacity(packages);
        // The longest chain of build requirements ending at each package, in packages.
        let mut depth: Vec<usize> = Vec::with_capacity(packages);
        for i in 0..packages {
            let mut br = Vec::new();
            if i > 0 && i < core {
                br.push(i - 1);
            } else if i >= core {
                for _ in 0..1 + rng.below(2) {
                    br.push(rng.below(core));
                }
                let window = (i - core).min(40);
                if window > 0 {
                    for _ in 0..rng.below(4) {
                        let j = i - 1 - rng.below(window);
                        if depth[j] < Self::MAX_DEPTH {
                            br.push(j);
                        }
                    }
                }
            }
            br.sort_unstable();
            br.dedup();
            depth.push(1 + br.iter().map(|j| depth[*j]).max().unwrap_or(0));
            pkgs.push(Package {
                name: format!("pkg{i:04}"),
                release: 1,
                spec: FileState::default(),
                patch: FileState::default(),
                source: 1,
                build_requires: br,
            });
        }
        Distro {
            packages: pkgs,
            macros: FileState::default(),
            toolchain: FileState::default(),
            with_check: true,
            image_config: FileState::default(),
        }
    }

    /// The number of actions [`Distro::graph`] makes.
    pub fn action_count(&self) -> usize {
        self.packages.len() * 3 + 2
    }

    /// Stores the tree's files in `store` and returns the graph of the current state.
    /// Action names: `source:NAME`, `srpm:NAME`, `rpm:NAME`, `repo:base`, `image:core`.
    pub fn graph(&self, store: &Store) -> Result<crate::Graph, keel_store::StoreError> {
        use crate::keys::*;
        use std::collections::BTreeMap;

        let mut g = crate::Graph::new();
        let macros = store.put_bytes(self.macros.text("%dist .azl3").as_bytes())?;
        let macro_files: Vec<(String, BlobDigest)> = vec![("macros.dist".to_owned(), macros)];
        let defines: BTreeMap<String, String> = [
            ("dist".to_owned(), ".azl3".to_owned()),
            (
                "with_check".to_owned(),
                u8::from(self.with_check).to_string(),
            ),
        ]
        .into();
        let toolchain = ToolchainId {
            name: "test-toolchain".into(),
            fingerprint: store.put_bytes(self.toolchain.text("gcc glibc binutils").as_bytes())?,
        };
        let arch = "x86_64".to_owned();
        let executor = crate::keys::ExecutorId::new("test", "none");
        let mut rpms = Vec::with_capacity(self.packages.len());
        for p in &self.packages {
            let evr = Evr::new("1.0", &p.release.to_string());
            let head = format!("Name: {}\nRelease: {}", p.name, p.release);
            let spec = store.put_bytes(p.spec.text(&head).as_bytes())?;
            let patch =
                store.put_bytes(p.patch.text(&format!("patch of {}", p.name)).as_bytes())?;
            let tarball = format!("{}-{}.tar.gz", p.name, p.source);
            let source = g
                .add(
                    format!("source:{}", p.name),
                    KeyInputs::SourceFetch(SourceFetchInputs {
                        sha256: BlobDigest::of_bytes(tarball.as_bytes()).to_hex(),
                        file_name: tarball,
                        executor: executor.clone(),
                    }),
                    &[],
                )
                .expect("generated names are unique");
            let srpm = g
                .add(
                    format!("srpm:{}", p.name),
                    KeyInputs::SrpmPack(SrpmPackInputs {
                        name: p.name.clone(),
                        evr: evr.clone(),
                        spec,
                        files: [(format!("{}.patch", p.name), patch)].into(),
                        macro_files: macro_files.clone(),
                        defines: defines.clone(),
                        target_arch: arch.clone(),
                        toolchain: toolchain.clone(),
                        executor: executor.clone(),
                        build_root: Default::default(),
                    }),
                    &[source],
                )
                .expect("generated names are unique");
            let mut deps = vec![srpm];
            deps.extend(p.build_requires.iter().map(|i| rpms[*i]));
            let rpm = g
                .add(
                    format!("rpm:{}", p.name),
                    KeyInputs::RpmBuild(RpmBuildInputs {
                        name: p.name.clone(),
                        evr,
                        spec,
                        macro_files: macro_files.clone(),
                        defines: defines.clone(),
                        target_arch: arch.clone(),
                        toolchain: toolchain.clone(),
                        env: [("SOURCE_DATE_EPOCH".to_owned(), "0".to_owned())].into(),
                        executor: executor.clone(),
                        check: true,
                        build_root: Default::default(),
                    }),
                    &deps,
                )
                .expect("generated names are unique");
            rpms.push(rpm);
        }
        let repo = g
            .add(
                "repo:base",
                KeyInputs::RepoIndex(RepoIndexInputs {
                    name: "base".into(),
                    target_arch: arch.clone(),
                    indexer: "createrepo_c 1.1.2".into(),
                    options: BTreeMap::new(),
                    executor: executor.clone(),
                }),
                &rpms,
            )
            .expect("generated names are unique");
        let config = store.put_bytes(self.image_config.text("image core").as_bytes())?;
        g.add(
            "image:core",
            KeyInputs::Image(ImageInputs {
                name: "core".into(),
                config,
                package_lists: BTreeMap::new(),
                tools: BlobDigest::of_bytes(b"mkfs.ext4 1.47"),
                format: "raw".into(),
                target_arch: arch,
                system: "Standard".into(),
                scripts: BTreeMap::new(),
                env: BTreeMap::new(),
                external: BTreeMap::new(),
                executor,
            }),
            &[repo],
        )
        .expect("generated names are unique");
        Ok(g)
    }
}

/// Simulated durations in seconds, shaped like a distribution build: quick sources and
/// SRPMs, RPM builds from seconds to an hour (the cube of a uniform number: most short, a
/// long tail) with the toolchain core among the slow ones, minutes for the repository and
/// image. Shared by the scheduling tests and the benchmark.
pub fn distro_durations(g: &crate::Graph, seed: u64) -> Vec<u64> {
    use crate::keys::ActionKind;
    let mut rng = SplitMix(seed);
    g.iter()
        .map(|(_, a)| match a.kind() {
            ActionKind::SourceFetch => 1 + rng.below(5) as u64,
            ActionKind::SrpmPack => 2 + rng.below(4) as u64,
            ActionKind::RpmBuild => {
                let u = rng.below(1000) as u64;
                let core = a.name.as_str() < "rpm:pkg0020";
                10 + u * u * u / 400_000 + if core { 600 } else { 0 }
            }
            ActionKind::RepoIndex => 60,
            ActionKind::Image => 300,
        })
        .collect()
}
