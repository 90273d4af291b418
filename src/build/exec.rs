//! The real executor: sources fetched and verified, SRPMs packed and RPMs built by
//! rpmbuild in the sandbox, the repository indexed by createrepo_c.
//!
//! Every action works in a fresh directory under the store's `tmp/` and reads its inputs
//! from the store only (the spec, the files beside it, the macro files, its dependencies'
//! outputs), never from the tree: what it ran on is exactly what its key says.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_engine::{ExecContext, ExecError, ExecOutcome, Executor, KeyInputs, SUMMARY_OUTPUT};
use keel_store::{ActionOutput, BlobDigest, ObjectRef, Store};
use keel_toolchain::{BuildRequest, Isolation, LayerCache, Toolchain};

/// The output of an `rpm:` action listing what its RPMs really provide (auto-generated
/// sonames, pkgconfig and language provides, the real file list), which the next
/// graph learns from.
pub const PROVIDES_OUTPUT: &str = "keel:provides";

/// One built RPM's capabilities, as kept in [`PROVIDES_OUTPUT`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Learned {
    pub package: String,
    /// Name, rpm sense flags, EVR.
    pub provides: Vec<(String, u32, String)>,
    pub files: Vec<String>,
}

/// Settings of the real executor.
pub struct RpmExecutor {
    pub toolchain: Toolchain,
    pub isolation: Isolation,
    pub fetcher: keel_sources::Fetcher,
    pub layers: LayerCache,
    /// `%_smp_mflags` of each build.
    pub jobs_per_build: u32,
    pub timeout: Duration,
    /// Where each action's log is kept after it ran (`<store>/logs`).
    pub log_dir: PathBuf,
    /// Each source package's spec directory, where its sources were looked for when the
    /// graph was made: a source found nowhere names it among the places tried.
    pub spec_dirs: std::collections::HashMap<String, PathBuf>,
    /// What every build root must have (see [`super::preflight`]); each package's own
    /// needs are added from its spec before it builds.
    pub needs: Vec<super::preflight::Need>,
}

fn failed(msg: impl Into<String>) -> ExecError {
    ExecError::Failed {
        message: msg.into(),
    }
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> ExecError {
    let msg = format!("failed to {what} {}", path.display());
    move |e| failed(format!("{msg}: {e}"))
}

/// A scratch directory for one action, removed when dropped.
fn work_dir(store: &Store, name: &str) -> Result<tempfile::TempDir, ExecError> {
    let base = store.root().join("tmp");
    let prefix: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    tempfile::Builder::new()
        .prefix(&format!("{prefix}."))
        .tempdir_in(&base)
        .map_err(io("create a work directory in", &base))
}

/// The RPM files among an action's outputs (everything but the summary).
fn rpm_outputs(
    record: &keel_store::ActionRecord,
) -> impl Iterator<Item = (&str, &BlobDigest)> + '_ {
    record.outputs.iter().filter_map(|o| match &o.object {
        ObjectRef::Blob(d) if o.name.ends_with(".rpm") => Some((o.name.as_str(), d)),
        _ => None,
    })
}

impl RpmExecutor {
    fn keep_log(&self, store: &Store, name: &str, log: &Path) -> Option<(BlobDigest, PathBuf)> {
        let file: String = name
            .chars()
            .map(|c| if c == '/' || c == ':' { '_' } else { c })
            .collect();
        let dest = self.log_dir.join(format!("{file}.log"));
        std::fs::create_dir_all(&self.log_dir).ok()?;
        std::fs::copy(log, &dest).ok()?;
        let d = store.put_file(log).ok()?;
        Some((d, dest))
    }

    /// A failed rpmbuild as the user reads it: its log kept under `<store>/logs/` (the
    /// work directory it was written in is gone when keel exits) and named instead.
    fn build_failure(
        &self,
        store: &Store,
        action: &str,
        e: &keel_toolchain::BuildError,
    ) -> ExecError {
        let msg = match e {
            keel_toolchain::BuildError::Failed { log, .. }
            | keel_toolchain::BuildError::Output { log, .. } => {
                match self.keep_log(store, action, log) {
                    Some((_, kept)) => e
                        .to_string()
                        .replace(&log.display().to_string(), &kept.display().to_string()),
                    None => e.to_string(),
                }
            }
            keel_toolchain::BuildError::Setup { .. } => e.to_string(),
        };
        failed(msg)
    }

