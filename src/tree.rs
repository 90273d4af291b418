//! Reading a whole tree: every spec under the configured directories, with the tree's
//! macro files and defines, into a [`PackageGraph`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keel_rules::{GraphConfig, PackageGraph, parse_manifest, parse_rpm_filename};
use keel_specs::{CliMacro, EngineConfig, MacroSetup, ReaderConfig, ShellRunner, SpecError};
use rayon::prelude::*;

use crate::config::Tree;

/// A tree read into a graph.
#[derive(Debug)]
pub struct LoadedTree {
    pub graph: PackageGraph,
    /// The specs read, `specs[i]` being the graph's `SpecId(i)`.
    pub specs: Vec<keel_specs::Spec>,
    /// The tree's macro files, in load order.
    pub macro_files: Vec<PathBuf>,
    /// Specs that could not be read (the rest of the tree is still read).
    pub failures: Vec<SpecError>,
    /// Specs left out because a spec directory listed before theirs has a spec of the
    /// same source package name (see [`shadow`]).
    pub shadowed: Vec<Shadowed>,
    /// The tree's version macros each spec uses (`specs.version_macros`), by spec path:
    /// what it is packed and built with besides the tree's defines.
    pub spec_defines: std::collections::HashMap<PathBuf, BTreeMap<String, String>>,
    pub read_time: Duration,
}

/// A spec not planned because an earlier spec directory has its name.
#[derive(Debug, Clone)]
pub struct Shadowed {
    pub path: PathBuf,
    pub name: String,
    /// The spec that has the name.
    pub by: PathBuf,
}

/// Expands a macro-file pattern of keel.toml, relative to the tree root.
fn glob(root: &Path, pattern: &str) -> anyhow::Result<Vec<PathBuf>> {
    let p = root.join(pattern);
    let found = keel_specs::glob_one(&p.to_string_lossy());
    anyhow::ensure!(
        !found.is_empty()
            || p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(['*', '?'])),
        "macro file {} (from keel.toml) does not exist",
        p.display()
    );
    Ok(found)
}

/// The tree's macro files (keel.toml's `specs.macro_files`, expanded), in load order.
pub fn macro_files(tree: &Tree) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for pat in &tree.config.specs.macro_files {
        files.extend(glob(&tree.root, pat)?);
    }
    Ok(files)
}

/// How specs of this tree are read; with a store, `%(shell)` results are kept across
/// processes in its shell cache.
pub fn reader_config(
    tree: &Tree,
    store: Option<&keel_store::Store>,
) -> anyhow::Result<ReaderConfig> {
    reader_config_in(tree, store, &read_root(tree, store)?)
}

