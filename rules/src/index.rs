//! The providers index: which package offers which capability.

use std::collections::HashMap;

use keel_specs::deps::{Dep, sense};

use crate::graph::SpecId;
use crate::manifest::RpmName;

/// A binary package of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct BinId(pub usize);

/// A binary package declared by a spec of the tree.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BinPkg {
    pub name: String,
    /// `[E:]V-R`.
    pub evr: String,
    pub arch: String,
    pub spec: SpecId,
    #[serde(skip)]
    pub requires: Vec<Dep>,
    #[serde(skip)]
    pub provides: Vec<Dep>,
    #[serde(skip)]
    pub files: Vec<String>,
}

/// Who provides a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum ProviderSource {
    /// A binary package built from the tree.
    Package(BinId),
    /// A package of the build root (the toolchain manifest): no build edge.
    Toolchain(usize),
    /// A package of the bootstrap seed (prebuilt RPMs): no build edge.
    Seed(usize),
    /// A file of the build root itself (the host's, or the toolchain directory's), for a
    /// file dependency nothing else provides (`/sbin/ldconfig` when the toolchain's
    /// manifest lists glibc): no build edge.
    BuildRoot,
}

/// Whether the build root has a file (see [`ProviderSource::BuildRoot`]); the binary
/// gives it from the toolchain, which this crate does not know.
#[derive(Clone)]
pub struct RootFiles(pub std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for RootFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootFiles")
    }
}

/// One provision of one capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub source: ProviderSource,
    pub flags: u32,
    pub evr: String,
}

/// Every capability of the tree, the toolchain and the seed.
#[derive(Debug, Default)]
pub struct ProvidersIndex {
    caps: HashMap<String, Vec<Provider>>,
    /// Literal `%files` paths (a directory also owns what is below it).
    files: HashMap<String, Vec<ProviderSource>>,
    /// `%files` entries with wildcards in their last component only, by the directory
    /// they are in: `*` does not cross `/`, so only paths in that directory can match.
    globs_in: HashMap<String, Vec<(String, ProviderSource)>>,
    /// The other `%files` entries with wildcards (one in a directory component), tried
    /// against every path.
    globs: Vec<(String, ProviderSource)>,
    pub(crate) toolchain: Vec<RpmName>,
    pub(crate) seed: Vec<RpmName>,
    pub(crate) root_files: Option<RootFiles>,
}

impl ProvidersIndex {
    pub(crate) fn new(
        toolchain: Vec<RpmName>,
        seed: Vec<RpmName>,
        root_files: Option<RootFiles>,
    ) -> Self {
        ProvidersIndex {
            toolchain,
            seed,
            root_files,
            ..Default::default()
        }
    }

    pub(crate) fn add_cap(&mut self, name: &str, flags: u32, evr: &str, source: ProviderSource) {
        let list = self.caps.entry(name.to_owned()).or_default();
        let p = Provider {
            source,
            flags,
            evr: evr.to_owned(),
        };
        if !list.contains(&p) {
            list.push(p);
        }
    }

    pub(crate) fn add_file(&mut self, path: &str, source: ProviderSource) {
        let path = path.trim_end_matches('/');
        if path.is_empty() {
            return;
        }
        const WILD: [char; 3] = ['*', '?', '['];
        if path.contains(WILD) {
            match path.rsplit_once('/') {
                Some((dir, _)) if !dir.contains(WILD) => self
                    .globs_in
                    .entry(dir.to_owned())
                    .or_default()
                    .push((path.to_owned(), source)),
                _ => self.globs.push((path.to_owned(), source)),
            }
        } else {
            let list = self.files.entry(path.to_owned()).or_default();
            if !list.contains(&source) {
                list.push(source);
            }
        }
    }

    /// Adds everything a package provides: its own name at its EVR, its `Provides`, its
    /// files.
    pub(crate) fn add_package(&mut self, pkg: &BinPkg, source: ProviderSource) {
        self.add_cap(&pkg.name, sense::EQUAL, &pkg.evr, source);
        for p in &pkg.provides {
            self.add_cap(&p.name, p.flags, &p.evr, source);
        }
        for f in &pkg.files {
            self.add_file(f, source);
        }
    }

    /// Adds capabilities learned from a built RPM of `bin` (sonames, pkgconfig, perl and
    /// python auto-provides, its real file list). The graph must be resolved again.
    pub fn learn(&mut self, bin: BinId, provides: &[Dep], files: &[String]) {
        for p in provides {
            self.add_cap(&p.name, p.flags, &p.evr, ProviderSource::Package(bin));
        }
        for f in files {
            self.add_file(f, ProviderSource::Package(bin));
        }
    }

