//! The summary's law, on real rpmbuild and real `rpm -i`: packages with equal semantic
//! summaries install identical roots and carry identical metadata.
//!
//! Pairs of small specs are generated that differ in one aspect (hard-link sets, file
//! contents, modes, symlink targets, `%config`, `%lang`, `%verify`, triggers, file
//! triggers, transaction file triggers, `OrderWithRequires`, prefixes, scriptlets, or
//! only the changelog). Each is built, installed with `rpm -i --root` (files included,
//! scripts not: the root has no shell) and described: every path of the root with its
//! type, mode, owner, size, content, link target and hard-link set; and the header as
//! `rpm -qp --xml` prints it, minus the tags the summary excludes by design. Equal
//! summaries must mean equal descriptions; a changelog-only difference must keep the
//! summary equal (that is what lets dependents cut off).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;

use super::{EXCLUDED_TAGS, semantic_summary};
use crate::testutil::rpmbuild_host;

/// One generated package. Names `a`..`d` live in `/usr/share/demo`.
#[derive(Debug, Clone, PartialEq)]
struct Pkg {
    /// The hard-link set of each name: names with the same number are one file.
    sets: [u8; 4],
    /// The content of each set.
    contents: [u8; 4],
    mode_a: bool,
    /// The target of the symlink `l`: `a` or `b`.
    link: u8,
    config_c: bool,
    lang_a: bool,
    verify_b: bool,
    trigger: Option<u8>,
    file_trigger: Option<u8>,
    trans_file_trigger: Option<u8>,
    order: Option<u8>,
    prefix: bool,
    post: Option<u8>,
    changelog: u8,
}

/// How many fields [`Pkg::take`] knows.
const FIELDS: usize = 14;
/// The index of the changelog in [`Pkg::take`].
const CHANGELOG: usize = 13;

impl Pkg {
    /// `self` with field `k` taken from `other`.
    fn take(&self, other: &Pkg, k: usize) -> Pkg {
        let mut p = self.clone();
        match k {
            0 => p.sets = other.sets,
            1 => p.contents = other.contents,
            2 => p.mode_a = other.mode_a,
            3 => p.link = other.link,
            4 => p.config_c = other.config_c,
            5 => p.lang_a = other.lang_a,
            6 => p.verify_b = other.verify_b,
            7 => p.trigger = other.trigger,
            8 => p.file_trigger = other.file_trigger,
            9 => p.trans_file_trigger = other.trans_file_trigger,
            10 => p.order = other.order,
            11 => p.prefix = other.prefix,
            12 => p.post = other.post,
            CHANGELOG => p.changelog = other.changelog,
            _ => unreachable!("{k} < FIELDS"),
        }
        p
    }

    fn spec(&self) -> String {
        let names = ["a", "b", "c", "d"];
        let mut install = String::new();
        let mut first: BTreeMap<u8, &str> = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let set = self.sets[i];
            match first.get(&set) {
                None => {
                    let content = if self.contents[set as usize] == 0 {
                        "XXXX"
                    } else {
                        "YYYY"
                    };
                    install.push_str(&format!("echo {content} > {name}\n"));
                    first.insert(set, name);
                }
                Some(f) => install.push_str(&format!("ln {f} {name}\n")),
            }
        }
        install.push_str(&format!("ln -s {} l\n", names[self.link as usize]));
        let mut preamble = String::new();
        if let Some(o) = self.order {
            preamble.push_str(&format!("OrderWithRequires: order{o}\n"));
        }
        if self.prefix {
            preamble.push_str("Prefix: /usr\n");
        }
        let mut scripts = String::new();
        if let Some(n) = self.post {
            scripts.push_str(&format!("%post\necho post {n}\n"));
        }
        if let Some(n) = self.trigger {
            scripts.push_str(&format!("%triggerin -- bash\necho trigger {n}\n"));
        }
        if let Some(n) = self.file_trigger {
            scripts.push_str(&format!("%filetriggerin -- /usr/lib\necho file {n}\n"));
        }
        if let Some(n) = self.trans_file_trigger {
            scripts.push_str(&format!(
                "%transfiletriggerin -- /usr/lib\necho trans {n}\n"
            ));
        }
        let a = match (self.mode_a, self.lang_a) {
            (true, true) => "%attr(0755,-,-) %lang(de) ",
            (true, false) => "%attr(0755,-,-) ",
            (false, true) => "%lang(de) ",
            (false, false) => "",
        };
        let b = if self.verify_b {
            "%verify(not md5) "
        } else {
            ""
        };
        let c = if self.config_c { "%config " } else { "" };
        format!(
            "Name: demo\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\nBuildArch: noarch\n\
{preamble}\n%description\nd\n\n%install\nmkdir -p %{{buildroot}}/usr/share/demo\n\
cd %{{buildroot}}/usr/share/demo\n{install}\n{scripts}\n%files\n%dir /usr/share/demo\n\
{a}/usr/share/demo/a\n{b}/usr/share/demo/b\n{c}/usr/share/demo/c\n/usr/share/demo/d\n\
/usr/share/demo/l\n\n%changelog\n* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1\n\
- entry {}\n",
            self.changelog
        )
    }
}

