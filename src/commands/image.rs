//! `keel image CONFIG`: an image from an Azure Linux image config and the tree's built
//! packages (the last `keel build`'s `out/RPMS`).

use std::path::Path;

use anyhow::Context as _;

use super::Context;
use crate::exit_codes;

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// The image config (Azure Linux's JSON format), with its package lists beside it
    pub config: std::path::PathBuf,
    /// Which of its SystemConfigs to build [default: the first]
    #[arg(long)]
    pub system: Option<String>,
}

pub fn run(ctx: &Context, args: ImageArgs) -> anyhow::Result<i32> {
    let tree = crate::tree::require(ctx.tree.as_ref())?;
    let config = keel_image::load_config(&args.config)?;
    let system = match &args.system {
        Some(s) => s.clone(),
        None => config
            .systems
            .first()
            .map(|s| s.name.clone())
            .with_context(|| format!("{} has no SystemConfigs", args.config.display()))?,
    };
    let rpms = crate::commands::run::built_rpms(&tree.root.join("out"))?;
    // The image's times: those `keel build` gives the image (its packages' newest
    // changelog entry), so both make the same bytes; the tree's newest when its packages
    // are not all the tree's.
    let store = ctx.open_store()?;
    let loaded = crate::tree::load_with(tree, Some(&store))?;
    let packages = config
        .system(&system)
        .map(|s| s.packages.clone())
        .unwrap_or_default();
    let shown = args.config.display().to_string();
    let repos = crate::build::images::ExternalRepos::read(tree, &store, &loaded.graph)?;
    let mut rpms = rpms;
    for path in repos.files() {
        let info = keel_toolchain::read_rpm(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        rpms.push((path.clone(), info));
    }
    let sde = match keel_rules::images::image_closure(&loaded.graph, &shown, &packages, &|c| {
        repos.provides(c)
    }) {
        Ok(c) => crate::build::images::source_date_epoch(&loaded, &c),
        Err(_) => loaded
            .specs
            .iter()
            .filter_map(|s| s.source.changelog_newest)
            .max()
            .unwrap_or(0),
    };
    let sde = u64::try_from(sde).unwrap_or(0);
    let stem = args
        .config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let out_dir = tree.root.join("out").join("images").join(&stem);
    std::fs::create_dir_all(store.root().join("tmp"))?;
    let work = tempfile::Builder::new()
        .prefix("image-")
        .tempdir_in(store.root().join("tmp"))
        .context("failed to create a work directory")?;
    drop(store);
    ctx.out
        .status(&format!("{:>12} {stem} ({system})", "Assembling"));
    let out = keel_image::build_image(&config, &system, &rpms, work.path(), &out_dir, sde)
        .with_context(|| format!("failed to build the image {}", args.config.display()))?;
    for a in &out.artifacts {
        ctx.out.line(&rel(&tree.root, a))?;
    }
    ctx.out.line(&rel(&tree.root, &out.manifest))?;
    Ok(exit_codes::SUCCESS)
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}
