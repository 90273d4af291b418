//! The runtime closure of an image: the requested packages and everything their
//! `Requires` pull in, chosen from a given set of RPMs.
//!
//! A requirement is satisfied by a package's `Provides` (the package's own name and EVR
//! included, whether or not its header lists it) whose range overlaps the requirement's,
//! with rpm's sense flags and EVR comparison, or, for a requirement that is an absolute
//! path (`/bin/sh`), by a package that owns that path. When several packages satisfy a
//! requirement, a package already in the closure wins; otherwise the one named like the
//! capability, then the highest EVR, then the smallest name, then the smallest file path.
//! One package per name: a requirement that can only be met by a second version of a
//! package already chosen is an error.
//!
//! The order is deterministic and dependencies come first: a depth-first walk from the
//! requested packages in the order given, through each package's `Requires` in header
//! order, emitting a package after everything it requires (a dependency cycle is broken
//! where the walk meets it, as rpm's ordering does).
//!
//! Rich dependencies (`(a if b)`) are refused with an error naming the chain for now.
//! Weak dependencies (`Recommends`, `Suggests`…) are not followed: the toolkit installs
//! images with weak dependencies off too.
//!
//! `keel run` makes its sandbox of the same closure ([`runtime_closure`]), with one
//! difference: a requirement none of the given packages meets (glibc's sonames, a rich
//! dependency) is left to the build root the sandbox stands on, not an error. So `keel run`
//! and an image pick the same provider for the same requirement.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::PathBuf;

use keel_specs::vercmp::Evr;
use keel_toolchain::{RpmDep, RpmInfo};

use crate::Error;

/// The packages of an image, dependencies first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// Indexes into the RPM slice given to [`resolve_closure`], in install order.
    pub order: Vec<usize>,
}

/// Whether a provision `(p_flags, p_evr)` satisfies a requirement `(r_flags, r_evr)` of the
/// same name: rpm's range overlap. An unversioned side matches anything; a side without a
/// release compares versions only.
pub fn ranges_overlap(p_flags: u32, p_evr: &str, r_flags: u32, r_evr: &str) -> bool {
    let ps = p_flags & RpmDep::SENSE_MASK;
    let rs = r_flags & RpmDep::SENSE_MASK;
    if ps == 0 || rs == 0 || p_evr.is_empty() || r_evr.is_empty() {
        return true;
    }
    let has = |s: u32, bit: u32| s & bit != 0;
    match Evr::parse(p_evr).compare(&Evr::parse(r_evr)) {
        // The provided range reaches above p, the required one below r: they meet when
        // either is open towards the other.
        Ordering::Less => has(ps, RpmDep::GREATER) || has(rs, RpmDep::LESS),
        Ordering::Greater => has(ps, RpmDep::LESS) || has(rs, RpmDep::GREATER),
        Ordering::Equal => {
            (has(ps, RpmDep::EQUAL) && has(rs, RpmDep::EQUAL))
                || (has(ps, RpmDep::LESS) && has(rs, RpmDep::LESS))
                || (has(ps, RpmDep::GREATER) && has(rs, RpmDep::GREATER))
        }
    }
}

/// A package's EVR as rpm writes it in a dependency: `[E:]V-R`.
pub fn package_evr(info: &RpmInfo) -> String {
    match info.epoch {
        Some(e) => format!("{e}:{}-{}", info.version, info.release),
        None => format!("{}-{}", info.version, info.release),
    }
}

/// Renders a dependency as rpm prints it: `name >= evr`.
pub fn dep_text(d: &RpmDep) -> String {
    let s = d.flags & RpmDep::SENSE_MASK;
    if s == 0 || d.evr.is_empty() {
        return d.name.clone();
    }
    let mut op = String::new();
    if s & RpmDep::LESS != 0 {
        op.push('<');
    }
    if s & RpmDep::GREATER != 0 {
        op.push('>');
    }
    if s & RpmDep::EQUAL != 0 {
        op.push('=');
    }
    format!("{} {op} {}", d.name, d.evr)
}