fn pkg() -> impl Strategy<Value = Pkg> {
    let files = (
        prop::array::uniform4(0u8..3),
        prop::array::uniform4(0u8..2),
        any::<bool>(),
        0u8..2,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    let meta = (
        prop::option::of(0u8..2),
        prop::option::of(0u8..2),
        prop::option::of(0u8..2),
        prop::option::of(0u8..2),
        any::<bool>(),
        prop::option::of(0u8..2),
        0u8..3,
    );
    (files, meta).prop_map(
        |(
            (sets, contents, mode_a, link, config_c, lang_a, verify_b),
            (trigger, file_trigger, trans_file_trigger, order, prefix, post, changelog),
        )| Pkg {
            sets,
            contents,
            mode_a,
            link,
            config_c,
            lang_a,
            verify_b,
            trigger,
            file_trigger,
            trans_file_trigger,
            order,
            prefix,
            post,
            changelog,
        },
    )
}

/// A built package: its summary and what installing it shows.
struct Built {
    summary: Vec<u8>,
    root: String,
    metadata: String,
}

fn build(dir: &Path, p: &Pkg) -> Built {
    let rpms = rpmbuild_host(dir, &p.spec(), &[], &[]);
    assert_eq!(rpms.len(), 1, "{rpms:?}");
    Built {
        summary: semantic_summary(&rpms[0]).unwrap(),
        root: installed_root(dir, &rpms[0]),
        metadata: metadata(&rpms[0]),
    }
}

/// Installs `rpm` with its files into a fresh root and describes every path of it.
fn installed_root(dir: &Path, rpm: &Path) -> String {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let out = Command::new("rpm")
        .args(["-i", "--nodeps", "--noscripts", "--notriggers"])
        .arg("--root")
        .arg(&root)
        .args(["--define", "_dbpath /keel-rpmdb"])
        .arg(rpm)
        .output()
        .expect("rpm runs");
    assert!(
        out.status.success(),
        "rpm -i failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<(PathBuf, std::fs::Metadata)> = walkdir::WalkDir::new(&root)
        .sort_by_file_name()
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| !e.path().starts_with(root.join("keel-rpmdb")))
        .map(|e| {
            (
                e.path().strip_prefix(&root).unwrap().to_owned(),
                e.metadata().unwrap(),
            )
        })
        .collect();
    // A hard-link set is named by its first path (entries are sorted).
    let mut sets: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut text = String::new();
    for (path, m) in &entries {
        let p = path.display().to_string();
        let set = if m.is_file() && m.nlink() > 1 {
            sets.entry((m.dev(), m.ino()))
                .or_insert_with(|| p.clone())
                .clone()
        } else {
            String::new()
        };
        let what = if m.file_type().is_symlink() {
            format!(
                "-> {}",
                std::fs::read_link(root.join(path)).unwrap().display()
            )
        } else if m.is_file() {
            let bytes = std::fs::read(root.join(path)).unwrap();
            blake3::hash(&bytes).to_hex().to_string()
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{p} {:o} {}:{} {} {what} set={set}\n",
            m.mode(),
            m.uid(),
            m.gid(),
            m.size()
        ));
    }
    text
}

