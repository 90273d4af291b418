//! The on-disk half of the `%(shell)` cache, so a warm read forks nothing across processes.
//!
//! A [`ShellRunner`](crate::ShellRunner) keeps results in memory for the life of the
//! process; with [`EngineConfig::shell_cache_dir`](crate::EngineConfig) set it also loads
//! and saves them in one file per *context* in that directory. The context is everything
//! besides the command text that can change a command's output and that keel knows about:
//! the shell and its arguments, the containment wrapper, how the command is passed, the
//! working directory and the whole process environment (sorted). Its full text is stored
//! in the file and compared on load, so the 64-bit hash that names the file only picks the
//! file; it never decides a hit.
//!
//! A command run for a spec is keyed on a stamp of the spec's directory too
//! ([`ShellRunner::run_scoped`](crate::ShellRunner::run_scoped)), and a contained runner's
//! context names the build root it sees (its `identity`), so `%(cat VERSION)` beside the
//! spec runs again when `VERSION` changes. What the key still cannot see: the clock
//! (`%(date)`), and, for an uncontained runner, files elsewhere on the machine.
//!
//! Format (all lengths are decimal byte counts, so any bytes can be stored):
//!
//! ```text
//! keel-shell-cache 1\n
//! <context length>\n<context>\n
//! <command length> <output length>\n<command><output>\n     (once per entry)
//! end <hash of everything above>\n
//! ```
//!
//! Writes go to a temporary file in the same directory that is renamed over the old one,
//! so readers see the old or the new file, never half of one. A file that does not parse,
//! whose trailing hash does not match, or whose context differs is ignored with a warning
//! and replaced on the next write. A failed write is a warning, never an error: the cache
//! only saves time.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &str = "keel-shell-cache 1\n";

/// A stable 64-bit hash (SipHash with fixed keys; a change between Rust releases only
/// renames the files, and hits are decided on full text anyway).
pub(crate) fn hash64(bytes: &[u8]) -> u64 {
    #[expect(deprecated, reason = "SipHasher is the stable fixed-key hasher in std")]
    let mut h = std::hash::SipHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Everything besides the command text that the cache key covers, as text.
/// `env` is the command's own environment when the runner sets one (then keel's is not
/// part of the context, and never written to the cache file); `identity` what else the
/// command can see (the build root's fingerprint).
pub(crate) fn context(
    argv: &[String],
    wrapper: &[String],
    pass_in_env: bool,
    env: Option<&[(String, String)]>,
    identity: &str,
) -> String {
    let mut s = String::new();
    for (what, list) in [("shell", argv), ("wrapper", wrapper)] {
        s.push_str(what);
        for a in list {
            s.push('\0');
            s.push_str(a);
        }
        s.push('\n');
    }
    s.push_str(if pass_in_env { "in-env\n" } else { "in-argv\n" });
    s.push_str("cwd\0");
    if let Ok(d) = std::env::current_dir() {
        s.push_str(&d.to_string_lossy());
    }
    s.push('\n');
    s.push_str("identity\0");
    s.push_str(identity);
    s.push('\n');
    let mut env: Vec<(String, String)> = match env {
        Some(env) => env.to_vec(),
        None => std::env::vars_os()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect(),
    };
    env.sort();
    for (k, v) in env {
        s.push_str("env\0");
        s.push_str(&k);
        s.push('\0');
        s.push_str(&v);
        s.push('\n');
    }
    s
}

/// The cache file for `context` in `dir`.
pub(crate) fn file_for(dir: &Path, context: &str) -> PathBuf {
    dir.join(format!("shell-{:016x}.cache", hash64(context.as_bytes())))
}

/// Why a cache file was ignored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("failed to read shell cache {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ignoring corrupt shell cache {} ({why}); it will be rebuilt", path.display())]
    Corrupt { path: PathBuf, why: &'static str },
    #[error("ignoring shell cache {}: written for another shell or environment", path.display())]
    OtherContext { path: PathBuf },
}

/// Loads the entries of `path` for `context`. A missing file is an empty cache.
pub(crate) fn load(path: &Path, context: &str) -> Result<HashMap<String, String>, LoadError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(source) => {
            return Err(LoadError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |why| LoadError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let (file_ctx, entries) = parse(&bytes).map_err(corrupt)?;
    if file_ctx != context {
        return Err(LoadError::OtherContext {
            path: path.to_path_buf(),
        });
    }
    Ok(entries)
}

/// Parses a whole file into its context and entries.
fn parse(bytes: &[u8]) -> Result<(String, HashMap<String, String>), &'static str> {
    let rest = bytes.strip_prefix(MAGIC.as_bytes()).ok_or("bad header")?;
    // the trailer: "end <hash>\n" after the last newline before it
    let body_len = bytes.len() - rest.len();
    let trailer_at = rest[..rest.len().saturating_sub(1)]
        .iter()
        .rposition(|&c| c == b'\n')
        .map(|p| p + 1)
        .ok_or("no trailer")?;
    let trailer = std::str::from_utf8(&rest[trailer_at..]).map_err(|_| "bad trailer")?;
    let want = trailer
        .strip_prefix("end ")
        .and_then(|t| t.strip_suffix('\n'))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or("bad trailer")?;
    if hash64(&bytes[..body_len + trailer_at]) != want {
        return Err("checksum mismatch");
    }
    let mut r = Reader {
        b: &rest[..trailer_at],
    };
    let n = r.number(b'\n')?;
    let ctx = r.text(n)?;
    r.expect(b'\n')?;
    let mut entries = HashMap::new();
    while !r.b.is_empty() {
        let nc = r.number(b' ')?;
        let no = r.number(b'\n')?;
        let cmd = r.text(nc)?;
        let out = r.text(no)?;
        r.expect(b'\n')?;
        entries.insert(cmd, out);
    }
    Ok((ctx, entries))
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn number(&mut self, end: u8) -> Result<usize, &'static str> {
        let p = self.b.iter().position(|&c| c == end).ok_or("truncated")?;
        let n = std::str::from_utf8(&self.b[..p])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad length")?;
        self.b = &self.b[p + 1..];
        Ok(n)
    }

    fn text(&mut self, n: usize) -> Result<String, &'static str> {
        if n > self.b.len() {
            return Err("truncated");
        }
        let s = std::str::from_utf8(&self.b[..n]).map_err(|_| "not UTF-8")?;
        self.b = &self.b[n..];
        Ok(s.to_string())
    }

    fn expect(&mut self, c: u8) -> Result<(), &'static str> {
        match self.b.split_first() {
            Some((&x, rest)) if x == c => {
                self.b = rest;
                Ok(())
            }
            _ => Err("bad separator"),
        }
    }
}

