//! Sandbox setup cost as the build closure grows, and the alternative it replaces.
//!
//! - `sandbox_true/N`: [`keel_toolchain::sandbox::run`] of `/bin/true` over N layers
//!   unpacked from N generated RPMs (merged-layer cache warm, as on every build after the
//!   first with that closure), on the host toolchain.
//! - `merge_layers/300`: the one-time merge of 300 layers into a hard-link farm (the first
//!   build with a given closure pays it; removal of the farm is included).
//! - `rpm_install/20`: installing the same 20 RPMs into a fresh root with
//!   `rpm --root DIR --initdb` then `rpm --root DIR -i --nodeps` in one run: what a
//!   per-build package installation would cost instead (the Azure Linux toolkit installs
//!   with tdnf, which does this and more).
//!
//! Needs root, bubblewrap and rpm (`scripts/install-deps.sh test`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use keel_toolchain::sandbox::{self, SandboxSpec};
use keel_toolchain::{LayerCache, Toolchain};
use rpm::{FileOptions, PackageBuilder};

/// Writes `n` small RPMs, each with a library-like file, a header and a doc file.
fn generate_rpms(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let name = format!("bench{i}");
            let mut b = PackageBuilder::new(&name, "1.0", "MIT", "noarch", "bench package");
            b.with_file_contents(
                vec![i as u8; 4096],
                FileOptions::new(format!("/usr/lib64/lib{name}.so.1")),
            )
            .unwrap()
            .with_file_contents(
                format!("int {name}(void);\n"),
                FileOptions::new(format!("/usr/include/{name}.h")),
            )
            .unwrap()
            .with_file_contents(
                b"docs".to_vec(),
                FileOptions::new(format!("/usr/share/doc/{name}/README")),
            )
            .unwrap();
            let path = dir.join(format!("{name}.rpm"));
            b.build().unwrap().write_file(&path).unwrap();
            path
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let rpms = generate_rpms(&tmp.path().join("rpms"), 300);
    let cache = LayerCache::new(&tmp.path().join("layers"));
    let layers: Vec<PathBuf> = rpms.iter().map(|r| cache.layer(r).unwrap().1).collect();
    let build = tmp.path().join("build");
    let log = tmp.path().join("log");

    let mut group = c.benchmark_group("sandbox_true");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    for n in [0usize, 20, 300] {
        let mut spec = SandboxSpec::new(Toolchain::Host, &build);
        spec.layers = layers[..n].to_vec();
        spec.merge_cache = Some(tmp.path().join("layers"));
        // Warm the merged-layer cache and check the sandbox works at all.
        let r = sandbox::run(&spec, &["/bin/true"], &log).unwrap();
        assert!(
            r.outcome.success(),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &spec, |b, spec| {
            b.iter(|| sandbox::run(spec, &["/bin/true"], &log).unwrap());
        });
    }
    group.finish();

    // The one-time cost a new closure of 300 layers pays before setup goes flat.
    let mut group = c.benchmark_group("merge_layers");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let mut round = 0u32;
    group.bench_function(BenchmarkId::from_parameter(300), |b| {
        b.iter(|| {
            round += 1;
            let dest = tmp.path().join(format!("merge{round}"));
            keel_toolchain::layer::merge_layers(&layers, &dest).unwrap();
            std::fs::remove_dir_all(&dest).unwrap();
        });
    });
    group.finish();

    let mut group = c.benchmark_group("rpm_install");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let twenty = &rpms[..20];
    let mut round = 0u32;
    group.bench_function(BenchmarkId::from_parameter(20), |b| {
        b.iter(|| {
            round += 1;
            let root = tmp.path().join(format!("root{round}"));
            std::fs::create_dir_all(&root).unwrap();
            let ok = Command::new("rpm")
                .arg("--root")
                .arg(&root)
                .arg("--initdb")
                .status()
                .unwrap();
            assert!(ok.success());
            let ok = Command::new("rpm")
                .arg("--root")
                .arg(&root)
                .args(["-i", "--nodeps"])
                .args(twenty)
                // Debian's rpm warns on every direct install; the numbers are what matters.
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(ok.success());
            std::fs::remove_dir_all(&root).unwrap();
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
