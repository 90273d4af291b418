//! Resolving a dependency to the providers that satisfy it.

use std::cmp::Ordering;

use keel_specs::deps::{Dep, Rich, RichOp, sense};
use keel_specs::vercmp::Evr;

use crate::index::{Provider, ProviderSource, ProvidersIndex, RootFiles};

/// Whether a provision `(p_flags, p_evr)` satisfies a requirement `(r_flags, r_evr)` of
/// the same name: rpm's range overlap. A side without a version matches anything; a
/// requirement without a release compares versions only.
pub fn overlaps(p_flags: u32, p_evr: &str, r_flags: u32, r_evr: &str) -> bool {
    let (ps, rs) = (p_flags & sense::SENSEMASK, r_flags & sense::SENSEMASK);
    if ps == 0 || rs == 0 || p_evr.is_empty() || r_evr.is_empty() {
        return true;
    }
    let (pe, re) = (Evr::parse(p_evr), Evr::parse(r_evr));
    match pe.compare(&re) {
        Ordering::Less => ps & sense::GREATER != 0 || rs & sense::LESS != 0,
        Ordering::Greater => ps & sense::LESS != 0 || rs & sense::GREATER != 0,
        Ordering::Equal => {
            (ps & rs & sense::EQUAL != 0)
                || (ps & sense::LESS != 0 && rs & sense::LESS != 0)
                || (ps & sense::GREATER != 0 && rs & sense::GREATER != 0)
        }
    }
}

/// The outcome of resolving one dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Satisfied by these providers (one per simple dependency that had to hold).
    Satisfied(Vec<ProviderSource>),
    /// A condition of a rich dependency was false: nothing is needed.
    NotNeeded,
    /// Nothing satisfies it.
    Unresolved,
}

/// How good a provider is, lower first: the build root and the seed (no edge), then a
/// package named like the capability, then the rest (stable by id).
fn rank(
    p: &ProviderSource,
    index: &ProvidersIndex,
    name: &str,
    names: &dyn Fn(ProviderSource) -> Option<String>,
) -> (u8, u8, ProviderSource) {
    let tier = match p {
        ProviderSource::Toolchain(_) | ProviderSource::Seed(_) | ProviderSource::BuildRoot => 0,
        ProviderSource::Package(_) => 1,
    };
    let _ = index;
    let same_name = u8::from(names(*p).as_deref() != Some(name));
    (tier, same_name, *p)
}

