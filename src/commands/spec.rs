//! `keel spec`: rpmspec's command line over keel's native spec reader.
//!
//! `keel spec -P FILE`, `keel spec -q [--srpm|--builtrpms] [--requires|...] [--qf FMT] FILE`
//! with `-D`, `--load`, `--target`, `--with`, `--without` (and `--keel-toml`: the tree's
//! keel.toml first, as `keel build` reads specs); and `keel spec check [DIR...]`,
//! which reads every spec under the directories in parallel and reports failures as
//! `path:line: message`. Arguments are parsed here rather than by clap because rpmspec's
//! options (`-q`, `-D`, `--qf=...`) clash with keel's global flags.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use keel_specs::query::{Header, QueryFormat};
use keel_specs::{CliMacro, EngineConfig, MacroSetup, ReaderConfig, ShellRunner};
use rayon::prelude::*;

/// Raw arguments, parsed rpmspec-style.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct SpecArgs {
    /// `-P FILE...`, `-q [OPTIONS] FILE...` or `check [DIR...]`, with rpmspec's options
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    None,
    Parse,
    Query,
    Check,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Which {
    #[default]
    All,
    Srpm,
    Built,
}

#[derive(Debug, Default)]
struct Opts {
    mode: Mode,
    which: Which,
    qf: Option<String>,
    setup: MacroSetup,
    files: Vec<PathBuf>,
    shell: Option<String>,
    shell_timeout: Option<u64>,
    lua_path: Option<String>,
    contain: bool,
    sourcedir_is_specdir: bool,
    passes: usize,
    /// Read with the tree's keel.toml: its macro files, defines, shell, Lua path and layout.
    tree: bool,
    /// `-h`/`--help`: print the help and nothing else.
    help: bool,
}

/// One of rpmspec's options as `keel spec` takes it: its spellings (the first names it in
/// `parse_args`), the value it takes, and its line of help.
struct SpecOption {
    names: &'static [&'static str],
    value: Option<&'static str>,
    help: &'static str,
}

const fn opt(
    names: &'static [&'static str],
    value: Option<&'static str>,
    help: &'static str,
) -> SpecOption {
    SpecOption { names, value, help }
}

/// Every option `keel spec` accepts: `parse_args` knows no other, and `keel spec --help`
/// lists each, so the help cannot drift from what is parsed.
const SPEC_OPTIONS: &[SpecOption] = &[
    opt(
        &["-P", "--parse"],
        None,
        "Print the spec with its macros expanded",
    ),
    opt(
        &["-q", "--query"],
        None,
        "Query the spec's packages (see --qf)",
    ),
    opt(&["--srpm"], None, "Query the source package"),
    opt(
        &["--rpms"],
        None,
        "Query every binary package (the default)",
    ),
    opt(
        &["--builtrpms"],
        None,
        "Query the binary packages that would be built",
    ),
    opt(
        &["--qf", "--queryformat"],
        Some("FMT"),
        "Query format, as rpm's --qf",
    ),
    opt(
        &["--requires"],
        None,
        "List the Requires of each package queried",
    ),
    opt(
        &["--provides"],
        None,
        "List the Provides of each package queried",
    ),
    opt(
        &["--conflicts"],
        None,
        "List the Conflicts of each package queried",
    ),
    opt(
        &["--obsoletes"],
        None,
        "List the Obsoletes of each package queried",
    ),
    opt(
        &["--buildrequires"],
        None,
        "List the BuildRequires of the source package",
    ),
    opt(
        &["--buildconflicts"],
        None,
        "List the BuildConflicts of the source package",
    ),
    opt(
        &["-D", "--define"],
        Some("'NAME BODY'"),
        "Define a macro (also -DNAME BODY)",
    ),
    opt(
        &["--load"],
        Some("FILE"),
        "Load a macro file after the macro path",
    ),
    opt(
        &["--target"],
        Some("CPU[-OS]"),
        "Read the spec for this target",
    ),
    opt(
        &["--with"],
        Some("BCOND"),
        "Enable a conditional build option",
    ),
    opt(
        &["--without"],
        Some("BCOND"),
        "Disable a conditional build option",
    ),
    opt(
        &["--macros"],
        Some("PATHS"),
        "The macro path (colon-separated globs) instead of rpm's",
    ),
    opt(
        &["--shell"],
        Some("SHELL"),
        "The shell that runs %(...) [default: /bin/sh]",
    ),
    opt(
        &["--shell-timeout"],
        Some("SECS"),
        "Time limit of each %(...) [default: 60, 10 with --contain]",
    ),
    opt(
        &["--lua-path"],
        Some("PATH"),
        "Lua's package.path for %{lua:...}",
    ),
    opt(
        &["--contain"],
        None,
        "Untrusted specs: contain %(...), Lua and %include",
    ),
    opt(
        &["--sourcedir-is-specdir"],
        None,
        "%_sourcedir is the spec's directory",
    ),
    opt(
        &["--keel-toml"],
        None,
        "Read as keel build does: keel.toml's macro files and defines first",
    ),
    opt(
        &["--passes"],
        Some("N"),
        "check: read the tree N times, timing each pass",
    ),
    opt(
        &["-v", "--verbose", "--quiet"],
        None,
        "Accepted for rpmspec's sake; no effect",
    ),
];

