//! Specs left out of a build's plan, and why: a spec that cannot be read, whose sources
//! cannot be had, that sits in a build cycle, that needs one of those, or that an earlier
//! spec directory shadows. The rest of the tree is planned and built; a nightly build of
//! 3,000 packages never stops at one spec.

use std::path::{Path, PathBuf};

use keel_rules::PackageGraph;
use keel_rules::actions::Excluded;

/// Why a spec is not in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// The spec could not be read (its file and line say why).
    Unreadable,
    /// Read, but it cannot be planned: a patch that does not exist, a source neither
    /// kept nor listed in the signatures file, a signatures file that is not valid.
    Unplannable,
    /// In a build cycle no bootstrap seed breaks.
    Cycle,
    /// It needs (through its build root) a spec excluded for one of the reasons above.
    NeedsExcluded,
    /// A spec directory listed earlier in keel.toml has a spec of the same name, whose
    /// package is the one built. Not an error: the toolkit builds each directory apart.
    Shadowed,
}

impl Cause {
    fn describe(self) -> &'static str {
        match self {
            Cause::Unreadable => "could not be read",
            Cause::Unplannable => "sources or patches cannot be had",
            Cause::Cycle => "in a build cycle",
            Cause::NeedsExcluded => "need an excluded spec",
            Cause::Shadowed => "same name in an earlier spec directory (not built)",
        }
    }

    /// Whether the exclusion is an error of the tree (the build fails), or a rule.
    pub fn is_error(self) -> bool {
        self != Cause::Shadowed
    }
}

/// One spec left out.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exclusion {
    /// The spec file.
    pub spec: PathBuf,
    /// Its package name, when it was read.
    pub name: Option<String>,
    pub cause: Cause,
    /// What is wrong, naming the file (and the line, when known).
    pub reason: String,
}

/// Everything left out of a session's plan, in the order found.
pub fn collect(
    root: &Path,
    loaded: &crate::tree::LoadedTree,
    pg: &PackageGraph,
    planned: &[Excluded],
) -> Vec<Exclusion> {
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).to_owned();
    let mut out = Vec::new();
    for f in &loaded.failures {
        let file = f.file.to_string_lossy();
        // rpm-style messages name the file and line themselves.
        let reason = if f.message.contains(file.as_ref()) {
            f.message.replace(&format!("{}/", root.display()), "")
        } else {
            format!("{}:{}: {}", rel(&f.file).display(), f.line, f.message)
        };
        out.push(Exclusion {
            spec: rel(&f.file),
            name: None,
            cause: Cause::Unreadable,
            reason,
        });
    }
    for e in planned {
        let node = &pg.specs[e.spec.0];
        let cause = if e.because_of.is_some() {
            Cause::NeedsExcluded
        } else if e.reason.starts_with("in a build cycle") || e.reason.contains("(a build cycle)") {
            Cause::Cycle
        } else {
            Cause::Unplannable
        };
        let path = rel(&node.path);
        let reason = e.reason.replace(&format!("{}/", root.display()), "");
        let reason = if reason.starts_with(&*path.to_string_lossy()) {
            reason
        } else {
            format!("{}: {reason}", path.display())
        };
        out.push(Exclusion {
            spec: path,
            name: Some(node.name.clone()),
            cause,
            reason,
        });
    }
    for s in &loaded.shadowed {
        out.push(Exclusion {
            spec: rel(&s.path),
            name: Some(s.name.clone()),
            cause: Cause::Shadowed,
            reason: format!(
                "{}: {} is built from {}, in a spec directory listed before this one in keel.toml",
                rel(&s.path).display(),
                s.name,
                rel(&s.by).display()
            ),
        });
    }
    out
}

/// How many exclusions the summary prints in full, and how many names a cause lists.
const SHOWN: usize = 10;
const NAMES_SHOWN: usize = 8;

/// The summary of what was left out: a line per cause with its count and first names,
/// then the first errors in full. A screenful however many there are.
pub fn summary(excluded: &[Exclusion]) -> Vec<String> {
    if excluded.is_empty() {
        return Vec::new();
    }
    let mut lines = Vec::new();
    let errors = excluded.iter().filter(|e| e.cause.is_error()).count();
    lines.push(format!(
        "{:>12} {} spec(s) from the plan ({errors} for errors); the rest is planned",
        "Excluded",
        excluded.len()
    ));
    let mut causes: Vec<Cause> = excluded.iter().map(|e| e.cause).collect();
    causes.sort();
    causes.dedup();
    for c in causes {
        let names: Vec<String> = excluded
            .iter()
            .filter(|e| e.cause == c)
            .map(|e| match &e.name {
                Some(n) => n.clone(),
                None => e.spec.display().to_string(),
            })
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        lines.push(format!(
            "{:>12} {} {}: {}",
            "",
            names.len(),
            c.describe(),
            crate::output::short_list(&refs, NAMES_SHOWN)
        ));
    }
    // Root causes first: what needs them says only that.
    let ordered = excluded
        .iter()
        .filter(|e| e.cause != Cause::NeedsExcluded)
        .chain(excluded.iter().filter(|e| e.cause == Cause::NeedsExcluded));
    for e in ordered.take(SHOWN) {
        let first = e.reason.lines().next().unwrap_or_default();
        let kind = if e.cause.is_error() { "error" } else { "note" };
        lines.push(format!("{kind}: excluded {first}"));
    }
    if excluded.len() > SHOWN {
        lines.push(format!(
            "{:>12} … and {} more (all of them: `keel build --dry-run --json`)",
            "",
            excluded.len() - SHOWN
        ));
    }
    lines
}
