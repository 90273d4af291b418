//! Fetching against a real HTTP server started by each test.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::server::{Reply, Server};
use keel_sources::{Error, Fetched, Fetcher, Mode, Origin, Signatures, sha256_file};
use keel_store::{BlobDigest, Store};

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: Option<Store>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        fs::create_dir_all(root.join("spec")).unwrap();
        let store = Store::open(&root.join("store")).unwrap();
        Env {
            _dir: dir,
            root,
            store: Some(store),
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn reopen_store(&mut self) {
        self.store = None;
        self.store = Some(Store::open(&self.root.join("store")).unwrap());
    }

    fn spec_dir(&self) -> PathBuf {
        self.root.join("spec")
    }

    /// Whether any blob with these bytes is stored.
    fn stored(&self, bytes: &[u8]) -> bool {
        self.store().contains_blob(&BlobDigest::of_bytes(bytes))
    }

    /// How many files are in the store's blob directory.
    fn blob_count(&self) -> usize {
        walk_files(&self.root.join("store/blobs"))
    }
}

fn walk_files(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                walk_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

fn sha(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f");
    fs::write(&p, bytes).unwrap();
    sha256_file(&p).unwrap()
}

fn tarball(tag: &str) -> Vec<u8> {
    (0..5000u32)
        .flat_map(|i| format!("{tag}{i}\n").into_bytes())
        .collect()
}

/// A fetcher with test-sized timeouts and backoff.
fn fetcher(mirrors: &[String]) -> Fetcher {
    Fetcher::new(mirrors.to_vec())
        .unwrap()
        .with_timeout(Duration::from_millis(400))
        .with_retries(2)
        .with_backoff(Duration::from_millis(10))
}

fn assert_content(env: &Env, f: &Fetched, bytes: &[u8]) {
    assert_eq!(env.store().read_blob(&f.blob).unwrap(), bytes);
    assert_eq!(f.sha256, sha(bytes));
}

#[test]
fn spec_dir_source_is_stored_without_any_mirror() {
    let env = Env::new();
    let bytes = tarball("local");
    fs::write(env.spec_dir().join("a-1.0.tar.gz"), &bytes).unwrap();
    let f = fetcher(&[])
        .fetch(
            env.store(),
            &env.spec_dir(),
            "a-1.0.tar.gz",
            Some(&sha(&bytes)),
        )
        .unwrap();
    assert_eq!(f.from, Origin::SpecDir);
    assert_content(&env, &f, &bytes);
    // Again: same answer (this time through the stat cache and the recorded SHA-256).
    let again = fetcher(&[])
        .fetch(
            env.store(),
            &env.spec_dir(),
            "a-1.0.tar.gz",
            Some(&sha(&bytes)),
        )
        .unwrap();
    assert_eq!(again, f);
}

#[test]
fn spec_dir_source_with_wrong_digest_is_refused_and_not_stored() {
    let env = Env::new();
    let bytes = tarball("local");
    let path = env.spec_dir().join("a-1.0.tar.gz");
    fs::write(&path, &bytes).unwrap();
    let wrong = sha(b"something else");
    let err = fetcher(&[])
        .fetch(env.store(), &env.spec_dir(), "a-1.0.tar.gz", Some(&wrong))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Mismatch { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(&wrong) && msg.contains(&sha(&bytes)), "{msg}");
    assert!(!env.stored(&bytes));
}

#[test]
fn mirror_download_is_stored_and_never_fetched_again() {
    let mut env = Env::new();
    let server = Server::start();
    let bytes = tarball("mirror");
    server.script("/m/b-2.0.tar.gz", vec![Reply::Ok(bytes.clone())]);
    let mirror = server.url("m");
    let expected = sha(&bytes);

    let f = fetcher(std::slice::from_ref(&mirror))
        .fetch(
            env.store(),
            &env.spec_dir(),
            "b-2.0.tar.gz",
            Some(&expected),
        )
        .unwrap();
    assert_eq!(f.from, Origin::Mirror(format!("{mirror}/b-2.0.tar.gz")));
    assert_content(&env, &f, &bytes);
    assert_eq!(server.hits("/m/b-2.0.tar.gz"), 1);

    server.stop();
    env.reopen_store();
    let again = fetcher(&[mirror])
        .fetch(
            env.store(),
            &env.spec_dir(),
            "b-2.0.tar.gz",
            Some(&expected),
        )
        .unwrap();
    assert_eq!(again.from, Origin::Store);
    assert_eq!(again.blob, f.blob);
    assert_eq!(again.sha256, expected);
}

#[test]
fn not_found_on_first_mirror_falls_through_to_the_second() {
    let env = Env::new();
    let server = Server::start();
    let bytes = tarball("second");
    server.script("/one/c.tar.gz", vec![Reply::Status(404)]);
    server.script("/two/c.tar.gz", vec![Reply::Ok(bytes.clone())]);
    let f = fetcher(&[server.url("one"), server.url("two")])
        .fetch(env.store(), &env.spec_dir(), "c.tar.gz", Some(&sha(&bytes)))
        .unwrap();
    assert_eq!(f.from, Origin::Mirror(server.url("two") + "/c.tar.gz"));
    assert_content(&env, &f, &bytes);
    // A 404 is an answer, not a transient error: no retry.
    assert_eq!(server.hits("/one/c.tar.gz"), 1);
}

#[test]
fn missing_everywhere_names_every_place_tried() {
    let env = Env::new();
    let server = Server::start();
    server.script("/two/d.tar.gz", vec![Reply::Status(403)]);
    let file_mirror = format!("file://{}", env.root.join("nowhere").display());
    let err = fetcher(&[server.url("one"), server.url("two"), file_mirror.clone()])
        .fetch(env.store(), &env.spec_dir(), "d.tar.gz", Some(&sha(b"x")))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("source d.tar.gz not found; tried: "),
        "{msg}"
    );
    let local = env.spec_dir().join("d.tar.gz");
    for part in [
        format!("{} (no such file)", local.display()),
        format!("{}/d.tar.gz (HTTP 404)", server.url("one")),
        format!("{}/d.tar.gz (HTTP 403)", server.url("two")),
        format!("{file_mirror}/d.tar.gz (no such file)"),
    ] {
        assert!(msg.contains(&part), "`{part}` not in: {msg}");
    }
    match err {
        Error::Missing { tried, .. } => assert_eq!(tried.len(), 4),
        other => panic!("{other}"),
    }
}

