//! `keel`: the command-line layer over keel's crates.
//!
//! Parses arguments, sets up logging and the output layer, finds the tree config and the
//! store, and dispatches to one module per command under `commands/`. Expected failures map
//! to the exit codes in `exit_codes.rs`; a broken pipe on stdout is success.

mod build;
mod commands;
mod config;
mod exit_codes;
mod output;
mod tree;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// Reading a tree is allocation-bound (macro tables cloned per spec, expansion buffers on
// every core): mimalloc reads Azure Linux's 3,063 specs about 30% faster than glibc's
// allocator, measured side by side.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where `keel --help` tells a newcomer to start.
const START_HERE: &str = "\
Start here, in a tree with a keel.toml (examples/distro is one):
  keel build                 build every package and image, running only what changed
  keel build --dry-run       what would run, and why
  keel explain PACKAGE       why a package was (or will be) rebuilt
  keel graph                 the package graph: build edges, unresolved dependencies, cycles
  keel query rdeps PACKAGE   what a change to PACKAGE rebuilds
  keel spec -P FILE          a spec with its macros expanded, as rpmspec -P prints it
Each command has its own help: keel help COMMAND or keel COMMAND --help.";

/// A content-addressed, incremental build engine for RPM-based distributions.
#[derive(Debug, Parser)]
#[command(
    name = "keel",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = START_HERE
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// The store directory [default: keel.toml's `store.dir`, else $XDG_CACHE_HOME/keel]
    #[arg(long, global = true, env = "KEEL_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// The distribution tree (a directory with keel.toml) [default: searched upwards from
    /// the current directory]
    #[arg(short = 'C', long = "tree", global = true, value_name = "DIR")]
    pub tree: Option<PathBuf>,
    /// Worker threads for hashing and parallel work [default: number of CPUs]
    #[arg(
        short = 'j',
        long = "jobs",
        global = true,
        env = "KEEL_JOBS",
        value_name = "N"
    )]
    pub jobs: Option<usize>,
    /// Machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Less human output on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with the content-addressed store
    #[command(subcommand)]
    Store(commands::store::StoreCommand),
    /// Read spec files like rpmspec (-P, -q) or check a tree (check DIR...)
    Spec(commands::spec::SpecArgs),
    /// The tree's package graph: build edges, unresolved dependencies, cycles
    Graph(commands::graph::GraphArgs),
    /// Questions about the package graph
    #[command(subcommand)]
    Query(commands::query::QueryCommand),
    /// Build the tree or some of its packages, running only what changed
    Build(commands::build::BuildArgs),
    /// Fetch the tree's sources into the store, or verify them against their signatures
    #[command(subcommand)]
    Sources(commands::sources::SourcesCommand),
    /// Build an image from an image config and the tree's built packages
    Image(commands::image::ImageArgs),
    /// Run a command in a sandbox made of built packages' runtime closure
    Run(commands::run::RunArgs),
    /// Say whether a package is up to date and, if not, the chain of reasons
    Explain(commands::explain::ExplainArgs),
    /// The remote caches: statistics, signing keys
    #[command(subcommand)]
    Cache(commands::cache::CacheCommand),
    /// Print a shell completion script for keel (bash, zsh or fish) on stdout
    Completions(commands::completions::CompletionsArgs),
    /// Print keel's manual page (roff) on stdout, for `man -l -` or a man directory
    Man,
}

/// The command line's definition, with what the derive cannot say: `keel spec` parses
/// rpmspec's options itself, and its help lists them from the same table it parses with.
pub fn cli() -> clap::Command {
    use clap::CommandFactory as _;
    Cli::command().mut_subcommand("spec", |c| c.after_help(commands::spec::help_text()))
}

fn main() {
    no_huge_pages();
    let code = match run() {
        Ok(code) => code,
        Err(err) => exit_codes::report(&err),
    };
    std::process::exit(code);
}

