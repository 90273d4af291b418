//! Test helpers: packages made with the `rpm` crate's builder, hostile ones included.

use std::path::{Path, PathBuf};

use keel_toolchain::RpmInfo;
use rpm::{FileOptions, PackageBuilder};

/// Writes `<dir>/<name>.rpm`, a noarch package `name-1.0-1`, letting `f` add entries and
/// dependencies, and returns it with its header read back.
pub(crate) fn crafted(
    dir: &Path,
    name: &str,
    f: impl FnOnce(&mut PackageBuilder),
) -> (PathBuf, RpmInfo) {
    let mut b = PackageBuilder::new(name, "1.0", "MIT", "noarch", "crafted for a test");
    b.release("1").build_host("keel-test");
    f(&mut b);
    let pkg = b.build().unwrap();
    let path = dir.join(format!("{name}.rpm"));
    pkg.write_file(&path).unwrap();
    let info = keel_toolchain::read_rpm(&path).unwrap();
    (path, info)
}

/// Adds a regular file.
pub(crate) fn file(b: &mut PackageBuilder, path: &str, content: &[u8], mode: u32) {
    b.with_file_contents(
        content.to_vec(),
        FileOptions::new(path).permissions(mode as u16),
    )
    .unwrap();
}

/// Adds a symlink.
pub(crate) fn symlink(b: &mut PackageBuilder, path: &str, target: &str) {
    b.with_symlink(FileOptions::symlink(path, target)).unwrap();
}

/// A package with the host's `/bin/sh` (dash) and the libraries it loads, so scripts can
/// run in a root made of test packages.
pub(crate) fn host_shell(dir: &Path) -> (PathBuf, RpmInfo) {
    let read = |p: &str| std::fs::read(p).unwrap_or_else(|e| panic!("read host {p}: {e}"));
    crafted(dir, "hostsh", |b| {
        file(b, "/usr/bin/sh", &read("/bin/dash"), 0o755);
        file(
            b,
            "/lib64/ld-linux-x86-64.so.2",
            &read("/lib64/ld-linux-x86-64.so.2"),
            0o755,
        );
        file(
            b,
            "/lib/x86_64-linux-gnu/libc.so.6",
            &read("/lib/x86_64-linux-gnu/libc.so.6"),
            0o755,
        );
        symlink(b, "/bin", "usr/bin")
    })
}
