//! Reading a spec file: rpm's line reader (continuations, conditionals, `%include`), its
//! section parsers, and the resulting model of the source package and binary packages.
//!
//! The reader reproduces what `rpmspec -P` prints (the "parsed" text) as a by-product, so
//! the same pass yields both the model and rpm-identical expanded output.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::deps::{self, Dep, sense};
use crate::macros::{Diag, Engine, EngineConfig, LEVEL_SPEC, MacroTable};

/// A failure to read a spec, with the file and line rpm would name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}: {message}", file.display())]
pub struct SpecError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
    /// `%{echo:}` output produced before the failure (rpm prints it on stdout).
    pub notices: Vec<String>,
}

/// A binary package declared by the spec.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Package {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    /// `noarch` when set by `BuildArch: noarch`; otherwise the target arch.
    pub arch: String,
    pub summary: String,
    pub license: String,
    pub url: String,
    pub requires: Vec<Dep>,
    pub provides: Vec<Dep>,
    pub conflicts: Vec<Dep>,
    pub obsoletes: Vec<Dep>,
    pub recommends: Vec<Dep>,
    pub suggests: Vec<Dep>,
    pub supplements: Vec<Dep>,
    pub enhances: Vec<Dep>,
    pub order: Vec<Dep>,
    /// Whether a `%files` section exists for it.
    pub has_files: bool,
    /// Literal paths listed in `%files` (directives such as `%doc` stripped).
    pub files: Vec<String>,
    pub has_description: bool,
    arch_set: bool,
}

impl Package {
    /// `[E:]V-R`.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(e) => format!("{e}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }
}

/// A `SourceN:` or `PatchN:` entry.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SourceEntry {
    pub num: u32,
    pub is_patch: bool,
    /// As written (a URL or a file name).
    pub full: String,
    /// The file name: the part after the last `/` (or `#/` rename), what rpm looks for.
    pub file: String,
}

/// The source package and everything the spec says about building it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SourcePackage {
    pub build_requires: Vec<Dep>,
    pub build_conflicts: Vec<Dep>,
    pub exclusive_arch: Vec<String>,
    pub exclude_arch: Vec<String>,
    pub exclusive_os: Vec<String>,
    pub exclude_os: Vec<String>,
    pub build_archs: Vec<String>,
    pub sources: Vec<SourceEntry>,
    pub has_check: bool,
    pub has_generate_buildrequires: bool,
    /// Unix time of the newest `%changelog` entry (rpm's `SOURCE_DATE_EPOCH` source).
    pub changelog_newest: Option<i64>,
}

/// A parsed spec.
///
/// Serializable so that a reader's results can be cached (keel keys them by the digests
/// of every file they could depend on); the expanded text is not kept in that form.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    pub path: PathBuf,
    /// The expanded spec, exactly what `rpmspec -P` prints. Empty in a spec loaded from a
    /// cache.
    #[serde(skip)]
    pub parsed: String,
    /// The main package first, then subpackages in declaration order.
    pub packages: Vec<Package>,
    pub source: SourcePackage,
    /// Warnings as rpm prints them to stderr (without the `warning: ` prefix).
    pub warnings: Vec<String>,
    /// Non-fatal errors rpm prints (e.g. bad `%changelog`), without the `error: ` prefix.
    pub errors: Vec<String>,
    /// `%{echo:}` output, which rpm prints on stdout while parsing.
    pub notices: Vec<String>,
}

/// Everything needed to read specs; built once, shared by every spec read.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// Macros loaded from macro files and defines.
    pub macros: Arc<MacroTable>,
    pub engine: EngineConfig,
    /// Define `%_sourcedir` as each spec's own directory (the Azure Linux layout, where
    /// sources and patches sit next to the spec), as its toolkit does with `-D`.
    pub sourcedir_is_specdir: bool,
}

impl ReaderConfig {
    /// Freezes `macros` (see [`MacroTable::freeze`]), so that every spec read starts from
    /// the shared base and copies only the names it changes.
    pub fn new(mut macros: MacroTable, engine: EngineConfig) -> Self {
        macros.freeze();
        ReaderConfig {
            macros: Arc::new(macros),
            engine,
            sourcedir_is_specdir: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    None,
    Preamble,
    Prep,
    BuildRequires,
    Conf,
    Build,
    Install,
    Check,
    Clean,
    Script,
    Files,
    Changelog,
    Description,
    Policies,
    Empty,
    PatchList,
    SourceList,
}

const PARTS: &[(&str, Part)] = &[
    ("%package", Part::Preamble),
    ("%prep", Part::Prep),
    ("%generate_buildrequires", Part::BuildRequires),
    ("%conf", Part::Conf),
    ("%build", Part::Build),
    ("%install", Part::Install),
    ("%check", Part::Check),
    ("%clean", Part::Clean),
    ("%preun", Part::Script),
    ("%postun", Part::Script),
    ("%pretrans", Part::Script),
    ("%posttrans", Part::Script),
    ("%pre", Part::Script),
    ("%post", Part::Script),
    ("%files", Part::Files),
    ("%changelog", Part::Changelog),
    ("%description", Part::Description),
    ("%triggerpostun", Part::Script),
    ("%triggerprein", Part::Script),
    ("%triggerun", Part::Script),
    ("%triggerin", Part::Script),
    ("%trigger", Part::Script),
    ("%verifyscript", Part::Script),
    ("%sepolicy", Part::Policies),
    ("%filetriggerin", Part::Script),
    ("%filetrigger", Part::Script),
    ("%filetriggerun", Part::Script),
    ("%filetriggerpostun", Part::Script),
    ("%transfiletriggerin", Part::Script),
    ("%transfiletrigger", Part::Script),
    ("%transfiletriggerun", Part::Script),
    ("%transfiletriggerpostun", Part::Script),
    ("%end", Part::Empty),
    ("%patchlist", Part::PatchList),
    ("%sourcelist", Part::SourceList),
];

fn is_part(line: &str) -> Part {
    // every section keyword starts with '%'
    if !line.starts_with('%') {
        return Part::None;
    }
    for (tok, p) in PARTS {
        let b = line.as_bytes();
        if b.len() >= tok.len() && b[..tok.len()].eq_ignore_ascii_case(tok.as_bytes()) {
            match b.get(tok.len()) {
                None => return *p,
                Some(c) if c.is_ascii_whitespace() => return *p,
                _ => {}
            }
        }
    }
    Part::None
}

const STRIP_TRAILINGSPACE: u8 = 1;
const STRIP_COMMENTS: u8 = 2;
const STRIP_PARSED: u8 = 4;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum LineType {
    Endif,
    Else,
    If,
    IfArch,
    IfNArch,
    IfOs,
    IfNOs,
    Include,
    ElifArch,
    ElifOs,
    Elif,
}

impl LineType {
    fn text(self) -> &'static str {
        match self {
            LineType::Endif => "%endif",
            LineType::Else => "%else",
            LineType::If => "%if",
            LineType::IfArch => "%ifarch",
            LineType::IfNArch => "%ifnarch",
            LineType::IfOs => "%ifos",
            LineType::IfNOs => "%ifnos",
            LineType::Include => "%include",
            LineType::ElifArch => "%elifarch",
            LineType::ElifOs => "%elifos",
            LineType::Elif => "%elif",
        }
    }
    fn with_args(self) -> bool {
        !matches!(self, LineType::Endif | LineType::Else)
    }
    fn is_if(self) -> bool {
        matches!(
            self,
            LineType::If | LineType::IfArch | LineType::IfNArch | LineType::IfOs | LineType::IfNOs
        )
    }
    fn is_elif(self) -> bool {
        matches!(self, LineType::Elif | LineType::ElifArch | LineType::ElifOs)
    }
    /// Conditionals that may not follow the previous one (`wrongPrecursors`).
    fn wrong_after(self, prev: LineType) -> bool {
        match self {
            LineType::Endif => prev == LineType::Endif,
            LineType::Else | LineType::Elif | LineType::ElifArch | LineType::ElifOs => {
                prev == LineType::Endif || prev == LineType::Else
            }
            _ => false,
        }
    }
}

const LINE_TYPES: &[LineType] = &[
    LineType::Endif,
    LineType::Else,
    LineType::If,
    LineType::IfArch,
    LineType::IfNArch,
    LineType::IfOs,
    LineType::IfNOs,
    LineType::Include,
    LineType::ElifArch,
    LineType::ElifOs,
    LineType::Elif,
];

fn parse_line_type(line: &str) -> Option<LineType> {
    let b = line.as_bytes();
    for &t in LINE_TYPES {
        let tx = t.text().as_bytes();
        if b.len() < tx.len() || &b[..tx.len()] != tx {
            continue;
        }
        let next = b.get(tx.len()).copied();
        if t.with_args() {
            if next.is_none() || next.is_some_and(|c| c == b' ' || c == b'\t') {
                return Some(t);
            }
        } else if !next.is_some_and(|c| c.is_ascii_alphabetic()) {
            return Some(t);
        }
    }
    None
}

struct OpenFile {
    name: PathBuf,
    lines: Vec<String>,
    idx: usize,
}

struct ReadLevel {
    reading: bool,
    readable: bool,
    last: LineType,
    line: usize,
}

struct Reader<'c> {
    cfg: &'c ReaderConfig,
    eng: Engine,
    files: Vec<OpenFile>,
    include_depth: usize,
    line_num: usize,
    /// The rest of the current expanded buffer, still to be returned line by line.
    pending: Option<String>,
    stack: Vec<ReadLevel>,
    parsed: String,
    line: String,
    spec_dir: PathBuf,
    spec_path: PathBuf,
    packages: Vec<Package>,
    src: SourcePackage,
    warnings: Vec<String>,
    errors: Vec<String>,
    notices: Vec<String>,
    descriptions: Vec<(usize, String)>,
    autonum_source: i64,
    autonum_patch: i64,
    have_prep: bool,
    have_changelog: bool,
    recursing: bool,
    build_archs_hit: bool,
    lua_sources: Vec<(bool, String, u32)>,
}

