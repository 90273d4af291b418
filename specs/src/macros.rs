//! The macro engine: rpm's macro language with its scoping, argument and built-in rules.
//!
//! A [`MacroTable`] is a plain map of macro name to a stack of definitions; it is built once
//! per process from macro files ([`MacroTable::load_file`]) and cloned per spec (definitions
//! are shared `Arc`s, so a clone copies only the map). An [`Engine`] owns one table while a
//! spec is read and expands text with it; `%{lua:}` and `%(shell)` go through the hooks in
//! [`EngineConfig`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::expr;

/// Scope levels, as rpm numbers them.
pub const LEVEL_MACROFILES: i32 = -13;
pub const LEVEL_RPMRC: i32 = -11;
pub const LEVEL_CMDLINE: i32 = -7;
pub const LEVEL_SPEC: i32 = -3;
pub const LEVEL_GLOBAL: i32 = 0;

const MAX_DEPTH: usize = 64;
/// Bound on the size of any single expansion, so an exponential macro chain ends in an error.
const MAX_OUTPUT: usize = 64 << 20;

/// One definition of a macro.
#[derive(Debug, Clone)]
pub struct MacroDef {
    /// getopt option string for parametric macros (`None`: not parametric).
    pub opts: Option<String>,
    pub body: String,
    pub level: i32,
    /// An automatic macro (argument of a parametric macro).
    pub auto: bool,
    /// Expands to its body verbatim.
    pub literal: bool,
}

/// Macro name to its stack of definitions (last is current).
#[derive(Debug, Clone, Default)]
pub struct MacroTable {
    /// Definitions shared by every clone (the loaded macro files).
    base: Arc<Stacks>,
    /// This table's changes: a name present here shadows `base` entirely.
    map: Stacks,
}

const BUILTINS: &[(&str, bool, bool)] = &[
    // name, takes an argument, raw (unexpanded, free-field) argument
    ("P", true, false),
    ("S", true, false),
    ("basename", true, false),
    ("define", true, true),
    ("defined", true, false),
    ("dirname", true, false),
    ("dnl", true, true),
    ("dump", false, false),
    ("echo", true, false),
    ("error", true, false),
    ("exists", true, false),
    ("expand", true, false),
    ("expr", true, false),
    ("getconfdir", false, false),
    ("getenv", true, false),
    ("getncpus", false, false),
    ("global", true, true),
    ("load", true, false),
    ("lua", true, true),
    ("macrobody", true, false),
    ("quote", true, false),
    ("shrink", true, false),
    ("suffix", true, false),
    ("trace", false, false),
    ("u2p", true, false),
    ("undefined", true, false),
    ("shescape", true, false),
    ("uncompress", true, false),
    ("undefine", true, false),
    ("url2path", true, false),
    ("verbose", true, true),
    ("warn", true, false),
];

/// Whether `name` is a built-in macro that takes an argument.
pub fn is_builtin_with_arg(name: &str) -> bool {
    builtin(name).is_some_and(|b| b.0)
}

fn builtin(name: &str) -> Option<(bool, bool)> {
    BUILTINS.iter().find(|b| b.0 == name).map(|b| (b.1, b.2))
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}
fn is_eol(c: u8) -> bool {
    c == b'\n' || c == b'\r'
}

/// Index just past the character matching the opener at `s[i]`, as rpm's `matchchar`.
pub(crate) fn match_char(s: &[u8], i: usize, open: u8, close: u8) -> Option<usize> {
    let mut lvl = 0i32;
    let mut k = i;
    while k < s.len() {
        let c = s[k];
        k += 1;
        if c == b'\\' {
            k += 1;
            continue;
        }
        if c == close {
            lvl -= 1;
            if lvl <= 0 {
                return Some(k);
            }
        } else if c == open {
            lvl += 1;
        }
    }
    None
}

/// End of the macro call starting at `s[i]` (just after the `%`).
fn find_macro_end(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i) {
        Some(b'(') => return match_char(s, i, b'(', b')'),
        Some(b'{') => return match_char(s, i, b'{', b'}'),
        Some(b'[') => return match_char(s, i, b'[', b']'),
        _ => {}
    }
    let mut k = i;
    while k < s.len() && (s[k] == b'?' || s[k] == b'!') {
        k += 1;
    }
    if s.get(k) == Some(&b'-') {
        k += 1;
    }
    while k < s.len() && (s[k].is_ascii_alphanumeric() || s[k] == b'_') {
        k += 1;
    }
    if s.get(k) == Some(&b'*') && s.get(k + 1) == Some(&b'*') {
        k += 2;
    } else if matches!(s.get(k), Some(b'*') | Some(b'#')) {
        k += 1;
    }
    Some(k)
}

/// Splits the way rpm's `splitQuoted` does (0x1f marks quoted stretches).
fn split_quoted(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut had = false;
    for c in s.chars() {
        if c == '\x1f' {
            quoted = !quoted;
            had = true;
            continue;
        }
        if !quoted && (c == ' ' || c == '\t') {
            if !cur.is_empty() || had {
                out.push(std::mem::take(&mut cur));
            }
            had = false;
            continue;
        }
        cur.push(c);
    }
    if !cur.is_empty() || had {
        out.push(cur);
    }
    out
}

/// Options found (with their arguments) and the remaining operands.
pub(crate) type Parsed = (Vec<(char, Option<String>)>, Vec<String>);

/// GNU getopt over `args[1..]` (permuting, `--` ends options). Returns the options found
/// and the remaining operands, or the unknown option character.
pub(crate) fn getopt(args: &[String], opts: &str) -> Result<Parsed, char> {
    let mut found = Vec::new();
    let mut operands = Vec::new();
    if opts == "-" {
        return Ok((found, args.iter().skip(1).cloned().collect()));
    }
    let spec: Vec<char> = opts.chars().collect();
    let takes = |c: char| -> Option<bool> {
        let p = spec.iter().position(|&x| x == c && x != ':')?;
        Some(spec.get(p + 1) == Some(&':'))
    };
    let mut i = 1;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            operands.extend(args[i + 1..].iter().cloned());
            break;
        }
        if a.len() > 1 && a.starts_with('-') {
            let cs: Vec<char> = a.chars().skip(1).collect();
            let mut k = 0;
            while k < cs.len() {
                let c = cs[k];
                match takes(c) {
                    None => return Err(c),
                    Some(false) => found.push((c, None)),
                    Some(true) => {
                        let rest: String = cs[k + 1..].iter().collect();
                        if !rest.is_empty() {
                            found.push((c, Some(rest)));
                        } else if i + 1 < args.len() {
                            i += 1;
                            found.push((c, Some(args[i].clone())));
                        } else {
                            return Err(c);
                        }
                        break;
                    }
                }
                k += 1;
            }
        } else {
            operands.push(a.clone());
        }
        i += 1;
    }
    Ok((found, operands))
}

type Stacks = HashMap<String, Vec<Arc<MacroDef>>>;

