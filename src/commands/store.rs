//! `keel store …`: add, cat, hash, stats, verify, gc.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use keel_store::{BlobDigest, CompressHint, GcOptions};
use serde::Serialize;

use super::Context;
use crate::exit_codes;

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Store files (as blobs) and directories (as trees); print each digest like b3sum
    Add {
        /// Files or directories; `-` reads standard input
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Write a blob to standard output (verified before any byte is written)
    Cat {
        /// The blob's digest (64 hex digits, as `keel store add` or b3sum print it)
        digest: String,
    },
    /// Print files' BLAKE3 digests like b3sum, without storing them
    Hash {
        /// Files to hash
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Objects, bytes stored against bytes of content, and hit counters
    Stats,
    /// Re-hash every object; quarantine and report damaged ones (exit code 3 if any)
    Verify,
    /// Delete least recently used objects until the store fits a size
    Gc {
        /// The size to shrink to: bytes, or with a suffix K, M, G, T (powers of 1024)
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: u64,
        /// Also delete objects that the newest build of a tree still needs
        #[arg(long)]
        ignore_roots: bool,
    },
}

pub fn run(ctx: &Context, cmd: StoreCommand) -> anyhow::Result<i32> {
    match cmd {
        StoreCommand::Add { paths } => add(ctx, &paths),
        StoreCommand::Cat { digest } => cat(ctx, &digest),
        StoreCommand::Hash { paths } => hash(ctx, &paths),
        StoreCommand::Stats => stats(ctx),
        StoreCommand::Verify => verify(ctx),
        StoreCommand::Gc {
            max_size,
            ignore_roots,
        } => gc(ctx, max_size, ignore_roots),
    }
}

#[derive(Serialize)]
struct Added<'a> {
    path: &'a Path,
    kind: &'static str,
    digest: String,
    size: u64,
}

fn add(ctx: &Context, paths: &[PathBuf]) -> anyhow::Result<i32> {
    let store = ctx.open_store()?;
    for path in paths {
        let (kind, hex, size) = if path == Path::new("-") {
            let d = store
                .put_reader(io::stdin().lock(), CompressHint::Auto)
                .context("failed to store standard input")?;
            ("blob", d.to_hex(), d.size())
        } else {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            if meta.is_dir() {
                let d = store
                    .put_dir(path)
                    .with_context(|| format!("failed to store directory {}", path.display()))?;
                ("tree", d.to_hex(), d.size())
            } else {
                let d = store
                    .put_file(path)
                    .with_context(|| format!("failed to store {}", path.display()))?;
                ("blob", d.to_hex(), d.size())
            }
        };
        if ctx.out.json {
            ctx.out.json_value(&Added {
                path,
                kind,
                digest: hex,
                size,
            })?;
        } else {
            ctx.out.line(&format!("{hex}  {}", path.display()))?;
        }
    }
    store.flush()?;
    Ok(exit_codes::SUCCESS)
}

fn cat(ctx: &Context, digest: &str) -> anyhow::Result<i32> {
    let digest: BlobDigest = digest.parse()?;
    let store = ctx.open_store()?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(1 << 20, stdout.lock());
    store.write_blob_to(&digest, &mut out)?;
    out.flush()?;
    Ok(exit_codes::SUCCESS)
}

fn hash(ctx: &Context, paths: &[PathBuf]) -> anyhow::Result<i32> {
    // Files are hashed one after another (each spread over every thread), like b3sum, so
    // the output order is the argument order.
    for path in paths {
        let d = keel_store::hash_file(path)
            .with_context(|| format!("failed to hash {}", path.display()))?;
        if ctx.out.json {
            ctx.out.json_value(&Added {
                path,
                kind: "blob",
                digest: d.to_hex(),
                size: d.size(),
            })?;
        } else {
            ctx.out
                .line(&format!("{}  {}", d.to_hex(), path.display()))?;
        }
    }
    Ok(exit_codes::SUCCESS)
}