type R<T> = Result<T, String>;

impl<'c> Reader<'c> {
    fn err_at<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(msg.into())
    }

    fn drain_diags(&mut self) -> Option<String> {
        let mut first_err = None;
        for d in std::mem::take(&mut self.eng.diags) {
            match d {
                Diag::Warning(w) => self.warnings.push(w),
                Diag::Notice(n) => self.notices.push(n),
                Diag::Error(e) => {
                    if first_err.is_none() {
                        first_err = Some(e.clone());
                    }
                    self.errors.push(e);
                }
            }
        }
        first_err
    }

    fn expand(&mut self, s: &str) -> R<String> {
        let r = self.eng.expand(s);
        let e = self.drain_diags();
        match r {
            Ok(v) => Ok(v),
            Err(crate::macros::Failed) => Err(e.unwrap_or_else(|| "macro expansion failed".into())),
        }
    }

    fn expand_at_line(&mut self, s: &str, line: usize) -> R<String> {
        if !s.contains('%') {
            // Most lines hold no macro: nothing could see `%__file_lineno` or fail, so skip
            // defining it and expanding, but keep the rest of `expand`'s effects.
            self.eng.error = false;
            let _ = self.drain_diags();
            return Ok(s.to_string());
        }
        self.eng
            .table
            .push_literal("__file_lineno", &line.to_string(), LEVEL_SPEC);
        let r = self.expand(s);
        self.eng.table.pop("__file_lineno");
        r
    }

    fn push_file(&mut self, path: PathBuf) -> R<()> {
        self.include_depth += 1;
        if self.include_depth > 32 {
            return self.err_at(format!("%include nested too deeply: {}", path.display()));
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                let msg = match e.kind() {
                    std::io::ErrorKind::NotFound => "No such file or directory".to_string(),
                    _ => e.to_string(),
                };
                return Err(format!("Unable to open {}: {}", path.display(), msg));
            }
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
        if lines.is_empty() {
            lines = Vec::new();
        }
        self.eng
            .table
            .push_literal("__file_name", &path.to_string_lossy(), LEVEL_SPEC);
        self.files.push(OpenFile {
            name: path,
            lines,
            idx: 0,
        });
        self.line_num = 0;
        Ok(())
    }

    fn pop_file(&mut self) {
        if self.files.pop().is_some() {
            self.eng.table.pop("__file_name");
            self.include_depth = self.include_depth.saturating_sub(1);
        }
        if let Some(f) = self.files.last() {
            self.line_num = f.idx;
        }
    }

    /// Reads the next line into `self.line`. Returns false at end of input.
    fn read_line(&mut self, strip: u8) -> R<bool> {
        loop {
            if self.pending.is_none() {
                // read a logical line from the current file
                let mut lbuf = String::new();
                let mut cont = Continuation::default();
                let mut start_line = 0usize;
                loop {
                    let Some(f) = self.files.last_mut() else {
                        if self.stack.len() > 1 {
                            let l = self.stack.last().map_or(0, |r| r.line);
                            return Err(format!("line {l}: Unclosed %if"));
                        }
                        if start_line > 0 {
                            return Err(format!(
                                "line {start_line}: unclosed macro or bad line continuation"
                            ));
                        }
                        return Ok(false);
                    };
                    if f.idx >= f.lines.len() {
                        if !lbuf.is_empty() {
                            // EOF inside a continuation: hand over what we have
                            break;
                        }
                        self.pop_file();
                        continue;
                    }
                    // each physical line is read once: take it instead of copying it
                    let l = std::mem::take(&mut f.lines[f.idx]);
                    f.idx += 1;
                    self.line_num = f.idx;
                    cont.scan(l.as_bytes());
                    if lbuf.is_empty() {
                        lbuf = l;
                    } else {
                        lbuf.push_str(&l);
                    }
                    if cont.open() {
                        if start_line == 0 {
                            start_line = self.line_num;
                        }
                        continue;
                    }
                    break;
                }
                if self.files.last().is_some_and(|f| f.idx >= f.lines.len()) && cont.open() {
                    return Err(format!(
                        "line {start_line}: unclosed macro or bad line continuation"
                    ));
                }
                // expandMacrosInSpecBuf
                let trimmed = lbuf.trim_start();
                let cond = parse_line_type(trimmed);
                if let Some(c) = cond.filter(|c| !c.with_args()) {
                    let rest = trimmed[c.text().len()..].trim();
                    if !rest.is_empty() {
                        self.warnings.push(format!(
                            "extra tokens at the end of {} directive in line {}:  {}",
                            c.text(),
                            self.line_num,
                            trimmed.trim_end_matches('\n')
                        ));
                    }
                }
                let top = self
                    .stack
                    .last()
                    .map_or((true, false), |r| (r.reading, r.readable));
                let do_expand = if cond.is_some_and(|c| c.is_elif()) {
                    top.1
                } else {
                    top.0
                };
                let expanded = if do_expand {
                    let ln = self.line_num;
                    let is_comment = trimmed.starts_with('#');
                    let e = self.expand_at_line(&lbuf, ln).map_err(|m| strip_loc(&m))?;
                    if strip & STRIP_COMMENTS != 0 && is_comment && !same_modulo_percent(&lbuf, &e)
                    {
                        self.warnings.push(format!(
                            "Macro expanded in comment on line {ln}: {}",
                            comment_diff(&lbuf, &e)
                        ));
                    }
                    e
                } else {
                    lbuf
                };
                self.pending = Some(expanded);
            }
            // copyNextLineFinish
            let buf = self.pending.take().unwrap_or_default();
            let lead = buf.len()
                - buf
                    .trim_start_matches(|c: char| c.is_ascii_whitespace() && c != '\n')
                    .len();
            let line_type = parse_line_type(&buf[lead..]);
            let bytes = buf.as_bytes();
            let mut k = 0;
            let mut line = if line_type.is_some() {
                // a conditional's continuation lines join with the backslash-newline blanked
                let mut cur = Vec::new();
                while k < bytes.len() {
                    let c = bytes[k];
                    if c == b'\\' && bytes.get(k + 1) == Some(&b'\n') {
                        cur.push(b' ');
                        cur.push(b' ');
                        k += 2;
                        continue;
                    }
                    cur.push(c);
                    k += 1;
                    if c == b'\n' {
                        break;
                    }
                }
                // only ASCII bytes were replaced, so `cur` is still UTF-8
                String::from_utf8(cur)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
            } else {
                k = bytes
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |p| p + 1);
                buf[..k].to_string()
            };
            let rest = &buf[k..];
            if !rest.is_empty() {
                self.pending = Some(rest.to_string());
            }
            let last = line.trim_end().len();
            if strip & STRIP_COMMENTS != 0 {
                let t = line.trim_start();
                if t.starts_with('#') {
                    let p = line.len() - t.len();
                    line.truncate(p);
                }
            }
            if strip & STRIP_TRAILINGSPACE != 0 && last < line.len() {
                line.truncate(last);
            }
            self.line = line;
            let reading = self.classify(line_type)?;
            match reading {
                Classified::Retry => continue,
                Classified::Done => {}
            }
            if !self.stack.last().is_some_and(|r| r.reading) {
                self.line.clear();
            }
            if strip & STRIP_PARSED == 0 {
                self.parsed.push_str(&self.line);
                if strip & STRIP_TRAILINGSPACE != 0 {
                    self.parsed.push('\n');
                }
            }
            return Ok(true);
        }
    }

    fn classify(&mut self, lt: Option<LineType>) -> R<Classified> {
        let Some(lt) = lt else {
            return Ok(Classified::Done);
        };
        let prev = self.stack.last().map_or(LineType::Endif, |r| r.last);
        let s = self.line.trim_start().to_string();
        let fname = self
            .files
            .last()
            .map(|f| f.name.display().to_string())
            .unwrap_or_default();
        if lt.wrong_after(prev)
            || (matches!(lt, LineType::Endif | LineType::Else) || lt.is_elif())
                && self.stack.len() <= 1
        {
            if prev == LineType::Endif || self.stack.len() <= 1 {
                return Err(format!(
                    "{fname}: line {}: {} with no %if",
                    self.line_num,
                    lt.text()
                ));
            }
            return Err(format!(
                "{fname}: line {}: {} after {}",
                self.line_num,
                lt.text(),
                prev.text()
            ));
        }
        let mut matched = false;
        let argmatch = |me: &mut Self, mac: &str| -> R<bool> {
            let rest = s[lt.text().len()..].trim();
            if rest.is_empty() {
                return Err(format!(
                    "{fname}:{}: Argument expected for {}",
                    me.line_num,
                    s.trim_end()
                ));
            }
            let want = me.expand(mac)?;
            Ok(rest.split_ascii_whitespace().any(|w| w == want))
        };
        match lt {
            LineType::IfArch | LineType::ElifArch => matched = argmatch(self, "%{_target_cpu}")?,
            LineType::IfNArch => matched = !argmatch(self, "%{_target_cpu}")?,
            LineType::IfOs | LineType::ElifOs => matched = argmatch(self, "%{_target_os}")?,
            LineType::IfNOs => matched = !argmatch(self, "%{_target_os}")?,
            LineType::If | LineType::Elif => {
                let expr = &s[lt.text().len()..];
                let top = self
                    .stack
                    .last()
                    .map_or((true, false), |r| (r.reading, r.readable));
                let check = if lt == LineType::If { top.0 } else { top.1 };
                if check {
                    match crate::expr::eval_bool(expr.trim_end_matches('\n')) {
                        Ok(b) => matched = b,
                        Err(e) => {
                            self.errors.push(e);
                            return Err(format!(
                                "{fname}:{}: bad {} condition: {}",
                                self.line_num,
                                lt.text(),
                                expr.trim_end_matches('\n')
                            ));
                        }
                    }
                }
            }
            LineType::Else => {
                let n = self.stack.len();
                let parent_reading = self.stack[n - 2].reading;
                let top = &mut self.stack[n - 1];
                top.last = LineType::Else;
                top.reading = parent_reading && top.readable;
                self.line.clear();
            }
            LineType::Endif => {
                self.stack.pop();
                self.line.clear();
            }
            LineType::Include => {
                if self.stack.last().is_some_and(|r| r.reading) {
                    let f = s[8..].trim();
                    if f.is_empty() {
                        return Err(format!(
                            "{fname}:{}: malformed %include statement",
                            self.line_num
                        ));
                    }
                    let p = PathBuf::from(f);
                    // rpm opens a relative path from the working directory; keel falls
                    // back to the spec's directory, so a tree can be read from anywhere
                    let p = if p.is_absolute() || p.exists() {
                        p
                    } else {
                        self.spec_dir.join(p)
                    };
                    if let Some(c) = &self.cfg.engine.containment
                        && !c.allows(&p)
                    {
                        return Err(format!(
                            "{fname}:{}: %include outside the allowed directories: {}",
                            self.line_num,
                            p.display()
                        ));
                    }
                    self.push_file(p)?;
                    return Ok(Classified::Retry);
                }
            }
        }
        if lt.is_if() {
            let parent = self.stack.last().is_none_or(|r| r.reading);
            let reading = parent && matched;
            self.stack.push(ReadLevel {
                reading,
                readable: !reading && parent,
                last: lt,
                line: self.line_num,
            });
            self.line.clear();
        } else if lt.is_elif() {
            if let Some(top) = self.stack.last_mut() {
                top.reading = top.readable && matched;
                if top.reading {
                    top.readable = false;
                }
            }
            self.line.clear();
        }
        Ok(Classified::Done)
    }

    /// Reads lines until the next section; returns the next part and the lines.
    fn parse_lines(&mut self, strip: u8) -> R<(Part, Vec<String>)> {
        let mut lines = Vec::new();
        if !self.read_line(strip)? {
            return Ok((Part::None, lines));
        }
        loop {
            let p = is_part(&self.line);
            if p != Part::None {
                return Ok((p, lines));
            }
            lines.push(self.line.clone());
            if !self.read_line(strip)? {
                return Ok((Part::None, lines));
            }
        }
    }

    fn cur_main(&self) -> &Package {
        &self.packages[0]
    }

    /// Parses `%package`/`%description`/`%files` arguments: the package index it refers to.
    fn section_package(
        &mut self,
        part_line: &str,
        allow_f: bool,
        create: bool,
    ) -> R<Option<usize>> {
        let words = split_args(part_line);
        let mut name: Option<String> = None;
        let mut sub = false;
        let mut i = 1;
        while i < words.len() {
            let w = &words[i];
            if w == "-n" {
                i += 1;
                let Some(n) = words.get(i) else {
                    return Err(format!(
                        "line {}: Bad package specification: {}",
                        self.line_num,
                        part_line.trim_end()
                    ));
                };
                name = Some(n.clone());
                sub = false;
            } else if (w == "-f" || w == "-l") && allow_f {
                i += 1;
            } else if w.starts_with("-f") && allow_f {
            } else if w.starts_with('-') {
                return Err(format!(
                    "line {}: Bad package specification: {}",
                    self.line_num,
                    part_line.trim_end()
                ));
            } else if name.is_none() {
                name = Some(w.clone());
                sub = true;
            } else {
                return Err(format!(
                    "line {}: Too many names: {}",
                    self.line_num,
                    part_line.trim_end()
                ));
            }
            i += 1;
        }
        let full = match name {
            None => return Ok(Some(0)),
            Some(n) if sub => format!("{}-{}", self.cur_main().name, n),
            Some(n) => n,
        };
        let found = self.packages.iter().position(|p| p.name == full);
        if create {
            if found.is_some() {
                return Err(format!(
                    "line {}: Package already exists: {}",
                    self.line_num,
                    part_line.trim_end()
                ));
            }
            let pkg = Package {
                name: full,
                ..Default::default()
            };
            self.packages.push(pkg);
            return Ok(Some(self.packages.len() - 1));
        }
        match found {
            Some(i) => Ok(Some(i)),
            None => Err(format!(
                "line {}: Package does not exist: {}",
                self.line_num,
                part_line.trim_end()
            )),
        }
    }

    fn parse_preamble(&mut self, initial: bool) -> R<Part> {
        let idx = if initial {
            self.packages.push(Package::default());
            0
        } else {
            let l = self.line.clone();
            self.section_package(&l, false, true)?.unwrap_or(0)
        };
        if !self.read_line(STRIP_TRAILINGSPACE | STRIP_COMMENTS)? {
            return self.finish_preamble(idx, initial, Part::None);
        }
        loop {
            let p = is_part(&self.line);
            if p != Part::None {
                return self.finish_preamble(idx, initial, p);
            }
            let t = self.line.trim_start();
            if !t.is_empty() {
                let line = self.line.clone();
                self.preamble_tag(idx, &line)?;
                if self.build_archs_hit && !self.recursing {
                    return Err(BUILDARCH_RESTART.into());
                }
            }
            if !self.read_line(STRIP_TRAILINGSPACE | STRIP_COMMENTS)? {
                return self.finish_preamble(idx, initial, Part::None);
            }
        }
    }

    fn finish_preamble(&mut self, idx: usize, initial: bool, next: Part) -> R<Part> {
        if initial {
            let br = self.expand("%{?buildroot:%{buildroot}}")?;
            if !br.is_empty() {
                self.eng.table.push("buildroot", None, &br, LEVEL_SPEC);
            }
        }
        if idx != 0 {
            let main = self.packages[0].clone();
            let p = &mut self.packages[idx];
            if p.epoch.is_none() {
                p.epoch = main.epoch;
            }
            if p.version.is_empty() {
                p.version = main.version.clone();
            }
            if p.release.is_empty() {
                p.release = main.release.clone();
            }
            if p.license.is_empty() {
                p.license = main.license.clone();
            }
            if p.url.is_empty() {
                p.url = main.url.clone();
            }
        }
        let p = &self.packages[idx];
        let nvr = if idx == 0 {
            "(main package)".to_string()
        } else {
            p.name.clone()
        };
        for (v, tag) in [
            (&p.name, "Name"),
            (&p.version, "Version"),
            (&p.release, "Release"),
            (&p.summary, "Summary"),
            (&p.license, "License"),
        ] {
            if v.is_empty() {
                return Err(format!("{tag} field must be present in package: {nvr}"));
            }
        }
        Ok(next)
    }

    fn preamble_tag(&mut self, idx: usize, line: &str) -> R<()> {
        let lnum = self.line_num;
        let lower = line.to_ascii_lowercase();
        const TAGS: &[&str] = &[
            "name",
            "version",
            "release",
            "epoch",
            "summary",
            "license",
            "sourcelicense",
            "distribution",
            "disturl",
            "vendor",
            "group",
            "packager",
            "url",
            "vcs",
            "source",
            "patch",
            "nosource",
            "nopatch",
            "excludearch",
            "exclusivearch",
            "excludeos",
            "exclusiveos",
            "icon",
            "provides",
            "requires",
            "recommends",
            "suggests",
            "supplements",
            "enhances",
            "prereq",
            "conflicts",
            "obsoletes",
            "prefixes",
            "prefix",
            "buildroot",
            "buildarchitectures",
            "buildarch",
            "buildconflicts",
            "buildprereq",
            "buildrequires",
            "autoreqprov",
            "autoreq",
            "autoprov",
            "docdir",
            "disttag",
            "bugurl",
            "translationurl",
            "upstreamreleases",
            "orderwithrequires",
            "removepathpostfixes",
            "modularitylabel",
        ];
        let unknown = || format!("line {lnum}: Unknown tag: {line}");
        let Some(tag) = TAGS.iter().find(|t| lower.starts_with(*t)) else {
            return Err(unknown());
        };
        let tag = *tag;
        let mut rest = line[tag.len()..].trim_start();
        let mut qual = String::new();
        let typ = match tag {
            "summary" | "group" => 1,
            "requires" | "prereq" | "orderwithrequires" => 2,
            _ => 0,
        };
        match typ {
            0 => {
                if tag != "source" && tag != "patch" && !rest.starts_with(':') {
                    return Err(unknown());
                }
            }
            _ => {
                if !rest.starts_with(':') {
                    if !rest.starts_with('(') {
                        return Err(unknown());
                    }
                    let Some(close) = rest.find(')') else {
                        return Err(unknown());
                    };
                    qual = rest[1..close].trim().to_string();
                    rest = rest[close + 1..].trim_start();
                    if !rest.starts_with(':') {
                        return Err(unknown());
                    }
                }
            }
        }
        let Some(colon) = line.find(':') else {
            return Err(format!("line {lnum}: Malformed tag: {line}"));
        };
        let field = line[colon + 1..].trim();
        if field.is_empty() {
            return Err(format!("line {lnum}: Empty tag: {line}"));
        }
        let multi = field.split_ascii_whitespace().nth(1).is_some();
        let single = |what: &str| -> R<()> {
            if multi {
                return Err(format!("line {lnum}: Tag takes single token only: {what}"));
            }
            Ok(())
        };
        let is_main = idx == 0;
        let macro_name: Option<&str> = match tag {
            "name"
            | "version"
            | "release"
            | "epoch"
            | "summary"
            | "license"
            | "sourcelicense"
            | "distribution"
            | "disturl"
            | "vendor"
            | "group"
            | "packager"
            | "url"
            | "vcs"
            | "prefixes"
            | "prefix"
            | "disttag"
            | "bugurl"
            | "translationurl"
            | "upstreamreleases"
            | "removepathpostfixes"
            | "modularitylabel" => Some(tag),
            _ => None,
        };
        match tag {
            "name" => {
                single(line)?;
                check_chars(field, true).map_err(|c| {
                    format!(
                        "line {lnum}: Illegal char '{c}' (0x{:x}) in: {field}",
                        c as u32
                    )
                })?;
                self.packages[idx].name = field.to_string();
            }
            "version" | "release" => {
                single(line)?;
                if let Some(c) = field
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || "._+%{}~^".contains(*c)))
                {
                    return Err(format!(
                        "line {lnum}: Illegal char '{c}' (0x{:x}) in: {field}",
                        c as u32
                    ));
                }
                if tag == "version" {
                    self.packages[idx].version = field.to_string();
                } else {
                    self.packages[idx].release = field.to_string();
                }
            }
            "epoch" => {
                single(line)?;
                let Ok(e) = field.parse::<u32>() else {
                    return Err(format!(
                        "line {lnum}: Epoch field must be an unsigned number: {line}"
                    ));
                };
                self.packages[idx].epoch = Some(e);
            }
            "summary" => self.packages[idx].summary = field.to_string(),
            "license" => self.packages[idx].license = field.to_string(),
            "url" => {
                single(line)?;
                self.packages[idx].url = field.to_string();
            }
            "vcs" | "disttag" | "bugurl" | "modularitylabel" => single(line)?,
            "source" | "patch" => self.add_source(tag == "patch", line, field)?,
            "excludearch" => self.src.exclude_arch.extend(split_args(field)),
            "exclusivearch" => self.src.exclusive_arch.extend(split_args(field)),
            "excludeos" => self.src.exclude_os.extend(split_args(field)),
            "exclusiveos" => self.src.exclusive_os.extend(split_args(field)),
            "requires" | "recommends" | "suggests" | "supplements" | "enhances"
            | "orderwithrequires" | "prereq" | "conflicts" | "obsoletes" | "provides" => {
                let mut flags = 0u32;
                if !qual.is_empty() && tag != "prereq" {
                    for q in qual
                        .split(|c: char| c == ',' || c.is_ascii_whitespace())
                        .filter(|s| !s.is_empty())
                    {
                        flags |= match q {
                            "interp" => sense::INTERP,
                            "meta" => sense::META,
                            "preun" => sense::SCRIPT_PREUN,
                            "pre" => sense::SCRIPT_PRE,
                            "postun" => sense::SCRIPT_POSTUN,
                            "post" => sense::SCRIPT_POST,
                            "rpmlib" => sense::RPMLIB,
                            "verify" => sense::SCRIPT_VERIFY,
                            "pretrans" => sense::PRETRANS,
                            "posttrans" => sense::POSTTRANS,
                            _ => {
                                let tn = match tag {
                                    "requires" => "Requires",
                                    "orderwithrequires" => "OrderWithRequires",
                                    _ => tag,
                                };
                                return Err(format!("line {lnum}: Bad {tn}: qualifiers: {line}"));
                            }
                        };
                    }
                }
                if tag == "prereq" {
                    flags |= sense::SCRIPT_PRE | sense::SCRIPT_PREUN;
                }
                let rich = !matches!(tag, "provides" | "obsoletes" | "orderwithrequires");
                let ctx = if matches!(tag, "conflicts" | "supplements" | "enhances") {
                    deps::RichContext::Conflicts
                } else {
                    deps::RichContext::Requires
                };
                let ds = deps::parse_field_ctx(field, flags, rich, ctx)
                    .map_err(|e| format!("line {lnum}: {e}: {line}"))?;
                if tag == "obsoletes" {
                    for d in &ds {
                        if d.evr.is_empty() {
                            self.warnings
                                .push(format!("line {lnum}: It's not recommended to have unversioned Obsoletes: {line}"));
                        }
                    }
                }
                let p = &mut self.packages[idx];
                let keep_script = |f: u32| f;
                let (list, mask): (&mut Vec<Dep>, u32) = match tag {
                    "requires" | "prereq" => (&mut p.requires, !0),
                    "recommends" => (&mut p.recommends, !0),
                    "suggests" => (&mut p.suggests, !0),
                    "supplements" => (&mut p.supplements, !0),
                    "enhances" => (&mut p.enhances, !0),
                    "orderwithrequires" => (&mut p.order, !0),
                    "conflicts" => (&mut p.conflicts, !0),
                    "obsoletes" => (&mut p.obsoletes, sense::SENSEMASK),
                    _ => (&mut p.provides, sense::SENSEMASK),
                };
                for mut d in ds {
                    d.flags = keep_script(d.flags) & mask;
                    if d.name.starts_with("rpmlib(") {
                        d.flags |= sense::RPMLIB;
                    }
                    merge_dep(list, d);
                }
            }
            "buildrequires" | "buildprereq" | "buildconflicts" => {
                let ctx = if tag == "buildconflicts" {
                    deps::RichContext::Conflicts
                } else {
                    deps::RichContext::Requires
                };
                let ds = deps::parse_field_ctx(field, 0, true, ctx)
                    .map_err(|e| format!("line {lnum}: {e}: {line}"))?;
                let list = if tag == "buildconflicts" {
                    &mut self.src.build_conflicts
                } else {
                    &mut self.src.build_requires
                };
                for d in ds {
                    merge_dep(list, d);
                }
            }
            "buildarchitectures" | "buildarch" => {
                let archs = split_args(field);
                if is_main {
                    if !self.src.build_archs.is_empty() {
                        return Err(format!("line {lnum}: Duplicate BuildArch entry: {line}"));
                    }
                    self.src.build_archs = archs.clone();
                    if !archs.is_empty() {
                        self.build_archs_hit = true;
                    }
                } else {
                    if archs.len() != 1 || archs[0] != "noarch" {
                        return Err(format!(
                            "line {lnum}: Only noarch subpackages are supported: {line}"
                        ));
                    }
                    self.packages[idx].arch = "noarch".into();
                    self.packages[idx].arch_set = true;
                }
            }
            "docdir" => {
                single(line)?;
                if !field.starts_with('/') {
                    return Err(format!("line {lnum}: Docdir must begin with '/': {line}"));
                }
                self.eng.table.pop("_docdir");
                self.eng.table.push("_docdir", None, field, LEVEL_SPEC);
            }
            "prefixes" | "prefix" => {
                for p in split_args(field) {
                    if p.len() > 1 && p.ends_with('/') {
                        return Err(format!(
                            "line {lnum}: Prefixes must not end with \"/\": {line}"
                        ));
                    }
                }
            }
            _ => {}
        }
        if let Some(m) = macro_name {
            let m = if m == "prefix" { "prefixes" } else { m };
            self.eng.table.push(m, None, field, LEVEL_SPEC);
            if is_main {
                self.eng
                    .table
                    .push(&m.to_ascii_uppercase(), None, field, LEVEL_SPEC);
            }
        }
        Ok(())
    }

    fn add_source(&mut self, is_patch: bool, line: &str, field: &str) -> R<()> {
        let name = if is_patch { "patch" } else { "source" };
        let after = &line[name.len()..];
        let numtxt: String = after
            .chars()
            .take_while(|c| *c != ':' && *c != ' ' && *c != '\t')
            .collect();
        let lnum = self.line_num;
        let auto = if is_patch {
            &mut self.autonum_patch
        } else {
            &mut self.autonum_source
        };
        let num: u32 = if numtxt.trim().is_empty() {
            *auto += 1;
            *auto as u32
        } else {
            match numtxt.parse::<u32>() {
                Ok(n) => {
                    if i64::from(n) > *auto {
                        *auto = i64::from(n);
                    }
                    n
                }
                Err(_) => return Err(format!("line {lnum}: Bad {name} number: {line}")),
            }
        };
        if self
            .src
            .sources
            .iter()
            .any(|s| s.is_patch == is_patch && s.num == num)
        {
            return Err(format!("{name} {num} defined multiple times"));
        }
        let file = match field.rfind('/') {
            Some(p) => {
                let tail = &field[p..];
                match tail.rfind('=') {
                    Some(q) => tail[q + 1..].to_string(),
                    None => tail[1..].to_string(),
                }
            }
            None => field.to_string(),
        };
        let path = self.expand(&format!("%{{_sourcedir}}/{file}"))?;
        let path = clean_path(&path);
        let up = if is_patch { "PATCH" } else { "SOURCE" };
        self.eng
            .table
            .push(&format!("{up}{num}"), None, &path, LEVEL_SPEC);
        self.eng
            .table
            .push(&format!("{up}URL{num}"), None, field, LEVEL_SPEC);
        self.lua_sources.push((is_patch, path.clone(), num));
        crate::lua::add_source(&mut self.eng, is_patch, &path, num)
            .map_err(|e| format!("line {lnum}: {e}"))?;
        self.src.sources.push(SourceEntry {
            num,
            is_patch,
            full: field.to_string(),
            file,
        });
        Ok(())
    }

    fn parse_description(&mut self) -> R<Part> {
        let l = self.line.clone();
        let lnum = self.line_num;
        // -l LANG: a translated description (rpm keeps one per language)
        let words = split_args(&l);
        let lang = words
            .iter()
            .position(|w| w == "-l")
            .and_then(|p| words.get(p + 1).cloned())
            .unwrap_or_else(|| "C".into());
        let idx = self.section_package(&l, true, false)?;
        let (next, _lines) = self.parse_lines(STRIP_TRAILINGSPACE | STRIP_COMMENTS)?;
        if let Some(i) = idx {
            if self.descriptions.contains(&(i, lang.clone())) {
                return Err(format!("line {lnum}: Second description"));
            }
            self.descriptions.push((i, lang.clone()));
            if lang == "C" {
                self.packages[i].has_description = true;
            }
        }
        Ok(next)
    }

    fn parse_files(&mut self) -> R<Part> {
        let l = self.line.clone();
        self.eng
            .table
            .push_literal("license", "%license", LEVEL_SPEC);
        let r = self.parse_files_inner(&l);
        self.eng.table.pop("license");
        r
    }

    fn parse_files_inner(&mut self, l: &str) -> R<Part> {
        let idx = self.section_package(l, true, false)?;
        if let Some(i) = idx
            && self.packages[i].has_files
        {
            let n = self.packages[i].name.clone();
            self.warnings.push(format!(
                "line {}: multiple %files for package '{n}'",
                self.line_num
            ));
            self.packages[i].files.clear();
        }
        let (next, lines) = self.parse_lines(STRIP_COMMENTS)?;
        if let Some(i) = idx {
            let p = &mut self.packages[i];
            p.has_files = true;
            for l in lines {
                for f in literal_files(&l) {
                    p.files.push(f);
                }
            }
        }
        Ok(next)
    }

    fn parse_script(&mut self, part: Part) -> R<Part> {
        match part {
            Part::Check => self.src.has_check = true,
            Part::BuildRequires => self.src.has_generate_buildrequires = true,
            _ => {}
        }
        if part != Part::Script {
            let (next, _) = self.parse_lines(0)?;
            return Ok(next);
        }
        let l = self.line.clone();
        let lnum = self.line_num;
        let t = l.trim_start();
        let kw: String = t.chars().take_while(|c| !c.is_ascii_whitespace()).collect();
        let kwl = kw.to_ascii_lowercase();
        let (tagflags, trigger, partname): (u32, bool, &str) = match kwl.as_str() {
            "%pre" => (sense::SCRIPT_PRE, false, "%pre"),
            "%post" => (sense::SCRIPT_POST, false, "%post"),
            "%preun" => (sense::SCRIPT_PREUN, false, "%preun"),
            "%postun" => (sense::SCRIPT_POSTUN, false, "%postun"),
            "%pretrans" => (sense::PRETRANS, false, "%pretrans"),
            "%posttrans" => (sense::POSTTRANS, false, "%posttrans"),
            "%verifyscript" => (sense::SCRIPT_VERIFY, false, "%verifyscript"),
            _ => (0, true, "%trigger"),
        };
        let mut head = l.clone();
        if trigger {
            // split at the " -- " separator
            let b = l.as_bytes();
            let mut found = None;
            let mut k = 0;
            while let Some(p) = l[k..].find("--") {
                let at = k + p;
                let s2 = at + 2;
                if at >= 1
                    && (b[at - 1] == b' ' || b[at - 1] == b'\t')
                    && b.get(s2).is_some_and(|c| *c == b' ' || *c == b'\t')
                {
                    found = Some(at);
                    break;
                }
                k = s2;
            }
            let Some(at) = found else {
                return Err(format!(
                    "line {lnum}: triggers must have --: {}",
                    l.trim_end()
                ));
            };
            if l[at + 2..].trim().is_empty() {
                return Err(format!(
                    "line {lnum}: missing trigger condition: {}",
                    l.trim_end()
                ));
            }
            head = l[..at].to_string();
        }
        let words = split_args(&head);
        let mut prog = "/bin/sh".to_string();
        let mut name: Option<String> = None;
        let mut by_name = false;
        let mut expand_flags = false;
        let mut positional = Vec::new();
        let mut i = 1;
        while i < words.len() {
            let w = words[i].clone();
            let val = |i: &mut usize, rest: &str| -> R<String> {
                if !rest.is_empty() {
                    return Ok(rest.to_string());
                }
                *i += 1;
                words
                    .get(*i)
                    .cloned()
                    .ok_or_else(|| format!("line {lnum}: Bad option {w}: {}", l.trim_end()))
            };
            if w.len() > 1 && w.starts_with('-') && !w.starts_with("--") {
                let c = w.as_bytes()[1];
                let rest = w[2..].to_string();
                match c {
                    b'p' => {
                        prog = val(&mut i, &rest)?;
                        if prog.starts_with('<') {
                            if !prog.ends_with('>') {
                                return Err(format!(
                                    "line {lnum}: internal script must end with '>': {prog}"
                                ));
                            }
                        } else if !prog.starts_with('/') {
                            return Err(format!(
                                "line {lnum}: script program must begin with '/': {prog}"
                            ));
                        }
                    }
                    b'n' => {
                        name = Some(val(&mut i, &rest)?);
                        by_name = true;
                    }
                    b'f' => {
                        val(&mut i, &rest)?;
                    }
                    b'P' => {
                        val(&mut i, &rest)?;
                    }
                    b'e' | b'q' => expand_flags = true,
                    _ => return Err(format!("line {lnum}: Bad option {w}: {}", l.trim_end())),
                }
            } else {
                positional.push(w);
            }
            i += 1;
        }
        if let Some(p) = positional.first() {
            if name.is_none() {
                name = Some(p.clone());
            }
            if positional.len() > 1 {
                return Err(format!("line {lnum}: Too many names: {}", l.trim_end()));
            }
        }
        let idx = match name {
            None => 0,
            Some(n) => {
                let full = if by_name {
                    n
                } else {
                    format!("{}-{}", self.packages[0].name, n)
                };
                match self.packages.iter().position(|p| p.name == full) {
                    Some(i) => i,
                    None => {
                        return Err(format!(
                            "line {lnum}: Package does not exist: {}",
                            l.trim_end()
                        ));
                    }
                }
            }
        };
        let prog_argv = split_args(&prog);
        let (next, _) = self.parse_lines(0)?;
        let _ = partname;
        let pkg = &mut self.packages[idx];
        let interp = prog_argv.first().cloned().unwrap_or_default();
        let rpmlib = |pkg: &mut Package, feat: &str, ver: &str| {
            merge_dep(
                &mut pkg.requires,
                Dep {
                    name: format!("rpmlib({feat})"),
                    flags: sense::RPMLIB | sense::LESS | sense::EQUAL,
                    evr: ver.into(),
                    rich: None,
                },
            );
        };
        if interp == "<lua>" {
            rpmlib(pkg, "BuiltinLuaScripts", "4.2.2-1");
        } else if interp.starts_with('<') {
            return Err(format!(
                "line {lnum}: unsupported internal script: {interp}"
            ));
        } else {
            merge_dep(
                &mut pkg.requires,
                Dep {
                    name: interp,
                    flags: tagflags | sense::INTERP,
                    evr: String::new(),
                    rich: None,
                },
            );
        }
        if expand_flags {
            rpmlib(pkg, "ScriptletExpansion", "4.9.0-1");
        }
        if !trigger && prog_argv.len() > 1 {
            rpmlib(pkg, "ScriptletInterpreterArgs", "4.0.3-1");
        }
        Ok(next)
    }

    fn parse_changelog(&mut self) -> R<Part> {
        if self.have_changelog {
            return Err(format!("line {}: second %changelog", self.line_num));
        }
        let (next, lines) = self.parse_lines(STRIP_COMMENTS)?;
        let text: String = lines.concat();
        let r = changelog_times(&text);
        // rpm refuses a second %changelog only once one has produced entries
        let entries = match &r {
            Ok((t, _)) | Err((t, _)) => !t.is_empty(),
        };
        self.have_changelog |= entries;
        match r {
            Ok((times, warns)) => {
                self.warnings.extend(warns);
                self.src.changelog_newest = times.first().copied();
            }
            Err((times, e)) => {
                self.src.changelog_newest = times.first().copied();
                self.errors.push(e);
            }
        }
        Ok(next)
    }

    fn parse_prep(&mut self) -> R<Part> {
        if self.have_prep {
            return Err(format!("line {}: second %prep", self.line_num));
        }
        self.have_prep = true;
        let (next, lines) = self.parse_lines(STRIP_PARSED)?;
        for l in lines {
            if l.starts_with("%setup") {
                let t = self.do_setup(&l)?;
                self.parsed.push_str(&t);
            } else if l.starts_with("%patch") {
                let t = self.do_patch(&l)?;
                self.parsed.push_str(&t);
            } else {
                self.parsed.push_str(&l);
            }
        }
        Ok(next)
    }

    fn find_source(&self, num: u32, patch: bool) -> Option<&SourceEntry> {
        self.src
            .sources
            .iter()
            .find(|s| s.num == num && s.is_patch == patch)
    }

    fn untar(&mut self, num: u32, quiet: bool) -> R<String> {
        let Some(s) = self.find_source(num, false) else {
            return Err(format!("No source number {num}"));
        };
        let file = s.file.clone();
        let path = clean_path(&self.expand(&format!("%{{_sourcedir}}/{file}"))?);
        let mut b = self.expand(&format!(
            "%{{__rpmuncompress}} -x {}{}",
            if quiet { "" } else { "-v " },
            path
        ))?;
        b.push_str("\nSTATUS=$?\nif [ $STATUS -ne 0 ]; then\n  exit $STATUS\nfi");
        Ok(b)
    }

    fn do_setup(&mut self, line: &str) -> R<String> {
        let mut out = String::new();
        let quiet = line[6..].contains(" -q");
        let args = split_args(line);
        let b = self.expand("%{_build_in_place}").unwrap_or_default();
        if b.trim().parse::<i64>().unwrap_or(0) != 0 {
            return Ok(out);
        }
        let (mut before, mut after) = (String::new(), String::new());
        let (mut create, mut leave, mut skip) = (false, false, false);
        let mut dir: Option<String> = None;
        let mut i = 1;
        let lnum = self.line_num;
        while i < args.len() {
            let a = args[i].clone();
            let take = |i: &mut usize, rest: &str| -> R<String> {
                if !rest.is_empty() {
                    Ok(rest.to_string())
                } else {
                    *i += 1;
                    args.get(*i).cloned().ok_or_else(|| {
                        format!("line {lnum}: Bad %setup option {a}: missing argument to an option")
                    })
                }
            };
            if let Some(flags) = a.strip_prefix('-').filter(|_| a.len() > 1) {
                let cs: Vec<char> = flags.chars().collect();
                let mut k = 0;
                while k < cs.len() {
                    let c = cs[k];
                    let rest: String = cs[k + 1..].iter().collect();
                    match c {
                        'a' | 'b' => {
                            let v = take(&mut i, &rest)?;
                            let Ok(n) = v.parse::<u32>() else {
                                return Err(format!("line {lnum}: Bad arg to %setup: {v}"));
                            };
                            let t = self.untar(n, quiet)?;
                            let tgt = if c == 'a' { &mut after } else { &mut before };
                            tgt.push_str(&t);
                            tgt.push('\n');
                            break;
                        }
                        'n' => {
                            dir = Some(take(&mut i, &rest)?);
                            break;
                        }
                        'c' => create = true,
                        'D' => leave = true,
                        'T' => skip = true,
                        'q' => {}
                        _ => {
                            return Err(format!(
                                "line {lnum}: Bad %setup option {a}: unknown option"
                            ));
                        }
                    }
                    k += 1;
                }
            }
            i += 1;
        }
        let sub = match dir {
            Some(d) => d,
            None => format!("{}-{}", self.packages[0].name, self.packages[0].version),
        };
        self.eng.table.push("buildsubdir", None, &sub, LEVEL_SPEC);
        let bd = self.expand("%{_builddir}")?;
        out.push_str(&format!("cd '{}'\n", clean_path(&bd)));
        if !leave {
            out.push_str(&self.expand("rm -rf '%{buildsubdir}'")?);
            out.push('\n');
        }
        out.push_str(&before);
        if create {
            out.push_str(&self.expand("%{__mkdir_p} '%{buildsubdir}'\ncd '%{buildsubdir}'")?);
            out.push('\n');
        }
        if !create && !skip {
            out.push_str(&self.untar(0, quiet)?);
            out.push('\n');
        }
        if !create {
            out.push_str(&self.expand("cd '%{buildsubdir}'")?);
            out.push('\n');
        }
        if create && !skip {
            out.push_str(&self.untar(0, quiet)?);
            out.push('\n');
        }
        out.push_str(&after);
        let fix = self.expand("%{_fixperms} .")?;
        if !fix.starts_with('%') {
            out.push_str(&fix);
            out.push('\n');
        }
        Ok(out)
    }

    fn do_patch(&mut self, line: &str) -> R<String> {
        let lnum = self.line_num;
        let conv;
        let line2 = if !line[6..].starts_with([' ', '\t', '\n']) && line.len() > 6 {
            conv = format!("%patch -P {}", &line[6..]);
            conv.as_str()
        } else {
            line
        };
        let args = split_args(line2);
        let fuzz_def = self.expand("%{_default_patch_fuzz}").unwrap_or_default();
        let mut fuzz: i64 = fuzz_def.trim().parse().unwrap_or(0);
        let (mut p, mut rev, mut empt, mut utc) = (0i64, false, false, false);
        let (mut b, mut d, mut o): (Option<String>, Option<String>, Option<String>) =
            (None, None, None);
        let mut nums: Vec<String> = Vec::new();
        let mut i = 1;
        let mut positional = Vec::new();
        while i < args.len() {
            let a = args[i].clone();
            if a.len() > 1 && a.starts_with('-') && !a.starts_with("--") {
                let c = a.as_bytes()[1] as char;
                let rest = a[2..].to_string();
                let val = |i: &mut usize| -> R<String> {
                    if !rest.is_empty() {
                        Ok(rest.clone())
                    } else {
                        *i += 1;
                        args.get(*i)
                            .cloned()
                            .ok_or_else(|| format!("missing argument: {a}: {}", line.trim_end()))
                    }
                };
                match c {
                    'P' => nums.push(val(&mut i)?),
                    'p' => {
                        p = val(&mut i)?
                            .parse()
                            .map_err(|_| format!("bad number: {a}: {}", line.trim_end()))?
                    }
                    'F' => {
                        fuzz = val(&mut i)?
                            .parse()
                            .map_err(|_| format!("bad number: {a}: {}", line.trim_end()))?
                    }
                    'R' => rev = true,
                    'E' => empt = true,
                    'Z' => utc = true,
                    'b' | 'z' => b = Some(val(&mut i)?),
                    'd' => d = Some(val(&mut i)?),
                    'o' => o = Some(val(&mut i)?),
                    _ => return Err(format!("unknown option: {a}: {}", line.trim_end())),
                }
            } else {
                positional.push(a);
            }
            i += 1;
        }
        let _ = lnum;
        nums.extend(positional);
        if nums.is_empty() {
            self.warnings
                .push(format!("Patch number not specified: {}", line.trim_end()));
            nums.push("0".into());
        }
        let mut out = String::new();
        for n in nums {
            let Ok(num) = n.parse::<u32>() else {
                return Err(format!("Invalid patch number {n}: {}", line.trim_end()));
            };
            let Some(s) = self.find_source(num, true) else {
                return Err(format!("No patch number {num}"));
            };
            let file = s.file.clone();
            let path = clean_path(&self.expand(&format!("%{{_sourcedir}}/{file}"))?);
            let flags = self.expand("%{?_default_patch_flags}")?;
            let mut args = format!(
                "{} -p{} {}{}{}{}",
                flags,
                p,
                b.as_ref()
                    .map(|b| format!("-b --suffix {b}"))
                    .unwrap_or_default(),
                if fuzz >= 0 {
                    format!(" --fuzz={fuzz}")
                } else {
                    String::new()
                },
                d.as_ref().map(|d| format!(" -d {d}")).unwrap_or_default(),
                o.as_ref().map(|o| format!(" -o {o}")).unwrap_or_default(),
            );
            if rev {
                args.push_str(" -R");
            }
            if empt {
                args.push_str(" -E");
            }
            if utc {
                args.push_str(" -Z");
            }
            let cmd = if not_compressed(Path::new(&path)) {
                self.expand(&format!("%{{__patch}} {args} < {path}"))?
            } else {
                self.expand(&format!(
                    "{{ %{{__rpmuncompress}} {path} || echo patch_fail ; }} | %{{__patch}} {args}"
                ))?
            };
            out.push_str(&format!("echo \"Patch #{num} ({file}):\"\n{cmd}\n\n"));
        }
        Ok(out)
    }

    fn parse_empty(&mut self, prev: Part) -> R<Part> {
        let rest = self.line.trim_start()[4..].trim();
        if !rest.is_empty() {
            return Err(format!(
                "line {}: %end doesn't take any arguments: {}",
                self.line_num, self.line
            ));
        }
        if prev == Part::Empty {
            return Err(format!(
                "line {}: %end not expected here, no section to close: {}",
                self.line_num, self.line
            ));
        }
        if !self.read_line(STRIP_TRAILINGSPACE | STRIP_COMMENTS)? {
            return Ok(Part::None);
        }
        loop {
            let p = is_part(&self.line);
            if p != Part::None {
                return Ok(p);
            }
            if !self.line.trim().is_empty() {
                return Err(format!(
                    "line {} doesn't belong to any section: {}",
                    self.line_num, self.line
                ));
            }
            if !self.read_line(STRIP_TRAILINGSPACE | STRIP_COMMENTS)? {
                return Ok(Part::None);
            }
        }
    }

    fn parse_list(&mut self, patch: bool) -> R<Part> {
        let (next, lines) = self.parse_lines(STRIP_TRAILINGSPACE | STRIP_COMMENTS)?;
        for l in lines {
            let t = l.trim();
            if t.is_empty() {
                continue;
            }
            let kw = if patch { "Patch" } else { "Source" };
            self.add_source(patch, kw, t)?;
        }
        Ok(next)
    }

    fn run(&mut self) -> R<()> {
        let mut part = Part::Preamble;
        let mut prev = Part::Empty;
        let mut initial = true;
        while part != Part::None {
            let stored = part;
            part = match part {
                Part::Preamble => {
                    let r = self.parse_preamble(initial)?;
                    initial = false;
                    r
                }
                Part::Empty => self.parse_empty(prev)?,
                Part::PatchList => self.parse_list(true)?,
                Part::SourceList => self.parse_list(false)?,
                Part::Prep => self.parse_prep()?,
                Part::Description => self.parse_description()?,
                Part::Files => self.parse_files()?,
                Part::Changelog => self.parse_changelog()?,
                Part::Policies => self.parse_lines(STRIP_TRAILINGSPACE | STRIP_COMMENTS)?.0,
                p @ (Part::Build
                | Part::Install
                | Part::Check
                | Part::Clean
                | Part::Conf
                | Part::BuildRequires
                | Part::Script) => self.parse_script(p)?,
                Part::None => Part::None,
            };
            prev = stored;
        }
        for p in &self.packages {
            if !p.has_description {
                return Err(format!("Package has no %description: {}", p.name));
            }
        }
        // addTargets
        let arch = self.expand("%{_target_cpu}")?;
        let isa = self.expand("%{?_isa}")?;
        for i in 0..self.packages.len() {
            if !self.packages[i].arch_set {
                self.packages[i].arch = arch.clone();
            }
            let evr = self.packages[i].evr();
            let name = self.packages[i].name.clone();
            let p = &mut self.packages[i];
            merge_dep(
                &mut p.provides,
                Dep {
                    name: name.clone(),
                    flags: sense::EQUAL,
                    evr: evr.clone(),
                    rich: None,
                },
            );
            let isaprov = format!("{name}{isa}");
            if p.arch != "noarch" && isaprov != name {
                merge_dep(
                    &mut p.provides,
                    Dep {
                        name: isaprov,
                        flags: sense::EQUAL,
                        evr,
                        rich: None,
                    },
                );
            }
        }
        Ok(())
    }
}

