//! Driving `rpmbuild` in the sandbox: a spec and its sources to an SRPM
//! ([`build_srpm`]), an SRPM to binary RPMs ([`build_rpms`]).
//!
//! Every build runs at fixed paths so the same inputs give the same bytes: `_topdir` is
//! [`crate::sandbox::BUILD_DIR`] (`/build`), the spec is copied to `/build/SPECS/`, sources
//! and patches to `/build/SOURCES/`, the tree's macro files to `/build/macros/NN-name`
//! and, concatenated in the order given, to `/build/.rpmmacros` (`HOME` is `/build`; rpm
//! reads it after its own macro files). rpmbuild runs with `--nodeps` (keel
//! resolves BuildRequires itself and provides them as layers; the host rpm database may be
//! empty), `--target` the requested arch, and these defines, after the tree's so they win:
//!
//! - `_buildhost keel`, `use_source_date_epoch_as_buildtime 1`,
//!   `clamp_mtime_to_source_date_epoch 1`: build time, host and file mtimes come from
//!   `SOURCE_DATE_EPOCH` ([`BuildRequest::source_date_epoch`]), not the clock;
//! - `_build_id_links none`: no `/usr/lib/.build-id` links whose names depend on the
//!   build's position in a tree;
//! - `_smp_build_ncpus N`, `_smp_mflags -jN` ([`BuildRequest::jobs`]): parallelism, which
//!   must not change output (so it is not part of any key, as Nix's `NIX_BUILD_CORES`).
//!
//! A failed build is a [`BuildError`] naming the package, the log and its last lines.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sandbox::{self, Isolation, Outcome, SandboxSpec};
use crate::{Error, Toolchain};

/// How many log lines a [`BuildError`] carries.
pub const LOG_TAIL_LINES: usize = 20;

/// Everything a package build takes.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The spec file.
    pub spec: PathBuf,
    /// A directory whose content (sources, patches; subdirectories too) is copied into
    /// `/build/SOURCES`. Usually the spec's directory.
    pub sources_dir: PathBuf,
    /// `--define`s from the tree (`dist`, `with_check`…), applied in order.
    pub defines: Vec<(String, String)>,
    /// The tree's macro files, loaded in order.
    pub macro_files: Vec<PathBuf>,
    /// The architecture to build for (`x86_64`); `noarch` packages build anyway.
    pub target_arch: String,
    /// `SOURCE_DATE_EPOCH` (keel uses the newest %changelog entry).
    pub source_date_epoch: u64,
    /// The build's dependency layers, bottom to top.
    pub layers: Vec<PathBuf>,
    /// The base of the build root.
    pub toolchain: Toolchain,
    /// Wall-clock limit of each rpmbuild run.
    pub timeout: Duration,
    /// `%_smp_build_ncpus` is `<jobs>` and `%_smp_mflags` `-j<jobs>`.
    pub jobs: u32,
    /// Run `%check` (else `--nocheck`) when building RPMs.
    pub check: bool,
    /// What `/bin/sh` is in the build root (see [`SandboxSpec::sh`]).
    pub sh: Option<String>,
    /// An rpmrc inside the build root, read after rpm's own (`--rcfile`).
    pub rcfile: Option<String>,
    /// Sandboxed (the default) or not.
    pub isolation: Isolation,
    /// Where the sandbox keeps merged layers (see [`SandboxSpec::merge_cache`]).
    pub merge_cache: Option<PathBuf>,
}

impl BuildRequest {
    /// A request with no defines, macro files or layers, the spec's directory as sources,
    /// the host's toolchain, one job and a one-hour timeout.
    pub fn new(spec: &Path, target_arch: &str, source_date_epoch: u64) -> BuildRequest {
        BuildRequest {
            spec: spec.to_owned(),
            sources_dir: spec.parent().unwrap_or(Path::new(".")).to_owned(),
            defines: Vec::new(),
            macro_files: Vec::new(),
            target_arch: target_arch.to_owned(),
            source_date_epoch,
            layers: Vec::new(),
            toolchain: Toolchain::Host,
            timeout: Duration::from_secs(3600),
            jobs: 1,
            check: true,
            sh: None,
            rcfile: None,
            isolation: Isolation::Sandboxed,
            merge_cache: None,
        }
    }