/// [`reader_config`] with the build root already resolved.
fn reader_config_in(
    tree: &Tree,
    store: Option<&keel_store::Store>,
    root: &ReadRoot,
) -> anyhow::Result<ReaderConfig> {
    let shell_cache = store.map(|s| s.root().join("shell-cache"));
    let sc = &tree.config.specs;
    let mut cli = Vec::new();
    for f in macro_files(tree)? {
        cli.push(CliMacro::Load(f));
    }
    for (k, v) in &sc.defines {
        cli.push(CliMacro::Define(format!("{k} {v}")));
    }
    let setup = MacroSetup {
        macro_path: if sc.host_macros {
            keel_specs::DEFAULT_MACRO_PATH.into()
        } else {
            String::new()
        },
        target: sc.target.clone(),
        cli,
    };
    let mut ecfg = EngineConfig::default();
    // A tree's `%(shell)` runs contained, in a read-only view of the build root its
    // builds use (the host's, or the tree's toolchain directory), with the spec's
    // directory, no network and an environment without keel's variables; its results
    // are keyed on that root's identity and the spec directory's stamp (see
    // keel_specs::ShellRunner).
    let mut shell = ShellRunner::contained_in(
        &[],
        sc.shell.as_deref().unwrap_or("/bin/sh"),
        Duration::from_secs(60),
        2 << 20,
    );
    shell.view = Some(root.view(store)?);
    if let Some(identity) = &root.identity {
        shell.identity = identity.clone();
    }
    ecfg.shell = Arc::new(shell);
    // Lua runs in keel's own process, so it is contained there: no `os.execute`, no
    // writes, no `KEEL_*` variable (the environment a build sees), bounded memory and
    // time; `%include` and `%{load:}` read only the tree, its macro files' and Lua
    // modules' directories, and rpm's configuration.
    let mut roots = vec![tree.root.clone()];
    if sc.host_macros {
        roots.extend(["/usr/lib/rpm", "/etc/rpm"].map(PathBuf::from));
    }
    for file in setup.cli.iter().filter_map(|c| match c {
        CliMacro::Load(f) => f.parent(),
        _ => None,
    }) {
        roots.push(file.to_path_buf());
    }
    roots.extend(
        sc.lua_modules
            .values()
            .filter_map(|f| tree.root.join(f).parent().map(Path::to_path_buf)),
    );
    ecfg.containment = Some(Arc::new(keel_specs::macros::Containment {
        roots,
        lua_memory: 256 << 20,
        lua_timeout: Duration::from_secs(60),
        scratch: Default::default(),
    }));
    if let Some(lp) = &sc.lua_path {
        ecfg.lua_path = lp.clone();
    }
    for (name, file) in &sc.lua_modules {
        let path = tree.root.join(file);
        anyhow::ensure!(
            path.is_file(),
            "Lua module {name} is {} (from keel.toml's specs.lua_modules), which does not exist",
            path.display()
        );
        ecfg.lua_modules.insert(name.clone(), path);
    }
    ecfg.shell_cache_dir = shell_cache;
    let (table, warnings) =
        keel_specs::load_macros(&setup, &ecfg).context("failed to load the tree's macros")?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    let mut cfg = ReaderConfig::new(table, ecfg);
    // The tree's layout keeps each package's sources beside its spec, so `%{_sourcedir}`
    // is the spec's directory (what Azure Linux's toolkit passes to rpmspec).
    cfg.sourcedir_is_specdir = true;
    Ok(cfg)
}

/// Whether the tree builds on the host toolchain (no `[toolchain] root` or `rpms`).
fn host_toolchain(tree: &Tree) -> bool {
    tree.config.toolchain.root.is_none() && tree.config.toolchain.rpms.is_none()
}

/// The build root the tree's builds use, resolved once per reading of the tree: what its
/// `%(shell)` runs in, whose files satisfy file dependencies, and, with a store, its
/// identity for the shell and spec caches.
struct ReadRoot {
    toolchain: keel_toolchain::Toolchain,
    /// `name fingerprint`, with a store.
    identity: Option<String>,
    /// Where a toolchain tarball or RPM set was unpacked without a store (a read-only
    /// command before the first build): kept as long as the view that runs in it.
    scratch: Option<Arc<tempfile::TempDir>>,
}

/// Resolves the tree's build root; a toolchain tarball or RPM set is unpacked where builds
/// unpack it, or without a store into a temporary one.
fn read_root(tree: &Tree, store: Option<&keel_store::Store>) -> anyhow::Result<ReadRoot> {
    let identity =
        |(name, digest): (String, keel_store::BlobDigest)| format!("{name} {}", digest.to_hex());
    if host_toolchain(tree) {
        let identity = match store {
            Some(s) => Some(identity(
                keel_toolchain::Toolchain::Host
                    .fingerprint_cached(s.root())
                    .context("failed to fingerprint the host toolchain")?,
            )),
            None => None,
        };
        return Ok(ReadRoot {
            toolchain: keel_toolchain::Toolchain::Host,
            identity,
            scratch: None,
        });
    }
    let dir = (tree.config.toolchain.root.as_ref())
        .map(|r| tree.root.join(r))
        .filter(|r| r.is_dir());
    let (resolved, scratch) = match (store, dir) {
        (Some(store), _) => (crate::build::toolchains::resolve(tree, store)?, None),
        (None, Some(dir)) => (
            crate::build::toolchains::Resolved {
                toolchain: keel_toolchain::Toolchain::Dir(dir),
                id: None,
                inputs: Vec::new(),
            },
            None,
        ),
        (None, None) => {
            let tmp = tempfile::Builder::new()
                .prefix("keel-toolchain-")
                .tempdir()
                .context("failed to create a temporary directory for the toolchain")?;
            let store = keel_store::Store::open(&tmp.path().join("store"))?;
            let resolved = crate::build::toolchains::resolve(tree, &store)?;
            (resolved, Some(Arc::new(tmp)))
        }
    };
    let identity = match (store, resolved.id) {
        (None, _) => None,
        (Some(_), Some(id)) => Some(identity(id)),
        (Some(_), None) => Some(identity(
            resolved
                .toolchain
                .fingerprint()
                .context("failed to fingerprint the toolchain")?,
        )),
    };
    Ok(ReadRoot {
        toolchain: resolved.toolchain,
        identity,
        scratch,
    })
}