enum Classified {
    Retry,
    Done,
}

const BUILDARCH_RESTART: &str = "\u{0}buildarch-restart";

fn strip_loc(m: &str) -> String {
    m.to_string()
}

fn same_modulo_percent(a: &str, b: &str) -> bool {
    a.replace("%%", "%") == b
}

fn comment_diff<'a>(a: &'a str, _b: &str) -> &'a str {
    a.trim_start()
}

/// Whether a raw (unexpanded) logical line continues on the next line, as rpm decides,
/// scanned one physical line at a time (each ends in a newline, except maybe the file's
/// last), so a long continued block is scanned once instead of once per line.
#[derive(Default, Clone, Copy)]
struct Continuation {
    pc: i32,
    bc: i32,
    xc: i32,
    nc: bool,
}

impl Continuation {
    fn open(&self) -> bool {
        self.pc != 0 || self.bc != 0 || self.xc != 0 || self.nc
    }

    fn scan(&mut self, b: &[u8]) {
        // most lines hold none of the bytes that matter
        let quiet = self.pc == 0 && self.bc == 0 && self.xc == 0;
        if quiet && !b.iter().any(|&c| c == b'%' || c == b'\\') {
            if b.contains(&b'\n') {
                self.nc = false;
            }
            return;
        }
        let Continuation {
            mut pc,
            mut bc,
            mut xc,
            mut nc,
        } = *self;
        let mut p = 0;
        while p < b.len() {
            match b[p] {
                b'\\' => match b.get(p + 1) {
                    Some(b'\n') => {
                        p += 1;
                        nc = true;
                    }
                    None => {}
                    Some(_) => p += 1,
                },
                b'\n' => nc = false,
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
        *self = Continuation { pc, bc, xc, nc };
    }
}

/// Splits arguments the way popt's `poptParseArgvString` does (quotes and backslashes).
pub fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut quote: Option<char> = None;
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) if c == '\\' => {
                if let Some(n) = it.next() {
                    cur.push(n);
                }
            }
            Some(_) => cur.push(c),
            None => {
                if c.is_ascii_whitespace() {
                    if have {
                        out.push(std::mem::take(&mut cur));
                        have = false;
                    }
                    continue;
                }
                have = true;
                match c {
                    '"' | '\'' => quote = Some(c),
                    '\\' => {
                        if let Some(n) = it.next() {
                            cur.push(n);
                        }
                    }
                    _ => cur.push(c),
                }
            }
        }
    }
    if have {
        out.push(cur);
    }
    out
}

