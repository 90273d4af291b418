//! The example distribution's signatures files, read and checked with this crate: every
//! file beside a spec is signed, correctly, and nothing else is.

use std::fs;
use std::path::Path;

use keel_sources::{Signatures, verify_dir};

#[test]
fn every_source_of_the_example_distribution_is_signed_correctly() {
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/distro/SPECS");
    let mut dirs: Vec<_> = fs::read_dir(&specs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 10, "{dirs:?}");
    let mut signed = 0;
    for dir in dirs {
        let pkg = dir.file_name().unwrap().to_str().unwrap().to_owned();
        let sigs = Signatures::load(&dir.join(format!("{pkg}.signatures.json"))).unwrap();
        // Everything in the directory but the spec and the signatures is a source.
        let mut sources: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|f| !f.ends_with(".spec") && !f.ends_with(".signatures.json"))
            .collect();
        sources.sort();
        let problems = verify_dir(&dir, &sigs, &sources);
        assert!(problems.is_empty(), "{pkg}: {problems:?}");
        assert_eq!(sigs.len(), sources.len(), "{pkg}");
        signed += sigs.len();
    }
    assert!(signed >= 10, "{signed}");
}