struct Index<'a> {
    rpms: &'a [(PathBuf, RpmInfo)],
    /// Capability name -> (package, flags, evr).
    provides: HashMap<&'a str, Vec<(usize, u32, String)>>,
    /// Owned path -> packages.
    files: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Index<'a> {
    fn new(rpms: &'a [(PathBuf, RpmInfo)]) -> Index<'a> {
        let mut provides: HashMap<&str, Vec<(usize, u32, String)>> = HashMap::new();
        let mut files: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, (_, info)) in rpms.iter().enumerate() {
            if info.is_source {
                continue;
            }
            provides.entry(info.name.as_str()).or_default().push((
                i,
                RpmDep::EQUAL,
                package_evr(info),
            ));
            for p in &info.provides {
                provides
                    .entry(p.name.as_str())
                    .or_default()
                    .push((i, p.flags, p.evr.clone()));
            }
            for f in &info.files {
                files.entry(f.as_str()).or_default().push(i);
            }
        }
        Index {
            rpms,
            provides,
            files,
        }
    }

    fn info(&self, i: usize) -> &RpmInfo {
        &self.rpms[i].1
    }

    /// Every package satisfying `req`, deduplicated, in index order.
    fn candidates(&self, req: &RpmDep) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .provides
            .get(req.name.as_str())
            .into_iter()
            .flatten()
            .filter(|(_, f, evr)| ranges_overlap(*f, evr, req.flags, &req.evr))
            .map(|(i, _, _)| *i)
            .collect();
        if req.name.starts_with('/') {
            out.extend(self.files.get(req.name.as_str()).into_iter().flatten());
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Orders candidates best first (see the module docs).
    fn rank(&self, cap: &str, a: usize, b: usize) -> Ordering {
        let (ia, ib) = (self.info(a), self.info(b));
        (ib.name == cap)
            .cmp(&(ia.name == cap))
            .then_with(|| Evr::parse(&package_evr(ib)).compare(&Evr::parse(&package_evr(ia))))
            .then_with(|| ia.name.cmp(&ib.name))
            .then_with(|| self.rpms[a].0.cmp(&self.rpms[b].0))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    Visiting,
    Done,
}

/// What a requirement none of the given packages satisfies is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unmet {
    /// An error (an image must hold everything it needs).
    Refused,
    /// Left to the root the packages are layered over (`keel run`'s toolchain).
    LeftToRoot,
}

struct Walk<'a> {
    image: &'a str,
    unmet: Unmet,
    index: Index<'a>,
    marks: HashMap<usize, Mark>,
    chosen_by_name: HashMap<&'a str, usize>,
    order: Vec<usize>,
    chain: Vec<String>,
}

impl<'a> Walk<'a> {
    fn fail(&self, last: String, message: impl Into<String>) -> Error {
        let mut chain = vec![match self.unmet {
            Unmet::Refused => format!("image {}", self.image),
            Unmet::LeftToRoot => self.image.to_owned(),
        }];
        chain.extend(self.chain.iter().cloned());
        chain.push(last);
        Error::Closure {
            image: self.image.to_owned(),
            chain: chain.join(" -> "),
            message: message.into(),
        }
    }

    /// Picks the package that satisfies `req` (described as `what` in messages); `None`
    /// when nothing given does and [`Unmet::LeftToRoot`] allows that.
    fn choose(&self, req: &RpmDep, what: String, unmet: Unmet) -> Result<Option<usize>, Error> {
        let mut cands = if req.name.starts_with('(') {
            Vec::new()
        } else {
            self.index.candidates(req)
        };
        if cands.is_empty() {
            return match unmet {
                Unmet::LeftToRoot => Ok(None),
                Unmet::Refused if req.name.starts_with('(') => {
                    Err(self.fail(what, "rich dependencies are not supported by keel yet"))
                }
                Unmet::Refused => Err(self.fail(what, "nothing provides it")),
            };
        }
        if let Some(&c) = cands.iter().find(|c| self.marks.contains_key(c)) {
            return Ok(Some(c));
        }
        cands.sort_by(|a, b| self.index.rank(&req.name, *a, *b));
        let best = cands[0];
        let name = self.index.info(best).name.as_str();
        if let Some(&other) = self.chosen_by_name.get(name) {
            return Err(self.fail(
                what,
                format!(
                    "only {} satisfies it, but {} is already in the image",
                    self.index.info(best).nevra(),
                    self.index.info(other).nevra()
                ),
            ));
        }
        Ok(Some(best))
    }