impl MacroTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<MacroDef>> {
        match self.map.get(name) {
            Some(v) => v.last(),
            None => self.base.get(name).and_then(|v| v.last()),
        }
    }

    pub fn is_defined(&self, name: &str) -> bool {
        self.get(name).is_some() || builtin(name).is_some()
    }

    pub fn push(&mut self, name: &str, opts: Option<&str>, body: &str, level: i32) {
        self.push_def(
            name,
            MacroDef {
                opts: opts.map(str::to_string),
                body: body.to_string(),
                level,
                auto: false,
                literal: false,
            },
        );
    }

    pub fn push_literal(&mut self, name: &str, body: &str, level: i32) {
        self.push_def(
            name,
            MacroDef {
                opts: None,
                body: body.to_string(),
                level,
                auto: false,
                literal: true,
            },
        );
    }

    /// The overlay stack for `name`, copied from the shared base on first change.
    fn stack_mut(&mut self, name: &str) -> &mut Vec<Arc<MacroDef>> {
        // `entry` would allocate the key on every push; most pushes hit an existing stack
        if !self.map.contains_key(name) {
            let copy = self.base.get(name).cloned().unwrap_or_default();
            self.map.insert(name.to_string(), copy);
        }
        match self.map.get_mut(name) {
            Some(v) => v,
            None => unreachable!("the overlay stack for {name} was just inserted"),
        }
    }

    fn push_def(&mut self, name: &str, def: MacroDef) {
        self.stack_mut(name).push(Arc::new(def));
    }

    pub fn pop(&mut self, name: &str) {
        if self.get(name).is_some() {
            // an empty overlay stack hides the base entry
            self.stack_mut(name).pop();
        }
    }

    /// Moves every change into the shared base, so clones of this table (one per spec)
    /// copy only what that spec changes.
    pub fn freeze(&mut self) {
        if self.map.is_empty() {
            return;
        }
        let mut base: Stacks = (*self.base).clone();
        for (k, v) in self.map.drain() {
            if v.is_empty() {
                base.remove(&k);
            } else {
                base.insert(k, v);
            }
        }
        self.base = Arc::new(base);
    }

    /// Number of distinct names defined.
    pub fn len(&self) -> usize {
        let hidden = self
            .map
            .iter()
            .filter(|(k, v)| v.is_empty() && self.base.contains_key(*k))
            .count();
        let added = self
            .map
            .iter()
            .filter(|(k, v)| !v.is_empty() && !self.base.contains_key(*k))
            .count();
        self.base.len() + added - hidden
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads a macro file the way rpm does: logical lines (with `\` continuations and open
    /// braces) that start with `%` are definitions; everything else is ignored. Bodies are
    /// not expanded (except `%global` ones, through `engine_cfg`).
    pub fn load_file(&mut self, path: &Path, cfg: &EngineConfig) -> std::io::Result<Vec<String>> {
        let bytes = std::fs::read(path)?;
        let text = String::from_utf8_lossy(&bytes);
        let table = std::mem::take(self);
        let mut eng = Engine::new(table, cfg.clone());
        eng.table
            .push_literal("__file_name", &path.to_string_lossy(), LEVEL_MACROFILES);
        for (_line, logical) in logical_lines(&text) {
            let t = logical.trim_start_matches([' ', '\t']);
            if let Some(rest) = t.strip_prefix('%') {
                eng.define(rest, LEVEL_MACROFILES, false, true);
                eng.error = false;
            }
        }
        eng.table.pop("__file_name");
        let diags = std::mem::take(&mut eng.diagnostics);
        *self = eng.table;
        Ok(diags)
    }
}

/// Splits a macro file into logical lines as rpm's `rdcl` does.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.split('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let start = i + 1;
        let mut buf = String::new();
        let (mut bc, mut pc, mut xc) = (0i32, 0i32, 0i32);
        let mut first = true;
        loop {
            if i >= lines.len() {
                break;
            }
            let l = lines[i].trim_end_matches(['\r']);
            i += 1;
            let scan_from = buf.len();
            buf.push_str(l);
            if first {
                first = false;
                if !buf.trim_start_matches([' ', '\t']).starts_with('%') {
                    break;
                }
            }
            let b = buf.as_bytes();
            let mut p = scan_from;
            while p < b.len() {
                match b[p] {
                    b'\\' if p + 1 < b.len() => {
                        p += 1;
                    }
                    b'%' => match b.get(p + 1) {
                        Some(b'{') => {
                            p += 1;
                            bc += 1
                        }
                        Some(b'(') => {
                            p += 1;
                            pc += 1
                        }
                        Some(b'[') => {
                            p += 1;
                            xc += 1
                        }
                        Some(b'%') => p += 1,
                        _ => {}
                    },
                    b'{' if bc > 0 => bc += 1,
                    b'}' if bc > 0 => bc -= 1,
                    b'(' if pc > 0 => pc += 1,
                    b')' if pc > 0 => pc -= 1,
                    b'[' if xc > 0 => xc += 1,
                    b']' if xc > 0 => xc -= 1,
                    _ => {}
                }
                p += 1;
            }
            if !buf.ends_with('\\') && bc == 0 && pc == 0 && xc == 0 {
                break;
            }
            buf.push('\n');
        }
        out.push((start, buf));
    }
    out
}

/// Runs `%(...)` commands. Results are cached by command text.
#[derive(Debug)]
pub struct ShellRunner {
    /// The shell program and its arguments before the command (`["/bin/sh", "-c"]`).
    pub argv: Vec<String>,
    pub timeout: Duration,
    /// Optional containment wrapper prepended to argv (e.g. a bwrap command line).
    pub wrapper: Vec<String>,
    /// Pass the command in `$KEEL_SHELL_CMD` instead of as the last argument.
    pub pass_in_env: bool,
    /// The command's whole environment; `None` passes keel's own (rpm's behaviour). A
    /// contained runner sets it so no `KEEL_*` variable (a remote token) reaches a spec.
    pub env: Option<Vec<(String, String)>>,
    /// With a wrapper: bind the calling spec's directory read-only at its own path and run
    /// the command there, when the command names that directory (the rest of the view is
    /// the wrapper's); a command that does not name it runs in `/` and is keyed on its
    /// text alone.
    pub bind_scope: bool,
    /// What else the command can see that the key must cover: the build root's identity
    /// (a toolchain fingerprint). Part of the persistent cache's context.
    pub identity: String,
    /// More of the root, made the first time a command runs (see [`LazyView`]); its
    /// arguments go right after the wrapper's program. Not part of the persistent cache's
    /// context (a staged directory's name differs in every process): `identity` covers
    /// what it shows.
    pub view: Option<LazyView>,
    /// Results by [`ShellRunner::key`] (the command, and the stamp of the directory it
    /// can read).
    cache: Mutex<HashMap<String, String>>,
    /// Directory stamps computed by this runner (a tree does not change during a read).
    stamps: Mutex<HashMap<PathBuf, String>>,
    /// The cache file in use, once a caller passed a directory (see [`crate::shell_cache`]).
    disk: Mutex<Option<DiskCache>>,
    /// Commands started (cache misses), for tests and reports.
    spawned: AtomicUsize,
}

#[derive(Debug)]
struct DiskCache {
    dir: PathBuf,
    file: PathBuf,
    context: String,
}

impl ShellRunner {
    pub fn new(argv: Vec<String>, timeout: Duration) -> Self {
        ShellRunner {
            argv,
            timeout,
            wrapper: Vec::new(),
            pass_in_env: false,
            env: None,
            bind_scope: false,
            identity: String::new(),
            view: None,
            cache: Mutex::new(HashMap::new()),
            stamps: Mutex::new(HashMap::new()),
            disk: Mutex::new(None),
            spawned: AtomicUsize::new(0),
        }
    }

    /// How many commands this runner has started (every other call was a cache hit).
    pub fn spawned(&self) -> usize {
        self.spawned.load(Ordering::Relaxed)
    }

    /// Output of the command with trailing newlines removed, cached for the life of the
    /// runner.
    pub fn run(&self, cmd: &str) -> Result<String, String> {
        self.run_cached(cmd, None)
    }

    /// Like [`ShellRunner::run`], and with `cache_dir` the results also persist in a file
    /// there, so another process with the same shell, environment and working directory
    /// runs nothing it has seen (see [`crate::shell_cache`]). A damaged or unreadable cache
    /// file is a warning and a miss; a failed write is a warning.
    pub fn run_cached(&self, cmd: &str, cache_dir: Option<&Path>) -> Result<String, String> {
        self.run_scoped(cmd, cache_dir, None)
    }

    /// Like [`ShellRunner::run_cached`] for a command a spec in `scope` runs: the result
    /// is keyed on the command and on a stamp of every file under `scope` (path, type,
    /// size, modification and change times, inode), so a command reading a file beside
    /// its spec runs again when that file changes.
    pub fn run_scoped(
        &self,
        cmd: &str,
        cache_dir: Option<&Path>,
        scope: Option<&Path>,
    ) -> Result<String, String> {
        if let Some(dir) = cache_dir {
            self.attach(dir);
        }
        // A contained command sees the spec's directory only when its text names it: one
        // that does not (`getconf _NPROCESSORS_ONLN`, `python3 -c …` from a macro file)
        // runs where it sees nothing of the tree, so its result depends on its text alone
        // and is shared by every spec, instead of running once per spec directory.
        let scope = scope.filter(|dir| !self.bind_scope || names_dir(cmd, dir));
        let key = match scope {
            Some(dir) => format!("{}\0{cmd}", self.stamp(dir)),
            None => cmd.to_owned(),
        };
        if let Some(v) = self.cache.lock().map_err(|e| e.to_string())?.get(&key) {
            return Ok(v.clone());
        }
        let out = self.spawn(cmd, scope)?;
        if let Ok(mut mem) = self.cache.lock() {
            mem.insert(key, out.clone());
        }
        // lock order: disk, then cache (as in `attach`)
        if let Ok(disk) = self.disk.lock()
            && let Some(d) = disk.as_ref()
        {
            let all = match self.cache.lock() {
                Ok(mem) => mem.clone(),
                Err(_) => return Ok(out),
            };
            if let Err(e) = crate::shell_cache::save(&d.file, &d.context, &all) {
                tracing::warn!("failed to write shell cache {}: {e}", d.file.display());
            }
        }
        Ok(out)
    }

    /// Loads the cache file for `dir` the first time it is asked for.
    fn attach(&self, dir: &Path) {
        let Ok(mut disk) = self.disk.lock() else {
            return;
        };
        if disk.as_ref().is_some_and(|d| d.dir == dir) {
            return;
        }
        let context = crate::shell_cache::context(
            &self.argv,
            &self.wrapper,
            self.pass_in_env,
            self.env.as_deref(),
            &self.identity,
        );
        let file = crate::shell_cache::file_for(dir, &context);
        match crate::shell_cache::load(&file, &context) {
            Ok(entries) => {
                if let Ok(mut mem) = self.cache.lock() {
                    for (k, v) in entries {
                        mem.entry(k).or_insert(v);
                    }
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
        *disk = Some(DiskCache {
            dir: dir.to_path_buf(),
            file,
            context,
        });
    }

    /// The stamp of everything under `dir`, computed once per runner.
    fn stamp(&self, dir: &Path) -> String {
        if let Ok(stamps) = self.stamps.lock()
            && let Some(s) = stamps.get(dir)
        {
            return s.clone();
        }
        let s = dir_stamp(dir);
        if let Ok(mut stamps) = self.stamps.lock() {
            stamps.insert(dir.to_owned(), s.clone());
        }
        s
    }

    fn spawn(&self, cmd: &str, scope: Option<&Path>) -> Result<String, String> {
        self.spawned.fetch_add(1, Ordering::Relaxed);
        let mut argv: Vec<String> = self.wrapper.clone();
        if let Some(view) = &self.view {
            let at = argv.len().min(1);
            argv.splice(at..at, view.args()?.iter().cloned());
        }
        if self.bind_scope
            && let Some(dir) = scope
            && argv.last().is_some_and(|a| a == "--")
        {
            // At the path the spec names it by (`%{_sourcedir}`), relative to keel's cwd
            // or not.
            let real = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
            let seen = std::path::absolute(dir).unwrap_or_else(|_| real.clone());
            let (real, seen) = (
                real.to_string_lossy().into_owned(),
                seen.to_string_lossy().into_owned(),
            );
            argv.pop();
            argv.extend([
                "--ro-bind".into(),
                real,
                seen.clone(),
                "--chdir".into(),
                seen,
                "--".into(),
            ]);
        }
        if self.bind_scope && scope.is_none() && argv.last().is_some_and(|a| a == "--") {
            argv.pop();
            argv.extend(["--chdir".into(), "/".into(), "--".into()]);
        }
        argv.extend(self.argv.iter().cloned());
        if !self.pass_in_env {
            argv.push(cmd.to_string());
        }
        let mut c = std::process::Command::new(&argv[0]);
        if let Some(env) = &self.env {
            c.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        }
        if self.pass_in_env {
            c.env("KEEL_SHELL_CMD", cmd);
        }
        c.args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        // Its own process group, so a timeout can take down everything it started.
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let mut child = c
            .spawn()
            .map_err(|e| format!("Failed to open shell expansion pipe for command: {cmd}: {e}"))?;
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
            let _ = tx.send(v);
        });
        // The pipe closes when the command and everything holding its stdout are gone.
        let out = match rx.recv_timeout(self.timeout) {
            Ok(v) => v,
            Err(_) => {
                kill_group(child.id());
                let _ = child.wait();
                return Err(format!(
                    "shell expansion timed out after {:?}: {cmd}",
                    self.timeout
                ));
            }
        };
        let _ = child.wait();
        // Leave nothing behind (daemonized children that closed stdout).
        kill_group(child.id());
        let mut s = String::from_utf8_lossy(&out).into_owned();
        while s.ends_with('\n') || s.ends_with('\r') {
            s.pop();
        }
        Ok(s)
    }
}

/// What a view is made of: bubblewrap arguments, and what they name that must live as
/// long as they are used (a staged directory, removed when dropped).
pub type MadeView = (Vec<String>, Box<dyn std::any::Any + Send + Sync>);

/// The part of a contained runner's root that costs something to make (a staged copy of
/// the host's `/etc`: hundreds of files), made the first time a command runs and kept
/// until the runner is dropped. Most reads of a tree run nothing — every result comes
/// from the persistent cache — and then nothing is made.
pub struct LazyView {
    make: Box<dyn Fn() -> Result<MadeView, String> + Send + Sync>,
    made: std::sync::OnceLock<Result<MadeView, String>>,
}

impl LazyView {
    pub fn new(make: impl Fn() -> Result<MadeView, String> + Send + Sync + 'static) -> Self {
        LazyView {
            make: Box::new(make),
            made: std::sync::OnceLock::new(),
        }
    }

    /// The view's arguments, made on first use; a failure to make it is the same error
    /// for every command.
    pub fn args(&self) -> Result<&[String], String> {
        match self.made.get_or_init(|| (self.make)()) {
            Ok((args, _)) => Ok(args),
            Err(e) => Err(e.clone()),
        }
    }
}

impl std::fmt::Debug for LazyView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyView")
            .field("made", &self.made.get().map(|r| r.as_ref().map(|(a, _)| a)))
            .finish()
    }
}

/// Whether `cmd` names `dir` (as given, absolute or resolved): the only ways a command
/// can reach a directory that is bound for it alone.
fn names_dir(cmd: &str, dir: &Path) -> bool {
    let spellings = [
        Some(dir.to_owned()),
        std::path::absolute(dir).ok(),
        dir.canonicalize().ok(),
    ];
    spellings.into_iter().flatten().any(|d| {
        let d = d.to_string_lossy();
        let d = d.trim_end_matches('/');
        !d.is_empty() && cmd.contains(d)
    })
}

/// A stamp of every entry under `dir` (sorted relative path, type, size, modification
/// and change times in nanoseconds, inode): any write, replacement, addition or removal
/// changes it. An unreadable directory stamps as such.
pub fn dir_stamp(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            out.push(format!("unreadable {}", dir.display()));
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            out.push(format!(
                "{rel}\0{:o} {} {}.{} {}.{} {}",
                m.mode(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                m.ino()
            ));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut lines = Vec::new();
    walk(dir, dir, &mut lines);
    lines.sort();
    let mut s = format!("{}\n", dir.display());
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    // The stamp is part of every key; a hash keeps keys short.
    format!("{:016x}", crate::shell_cache::hash64(s.as_bytes()))
}

fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// What an engine needs from its surroundings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub shell: Arc<ShellRunner>,
    /// Lua `package.path`.
    pub lua_path: String,
    /// Modules `require` finds by name when `package.path` has none: name -> Lua file.
    pub lua_modules: std::collections::BTreeMap<String, PathBuf>,
    /// The rpm configuration directory (`%{getconfdir}`).
    pub confdir: PathBuf,
    /// Limits for specs nobody should trust; `None` behaves like rpm (full rights).
    pub containment: Option<Arc<Containment>>,
    /// Where `%(shell)` results persist between processes (`None`: in memory only); see
    /// [`crate::shell_cache`].
    pub shell_cache_dir: Option<PathBuf>,
}

/// What reading an untrusted spec may do.
///
/// `%(shell)` runs under bubblewrap (read-only root, private `/tmp` as scratch, no
/// network, its own session, killed with keel), with the shell runner's wall-clock limit
/// and a virtual memory limit; Lua gets a memory limit and a wall-clock limit and loses
/// `os.execute` and `io.popen`, and writes only in its scratch directory (what
/// `os.tmpname` names: specs such as netcf's keep a patch list there); `%include` and
/// `%{load:}` must resolve inside `roots`.
#[derive(Debug, Clone)]
pub struct Containment {
    pub roots: Vec<PathBuf>,
    pub lua_memory: usize,
    pub lua_timeout: Duration,
    /// Where contained Lua may write; usually `Default::default()`.
    pub scratch: Arc<Scratch>,
}

/// A contained Lua's private scratch directory, in place of the system's `/tmp` that
/// rpm's `os.tmpname` uses: made on first use, removed with the last holder (so a path
/// a spec wrote there never outlives keel).
#[derive(Debug, Default)]
pub struct Scratch(std::sync::OnceLock<Result<tempfile::TempDir, String>>);

impl Scratch {
    /// The directory, made on first use.
    pub fn dir(&self) -> Result<&Path, String> {
        self.0
            .get_or_init(|| {
                tempfile::Builder::new()
                    .prefix("keel-lua-")
                    .tempdir()
                    .map_err(|e| format!("failed to make a scratch directory for Lua: {e}"))
            })
            .as_ref()
            .map(|d| d.path())
            .map_err(Clone::clone)
    }

    /// Whether `p` names something inside the directory: lexically, with no `..`, so
    /// neither a parent step nor a made-up prefix leaves it.
    pub fn holds(&self, p: &Path) -> bool {
        use std::path::Component;
        let Ok(dir) = self.dir() else {
            return false;
        };
        p.strip_prefix(dir).is_ok_and(|rest| {
            rest.components().next().is_some()
                && rest.components().all(|c| matches!(c, Component::Normal(_)))
        })
    }
}

impl Containment {
    /// Whether `p` (resolved) lies inside one of the roots.
    pub fn allows(&self, p: &Path) -> bool {
        let Ok(real) = p.canonicalize() else {
            return false;
        };
        self.roots
            .iter()
            .any(|r| r.canonicalize().is_ok_and(|r| real.starts_with(r)))
    }
}

/// The environment of a contained `%(shell)`: the one keel's build sandbox gives a build
/// (rpm adds nothing of its own), so a command sees here what it sees under rpmbuild.
pub const CONTAINED_ENV: [(&str, &str); 4] = [
    ("PATH", "/usr/bin:/bin:/usr/sbin:/sbin"),
    ("HOME", "/tmp"),
    ("LANG", "C.UTF-8"),
    ("TZ", "UTC"),
];

/// An environment variable as a spec sees it: read contained, only [`CONTAINED_ENV`] (what
/// a build sees), so `%{getenv:}`, Lua's `os.getenv` and `posix.getenv` can no more carry a
/// `KEEL_*` secret or a developer's variable into a graph than `%(env)` can; otherwise the
/// process's own.
pub fn spec_env(contained: bool, name: &str) -> Option<String> {
    if contained {
        CONTAINED_ENV
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    } else {
        std::env::var(name).ok()
    }
}

impl ShellRunner {
    /// A runner that executes every command inside bubblewrap with no network, a read-only
    /// view of the filesystem, a private scratch `/tmp`, and `mem_kib` of address space.
    pub fn contained(timeout: Duration, mem_kib: u64) -> Self {
        let view = ["--ro-bind", "/", "/"].map(String::from);
        Self::contained_in(&view, "/bin/sh", timeout, mem_kib)
    }

    /// A runner whose commands see only `view` (bubblewrap arguments that build the root,
    /// read-only), a private `/tmp` and `/var/tmp`, and the spec's own directory when the
    /// command names it (bound read-only, the working directory; else the working
    /// directory is `/`): no network, no capability whoever runs keel
    /// (`--cap-drop ALL` in a user namespace), [`CONTAINED_ENV`] as the whole environment,
    /// `mem_kib` of address space, killed with keel.
    pub fn contained_in(view: &[String], shell: &str, timeout: Duration, mem_kib: u64) -> Self {
        let mut r = ShellRunner::new(
            vec![
                shell.into(),
                "-c".into(),
                // The command arrives in the environment (no quoting to get wrong) and
                // leaves it before it runs: `%(env)` shows only what rpm would.
                format!(
                    "__keel_cmd=\"$KEEL_SHELL_CMD\"; unset KEEL_SHELL_CMD; ulimit -v {mem_kib} 2>/dev/null; eval \"$__keel_cmd\""
                ),
            ],
            timeout,
        );
        let mut wrapper: Vec<String> = vec!["bwrap".into()];
        wrapper.extend(view.iter().cloned());
        wrapper.extend(
            [
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--tmpfs",
                "/tmp",
                "--tmpfs",
                "/var/tmp",
                "--unshare-all",
                "--cap-drop",
                "ALL",
                "--die-with-parent",
                "--new-session",
                "--",
            ]
            .map(String::from),
        );
        r.wrapper = wrapper;
        r.pass_in_env = true;
        r.bind_scope = true;
        r.env = Some(
            CONTAINED_ENV
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        r
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            shell: Arc::new(ShellRunner::new(
                vec!["/bin/sh".into(), "-c".into()],
                Duration::from_secs(60),
            )),
            lua_path: "/usr/lib/rpm//lua/?.lua".into(),
            lua_modules: Default::default(),
            confdir: PathBuf::from("/usr/lib/rpm"),
            containment: None,
            shell_cache_dir: None,
        }
    }
}

/// An expansion failed; the messages are in [`Engine::diags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

/// A diagnostic: warnings and errors as rpm prints them (without the `error: ` prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diag {
    /// `%{echo:}`: rpm prints it on stdout.
    Notice(String),
    Warning(String),
    Error(String),
}

/// Expands macros with one macro table.
#[derive(Debug)]
pub struct Engine {
    pub table: MacroTable,
    pub cfg: EngineConfig,
    depth: usize,
    level: i32,
    /// Set when an expansion failed; expansion stops at the first error, as in rpm.
    pub error: bool,
    pub diagnostics: Vec<String>,
    pub diags: Vec<Diag>,
    /// Current parametric macro (name, opts, args) for `%{lua:}`'s `opt`/`arg`.
    cur: Option<(String, Option<String>, Vec<String>)>,
    /// (level, name) of every definition pushed above the global level, to pop on return.
    scoped: Vec<(i32, String)>,
    pub(crate) lua: Option<crate::lua::LuaState>,
    /// `SourceN`/`PatchN` entries for the Lua tables, held until a Lua state exists.
    pub(crate) pending_sources: Vec<(bool, String, u32)>,
    /// Extra macro files loaded with `%{load:}`.
    pub loaded: Vec<PathBuf>,
    /// The directory of the spec being read: what its `%(shell)` may read, and part of
    /// each result's cache key (see [`ShellRunner::run_scoped`]).
    pub shell_scope: Option<PathBuf>,
}

impl Engine {
    pub fn new(table: MacroTable, cfg: EngineConfig) -> Self {
        Engine {
            table,
            cfg,
            depth: 0,
            level: 0,
            error: false,
            diagnostics: Vec::new(),
            diags: Vec::new(),
            cur: None,
            scoped: Vec::new(),
            lua: None,
            pending_sources: Vec::new(),
            loaded: Vec::new(),
            shell_scope: None,
        }
    }

    fn err(&mut self, msg: String) {
        let pfx = self.location_prefix();
        self.diags.push(Diag::Error(format!("{pfx}{msg}")));
        self.error = true;
    }

    fn warn(&mut self, msg: String) {
        let pfx = self.location_prefix();
        self.diags.push(Diag::Warning(format!("{pfx}{msg}")));
    }

    fn location_prefix(&self) -> String {
        let mut s = String::new();
        if let Some(f) = self.table.get("__file_name") {
            s.push_str(&f.body);
            s.push_str(": ");
        }
        if let Some(l) = self.table.get("__file_lineno") {
            s.push_str("line ");
            s.push_str(&l.body);
            s.push_str(": ");
        }
        s
    }

    /// Expands `src`; `Err` carries nothing (the messages are in `diags`).
    pub fn expand(&mut self, src: &str) -> Result<String, Failed> {
        self.error = false;
        let mut out = String::new();
        self.expand_into(&mut out, src);
        if self.error { Err(Failed) } else { Ok(out) }
    }

    /// Expands into a fresh buffer, keeping the error flag of the caller's expansion.
    fn expand_this(&mut self, src: &str) -> (String, bool) {
        let saved = self.error;
        self.error = false;
        let mut out = String::new();
        self.expand_into(&mut out, src);
        let failed = self.error;
        self.error = saved || failed;
        (out, failed)
    }

    pub(crate) fn expand_into(&mut self, out: &mut String, src: &str) {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.err("Too many levels of recursion in macro expansion. It is likely caused by recursive macro declaration.".into());
            self.depth -= 1;
            return;
        }
        self.expand_loop(out, src);
        self.depth -= 1;
    }

    fn lookup(&self, name: &str) -> Option<Arc<MacroDef>> {
        let d = self.table.get(name)?;
        if d.auto && self.level > d.level {
            return None;
        }
        Some(d.clone())
    }

    fn expand_loop(&mut self, out: &mut String, src: &str) {
        let s = src.as_bytes();
        let mut i = 0;
        while !self.error && i < s.len() {
            if out.len() > MAX_OUTPUT {
                self.err(format!(
                    "macro expansion exceeds the size limit of {MAX_OUTPUT} bytes"
                ));
                return;
            }
            // copy text up to the next '%'
            let Some(off) = s[i..].iter().position(|&c| c == b'%') else {
                out.push_str(&src[i..]);
                return;
            };
            out.push_str(&src[i..i + off]);
            i += off + 1;
            if i >= s.len() {
                out.push('%');
                return;
            }
            if s[i] == b'%' {
                out.push('%');
                i += 1;
                continue;
            }
            let Some(se) = find_macro_end(s, i) else {
                self.err(format!("Unterminated {}: {}", s[i] as char, &src[i..]));
                return;
            };
            let (mut negate, mut chkexist) = (false, 0);
            let (f, fe, mut g, mut lastc): (usize, usize, Option<(usize, usize)>, Option<usize>);
            match s[i] {
                b'(' => {
                    let cmd = &src[i + 1..se - 1];
                    self.shell(out, cmd);
                    i = se;
                    continue;
                }
                b'[' => {
                    let e = &src[i + 1..se - 1];
                    self.expression(out, e);
                    i = se;
                    continue;
                }
                b'{' => {
                    let mut k = i + 1;
                    while k < s.len() && (s[k] == b'?' || s[k] == b'!') {
                        if s[k] == b'!' {
                            negate = !negate;
                        } else {
                            chkexist += 1;
                        }
                        k += 1;
                    }
                    f = k;
                    let mut e = k;
                    while e < se && !matches!(s[e], b' ' | b':' | b'}') {
                        e += 1;
                    }
                    fe = e;
                    g = None;
                    lastc = None;
                    match s.get(e) {
                        Some(b':') => g = Some((e + 1, se - 1)),
                        Some(b' ') => lastc = Some(se - 1),
                        _ => {}
                    }
                }
                _ => {
                    let mut k = i;
                    while k < s.len() && (s[k] == b'?' || s[k] == b'!') {
                        if s[k] == b'!' {
                            negate = !negate;
                        } else {
                            chkexist += 1;
                        }
                        k += 1;
                    }
                    f = k;
                    fe = se;
                    g = None;
                    lastc = None;
                    if fe < s.len() && is_blank(s[fe]) {
                        lastc = Some(
                            s[fe..]
                                .iter()
                                .position(|&c| c == b'\n')
                                .map_or(s.len(), |p| fe + p),
                        );
                    }
                }
            }
            if fe <= f {
                out.push('%');
                continue;
            }
            let name = &src[f..fe];
            let me = self.lookup(name);
            let bi = if me.is_none() { builtin(name) } else { None };
            if name.starts_with('-') || chkexist > 0 {
                let exists = me.is_some() || bi.is_some();
                if (!exists && !negate) || (exists && negate) {
                    i = se;
                    continue;
                }
                if let Some((gs, ge)) = g.filter(|(a, b)| a < b) {
                    self.expand_into(out, &src[gs..ge]);
                } else if let Some(me) = me {
                    self.do_macro(out, name, &me, None);
                }
                i = se;
                continue;
            }
            if me.is_none() && bi.is_none() {
                out.push('%');
                continue;
            }
            if let Some(me) = me.as_ref().filter(|m| m.opts.is_none()) {
                self.do_macro(out, name, me, None);
                i = se;
                continue;
            }
            if bi.is_none() && fe == se {
                // parametric macro: %name args-to-end-of-line only when followed by blank
            }
            if me.as_ref().is_some_and(|m| m.opts.is_none()) && fe == se {
                lastc = None;
            }
            let mut args = vec![name.to_string()];
            let mut next = se;
            let raw = bi.is_some_and(|b| b.1);
            if raw && fe == se {
                // free-field built-ins (%define/%global/%dnl/...): they consume what they parse
                let rest = &src[se..];
                let consumed = self.builtin_free(out, name, rest);
                next = se + consumed;
            } else {
                if let Some((gs, ge)) = g {
                    next = self.grab_args(&mut args, src, gs, ge, false, raw);
                    g = None;
                } else if let Some(lc) = lastc {
                    next = self.grab_args(&mut args, src, fe, lc, true, raw);
                }
                let _ = g;
                match (me, bi) {
                    (Some(me), _) => self.do_macro(out, name, &me, Some(args)),
                    (None, Some((needarg, _))) => {
                        let nargs = args.len() - 1;
                        if needarg != (nargs > 0) && name != "verbose" {
                            self.err(format!(
                                "%{}: {}",
                                name,
                                if needarg {
                                    "argument expected"
                                } else {
                                    "unexpected argument"
                                }
                            ));
                        } else {
                            self.call_builtin(out, name, &args);
                        }
                    }
                    (None, None) => {}
                }
            }
            i = next;
        }
    }

    fn grab_args(
        &mut self,
        args: &mut Vec<String>,
        src: &str,
        se: usize,
        lastc: usize,
        split: bool,
        raw: bool,
    ) -> usize {
        let s = src.as_bytes();
        let text = &src[se.min(lastc)..lastc];
        if raw {
            args.push(text.to_string());
        } else {
            let (x, _) = self.expand_this(text);
            if split {
                args.extend(split_quoted(&x));
            } else {
                args.push(x);
            }
        }
        if lastc >= s.len() || (s[lastc] == b'\n' && lastc > 0 && s[lastc - 1] != b'\\') {
            lastc
        } else {
            lastc + 1
        }
    }

    fn do_macro(&mut self, out: &mut String, name: &str, me: &MacroDef, args: Option<Vec<String>>) {
        if me.literal {
            out.push_str(&me.body);
            return;
        }
        if me.body.is_empty() {
            return;
        }
        let prev = self.cur.take();
        match args {
            Some(args) => {
                self.level += 1;
                let lvl = self.level;
                let mut autos: Vec<(String, String)> = vec![
                    ("0".into(), name.to_string()),
                    ("**".into(), args[1..].join(" ")),
                ];
                let opts = me.opts.clone().unwrap_or_default();
                match getopt(&args, &opts) {
                    Ok((found, operands)) => {
                        for (c, a) in found {
                            match a {
                                Some(a) => {
                                    autos.push((format!("-{c}"), format!("-{c} {a}")));
                                    autos.push((format!("-{c}*"), a));
                                }
                                None => autos.push((format!("-{c}"), format!("-{c}"))),
                            }
                        }
                        autos.push(("#".into(), operands.len().to_string()));
                        for (k, a) in operands.iter().enumerate() {
                            autos.push(((k + 1).to_string(), a.clone()));
                        }
                        autos.push(("*".into(), operands.join(" ")));
                        for (n, b) in &autos {
                            self.table.push_def(
                                n,
                                MacroDef {
                                    opts: None,
                                    body: b.clone(),
                                    level: lvl,
                                    auto: true,
                                    literal: true,
                                },
                            );
                            self.scoped.push((lvl, n.clone()));
                        }
                        self.cur = Some((name.to_string(), me.opts.clone(), args));
                        self.expand_into(out, &me.body);
                    }
                    Err(c) => {
                        for (n, b) in &autos {
                            self.table.push_def(
                                n,
                                MacroDef {
                                    opts: None,
                                    body: b.clone(),
                                    level: lvl,
                                    auto: true,
                                    literal: true,
                                },
                            );
                            self.scoped.push((lvl, n.clone()));
                        }
                        self.err(format!("Unknown option {c} in {name}({opts})"));
                    }
                }
                // free everything defined at this level or deeper
                while let Some((l, _)) = self.scoped.last() {
                    if *l < lvl {
                        break;
                    }
                    let (_, n) = self.scoped.pop().unwrap_or_default();
                    if self.table.get(&n).is_some_and(|d| d.level >= lvl) {
                        self.table.pop(&n);
                    }
                }
                self.level -= 1;
            }
            None => {
                self.cur = prev.clone();
                self.expand_into(out, &me.body);
            }
        }
        self.cur = prev;
    }

    /// Parses and executes a definition (`name[(opts)] body`). Returns bytes consumed.
    pub fn define(&mut self, src: &str, level: i32, expand_body: bool, parsed: bool) -> usize {
        let s = src.as_bytes();
        let mut i = 0;
        while i < s.len() && is_blank(s[i]) {
            i += 1;
        }
        let ns = i;
        while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
            i += 1;
        }
        let name = src[ns..i].to_string();
        let mut opts = None;
        if i < s.len() && s[i] == b'(' {
            match src[i + 1..].find(')') {
                Some(p) => {
                    opts = Some(src[i + 1..i + 1 + p].to_string());
                    i = i + 1 + p + 1;
                }
                None => {
                    self.err(format!("Macro %{name} has unterminated opts"));
                    return s.len();
                }
            }
        }
        let sbody = i;
        while i < s.len() && is_blank(s[i]) {
            i += 1;
        }
        let mut body = Vec::new();
        if !parsed {
            body.extend_from_slice(&s[i..]);
            i = s.len();
        } else if i < s.len() && s[i] == b'{' {
            let Some(se) = match_char(s, i, b'{', b'}') else {
                self.err(format!("Macro %{name} has unterminated body"));
                return i;
            };
            body.extend_from_slice(&s[i + 1..se - 1]);
            i = se;
        } else {
            let (mut bc, mut pc, mut xc) = (0i32, 0i32, 0i32);
            while i < s.len() && (bc > 0 || pc > 0 || !is_eol(s[i])) {
                match s[i] {
                    b'\\' if i + 1 < s.len() => {
                        i += 1;
                    }
                    b'%' => match s.get(i + 1) {
                        Some(b'{') => {
                            body.push(s[i]);
                            i += 1;
                            bc += 1;
                        }
                        Some(b'(') => {
                            body.push(s[i]);
                            i += 1;
                            pc += 1;
                        }
                        Some(b'[') => {
                            body.push(s[i]);
                            i += 1;
                            xc += 1;
                        }
                        Some(b'%') => {
                            body.push(s[i]);
                            i += 1;
                        }
                        _ => {}
                    },
                    b'{' if bc > 0 => bc += 1,
                    b'}' if bc > 0 => bc -= 1,
                    b'(' if pc > 0 => pc += 1,
                    b')' if pc > 0 => pc -= 1,
                    b'[' if xc > 0 => xc += 1,
                    b']' if xc > 0 => xc -= 1,
                    _ => {}
                }
                if i < s.len() {
                    body.push(s[i]);
                    i += 1;
                }
            }
            if bc > 0 || pc > 0 || xc > 0 {
                self.err(format!("Macro %{name} has unterminated body"));
                return i;
            }
            while body.last().is_some_and(|&c| is_blank(c) || is_eol(c)) {
                body.pop();
            }
        }
        while i < s.len() && is_eol(s[i]) {
            i += 1;
        }
        let consumed = i;
        let body = String::from_utf8_lossy(&body).into_owned();
        let what = if expand_body { "%global" } else { "%define" };
        let c0 = name.as_bytes().first().copied();
        if !(c0.is_some_and(|c| c.is_ascii_alphabetic()) || (c0 == Some(b'_') && name.len() > 1)) {
            self.err(format!("Macro %{name} has illegal name ({what})"));
            return consumed;
        }
        if builtin(&name).is_some() || self.table.get(&name).is_some_and(|d| d.auto) {
            self.err(format!("Macro %{name} is a built-in ({what})"));
            return consumed;
        }
        if body.is_empty() {
            self.err(format!("Macro %{name} has empty body"));
            return consumed;
        }
        let sb = s.get(sbody).copied();
        let escaped_newline = sb == Some(b'\\') && s.get(sbody + 1).copied().is_some_and(is_eol);
        if !(sb.is_some_and(is_blank) || escaped_newline) {
            self.warn(format!("Macro %{name} needs whitespace before body"));
        }
        let body = if expand_body {
            let (b, failed) = self.expand_this(&body);
            if failed {
                self.err(format!("Macro %{name} failed to expand"));
                return consumed;
            }
            b
        } else {
            body
        };
        self.table.push(&name, opts.as_deref(), &body, level);
        if level > 0 {
            self.scoped.push((level, name));
        }
        consumed
    }

    fn builtin_free(&mut self, out: &mut String, name: &str, rest: &str) -> usize {
        match name {
            "define" => self.define(rest, self.level, false, true),
            "global" => self.define(rest, LEVEL_GLOBAL, true, true),
            "dnl" => rest.find('\n').map_or(rest.len(), |p| p + 1),
            "lua" => {
                // `%lua` without braces: nothing sensible; rpm passes the rest of the string.
                self.run_lua(out, rest);
                rest.len()
            }
            "verbose" => {
                out.push('0');
                0
            }
            _ => 0,
        }
    }

    fn call_builtin(&mut self, out: &mut String, name: &str, args: &[String]) {
        let a1 = args.get(1).map(String::as_str).unwrap_or("");
        match name {
            "define" | "global" => {
                let src = if args.len() > 2 {
                    format!("{} {}", args[1], args[2])
                } else {
                    a1.to_string()
                };
                let (lvl, exp) = if name == "global" {
                    (LEVEL_GLOBAL, true)
                } else {
                    (self.level, false)
                };
                self.define(&src, lvl, exp, true);
            }
            "undefine" => {
                let c0 = a1.as_bytes().first().copied();
                if !(c0.is_some_and(|c| c.is_ascii_alphabetic())
                    || (c0 == Some(b'_') && a1.len() > 1))
                    || builtin(a1).is_some()
                {
                    self.err(format!("Macro %{a1} has illegal name (%undefine)"));
                } else {
                    self.table.pop(a1);
                }
            }
            "defined" | "undefined" => {
                let d = self.table.get(a1).is_some() || builtin(a1).is_some();
                out.push(if d == (name == "defined") { '1' } else { '0' });
            }
            "P" | "S" => {
                let src = format!("{}{}", if name == "S" { "%SOURCE" } else { "%PATCH" }, a1);
                self.expand_into(out, &src);
            }
            "basename" => out.push_str(a1.rsplit('/').next().unwrap_or(a1)),
            "dirname" => match a1.rfind('/') {
                Some(p) => out.push_str(&a1[..p]),
                None => out.push_str(a1),
            },
            "suffix" => {
                if let Some(p) = a1.rfind('.') {
                    out.push_str(&a1[p + 1..]);
                }
            }
            "shrink" => {
                let mut r = String::new();
                let mut last = ' ';
                for c in a1.chars() {
                    let c = if c.is_ascii_whitespace() {
                        if last == ' ' {
                            continue;
                        }
                        ' '
                    } else {
                        c
                    };
                    r.push(c);
                    last = c;
                }
                if r.ends_with(' ') {
                    r.pop();
                }
                out.push_str(&r);
            }
            "quote" => {
                out.push('\x1f');
                out.push_str(a1);
                out.push('\x1f');
            }
            "expr" => match expr::eval(a1, None) {
                Ok(v) => out.push_str(&v.render()),
                Err(e) => self.err(e),
            },
            "url2path" | "u2p" => {
                let p = url_path(a1);
                out.push_str(if p.is_empty() { "/" } else { p });
            }
            "getenv" => {
                if let Some(v) = spec_env(self.cfg.containment.is_some(), a1) {
                    out.push_str(&v);
                }
            }
            "getconfdir" => out.push_str(&self.cfg.confdir.to_string_lossy()),
            "getncpus" => out.push_str(
                &std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
                    .to_string(),
            ),
            "exists" => out.push(if Path::new(a1).exists() { '1' } else { '0' }),
            "expand" if !a1.is_empty() => {
                let a = a1.to_string();
                self.expand_into(out, &a);
            }
            "shescape" => {
                out.push('\'');
                out.push_str(&a1.replace('\'', "'\\''"));
                out.push('\'');
            }
            "uncompress" if !a1.is_empty() => {
                self.expand_into(out, "%__rpmuncompress ");
                out.push_str(a1);
            }
            "macrobody" if !a1.is_empty() => match self.table.get(a1) {
                Some(d) => out.push_str(&d.body.clone()),
                None => self.err(format!("no such macro: '{a1}'")),
            },
            "echo" => self.diags.push(Diag::Notice(a1.to_string())),
            "warn" => {
                self.diags.push(Diag::Warning(a1.to_string()));
            }
            "error" => {
                self.diags.push(Diag::Error(a1.to_string()));
                self.error = true;
            }
            "verbose" if args.len() < 2 => {
                out.push('0');
            }
            "lua" => self.run_lua(out, a1),
            "load" => {
                let p = PathBuf::from(a1);
                if let Some(c) = &self.cfg.containment
                    && !c.allows(&p)
                {
                    self.err(format!("%{{load:}} outside the allowed directories: {a1}"));
                    return;
                }
                let mut t = std::mem::take(&mut self.table);
                let r = t.load_file(&p, &self.cfg);
                self.table = t;
                if r.is_err() {
                    self.err(format!("failed to load macro file {a1}"));
                } else {
                    self.loaded.push(p);
                }
            }
            "dump" | "trace" => {}
            _ => {}
        }
    }

    fn run_lua(&mut self, out: &mut String, script: &str) {
        let cur = self.cur.clone();
        match crate::lua::run(self, script, cur) {
            Ok(s) => out.push_str(&s),
            Err(e) => self.err(e),
        }
    }

    fn shell(&mut self, out: &mut String, cmd: &str) {
        let (c, failed) = self.expand_this(cmd);
        if failed {
            return;
        }
        let scope = self.shell_scope.clone();
        match self
            .cfg
            .shell
            .run_scoped(&c, self.cfg.shell_cache_dir.as_deref(), scope.as_deref())
        {
            Ok(s) => out.push_str(&s),
            Err(e) => self.err(e),
        }
    }

    fn expression(&mut self, out: &mut String, e: &str) {
        let mut f = |x: &str| -> Result<String, String> {
            let (r, failed) = self.expand_this(x);
            if failed {
                Err("macro expansion failed".into())
            } else {
                Ok(r)
            }
        };
        match expr::eval(e, Some(&mut f)) {
            Ok(v) => out.push_str(&v.render()),
            Err(m) => self.err(m),
        }
    }

    /// The current scope level (for `rpm.define` from Lua).
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Defines a macro the way `-D`/`rpm.define` does (`name body`).
    pub fn define_str(&mut self, s: &str, level: i32) -> bool {
        let saved = self.error;
        self.error = false;
        self.define(s, level, false, true);
        let ok = !self.error;
        self.error = saved;
        ok
    }

    /// Expands `%{name}`-style text and returns it, keeping the caller's error state.
    pub fn expand_nested(&mut self, s: &str) -> Result<String, Failed> {
        let (r, failed) = self.expand_this(s);
        if failed {
            // the caller (Lua) reports its own error
            self.error = false;
            Err(Failed)
        } else {
            Ok(r)
        }
    }

    /// Expands one parametric macro with explicit arguments (Lua's `macros.name{...}`).
    pub fn call_with_args(&mut self, name: &str, args: Vec<String>) -> Result<String, Failed> {
        let mut out = String::new();
        let Some(me) = self.lookup(name) else {
            if builtin(name).is_none() {
                return Err(Failed);
            }
            let saved = self.error;
            self.error = false;
            let mut a = vec![name.to_string()];
            a.extend(args);
            if a.len() < 2 {
                a.push(String::new());
            }
            self.call_builtin(&mut out, name, &a);
            let failed = self.error;
            self.error = saved;
            return if failed { Err(Failed) } else { Ok(out) };
        };
        let saved = self.error;
        self.error = false;
        let mut a = vec![name.to_string()];
        a.extend(args);
        self.do_macro(
            &mut out,
            name,
            &me,
            if me.opts.is_some() { Some(a) } else { None },
        );
        let failed = self.error;
        self.error = saved;
        if failed { Err(Failed) } else { Ok(out) }
    }
}