fn check_chars(s: &str, name: bool) -> Result<(), char> {
    for (i, c) in s.chars().enumerate() {
        let ok = c.is_ascii_alphanumeric() || (name && "-._+%{}".contains(c));
        if !ok || (i == 0 && name && !(c.is_ascii_alphanumeric() || "_%".contains(c))) {
            return Err(c);
        }
    }
    Ok(())
}

/// Inserts keeping rpm's order (name, then EVR, then flags) and dropping duplicates.
fn merge_dep(list: &mut Vec<Dep>, d: Dep) {
    let key = |x: &Dep| {
        (
            x.name.clone().into_bytes(),
            x.evr.clone().into_bytes(),
            x.flags,
        )
    };
    let k = key(&d);
    match list.binary_search_by(|x| key(x).cmp(&k)) {
        Ok(_) => {}
        Err(pos) => list.insert(pos, d),
    }
}

fn clean_path(p: &str) -> String {
    // rpmGetPath collapses duplicate slashes
    let mut out = String::with_capacity(p.len());
    let mut prev = '\0';
    for c in p.chars() {
        if c == '/' && prev == '/' {
            continue;
        }
        out.push(c);
        prev = c;
    }
    out
}

fn not_compressed(p: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let mut buf = [0u8; 8];
    let n = std::io::Read::read(&mut f, &mut buf).unwrap_or(0);
    let b = &buf[..n];
    let compressed = b.starts_with(&[0x1f, 0x8b])
        || b.starts_with(b"BZh")
        || b.starts_with(&[0xfd, b'7', b'z', b'X', b'Z'])
        || b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || b.starts_with(b"PK\x03\x04")
        || b.starts_with(&[0x1f, 0x9d])
        || b.starts_with(&[0x1f, 0x1e])
        || b.starts_with(b"LZIP")
        || b.starts_with(&[0x89, b'L', b'Z', b'O'])
        || b.starts_with(b"7z\xbc\xaf")
        || (b.len() >= 5 && b[0] == 0x5d && b[1] == 0 && b[2] == 0);
    !compressed
}