    /// The providers of a capability name (any version).
    pub fn providers(&self, name: &str) -> &[Provider] {
        self.caps.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The providers of a file path: an exact `%files` entry, a directory entry above it,
    /// or a wildcard entry matching it or a directory above it.
    pub fn file_providers(&self, path: &str) -> Vec<ProviderSource> {
        let mut out: Vec<ProviderSource> = Vec::new();
        let mut cur = path.trim_end_matches('/');
        loop {
            if let Some(list) = self.files.get(cur) {
                out.extend(list);
            }
            let dir = cur.rsplit_once('/').map_or("", |(d, _)| d);
            let near = self.globs_in.get(dir).into_iter().flatten();
            for (g, src) in near.chain(&self.globs) {
                if glob_match(g, cur) {
                    out.push(*src);
                }
            }
            if !out.is_empty() {
                break;
            }
            match cur.rfind('/') {
                Some(0) | None => break,
                Some(i) => cur = &cur[..i],
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// `name-V-R` of a toolchain package.
    pub fn toolchain_name(&self, i: usize) -> String {
        self.toolchain
            .get(i)
            .map(|r| format!("{}-{}", r.name, r.vr()))
            .unwrap_or_default()
    }

    /// `name-V-R` of a seed package.
    pub fn seed_name(&self, i: usize) -> String {
        self.seed
            .get(i)
            .map(|r| format!("{}-{}", r.name, r.vr()))
            .unwrap_or_default()
    }

    /// Every capability name (for "did you mean").
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.caps.keys().map(String::as_str)
    }
}

/// fnmatch-style matching of `*`, `?` and `[...]`; `*` does not cross `/`.
pub(crate) fn glob_match(pat: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(&p[1..], &s[i..])),
            Some(b'?') => !s.is_empty() && s[0] != b'/' && go(&p[1..], &s[1..]),
            Some(b'[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|e| e + 1) else {
                    return s.first() == Some(&b'[') && go(&p[1..], &s[1..]);
                };
                let Some(&c) = s.first() else { return false };
                let class = &p[1..end];
                let (neg, class) = match class.first() {
                    Some(b'!') | Some(b'^') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == b'-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != neg && go(&p[end + 1..], &s[1..])
            }
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    go(pat.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("/usr/bin/*", "/usr/bin/ls"));
        assert!(!glob_match("/usr/bin/*", "/usr/bin/sub/ls"));
        assert!(glob_match(
            "/usr/lib/libfoo.so.[0-9]",
            "/usr/lib/libfoo.so.1"
        ));
        assert!(glob_match(
            "/usr/share/man/man1/foo.1*",
            "/usr/share/man/man1/foo.1.gz"
        ));
        assert!(!glob_match("/usr/lib/?", "/usr/lib/ab"));
    }

    /// Wildcard entries are looked up by their directory when only the last component is
    /// wild, and tried against every path otherwise: both find what they own.
    #[test]
    fn wildcard_entries_own_paths_whichever_component_is_wild() {
        let mut idx = ProvidersIndex::default();
        let (a, b, c) = (
            ProviderSource::Package(BinId(0)),
            ProviderSource::Package(BinId(1)),
            ProviderSource::Package(BinId(2)),
        );
        idx.add_file("/usr/share/foo-*", a);
        idx.add_file("/usr/lib/python*/site-packages/bar", b);
        idx.add_file("/baz?", c);
        assert_eq!(idx.file_providers("/usr/share/foo-1/doc/README"), vec![a]);
        assert_eq!(
            idx.file_providers("/usr/lib/python3.12/site-packages/bar/x.py"),
            vec![b]
        );
        assert_eq!(idx.file_providers("/baz1"), vec![c]);
        assert!(idx.file_providers("/usr/share/other/foo-1").is_empty());
        assert!(
            idx.file_providers("/usr/lib/python3/x/site-packages/bar")
                .is_empty()
        );
    }

    #[test]
    fn directories_own_what_is_below_them() {
        let mut idx = ProvidersIndex::default();
        let src = ProviderSource::Package(BinId(0));
        idx.add_file("/usr/lib/python3/site-packages/foo/", src);
        idx.add_file("/usr/bin/*", ProviderSource::Package(BinId(1)));
        assert_eq!(
            idx.file_providers("/usr/lib/python3/site-packages/foo/__init__.py"),
            vec![src]
        );
        assert_eq!(
            idx.file_providers("/usr/bin/env"),
            vec![ProviderSource::Package(BinId(1))]
        );
        assert!(idx.file_providers("/etc/passwd").is_empty());
    }
}
