//! Reads every `*.json` image config in a directory and says which parse and which are
//! rejected (and why): `cargo run -p keel-image --example check_configs -- DIR`.

#![expect(
    clippy::print_stdout,
    reason = "a command-line example reports on stdout"
)]

fn main() {
    let dir = std::env::args().nth(1).expect("usage: check_configs DIR");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read the directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let (mut ok, mut rejected) = (0, 0);
    for f in files {
        match keel_image::load_config(&f) {
            Ok(c) => {
                ok += 1;
                println!(
                    "ok       {} ({} packages)",
                    f.display(),
                    c.systems[0].packages.len()
                );
            }
            Err(e) => {
                rejected += 1;
                println!("rejected {e}");
            }
        }
    }
    println!("{ok} parsed, {rejected} rejected");
}
