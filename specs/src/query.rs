//! rpm's query format (`--qf`) over the headers a spec would produce.
//!
//! Supported: literal text with backslash escapes, `%{TAG}`, `%{=TAG}`, `%{TAG:type}`
//! (the type is ignored), field widths (`%-20{TAG}`), arrays `[...]` and the
//! `%|TAG?{yes}:{no}|` conditional. Tags are those a parsed spec can fill in.

use std::collections::HashMap;

use crate::deps::Dep;
use crate::spec::{Package, Spec};

/// One header: scalar and array tags by upper-case name.
#[derive(Debug, Clone, Default)]
pub struct Header {
    scalars: HashMap<&'static str, String>,
    arrays: HashMap<&'static str, Vec<String>>,
}

fn nevrs(d: &[Dep]) -> Vec<String> {
    d.iter().map(Dep::nevr).collect()
}

fn names(d: &[Dep]) -> Vec<String> {
    d.iter().map(|x| x.name.clone()).collect()
}

impl Header {
    fn common(&mut self, p: &Package) {
        self.scalars.insert("NAME", p.name.clone());
        if let Some(e) = p.epoch {
            self.scalars.insert("EPOCH", e.to_string());
        }
        self.scalars.insert("VERSION", p.version.clone());
        self.scalars.insert("RELEASE", p.release.clone());
        self.scalars.insert("ARCH", p.arch.clone());
        self.scalars.insert("SUMMARY", p.summary.clone());
        self.scalars.insert("LICENSE", p.license.clone());
        if !p.url.is_empty() {
            self.scalars.insert("URL", p.url.clone());
        }
        let e = p.epoch.map(|e| format!("{e}:")).unwrap_or_default();
        self.scalars
            .insert("EVR", format!("{e}{}-{}", p.version, p.release));
        self.scalars
            .insert("NVR", format!("{}-{}-{}", p.name, p.version, p.release));
        self.scalars
            .insert("NEVR", format!("{}-{e}{}-{}", p.name, p.version, p.release));
        // headers read from a spec carry no SOURCERPM, so rpm treats them as source headers
        self.scalars.insert(
            "NVRA",
            format!("{}-{}-{}.src", p.name, p.version, p.release),
        );
        self.scalars.insert(
            "NEVRA",
            format!("{}-{e}{}-{}.src", p.name, p.version, p.release),
        );
    }

    fn set_deps(&mut self, kind: &'static str, d: &[Dep]) {
        if d.is_empty() {
            return;
        }
        let (nevr, name): (&'static str, &'static str) = match kind {
            "PROVIDE" => ("PROVIDENEVRS", "PROVIDENAME"),
            "REQUIRE" => ("REQUIRENEVRS", "REQUIRENAME"),
            "CONFLICT" => ("CONFLICTNEVRS", "CONFLICTNAME"),
            "OBSOLETE" => ("OBSOLETENEVRS", "OBSOLETENAME"),
            "RECOMMEND" => ("RECOMMENDNEVRS", "RECOMMENDNAME"),
            "SUGGEST" => ("SUGGESTNEVRS", "SUGGESTNAME"),
            "SUPPLEMENT" => ("SUPPLEMENTNEVRS", "SUPPLEMENTNAME"),
            _ => ("ENHANCENEVRS", "ENHANCENAME"),
        };
        self.arrays.insert(nevr, nevrs(d));
        self.arrays.insert(name, names(d));
    }

    /// The header of a binary package.
    pub fn binary(p: &Package) -> Header {
        let mut h = Header::default();
        h.common(p);
        h.set_deps("PROVIDE", &p.provides);
        h.set_deps("REQUIRE", &p.requires);
        h.set_deps("CONFLICT", &p.conflicts);
        h.set_deps("OBSOLETE", &p.obsoletes);
        h.set_deps("RECOMMEND", &p.recommends);
        h.set_deps("SUGGEST", &p.suggests);
        h.set_deps("SUPPLEMENT", &p.supplements);
        h.set_deps("ENHANCE", &p.enhances);
        h
    }