/// Turns transparent huge pages off for keel's own memory. mimalloc asks for them, and
/// a short-lived process whose threads each touch fresh memory pays for zeroing a whole
/// 2 MiB page at the first byte of each: opening a fresh store (sled sets up 21 MiB of
/// metrics tables) took 6-28 ms instead of 1-6, and a warm CI build from a remote cache
/// about 10% longer, measured side by side. Builds keel runs get them back (see
/// `keel_toolchain::sandbox`).
fn no_huge_pages() {
    // SAFETY: prctl with integer arguments; failure (an old kernel) changes nothing.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn run() -> anyhow::Result<i32> {
    use clap::FromArgMatches as _;
    let cli = Cli::from_arg_matches(&cli().get_matches()).unwrap_or_else(|e| e.exit());
    output::init_logging();
    // Neither needs a tree or a store: they describe keel itself.
    match &cli.command {
        Command::Completions(args) => return commands::completions::run(args),
        Command::Man => return commands::completions::man(),
        _ => {}
    }
    if let Some(jobs) = cli.global.jobs {
        // Only fails when a pool was already built, which nothing does before this point.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs.max(1))
            .build_global();
    }
    let ctx = commands::Context::new(&cli.global)?;
    match cli.command {
        Command::Store(cmd) => commands::store::run(&ctx, cmd),
        Command::Spec(args) => commands::spec::run(&ctx, args),
        Command::Graph(args) => commands::graph::run(&ctx, args),
        Command::Query(cmd) => commands::query::run(&ctx, cmd),
        Command::Build(args) => commands::build::run(&ctx, args),
        Command::Explain(args) => commands::explain::run(&ctx, args),
        Command::Sources(cmd) => commands::sources::run(&ctx, cmd),
        Command::Run(args) => commands::run::run(&ctx, args),
        Command::Image(args) => commands::image::run(&ctx, args),
        Command::Cache(cmd) => commands::cache::run(&ctx, cmd),
        Command::Completions(_) | Command::Man => unreachable!("answered above"),
    }
}

#[cfg(test)]
mod tests {
    /// Every command and subcommand, with its path (`["store", "gc"]`).
    fn every_command() -> Vec<(Vec<String>, clap::Command)> {
        let mut root = super::cli();
        root.build();
        let mut out = Vec::new();
        let mut stack = vec![(Vec::new(), root)];
        while let Some((path, cmd)) = stack.pop() {
            for sub in cmd.get_subcommands() {
                let mut p = path.clone();
                p.push(sub.get_name().to_owned());
                stack.push((p, sub.clone()));
            }
            out.push((path, cmd));
        }
        out
    }

    #[test]
    fn every_option_of_every_command_has_its_one_line_of_help() {
        // What keel prints for `keel [PATH] ARGS`, which are to ask for help.
        let help = |path: &[String], args: &[&str]| {
            let mut argv = vec!["keel".to_owned()];
            argv.extend(path.iter().cloned());
            argv.extend(args.iter().map(|a| (*a).to_owned()));
            let err = super::cli().try_get_matches_from(argv).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{err}");
            err.to_string()
        };
        for (path, cmd) in every_command() {
            let what = format!("keel {}", path.join(" "));
            if path.iter().any(|p| p == "help") {
                continue;
            }
            // `keel help X` (as `X --help`) is `X -h`: no option's help moves to a
            // paragraph of its own. (`keel spec` reads its own -h.)
            let mut long_path = vec!["help".to_owned()];
            long_path.extend(path.iter().cloned());
            let long = help(&long_path, &[]);
            if path != ["spec"] {
                let short = help(&path, &["-h"]);
                assert_eq!(long, short, "{what}: --help differs from -h");
            }
            let short = long;
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                let id = arg.get_id().as_str();
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                assert!(!help.is_empty(), "{what}: {id} has no help");
                assert!(
                    arg.get_long_help().is_none(),
                    "{what}: {id} has a long help"
                );
                if let Some(long) = arg.get_long() {
                    let line = short
                        .lines()
                        .find(|l| {
                            l.trim_start().starts_with('-')
                                && l.split_whitespace()
                                    .any(|w| w.trim_end_matches(',') == format!("--{long}"))
                        })
                        .unwrap_or_else(|| panic!("{what}: --{long} not in\n{short}"));
                    let first_words: String = help
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ");
                    assert!(
                        line.contains(&first_words),
                        "{what}: --{long}'s help is not on its line {line:?}"
                    );
                }
            }
        }
    }
}