fn url_path(s: &str) -> &str {
    match s.find("://") {
        Some(p) => {
            let rest = &s[p + 3..];
            match rest.find('/') {
                Some(q) => &rest[q..],
                None => "",
            }
        }
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eng() -> Engine {
        Engine::new(MacroTable::new(), EngineConfig::default())
    }

    fn check(defs: &[&str], src: &str, want: &str) {
        let mut e = eng();
        for d in defs {
            assert!(e.define_str(d, LEVEL_CMDLINE), "{d}");
        }
        let got = e
            .expand(src)
            .unwrap_or_else(|_| format!("ERROR {:?}", e.diags));
        assert_eq!(got, want, "{src}");
    }

    #[test]
    fn basics() {
        check(
            &["foo bar"],
            "%foo %{foo} %%foo %nope",
            "bar bar %foo %nope",
        );
        check(
            &["foo bar"],
            "%{?foo} %{?nope} %{!?nope:x} %{?foo:y} %{!?foo:z}",
            "bar  x y ",
        );
        check(
            &["bar(x:y) [%{-x*}] [%{-y}] [%*] [%**] [%#] [%0] [%1]"],
            "%bar -x 3 q -y r",
            "[3] [-y] [q r] [-x 3 q -y r] [2] [bar] [q]",
        );
        check(
            &["bar(x:y) [%{-x*}] [%*] [%#]"],
            "%{bar:hello world}",
            "[] [hello world] [1]",
        );
        check(
            &["bar(x:y) [%{-x*}] [%*] [%#]"],
            "%{bar -x 5 z}",
            "[5] [z] [1]",
        );
        check(&[], "%{expand:%%{?nope:a}b}", "b");
        check(&[], "%[1+2*3] %{expr:2*3}", "7 6");
        check(
            &[],
            "%{basename:/a/b.c} %{dirname:/a/b.c} %{suffix:b.tar.gz} %{shrink:  a   b }",
            "b.c /a gz a b",
        );
        check(&[], "%{shescape:it's}", "'it'\\''s'");
        check(&[], "%{url2path:https://x.org/a/b.tgz}", "/a/b.tgz");
        check(&[], "%(echo hi)", "hi");
        check(&["f(a) %{-a:yes}%{!-a:no}"], "%f -a\n%f", "yes\nno");
        check(&[], "%{defined:x} %{undefined:x} %{len:x}", "0 1 %{len:x}");
    }

    #[test]
    fn scoping_of_defines_inside_parametric_macros() {
        let mut e = eng();
        e.define_str("f() %define inner 1\\\n%{inner}", LEVEL_CMDLINE);
        assert_eq!(e.expand("%f").unwrap(), "1");
        assert!(e.table.get("inner").is_none());
        e.define_str("g() %global outer 2", LEVEL_CMDLINE);
        e.expand("%g").unwrap();
        assert_eq!(e.expand("%outer").unwrap(), "2");
    }

    #[test]
    fn runaway_recursion_is_an_error() {
        let mut e = eng();
        e.define_str("a %a", LEVEL_CMDLINE);
        assert!(e.expand("%a").is_err());
        let mut e = eng();
        e.define_str("b %c%c%c%c%c%c%c%c%c%c", LEVEL_CMDLINE);
        e.define_str("c %d%d%d%d%d%d%d%d%d%d", LEVEL_CMDLINE);
        e.define_str("d %e%e%e%e%e%e%e%e%e%e", LEVEL_CMDLINE);
        e.define_str("e %f%f%f%f%f%f%f%f%f%f", LEVEL_CMDLINE);
        e.define_str("f %g%g%g%g%g%g%g%g%g%g", LEVEL_CMDLINE);
        e.define_str("g %h%h%h%h%h%h%h%h%h%h", LEVEL_CMDLINE);
        e.define_str("h %i%i%i%i%i%i%i%i%i%i", LEVEL_CMDLINE);
        e.define_str("i %j%j%j%j%j%j%j%j%j%j", LEVEL_CMDLINE);
        e.define_str("j xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", LEVEL_CMDLINE);
        assert!(e.expand("%b").is_err());
    }

    /// The persistent `%(shell)` cache: a second runner (as in a second process) with the
    /// same cache directory runs nothing; a damaged file is ignored and rebuilt.
    #[test]
    fn a_second_process_runs_no_shell_commands() {
        let dir = tempfile::tempdir().unwrap();
        let read = |spec_text: &str| {
            let cfg = EngineConfig {
                shell: Arc::new(ShellRunner::new(
                    vec!["/bin/sh".into(), "-c".into()],
                    Duration::from_secs(10),
                )),
                shell_cache_dir: Some(dir.path().to_path_buf()),
                ..EngineConfig::default()
            };
            let mut e = Engine::new(MacroTable::new(), cfg.clone());
            let out = e.expand(spec_text).unwrap();
            (out, cfg.shell.spawned())
        };
        let text = "%(echo one) %(printf 'two\\nlines') %(echo one) %(true)";
        let want = "one two\nlines one ";
        assert_eq!(read(text), (want.to_string(), 3));
        assert_eq!(read(text), (want.to_string(), 0));
        // a new command is added to the file without losing the others
        assert_eq!(read("%(echo three)"), ("three".to_string(), 1));
        assert_eq!(read(&format!("{text}%(echo three)")).1, 0);

        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(
            files.len(),
            1,
            "one file, no temporary files left: {files:?}"
        );
        std::fs::write(&files[0], b"keel-shell-cache 1\ngarbage").unwrap();
        assert_eq!(read(text), (want.to_string(), 3), "corrupt file: a miss");
        assert_eq!(read(text), (want.to_string(), 0), "and rebuilt");
    }

    /// A contained command that does not name its spec's directory runs once for every
    /// spec, in `/`; one that names it runs for each directory and sees its files.
    #[test]
    fn contained_commands_share_results_unless_they_name_the_spec_directory() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("v.txt"), "from a").unwrap();
        std::fs::write(b.path().join("v.txt"), "from b").unwrap();
        let r = ShellRunner::contained(Duration::from_secs(10), 1 << 20);
        for dir in [a.path(), b.path()] {
            assert_eq!(r.run_scoped("pwd", None, Some(dir)).unwrap(), "/");
        }
        assert_eq!(r.spawned(), 1, "one run for both directories");
        for (dir, want) in [(a.path(), "from a"), (b.path(), "from b")] {
            let cmd = format!("cat {}/v.txt", dir.display());
            assert_eq!(r.run_scoped(&cmd, None, Some(dir)).unwrap(), want);
        }
        assert_eq!(r.spawned(), 3);
        // A command that names the directory works there too.
        assert_eq!(
            r.run_scoped(
                &format!("cd {} && pwd", a.path().display()),
                None,
                Some(a.path())
            )
            .unwrap(),
            a.path().display().to_string()
        );
    }

    #[test]
    fn getopt_permutes_like_glibc() {
        let a: Vec<String> = ["m", "a", "-x", "1", "b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (o, r) = getopt(&a, "x:").unwrap();
        assert_eq!(o, vec![('x', Some("1".into()))]);
        assert_eq!(r, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(getopt(&a, "y"), Err('x'));
    }
}