    /// The header of the source package (`--srpm`).
    pub fn source(spec: &Spec) -> Header {
        let mut h = Header::default();
        if let Some(main) = spec.packages.first() {
            h.common(main);
        }
        let s = &spec.source;
        h.set_deps("REQUIRE", &s.build_requires);
        h.set_deps("CONFLICT", &s.build_conflicts);
        let provides: Vec<String> = spec
            .packages
            .iter()
            .filter(|p| p.has_files)
            .map(|p| format!("{} = {}", p.name, p.evr()))
            .collect();
        if !provides.is_empty() {
            h.arrays.insert(
                "PROVIDENAME",
                spec.packages
                    .iter()
                    .filter(|p| p.has_files)
                    .map(|p| p.name.clone())
                    .collect(),
            );
            h.arrays.insert("PROVIDENEVRS", provides);
        }
        for (k, v) in [
            ("EXCLUSIVEARCH", &s.exclusive_arch),
            ("EXCLUDEARCH", &s.exclude_arch),
            ("EXCLUSIVEOS", &s.exclusive_os),
            ("EXCLUDEOS", &s.exclude_os),
            ("BUILDARCHS", &s.build_archs),
        ] {
            if !v.is_empty() {
                h.arrays.insert(k, v.clone());
            }
        }
        let srcs: Vec<String> = s
            .sources
            .iter()
            .rev()
            .filter(|x| !x.is_patch)
            .map(|x| x.file.clone())
            .collect();
        let pats: Vec<String> = s
            .sources
            .iter()
            .rev()
            .filter(|x| x.is_patch)
            .map(|x| x.file.clone())
            .collect();
        if !srcs.is_empty() {
            h.arrays.insert("SOURCE", srcs);
        }
        if !pats.is_empty() {
            h.arrays.insert("PATCH", pats);
        }
        h
    }

    fn count(&self, tag: &str) -> Option<usize> {
        if let Some(a) = self.arrays.get(tag) {
            return Some(a.len());
        }
        self.scalars.get(tag).map(|_| 1)
    }

    fn value(&self, tag: &str, i: usize) -> Option<String> {
        if let Some(a) = self.arrays.get(tag) {
            return a.get(i).cloned();
        }
        self.scalars.get(tag).cloned()
    }
}

#[derive(Debug, Clone)]
enum Item {
    Lit(String),
    Tag {
        name: String,
        repeat: bool,
        width: String,
    },
    Array(Vec<Item>),
    Cond {
        tag: String,
        yes: Vec<Item>,
        no: Vec<Item>,
    },
}