/// `rpm -qp --xml`, without the tags the summary leaves out by design and those rpm
/// merges in from the signature header.
fn metadata(rpm: &Path) -> String {
    let out = Command::new("rpm")
        .args(["-qp", "--xml"])
        .arg(rpm)
        .output()
        .expect("rpm runs");
    assert!(out.status.success());
    let mut skip: Vec<String> = EXCLUDED_TAGS
        .iter()
        .map(|t| {
            let name = format!("{t:?}")
                .trim_start_matches("RPMTAG_")
                .to_lowercase();
            let mut c = name.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        })
        .collect();
    // rpm's names for what the crate calls PAYLOADSHA256*, and the tags rpm merges in
    // from the signature header (digests and sizes of the encoding).
    skip.extend(
        [
            "Payloaddigest",
            "Payloaddigestalgo",
            "Payloaddigestalt",
            "Sigsize",
            "Sigmd5",
            "Sha1header",
            "Sha256header",
        ]
        .map(String::from),
    );
    let mut text = String::new();
    let mut skipping = false;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        if let Some(name) = line
            .trim()
            .strip_prefix("<rpmTag name=\"")
            .and_then(|r| r.split('"').next())
        {
            skipping = skip.iter().any(|s| s == name);
        }
        if !skipping {
            text.push_str(line);
            text.push('\n');
        }
        if line.trim() == "</rpmTag>" {
            skipping = false;
        }
    }
    text
}

fn build_pair(a: &Pkg, b: &Pkg) -> (Built, Built) {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::thread::scope(|s| {
        let ta = s.spawn(|| build(da.path(), a));
        let tb = s.spawn(|| build(db.path(), b));
        (ta.join().unwrap(), tb.join().unwrap())
    })
}

fn check(a: &Pkg, b: &Pkg, only_changelog: bool) -> Result<(), TestCaseError> {
    let (x, y) = build_pair(a, b);
    if x.summary == y.summary {
        prop_assert_eq!(&x.root, &y.root, "equal summaries, different roots");
        prop_assert_eq!(
            &x.metadata,
            &y.metadata,
            "equal summaries, different metadata"
        );
    }
    if only_changelog {
        prop_assert!(
            x.summary == y.summary,
            "a changelog-only difference changed the summary"
        );
    }
    Ok(())
}

proptest! {
    // Two rpmbuilds and two installs per case, side by side: about 40 s on a busy
    // two-core machine.
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn equal_summaries_install_equal_roots(a in pkg(), other in pkg(), k in 0..FIELDS) {
        let b = a.take(&other, k);
        check(&a, &b, k == CHANGELOG || a == b)?;
    }
}

fn base() -> Pkg {
    Pkg {
        sets: [0, 1, 0, 1],
        contents: [0, 1, 0, 0],
        mode_a: false,
        link: 0,
        config_c: false,
        lang_a: false,
        verify_b: false,
        trigger: None,
        file_trigger: None,
        trans_file_trigger: None,
        order: None,
        prefix: false,
        post: None,
        changelog: 0,
    }
}

#[test]
fn moving_names_between_hard_link_sets_changes_the_summary() {
    // `echo XXXX > a; echo YYYY > b; ln a c; ln b d`, then the sets swapped so that `a`
    // holds YYYY: same sizes, same set of contents, same header digests per position
    // before the fix; the roots differ and so must the summaries.
    let a = base();
    let b = Pkg {
        sets: [1, 0, 0, 1],
        ..base()
    };
    let (x, y) = build_pair(&a, &b);
    assert_ne!(x.root, y.root, "the generated roots must differ");
    assert_ne!(
        String::from_utf8_lossy(&x.summary),
        String::from_utf8_lossy(&y.summary)
    );
}

#[test]
fn every_field_the_issue_named_changes_the_summary() {
    let with = |f: fn(&mut Pkg)| {
        let mut p = base();
        f(&mut p);
        p
    };
    let variants = [
        ("trigger", with(|p| p.trigger = Some(0))),
        ("file trigger", with(|p| p.file_trigger = Some(0))),
        (
            "transaction file trigger",
            with(|p| p.trans_file_trigger = Some(0)),
        ),
        ("file language", with(|p| p.lang_a = true)),
        ("prefix", with(|p| p.prefix = true)),
        ("OrderWithRequires", with(|p| p.order = Some(0))),
    ];
    let dir = tempfile::tempdir().unwrap();
    let base_summary = {
        let rpms = rpmbuild_host(&dir.path().join("base"), &base().spec(), &[], &[]);
        semantic_summary(&rpms[0]).unwrap()
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = variants
            .iter()
            .map(|(what, p)| {
                let d = dir.path().join(what.replace(' ', "-"));
                s.spawn(move || {
                    let rpms = rpmbuild_host(&d, &p.spec(), &[], &[]);
                    (*what, semantic_summary(&rpms[0]).unwrap())
                })
            })
            .collect();
        for h in handles {
            let (what, summary) = h.join().unwrap();
            assert_ne!(
                String::from_utf8_lossy(&summary),
                String::from_utf8_lossy(&base_summary),
                "{what}"
            );
        }
    });
}
