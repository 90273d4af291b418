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

/// A content-addressed, incremental build engine for RPM-based distributions.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about, propagate_version = true)]
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
    let cli = Cli::parse();
    output::init_logging();
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
    }
}
