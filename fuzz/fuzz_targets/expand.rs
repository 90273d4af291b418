//! Any text through the macro engine and the expression parser.
#![no_main]

use keel_specs::macros::Engine;
use keel_specs::{EngineConfig, MacroTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if data.contains("%(") {
        return;
    }
    let mut e = Engine::new(MacroTable::new(), EngineConfig::default());
    let _ = e.expand(data);
    let _ = keel_specs::expr::eval(data, None);
});
