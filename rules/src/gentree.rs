//! Writing a generated distribution as a real tree of spec files, for the property test
//! and the benchmarks: the shape comes from `keel_engine::testing::Distro` (a toolchain
//! core, chains of libraries above it), the files are what a tree of that shape would hold.
//!
//! Per package `pkgNNNN`: `SPECS/pkgNNNN/pkgNNNN.spec` (with a `-devel` subpackage, which
//! is what dependents BuildRequire), a source file and a patch beside it. Tree-wide: a
//! macro file loaded by keel.toml, the toolchain manifest, and keel.toml with the
//! `with_check` define. Each file has a significant line and a comment line, so that an
//! edit can change a file's bytes without changing what it means (see `FileState`).

use std::io;
use std::path::Path;

use keel_engine::testing::{Distro, FileState};

/// Writes (or updates) the tree for `d` under `root`. Files whose bytes are already
/// right are not written, so their metadata stays as it was, as it would after an edit
/// of some other file.
pub fn write_tree(d: &Distro, root: &Path) -> io::Result<()> {
    let specs = root.join("SPECS");
    put(
        &root.join("keel.toml"),
        &format!(
            "[specs]\ndirs = [\"SPECS\"]\nhost_macros = false\n\
             macro_files = [\"SPECS/gen-rpm-macros/macros.gen\"]\n\
             defines = {{ dist = \".gen\", with_check = \"{}\" }}\n\n\
             [toolchain]\nmanifest = \"toolchain.txt\"\n",
            u8::from(d.with_check)
        ),
    )?;
    put(
        &specs.join("gen-rpm-macros/macros.gen"),
        &format!(
            "%gen_flavor {}\n# comment {}\n",
            d.macros.content, d.macros.comment
        ),
    )?;
    put(
        &root.join("toolchain.txt"),
        &format!(
            "gen-toolchain-1.{}-1.x86_64.rpm\n# comment {}\n",
            d.toolchain.content, d.toolchain.comment
        ),
    )?;
    for p in &d.packages {
        let dir = specs.join(&p.name);
        put(&dir.join(format!("{}.spec", p.name)), &spec_text(d, p))?;
        put(
            &dir.join(format!("{}-1.0.tar", p.name)),
            &format!("source of {} version {}\n", p.name, p.source),
        )?;
        put(
            &dir.join(format!("{}-fix.patch", p.name)),
            &file_text(&p.patch),
        )?;
    }
    Ok(())
}

/// The spec of package `p`.
pub fn spec_text(d: &Distro, p: &keel_engine::testing::Package) -> String {
    let mut s = format!(
        "# comment {}\nName: {}\nVersion: 1.0\nRelease: {}%{{?dist}}\n\
         Summary: Generated package {}\nLicense: MIT\nSource0: {}-1.0.tar\nPatch0: {}-fix.patch\n",
        p.spec.comment, p.name, p.release, p.name, p.name, p.name
    );
    for j in &p.build_requires {
        s.push_str(&format!("BuildRequires: {}-devel\n", d.packages[*j].name));
    }
    s.push_str(&format!(
        "%global gen_content {}\n\n%description\nGenerated.\n\n\
         %package devel\nSummary: Headers of {}\nRequires: %{{name}} = %{{version}}-%{{release}}\n\n\
         %description devel\nHeaders.\n\n%files\n/usr/lib/{}\n\n%files devel\n/usr/include/{}.h\n\n\
         %changelog\n* Thu Jan 01 2026 Gen <gen@example.org> - 1.0-1\n- Generated.\n",
        p.spec.content, p.name, p.name, p.name
    ));
    s
}

fn file_text(f: &FileState) -> String {
    format!("content {}\n# comment {}\n", f.content, f.comment)
}

fn put(path: &Path, text: &str) -> io::Result<()> {
    if std::fs::read(path).is_ok_and(|b| b == text.as_bytes()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}
