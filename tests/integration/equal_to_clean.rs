//! keel's first promise, as a property on real rpmbuild: after any sequence of edits, an
//! incremental build publishes exactly what a clean build of the same tree in a fresh
//! store publishes — every RPM, SRPM, repository file and image, byte for byte.
//!
//! The tree is small but has each thing keel has got wrong before: hard links whose
//! grouping changes while every file's content stays (the semantic summary must see
//! it), a package that copies a file of another at build time (cut-off must not skip
//! it), Lua scriptlets, a trigger and a file trigger, a `Release:` read by `%(cat …)`
//! from a file beside the spec, two macro files that define the same macro (order
//! matters), a changelog-only edit (the RPM's bytes change, its payload does not: the
//! repository must follow), a toolchain change (its manifest, part of every build's key),
//! and an image of two of the packages.
//!
//! Each edit moves one of those to another variant, or undoes an earlier edit; after
//! each, `keel build` runs
//! in the tree's own store and its `out/` is compared with a clean build's. The tree's
//! states repeat (undos, and each knob has two or three variants), so a clean build is
//! done once per state. `KEEL_TRUST_EDITS` sets the
//! number of edits (default 100; the longer run: `KEEL_TRUST_EDITS=1000 cargo test
//! --test integration equal_to_clean`), `KEEL_TRUST_SEED` the seed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::build::files;
use crate::support::*;

/// One knob of the tree: a file and its variants.
struct Knob {
    name: &'static str,
    path: &'static str,
    variants: Vec<String>,
}

fn links_spec(links: &str) -> String {
    format!(
        "Name: links
Version: 1
Release: 1
Summary: Two files, each hard-linked once
License: MIT
BuildArch: noarch
Source0: content.txt

%description
Hard-linked files.

%install
mkdir -p %{{buildroot}}/usr/share/links
cd %{{buildroot}}/usr/share/links
head -n 1 %{{SOURCE0}} > c
tail -n 1 %{{SOURCE0}} > d
{links}

%files
/usr/share/links

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- First.
"
    )
}

fn user_spec(extra: &str) -> String {
    format!(
        "Name: user
Version: 1
Release: 1
Summary: Copies a file of links at build time
License: MIT
BuildArch: noarch
BuildRequires: links
{extra}
%description
Ships what /usr/share/links/a held when it was built.

%install
mkdir -p %{{buildroot}}/usr/share/user
cp /usr/share/links/a %{{buildroot}}/usr/share/user/from-a

%files
/usr/share/user/from-a

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- First.
"
    )
}