impl ReadRoot {
    /// The view `%(shell)` runs in: the build root, read-only.
    fn view(&self, store: Option<&keel_store::Store>) -> anyhow::Result<keel_specs::LazyView> {
        let dir = match &self.toolchain {
            keel_toolchain::Toolchain::Dir(dir) => dir,
            keel_toolchain::Toolchain::Host => {
                // The view's staged `/etc` is made when the first command runs (most
                // reads run none: their results are in the shell cache): the one builds
                // on this host use, kept with the store's merged layers, or without a
                // store a temporary one that goes away with the runner that holds it.
                let stage_cache = store.map(|s| s.root().join("layers").join("merged"));
                return Ok(keel_specs::LazyView::new(move || {
                    let view = keel_toolchain::sandbox::HostView::new(stage_cache.as_deref())
                        .map_err(|e| format!("failed to prepare the view %(shell) runs in: {e}"))?;
                    Ok((view.args().to_vec(), Box::new(view)))
                }));
            }
        };
        let args = keel_toolchain::sandbox::dir_view_args(dir).with_context(|| {
            format!(
                "failed to prepare the view %(shell) runs in ({})",
                dir.display()
            )
        })?;
        let keep = self.scratch.clone();
        Ok(keel_specs::LazyView::new(move || {
            Ok((args.clone(), Box::new(keep.clone())))
        }))
    }

    /// The build root's own files, for file dependencies nothing of the tree or the
    /// manifest provides (see `keel_rules::RootFiles`): the host's as a build sees it, or
    /// the toolchain directory's. A toolchain tarball or RPM set is looked into only once
    /// unpacked in a store; without one its file dependencies stay unresolved (warnings,
    /// never edges).
    fn files(&self) -> Option<keel_rules::RootFiles> {
        if self.scratch.is_some() {
            return None;
        }
        let toolchain = self.toolchain.clone();
        Some(keel_rules::RootFiles(Arc::new(move |p: &str| {
            keel_toolchain::sandbox::root_has(&toolchain, p)
        })))
    }
}

/// Everything a spec's evaluation depends on besides its own directory: keel itself,
/// keel.toml, the tree's macro files and (when read) the host's, the Lua modules, and the
/// host build root `%(shell)` runs in.
fn setup_digest(
    tree: &Tree,
    store: &keel_store::Store,
    root: &ReadRoot,
) -> anyhow::Result<keel_store::BlobDigest> {
    let mut text = String::new();
    let exe = std::env::current_exe().ok();
    for f in &setup_files(tree)? {
        // keel itself by its linker's build ID when it has one: hashing a 100 MB binary
        // was most of a fresh store's first read of a tree.
        if exe.as_ref() == Some(f)
            && let Some(id) = elf_build_id(f)
        {
            text.push_str(&format!("{} build-id {id}\n", f.display()));
            continue;
        }
        // A file that cannot be read counts as absent: the reader will say more.
        let d = store.file_digest(f).map(|d| d.to_hex()).unwrap_or_default();
        text.push_str(&format!("{} {d}\n", f.display()));
    }
    // `%(shell)` sees the build root (see `reader_config`).
    text.push_str(&format!(
        "shell view {}\n",
        root.identity.as_deref().unwrap_or_default()
    ));
    Ok(keel_store::BlobDigest::of_bytes(text.as_bytes()))
}