fn stats(ctx: &Context) -> anyhow::Result<i32> {
    let store = ctx.open_store()?;
    let s = store.stats()?;
    if ctx.out.json {
        ctx.out.json_value(&s)?;
        return Ok(exit_codes::SUCCESS);
    }
    let o = &ctx.out;
    o.line(&format!("store      {}", s.root.display()))?;
    for (name, k) in [
        ("blobs", &s.blobs),
        ("trees", &s.trees),
        ("records", &s.records),
    ] {
        o.line(&format!(
            "{name:<10} {:>8} objects  {:>10} stored  {:>10} content",
            k.objects,
            human_bytes(k.stored_bytes),
            human_bytes(k.logical_bytes)
        ))?;
    }
    let (stored, logical) = [&s.blobs, &s.trees, &s.records]
        .iter()
        .fold((0, 0), |(a, b), k| {
            (a + k.stored_bytes, b + k.logical_bytes)
        });
    let ratio = if logical > 0 {
        stored as f64 / logical as f64 * 100.0
    } else {
        100.0
    };
    o.line(&format!(
        "total      {} stored for {} of content ({ratio:.0}%)",
        human_bytes(stored),
        human_bytes(logical)
    ))?;
    o.line(&format!(
        "index      {} action-cache entries, {} stat-cache entries, {} roots, {} quarantined",
        s.action_cache_entries, s.stat_cache_entries, s.roots, s.quarantined
    ))?;
    let c = |n: &str| {
        s.counters
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    let rate = |h: u64, m: u64| {
        if h + m > 0 {
            format!("{:.0}%", h as f64 / (h + m) as f64 * 100.0)
        } else {
            "-".into()
        }
    };
    o.line(&format!(
        "hits       action cache {}/{} ({}), stat cache {}/{} ({})",
        c("ac_hits"),
        c("ac_hits") + c("ac_misses"),
        rate(c("ac_hits"), c("ac_misses")),
        c("stat_hits"),
        c("stat_hits") + c("stat_misses"),
        rate(c("stat_hits"), c("stat_misses"))
    ))?;
    o.line(&format!(
        "writes     {} blobs written, {} already present; {} reads, {} damaged on read",
        c("blobs_written"),
        c("blobs_deduplicated"),
        c("objects_read"),
        c("damaged_on_read")
    ))?;
    Ok(exit_codes::SUCCESS)
}

fn verify(ctx: &Context) -> anyhow::Result<i32> {
    let store = ctx.open_store()?;
    let r = store.verify()?;
    if ctx.out.json {
        ctx.out.json_value(&r)?;
    } else {
        for d in &r.damaged {
            ctx.out.line(&format!(
                "damaged {} {}: {} ({})",
                d.kind,
                d.digest,
                d.why,
                d.path.display()
            ))?;
        }
        for p in &r.quarantined_earlier {
            ctx.out.line(&format!(
                "damaged earlier (found on read, quarantined): {}",
                p.display()
            ))?;
        }
        ctx.out.line(&format!(
            "checked {} objects ({}): {} damaged",
            r.checked,
            human_bytes(r.checked_bytes),
            r.damaged.len() + r.quarantined_earlier.len()
        ))?;
    }
    Ok(if r.is_clean() {
        exit_codes::SUCCESS
    } else {
        exit_codes::DAMAGED
    })
}

fn gc(ctx: &Context, max_bytes: u64, ignore_roots: bool) -> anyhow::Result<i32> {
    let store = ctx.open_store()?;
    // A build stamp and the build state beside it (`stamp-*.state`) vouch that the cache
    // holds a build's results; gc may remove them.
    for e in std::fs::read_dir(store.root().join("builds"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("stamp-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let r = store.gc(&GcOptions {
        max_bytes,
        keep_roots: !ignore_roots,
    })?;
    if ctx.out.json {
        ctx.out.json_value(&r)?;
    } else {
        ctx.out.line(&format!(
            "removed {} objects ({}); kept {} ({}), {} of them for the newest builds",
            r.removed_objects,
            human_bytes(r.removed_bytes),
            r.kept_objects,
            human_bytes(r.kept_bytes),
            r.kept_for_roots
        ))?;
        if r.kept_bytes > max_bytes {
            ctx.out.status(&format!(
                "warning: the store is still above {}: the newest builds need that much (--ignore-roots deletes them too)",
                human_bytes(max_bytes)
            ));
        }
    }
    Ok(exit_codes::SUCCESS)
}

/// Parses `123`, `10K`, `1.5G`, `2GiB` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (try 500M or 10G)"))?;
    let mult: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("`{s}` has an unknown unit (use K, M, G or T)")),
    };
    Ok((n * mult as f64) as u64)
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("10K"), Ok(10240));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("3X").is_err());
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