impl ProvidersIndex {
    /// Every provider of `name` whose provision overlaps `(flags, evr)`; file paths are
    /// looked up among `%files`.
    pub fn whatprovides(&self, name: &str, flags: u32, evr: &str) -> Vec<ProviderSource> {
        let mut out: Vec<ProviderSource> = self
            .providers(name)
            .iter()
            .filter(|p: &&Provider| overlaps(p.flags, &p.evr, flags, evr))
            .map(|p| p.source)
            .collect();
        if name.starts_with('/') {
            out.extend(self.file_providers(name));
            if out.is_empty()
                && let Some(RootFiles(has)) = &self.root_files
                && has(name)
            {
                out.push(ProviderSource::BuildRoot);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn best(
        &self,
        name: &str,
        flags: u32,
        evr: &str,
        names: &dyn Fn(ProviderSource) -> Option<String>,
    ) -> Option<ProviderSource> {
        let all = self.whatprovides(name, flags, evr);
        all.into_iter().min_by_key(|p| rank(p, self, name, names))
    }

    /// Resolves a dependency, choosing one provider per simple dependency that must hold.
    /// `names` gives a provider's package name (to prefer a package named like the
    /// capability).
    pub fn resolve(
        &self,
        dep: &Dep,
        names: &dyn Fn(ProviderSource) -> Option<String>,
    ) -> Resolution {
        match &dep.rich {
            Some(r) => self.resolve_rich(r, names),
            None => match self.best(&dep.name, dep.flags, &dep.evr, names) {
                Some(p) => Resolution::Satisfied(vec![p]),
                None => Resolution::Unresolved,
            },
        }
    }

    fn holds(&self, r: &Rich, names: &dyn Fn(ProviderSource) -> Option<String>) -> bool {
        matches!(
            self.resolve_rich(r, names),
            Resolution::Satisfied(_) | Resolution::NotNeeded
        )
    }

    fn resolve_rich(
        &self,
        r: &Rich,
        names: &dyn Fn(ProviderSource) -> Option<String>,
    ) -> Resolution {
        match r {
            Rich::Simple { name, flags, evr } => match self.best(name, *flags, evr, names) {
                Some(p) => Resolution::Satisfied(vec![p]),
                None => Resolution::Unresolved,
            },
            Rich::Op { op, operands } => {
                let get = |i: usize| operands.get(i);
                match op {
                    RichOp::And => {
                        let mut all = Vec::new();
                        for o in operands {
                            match self.resolve_rich(o, names) {
                                Resolution::Satisfied(v) => all.extend(v),
                                Resolution::NotNeeded => {}
                                Resolution::Unresolved => return Resolution::Unresolved,
                            }
                        }
                        Resolution::Satisfied(all)
                    }
                    RichOp::Or => operands
                        .iter()
                        .map(|o| self.resolve_rich(o, names))
                        .find(|r| !matches!(r, Resolution::Unresolved))
                        .unwrap_or(Resolution::Unresolved),
                    // `A if B [else C]`: A when B would be present, else C (or nothing).
                    RichOp::If | RichOp::IfElse => {
                        let (Some(a), Some(b)) = (get(0), get(1)) else {
                            return Resolution::Unresolved;
                        };
                        if self.holds(b, names) {
                            self.resolve_rich(a, names)
                        } else if let Some(c) = get(2) {
                            self.resolve_rich(c, names)
                        } else {
                            Resolution::NotNeeded
                        }
                    }
                    // `A unless B [else C]`: A when B would be absent, else C (or nothing).
                    RichOp::Unless | RichOp::UnlessElse => {
                        let (Some(a), Some(b)) = (get(0), get(1)) else {
                            return Resolution::Unresolved;
                        };
                        if !self.holds(b, names) {
                            self.resolve_rich(a, names)
                        } else if let Some(c) = get(2) {
                            self.resolve_rich(c, names)
                        } else {
                            Resolution::NotNeeded
                        }
                    }
                    // `A with B`: one package satisfying both; `A without B`: one satisfying
                    // A and not B.
                    RichOp::With | RichOp::Without => {
                        let (
                            Some(Rich::Simple {
                                name: an,
                                flags: af,
                                evr: ae,
                            }),
                            Some(b),
                        ) = (get(0), get(1))
                        else {
                            return Resolution::Unresolved;
                        };
                        let b_set: Vec<ProviderSource> = match b {
                            Rich::Simple { name, flags, evr } => {
                                self.whatprovides(name, *flags, evr)
                            }
                            _ => Vec::new(),
                        };
                        let want_b = *op == RichOp::With;
                        let mut cands: Vec<ProviderSource> = self
                            .whatprovides(an, *af, ae)
                            .into_iter()
                            .filter(|p| b_set.contains(p) == want_b)
                            .collect();
                        cands.sort_by_key(|p| rank(p, self, an, names));
                        cands
                            .first()
                            .map_or(Resolution::Unresolved, |p| Resolution::Satisfied(vec![*p]))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_specs::deps::sense::{EQUAL, GREATER, LESS};

    #[test]
    fn range_overlap_like_rpm() {
        // provides foo = 1.2-3
        assert!(overlaps(EQUAL, "1.2-3", GREATER | EQUAL, "1.0"));
        assert!(
            overlaps(EQUAL, "1.2-3", EQUAL, "1.2"),
            "no release in the requirement: versions only"
        );
        assert!(!overlaps(EQUAL, "1.2-3", EQUAL, "1.2-4"));
        assert!(!overlaps(EQUAL, "1.2-3", LESS, "1.2"));
        assert!(overlaps(EQUAL, "1.2-3", LESS, "1.3"));
        assert!(!overlaps(EQUAL, "1:1.0-1", LESS, "2.0"), "epoch wins");
        assert!(
            overlaps(0, "", GREATER, "9"),
            "an unversioned provide satisfies anything"
        );
        assert!(overlaps(GREATER | EQUAL, "2.0", LESS, "3.0"));
        assert!(!overlaps(LESS, "2.0", GREATER, "3.0"));
        assert!(
            overlaps(EQUAL, "1.0~rc1-1", LESS, "1.0"),
            "tilde sorts before the release"
        );
    }
}