/// The GNU build ID of a 64-bit little-endian ELF file (`readelf -n`): a hash of its
/// contents the linker wrote into it. `None` for anything else.
fn elf_build_id(path: &Path) -> Option<String> {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::File::open(path).ok()?;
    let read = |offset: u64, len: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).ok()?;
        Some(buf)
    };
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at =
        |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
    let u64_at =
        |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
    let header = read(0, 64)?;
    // Magic, 64-bit, little-endian.
    if header[..4] != *b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20),
        usize::from(u16_at(&header, 0x36)),
        usize::from(u16_at(&header, 0x38)),
    );
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let table = read(phoff, phentsize * phnum)?;
    for ph in table.chunks_exact(phentsize) {
        const PT_NOTE: u32 = 4;
        let (offset, size) = (u64_at(ph, 8), u64_at(ph, 32));
        if u32_at(ph, 0) != PT_NOTE || size > 1 << 16 {
            continue;
        }
        let notes = read(offset, usize::try_from(size).ok()?)?;
        let mut i = 0;
        while i + 12 <= notes.len() {
            let (namesz, descsz, kind) = (
                u32_at(&notes, i) as usize,
                u32_at(&notes, i + 4) as usize,
                u32_at(&notes, i + 8),
            );
            let name = i + 12;
            let desc = name + namesz.next_multiple_of(4);
            let end = desc + descsz.next_multiple_of(4);
            if end > notes.len() {
                break;
            }
            const NT_GNU_BUILD_ID: u32 = 3;
            if kind == NT_GNU_BUILD_ID && notes[name..name + namesz] == *b"GNU\0" && descsz > 0 {
                let id = &notes[desc..desc + descsz];
                return Some(id.iter().map(|b| format!("{b:02x}")).collect());
            }
            i = end;
        }
    }
    None
}

/// The files behind [`setup_digest`].
pub fn setup_files(tree: &Tree) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        files.push(exe);
    }
    files.push(tree.root.join(crate::config::FILE_NAME));
    files.extend(macro_files(tree)?);
    let sc = &tree.config.specs;
    if sc.host_macros {
        for pat in keel_specs::DEFAULT_MACRO_PATH.split(':') {
            files.extend(keel_specs::glob_one(pat));
        }
    }
    if let Some(lp) = &sc.lua_path {
        for pat in lp.split(';') {
            files.extend(keel_specs::glob_one(&pat.replace('?', "*")));
        }
    }
    files.extend(sc.lua_modules.values().map(|f| tree.root.join(f)));
    Ok(files)
}