#[test]
fn server_error_is_retried_until_it_succeeds() {
    let env = Env::new();
    let server = Server::start();
    let bytes = tarball("retry");
    server.script(
        "/m/e.tar.gz",
        vec![
            Reply::Status(500),
            Reply::Status(503),
            Reply::Ok(bytes.clone()),
        ],
    );
    let f = fetcher(&[server.url("m")])
        .fetch(env.store(), &env.spec_dir(), "e.tar.gz", Some(&sha(&bytes)))
        .unwrap();
    assert_content(&env, &f, &bytes);
    assert_eq!(server.hits("/m/e.tar.gz"), 3);
}

#[test]
fn server_error_without_retries_left_is_reported() {
    let env = Env::new();
    let server = Server::start();
    server.script("/m/e.tar.gz", vec![Reply::Status(502)]);
    let err = fetcher(&[server.url("m")])
        .with_retries(1)
        .fetch(env.store(), &env.spec_dir(), "e.tar.gz", Some(&sha(b"e")))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "{}/e.tar.gz (HTTP 502, after 2 tries)",
            server.url("m")
        )),
        "{msg}"
    );
    assert_eq!(server.hits("/m/e.tar.gz"), 2);
}

#[test]
fn connection_refused_is_retried_then_reported() {
    let env = Env::new();
    let server = Server::start();
    let url = server.url("gone");
    server.stop();
    let err = fetcher(std::slice::from_ref(&url))
        .with_retries(1)
        .fetch(env.store(), &env.spec_dir(), "f.tar.gz", Some(&sha(b"f")))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("{url}/f.tar.gz (")), "{msg}");
    assert!(msg.contains("after 2 tries"), "{msg}");
}

