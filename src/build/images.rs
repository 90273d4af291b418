//! Images as actions of `keel build`: the image configs `keel.toml` names, turned into
//! `image:<stem>` actions (see `keel_rules::images` for their dependencies), the executor
//! that assembles them with keel-image, and publishing to `out/images/<stem>/`.
//!
//! An image action reads nothing from the tree when it runs: its config, package lists
//! and post-install scripts are stored when the graph is made and parsed again from the
//! store, and its RPMs are the outputs of its `rpm:` dependencies.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context as _;
use keel_engine::{ExecContext, ExecError, ExecOutcome, Executor, ImageInputs, KeyInputs};
use keel_image::ImageConfig;
use keel_image::config::ArtifactKind;
use keel_rules::actions::stored_file;
use keel_rules::images::{ImageClosure, ImageRequest};
use keel_store::{ActionOutput, BlobDigest, ObjectRef, Store};

use crate::config::Tree;

/// An image of the tree, read from its config, with its closure over the tree.
pub struct PlannedImage {
    /// The action's name, `image:<stem>`.
    pub action: String,
    pub request: ImageRequest,
    pub closure: ImageClosure,
    /// The files of the tree it was made from (config, lists, scripts), for the stamp.
    pub files: Vec<PathBuf>,
}

impl PlannedImage {
    /// The image's name (its config's file stem).
    pub fn name(&self) -> &str {
        &self.request.inputs.name
    }
}

/// Whether `target` names an image (`image:<stem>` or `<stem>`) among `images`.
pub fn is_image_target(images: &[PlannedImage], target: &str) -> bool {
    images
        .iter()
        .any(|i| i.action == target || i.name() == target)
}