/// The lines `keel spec --help` and `keel help spec` add after the usage: rpmspec's
/// options, one line each, from [`SPEC_OPTIONS`].
pub fn help_text() -> String {
    let left: Vec<String> = SPEC_OPTIONS
        .iter()
        .map(|o| {
            let names = o.names.join(", ");
            match o.value {
                Some(v) => format!("{names} {v}"),
                None => names,
            }
        })
        .collect();
    let width = left.iter().map(String::len).max().unwrap_or(0);
    let mut s = String::from(
        "Modes:\n  -P FILE...              Print each spec as rpmspec -P does\n  \
         -q [OPTIONS] FILE...    Query each spec as rpmspec -q does\n  \
         check [DIR...]          Read every spec under DIR (default: .), report failures\n\n\
         rpmspec options (parsed by keel spec itself, so -q and -D mean what they mean to rpmspec):\n",
    );
    for (l, o) in left.iter().zip(SPEC_OPTIONS) {
        s.push_str(&format!("  {l:<width$}  {}\n", o.help));
    }
    s.push_str(&format!("  {:<width$}  Print this help\n", "-h, --help"));
    s
}

const REQ_QF: &str = "[%|VERBOSE?{%{REQUIREFLAGS:deptype}: }:{}|%{REQUIRENEVRS}\\n]";
const PROV_QF: &str = "[%|VERBOSE?{%{PROVIDEFLAGS:deptype}: }:{}|%{PROVIDENEVRS}\\n]";
const CONF_QF: &str = "[%|VERBOSE?{%{CONFLICTFLAGS:deptype}: }:{}|%{CONFLICTNEVRS}\\n]";
const OBS_QF: &str = "[%|VERBOSE?{%{OBSOLETEFLAGS:deptype}: }:{}|%{OBSOLETENEVRS}\\n]";

fn parse_args(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts::default();
    let mut i = 0;
    if args.first().is_some_and(|a| a == "check") {
        o.mode = Mode::Check;
        i = 1;
    }
    let value = |i: &mut usize, a: &str, name: &str| -> anyhow::Result<String> {
        if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return Ok(v.to_string());
        }
        *i += 1;
        args.get(*i)
            .cloned()
            .with_context(|| format!("{name}: argument expected"))
    };
    while i < args.len() {
        let a = args[i].clone();
        let key = a.split('=').next().unwrap_or("").to_string();
        let canonical = SPEC_OPTIONS
            .iter()
            .find(|o| o.names.contains(&key.as_str()))
            .map_or("", |o| o.names[0]);
        match canonical {
            "-P" => o.mode = Mode::Parse,
            "-q" => o.mode = Mode::Query,
            "--srpm" => o.which = Which::Srpm,
            "--builtrpms" => o.which = Which::Built,
            "--rpms" => o.which = Which::All,
            "--qf" => o.qf = Some(value(&mut i, &a, &key)?),
            "--requires" => o.qf = Some(REQ_QF.into()),
            "--provides" => o.qf = Some(PROV_QF.into()),
            "--conflicts" => o.qf = Some(CONF_QF.into()),
            "--obsoletes" => o.qf = Some(OBS_QF.into()),
            "--buildrequires" => {
                o.which = Which::Srpm;
                o.qf = Some(REQ_QF.into());
            }
            "--buildconflicts" => {
                o.which = Which::Srpm;
                o.qf = Some(CONF_QF.into());
            }
            "-D" => o.setup.cli.push(CliMacro::Define(value(&mut i, &a, &key)?)),
            "--load" => o
                .setup
                .cli
                .push(CliMacro::Load(PathBuf::from(value(&mut i, &a, &key)?))),
            "--target" => o.setup.target = Some(value(&mut i, &a, &key)?),
            "--with" => {
                let v = value(&mut i, &a, &key)?;
                o.setup
                    .cli
                    .push(CliMacro::Define(format!("_with_{v} --with-{v}")));
            }
            "--without" => {
                let v = value(&mut i, &a, &key)?;
                o.setup
                    .cli
                    .push(CliMacro::Define(format!("_without_{v} --without-{v}")));
            }
            "--macros" => o.setup.macro_path = value(&mut i, &a, &key)?,
            "--shell" => o.shell = Some(value(&mut i, &a, &key)?),
            "--shell-timeout" => {
                o.shell_timeout = Some(
                    value(&mut i, &a, &key)?
                        .parse()
                        .context("--shell-timeout")?,
                )
            }
            "--lua-path" => o.lua_path = Some(value(&mut i, &a, &key)?),
            "--contain" => o.contain = true,
            "--sourcedir-is-specdir" => o.sourcedir_is_specdir = true,
            "--keel-toml" => o.tree = true,
            "--passes" => o.passes = value(&mut i, &a, &key)?.parse().context("--passes")?,
            "-v" => {}
            _ if a.starts_with("-D") && a.len() > 2 => {
                o.setup.cli.push(CliMacro::Define(a[2..].to_string()))
            }
            _ if a == "-h" || a == "--help" => o.help = true,
            _ if a.starts_with('-') && a.len() > 1 => {
                bail!("unknown option: {a} (keel spec --help lists them)")
            }
            _ => o.files.push(PathBuf::from(a)),
        }
        i += 1;
    }
    Ok(o)
}

