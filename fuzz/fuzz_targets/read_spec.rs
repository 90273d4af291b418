//! Any bytes as a spec file: reading must end in a model or an error, never a panic.
#![no_main]

use keel_specs::{EngineConfig, MacroTable, ReaderConfig, read_spec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // %(shell) is not fuzzed: the shell runs arbitrary commands.
    if data.windows(2).any(|w| w == b"%(") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("keel-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join("fuzz.spec");
    if std::fs::write(&p, data).is_ok() {
        let cfg = ReaderConfig::new(MacroTable::new(), EngineConfig::default());
        let _ = read_spec(&p, &cfg);
    }
});