/// Reads every image config of `[images]` and resolves its closure over the tree.
pub fn plan(
    tree: &Tree,
    store: &Store,
    loaded: &crate::tree::LoadedTree,
    executor: &keel_engine::ExecutorId,
) -> anyhow::Result<Vec<PlannedImage>> {
    let section = &tree.config.images;
    let mut out: Vec<PlannedImage> = Vec::new();
    if section.configs.is_empty() {
        return Ok(out);
    }
    let repos = ExternalRepos::read(tree, store, &loaded.graph)?;
    for rel in &section.configs {
        let shown = rel.display().to_string();
        let path = tree.root.join(rel);
        let name = rel
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .with_context(|| format!("[images] configs: {shown} has no file name"))?;
        if let Some(other) = out.iter().find(|i| i.name() == name) {
            anyhow::bail!(
                "[images] configs: {shown} and {} would both be image:{name}",
                other.request.config
            );
        }
        let config_digest = stored_file(store, &path)?;
        let bytes = std::fs::read(&path).with_context(|| format!("failed to read {shown}"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let read: RefCell<BTreeMap<String, BlobDigest>> = RefCell::default();
        let config = keel_image::parse_config(rel, &bytes, &|r| {
            let p = dir.join(r);
            let d = stored_file(store, &p).map_err(|e| keel_image::Error::Io {
                action: "read",
                path: p.clone(),
                source: std::io::Error::other(format!("{e:#}")),
            })?;
            read.borrow_mut().insert(r.to_owned(), d);
            store.read_blob(&d).map_err(|e| keel_image::Error::Io {
                action: "read",
                path: p,
                source: std::io::Error::other(e.to_string()),
            })
        })
        .with_context(|| format!("failed to read the image config {shown}"))?;
        let read = read.into_inner();
        let system = match section.systems.get(&name) {
            Some(s) => config.system(s).with_context(|| {
                format!("[images] systems: {shown} has no system config named {s:?}")
            })?,
            None => config
                .systems
                .first()
                .with_context(|| format!("{shown} has no SystemConfigs"))?,
        };
        let lists: Vec<&String> = config
            .systems
            .iter()
            .flat_map(|s| &s.package_lists)
            .collect();
        let (package_lists, scripts): (BTreeMap<_, _>, BTreeMap<_, _>) =
            read.into_iter().partition(|(r, _)| lists.contains(&r));
        let closure =
            keel_rules::images::image_closure(&loaded.graph, &shown, &system.packages, &|cap| {
                repos.provides(cap)
            })?;
        for (pkg, dep) in &closure.external {
            tracing::warn!(
                "image {name}: {pkg} requires {dep}, which no package of the tree or of [images] repos provides"
            );
        }
        let sde = source_date_epoch(loaded, &closure);
        let artifacts: Vec<String> = config
            .disks
            .iter()
            .flat_map(|d| &d.artifacts)
            .map(|a| a.file_name())
            .collect();
        let mut files = vec![path.clone()];
        files.extend(repos.rpms.iter().map(|r| r.path.clone()));
        files.extend(
            package_lists
                .keys()
                .chain(scripts.keys())
                .map(|r| dir.join(r)),
        );
        out.push(PlannedImage {
            action: format!("image:{name}"),
            request: ImageRequest {
                config: shown,
                packages: system.packages.clone(),
                inputs: ImageInputs {
                    name: name.clone(),
                    config: config_digest,
                    package_lists,
                    tools: tools_id(store, &config, system)?,
                    format: artifacts.join(" "),
                    target_arch: loaded.graph.target_arch().to_owned(),
                    system: system.name.clone(),
                    scripts,
                    env: [("SOURCE_DATE_EPOCH".to_owned(), sde.to_string())].into(),
                    external: repos
                        .rpms
                        .iter()
                        .map(|r| (r.file.clone(), r.digest))
                        .collect(),
                    executor: executor.clone(),
                },
            },
            closure,
            files,
        });
    }
    for name in section.systems.keys() {
        anyhow::ensure!(
            out.iter().any(|i| i.name() == name),
            "[images] systems names {name}, which is no image of [images] configs"
        );
    }
    Ok(out)
}

/// The prebuilt RPMs of `[images] repos`.
///
/// Every one of them is an input of every image (a new package in an external
/// repository may be what an image's closure picks): simple and never stale, at the cost
/// of rebuilding images when an external package they do not use changes. A package the
/// tree builds itself shadows an external one of the same name.
pub struct ExternalRepos {
    rpms: Vec<ExternalRpm>,
    /// Every capability, package name and file path the RPMs provide.
    provided: std::collections::HashSet<String>,
}

struct ExternalRpm {
    file: String,
    path: PathBuf,
    digest: BlobDigest,
}

impl ExternalRepos {
    pub fn read(
        tree: &Tree,
        store: &Store,
        pg: &keel_rules::PackageGraph,
    ) -> anyhow::Result<ExternalRepos> {
        let ours: std::collections::HashSet<&str> =
            pg.bins.iter().map(|b| b.name.as_str()).collect();
        let mut repos = ExternalRepos {
            rpms: Vec::new(),
            provided: Default::default(),
        };
        for rel in &tree.config.images.repos {
            let dir = tree.root.join(rel);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("[images] repos: failed to read {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "rpm") && p.is_file())
                .collect();
            files.sort();
            for path in files {
                let file = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let info = keel_toolchain::read_rpm(&path).with_context(|| {
                    format!("[images] repos: {} is not a readable RPM", path.display())
                })?;
                if info.is_source || ours.contains(info.name.as_str()) {
                    continue;
                }
                if repos.rpms.iter().any(|r| r.file == file) {
                    tracing::warn!(
                        "[images] repos: {} is in two repositories; the first one's is used",
                        file
                    );
                    continue;
                }
                repos.provided.insert(info.name.clone());
                repos
                    .provided
                    .extend(info.provides.iter().map(|p| p.name.clone()));
                repos.provided.extend(info.files.iter().cloned());
                repos.rpms.push(ExternalRpm {
                    file,
                    digest: stored_file(store, &path)?,
                    path,
                });
            }
        }
        Ok(repos)
    }

    /// Whether a package of the repositories provides `capability` (a package name, a
    /// capability or a file path).
    pub fn provides(&self, capability: &str) -> bool {
        self.provided.contains(capability)
    }

    /// The RPM files, in order.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.rpms.iter().map(|r| &r.path)
    }
}

/// The image's times: the newest changelog entry of the specs its packages come from,
/// like the packages' own (so an unrelated package's changelog never changes an image).
pub fn source_date_epoch(loaded: &crate::tree::LoadedTree, closure: &ImageClosure) -> i64 {
    closure
        .specs
        .iter()
        .filter_map(|s| loaded.specs[s.0].source.changelog_newest)
        .max()
        .unwrap_or(0)
}

/// The first line of `program args…`'s output (stdout, then stderr) that holds a
/// version number; asked once per process (a second caller waits for the first).
fn tool_version(program: &str, args: &[&str]) -> String {
    static SEEN: OnceLock<Mutex<HashMap<String, Arc<OnceLock<String>>>>> = OnceLock::new();
    let cell = SEEN
        .get_or_init(Default::default)
        .lock()
        .expect("not poisoned")
        .entry(program.to_owned())
        .or_default()
        .clone();
    cell.get_or_init(|| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .and_then(|o| {
                let text = format!(
                    "{}\n{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                text.lines()
                    .find(|l| {
                        l.as_bytes()
                            .windows(3)
                            .any(|w| w[0].is_ascii_digit() && w[1] == b'.' && w[2].is_ascii_digit())
                    })
                    .map(|l| l.trim().to_owned())
            })
            .unwrap_or_else(|| "(not found)".to_owned())
    })
    .clone()
}

/// Asks the tools the tree's images need for their versions, side by side, so that
/// [`plan`] finds them known: called while the specs are read. A config that cannot be
/// read is left for `plan` to report.
pub fn probe_tools(tree: &Tree) {
    let mut tools = Vec::new();
    for rel in &tree.config.images.configs {
        let path = tree.root.join(rel);
        let dir = path.parent().unwrap_or(Path::new("."));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let read = |r: &str| {
            let p = dir.join(r);
            std::fs::read(&p).map_err(|source| keel_image::Error::Io {
                action: "read",
                path: p,
                source,
            })
        };
        if let Ok(config) = keel_image::parse_config(rel, &bytes, &read) {
            for system in &config.systems {
                tools.extend(image_tools(&config, system));
            }
        }
    }
    tools.sort();
    tools.dedup();
    std::thread::scope(|s| {
        for (program, args) in tools {
            s.spawn(move || tool_version(program, args));
        }
    });
}

/// The programs (and the arguments that make them print their version) an image's
/// artifacts and system config need.
fn image_tools(
    config: &ImageConfig,
    system: &keel_image::config::SystemConfig,
) -> Vec<(&'static str, &'static [&'static str])> {
    let mut tools: Vec<(&str, &[&str])> = Vec::new();
    if !system.remove_rpm_db {
        tools.push(("rpm", &["--version"]));
    }
    if !system.post_install_scripts.is_empty() {
        tools.push(("bwrap", &["--version"]));
    }
    for a in config.disks.iter().flat_map(|d| &d.artifacts) {
        match a.kind {
            ArtifactKind::TarGz | ArtifactKind::TarZst | ArtifactKind::Oci => {}
            ArtifactKind::Raw | ArtifactKind::Vhd => {
                tools.extend([
                    ("mkfs.ext4", &["-V"][..]),
                    ("mkfs.vfat", &["--help"][..]),
                    ("mcopy", &["--version"][..]),
                ]);
            }
            ArtifactKind::Qcow2 | ArtifactKind::Vhdx => {
                tools.extend([
                    ("mkfs.ext4", &["-V"][..]),
                    ("mkfs.vfat", &["--help"][..]),
                    ("mcopy", &["--version"][..]),
                    ("qemu-img", &["--version"][..]),
                ]);
            }
            ArtifactKind::Squashfs => tools.push(("mksquashfs", &["-version"])),
            ArtifactKind::Iso => tools.extend([
                ("mksquashfs", &["-version"][..]),
                ("xorriso", &["-version"][..]),
                ("createrepo_c", &["--version"][..]),
            ]),
        }
    }
    tools
}

fn tools_id(
    store: &Store,
    config: &ImageConfig,
    system: &keel_image::config::SystemConfig,
) -> anyhow::Result<BlobDigest> {
    let mut tools = image_tools(config, system);
    tools.sort();
    tools.dedup();
    // One process per tool, side by side (see `tool_version`'s cache for the next image).
    let versions: Vec<String> = std::thread::scope(|s| {
        let probes: Vec<_> = tools
            .iter()
            .map(|(program, args)| s.spawn(move || tool_version(program, args)))
            .collect();
        probes
            .into_iter()
            .map(|p| p.join().unwrap_or_else(|_| "(version unknown)".to_owned()))
            .collect()
    });
    let mut text = format!("keel-image {}\n", env!("CARGO_PKG_VERSION"));
    for ((program, _), version) in tools.iter().zip(versions) {
        text.push_str(&format!("{program}: {version}\n"));
    }
    Ok(store.put_bytes(text.as_bytes())?)
}

fn failed(msg: impl Into<String>) -> ExecError {
    ExecError::Failed {
        message: msg.into(),
    }
}

/// Runs `image:` actions with keel-image and hands every other action to `inner`.
pub struct ImageExecutor {
    pub inner: Box<dyn Executor>,
    /// The build's remote cache, for dependencies' outputs known only from it.
    pub remote: Option<std::sync::Arc<super::remote::SharedCache>>,
    /// Each external RPM's path in its repository, by file name: an image error names
    /// it rather than the scratch copy assembly read.
    pub external: std::collections::HashMap<String, PathBuf>,
}

impl Executor for ImageExecutor {
    fn execute(&self, ctx: &ExecContext<'_>) -> Result<ExecOutcome, ExecError> {
        // A dependency answered by the remote cache may have left its outputs there.
        if let Some(remote) = &self.remote {
            let deps: Vec<&keel_store::ActionRecord> = ctx.deps.iter().map(|(_, r)| *r).collect();
            if !remote.ensure(ctx.store, &deps) {
                return Err(failed(
                    "a dependency's outputs could not be fetched intact from the remote cache \
                     (it is built here next)",
                ));
            }
        }
        match &ctx.action.inputs {
            KeyInputs::Image(i) => {
                if ctx.cancel.is_cancelled() {
                    return Err(ExecError::Cancelled);
                }
                assemble(ctx, i, &self.external)
            }
            _ => self.inner.execute(ctx),
        }
    }
}

/// `message` with each scratch copy of a package replaced by what the user knows it as.
fn users_paths(message: String, shown: &[(PathBuf, String)]) -> String {
    shown.iter().fold(message, |m, (scratch, user)| {
        m.replace(&scratch.display().to_string(), user)
    })
}

/// Assembles one image from its stored config and its dependencies' RPMs.
fn assemble(
    ctx: &ExecContext<'_>,
    i: &ImageInputs,
    external: &std::collections::HashMap<String, PathBuf>,
) -> Result<ExecOutcome, ExecError> {
    let store = ctx.store;
    let base = store.root().join("tmp");
    std::fs::create_dir_all(&base)
        .map_err(|e| failed(format!("failed to create {}: {e}", base.display())))?;
    let work = tempfile::Builder::new()
        .prefix(&format!("image-{}.", i.name))
        .tempdir_in(&base)
        .map_err(|e| {
            failed(format!(
                "failed to create a work directory in {}: {e}",
                base.display()
            ))
        })?;
    let bytes = store.read_blob(&i.config)?;
    let file = PathBuf::from(format!("{}.json", i.name));
    let config = keel_image::parse_config(&file, &bytes, &|r| {
        let d = i
            .package_lists
            .get(r)
            .or_else(|| i.scripts.get(r))
            .ok_or_else(|| keel_image::Error::Io {
                action: "read",
                path: r.into(),
                source: std::io::Error::other("not among the image's key inputs"),
            })?;
        store.read_blob(d).map_err(|e| keel_image::Error::Io {
            action: "read",
            path: r.into(),
            source: std::io::Error::other(e.to_string()),
        })
    })
    .map_err(|e| failed(e.to_string()))?;
    let rpms_dir = work.path().join("rpms");
    std::fs::create_dir_all(&rpms_dir)
        .map_err(|e| failed(format!("failed to create {}: {e}", rpms_dir.display())))?;
    let mut rpms = Vec::new();
    // What a message names instead of each scratch copy: the file in its repository,
    // or the package and the action that built it (the scratch directory is gone when
    // keel exits).
    let mut shown: Vec<(PathBuf, String)> = Vec::new();
    for (dep, rec) in &ctx.deps {
        for o in &rec.outputs {
            let ObjectRef::Blob(d) = &o.object else {
                continue;
            };
            if !o.name.ends_with(".rpm") {
                continue;
            }
            let path = rpms_dir.join(&o.name);
            store.materialize_blob(d, &path, 0o644)?;
            shown.push((path.clone(), format!("{} (built by {dep})", o.name)));
            let info = keel_toolchain::read_rpm(&path)
                .map_err(|e| failed(format!("read {} (from {dep}): {e}", o.name)))?;
            rpms.push((path, info));
        }
    }
    // The external repositories' packages, after the tree's (see `ExternalRepos`).
    let external_dir = rpms_dir.join("external");
    std::fs::create_dir_all(&external_dir)
        .map_err(|e| failed(format!("failed to create {}: {e}", external_dir.display())))?;
    for (file, d) in &i.external {
        let path = external_dir.join(file);
        store.materialize_blob(d, &path, 0o644)?;
        let user = external.get(file).map_or_else(
            || format!("{file} (from [images] repos)"),
            |p| p.display().to_string(),
        );
        shown.push((path.clone(), user));
        let info = keel_toolchain::read_rpm(&path)
            .map_err(|e| failed(users_paths(format!("read {file}: {e}"), &shown)))?;
        rpms.push((path, info));
    }
    // The same order whatever order the dependencies came in.
    rpms.sort_by(|a, b| a.0.cmp(&b.0));
    let sde: u64 = i
        .env
        .get("SOURCE_DATE_EPOCH")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let out_dir = work.path().join("out");
    let made = keel_image::build_image(
        &config,
        &i.system,
        &rpms,
        &work.path().join("scratch"),
        &out_dir,
        sde,
    )
    .map_err(|e| failed(users_paths(format!("image {}: {e}", i.name), &shown)))?;
    let mut outputs = Vec::new();
    for path in made.artifacts.iter().chain([&made.manifest]) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let object = if path.is_dir() {
            ObjectRef::Tree(store.put_dir(path)?)
        } else {
            ObjectRef::Blob(store.put_file(path)?)
        };
        outputs.push(ActionOutput { name, object });
    }
    Ok(ExecOutcome { outputs, log: None })
}

/// Copies an image's outputs to `dir` (`out/images/<stem>/`), removing what it no longer
/// makes; unchanged files are not rewritten. Returns the files published.
pub fn publish(
    store: &Store,
    record: &keel_store::ActionRecord,
    dir: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let mut published = Vec::new();
    for o in &record.outputs {
        let dest = dir.join(&o.name);
        match &o.object {
            ObjectRef::Blob(d) => {
                if store.file_digest(&dest).is_ok_and(|have| have == *d) {
                    published.push(dest);
                    continue;
                }
                remove(&dest)?;
                store.materialize_blob(d, &dest, 0o644)?;
                published.push(dest);
            }
            ObjectRef::Tree(t) => {
                remove(&dest)?;
                store.materialize_tree(t, &dest)?;
                super::stamp::walk(&[dest], &mut published);
            }
        }
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !record.outputs.iter().any(|o| o.name == name) {
            remove(&e.path())?;
        }
    }
    Ok(published)
}

fn remove(path: &Path) -> anyhow::Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return Ok(()),
    };
    r.with_context(|| format!("failed to replace {}", path.display()))
}