/// Literal paths from a `%files` line (directives and their arguments removed).
fn literal_files(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('%') {
            let name_end = r
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(r.len());
            let mut after = &r[name_end..];
            if after.starts_with('(')
                && let Some(c) = after.find(')')
            {
                after = &after[c + 1..];
            }
            rest = after;
            continue;
        }
        break;
    }
    for w in split_args(rest) {
        if w.starts_with('/') {
            out.push(w);
        }
    }
    out
}

/// The entries read before the problem, and rpm's message.
type ChangelogError = (Vec<i64>, String);

/// Changelog entry times, newest first, as rpm validates them.
fn changelog_times(text: &str) -> Result<(Vec<i64>, Vec<String>), ChangelogError> {
    let mut times = Vec::new();
    let warns = Vec::new();
    let s = text.trim_start();
    let mut rest = s;
    let mut last: Option<i64> = None;
    while !rest.is_empty() {
        if !rest.starts_with('*') {
            return Err((times, "%changelog entries must start with *".into()));
        }
        let Some(nl) = rest.find('\n') else {
            return Err((times, "incomplete %changelog entry".into()));
        };
        let date = rest[1..nl].trim_start();
        let Some(t) = parse_changelog_date(date) else {
            return Err((times, format!("bad date in %changelog: {date}")));
        };
        if let Some(l) = last
            && l < t
        {
            return Err((
                times,
                "%changelog not in descending chronological order".into(),
            ));
        }
        last = Some(t);
        times.push(t);
        let body = &rest[nl + 1..];
        // next entry: a '*' at the start of a line
        let mut next = body.len();
        let bb = body.as_bytes();
        for i in 1..bb.len() {
            if bb[i] == b'*' && bb[i - 1] == b'\n' {
                next = i;
                break;
            }
        }
        if body.trim().is_empty() {
            return Err((times, "no description in %changelog".into()));
        }
        rest = &body[next..];
    }
    Ok((times, warns))
}

