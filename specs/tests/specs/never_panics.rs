//! Property: reading any spec text ends in a model or an error, never a panic.

use std::sync::Arc;
use std::time::Duration;

use keel_specs::{EngineConfig, MacroTable, ReaderConfig, ShellRunner, read_spec};
use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "Name: p\n",
    "Version: 1\n",
    "Release: 1\n",
    "Summary: s\n",
    "License: MIT\n",
    "%description\n",
    "%package sub\n",
    "%package -n x\n",
    "%files\n",
    "%files sub\n",
    "%prep\n",
    "%setup -q\n",
    "%patch0 -p1\n",
    "Source0: a.tar.gz\n",
    "Patch0: p.patch\n",
    "%build\n",
    "%check\n",
    "%changelog\n",
    "* Mon Jan 01 2024 a - 1\n",
    "- entry\n",
    "%if 1\n",
    "%if 0\n",
    "%else\n",
    "%endif\n",
    "%elif 1\n",
    "%ifarch x86_64\n",
    "%define m(a:) %{-a*}\n",
    "%global g %{m -a 1}\n",
    "%{g}\n",
    "%{?g:x}\n",
    "%{!?g:y}\n",
    "%{expand:%%{g}}\n",
    "%[1+2]\n",
    "%[v\"1\" < v\"2\"]\n",
    "%{lua: print(1)}\n",
    "%{lua: rpm.define('z 1')}\n",
    "Requires: (a or b)\n",
    "Requires: a >= 1, b\n",
    "BuildRequires: c\n",
    "%{\n",
    "%(\n",
    "%[\n",
    "}\n",
    ")\n",
    "\\\n",
    "%%\n",
    "%\n",
    "%{quote:a b}\n",
    "%bcond_with t\n",
    "%{with t}\n",
    "%include x\n",
    "%end\n",
    "# comment %{g}\n",
    "%undefine g\n",
    "%{basename:/a/b}\n",
    "Provides: p = 1\n",
    "Obsoletes: o < 1\n",
    "BuildArch: noarch\n",
    "%post -p /bin/sh\n",
    "\u{e9}\n",
];

fn spec_text() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(FRAGMENTS).prop_map(|s| s.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..12),
        ],
        0..40,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn reading_never_panics(text in spec_text()) {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("gen.spec");
        std::fs::write(&p, &text).expect("write");
        // Generated text reaches `%(…)` with random bytes (`>name` wrote files into the
        // test's working directory): it runs contained, as a tree's specs do.
        let ecfg = EngineConfig {
            shell: Arc::new(ShellRunner::contained(Duration::from_secs(2), 1 << 20)),
            ..EngineConfig::default()
        };
        let cfg = ReaderConfig::new(MacroTable::new(), ecfg);
        let _ = read_spec(&p, &cfg);
    }
}