#[test]
fn a_hanging_server_times_out_naming_the_url() {
    let env = Env::new();
    let server = Server::start();
    server.script("/m/g.tar.gz", vec![Reply::Hang(Duration::from_secs(5))]);
    let start = Instant::now();
    let err = fetcher(&[server.url("m")])
        .with_retries(1)
        .fetch(env.store(), &env.spec_dir(), "g.tar.gz", Some(&sha(b"g")))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}/g.tar.gz (timed out after", server.url("m"))),
        "{msg}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.hits("/m/g.tar.gz"), 2);
}

#[test]
fn a_body_that_stalls_midway_times_out_and_stores_nothing() {
    let env = Env::new();
    let server = Server::start();
    let bytes = tarball("stall");
    server.script(
        "/m/h.tar.gz",
        vec![Reply::StallMidBody(bytes.clone(), Duration::from_secs(5))],
    );
    let start = Instant::now();
    let err = fetcher(&[server.url("m")])
        .with_retries(0)
        .fetch(env.store(), &env.spec_dir(), "h.tar.gz", Some(&sha(&bytes)))
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}/h.tar.gz (", server.url("m"))),
        "{msg}"
    );
    assert_eq!(env.blob_count(), 0);
}

#[test]
fn a_truncated_body_is_an_error_and_stores_nothing() {
    let env = Env::new();
    let server = Server::start();
    let bytes = tarball("cut");
    server.script("/m/i.tar.gz", vec![Reply::Truncated(bytes.clone(), 1000)]);
    let err = fetcher(&[server.url("m")])
        .fetch(env.store(), &env.spec_dir(), "i.tar.gz", Some(&sha(&bytes)))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Missing { .. }), "{msg}");
    assert!(
        msg.contains(&format!("{}/i.tar.gz (reading the body", server.url("m"))),
        "{msg}"
    );
    assert_eq!(server.hits("/m/i.tar.gz"), 3, "a cut-off body is retried");
    assert!(!env.stored(&bytes) && !env.stored(&bytes[..1000]));
    assert_eq!(env.blob_count(), 0);
}

#[test]
fn a_truncated_body_then_a_whole_one_succeeds() {
    let env = Env::new();
    let server = Server::start();
    let bytes = tarball("cut");
    server.script(
        "/m/i.tar.gz",
        vec![
            Reply::Truncated(bytes.clone(), 10),
            Reply::Ok(bytes.clone()),
        ],
    );
    let f = fetcher(&[server.url("m")])
        .fetch(env.store(), &env.spec_dir(), "i.tar.gz", Some(&sha(&bytes)))
        .unwrap();
    assert_content(&env, &f, &bytes);
    assert_eq!(env.blob_count(), 1);
}

#[test]
fn wrong_content_names_both_digests_and_stores_nothing() {
    let env = Env::new();
    let server = Server::start();
    let good = tarball("good");
    let evil = tarball("evil");
    server.script("/m/j.tar.gz", vec![Reply::Ok(evil.clone())]);
    let err = fetcher(&[server.url("m")])
        .fetch(env.store(), &env.spec_dir(), "j.tar.gz", Some(&sha(&good)))
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        msg,
        format!(
            "source j.tar.gz from {}/j.tar.gz has SHA-256 {}, expected {}; also tried: {} (no such file)",
            server.url("m"),
            sha(&evil),
            sha(&good),
            env.spec_dir().join("j.tar.gz").display()
        )
    );
    assert!(!env.stored(&evil));
    assert_eq!(env.blob_count(), 0);
}

