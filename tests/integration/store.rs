//! `keel store`: the store through the command line, including its reliability promises.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn add_prints_digests_like_b3sum_and_cat_returns_the_bytes() {
    let p = project()
        .file("a.txt", "hello world")
        .file("b.bin", noise(1, 300_000))
        .build();
    let run = p.keel(&["store", "add", "a.txt", "b.bin"]).run().success();
    let expected = format!(
        "{}  a.txt\n{}  b.bin\n",
        b3(b"hello world"),
        b3(&noise(1, 300_000))
    );
    assert_eq!(run.stdout(), expected);
    // The real b3sum prints the same lines.
    let b3sum = std::process::Command::new("b3sum")
        .args(["a.txt", "b.bin"])
        .current_dir(p.root())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&b3sum.stdout), expected);

    let cat = p
        .keel(&["store", "cat", &b3(&noise(1, 300_000))])
        .run()
        .success();
    assert_eq!(cat.out.stdout, noise(1, 300_000));
}

#[test]
fn add_reads_standard_input() {
    let p = project().build();
    let mut child = p
        .keel(&["store", "add", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}  -\n", b3(b"from stdin"))
    );
}

#[test]
fn directories_are_trees_that_share_files() {
    let p = project()
        .file("v1/a", "same")
        .file("v1/sub/b", "old")
        .file("v2/a", "same")
        .file("v2/sub/b", "new")
        .file("copy/a", "same")
        .file("copy/sub/b", "old")
        .build();
    let out = p
        .keel(&["store", "add", "v1", "v2", "copy"])
        .run()
        .success()
        .stdout();
    let digests: Vec<&str> = out.lines().map(|l| &l[..64]).collect();
    assert_ne!(digests[0], digests[1], "different content, different tree");
    assert_eq!(digests[0], digests[2], "same content, same tree");
    let stats = p
        .keel(&["--json", "store", "stats"])
        .run()
        .success()
        .stdout();
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["blobs"]["objects"], 3, "a is stored once: {v}");
    assert_eq!(v["trees"]["objects"], 2);
}

#[test]
fn compressible_content_is_compressed_and_compressed_formats_are_not() {
    let text: String = (0..40_000)
        .map(|i| format!("line {i} of a very repetitive file\n"))
        .collect();
    let p = project()
        .file("notes.txt", &text)
        .file("src.tar.gz", &text)
        .build();
    p.keel(&["store", "add", "notes.txt", "src.tar.gz"])
        .run()
        .success();
    let size = |content: &str| {
        let path = p
            .store()
            .join("blobs")
            .join(&b3(content.as_bytes())[..2])
            .join(&b3(content.as_bytes())[2..]);
        std::fs::metadata(path).unwrap().len()
    };
    // Same bytes, so one object: it was compressed (the .txt came first).
    assert!(
        size(&text) < text.len() as u64 / 5,
        "stored {} for {}",
        size(&text),
        text.len()
    );

    let q = project().file("src.tar.gz", &text).build();
    q.keel(&["store", "add", "src.tar.gz"]).run().success();
    let path = q
        .store()
        .join("blobs")
        .join(&b3(text.as_bytes())[..2])
        .join(&b3(text.as_bytes())[2..]);
    assert_eq!(
        std::fs::metadata(path).unwrap().len(),
        text.len() as u64 + 24,
        "a .tar.gz is stored raw"
    );
}

fn object_path(p: &Project, content: &[u8]) -> std::path::PathBuf {
    let h = b3(content);
    p.store().join("blobs").join(&h[..2]).join(&h[2..])
}

