//! `keel cache`: the remote caches a store has used, and the keys that sign for them.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

use super::Context;
use crate::build::remote::{StatsFile, stats_path};
use crate::exit_codes;

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Hits, misses and bytes moved per remote cache: the last build's and all builds'
    Stats,
    /// Make a key pair for signing uploads: the secret key goes to FILE (mode 0600), the
    /// public key (for readers' trusted keys) to stdout
    Keygen {
        /// Where to write the secret key
        file: PathBuf,
    },
}

pub fn run(ctx: &Context, cmd: CacheCommand) -> anyhow::Result<i32> {
    match cmd {
        CacheCommand::Stats => stats(ctx),
        CacheCommand::Keygen { file } => keygen(ctx, &file),
    }
}

fn stats(ctx: &Context) -> anyhow::Result<i32> {
    let root = ctx.store_dir()?;
    let path = stats_path(&root);
    let file: StatsFile = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("failed to parse {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => StatsFile::default(),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    if ctx.out.json {
        ctx.out.json_value(&file)?;
        return Ok(exit_codes::SUCCESS);
    }
    if file.tiers.is_empty() {
        ctx.out.line(&format!(
            "no build with the store {} has used a remote cache",
            root.display()
        ))?;
        return Ok(exit_codes::SUCCESS);
    }
    for (name, t) in &file.tiers {
        ctx.out.line(name)?;
        ctx.out
            .line(&format!("  last build:        {}", t.last.describe()))?;
        ctx.out.line(&format!(
            "  all {:>3} build(s): {}",
            t.builds,
            t.total.describe()
        ))?;
    }
    Ok(exit_codes::SUCCESS)
}

fn keygen(ctx: &Context, file: &std::path::Path) -> anyhow::Result<i32> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let pair = keel_remote::signing::SigningKeyPair::generate()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("failed to create {} (it must not exist)", file.display()))?;
    writeln!(
        f,
        "# keel remote-cache signing key (ed25519 seed); public key {}",
        pair.public()
    )
    .and_then(|()| writeln!(f, "{}", pair.seed_hex()))
    .with_context(|| format!("failed to write {}", file.display()))?;
    ctx.out.line(&pair.public().to_string())?;
    Ok(exit_codes::SUCCESS)
}