fn reader_config(o: &Opts) -> anyhow::Result<(ReaderConfig, Vec<String>)> {
    let mut ecfg = EngineConfig::default();
    if o.shell.is_some() || o.shell_timeout.is_some() {
        let sh = o.shell.clone().unwrap_or_else(|| "/bin/sh".into());
        let t = Duration::from_secs(o.shell_timeout.unwrap_or(60));
        ecfg.shell = Arc::new(ShellRunner::new(vec![sh, "-c".into()], t));
    }
    if let Some(p) = &o.lua_path {
        ecfg.lua_path = p.clone();
    }
    if o.contain {
        // untrusted specs: contained %(shell) and Lua, %include/%{load:} only from the
        // spec directories, the --load directories, the rpm configuration and the cwd
        let t = Duration::from_secs(o.shell_timeout.unwrap_or(10));
        ecfg.shell = Arc::new(ShellRunner::contained(t, 2 << 20));
        let mut roots: Vec<PathBuf> = vec![PathBuf::from("/usr/lib/rpm"), std::env::current_dir()?];
        for f in &o.files {
            roots.push(
                f.parent()
                    .map(|p| {
                        if p.as_os_str().is_empty() {
                            PathBuf::from(".")
                        } else {
                            p.to_path_buf()
                        }
                    })
                    .unwrap_or_default(),
            );
        }
        for c in &o.setup.cli {
            if let CliMacro::Load(p) = c
                && let Some(d) = p.parent()
            {
                roots.push(d.to_path_buf());
            }
        }
        ecfg.containment = Some(Arc::new(keel_specs::macros::Containment {
            roots,
            lua_memory: 256 << 20,
            lua_timeout: t,
            scratch: Default::default(),
        }));
    }
    let (table, warnings) =
        keel_specs::load_macros(&o.setup, &ecfg).context("failed to set up macros")?;
    Ok((ReaderConfig::new(table, ecfg), warnings))
}

/// `--keel-toml`: the tree's keel.toml as if given on the command line, before the options that
/// were (so `-D` on the command line still wins, as a later define does in rpm).
fn apply_tree(o: &mut Opts, tree: &crate::config::Tree) -> anyhow::Result<()> {
    let sc = &tree.config.specs;
    let mut cli: Vec<CliMacro> = crate::tree::macro_files(tree)?
        .into_iter()
        .map(CliMacro::Load)
        .collect();
    cli.extend(
        sc.defines
            .iter()
            .map(|(k, v)| CliMacro::Define(format!("{k} {v}"))),
    );
    cli.append(&mut o.setup.cli);
    o.setup.cli = cli;
    if !sc.host_macros {
        o.setup.macro_path = String::new();
    }
    if o.setup.target.is_none() {
        o.setup.target = sc.target.clone();
    }
    if o.shell.is_none() {
        o.shell = sc.shell.clone();
    }
    if o.lua_path.is_none() {
        o.lua_path = sc.lua_path.clone();
    }
    o.sourcedir_is_specdir = true;
    Ok(())
}