    fn package(&self) -> String {
        self.spec
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.spec.display().to_string())
    }
}

/// What [`build_rpms`] produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The binary RPMs, sorted by path.
    pub rpms: Vec<PathBuf>,
    /// rpmbuild's output.
    pub log: PathBuf,
}

/// A package build that failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// rpmbuild ran and failed (or timed out).
    #[error("build {package}: rpmbuild {outcome}; see {log}; last lines:\n{tail}", outcome = describe(*.outcome))]
    Failed {
        /// The package (spec or SRPM name).
        package: String,
        /// How rpmbuild ended.
        outcome: Outcome,
        /// The full log.
        log: PathBuf,
        /// Its last [`LOG_TAIL_LINES`] lines.
        tail: String,
    },
    /// rpmbuild succeeded but did not write what was expected.
    #[error("build {package}: {what}; see {log}")]
    Output {
        /// The package.
        package: String,
        /// What is wrong.
        what: String,
        /// The full log.
        log: PathBuf,
    },
    /// Preparing the build or the sandbox failed.
    #[error("build {package}: {source}")]
    Setup {
        /// The package.
        package: String,
        /// What failed.
        source: Error,
    },
}

fn describe(o: Outcome) -> String {
    match o {
        Outcome::Exited(c) => format!("exited with code {c}"),
        Outcome::Signaled(s) => format!("was killed by signal {s}"),
        Outcome::TimedOut => "timed out".into(),
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    for entry in walkdir::WalkDir::new(from).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| Error::Io {
            action: "walk",
            path: from.to_owned(),
            source: e.into(),
        })?;
        let dest = to.join(entry.path().strip_prefix(from).expect("under root"));
        let ft = entry.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&dest).map_err(Error::io("create directory", &dest))?;
        } else if ft.is_symlink() {
            let t = fs::read_link(entry.path()).map_err(Error::io("read symlink", entry.path()))?;
            std::os::unix::fs::symlink(t, &dest).map_err(Error::io("create symlink", &dest))?;
        } else {
            copy_keeping_mtime(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// Copies a file with its modification time: rpm records sources' mtimes in the SRPM, so
/// the caller's times (fixed, for reproducible SRPMs) must survive the copy.
fn copy_keeping_mtime(from: &Path, to: &Path) -> Result<(), Error> {
    fs::copy(from, to).map_err(Error::io("copy to", to))?;
    let mtime = fs::metadata(from)
        .and_then(|m| m.modified())
        .map_err(Error::io("stat", from))?;
    fs::File::options()
        .append(true)
        .open(to)
        .and_then(|f| f.set_modified(mtime))
        .map_err(Error::io("set the time of", to))
}

/// A clean `_topdir` at `dir`, with the tree's macro files copied into `macros/` and
/// concatenated, in order, into `dir/.rpmmacros`.
///
/// rpm reads `~/.rpmmacros` last in its macro path, and `HOME` is the build directory. It is
/// used instead of `--load` because rpmbuild's `--target` re-reads the configuration and
/// forgets files given with `--load` (rpm 4.18).
fn prepare_topdir(req: &BuildRequest, dir: &Path) -> Result<(), Error> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(Error::io("remove", dir))?;
    }
    for sub in [
        "BUILD",
        "BUILDROOT",
        "RPMS",
        "SOURCES",
        "SPECS",
        "SRPMS",
        "macros",
    ] {
        let d = dir.join(sub);
        fs::create_dir_all(&d).map_err(Error::io("create directory", &d))?;
    }
    let mut all = Vec::new();
    for (i, m) in req.macro_files.iter().enumerate() {
        let name = format!(
            "{i:02}-{}",
            m.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let bytes = fs::read(m).map_err(Error::io("read macro file", m))?;
        let dest = dir.join("macros").join(&name);
        fs::write(&dest, &bytes).map_err(Error::io("write", &dest))?;
        all.extend_from_slice(format!("# {name}\n").as_bytes());
        all.extend_from_slice(&bytes);
        all.push(b'\n');
    }
    let rc = dir.join(".rpmmacros");
    fs::write(&rc, all).map_err(Error::io("write", &rc))?;
    Ok(())
}

fn sandbox_spec(req: &BuildRequest, build_dir: &Path) -> SandboxSpec {
    let mut spec = SandboxSpec::new(req.toolchain.clone(), build_dir);
    spec.layers = req.layers.clone();
    spec.timeout = req.timeout;
    spec.isolation = req.isolation;
    spec.merge_cache = req.merge_cache.clone();
    spec.sh = req.sh.clone();
    spec.env.insert(
        "SOURCE_DATE_EPOCH".into(),
        req.source_date_epoch.to_string(),
    );
    spec
}

/// rpmbuild's command line up to the mode and its argument.
fn rpmbuild_args(req: &BuildRequest, topdir: &Path) -> Vec<String> {
    let mut args = vec!["rpmbuild".to_owned(), "--nodeps".to_owned()];
    if let Some(rc) = &req.rcfile {
        // After rpm's own, whose values it overrides (`optflags` per arch).
        args.push("--rcfile".into());
        args.push(format!("/usr/lib/rpm/rpmrc:{rc}"));
    }
    let mut define = |k: &str, v: &str| {
        args.push("--define".into());
        args.push(format!("{k} {v}"));
    };
    for (k, v) in &req.defines {
        define(k, v);
    }
    define("_topdir", &topdir.to_string_lossy());
    define("_buildhost", "keel");
    define("use_source_date_epoch_as_buildtime", "1");
    define("clamp_mtime_to_source_date_epoch", "1");
    define("_build_id_links", "none");
    // Both: rpm's own `%_smp_mflags` is made of `%_smp_build_ncpus`, which specs and
    // macro files (Azure Linux's, cmake's, meson's) also read directly.
    define("_smp_build_ncpus", &req.jobs.max(1).to_string());
    define("_smp_mflags", &format!("-j{}", req.jobs.max(1)));
    args.push("--target".into());
    args.push(req.target_arch.clone());
    args
}

fn run_rpmbuild(
    req: &BuildRequest,
    package: &str,
    build_dir: &Path,
    args: &[String],
    log: &Path,
) -> Result<(), BuildError> {
    let spec = sandbox_spec(req, build_dir);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = sandbox::run(&spec, &argv, log).map_err(|source| BuildError::Setup {
        package: package.to_owned(),
        source,
    })?;
    if !result.outcome.success() {
        return Err(BuildError::Failed {
            package: package.to_owned(),
            outcome: result.outcome,
            log: log.to_owned(),
            tail: sandbox::log_tail(log, LOG_TAIL_LINES),
        });
    }
    Ok(())
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(suffix))
        .map(walkdir::DirEntry::into_path)
        .collect();
    out.sort();
    out
}