/// Writes `entries` for `context` to `path` atomically (a temporary file renamed over it).
pub(crate) fn save(
    path: &Path,
    context: &str,
    entries: &HashMap<String, String>,
) -> std::io::Result<()> {
    let mut sorted: Vec<(&String, &String)> = entries.iter().collect();
    sorted.sort();
    let mut buf = Vec::new();
    buf.extend_from_slice(MAGIC.as_bytes());
    buf.extend_from_slice(format!("{}\n", context.len()).as_bytes());
    buf.extend_from_slice(context.as_bytes());
    buf.push(b'\n');
    for (cmd, out) in sorted {
        buf.extend_from_slice(format!("{} {}\n", cmd.len(), out.len()).as_bytes());
        buf.extend_from_slice(cmd.as_bytes());
        buf.extend_from_slice(out.as_bytes());
        buf.push(b'\n');
    }
    let h = hash64(&buf);
    buf.extend_from_slice(format!("end {h:016x}\n").as_bytes());
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .map_or("shell".into(), |n| n.to_string_lossy()),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&buf)?;
        drop(f);
        std::fs::rename(&tmp, path)
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_any_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c");
        let mut m = HashMap::new();
        m.insert("echo 'a\nb'".to_string(), "a\nb".to_string());
        m.insert("printf ''".to_string(), String::new());
        m.insert("x 12 3\n".to_string(), "é 1\n2 3".to_string());
        save(&p, "ctx\0with\nnewline", &m).unwrap();
        assert_eq!(load(&p, "ctx\0with\nnewline").unwrap(), m);
        assert!(matches!(
            load(&p, "other"),
            Err(LoadError::OtherContext { .. })
        ));
    }

    #[test]
    fn damaged_files_are_rejected_not_misread() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c");
        let mut m = HashMap::new();
        m.insert("echo hi".to_string(), "hi".to_string());
        save(&p, "ctx", &m).unwrap();
        let good = std::fs::read(&p).unwrap();
        // every truncation and every single-byte change is detected
        for n in 0..good.len() {
            std::fs::write(&p, &good[..n]).unwrap();
            assert!(load(&p, "ctx").is_err(), "truncated to {n}");
            let mut bad = good.clone();
            bad[n] ^= 0x01;
            std::fs::write(&p, &bad).unwrap();
            assert!(load(&p, "ctx").is_err(), "byte {n} flipped");
        }
    }
}