/// Runs `keel spec`. Never needs the store.
pub fn run(ctx: &super::Context, args: SpecArgs) -> anyhow::Result<i32> {
    // keel's global `-q`/`-j`/`-C` would swallow rpmspec's options of the same letters, so the
    // arguments after `spec` are taken verbatim from the process arguments.
    let raw: Vec<String> = std::env::args().collect();
    let argv = match raw.iter().position(|a| a == "spec") {
        Some(p) => raw[p + 1..].to_vec(),
        None => args.args,
    };
    let mut o = parse_args(&argv)?;
    if o.help {
        crate::output::print_help(&["spec"])?;
        return Ok(0);
    }
    if o.tree {
        apply_tree(&mut o, crate::tree::require(ctx.tree.as_ref())?)?;
    }
    let (mut cfg, _warnings) = reader_config(&o)?;
    cfg.sourcedir_is_specdir = o.sourcedir_is_specdir;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut err = std::io::stderr().lock();
    match o.mode {
        Mode::None => bail!("one of -P, -q or check is required"),
        Mode::Check => {
            let dirs = if o.files.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                o.files.clone()
            };
            let specs: Vec<PathBuf> = dirs
                .iter()
                .flat_map(|d| keel_specs::find_specs(d))
                .collect();
            // --passes N re-reads the tree in the same process: later passes show the cost
            // with every %(shell) result already cached.
            for pass in 1..o.passes {
                let t = std::time::Instant::now();
                specs.par_iter().for_each(|p| {
                    let _ = keel_specs::read_spec(p, &cfg);
                });
                let _ = writeln!(
                    err,
                    "pass {pass}: read {} specs in {:.2}s",
                    specs.len(),
                    t.elapsed().as_secs_f64()
                );
            }
            let start = std::time::Instant::now();
            let results: Vec<_> = specs
                .par_iter()
                .map(|p| (p, keel_specs::read_spec(p, &cfg)))
                .collect();
            let mut failed = 0;
            for (p, r) in &results {
                if let Err(e) = r {
                    failed += 1;
                    let _ = writeln!(out, "{}:{}: {}", p.display(), e.line, e.message);
                }
            }
            let _ = writeln!(
                err,
                "read {} specs in {:.2}s, {} failed",
                specs.len(),
                start.elapsed().as_secs_f64(),
                failed
            );
            Ok(if failed > 0 { 1 } else { 0 })
        }
        Mode::Parse | Mode::Query => {
            if o.files.is_empty() {
                bail!("no spec files given for query");
            }
            let mut rc = 0;
            let build_archs = compatible_build_archs();
            for f in &o.files {
                let read =
                    keel_specs::read_spec(f, &cfg).and_then(|spec| match incompatible_build_archs(
                        &spec,
                        &build_archs,
                    ) {
                        Some(message) => Err(keel_specs::SpecError {
                            file: f.clone(),
                            line: 0,
                            message,
                            notices: spec.notices,
                        }),
                        None => Ok(spec),
                    });
                match read {
                    Err(e) => {
                        for n in &e.notices {
                            let _ = writeln!(out, "{n}");
                        }
                        let _ = out.flush();
                        let _ = writeln!(err, "error: {}", e.message);
                        if o.mode == Mode::Query {
                            let _ = writeln!(
                                err,
                                "error: query of specfile {} failed, can't parse",
                                f.display()
                            );
                        }
                        rc = 1;
                    }
                    Ok(spec) => {
                        for n in &spec.notices {
                            let _ = writeln!(out, "{n}");
                        }
                        for d in spec.diagnostics() {
                            let _ = writeln!(err, "{d}");
                        }
                        if o.mode == Mode::Parse {
                            if let Err(e) = out.write_all(spec.parsed.as_bytes()) {
                                if e.kind() == std::io::ErrorKind::BrokenPipe {
                                    return Ok(0);
                                }
                                return Err(e.into());
                            }
                            continue;
                        }
                        let qf = QueryFormat::parse(o.qf.as_deref().unwrap_or("%{NVRA}\\n"))
                            .map_err(|e| anyhow::anyhow!("incorrect format: {e}"))?;
                        let headers: Vec<Header> = match o.which {
                            Which::Srpm => vec![Header::source(&spec)],
                            Which::All => spec.packages.iter().map(Header::binary).collect(),
                            Which::Built => spec
                                .packages
                                .iter()
                                .filter(|p| p.has_files)
                                .map(Header::binary)
                                .collect(),
                        };
                        for h in headers {
                            match qf.render(&h) {
                                Ok(s) => {
                                    if let Err(e) = out.write_all(s.as_bytes()) {
                                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                                            return Ok(0);
                                        }
                                        return Err(e.into());
                                    }
                                }
                                Err(e) => {
                                    let _ = writeln!(err, "error: {e}");
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            let _ = out.flush();
            Ok(rc)
        }
    }
}

/// rpm's own table of which architectures a machine can build for (`buildarch_compat`).
const RPMRC: &str = "/usr/lib/rpm/rpmrc";

/// The architectures this machine can build packages for, as rpm lists them under
/// "compatible build archs" (`rpm --showrc`): the machine's own and, following rpmrc's
/// `buildarch_compat` lines, those it builds too (`noarch` everywhere). Without rpm's
/// rpmrc, the machine's architecture and `noarch`.
fn compatible_build_archs() -> Vec<String> {
    let host = match std::env::consts::ARCH {
        "x86" => "i686",
        a => a,
    };
    let rpmrc = std::fs::read_to_string(RPMRC).unwrap_or_default();
    build_arch_closure(host, &rpmrc)
}

fn build_arch_closure(host: &str, rpmrc: &str) -> Vec<String> {
    let mut table: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for line in rpmrc.lines() {
        let Some(rest) = line.trim().strip_prefix("buildarch_compat:") else {
            continue;
        };
        if let Some((arch, compat)) = rest.split_once(':') {
            table
                .entry(arch.trim())
                .or_default()
                .extend(compat.split_whitespace());
        }
    }
    let mut archs = vec![host.to_owned()];
    let mut i = 0;
    while i < archs.len() {
        for next in table.get(archs[i].as_str()).into_iter().flatten() {
            if !archs.iter().any(|a| a == next) {
                archs.push((*next).to_owned());
            }
        }
        i += 1;
    }
    if table.is_empty() && host != "noarch" {
        archs.push("noarch".to_owned());
    }
    archs
}

/// rpm's refusal of a spec whose `BuildArch` names no architecture this machine builds
/// for (`BuildArch: aarch64` on x86_64), which `rpmspec -P` and `-q` print and fail with.
/// `ExclusiveArch`/`ExcludeArch` alone do not stop rpmspec (it reads specs for any
/// architecture); the package graph applies those itself.
fn incompatible_build_archs(spec: &keel_specs::Spec, compatible: &[String]) -> Option<String> {
    let wanted = &spec.source.build_archs;
    let none = !wanted.is_empty() && !wanted.iter().any(|a| compatible.contains(a));
    none.then(|| "No compatible architectures found for build".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_archs_follow_rpmrc_buildarch_compat() {
        let rpmrc = "buildarch_compat: i686: i586\nbuildarch_compat: i586: i486\n\
                     buildarch_compat: i486: noarch\nbuildarch_compat: x86_64: noarch\n";
        assert_eq!(build_arch_closure("x86_64", rpmrc), ["x86_64", "noarch"]);
        assert_eq!(
            build_arch_closure("i686", rpmrc),
            ["i686", "i586", "i486", "noarch"]
        );
        assert_eq!(build_arch_closure("aarch64", ""), ["aarch64", "noarch"]);
    }

    #[test]
    fn every_option_the_help_lists_is_parsed() {
        for o in SPEC_OPTIONS {
            for name in o.names {
                let mut args = vec![name.to_string()];
                if o.value.is_some() {
                    args.push("x".into());
                }
                let parsed = parse_args(&args);
                // A numeric option refuses "x" by name, which still shows it is known.
                if let Err(e) = &parsed {
                    assert!(!e.to_string().contains("unknown option"), "{name}: {e:#}");
                }
            }
        }
        assert!(parse_args(&["--no-such-option".into()]).is_err());
        assert!(parse_args(&["--help".into()]).unwrap().help);
    }

    #[test]
    fn the_help_has_one_line_per_option() {
        let text = help_text();
        let (_, help) = text.split_once("rpmspec options").unwrap();
        for o in SPEC_OPTIONS {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(o.names[0]))
                .unwrap_or_else(|| panic!("{} missing from:\n{help}", o.names[0]));
            for name in o.names {
                assert!(line.contains(name), "{name} not on {line:?}");
            }
            assert!(line.ends_with(o.help), "{line:?}");
        }
    }
}