fn trig_spec(body: &str, changelog: &str) -> String {
    format!(
        "Name: trig
Version: 1
Release: %(cat %{{_sourcedir}}/release.txt)
Summary: %{{demo_val}}
License: MIT
BuildArch: noarch
Source0: release.txt

%description
Scriptlets, a trigger and a file trigger, all in Lua.

%install
mkdir -p %{{buildroot}}/usr/share/trig
echo %{{demo_val}} > %{{buildroot}}/usr/share/trig/val

%post -p <lua>
print(\"{body} post\")

%triggerin -p <lua> -- links
print(\"{body} trigger\")

%filetriggerin -p <lua> -- /usr/share/links
print(\"{body} file trigger\")

%files
/usr/share/trig/val

%changelog
{changelog}* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- First.
"
    )
}

const IMAGE: &str = r#"{
    "Disks": [{"Artifacts": [{"Name": "app", "Compression": "tar.gz"}]}],
    "SystemConfigs": [{"Name": "App", "PackageLists": ["lists/app.json"], "Hostname": "HOST"}]
}"#;

fn knobs() -> Vec<Knob> {
    let v = |xs: &[String]| xs.to_vec();
    vec![
        Knob {
            name: "hard-link grouping",
            path: "SPECS/links/links.spec",
            variants: v(&[links_spec("ln c a\nln d b"), links_spec("ln c b\nln d a")]),
        },
        Knob {
            name: "source content",
            path: "SPECS/links/content.txt",
            variants: v(&["XXXX\nYYYY\n".into(), "XXXX\nZZZZ\n".into()]),
        },
        Knob {
            name: "a comment in user's spec",
            path: "SPECS/user/user.spec",
            variants: v(&[user_spec(""), user_spec("# a comment\n")]),
        },
        Knob {
            name: "scriptlet bodies",
            path: "SPECS/trig/trig.spec",
            variants: v(&[
                trig_spec("one", ""),
                trig_spec("two", ""),
                trig_spec(
                    "one",
                    "* Sat Nov 28 2026 keel <keel@example.invalid> - 1-1\n- Changelog only.\n\n",
                ),
            ]),
        },
        Knob {
            name: "file read by %(cat)",
            path: "SPECS/trig/release.txt",
            variants: v(&["1\n".into(), "2\n".into()]),
        },
        Knob {
            name: "first macro file",
            path: "macros/zz",
            variants: v(&["%demo_val 1\n".into(), "%demo_val 3\n".into()]),
        },
        Knob {
            name: "second macro file",
            path: "macros/aa",
            variants: v(&["%demo_val 2\n".into(), "# nothing\n".into()]),
        },
        // The host toolchain's content cannot be edited from a test without editing the
        // host; its manifest is part of its identity (every build's key), so a manifest
        // edit is a toolchain change: everything reruns and must still equal clean.
        Knob {
            name: "toolchain manifest",
            path: "toolchain.txt",
            variants: v(&[
                "bash-5.2.15-1.azl3.x86_64.rpm\n".into(),
                "bash-5.2.15-1.azl3.x86_64.rpm\ncoreutils-9.4-1.azl3.x86_64.rpm\n".into(),
            ]),
        },
        Knob {
            name: "image config",
            path: "images/app.json",
            variants: v(&[IMAGE.replace("HOST", "one"), IMAGE.replace("HOST", "two")]),
        },
    ]
}

const KEEL_TOML: &str = "[specs]
dirs = [\"SPECS\"]
macro_files = [\"macros/zz\", \"macros/aa\"]
[images]
configs = [\"images/app.json\"]
[toolchain]
manifest = \"toolchain.txt\"
";

/// Writes the tree of `state` (one variant index per knob) under `dir`.
fn write_tree(dir: &Path, knobs: &[Knob], state: &[usize]) {
    let put = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // Only changed files are written, as an editor would leave the rest alone.
        if std::fs::read_to_string(&p).ok().as_deref() != Some(text) {
            std::fs::write(p, text).unwrap();
        }
    };
    put("keel.toml", KEEL_TOML);
    put("images/lists/app.json", r#"{"packages": ["user", "trig"]}"#);
    for (k, &v) in knobs.iter().zip(state) {
        put(k.path, &k.variants[v]);
    }
}

/// `keel build` in `p`'s tree: every file it published, by path under `out/`.
fn build_and_collect(p: &Project) -> BTreeMap<String, String> {
    let run = p.keel(&["-C", "tree", "-q", "build"]).run();
    let run = run.success();
    drop(run);
    files(&p.path("tree/out"))
}

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn incremental_equals_clean_after_random_edits_with_real_rpmbuild() {
    let knobs = knobs();
    let edits = env_number("KEEL_TRUST_EDITS", 100);
    let seed = env_number("KEEL_TRUST_SEED", 0x6b65_656c);
    let mut rng = Rng(seed | 1);
    let mut state = vec![0; knobs.len()];
    let p = project().build();
    write_tree(&p.path("tree"), &knobs, &state);
    let mut clean: HashMap<Vec<usize>, BTreeMap<String, String>> = HashMap::new();
    let mut history: Vec<String> = Vec::new();
    let mut undo: Vec<Vec<usize>> = Vec::new();
    for step in 0..=edits {
        if step > 0 {
            // Half the edits undo an earlier one (as developers do, and a stale cache
            // shows best on the way back); the others move one knob.
            if !undo.is_empty() && rng.below(2) == 0 {
                state = undo.pop().unwrap();
                history.push("undo".to_owned());
            } else {
                undo.push(state.clone());
                let k = rng.below(knobs.len());
                let n = knobs[k].variants.len();
                state[k] = (state[k] + 1 + rng.below(n - 1)) % n;
                history.push(format!("{} -> variant {}", knobs[k].name, state[k]));
            }
            write_tree(&p.path("tree"), &knobs, &state);
        }
        let incremental = build_and_collect(&p);
        let want = clean.entry(state.clone()).or_insert_with(|| {
            let fresh = project().build();
            write_tree(&fresh.path("tree"), &knobs, &state);
            build_and_collect(&fresh)
        });
        if &incremental != want {
            let differ: std::collections::BTreeSet<_> = want
                .keys()
                .chain(incremental.keys())
                .filter(|f| want.get(*f) != incremental.get(*f))
                .collect();
            panic!(
                "after edit {step} (seed {seed:#x}) the incremental build differs from a clean \
                 one in {differ:?}\nedits:\n  {}",
                history.join("\n  ")
            );
        }
    }
    // The walk went through more than a handful of states, and each knob moved.
    assert!(
        clean.len() >= 8.min(edits as usize),
        "{} states",
        clean.len()
    );
}
