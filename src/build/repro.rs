//! `keel build --check-reproducible`: build packages a second time, in a fresh sandbox,
//! and report every RPM whose bytes differ from the first build's, with the header tags
//! and files that differ.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use keel_engine::{ActionKind, BuildReport, CancelToken, ExecContext, Executor, SUMMARY_OUTPUT};
use keel_store::{ActionRecord, BlobDigest, ObjectRef, Store};

use super::Session;

/// Header tags that usually carry the non-determinism (the rest is compared through the
/// file list).
const TAGS: &[&str] = &[
    "NAME",
    "VERSION",
    "RELEASE",
    "ARCH",
    "BUILDTIME",
    "BUILDHOST",
    "SIZE",
    "ARCHIVESIZE",
    "PAYLOADDIGEST",
    "SOURCERPM",
    "COOKIE",
    "OPTFLAGS",
    "PLATFORM",
    "RPMVERSION",
    "PAYLOADCOMPRESSOR",
    "PROVIDES",
    "REQUIRES",
];

/// One RPM that came out differently.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Difference {
    pub rpm: String,
    /// Tag name, first build's value, second build's value.
    pub tags: Vec<(String, String, String)>,
    /// `rpm --dump` lines present in only one of the builds.
    pub files: Vec<String>,
}

fn blobs(rec: &ActionRecord) -> BTreeMap<String, BlobDigest> {
    rec.outputs
        .iter()
        .filter(|o| o.name != SUMMARY_OUTPUT)
        .filter_map(|o| match &o.object {
            ObjectRef::Blob(d) => Some((o.name.clone(), *d)),
            ObjectRef::Tree(_) => None,
        })
        .collect()
}

fn query(rpm: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("rpm")
        .arg("-qp")
        .args(args)
        .arg(rpm)
        .env("LC_ALL", "C")
        .output()
        .context("failed to run rpm")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn compare(
    store: &Store,
    name: &str,
    a: &BlobDigest,
    b: &BlobDigest,
) -> anyhow::Result<Difference> {
    let dir = tempfile::tempdir()?;
    let (pa, pb) = (dir.path().join("a.rpm"), dir.path().join("b.rpm"));
    store.materialize_blob(a, &pa, 0o644)?;
    store.materialize_blob(b, &pb, 0o644)?;
    let mut tags = Vec::new();
    for t in TAGS {
        let fmt = format!("[%{{{t}}} ]");
        let (va, vb) = (query(&pa, &["--qf", &fmt])?, query(&pb, &["--qf", &fmt])?);
        if va != vb {
            tags.push((t.to_string(), va.trim().to_owned(), vb.trim().to_owned()));
        }
    }
    let da = query(&pa, &["--dump"])?;
    let db = query(&pb, &["--dump"])?;
    let sa: std::collections::BTreeSet<&str> = da.lines().collect();
    let sb: std::collections::BTreeSet<&str> = db.lines().collect();
    let mut files: Vec<String> = sa.difference(&sb).map(|l| format!("- {l}")).collect();
    files.extend(sb.difference(&sa).map(|l| format!("+ {l}")));
    Ok(Difference {
        rpm: name.to_owned(),
        tags,
        files,
    })
}

/// Rebuilds the `rpm:` actions of `report` (those named in `only`, or all) with
/// `executor` and compares their RPMs with the recorded ones.
pub fn check(
    store: &Store,
    session: &Session,
    report: &BuildReport,
    executor: &dyn Executor,
    only: &[String],
    on_progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<Difference>> {
    let graph = &session.actions.graph;
    let cancel = CancelToken::new();
    let record = |id: keel_engine::ActionId| -> anyhow::Result<Option<ActionRecord>> {
        match report.get(id).and_then(|r| r.key) {
            Some(k) => Ok(store.ac_get(&k)?),
            None => Ok(None),
        }
    };
    let mut diffs = Vec::new();
    for (id, action) in graph.iter() {
        if action.kind() != ActionKind::RpmBuild {
            continue;
        }
        let pkg = action.name.trim_start_matches("rpm:");
        if !only.is_empty() && !only.iter().any(|o| o == pkg || *o == action.name) {
            continue;
        }
        let Some(first) = record(id)? else { continue };
        let mut dep_records = Vec::new();
        for d in &action.deps {
            let rec = record(*d)?.with_context(|| {
                format!("{}: no record of {}", action.name, graph.action(*d).name)
            })?;
            dep_records.push((graph.action(*d).name.as_str(), rec));
        }
        on_progress(&action.name);
        let ctx = ExecContext {
            store,
            id,
            action,
            key: first.key,
            deps: dep_records.iter().map(|(n, r)| (*n, r)).collect(),
            cancel: &cancel,
        };
        let second = executor
            .execute(&ctx)
            .map_err(|e| anyhow::anyhow!("{}: the second build failed: {e}", action.name))?;
        let again = blobs(&ActionRecord::new(first.key, second.outputs, String::new()));
        for (name, a) in blobs(&first) {
            match again.get(&name) {
                Some(b) if *b == a => {}
                Some(b) => diffs.push(compare(store, &name, &a, b)?),
                None => diffs.push(Difference {
                    rpm: name.clone(),
                    tags: Vec::new(),
                    files: vec!["the second build did not produce it".into()],
                }),
            }
        }
    }
    Ok(diffs)
}
