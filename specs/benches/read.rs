//! Reading a generated corpus of specs (so CI can run it without a real tree).

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use keel_specs::{EngineConfig, MacroTable, ReaderConfig, read_spec};

fn corpus(dir: &std::path::Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("gen{i}.spec"));
            let mut s = format!(
                "%global ver 1.{i}\n%define sub() %{{name}}-%1\nName: gen{i}\nVersion: %{{ver}}\nRelease: 1%{{?dist}}\nSummary: generated\nLicense: MIT\nSource0: https://example.com/gen{i}-%{{version}}.tar.gz\n"
            );
            for k in 0..20 {
                s.push_str(&format!("BuildRequires: dep{k} >= 1.{k}, (a{k} or b{k})\n"));
            }
            s.push_str("%if 0%{?with_check}\nBuildRequires: check\n%endif\n%description\nd\n");
            for k in 0..5 {
                s.push_str(&format!(
                    "%package p{k}\nSummary: s\nRequires: %{{name}} = %{{version}}-%{{release}}\n%description p{k}\n%{{sub p{k}}}\n%files p{k}\n/usr/lib/p{k}\n"
                ));
            }
            s.push_str("%prep\n%setup -q\n%build\nmake %{?_smp_mflags}\n%files\n/usr/bin/x\n%changelog\n* Mon Jan 01 2024 a <a@b> - 1\n- x\n");
            std::fs::write(&p, s).expect("write");
            p
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let d = tempfile::tempdir().expect("tempdir");
    let specs = corpus(d.path(), 100);
    let cfg = ReaderConfig::new(MacroTable::new(), EngineConfig::default());
    c.bench_function("read 100 generated specs", |b| {
        b.iter(|| {
            for p in &specs {
                read_spec(p, &cfg).expect("reads");
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
