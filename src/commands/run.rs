//! `keel run -p PKG -- CMD…`: run a command in a sandbox whose root is the runtime
//! closure of built packages over the tree's toolchain — to try what was built without
//! installing it anywhere.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use keel_toolchain::{LayerCache, RpmInfo, SandboxSpec};

use super::Context;
use crate::exit_codes;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Binary packages (from the tree's last build, in `out/RPMS`) whose runtime closure
    /// makes the root
    #[arg(short = 'p', long = "package", required = true)]
    pub packages: Vec<String>,
    /// The command and its arguments
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The built RPMs of the tree, read.
pub fn built_rpms(out: &Path) -> anyhow::Result<Vec<(PathBuf, RpmInfo)>> {
    let mut files = Vec::new();
    crate::build::stamp::walk(&[out.join("RPMS")], &mut files);
    let mut rpms = Vec::new();
    for f in files {
        if f.extension().is_some_and(|e| e == "rpm") {
            let info = keel_toolchain::read_rpm(&f)
                .with_context(|| format!("failed to read {}", f.display()))?;
            rpms.push((f, info));
        }
    }
    anyhow::ensure!(
        !rpms.is_empty(),
        "no built packages in {}: run `keel build` first",
        out.join("RPMS").display()
    );
    Ok(rpms)
}

pub fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<i32> {
    let tree = crate::tree::require(ctx.tree.as_ref())?;
    let store_dir = ctx.store_dir()?;
    let rpms = built_rpms(&tree.root.join("out"))?;
    let toolchain = {
        let store = ctx.open_store()?;
        crate::build::toolchains::resolve(tree, &store)?.toolchain
    };
    // The same closure an image of these packages has, chosen the same way; what no built
    // package provides is the toolchain's.
    let closure = match keel_image::runtime_closure(&args.packages, &rpms) {
        Ok(c) => c.order,
        Err(keel_image::Error::Closure { chain, message, .. }) => anyhow::bail!(
            "{chain}: {message} among the built packages of {} (run `keel build` first)",
            tree.root.join("out/RPMS").display()
        ),
        Err(e) => return Err(e.into()),
    };
    let cache = LayerCache::new(&store_dir.join("layers"));
    let mut layers = Vec::new();
    for i in &closure {
        let (_, layer) = cache
            .layer(&rpms[*i].0)
            .with_context(|| format!("failed to unpack {}", rpms[*i].0.display()))?;
        layers.push(layer);
    }
    let names: Vec<&str> = closure.iter().map(|i| rpms[*i].1.name.as_str()).collect();
    ctx.out.status(&format!(
        "{:>12} in a sandbox of {}",
        "Running",
        names.join(", ")
    ));
    let scratch = tempfile::tempdir().context("failed to create a scratch directory")?;
    let mut spec = SandboxSpec::new(toolchain, scratch.path());
    spec.layers = layers;
    spec.merge_cache = Some(store_dir.join("layers").join("merged"));
    let log = scratch.path().join("output.log");
    // Layers are payloads only: no scriptlet ran. The one every library package's %post
    // runs is ldconfig, and without it the loader would not find libraries in rpm's
    // %_libdir on a host whose loader does not search it (Debian's /usr/lib64).
    let mut argv: Vec<&str> = vec![
        "/bin/sh",
        "-c",
        "ldconfig /usr/lib64 /usr/lib /lib64 2>/dev/null; exec \"$@\"",
        "keel-run",
    ];
    argv.extend(args.command.iter().map(String::as_str));
    let r = keel_toolchain::sandbox::run(&spec, &argv, &log)?;
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    // The command's output, as the command printed it (stdout and stderr interleaved).
    ctx.out.line(output.trim_end_matches('\n'))?;
    Ok(match r.outcome {
        keel_toolchain::Outcome::Exited(0) => exit_codes::SUCCESS,
        other => {
            crate::output::error_line(&format!("error: {} {other:?}", args.command[0]));
            exit_codes::ERROR
        }
    })
}