    fn visit(&mut self, i: usize) -> Result<(), Error> {
        if self.marks.contains_key(&i) {
            return Ok(());
        }
        self.marks.insert(i, Mark::Visiting);
        let rpms = self.index.rpms;
        let info = &rpms[i].1;
        self.chosen_by_name.insert(info.name.as_str(), i);
        self.chain.push(info.nevra());
        for req in &info.requires {
            let Some(dep) = self.choose(req, format!("Requires: {}", dep_text(req)), self.unmet)?
            else {
                continue;
            };
            if !self.marks.contains_key(&dep) {
                self.chain.push(format!("Requires: {}", dep_text(req)));
                self.visit(dep)?;
                self.chain.pop();
            }
        }
        self.chain.pop();
        self.marks.insert(i, Mark::Done);
        self.order.push(i);
        Ok(())
    }
}

/// The closure of `requested` (package names, or capabilities when no package has that
/// name) over `rpms`, for the image named `image` (used in messages).
pub fn resolve_closure(
    image: &str,
    requested: &[String],
    rpms: &[(PathBuf, RpmInfo)],
) -> Result<Closure, Error> {
    walk(image, requested, rpms, Unmet::Refused)
}

/// The packages `keel run` layers over its root to run `requested`: the same closure as
/// an image's, chosen the same way, but what none of `rpms` provides is left to that root.
/// Each requested package must be among `rpms`.
pub fn runtime_closure(
    requested: &[String],
    rpms: &[(PathBuf, RpmInfo)],
) -> Result<Closure, Error> {
    walk("keel run", requested, rpms, Unmet::LeftToRoot)
}

