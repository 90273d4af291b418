//! Reading a whole generated tree the way `keel spec check` and `keel graph` do: macro files
//! loaded once, then every spec read against the shared table, on as many threads as the
//! machine has. The tree is generated in code (so CI can run it without a real distribution
//! tree) and uses what makes real trees slow: many macro definitions, parametric macros,
//! `%{lua:}` from the macro files and `%(shell)`.
//!
//! - `tree/warm`: `%(shell)` results already cached in memory (later passes of one process).
//! - `tree/new process`: a fresh shell runner whose only cache is the on-disk one
//!   (`EngineConfig::shell_cache_dir`), i.e. a warm read in a new process; it forks nothing.
//!
//! For the real Azure Linux tree, see the command in `specs/README.md` ("Speed").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keel_specs::{CliMacro, EngineConfig, MacroSetup, ReaderConfig, ShellRunner, read_spec};

const SPECS: usize = 300;

fn macro_file() -> String {
    let mut s = String::new();
    for i in 0..400 {
        s.push_str(&format!("%_gen_dir{i} %{{_prefix}}/lib/gen{i}\n"));
    }
    s.push_str("%_prefix /usr\n%_bindir %{_prefix}/bin\n%_datadir %{_prefix}/share\n");
    s.push_str("%gen_flags -O2 -g %{?_gen_extra} -pipe\n");
    s.push_str("%gen_pkg(n:s) %{-n*}%{?-s:-%{-s*}}\n");
    s.push_str("%gen_upper() %{lua: print(string.upper(arg[1] or ''))}\n");
    s.push_str(
        "%gen_provides() %{lua:\nlocal n = rpm.expand('%{name}')\nfor i = 1, 3 do print('Provides: ' .. n .. '-compat' .. i .. ' = ' .. rpm.expand('%{version}') .. '\\n') end\n}\n",
    );
    s.push_str("%gen_host %(echo x86_64)\n");
    s
}

fn spec(i: usize) -> String {
    let mut s = format!(
        "%global ver 1.{i}\nName: gen{i}\nVersion: %{{ver}}\nRelease: 1%{{?dist}}\nSummary: generated %{{gen_upper spec}}\nLicense: MIT\nURL: https://example.com/%{{name}}\nSource0: %{{url}}/%{{name}}-%{{version}}.tar.gz\nPatch0: fix-%{{gen_host}}.patch\n"
    );
    for k in 0..15 {
        s.push_str(&format!(
            "BuildRequires: %{{gen_pkg -n dep{k} -s devel}} >= 1.{k}\n"
        ));
    }
    s.push_str("%gen_provides\n");
    s.push_str("%if 0%{?with_tests}\nBuildRequires: check\n%endif\n%description\n");
    for _ in 0..10 {
        s.push_str("A line of description without any macro in it, as most lines are.\n");
    }
    for k in 0..4 {
        s.push_str(&format!(
            "%package p{k}\nSummary: s\nRequires: %{{name}}%{{?_isa}} = %{{version}}-%{{release}}\n%description p{k}\nsub\n%files p{k}\n%{{_gen_dir{k}}}/p{k}\n"
        ));
    }
    s.push_str("%prep\n%setup -q\n%build\nexport CFLAGS=\"%{gen_flags}\"\n");
    for k in 0..20 {
        s.push_str(&format!("make -C src/part{k} %{{?_smp_mflags}} V=1\n"));
    }
    s.push_str("%install\nmkdir -p %{buildroot}%{_bindir}\n%files\n%{_bindir}/gen\n%{_datadir}/gen\n%changelog\n");
    for k in 0..10 {
        s.push_str(&format!(
            "* Mon Jan {:02} 2024 Someone <a@b.c> - 1.{k}-1\n- change {k}\n\n",
            28 - k
        ));
    }
    s
}

fn tree(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let macros = dir.join("macros.gen");
    std::fs::write(&macros, macro_file()).expect("write macros");
    let specs = (0..SPECS)
        .map(|i| {
            let d = dir.join(format!("gen{i}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            let p = d.join(format!("gen{i}.spec"));
            std::fs::write(&p, spec(i)).expect("write spec");
            p
        })
        .collect();
    (macros, specs)
}

fn config(macros: &Path, cache_dir: &Path) -> ReaderConfig {
    let ecfg = EngineConfig {
        shell: Arc::new(ShellRunner::new(
            vec!["/bin/sh".into(), "-c".into()],
            Duration::from_secs(30),
        )),
        shell_cache_dir: Some(cache_dir.to_path_buf()),
        ..EngineConfig::default()
    };
    let setup = MacroSetup {
        // no host files: the tree's macro files only, as on a machine without rpm
        macro_path: String::new(),
        target: Some("x86_64-linux".into()),
        cli: vec![
            CliMacro::Load(macros.to_path_buf()),
            CliMacro::Define("dist .gen1".into()),
        ],
    };
    let (table, _) = keel_specs::load_macros(&setup, &ecfg).expect("macros");
    let mut cfg = ReaderConfig::new(table, ecfg);
    cfg.sourcedir_is_specdir = true;
    cfg
}

/// Reads every spec, split over the machine's threads (as `keel spec check` does).
fn read_all(specs: &[PathBuf], cfg: &ReaderConfig) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = specs.len().div_ceil(n);
    std::thread::scope(|s| {
        for part in specs.chunks(chunk) {
            s.spawn(move || {
                for p in part {
                    read_spec(p, cfg).expect("generated specs read");
                }
            });
        }
    });
}

fn bench(c: &mut Criterion) {
    let d = tempfile::tempdir().expect("tempdir");
    let cache = d.path().join("shell-cache");
    let (macros, specs) = tree(d.path());
    let warm = config(&macros, &cache);
    read_all(&specs, &warm); // fills the in-memory and the on-disk shell cache
    let mut g = c.benchmark_group("tree");
    g.sample_size(20);
    g.bench_function(format!("warm ({SPECS} specs)"), |b| {
        b.iter(|| read_all(&specs, &warm))
    });
    g.bench_function(format!("new process ({SPECS} specs)"), |b| {
        b.iter_with_setup(
            || config(&macros, &cache),
            |cfg| {
                read_all(&specs, &cfg);
                assert_eq!(cfg.engine.shell.spawned(), 0, "a warm read forks nothing");
            },
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