/// A compiled query format.
#[derive(Debug, Clone)]
pub struct QueryFormat {
    items: Vec<Item>,
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('a') => out.push('\x07'),
            Some('b') => out.push('\x08'),
            Some('f') => out.push('\x0c'),
            Some('v') => out.push('\x0b'),
            Some('0') => out.push('\0'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

impl QueryFormat {
    /// Compiles a format; the error is rpm's message.
    pub fn parse(fmt: &str) -> Result<QueryFormat, String> {
        let chars: Vec<char> = fmt.chars().collect();
        let mut pos = 0;
        let items = parse_items(&chars, &mut pos, None)?;
        Ok(QueryFormat { items })
    }

    /// Renders the format over one header.
    pub fn render(&self, h: &Header) -> Result<String, String> {
        let mut out = String::new();
        render_items(&self.items, h, None, &mut out)?;
        Ok(out)
    }
}

fn parse_items(c: &[char], pos: &mut usize, end: Option<char>) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut lit = String::new();
    while *pos < c.len() {
        let ch = c[*pos];
        if Some(ch) == end {
            *pos += 1;
            if !lit.is_empty() {
                items.push(Item::Lit(unescape(&lit)));
            }
            return Ok(items);
        }
        match ch {
            '\\' => {
                lit.push(ch);
                if *pos + 1 < c.len() {
                    lit.push(c[*pos + 1]);
                }
                *pos += 2;
            }
            '[' => {
                if !lit.is_empty() {
                    items.push(Item::Lit(unescape(&std::mem::take(&mut lit))));
                }
                *pos += 1;
                let inner = parse_items(c, pos, Some(']'))?;
                items.push(Item::Array(inner));
            }
            '%' => {
                if c.get(*pos + 1) == Some(&'%') {
                    lit.push('%');
                    *pos += 2;
                    continue;
                }
                if !lit.is_empty() {
                    items.push(Item::Lit(unescape(&std::mem::take(&mut lit))));
                }
                *pos += 1;
                let mut width = String::new();
                while *pos < c.len() && (c[*pos] == '-' || c[*pos].is_ascii_digit()) {
                    width.push(c[*pos]);
                    *pos += 1;
                }
                match c.get(*pos) {
                    Some('{') => {
                        *pos += 1;
                        let mut t = String::new();
                        while *pos < c.len() && c[*pos] != '}' {
                            t.push(c[*pos]);
                            *pos += 1;
                        }
                        if *pos >= c.len() {
                            return Err("missing } in query format".into());
                        }
                        *pos += 1;
                        let repeat = t.starts_with('=');
                        let t = t.trim_start_matches('=');
                        let name = t.split(':').next().unwrap_or("").to_ascii_uppercase();
                        items.push(Item::Tag {
                            name,
                            repeat,
                            width,
                        });
                    }
                    Some('|') => {
                        *pos += 1;
                        let mut t = String::new();
                        while *pos < c.len() && c[*pos] != '?' {
                            t.push(c[*pos]);
                            *pos += 1;
                        }
                        *pos += 1;
                        if c.get(*pos) != Some(&'{') {
                            return Err("{ expected after ? in expression".into());
                        }
                        *pos += 1;
                        let yes = parse_items(c, pos, Some('}'))?;
                        if c.get(*pos) != Some(&':') || c.get(*pos + 1) != Some(&'{') {
                            return Err("{ expected after : in expression".into());
                        }
                        *pos += 2;
                        let no = parse_items(c, pos, Some('}'))?;
                        if c.get(*pos) != Some(&'|') {
                            return Err("| expected at end of expression".into());
                        }
                        *pos += 1;
                        items.push(Item::Cond {
                            tag: t.trim_start_matches('=').to_ascii_uppercase(),
                            yes,
                            no,
                        });
                    }
                    _ => return Err("missing { after %".into()),
                }
            }
            _ => {
                lit.push(ch);
                *pos += 1;
            }
        }
    }
    if end.is_some() {
        return Err(format!("missing {} in query format", end.unwrap_or(']')));
    }
    if !lit.is_empty() {
        items.push(Item::Lit(unescape(&lit)));
    }
    Ok(items)
}

fn pad(v: &str, width: &str) -> String {
    if width.is_empty() {
        return v.to_string();
    }
    let left = width.starts_with('-');
    let n: usize = width.trim_start_matches('-').parse().unwrap_or(0);
    if left {
        format!("{v:<n$}")
    } else {
        format!("{v:>n$}")
    }
}

fn render_items(
    items: &[Item],
    h: &Header,
    idx: Option<usize>,
    out: &mut String,
) -> Result<(), String> {
    for it in items {
        match it {
            Item::Lit(s) => out.push_str(s),
            Item::Tag {
                name,
                repeat,
                width,
            } => {
                let i = if *repeat { 0 } else { idx.unwrap_or(0) };
                match h.value(name, i) {
                    Some(v) => out.push_str(&pad(&v, width)),
                    None => out.push_str(&pad("(none)", width)),
                }
            }
            Item::Cond { tag, yes, no } => {
                let present = h.count(tag).is_some();
                render_items(if present { yes } else { no }, h, idx, out)?;
            }
            Item::Array(inner) => {
                let mut n: Option<usize> = None;
                let mut tags = Vec::new();
                collect_tags(inner, &mut tags);
                for (t, rep) in &tags {
                    if *rep {
                        continue;
                    }
                    let c = h.count(t).unwrap_or(0);
                    match n {
                        None => n = Some(c),
                        Some(m) if m != c && c != 0 && m != 0 => {
                            return Err("array iterator used with different sized arrays".into());
                        }
                        Some(m) => n = Some(m.max(c)),
                    }
                }
                for i in 0..n.unwrap_or(0) {
                    render_items(inner, h, Some(i), out)?;
                }
            }
        }
    }
    Ok(())
}

fn collect_tags(items: &[Item], out: &mut Vec<(String, bool)>) {
    for it in items {
        match it {
            Item::Tag { name, repeat, .. } => out.push((name.clone(), *repeat)),
            Item::Cond { yes, no, .. } => {
                collect_tags(yes, out);
                collect_tags(no, out);
            }
            Item::Array(i) => collect_tags(i, out),
            Item::Lit(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_arrays_and_repeat() {
        let mut h = Header::default();
        h.scalars.insert("NAME", "t".into());
        h.arrays
            .insert("PROVIDENEVRS", vec!["a".into(), "b = 1".into()]);
        let q = QueryFormat::parse(
            "%{NAME}|%{EPOCH}\\n[%{=NAME} P %{PROVIDENEVRS}\\n][%{REQUIRENEVRS} ]|",
        )
        .unwrap();
        assert_eq!(q.render(&h).unwrap(), "t|(none)\nt P a\nt P b = 1\n|");
        let q = QueryFormat::parse("[%{NAME} %{PROVIDENEVRS}]").unwrap();
        assert!(q.render(&h).is_err());
        let q = QueryFormat::parse("%|VERBOSE?{v}:{n}|").unwrap();
        assert_eq!(q.render(&h).unwrap(), "n");
        assert!(QueryFormat::parse("%{NAME").is_err());
    }
}