fn parse_changelog_date(s: &str) -> Option<i64> {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const LEN: [i64; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let w: Vec<&str> = s.split_ascii_whitespace().collect();
    let w0 = *w.first()?;
    DAYS.iter().position(|d| *d == w0)?;
    let w1 = *w.get(1)?;
    let mon = MONTHS.iter().position(|m| *m == w1)? as i64;
    let day: i64 = w.get(2)?.parse().ok()?;
    if !(0..=LEN[mon as usize]).contains(&day) {
        return None;
    }
    let y = w.get(3)?;
    let (year, hms) = if y.as_bytes().get(1) == Some(&b':') || y.as_bytes().get(2) == Some(&b':') {
        let parts: Vec<i64> = y.split(':').filter_map(|x| x.parse().ok()).collect();
        if parts.len() != 3 {
            return None;
        }
        w.get(4)?;
        (
            w.get(5)?.parse::<i64>().ok()?,
            parts[0] * 3600 + parts[1] * 60 + parts[2],
        )
    } else {
        (y.parse::<i64>().ok()?, 12 * 3600)
    };
    if !(1990..3000).contains(&year) {
        return None;
    }
    Some(days_from_civil(year, mon + 1, day) * 86400 + hms)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Reads a spec file. `defines` and macro files are already in `cfg`.
pub fn read_spec(path: &Path, cfg: &ReaderConfig) -> Result<Spec, SpecError> {
    match read_once(path, cfg, None) {
        Err(Restart::Again(archs, table)) => {
            // rpm restarts the parse per BuildArch with %_target_cpu set to it; macros the
            // first pass defined before the BuildArch line stay defined.
            let first = archs.first().cloned().unwrap_or_else(|| "noarch".into());
            match read_once(path, cfg, Some((first, *table))) {
                Err(Restart::Again(..)) => Err(SpecError {
                    file: path.to_path_buf(),
                    line: 0,
                    message: "BuildArch restart loop".into(),
                    notices: Vec::new(),
                }),
                Err(Restart::Failed(e)) => Err(e),
                Ok(s) => Ok(s),
            }
        }
        Err(Restart::Failed(e)) => Err(e),
        Ok(s) => Ok(s),
    }
}

enum Restart {
    Again(Vec<String>, Box<MacroTable>),
    Failed(SpecError),
}

fn read_once(
    path: &Path,
    cfg: &ReaderConfig,
    restart: Option<(String, MacroTable)>,
) -> Result<Spec, Restart> {
    let target_cpu = restart.as_ref().map(|r| r.0.clone());
    let mut table = match restart {
        Some((_, t)) => t,
        None => (*cfg.macros).clone(),
    };
    if let Some(cpu) = &target_cpu {
        table.push("_target_cpu", None, cpu, crate::macros::LEVEL_RPMRC);
    }
    if cfg.sourcedir_is_specdir && target_cpu.is_none() {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        // Absolute, as rpmbuild's is: a contained `%(cat %{_sourcedir}/f)` runs in the
        // spec's directory, not in keel's working directory.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        table.push(
            "_sourcedir",
            None,
            &dir.to_string_lossy(),
            crate::macros::LEVEL_CMDLINE,
        );
    }
    table.push("_docdir", None, "%{_defaultdocdir}", LEVEL_SPEC);
    table.push("_licensedir", None, "%{_defaultlicensedir}", LEVEL_SPEC);
    let mut eng = Engine::new(table, cfg.engine.clone());
    let spec_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    eng.shell_scope = Some(if spec_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        spec_dir.clone()
    });
    let mut r = Reader {
        cfg,
        eng,
        files: Vec::new(),
        include_depth: 0,
        line_num: 0,
        pending: None,
        stack: vec![ReadLevel {
            reading: true,
            readable: false,
            last: LineType::Endif,
            line: 0,
        }],
        parsed: String::new(),
        line: String::new(),
        spec_dir,
        spec_path: path.to_path_buf(),
        packages: Vec::new(),
        src: SourcePackage::default(),
        warnings: Vec::new(),
        errors: Vec::new(),
        notices: Vec::new(),
        descriptions: Vec::new(),
        autonum_source: -1,
        autonum_patch: -1,
        have_prep: false,
        have_changelog: false,
        recursing: target_cpu.is_some(),
        build_archs_hit: false,
        lua_sources: Vec::new(),
    };
    let _ = r.cfg;
    let res = r.push_file(path.to_path_buf()).and_then(|()| r.run());
    match res {
        Ok(()) => Ok(Spec {
            path: r.spec_path,
            parsed: r.parsed,
            packages: r.packages,
            source: r.src,
            warnings: r.warnings,
            errors: r.errors,
            notices: r.notices,
        }),
        Err(m) if m == BUILDARCH_RESTART => {
            while r.files.pop().is_some() {
                r.eng.table.pop("__file_name");
            }
            Err(Restart::Again(
                r.src.build_archs.clone(),
                Box::new(std::mem::take(&mut r.eng.table)),
            ))
        }
        Err(m) => Err(Restart::Failed(SpecError {
            file: path.to_path_buf(),
            line: r.line_num,
            message: m,
            notices: r.notices,
        })),
    }
}