/// Packs the SRPM of `req.spec` in the sandbox, in `work/srpm/` (log `work/srpm.log`).
/// Returns the SRPM's path, named as rpm names it.
pub fn build_srpm(req: &BuildRequest, work: &Path) -> Result<PathBuf, BuildError> {
    let package = req.package();
    let setup = |source| BuildError::Setup {
        package: package.clone(),
        source,
    };
    let build_dir = work.join("srpm");
    let log = work.join("srpm.log");
    prepare_topdir(req, &build_dir).map_err(setup)?;
    if req.sources_dir.is_dir() {
        copy_tree(&req.sources_dir, &build_dir.join("SOURCES")).map_err(setup)?;
    }
    let spec_name = req.spec.file_name().ok_or_else(|| {
        setup(Error::SandboxConfig(format!(
            "{} is not a file",
            req.spec.display()
        )))
    })?;
    let spec_dest = build_dir.join("SPECS").join(spec_name);
    copy_keeping_mtime(&req.spec, &spec_dest).map_err(setup)?;
    let topdir = sandbox_spec(req, &build_dir).build_dir_inside();
    let mut args = rpmbuild_args(req, &topdir);
    args.push("-bs".into());
    args.push(
        topdir
            .join("SPECS")
            .join(spec_name)
            .to_string_lossy()
            .into_owned(),
    );
    run_rpmbuild(req, &package, &build_dir, &args, &log)?;
    let srpms = files_with_suffix(&build_dir.join("SRPMS"), ".src.rpm");
    match srpms.as_slice() {
        [one] => Ok(one.clone()),
        other => Err(BuildError::Output {
            package,
            what: format!("expected one source RPM in SRPMS, found {}", other.len()),
            log,
        }),
    }
}