/// Reads every spec of the tree and builds its graph; with a store, answering from its
/// spec cache for every spec whose inputs are unchanged (see `keel_rules::speccache`).
pub fn load_with(tree: &Tree, store: Option<&keel_store::Store>) -> anyhow::Result<LoadedTree> {
    let start = Instant::now();
    let root = read_root(tree, store)?;
    let reader = reader_config_in(tree, store, &root)?;
    let mut files = Vec::new();
    // Which of keel.toml's spec directories each file is from, by position.
    let mut root_of = Vec::new();
    for (r, d) in tree.config.specs.dirs.iter().enumerate() {
        let dir = tree.root.join(d);
        anyhow::ensure!(
            dir.is_dir(),
            "spec directory {} (from keel.toml) does not exist",
            dir.display()
        );
        let found = keel_specs::find_specs(&dir);
        root_of.extend(std::iter::repeat_n(r, found.len()));
        files.extend(found);
    }
    let mut cache = store.map(|s| {
        (
            s,
            keel_rules::speccache::SpecCache::load(&s.root().join("specs.cache")),
        )
    });
    let setup = match store {
        Some(s) => Some(setup_digest(tree, s, &root)?),
        None => None,
    };
    let mut read = |files: &[PathBuf],
                    reader: &keel_specs::ReaderConfig,
                    setup: Option<keel_store::BlobDigest>|
     -> Vec<Result<keel_specs::Spec, SpecError>> {
        match (&mut cache, setup) {
            (Some((store, cache)), Some(setup)) => {
                let (results, stats) = cache.read_all(store, &setup, files, reader);
                tracing::debug!("spec cache: {} hits, {} parsed", stats.hits, stats.parsed);
                results
            }
            _ => files
                .par_iter()
                .map(|f| keel_specs::read_spec(f, reader))
                .collect(),
        }
    };
    let results = read(&files, &reader, setup);
    let mut specs = Vec::new();
    let mut roots = Vec::new();
    let mut failures = Vec::new();
    for (r, root) in results.into_iter().zip(root_of) {
        match r {
            Ok(s) => {
                specs.push(s);
                roots.push(root);
            }
            Err(e) => failures.push(e),
        }
    }
    let shadowed = shadow(&mut specs, &roots);
    let mut spec_defines = std::collections::HashMap::new();
    if let Some(prefix) = &tree.config.specs.version_macros {
        let dist = tree.config.specs.defines.get("dist").map(String::as_str);
        let macros = version_macros(&specs, prefix, dist.unwrap_or(""));
        // Found in the spec files as written (a spec from the spec cache has no expanded
        // text, and a use through `%global` is in the file too).
        let used_by: Vec<std::collections::BTreeSet<&str>> = specs
            .iter()
            .map(|s| {
                let text = std::fs::read_to_string(&s.path).unwrap_or_default();
                macros_used(&text, prefix, &macros)
            })
            .collect();
        let users: Vec<usize> = (0..specs.len())
            .filter(|&i| !used_by[i].is_empty())
            .collect();
        if !users.is_empty() {
            // Read again, with the macros defined, only the specs that use them (a spec
            // reads an undefined macro as its own name, which is how they are found):
            // every other spec's reading stays independent of other specs' versions.
            let mut table = (*reader.macros).clone();
            let mut text = String::new();
            for (k, v) in &macros {
                table.push(k, None, v, keel_specs::macros::LEVEL_CMDLINE);
                text.push_str(&format!("%{k} {v}\n"));
            }
            let mut with = keel_specs::ReaderConfig::new(table, reader.engine.clone());
            with.sourcedir_is_specdir = reader.sourcedir_is_specdir;
            let setup = setup.map(|d| {
                keel_store::BlobDigest::of_bytes(format!("{}\n{text}", d.to_hex()).as_bytes())
            });
            let paths: Vec<PathBuf> = users.iter().map(|&i| specs[i].path.clone()).collect();
            let again = read(&paths, &with, setup);
            let mut gone = Vec::new();
            for (&i, r) in users.iter().zip(again) {
                let used = &used_by[i];
                match r {
                    Ok(s) => specs[i] = s,
                    Err(e) => {
                        failures.push(e);
                        gone.push(i);
                    }
                }
                let defines = used
                    .iter()
                    .map(|&k| (k.to_owned(), macros[k].clone()))
                    .collect();
                spec_defines.insert(specs[i].path.clone(), defines);
            }
            for i in gone.into_iter().rev() {
                specs.remove(i);
            }
        }
    }
    if let Some((store, cache)) = &cache
        && let Err(e) = cache.save()
    {
        tracing::warn!(
            "could not save the spec cache {}: {e}",
            store.root().join("specs.cache").display()
        );
    }
    let read_time = start.elapsed();
    let target_arch = target_arch(tree);
    let toolchain = match &tree.config.toolchain.manifest {
        Some(m) => parse_manifest(&tree.root.join(m))?,
        None => Vec::new(),
    };
    let seed = tree
        .config
        .bootstrap
        .seed
        .iter()
        .map(|s| {
            parse_rpm_filename(s).with_context(|| {
                format!("bootstrap.seed in keel.toml: `{s}` is not an RPM file name")
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let graph = PackageGraph::build(
        &specs,
        &GraphConfig {
            target_arch,
            toolchain,
            seed,
            root_files: root.files(),
            from_tree: tree.config.toolchain.from_tree.clone(),
        },
    );
    for name in &tree.config.toolchain.from_tree {
        let provided = graph
            .index
            .whatprovides(name, 0, "")
            .iter()
            .any(|p| matches!(p, keel_rules::ProviderSource::Package(_)));
        anyhow::ensure!(
            provided,
            "keel.toml: [toolchain] from_tree names {name}, which no package of the tree provides"
        );
    }
    Ok(LoadedTree {
        graph,
        specs,
        macro_files: macro_files(tree)?,
        failures,
        shadowed,
        spec_defines,
        read_time,
    })
}

/// Leaves out each spec whose source package name a spec of an earlier spec directory
/// (keel.toml's `specs.dirs`, `roots[i]` being `specs[i]`'s) already has. Azure Linux's
/// toolkit builds SPECS and SPECS-EXTENDED as two separate sets, so rdma-core and ucx are
/// in both, at different versions; in one graph they would be one package twice, and the
/// directory listed first is the one whose package is built. Specs of one directory that
/// share a name (golang's) are all kept: the toolkit packs them all.
pub fn shadow(specs: &mut Vec<keel_specs::Spec>, roots: &[usize]) -> Vec<Shadowed> {
    let name = |s: &keel_specs::Spec| s.packages.first().map(|p| p.name.clone());
    let mut first: std::collections::HashMap<String, (usize, PathBuf)> =
        std::collections::HashMap::new();
    let mut keep = vec![true; specs.len()];
    let mut shadowed = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let Some(n) = name(s) else { continue };
        match first.get(&n) {
            Some((root, by)) if *root < roots[i] => {
                keep[i] = false;
                shadowed.push(Shadowed {
                    path: s.path.clone(),
                    name: n,
                    by: by.clone(),
                });
            }
            Some(_) => {}
            None => {
                first.insert(n, (roots[i], s.path.clone()));
            }
        }
    }
    let mut i = 0;
    specs.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    shadowed
}

/// The toolkit's version macros of every spec (its versionsprocessor):
/// `%<prefix>_<stem>_version`, `_release` without the dist tag, and `_epoch` when the spec
/// has one, `<stem>` being the spec's file name without `.spec`, `-` as `_`.
pub fn version_macros(
    specs: &[keel_specs::Spec],
    prefix: &str,
    dist: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in specs {
        let (Some(stem), Some(p)) = (s.path.file_stem(), s.packages.first()) else {
            continue;
        };
        let stem = stem.to_string_lossy().replace('-', "_");
        let release = if dist.is_empty() {
            p.release.clone()
        } else {
            p.release.replacen(dist, "", 1)
        };
        out.insert(format!("{prefix}_{stem}_version"), p.version.clone());
        out.insert(format!("{prefix}_{stem}_release"), release);
        if let Some(e) = p.epoch {
            out.insert(format!("{prefix}_{stem}_epoch"), e.to_string());
        }
    }
    out
}

/// The names of `macros` that `text` (a spec as read) names as `%name` or `%{name}`.
fn macros_used<'a>(
    text: &str,
    prefix: &str,
    macros: &'a BTreeMap<String, String>,
) -> std::collections::BTreeSet<&'a str> {
    let mut used = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        rest = &rest[i + 1..];
        let after = rest.trim_start_matches(['{', '?', '!']);
        if !after.starts_with(prefix) {
            continue;
        }
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if let Some((k, _)) = macros.get_key_value(&after[..end]) {
            used.insert(k.as_str());
        }
    }
    used
}

/// The architecture the tree is built for (`specs.target`'s first part, else the host's).
pub fn target_arch(tree: &Tree) -> String {
    tree.config
        .specs
        .target
        .as_deref()
        .and_then(|t| t.split('-').next())
        .unwrap_or(std::env::consts::ARCH)
        .to_owned()
}

/// The tree, or an error saying how to name one.
pub fn require(tree: Option<&Tree>) -> anyhow::Result<&Tree> {
    tree.context("no keel.toml here or above: run in a tree, or name one with -C DIR")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_id_is_the_one_readelf_prints() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("readelf")
            .arg("-n")
            .arg(&exe)
            .output()
            .expect("readelf (binutils) is installed");
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .expect("the test binary has a build ID");
        assert_eq!(elf_build_id(&exe).as_deref(), Some(expected));
        // Anything else has none.
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("not-elf");
        std::fs::write(&other, b"#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(elf_build_id(&other), None);
        assert_eq!(elf_build_id(&dir.path().join("missing")), None);
    }
}