#[test]
fn wrong_content_on_one_mirror_and_right_on_the_next_succeeds() {
    let env = Env::new();
    let server = Server::start();
    let good = tarball("good");
    server.script("/bad/k.tar.gz", vec![Reply::Ok(tarball("evil"))]);
    server.script("/good/k.tar.gz", vec![Reply::Ok(good.clone())]);
    let f = fetcher(&[server.url("bad"), server.url("good")])
        .fetch(env.store(), &env.spec_dir(), "k.tar.gz", Some(&sha(&good)))
        .unwrap();
    assert_eq!(f.from, Origin::Mirror(server.url("good") + "/k.tar.gz"));
    assert_eq!(env.blob_count(), 1);
}

#[test]
fn skip_mode_takes_whatever_the_mirror_has() {
    let env = Env::new();
    let server = Server::start();
    let bytes = tarball("skip");
    server.script("/m/l.tar.gz", vec![Reply::Ok(bytes.clone())]);
    let f = fetcher(&[server.url("m")])
        .with_mode(Mode::Skip)
        .fetch(
            env.store(),
            &env.spec_dir(),
            "l.tar.gz",
            Some(&sha(b"not it")),
        )
        .unwrap();
    assert_content(&env, &f, &bytes);
    let g = fetcher(&[server.url("m")])
        .with_mode(Mode::Skip)
        .fetch(env.store(), &env.spec_dir(), "l.tar.gz", None)
        .unwrap();
    assert_eq!(g.blob, f.blob);
}

#[test]
fn enforce_mode_requires_a_signature() {
    let env = Env::new();
    fs::write(env.spec_dir().join("m.patch"), b"patch").unwrap();
    let err = fetcher(&[])
        .fetch(env.store(), &env.spec_dir(), "m.patch", None)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.patch has no entry in the signatures file (signature mode is enforce)"
    );
}

#[test]
fn update_mode_rewrites_the_signatures_file() {
    let env = Env::new();
    let server = Server::start();
    let tar = tarball("upd");
    let patch = b"--- a\n+++ b\n".to_vec();
    server.script("/m/n-1.0.tar.gz", vec![Reply::Ok(tar.clone())]);
    fs::write(env.spec_dir().join("fix.patch"), &patch).unwrap();
    let sig_path = env.spec_dir().join("n.signatures.json");
    let mut old = Signatures::new();
    old.set("n-1.0.tar.gz", &sha(b"old tarball"));
    old.set("n-0.9.tar.gz", &sha(b"older tarball"));
    old.save(&sig_path).unwrap();
    let sources = vec!["n-1.0.tar.gz".to_owned(), "fix.patch".to_owned()];

    // Enforce refuses, and leaves the file alone.
    let err = fetcher(&[server.url("m")])
        .fetch_spec(env.store(), &env.spec_dir(), &sig_path, &sources)
        .unwrap_err();
    assert!(matches!(err, Error::Mismatch { .. }), "{err}");
    assert_eq!(Signatures::load(&sig_path).unwrap(), old);

    let done = fetcher(&[server.url("m")])
        .with_mode(Mode::Update)
        .fetch_spec(env.store(), &env.spec_dir(), &sig_path, &sources)
        .unwrap();
    assert!(done.signatures_updated);
    assert_eq!(done.fetched.len(), 2);
    let text = fs::read_to_string(&sig_path).unwrap();
    assert_eq!(
        text,
        format!(
            "{{\n \"Signatures\": {{\n  \"fix.patch\": \"{}\",\n  \"n-1.0.tar.gz\": \"{}\"\n }}\n}}\n",
            sha(&patch),
            sha(&tar)
        )
    );

    // Now enforce passes, and a second update changes nothing.
    fetcher(&[server.url("m")])
        .fetch_spec(env.store(), &env.spec_dir(), &sig_path, &sources)
        .unwrap();
    let again = fetcher(&[server.url("m")])
        .with_mode(Mode::Update)
        .fetch_spec(env.store(), &env.spec_dir(), &sig_path, &sources)
        .unwrap();
    assert!(!again.signatures_updated);
}