/// Rebuilds `srpm` into binary RPMs in the sandbox, in `work/rpms/` (log `work/rpms.log`),
/// with `req`'s defines, macro files, layers and toolchain (`req.spec` and
/// `req.sources_dir` are not used: the SRPM carries them).
pub fn build_rpms(req: &BuildRequest, srpm: &Path, work: &Path) -> Result<BuildOutput, BuildError> {
    let package = crate::read_rpm(srpm)
        .map(|i| i.name)
        .unwrap_or_else(|_| req.package());
    let setup = |source| BuildError::Setup {
        package: package.clone(),
        source,
    };
    let build_dir = work.join("rpms");
    let log = work.join("rpms.log");
    prepare_topdir(req, &build_dir).map_err(setup)?;
    let srpm_name = srpm.file_name().ok_or_else(|| {
        setup(Error::SandboxConfig(format!(
            "{} is not a file",
            srpm.display()
        )))
    })?;
    let dest = build_dir.join("SRPMS").join(srpm_name);
    fs::copy(srpm, &dest)
        .map_err(Error::io("copy source rpm", srpm))
        .map_err(setup)?;
    let topdir = sandbox_spec(req, &build_dir).build_dir_inside();
    let mut args = rpmbuild_args(req, &topdir);
    if !req.check {
        args.push("--nocheck".into());
    }
    args.push("--rebuild".into());
    args.push(
        topdir
            .join("SRPMS")
            .join(srpm_name)
            .to_string_lossy()
            .into_owned(),
    );
    run_rpmbuild(req, &package, &build_dir, &args, &log)?;
    let rpms = files_with_suffix(&build_dir.join("RPMS"), ".rpm");
    if rpms.is_empty() {
        return Err(BuildError::Output {
            package,
            what: "rpmbuild wrote no binary RPM".into(),
            log,
        });
    }
    Ok(BuildOutput { rpms, log })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBFOO_SPEC: &str = r#"Name: libfoo
Version: 1.0
Release: 1
Summary: foo library
License: MIT
Source0: foo.c
Source1: foo.h
%description
A tiny shared library.
%package devel
Summary: foo headers
Requires: libfoo = %{version}-%{release}
%description devel
Headers.
%prep
cp %{SOURCE0} %{SOURCE1} .
%build
gcc -O2 -fPIC -shared -Wl,-soname,libfoo.so.1 -o libfoo.so.1 foo.c
%install
mkdir -p %{buildroot}%{_libdir} %{buildroot}%{_includedir}
install -m 0755 libfoo.so.1 %{buildroot}%{_libdir}/libfoo.so.1
ln -s libfoo.so.1 %{buildroot}%{_libdir}/libfoo.so
install -m 0644 foo.h %{buildroot}%{_includedir}/foo.h
%files
%{_libdir}/libfoo.so.1
%files devel
%{_libdir}/libfoo.so
%{_includedir}/foo.h
%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1.0-1
- first
"#;

    const PROG_SPEC: &str = r#"Name: prog
Version: 2.0
Release: 1
Summary: uses foo
License: MIT
Source0: prog.c
BuildRequires: libfoo-devel
%description
Links against libfoo.
%prep
cp %{SOURCE0} .
%build
gcc -O2 -o prog prog.c -L%{_libdir} -lfoo
%install
mkdir -p %{buildroot}%{_bindir}
install -m 0755 prog %{buildroot}%{_bindir}/prog
%check
LD_LIBRARY_PATH=%{_libdir} ./prog
%files
%{_bindir}/prog
"#;

    fn package_dir(root: &Path, name: &str, spec: &str, sources: &[(&str, &str)]) -> PathBuf {
        let dir = root.join("SPECS").join(name);
        fs::create_dir_all(&dir).unwrap();
        let spec_path = dir.join(format!("{name}.spec"));
        fs::write(&spec_path, spec).unwrap();
        for (n, c) in sources {
            fs::write(dir.join(n), c).unwrap();
        }
        spec_path
    }

    fn libfoo(root: &Path) -> PathBuf {
        package_dir(
            root,
            "libfoo",
            LIBFOO_SPEC,
            &[
                (
                    "foo.c",
                    "#include \"foo.h\"\nint foo_answer(void) { return 42; }\n",
                ),
                ("foo.h", "int foo_answer(void);\n"),
            ],
        )
    }

    fn arch() -> String {
        let out = std::process::Command::new("uname")
            .arg("-m")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn build(req: &BuildRequest, work: &Path) -> BuildOutput {
        let srpm = build_srpm(req, work).unwrap_or_else(|e| panic!("{e}"));
        build_rpms(req, &srpm, work).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn two_builds_in_separate_work_dirs_are_byte_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = libfoo(tmp.path());
        let mut req = BuildRequest::new(&spec, &arch(), 1_790_000_000);
        let a = build(&req, &tmp.path().join("work-a"));
        // Parallelism is not an input to the output.
        req.jobs = 2;
        let b = build(&req, &tmp.path().join("elsewhere/work-b"));
        let names = |o: &BuildOutput| {
            o.rpms
                .iter()
                .map(|p| p.file_name().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
        assert_eq!(a.rpms.len(), 2, "{:?}", a.rpms);
        for (x, y) in a.rpms.iter().zip(&b.rpms) {
            assert!(
                fs::read(x).unwrap() == fs::read(y).unwrap(),
                "{} differs between builds",
                x.display()
            );
        }
        let info = crate::read_rpm(&a.rpms[0]).unwrap();
        assert_eq!(info.name, "libfoo");
        assert!(
            info.provides
                .iter()
                .any(|d| d.name.starts_with("libfoo.so.1")),
            "{:?}",
            info.provides
        );
        let meta = rpm::PackageMetadata::open(&a.rpms[0]).unwrap();
        assert_eq!(meta.get_build_host().unwrap(), "keel");
        assert_eq!(meta.get_build_time().unwrap(), 1_790_000_000);
    }

    #[test]
    fn a_program_compiles_against_a_devel_package_given_as_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let arch = arch();
        let lib = build(
            &BuildRequest::new(&libfoo(tmp.path()), &arch, 1_790_000_000),
            &tmp.path().join("work-lib"),
        );
        let cache = crate::LayerCache::new(&tmp.path().join("layers"));
        let layers: Vec<PathBuf> = lib.rpms.iter().map(|r| cache.layer(r).unwrap().1).collect();

        let prog_spec = package_dir(
            tmp.path(),
            "prog",
            PROG_SPEC,
            &[(
                "prog.c",
                "#include <foo.h>\n#include <stdio.h>\nint main(void) { printf(\"answer %d\\n\", foo_answer()); return foo_answer() == 42 ? 0 : 1; }\n",
            )],
        );
        let mut req = BuildRequest::new(&prog_spec, &arch, 1_790_000_000);
        // Without the layers there is no foo.h: the dependency is really what makes it build.
        let srpm = build_srpm(&req, &tmp.path().join("work-prog-bare")).unwrap();
        let err = build_rpms(&req, &srpm, &tmp.path().join("work-prog-bare")).unwrap_err();
        assert!(
            matches!(&err, BuildError::Failed { package, tail, .. } if package == "prog" && tail.contains("foo.h")),
            "{err}"
        );

        req.layers = layers;
        let out = build(&req, &tmp.path().join("work-prog"));
        let log = fs::read_to_string(&out.log).unwrap();
        assert!(log.contains("answer 42"), "{log}");
        let info = crate::read_rpm(&out.rpms[0]).unwrap();
        assert!(
            info.requires
                .iter()
                .any(|d| d.name.starts_with("libfoo.so.1")),
            "{:?}",
            info.requires
        );
        assert!(
            info.files.contains(&"/usr/bin/prog".to_owned()),
            "{:?}",
            info.files
        );
    }

    #[test]
    fn a_build_cannot_reach_the_network() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tmp = tempfile::tempdir().unwrap();
        let spec = package_dir(
            tmp.path(),
            "netprobe",
            "Name: netprobe\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\nBuildArch: noarch\n%description\nd\n\
%build\nbash -c 'exec 3<>/dev/tcp/127.0.0.1/%{probe_port}' && echo REACHED-LOOPBACK\n\
curl -sS --max-time 5 http://192.0.2.1/ && echo REACHED-OUTSIDE || true\n\
bash -c 'exec 3<>/dev/tcp/127.0.0.1/%{probe_port}'\n%files\n",
            &[],
        );
        let mut req = BuildRequest::new(&spec, "noarch", 1_790_000_000);
        req.defines.push(("probe_port".into(), port.to_string()));
        let work = tmp.path().join("work");
        let srpm = build_srpm(&req, &work).unwrap();
        let err = build_rpms(&req, &srpm, &work).unwrap_err();
        match &err {
            BuildError::Failed {
                package, log, tail, ..
            } => {
                assert_eq!(package, "netprobe");
                assert!(tail.contains("/dev/tcp/127.0.0.1"), "{tail}");
                let full = fs::read_to_string(log).unwrap();
                assert!(!full.contains("REACHED-"), "{full}");
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("rpms.log"), "{err}");
        // Unsandboxed, the same build does reach the listener: the probe can tell.
        req.isolation = Isolation::Unsandboxed;
        let work = tmp.path().join("work-unsandboxed");
        let srpm = build_srpm(&req, &work).unwrap();
        build_rpms(&req, &srpm, &work).unwrap();
        let log = fs::read_to_string(work.join("rpms.log")).unwrap();
        assert!(log.contains("REACHED-LOOPBACK"), "{log}");
    }

    #[test]
    fn tree_macro_files_and_defines_reach_the_spec() {
        let tmp = tempfile::tempdir().unwrap();
        let macros = tmp.path().join("tree.macros");
        fs::write(&macros, "%tree_greeting hello-from-macros\n").unwrap();
        let spec = package_dir(
            tmp.path(),
            "macrouser",
            "Name: macrouser\nVersion: 1\nRelease: 1%{?dist}\nSummary: s\nLicense: MIT\nBuildArch: noarch\n%description\nd\n\
%install\nmkdir -p %{buildroot}/usr/share\necho %{tree_greeting} > %{buildroot}/usr/share/greeting\n%files\n/usr/share/greeting\n",
            &[],
        );
        let mut req = BuildRequest::new(&spec, "noarch", 1_790_000_000);
        req.macro_files.push(macros);
        req.defines.push(("dist".into(), ".kl1".into()));
        let out = build(&req, &tmp.path().join("work"));
        assert_eq!(
            out.rpms[0].file_name().unwrap(),
            "macrouser-1-1.kl1.noarch.rpm"
        );
        let layer = tmp.path().join("layer");
        crate::unpack_payload(&out.rpms[0], &layer).unwrap();
        assert_eq!(
            fs::read_to_string(layer.join("usr/share/greeting")).unwrap(),
            "hello-from-macros\n"
        );
    }

    #[test]
    fn a_failing_build_names_package_log_and_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = package_dir(
            tmp.path(),
            "broken",
            "Name: broken\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\nBuildArch: noarch\n%description\nd\n%build\necho the-last-words\nexit 3\n%files\n",
            &[],
        );
        let req = BuildRequest::new(&spec, "noarch", 1_790_000_000);
        let work = tmp.path().join("work");
        let srpm = build_srpm(&req, &work).unwrap();
        let msg = build_rpms(&req, &srpm, &work).unwrap_err().to_string();
        assert!(
            msg.starts_with("build broken: rpmbuild exited with code 1"),
            "{msg}"
        );
        assert!(
            msg.contains(&work.join("rpms.log").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("the-last-words"), "{msg}");
    }
}