impl Spec {
    /// Everything rpm printed to stderr while reading, in order of kind.
    pub fn diagnostics(&self) -> impl Iterator<Item = String> + '_ {
        self.warnings
            .iter()
            .map(|w| format!("warning: {w}"))
            .chain(self.errors.iter().map(|e| format!("error: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_is_tracked_line_by_line() {
        let open_after = |lines: &[&str]| {
            let mut c = Continuation::default();
            for l in lines {
                c.scan(l.as_bytes());
            }
            c.open()
        };
        assert!(open_after(&["%{lua:\n"]));
        assert!(open_after(&["%{lua:\n", "if x then {\n"]));
        assert!(!open_after(&["%{lua:\n", "if x then {\n", "} end }\n"]));
        assert!(open_after(&["a \\\n"]));
        assert!(!open_after(&["a \\\n", "b\n"]));
        assert!(!open_after(&["100% done { (\n"]));
        assert!(open_after(&["%(echo (\n"]));
        assert!(!open_after(&["%%{ x\n"]));
        assert!(open_after(&["x\n", "%[1 +\n"]));
    }

    #[test]
    fn changelog_dates() {
        assert!(parse_changelog_date("Mon Jan 01 2024 A <a@b> - 1").is_some());
        assert!(parse_changelog_date("Xyz Jan 01 2024").is_none());
        assert!(parse_changelog_date("Mon Jan 32 2024").is_none());
        let (t, _) =
            changelog_times("* Tue Jan 02 2024 a\n- x\n* Mon Jan 01 2024 b\n- y\n").unwrap();
        assert_eq!(t[0] - t[1], 86400);
        assert!(changelog_times("* Mon Jan 01 2024 a\n- x\n* Tue Jan 02 2024 b\n- y\n").is_err());
    }

    #[test]
    fn popt_like_split() {
        assert_eq!(
            split_args("a 'b c' \"d\\\"e\" f\\ g"),
            vec!["a", "b c", "d\"e", "f g"]
        );
    }

    #[test]
    fn dep_merge_sorts_and_dedups() {
        let mut v = Vec::new();
        for n in ["zlib", "gcc", "(a or b)", "aaa", "zlib"] {
            merge_dep(
                &mut v,
                Dep {
                    name: n.into(),
                    flags: 0,
                    evr: String::new(),
                    rich: None,
                },
            );
        }
        let n: Vec<&str> = v.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(n, vec!["(a or b)", "aaa", "gcc", "zlib"]);
    }
}