#[test]
fn update_mode_creates_a_missing_signatures_file() {
    let env = Env::new();
    fs::write(env.spec_dir().join("o.tar.gz"), b"o").unwrap();
    let sig_path = env.spec_dir().join("o.signatures.json");
    let done = fetcher(&[])
        .with_mode(Mode::Update)
        .fetch_spec(
            env.store(),
            &env.spec_dir(),
            &sig_path,
            &["o.tar.gz".into()],
        )
        .unwrap();
    assert!(done.signatures_updated);
    assert_eq!(
        Signatures::load(&sig_path).unwrap().get("o.tar.gz"),
        Some(sha(b"o").as_str())
    );
}

#[test]
fn unparsable_signatures_file_is_an_error_naming_it() {
    let env = Env::new();
    let sig_path = env.spec_dir().join("p.signatures.json");
    fs::write(
        &sig_path,
        "{\n \"Signatures\": {\n  \"p.tar.gz\": 12\n }\n}\n",
    )
    .unwrap();
    let err = fetcher(&[])
        .fetch_spec(
            env.store(),
            &env.spec_dir(),
            &sig_path,
            &["p.tar.gz".into()],
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("parse {}:3:", sig_path.display())),
        "{msg}"
    );
    assert!(msg.contains("invalid type: integer `12`"), "{msg}");
}

#[test]
fn file_mirror_is_read_like_a_server() {
    let env = Env::new();
    let mirror_dir = env.root.join("mirror");
    fs::create_dir_all(&mirror_dir).unwrap();
    let bytes = tarball("file");
    fs::write(mirror_dir.join("q.tar.gz"), &bytes).unwrap();
    let mirror = format!("file://{}/", mirror_dir.display());
    let f = fetcher(&[mirror])
        .fetch(env.store(), &env.spec_dir(), "q.tar.gz", Some(&sha(&bytes)))
        .unwrap();
    assert_eq!(
        f.from,
        Origin::Mirror(format!("file://{}/q.tar.gz", mirror_dir.display()))
    );
    assert_content(&env, &f, &bytes);
}

#[test]
fn large_downloads_report_progress() {
    let env = Env::new();
    let server = Server::start();
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    server.script("/m/big.tar.xz", vec![Reply::Ok(bytes.clone())]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let f = fetcher(&[server.url("m")])
        .with_progress(Arc::new(move |p| {
            sink.lock()
                .unwrap()
                .push((p.file.to_owned(), p.done, p.total));
        }))
        .fetch(
            env.store(),
            &env.spec_dir(),
            "big.tar.xz",
            Some(&sha(&bytes)),
        )
        .unwrap();
    assert_content(&env, &f, &bytes);
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "{seen:?}");
    assert_eq!(
        seen.last().unwrap(),
        &("big.tar.xz".to_owned(), 3_000_000, Some(3_000_000))
    );
}

#[test]
fn bad_mirrors_and_file_names_are_refused() {
    let err = Fetcher::new(vec!["ftp://example.invalid/src".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "mirror `ftp://example.invalid/src` is not an http://, https:// or file:// URL"
    );
    let env = Env::new();
    for name in ["../escape.tar.gz", "a/b.tar.gz", "", ".."] {
        let err = fetcher(&[])
            .with_mode(Mode::Skip)
            .fetch(env.store(), &env.spec_dir(), name, None)
            .unwrap_err();
        assert!(matches!(err, Error::BadFileName { .. }), "{name}: {err}");
    }
    let err = fetcher(&[])
        .fetch(env.store(), &env.spec_dir(), "r.tar.gz", Some("xyz"))
        .unwrap_err();
    assert!(err.to_string().contains("`xyz` for r.tar.gz"), "{err}");
}