fn walk(
    image: &str,
    requested: &[String],
    rpms: &[(PathBuf, RpmInfo)],
    unmet: Unmet,
) -> Result<Closure, Error> {
    let mut walk = Walk {
        image,
        unmet,
        index: Index::new(rpms),
        marks: HashMap::new(),
        chosen_by_name: HashMap::new(),
        order: Vec::new(),
        chain: Vec::new(),
    };
    for name in requested {
        let req = RpmDep {
            name: name.clone(),
            flags: 0,
            evr: String::new(),
        };
        let what = format!("package {name}");
        let i = match walk.choose(&req, what.clone(), Unmet::Refused)? {
            Some(i) => i,
            None => return Err(walk.fail(what, "nothing provides it")),
        };
        walk.visit(i)?;
    }
    debug_assert!(walk.marks.values().all(|m| *m == Mark::Done));
    Ok(Closure { order: walk.order })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(s: &str) -> RpmDep {
        let parts: Vec<&str> = s.split_whitespace().collect();
        match parts.as_slice() {
            [n] => RpmDep {
                name: (*n).into(),
                flags: 0,
                evr: String::new(),
            },
            [n, op, evr] => {
                let mut flags = 0;
                for c in op.chars() {
                    flags |= match c {
                        '<' => RpmDep::LESS,
                        '>' => RpmDep::GREATER,
                        '=' => RpmDep::EQUAL,
                        _ => panic!("bad op {op}"),
                    };
                }
                RpmDep {
                    name: (*n).into(),
                    flags,
                    evr: (*evr).into(),
                }
            }
            _ => panic!("bad dep {s}"),
        }
    }

    /// `name-version-release` with provides, requires and files.
    fn pkg(nvr: &str, provides: &[&str], requires: &[&str], files: &[&str]) -> (PathBuf, RpmInfo) {
        let mut it = nvr.rsplitn(3, '-');
        let (release, version, name) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        (
            PathBuf::from(format!("/repo/{nvr}.x86_64.rpm")),
            RpmInfo {
                name: name.into(),
                epoch: None,
                version: version.into(),
                release: release.into(),
                arch: "x86_64".into(),
                is_source: false,
                source_rpm: String::new(),
                provides: provides.iter().map(|d| dep(d)).collect(),
                requires: requires.iter().map(|d| dep(d)).collect(),
                conflicts: vec![],
                obsoletes: vec![],
                recommends: vec![],
                suggests: vec![],
                supplements: vec![],
                enhances: vec![],
                files: files.iter().map(|f| (*f).to_owned()).collect(),
            },
        )
    }

    fn names(rpms: &[(PathBuf, RpmInfo)], c: &Closure) -> Vec<String> {
        c.order.iter().map(|i| rpms[*i].1.nevra()).collect()
    }

    fn closure(rpms: &[(PathBuf, RpmInfo)], req: &[&str]) -> Result<Vec<String>, String> {
        let req: Vec<String> = req.iter().map(|s| (*s).to_owned()).collect();
        resolve_closure("core", &req, rpms)
            .map(|c| names(rpms, &c))
            .map_err(|e| e.to_string())
    }

    /// `keel run` and an image choose alike (the documented tie-break: here the package
    /// named like the capability, though another is listed first); what nothing given
    /// provides is left to the root for `keel run` and an error for an image.
    #[test]
    fn keel_run_chooses_as_an_image_does_and_leaves_the_rest_to_its_root() {
        let rpms = vec![
            pkg(
                "app-1.0-1",
                &[],
                &["greeting", "libc.so.6()(64bit)", "(a-if-b)"],
                &[],
            ),
            pkg("a-greet-1.0-1", &["greeting"], &[], &[]),
            pkg("greeting-1.0-1", &[], &[], &[]),
        ];
        let run = runtime_closure(&["app".to_owned()], &rpms).unwrap();
        assert_eq!(
            names(&rpms, &run),
            ["greeting-1.0-1.x86_64", "app-1.0-1.x86_64"]
        );
        let err = closure(&rpms, &["app"]).unwrap_err();
        assert!(err.contains("libc.so.6()(64bit)"), "{err}");
        let err = runtime_closure(&["nothing".to_owned()], &rpms)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("package nothing") && err.contains("nothing provides it"),
            "{err}"
        );
    }

    #[test]
    fn range_overlap_follows_rpm() {
        let cases = [
            ("= 1.0-1", ">= 1.0", true),
            ("= 1.0-1", "> 1.0", false),
            ("= 1.0-1", "> 1.0-0", true),
            ("= 1.0-1", "< 1.0-2", true),
            ("= 2.0", "< 1.0", false),
            ("= 2.0", ">= 1:1.0", false),
            ("= 1:2.0", ">= 1:1.0", true),
            (">= 2.0", "< 3.0", true),
            (">= 2.0", "< 2.0", false),
            ("<= 2.0", "<= 1.0", true),
            ("= 1.0", "= 1.0-5", true),
            ("= 1.10", "> 1.9", true),
        ];
        for (p, r, want) in cases {
            let (p, r) = (dep(&format!("x {p}")), dep(&format!("x {r}")));
            assert_eq!(
                ranges_overlap(p.flags, &p.evr, r.flags, &r.evr),
                want,
                "provide {p:?} require {r:?}"
            );
        }
        assert!(ranges_overlap(0, "", RpmDep::GREATER, "5"));
    }

    #[test]
    fn dependencies_come_first_and_order_is_deterministic() {
        let rpms = vec![
            pkg(
                "app-1.0-1",
                &[],
                &["libfoo.so.1()(64bit)", "/bin/sh"],
                &["/usr/bin/app"],
            ),
            pkg("bash-5.2-1", &[], &["glibc"], &["/usr/bin/bash", "/bin/sh"]),
            pkg(
                "foo-libs-2.0-1",
                &["libfoo.so.1()(64bit)"],
                &["glibc >= 2.38"],
                &[],
            ),
            pkg("glibc-2.38-3", &[], &[], &["/usr/lib64/libc.so.6"]),
            pkg("unrelated-1-1", &[], &[], &[]),
        ];
        let want = [
            "glibc-2.38-3.x86_64",
            "foo-libs-2.0-1.x86_64",
            "bash-5.2-1.x86_64",
            "app-1.0-1.x86_64",
        ];
        assert_eq!(closure(&rpms, &["app"]).unwrap(), want);
        let mut reversed = rpms.clone();
        reversed.reverse();
        assert_eq!(closure(&reversed, &["app"]).unwrap(), want);
    }

    #[test]
    fn versioned_requires_pick_a_matching_provider() {
        let rpms = vec![
            pkg("app-1.0-1", &[], &["foo >= 2.0"], &[]),
            pkg("foo-1.5-1", &[], &[], &[]),
            pkg("foo-2.1-1", &[], &[], &[]),
            pkg("foo-3.0-1", &[], &[], &[]),
        ];
        // Both 2.1 and 3.0 satisfy it: the highest wins.
        assert_eq!(
            closure(&rpms, &["app"]).unwrap(),
            ["foo-3.0-1.x86_64", "app-1.0-1.x86_64"]
        );
        let rpms = vec![
            pkg("app-1.0-1", &[], &["foo < 2.0"], &[]),
            pkg("foo-1.5-1", &[], &[], &[]),
            pkg("foo-2.1-1", &[], &[], &[]),
        ];
        assert_eq!(
            closure(&rpms, &["app"]).unwrap(),
            ["foo-1.5-1.x86_64", "app-1.0-1.x86_64"]
        );
    }

    #[test]
    fn a_missing_capability_names_the_chain() {
        let rpms = vec![
            pkg("app-1.0-1", &[], &["liba"], &[]),
            pkg("liba-1-1", &[], &["libfoo.so.1()(64bit)"], &[]),
        ];
        let err = closure(&rpms, &["app"]).unwrap_err();
        assert_eq!(
            err,
            "resolve the packages of image core: image core -> app-1.0-1.x86_64 -> Requires: liba -> \
             liba-1-1.x86_64 -> Requires: libfoo.so.1()(64bit): nothing provides it"
        );
        let err = closure(&rpms, &["nosuch"]).unwrap_err();
        assert!(
            err.contains("image core -> package nosuch: nothing provides it"),
            "{err}"
        );
        let rpms = vec![
            pkg("app-1.0-1", &[], &["foo >= 2"], &[]),
            pkg("foo-1-1", &[], &[], &[]),
        ];
        let err = closure(&rpms, &["app"]).unwrap_err();
        assert!(
            err.contains("Requires: foo >= 2: nothing provides it"),
            "{err}"
        );
    }

    #[test]
    fn rich_dependencies_are_refused_by_name() {
        let mut app = pkg("app-1.0-1", &[], &[], &[]);
        app.1.requires.push(RpmDep {
            name: "(foo if bar)".into(),
            flags: 0,
            evr: String::new(),
        });
        let rpms = vec![app];
        let err = closure(&rpms, &["app"]).unwrap_err();
        assert!(
            err.contains("Requires: (foo if bar): rich dependencies"),
            "{err}"
        );
    }

    #[test]
    fn cycles_are_broken_and_providers_already_chosen_win() {
        let rpms = vec![
            pkg("a-1-1", &["cap"], &["b"], &[]),
            pkg("b-1-1", &[], &["a", "cap"], &[]),
            pkg("cap-9-1", &[], &[], &[]),
        ];
        // `cap` is provided by a, already in the closure: cap-9 is not pulled in.
        assert_eq!(
            closure(&rpms, &["a"]).unwrap(),
            ["b-1-1.x86_64", "a-1-1.x86_64"]
        );
    }

    #[test]
    fn two_versions_of_one_package_are_an_error() {
        let rpms = vec![
            pkg("app-1-1", &[], &["foo", "bar"], &[]),
            pkg("bar-1-1", &[], &["foo < 2"], &[]),
            pkg("foo-1-1", &[], &[], &[]),
            pkg("foo-2-1", &[], &[], &[]),
        ];
        let err = closure(&rpms, &["app"]).unwrap_err();
        assert!(
            err.contains("foo-2-1.x86_64 is already in the image"),
            "{err}"
        );
    }
}
