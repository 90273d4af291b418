//! What a result may be trusted for: a stand-in's or an unsandboxed build's results never
//! satisfy a real sandboxed build, a tree cannot make a build upload, and what never
//! belongs in a remote cache never reaches it.

use std::path::PathBuf;

use crate::build::{build_json, executed};
use crate::support::*;

// The nginx server keel-remote's own tests run against.
use crate::remote::servers;

use crate::build::GOOD_SPEC as FINE_SPEC;

/// A tree of one spec, `fine`, with `extra` appended to its keel.toml.
fn one_spec_tree(extra: &str) -> Project {
    project()
        .file(
            "tree/keel.toml",
            format!("[specs]\ndirs = [\"SPECS\"]\n{extra}"),
        )
        .file("tree/SPECS/fine/fine.spec", FINE_SPEC)
        .build()
}

/// A writer's secret key file made by `keel cache keygen`.
fn secret_key(p: &Project) -> PathBuf {
    let secret = p.path("ci.key");
    p.keel(&["cache", "keygen", secret.to_str().unwrap()])
        .run()
        .success();
    secret
}

#[test]
fn a_test_executor_build_never_poisons_a_real_build() {
    let p = one_spec_tree("");
    p.keel(&["-C", "tree", "build", "--executor", "test"])
        .run()
        .success();
    // The stand-in's records are not the real executor's: everything runs, for real.
    let (run, status) = build_json(&p, &[]);
    run.success();
    assert_eq!(status["srpm:fine"], "ran", "{status:?}");
    assert_eq!(status["rpm:fine"], "ran", "{status:?}");
    assert!(p.path("tree/out/RPMS/noarch/fine-1-1.noarch.rpm").is_file());
    assert!(p.path("tree/out/SRPMS/fine-1-1.src.rpm").is_file());
}

#[test]
fn unsandboxed_results_are_not_sandboxed_ones() {
    let p = one_spec_tree("");
    let (run, status) = build_json(&p, &["--unsandboxed"]);
    run.success();
    assert_eq!(status["rpm:fine"], "ran", "{status:?}");
    // A build that saw the whole machine does not pass for one that saw its sandbox: it
    // runs again (and may come out the same, which cuts off what depends on it).
    let (run, status) = build_json(&p, &[]);
    run.success();
    let ran = executed(&status);
    assert!(
        ran.contains(&"srpm:fine") && ran.contains(&"rpm:fine"),
        "{status:?}"
    );
    // And each is reused by a build of its own kind.
    std::fs::write(p.path("tree/SPECS/fine/notes.txt"), "a file no key reads").unwrap();
    let (run, status) = build_json(&p, &["--unsandboxed"]);
    run.success();
    assert_eq!(status["rpm:fine"], "cached", "{status:?}");
}

#[test]
fn test_executor_results_are_never_uploaded() {
    let nginx = servers::Nginx::start();
    let p = one_spec_tree("");
    let secret = secret_key(&p);
    p.keel(&[
        "-C",
        "tree",
        "build",
        "--executor",
        "test",
        "--remote-cache",
        &nginx.url(),
        "--remote-read-write",
        "--remote-signing-key",
        secret.to_str().unwrap(),
    ])
    .run()
    .code_is(1)
    .stderr_has("--executor test makes stand-in results");
    let puts: Vec<String> = nginx
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PUT "))
        .collect();
    assert!(puts.is_empty(), "uploaded: {puts:?}");
}

#[test]
fn a_tree_cannot_make_a_build_upload() {
    let nginx = servers::Nginx::start();
    // A pull request's keel.toml asks for writing; CI has the signing key in its
    // environment, as it does for its trusted builds.
    let p = one_spec_tree(&format!(
        "\n[remote]\ncaches = [\"{}\"]\nmode = \"read-write\"\n",
        nginx.url()
    ));
    let secret = secret_key(&p);
    let run = p
        .keel(&["-C", "tree", "build"])
        .env("KEEL_REMOTE_SIGNING_KEY", &secret)
        .run()
        .success();
    assert!(
        run.stderr()
            .contains("remote.mode = \"read-write\" is ignored")
            && run.stderr().contains("--remote-read-write"),
        "{}",
        run.stderr()
    );
    assert!(p.path("tree/out/RPMS/noarch/fine-1-1.noarch.rpm").is_file());
    let puts: Vec<String> = nginx
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PUT "))
        .collect();
    assert!(puts.is_empty(), "a tree made the build upload: {puts:?}");
    // The command line still can (after an edit, so that something runs).
    std::fs::write(
        p.path("tree/SPECS/fine/fine.spec"),
        FINE_SPEC.replace("echo ok", "echo fine"),
    )
    .unwrap();
    p.keel(&[
        "-C",
        "tree",
        "build",
        "--remote-read-write",
        "--remote-signing-key",
        secret.to_str().unwrap(),
    ])
    .run()
    .success();
    assert!(
        nginx.requests().iter().any(|r| r.starts_with("PUT /ac/")),
        "{:?}",
        nginx.requests()
    );
}

const FETCHED_SPEC: &str = "Name: fetched
Version: 1
Release: 1
Summary: Ships a fetched source
License: MIT
BuildArch: noarch
Source0: data.txt

%description
Fetched.

%install
install -D -m 0644 %{SOURCE0} %{buildroot}/usr/share/fetched/data.txt

%files
/usr/share/fetched/data.txt

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- Fetched.
";

