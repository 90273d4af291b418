//! Writes a generated distribution tree (see `keel_rules::gentree`) for benchmarks:
//! `cargo run --release -p keel-rules --example gentree -- DIR [SPECS [SEED]]`.

// A command-line tool: its messages go to stderr.
#![allow(clippy::print_stderr)]

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: gentree DIR [SPECS [SEED]]");
        std::process::exit(2);
    };
    let n: usize = args
        .next()
        .map_or(3000, |s| s.parse().expect("SPECS is a number"));
    let seed: u64 = args
        .next()
        .map_or(1, |s| s.parse().expect("SEED is a number"));
    let d = keel_engine::testing::Distro::generate(n, 8, seed);
    keel_rules::gentree::write_tree(&d, std::path::Path::new(&dir)).expect("writing the tree");
    eprintln!("wrote {n} specs under {dir}");
}