    fn request(
        &self,
        spec: &Path,
        sources: &Path,
        macro_files: Vec<PathBuf>,
        defines: &std::collections::BTreeMap<String, String>,
        target_arch: &str,
        sde: u64,
    ) -> BuildRequest {
        let mut req = BuildRequest::new(spec, target_arch, sde);
        req.sources_dir = sources.to_owned();
        req.macro_files = macro_files;
        req.defines = defines
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        req.toolchain = self.toolchain.clone();
        req.isolation = self.isolation;
        req.timeout = self.timeout;
        req.jobs = self.jobs_per_build;
        req.merge_cache = Some(self.layers.root().join("merged"));
        req
    }

    /// Materializes the macro files of a key into `dir`, in their order (the order the
    /// reader loaded them in: rpmbuild loads them in the order given).
    fn macro_files(
        store: &Store,
        files: &[(String, BlobDigest)],
        dir: &Path,
    ) -> Result<Vec<PathBuf>, ExecError> {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let mut out = Vec::new();
        for (i, (name, d)) in files.iter().enumerate() {
            let base = Path::new(name)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "macros".into());
            // Numbered so that two files of the same name in different directories
            // stay apart, in the order keel.toml loads them.
            let dest = dir.join(format!("{i:03}-{base}"));
            store.materialize_blob(d, &dest, 0o644)?;
            out.push(dest);
        }
        Ok(out)
    }

    /// Fails the package's first action, before rpmbuild runs, when its build root lacks
    /// a program it needs (see [`super::preflight`]).
    fn preflight(&self, name: &str, spec: &Path) -> Result<(), ExecError> {
        let text = std::fs::read_to_string(spec).map_err(io("read", spec))?;
        let mut needs = self.needs.clone();
        needs.extend(super::preflight::spec_needs(&format!("{name}.spec"), &text));
        let root = match (&self.toolchain, self.isolation) {
            (Toolchain::Dir(d), Isolation::Sandboxed) => d.clone(),
            _ => PathBuf::from("/"),
        };
        match super::preflight::check(&root, &needs) {
            None => Ok(()),
            Some(msg) => Err(failed(format!("{name}: {msg}"))),
        }
    }

    fn srpm(
        &self,
        ctx: &ExecContext<'_>,
        i: &keel_engine::SrpmPackInputs,
    ) -> Result<ExecOutcome, ExecError> {
        let store = ctx.store;
        let work = work_dir(store, &ctx.action.name)?;
        let src = work.path().join("src");
        std::fs::create_dir_all(&src).map_err(io("create", &src))?;
        for (name, d) in &i.files {
            store.materialize_blob(d, &src.join(name), 0o644)?;
        }
        // Fetched sources, by file name, with the action they came from; the packages the
        // build root carries, as layers.
        let mut fetched: Vec<(&str, &str)> = Vec::new();
        let mut layers = Vec::new();
        for (dep, rec) in &ctx.deps {
            if dep.starts_with("rpm:") {
                self.add_layers(store, &work.path().join("deps"), dep, rec, &mut layers)?;
                continue;
            }
            for o in &rec.outputs {
                if let ObjectRef::Blob(d) = &o.object {
                    store.materialize_blob(d, &src.join(&o.name), 0o644)?;
                    fetched.push((o.name.as_str(), *dep));
                }
            }
        }
        // Every source must match the signatures file kept with them: those kept beside
        // the spec, and fetched ones too, whose record may have come from a remote cache
        // (verified against its signer and its digests, not against this tree).
        let sig_name = i
            .files
            .keys()
            .find(|n| n.ends_with(".signatures.json"))
            .cloned();
        let sigs = match &sig_name {
            Some(sig_name) => Some(
                keel_sources::Signatures::load(&src.join(sig_name))
                    .map_err(|e| failed(format!("{}: {e}", i.name)))?,
            ),
            None => None,
        };
        let sig_shown = sig_name.as_deref().unwrap_or("no signatures file");
        let local = i
            .files
            .keys()
            .filter(|n| Some(*n) != sig_name.as_ref())
            .map(|n| (n.as_str(), None));
        let remote = fetched.iter().map(|(n, dep)| (*n, Some(*dep)));
        for (name, from) in local.chain(remote) {
            let expected = sigs.as_ref().and_then(|s| s.get(name));
            let Some(expected) = expected else {
                // Kept beside the spec, a file the signatures file does not list is the
                // tree's own; fetched, it must be listed.
                match from {
                    None => continue,
                    Some(dep) => {
                        return Err(failed(format!(
                            "{}: source {name} (from {dep}) is not listed in {sig_shown}",
                            i.name
                        )));
                    }
                }
            };
            let actual =
                keel_sources::sha256_file(&src.join(name)).map_err(io("read", &src.join(name)))?;
            if actual != expected {
                let from = from.map(|d| format!(" (from {d})")).unwrap_or_default();
                return Err(failed(format!(
                    "{}: source {name}{from} has SHA-256 {actual}, but {sig_shown} expects {expected}",
                    i.name
                )));
            }
        }
        if let Some(sig_name) = &sig_name {
            let sig_path = src.join(sig_name);
            std::fs::remove_file(&sig_path).map_err(io("remove", &sig_path))?;
        }
        let spec = src.join(format!("{}.spec", i.name));
        store.materialize_blob(&i.spec, &spec, 0o644)?;
        self.preflight(&i.name, &spec)?;
        // rpm records each file's mtime in the SRPM: fix them, or two packings of the same
        // inputs differ by when the files were written out.
        for e in std::fs::read_dir(&src).map_err(io("list", &src))?.flatten() {
            let f = std::fs::File::options()
                .append(true)
                .open(e.path())
                .map_err(io("open", &e.path()))?;
            f.set_modified(std::time::UNIX_EPOCH)
                .map_err(io("set the time of", &e.path()))?;
        }
        let macros = Self::macro_files(store, &i.macro_files, &work.path().join("macros"))?;
        let mut req = self.request(&spec, &src, macros, &i.defines, &i.target_arch, 0);
        req.sh = i.build_root.get("sh").cloned();
        req.rcfile = i.build_root.get("rcfile").cloned();
        req.layers = layers;
        let out = work.path().join("out");
        let srpm = keel_toolchain::build_srpm(&req, &out)
            .map_err(|e| self.build_failure(store, &ctx.action.name, &e))?;
        let name = srpm
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| failed("rpmbuild produced no SRPM"))?;
        let d = store.put_file(&srpm)?;
        Ok(ExecOutcome {
            outputs: vec![ActionOutput {
                name,
                object: ObjectRef::Blob(d),
            }],
            log: None,
        })
    }

    /// Each RPM of the dependency `dep` becomes a layer of the build root, unpacked once
    /// (its file materialized under `rpms_dir` the first time).
    fn add_layers(
        &self,
        store: &Store,
        rpms_dir: &Path,
        dep: &str,
        rec: &keel_store::ActionRecord,
        layers: &mut Vec<PathBuf>,
    ) -> Result<(), ExecError> {
        for (name, d) in rpm_outputs(rec) {
            let path = rpms_dir.join(name);
            let layer = if let Some(cached) = self.layers.complete_layer(d) {
                cached
            } else {
                std::fs::create_dir_all(rpms_dir).map_err(io("create", rpms_dir))?;
                store.materialize_blob(d, &path, 0o644)?;
                self.layers
                    .layer_for_digest(&path, d)
                    .map_err(|e| failed(format!("unpack {name} (from {dep}): {e}")))?
            };
            layers.push(layer);
        }
        Ok(())
    }

    fn rpm(
        &self,
        ctx: &ExecContext<'_>,
        i: &keel_engine::RpmBuildInputs,
    ) -> Result<ExecOutcome, ExecError> {
        let store = ctx.store;
        let work = work_dir(store, &ctx.action.name)?;
        let srpm_name = format!("srpm:{}", i.name);
        let mut srpm = None;
        let mut layers = Vec::new();
        let rpms_dir = work.path().join("deps");
        std::fs::create_dir_all(&rpms_dir).map_err(io("create", &rpms_dir))?;
        for (dep, rec) in &ctx.deps {
            if *dep == srpm_name {
                let (name, d) = rec
                    .outputs
                    .iter()
                    .find_map(|o| match &o.object {
                        ObjectRef::Blob(d) => Some((o.name.clone(), *d)),
                        ObjectRef::Tree(_) => None,
                    })
                    .ok_or_else(|| failed(format!("{srpm_name} has no SRPM output")))?;
                let path = work.path().join(name);
                store.materialize_blob(&d, &path, 0o644)?;
                srpm = Some(path);
                continue;
            }
            self.add_layers(store, &rpms_dir, dep, rec, &mut layers)?;
        }
        let srpm =
            srpm.ok_or_else(|| failed(format!("{srpm_name} is not among the dependencies")))?;
        let macros = Self::macro_files(store, &i.macro_files, &work.path().join("macros"))?;
        let sde: u64 = i
            .env
            .get("SOURCE_DATE_EPOCH")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut req = self.request(&srpm, work.path(), macros, &i.defines, &i.target_arch, sde);
        req.check = i.check;
        req.sh = i.build_root.get("sh").cloned();
        req.rcfile = i.build_root.get("rcfile").cloned();
        req.layers = layers;
        let out_dir = work.path().join("out");
        let built = keel_toolchain::build_rpms(&req, &srpm, &out_dir)
            .map_err(|e| self.build_failure(store, &ctx.action.name, &e))?;
        let log = self
            .keep_log(store, &ctx.action.name, &built.log)
            .map(|(d, _)| d);
        let mut outputs = Vec::new();
        let mut summary = Vec::new();
        let mut learned = Vec::new();
        for rpm in &built.rpms {
            let name = rpm
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let info =
                keel_toolchain::read_rpm(rpm).map_err(|e| failed(format!("read {name}: {e}")))?;
            learned.push(Learned {
                package: info.name,
                provides: info
                    .provides
                    .into_iter()
                    .map(|d| (d.name, d.flags, d.evr))
                    .collect(),
                files: info.files,
            });
            let s = keel_toolchain::semantic_summary(rpm)
                .map_err(|e| failed(format!("read {name}: {e}")))?;
            summary.extend_from_slice(format!("{} {}\n", name.len(), s.len()).as_bytes());
            summary.extend_from_slice(name.as_bytes());
            summary.extend_from_slice(&s);
            outputs.push(ActionOutput {
                name,
                object: ObjectRef::Blob(store.put_file(rpm)?),
            });
        }
        outputs.push(ActionOutput {
            name: PROVIDES_OUTPUT.to_owned(),
            object: ObjectRef::Blob(
                store
                    .put_bytes(&serde_json::to_vec(&learned).map_err(|e| failed(e.to_string()))?)?,
            ),
        });
        // What dependent builds read of these RPMs (their payloads, as layers) is covered
        // by the summary, so an `rpm:` dependent is keyed on it and cuts off when only
        // the changelog, build time or host changed. The repository and images read the
        // bytes and are keyed on them (`ActionKind::dependency_view`).
        outputs.push(ActionOutput {
            name: SUMMARY_OUTPUT.to_owned(),
            object: ObjectRef::Blob(store.put_bytes(&summary)?),
        });
        Ok(ExecOutcome { outputs, log })
    }

    fn repo(&self, ctx: &ExecContext<'_>) -> Result<ExecOutcome, ExecError> {
        let store = ctx.store;
        let work = work_dir(store, &ctx.action.name)?;
        let repo = work.path().join("repo");
        for (_, rec) in &ctx.deps {
            for (name, d) in rpm_outputs(rec) {
                let dir = repo.join(rpm_arch(name));
                std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
                let path = dir.join(name);
                store.materialize_blob(d, &path, 0o644)?;
                // createrepo_c records each package file's mtime (`<time file=…>`): the
                // same packages must index the same, whenever they were materialized.
                std::fs::File::options()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_modified(std::time::UNIX_EPOCH))
                    .map_err(io("set the time of", &path))?;
            }
        }
        std::fs::create_dir_all(&repo).map_err(io("create", &repo))?;
        let out = std::process::Command::new("createrepo_c")
            .args([
                "--quiet",
                "--no-database",
                "--simple-md-filenames",
                "--revision",
                "0",
            ])
            .args(["--set-timestamp-to-revision", "--distro", "keel"])
            .arg(&repo)
            .output()
            .map_err(|e| {
                failed(format!(
                    "cannot run createrepo_c (install createrepo-c): {e}"
                ))
            })?;
        if !out.status.success() {
            return Err(failed(format!(
                "createrepo_c failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let tree = store.put_dir(&repo.join("repodata"))?;
        Ok(ExecOutcome {
            outputs: vec![ActionOutput {
                name: "repodata".into(),
                object: ObjectRef::Tree(tree),
            }],
            log: None,
        })
    }
}

/// The source package of a `source:<package>/<file>` action.
fn source_package(action: &str) -> Option<&str> {
    action
        .strip_prefix("source:")?
        .rsplit_once('/')
        .map(|(p, _)| p)
}

/// A failed fetch's message in the user's terms: the spec directory (looked in when the
/// graph was made) where the fetcher was handed a stand-in directory, and what to set
/// when no mirror was there to try.
fn fetch_error(
    e: keel_sources::Error,
    stand_in: &Path,
    spec_dir: Option<&PathBuf>,
    file: &str,
) -> String {
    let mut e = e;
    let (keel_sources::Error::Missing { tried, .. } | keel_sources::Error::Mismatch { tried, .. }) =
        &mut e
    else {
        return e.to_string();
    };
    let stand_in = stand_in.join(file).display().to_string();
    match spec_dir {
        Some(dir) => {
            for a in tried.iter_mut().filter(|a| a.place == stand_in) {
                a.place = dir.join(file).display().to_string();
            }
        }
        None => tried.retain(|a| a.place != stand_in),
    }
    let no_mirror = tried.iter().all(|a| !a.place.contains("://"));
    let mut msg = e.to_string();
    if no_mirror && matches!(e, keel_sources::Error::Missing { .. }) {
        msg.push_str("; no mirror to fetch it from ([sources] mirrors in keel.toml)");
    }
    msg
}

/// The architecture part of an RPM file name (`x86_64` in `a-1-1.x86_64.rpm`).
pub fn rpm_arch(file: &str) -> &str {
    file.strip_suffix(".rpm")
        .and_then(|b| b.rsplit_once('.'))
        .map_or("noarch", |(_, a)| a)
}

impl Executor for RpmExecutor {
    fn execute(&self, ctx: &ExecContext<'_>) -> Result<ExecOutcome, ExecError> {
        if ctx.cancel.is_cancelled() {
            return Err(ExecError::Cancelled);
        }
        match &ctx.action.inputs {
            KeyInputs::SourceFetch(i) => {
                // The spec's directory was looked in when the graph was made; only the
                // store and the mirrors are left.
                let nowhere = ctx.store.root().join("tmp");
                let f = self
                    .fetcher
                    .fetch(ctx.store, &nowhere, &i.file_name, Some(&i.sha256))
                    .map_err(|e| {
                        let spec_dir = source_package(&ctx.action.name)
                            .and_then(|name| self.spec_dirs.get(name));
                        failed(fetch_error(e, &nowhere, spec_dir, &i.file_name))
                    })?;
                Ok(ExecOutcome {
                    outputs: vec![ActionOutput {
                        name: i.file_name.clone(),
                        object: ObjectRef::Blob(f.blob),
                    }],
                    log: None,
                })
            }
            KeyInputs::SrpmPack(i) => self.srpm(ctx, i),
            KeyInputs::RpmBuild(i) => self.rpm(ctx, i),
            KeyInputs::RepoIndex(_) => self.repo(ctx),
            KeyInputs::Image(_) => Err(failed("images are not built by this executor")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_source_names_the_spec_directory_not_the_stand_in() {
        let stand_in = Path::new("/store/tmp");
        let e = || keel_sources::Error::Missing {
            file: "a.tar.gz".into(),
            tried: vec![
                keel_sources::Attempt {
                    place: "/store/tmp/a.tar.gz".into(),
                    outcome: "no such file".into(),
                },
                keel_sources::Attempt {
                    place: "http://mirror.example/a.tar.gz".into(),
                    outcome: "HTTP 404".into(),
                },
            ],
        };
        let dir = PathBuf::from("/tree/SPECS/a");
        let msg = fetch_error(e(), stand_in, Some(&dir), "a.tar.gz");
        assert_eq!(
            msg,
            "source a.tar.gz not found; tried: /tree/SPECS/a/a.tar.gz (no such file); \
             http://mirror.example/a.tar.gz (HTTP 404)"
        );
        let msg = fetch_error(e(), stand_in, None, "a.tar.gz");
        assert!(!msg.contains("/store/tmp"), "{msg}");
        assert_eq!(source_package("source:a/a.tar.gz"), Some("a"));
        assert_eq!(source_package("rpm:a"), None);
    }
}