#[test]
fn a_fetched_source_from_a_cache_must_match_its_signature() {
    let p = project()
        .file("mirror/data.txt", "the real source\n")
        .build();
    let sha = keel_sources::sha256_file(&p.path("mirror/data.txt")).unwrap();
    let mirror = format!("file://{}", p.path("mirror").display());
    std::fs::create_dir_all(p.path("tree/SPECS/fetched")).unwrap();
    std::fs::write(
        p.path("tree/keel.toml"),
        format!("[specs]\ndirs = [\"SPECS\"]\n\n[sources]\nmirrors = [\"{mirror}\"]\n"),
    )
    .unwrap();
    std::fs::write(p.path("tree/SPECS/fetched/fetched.spec"), FETCHED_SPEC).unwrap();
    std::fs::write(
        p.path("tree/SPECS/fetched/fetched.signatures.json"),
        format!("{{\"Signatures\": {{\"data.txt\": \"{sha}\"}}}}\n"),
    )
    .unwrap();
    p.keel(&["-C", "tree", "build"]).run().success();
    // A cache answers the fetch with other bytes (a remote hit is recorded in the
    // store exactly like this: its record, and its blobs verified against their digests).
    {
        let store = keel_store::Store::open(&p.store()).unwrap();
        let key = store
            .target_get("source:fetched/data.txt")
            .unwrap()
            .expect("the fetch was recorded");
        let mut record = store.ac_get(&key).unwrap().unwrap();
        let evil = store
            .put_bytes(b"not the source the tree signed\n")
            .unwrap();
        record.outputs[0].object = keel_store::ObjectRef::Blob(evil);
        store.ac_put(&record).unwrap();
    }
    // Any edit, so that the build looks again.
    std::fs::write(
        p.path("tree/SPECS/fetched/fetched.spec"),
        FETCHED_SPEC.replace("- Fetched.", "- Fetched again."),
    )
    .unwrap();
    p.keel(&["-C", "tree", "build"])
        .run()
        .code_is(1)
        .stderr_has("source data.txt (from source:fetched/data.txt) has SHA-256")
        .stderr_has(&sha);
}

/// An HTTP server that answers every request with a large body it sends one byte every
/// 200 ms, forever: never silent long enough for a per-read timeout.
struct Trickler {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Trickler {
    fn start() -> Trickler {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let stopping = stopping.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
                    while !stopping.load(Ordering::Relaxed) && conn.write_all(b"x").is_ok() {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                });
            }
        });
        Trickler { port, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn a_remote_that_trickles_bytes_forever_cannot_hold_a_build() {
    let trickler = Trickler::start();
    let p = one_spec_tree(&format!(
        "\n[remote]\ncaches = [\"{}\"]\nconnect_timeout = 1\ntimeout = 2\ntransfer_timeout = 3\n",
        trickler.url()
    ));
    let started = std::time::Instant::now();
    let (run, status) = build_json(&p, &[]);
    run.success();
    let took = started.elapsed();
    // Built here, and bounded by the transfer deadline (a few lookups, each retried
    // twice before the breaker opens), not by the server's patience.
    assert_eq!(status["rpm:fine"], "ran", "{status:?}");
    assert!(
        took < std::time::Duration::from_secs(90),
        "the build took {took:?}"
    );
}

/// "toolchain changed" says which part of the host build root changed, from the
/// descriptions the store keeps beside its fingerprint cache. The host itself is never
/// touched: the earlier build is made to have run on a host whose `/etc` differed, by
/// rewriting the store's fingerprint cache and keeping a description for it.
#[test]
fn explain_names_the_part_of_the_host_toolchain_that_changed() {
    let p = one_spec_tree("");
    let (run, _) = build_json(&p, &[]);
    run.success();
    let store = p.store();
    let cache: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("toolchain-host.json")).unwrap()).unwrap();
    let now = cache["digest"].as_str().unwrap().to_owned();
    let described = std::fs::read_to_string(store.join(format!("toolchain-host/{now}.txt")))
        .expect("the build kept the host's description");
    // The same host with another /etc, fingerprinted like keel does it.
    let mut earlier = String::new();
    for line in described.lines() {
        if line.starts_with("part /etc ") {
            earlier.push_str(&format!("part /etc {}\n", "0".repeat(64)));
        } else {
            earlier.push_str(line);
            earlier.push('\n');
        }
    }
    let earlier_digest = keel_store::BlobDigest::of_bytes(earlier.as_bytes());
    std::fs::write(
        store.join(format!("toolchain-host/{}.txt", earlier_digest.to_hex())),
        &earlier,
    )
    .unwrap();
    let mut forged = cache.clone();
    forged["digest"] = earlier_digest.to_hex().into();
    forged["size"] = earlier_digest.size().into();
    std::fs::write(
        store.join("toolchain-host.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    // Built on "the earlier host"…
    std::fs::write(
        p.path("tree/SPECS/fine/fine.spec"),
        format!("{FINE_SPEC}\n# an edit\n"),
    )
    .unwrap();
    let (run, status) = build_json(&p, &[]);
    run.success();
    assert_eq!(status.get("srpm:fine").map(String::as_str), Some("ran"));
    // …then on this one again: the cache is recomputed from the real host.
    std::fs::remove_file(store.join("toolchain-host.json")).unwrap();
    let out = p
        .keel(&["-C", "tree", "explain", "fine"])
        .run()
        .success()
        .stdout();
    assert!(
        out.contains("toolchain changed (host ") && out.contains(": /etc changed)"),
        "{out}"
    );
    let plan = p
        .keel(&["-C", "tree", "build", "--dry-run"])
        .run()
        .success()
        .stdout();
    assert!(plan.contains(": /etc changed)"), "{plan}");
}
