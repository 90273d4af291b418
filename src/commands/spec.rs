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
        match key.as_str() {
            "-P" | "--parse" => o.mode = Mode::Parse,
            "-q" | "--query" => o.mode = Mode::Query,
            "--srpm" => o.which = Which::Srpm,
            "--builtrpms" => o.which = Which::Built,
            "--rpms" => o.which = Which::All,
            "--qf" | "--queryformat" => o.qf = Some(value(&mut i, &a, &key)?),
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
            "-D" | "--define" => o.setup.cli.push(CliMacro::Define(value(&mut i, &a, &key)?)),
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
            "-v" | "--verbose" | "--quiet" => {}
            _ if a.starts_with("-D") && a.len() > 2 => {
                o.setup.cli.push(CliMacro::Define(a[2..].to_string()))
            }
            _ if a.starts_with('-') && a.len() > 1 => bail!("unknown option: {a}"),
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
            for f in &o.files {
                match keel_specs::read_spec(f, &cfg) {
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