fn flip_byte(path: &std::path::Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x55;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_is_detected_on_read_reported_by_verify_and_never_served() {
    // A small blob (verified in memory) and one above the 32 MiB streaming threshold
    // (verified in a first pass before any byte is written).
    for len in [10_000usize, 70 << 20] {
        let content = noise(len as u64, len);
        let p = project().file("f.bin", &content).build();
        p.keel(&["store", "add", "f.bin"]).run().success();
        let obj = object_path(&p, &content);
        flip_byte(&obj, 24 + len as u64 / 2);

        let cat = p.keel(&["store", "cat", &b3(&content)]).run().code_is(1);
        assert!(
            cat.out.stdout.is_empty(),
            "{} damaged bytes were served",
            cat.out.stdout.len()
        );
        cat.stderr_has(&b3(&content))
            .stderr_has(&obj.display().to_string())
            .stderr_has("damaged");

        // The read quarantined it; verify reports it once.
        p.keel(&["store", "verify"]).run().code_is(3).stderr_has("");
        p.keel(&["store", "verify"]).run().success();
        // Adding the file again repairs the store.
        p.keel(&["store", "add", "f.bin"]).run().success();
        assert_eq!(
            p.keel(&["store", "cat", &b3(&content)])
                .run()
                .success()
                .out
                .stdout,
            content
        );
    }
}

#[test]
fn verify_finds_damage_that_no_read_has_seen() {
    let p = project().file("a", "aaaa").file("b", "bbbb").build();
    p.keel(&["store", "add", "a", "b"]).run().success();
    flip_byte(&object_path(&p, b"bbbb"), 25);
    let v = p.keel(&["store", "verify"]).run().code_is(3);
    assert!(
        v.stdout()
            .contains(&format!("damaged blob {}", b3(b"bbbb"))),
        "{}",
        v.stdout()
    );
    assert!(v.stdout().contains("1 damaged"));
    p.keel(&["store", "cat", &b3(b"aaaa")]).run().success();
    p.keel(&["store", "cat", &b3(b"bbbb")])
        .run()
        .code_is(1)
        .stderr_has("not in the store");
}

#[test]
fn kill_9_during_a_thousand_puts_loses_nothing_that_was_acknowledged() {
    let mut files = project();
    for i in 0..1000 {
        files = files.file(
            &format!("in/f{i:04}"),
            noise(i, 200 + (i as usize * 37) % 5000),
        );
    }
    let p = files.build();
    let args: Vec<String> = (0..1000).map(|i| format!("in/f{i:04}")).collect();
    let mut acknowledged = std::collections::HashMap::new();
    for round in 0..20u64 {
        let mut child = p
            .keel(&["store", "add"])
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Kill at a different moment each round: from right away to well into the run.
        std::thread::sleep(Duration::from_millis(5 + round * 37 % 400));
        let _ = child.kill();
        let _ = child.wait();
        for line in reader.join().unwrap() {
            if let Some((digest, path)) = line.split_once("  ") {
                acknowledged.insert(digest.to_owned(), path.to_owned());
            }
        }
    }
    assert!(!acknowledged.is_empty(), "no put finished before any kill");
    p.keel(&["store", "verify"]).run().success();
    for (digest, path) in &acknowledged {
        let cat = p.keel(&["store", "cat", digest]).run().success();
        assert_eq!(
            cat.out.stdout,
            std::fs::read(p.path(path)).unwrap(),
            "{path}"
        );
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_leaves_no_partial_object() {
    // A 6 MiB tmpfs in a private mount namespace (as root, or in a user namespace).
    let p = project()
        .file("big.bin", noise(9, 8 << 20))
        .file("small", "fits")
        .build();
    let mnt = p.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let keel = env!("CARGO_BIN_EXE_keel");
    let script = format!(
        "set -e; mount -t tmpfs -o size=6m tmpfs {m}; \
         {k} --store {m}/s store add small >/dev/null; \
         if {k} --store {m}/s store add big.bin 2>{m}/err; then echo UNEXPECTED-SUCCESS; fi; \
         cat {m}/err; echo ---; find {m}/s/blobs {m}/s/tmp -type f | wc -l; \
         {k} --store {m}/s store verify; {k} --store {m}/s store cat {h}",
        m = mnt.display(),
        k = keel,
        h = b3(b"fits")
    );
    let out = std::process::Command::new("unshare")
        .args(["--map-root-user", "--mount", "sh", "-c", &script])
        .current_dir(p.root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("UNEXPECTED-SUCCESS"), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(text.contains("big.bin"), "the error names the file: {text}");
    let (_, after) = text.split_once("---\n").unwrap();
    let mut lines = after.lines();
    assert_eq!(
        lines.next().unwrap().trim(),
        "1",
        "only the small blob, no partial object or temporary: {text}"
    );
    assert!(after.contains("0 damaged"), "{text}");
    assert!(after.trim_end().ends_with("fits"), "{text}");
}

#[test]
fn a_second_keel_waits_for_the_lock_then_succeeds() {
    let p = project().file("a", "a").build();
    p.keel(&["store", "add", "a"]).run().success();
    // Hold the store's lock the way another keel would, for a moment.
    let lock = p.store().join("lock");
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", "echo locked; sleep 1.5"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n");
    let start = Instant::now();
    let run = p.keel(&["store", "stats"]).run().success();
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "did not wait"
    );
    run.stderr_has("Blocking waiting for file lock on store");
    holder.wait().unwrap();
}

#[test]
fn two_keels_adding_at_once_corrupt_nothing() {
    let mut b = project();
    for i in 0..300 {
        b = b
            .file(&format!("x/{i}"), noise(i, 1000 + i as usize))
            .file(&format!("y/{i}"), noise(i + 7, 900));
    }
    let p = b.build();
    let a = p
        .keel(&["store", "add", "x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = p
        .keel(&["store", "add", "y"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    p.keel(&["store", "verify"]).run().success();
    for i in 0..300u64 {
        for (dir, content) in [("x", noise(i, 1000 + i as usize)), ("y", noise(i + 7, 900))] {
            let cat = p.keel(&["store", "cat", &b3(&content)]).run().success();
            assert_eq!(cat.out.stdout, content, "{dir}/{i}");
        }
    }
}

/// Runs keel with ARGS under GNU time and returns (exit code, peak RSS in KiB). Measured by
/// a small parent: the kernel charges a forked child with its parent's resident set until
/// exec, so measuring straight from this (large) test process would overstate keel's.
fn peak_rss_kib(p: &Project, args: &[&str]) -> (i32, u64) {
    let out = std::process::Command::new("/usr/bin/time")
        .args(["-f", "RSS=%M"])
        .arg(env!("CARGO_BIN_EXE_keel"))
        .arg("--store")
        .arg(p.store())
        .args(args)
        .current_dir(p.root())
        .stdout(Stdio::null())
        .output()
        .expect("GNU time is installed (make test installs it)");
    let err = String::from_utf8_lossy(&out.stderr);
    let rss = err
        .lines()
        .find_map(|l| l.strip_prefix("RSS="))
        .and_then(|v| v.trim().parse().ok());
    (
        out.status.code().unwrap_or(-1),
        rss.unwrap_or_else(|| panic!("no RSS in {err}")),
    )
}

#[test]
fn a_gigabyte_streams_through_in_bounded_memory() {
    // 1 GiB: incompressible noise, then a compressible half, so both the raw and the zstd
    // paths stream.
    let p = project().build();
    let path = p.path("big.bin");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let block = noise(3, 1 << 20);
    let text: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| b"compressible text "[i as usize % 18])
        .collect();
    let mut hasher = blake3::Hasher::new();
    for i in 0..1024 {
        let chunk = if i < 512 { &block } else { &text };
        f.write_all(chunk).unwrap();
        hasher.update(chunk);
    }
    f.flush().unwrap();
    drop(f);
    let digest = hasher.finalize().to_hex().to_string();

    let (code, rss) = peak_rss_kib(&p, &["store", "add", "big.bin"]);
    assert_eq!(code, 0);
    assert!(rss < 64 * 1024, "peak RSS of `store add` was {rss} KiB");
    let (code, rss) = peak_rss_kib(&p, &["store", "cat", &digest]);
    assert_eq!(code, 0);
    assert!(rss < 64 * 1024, "peak RSS of `store cat` was {rss} KiB");
    let (code, rss) = peak_rss_kib(&p, &["store", "hash", "big.bin"]);
    assert_eq!(code, 0);
    assert!(rss < 64 * 1024, "peak RSS of `store hash` was {rss} KiB");

    // And the bytes come back whole.
    let mut cat = p
        .keel(&["store", "cat", &digest])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut out = cat.stdout.take().unwrap();
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    assert!(cat.wait().unwrap().success());
    assert_eq!(h.finalize().to_hex().to_string(), digest);
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let content = noise(5, 4 << 20);
    let p = project().file("f", &content).build();
    p.keel(&["store", "add", "f"]).run().success();
    let mut child = p
        .keel(&["store", "cat", &b3(&content)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 10];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_store_is_found_by_flag_env_tree_config_and_xdg() {
    let p = project()
        .file("tree/keel.toml", "[store]\ndir = \"cache\"\n")
        .file("tree/f", "x")
        .build();
    let where_ = |cmd: &mut std::process::Command| -> String {
        let out = cmd
            .args(["--json", "store", "stats"])
            .run()
            .success()
            .stdout();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["root"].as_str().unwrap().to_owned()
    };
    let canon = |rel: &str| {
        std::fs::create_dir_all(p.path(rel)).unwrap();
        std::fs::canonicalize(p.path(rel))
            .unwrap()
            .display()
            .to_string()
    };
    // keel.toml, found from a subdirectory.
    std::fs::create_dir_all(p.path("tree/deep/er")).unwrap();
    assert_eq!(
        where_(keel_cmd().current_dir(p.path("tree/deep/er"))),
        canon("tree/cache")
    );
    // KEEL_STORE beats keel.toml; --store beats both.
    assert_eq!(
        where_(
            keel_cmd()
                .current_dir(p.path("tree"))
                .env("KEEL_STORE", p.path("env"))
        ),
        canon("env")
    );
    assert_eq!(
        where_(
            keel_cmd()
                .current_dir(p.path("tree"))
                .env("KEEL_STORE", p.path("env"))
                .arg("--store")
                .arg(p.path("flag"))
        ),
        canon("flag")
    );
    // Outside any tree: $XDG_CACHE_HOME/keel.
    assert_eq!(
        where_(
            keel_cmd()
                .current_dir(p.root())
                .env("XDG_CACHE_HOME", p.path("xdg"))
        ),
        canon("xdg/keel")
    );
    // A typo in keel.toml is named.
    std::fs::write(p.path("tree/keel.toml"), "[store]\ndri = \"x\"\n").unwrap();
    keel_cmd()
        .current_dir(p.path("tree"))
        .args(["store", "stats"])
        .run()
        .code_is(1)
        .stderr_has("dri");
}

#[test]
fn gc_shrinks_to_the_requested_size_least_recently_used_first() {
    let mut b = project();
    for i in 0..20 {
        b = b.file(&format!("f{i:02}"), noise(100 + i, 100_000));
    }
    let p = b.build();
    for i in 0..20 {
        p.keel(&["store", "add", &format!("f{i:02}")])
            .run()
            .success();
    }
    // Use the first five again, so they are the most recently used.
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..5 {
        p.keel(&["store", "cat", &b3(&noise(100 + i, 100_000))])
            .run()
            .success();
    }
    p.keel(&["store", "gc", "--max-size", "600K"])
        .run()
        .success();
    let present = |i: u64| {
        p.keel(&["store", "cat", &b3(&noise(100 + i, 100_000))])
            .run()
            .code()
            == 0
    };
    for i in 0..5 {
        assert!(present(i), "recently used f{i:02} was removed");
    }
    let kept = (5..20).filter(|&i| present(i)).count();
    assert!(
        kept <= 1,
        "{kept} old blobs kept; the store should be at most 600K"
    );
    p.keel(&["store", "verify"]).run().success();
}
