//! keel-specs: a native reader of RPM spec files.
//!
//! It implements rpm's macro language ([`macros`]: definitions, parametric macros, built-ins,
//! `%{lua:}` through embedded Lua 5.4, `%(shell)` through a configurable shell with a cache,
//! and rpm's expression grammar in [`expr`]), reads a spec the way `rpmbuild`'s parser does
//! ([`spec`]: conditionals, `%include`, sections, preamble tags) into a model of the source
//! package and its binary packages, and renders rpmspec-compatible output ([`query`]).
//!
//! It deliberately does not build anything, touch a store or know about other keel crates.

pub mod deps;
pub mod expr;
pub mod lua;
pub mod macros;
pub mod query;
pub mod shell_cache;
pub mod spec;
pub mod vercmp;

use std::path::{Path, PathBuf};

pub use macros::{EngineConfig, LazyView, MacroTable, MadeView, ShellRunner};
pub use spec::{Package, ReaderConfig, SourcePackage, Spec, SpecError, read_spec};

/// rpm 4.18's default macro path (`rpm --showrc`), with Debian's vendor directory.
pub const DEFAULT_MACRO_PATH: &str = "/usr/lib/rpm/macros:/usr/lib/rpm/macros.d/macros.*:/usr/lib/rpm/platform/%{_target}/macros:/usr/lib/rpm/fileattrs/*.attr:/usr/lib/rpm/debian/macros:/usr/lib/rpm/redhat/macros:/etc/rpm/macros.*:/etc/rpm/macros:/etc/rpm/%{_target}/macros:~/.rpmmacros";

/// One command-line macro item, applied in order after the macro files (as rpm does).
#[derive(Debug, Clone)]
pub enum CliMacro {
    /// `-D 'name body'`
    Define(String),
    /// `--load FILE`
    Load(PathBuf),
}

/// How to build the shared macro context.
#[derive(Debug, Clone)]
pub struct MacroSetup {
    /// `:`-separated globs; `%{_target}` and `~` are expanded. Missing files are skipped,
    /// so this also works where rpm is not installed.
    pub macro_path: String,
    /// `cpu-os` (e.g. `x86_64-linux`); default: the host.
    pub target: Option<String>,
    pub cli: Vec<CliMacro>,
}

impl Default for MacroSetup {
    fn default() -> Self {
        MacroSetup {
            macro_path: DEFAULT_MACRO_PATH.into(),
            target: None,
            cli: Vec::new(),
        }
    }
}

/// A failure to set up macros.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("failed to load macro file {}: {source}", path.display())]
    Load {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to define macro {0:?}")]
    Define(String),
}

/// The files matching `pattern`, whose last component may hold `*` and `?` (as rpm's
/// macro path does), sorted; a pattern without wildcards yields the file if it exists.
pub fn glob_one(pattern: &str) -> Vec<PathBuf> {
    let p = Path::new(pattern);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains('*') && !name.contains('?') {
        return if p.exists() {
            vec![p.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = p.parent().unwrap_or(Path::new("/"));
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .filter(|e| wildmatch(&name, &e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

fn wildmatch(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = s.chars().collect();
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|i| go(&p[1..], &t[i..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    // a leading dot is never matched by a wildcard
    if s.starts_with('.') && !pat.starts_with('.') {
        return false;
    }
    go(&p, &t)
}

/// Builds the macro table the way rpm does at startup: rpmrc macros, then every file on
/// the macro path, then the command-line items in order. Returns warnings to print.
pub fn load_macros(
    setup: &MacroSetup,
    cfg: &EngineConfig,
) -> Result<(MacroTable, Vec<String>), SetupError> {
    let mut t = MacroTable::new();
    let host = match std::env::consts::ARCH {
        "x86" => "i686",
        a => a,
    };
    let target = setup
        .target
        .clone()
        .unwrap_or_else(|| format!("{host}-linux"));
    let mut parts = target.split('-');
    let cpu = parts.next().unwrap_or(host).to_string();
    let os = target
        .rsplit('-')
        .next()
        .filter(|_| target.contains('-'))
        .unwrap_or("linux")
        .to_string();
    let lvl = macros::LEVEL_RPMRC;
    t.push("_target", None, &format!("{cpu}-{os}"), lvl);
    t.push("_target_cpu", None, &cpu, lvl);
    t.push("_target_os", None, &os, lvl);
    t.push("optflags", None, "-O2 -g", lvl);
    let home = std::env::var("HOME").unwrap_or_default();
    let mut warnings = Vec::new();
    for pat in setup.macro_path.split(':').filter(|s| !s.is_empty()) {
        let pat = pat.replace("%{_target}", &format!("{cpu}-{os}"));
        let pat = if let Some(r) = pat.strip_prefix("~/") {
            format!("{home}/{r}")
        } else {
            pat
        };
        for f in glob_one(&pat) {
            let n = f.to_string_lossy();
            if n.ends_with(".rpmnew")
                || n.ends_with(".rpmsave")
                || n.ends_with(".rpmorig")
                || f.is_dir()
            {
                continue;
            }
            if let Ok(w) = t.load_file(&f, cfg) {
                warnings.extend(w);
            }
        }
    }
    for item in &setup.cli {
        match item {
            CliMacro::Define(d) => {
                let mut e = macros::Engine::new(std::mem::take(&mut t), cfg.clone());
                let ok = e.define_str(d, macros::LEVEL_CMDLINE);
                t = std::mem::take(&mut e.table);
                if !ok {
                    return Err(SetupError::Define(d.clone()));
                }
            }
            CliMacro::Load(p) => {
                let w = t.load_file(p, cfg).map_err(|source| SetupError::Load {
                    path: p.clone(),
                    source,
                })?;
                warnings.extend(w);
            }
        }
    }
    t.freeze();
    Ok((t, warnings))
}

/// Every `*.spec` file under `dir`, sorted.
pub fn find_specs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "spec") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
