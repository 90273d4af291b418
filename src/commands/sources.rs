//! `keel sources fetch|verify`: the tree's sources, checked against its signatures files.

use std::path::Path;

use std::io::IsTerminal as _;

use anyhow::Context as _;
use keel_rules::actions::signatures_path;
use keel_specs::Spec;

use super::Context;
use crate::exit_codes;

#[derive(Debug, clap::Subcommand)]
pub enum SourcesCommand {
    /// Put every source of the named packages (all when none) in the store, from the
    /// spec's directory or the mirrors in keel.toml, checking each against its signature
    Fetch {
        /// Source or binary package names [default: every package of the tree]
        packages: Vec<String>,
        /// enforce: a missing or wrong signature is an error; skip: not checked;
        /// update: rewrite the signatures files with the actual digests
        #[arg(long, default_value = "enforce")]
        mode: keel_sources::Mode,
    },
    /// Check the sources kept beside each spec against its signatures file
    Verify {
        /// Source or binary package names [default: every package of the tree]
        packages: Vec<String>,
    },
}

/// The Source and Patch files of a spec, as its signatures file names them.
fn source_files(spec: &Spec) -> Vec<String> {
    spec.source.sources.iter().map(|s| s.file.clone()).collect()
}

fn selected<'a>(
    loaded: &'a crate::tree::LoadedTree,
    packages: &[String],
) -> anyhow::Result<Vec<&'a Spec>> {
    if packages.is_empty() {
        return Ok(loaded.specs.iter().collect());
    }
    packages
        .iter()
        .map(|p| {
            let id = loaded
                .graph
                .find(p)
                .with_context(|| format!("no package or spec named `{p}` in the tree"))?;
            Ok(&loaded.specs[id.0])
        })
        .collect()
}

/// A progress bar per download, on a terminal.
fn download_bar() -> keel_sources::ProgressFn {
    let bar = std::sync::Mutex::new(None::<(String, indicatif::ProgressBar)>);
    std::sync::Arc::new(move |p: &keel_sources::Progress<'_>| {
        let Ok(mut slot) = bar.lock() else { return };
        if slot.as_ref().is_none_or(|(u, _)| u != p.url) {
            if let Some((_, old)) = slot.take() {
                old.finish_and_clear();
            }
            let b = indicatif::ProgressBar::new(p.total.unwrap_or(0));
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{prefix:>12.cyan.bold} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_prefix("Fetching");
            b.set_message(p.file.to_owned());
            *slot = Some((p.url.to_owned(), b));
        }
        if let Some((_, b)) = slot.as_ref() {
            b.set_position(p.done);
            if p.total.is_some_and(|t| p.done >= t) {
                b.finish_and_clear();
            }
        }
    })
}

pub fn run(ctx: &Context, cmd: SourcesCommand) -> anyhow::Result<i32> {
    let tree = crate::tree::require(ctx.tree.as_ref())?;
    let store = ctx.store_for_reading()?;
    let loaded = crate::tree::load_with(tree, store.as_ref())?;
    for f in &loaded.failures {
        ctx.out
            .status(&format!("{}:{}: {}", f.file.display(), f.line, f.message));
    }
    match cmd {
        SourcesCommand::Verify { packages } => {
            let mut bad = 0;
            for spec in selected(&loaded, &packages)? {
                let dir = spec.path.parent().unwrap_or(Path::new("."));
                let sigs_path = signatures_path(&spec.path);
                let sigs = match keel_sources::Signatures::load(&sigs_path) {
                    Ok(s) => s,
                    Err(e) => {
                        bad += 1;
                        ctx.out.line(&format!("{}: {e}", spec.path.display()))?;
                        continue;
                    }
                };
                for p in keel_sources::verify_dir(dir, &sigs, &source_files(spec)) {
                    bad += 1;
                    ctx.out.line(&format!("{}: {p}", sigs_path.display()))?;
                }
            }
            if bad > 0 {
                ctx.out.status(&format!("{bad} problem(s) found"));
                return Ok(exit_codes::ERROR);
            }
            ctx.out
                .status("every source beside its spec matches its signature");
            Ok(exit_codes::SUCCESS)
        }
        SourcesCommand::Fetch { packages, mode } => {
            let store = ctx.open_store()?;
            let mut fetcher = keel_sources::Fetcher::new(tree.config.sources.mirrors.clone())
                .context("bad source mirror in keel.toml")?
                .with_mode(mode);
            if !ctx.out.quiet && !ctx.out.json && std::io::stderr().is_terminal() {
                fetcher = fetcher.with_progress(download_bar());
            }
            let mut failed = 0;
            for spec in selected(&loaded, &packages)? {
                let dir = spec.path.parent().unwrap_or(Path::new("."));
                let files = source_files(spec);
                match fetcher.fetch_spec(&store, dir, &signatures_path(&spec.path), &files) {
                    Ok(done) => {
                        for f in &done.fetched {
                            ctx.out.line(&format!(
                                "{} {} (from {})",
                                f.blob.short(),
                                f.file,
                                f.from
                            ))?;
                        }
                        if done.signatures_updated {
                            ctx.out.status(&format!(
                                "updated {}",
                                signatures_path(&spec.path).display()
                            ));
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        crate::output::error_line(&format!("error: {}: {e}", spec.path.display()));
                    }
                }
            }
            store.flush()?;
            Ok(if failed > 0 {
                exit_codes::ERROR
            } else {
                exit_codes::SUCCESS
            })
        }
    }
}
