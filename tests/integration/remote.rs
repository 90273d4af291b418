//! `keel build` with a shared remote cache on real servers started by the tests: nginx
//! with WebDAV (Bazel's HTTP cache protocol) and BuildGrid (the Remote Execution API).
//! Machine A builds with a read-write remote, machine B — a fresh store and its own copy
//! of the tree — with the same remote read-only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::build::{build_json, copy_tree, example, example_copy, executed};
use crate::support::*;

// The servers keel-remote's own tests run against (nginx, BuildGrid, a scripted server for
// faults), shared rather than written twice.
#[allow(dead_code, reason = "keel-remote's tests use more of it than these do")]
#[path = "../../remote/tests/remote/support.rs"]
pub(crate) mod servers;

/// A writer's key pair made by `keel cache keygen`: (secret key file, trusted keys file).
fn keys(p: &Project) -> (PathBuf, PathBuf) {
    let secret = p.path("ci.key");
    let run = p
        .keel(&["cache", "keygen", secret.to_str().unwrap()])
        .run()
        .success();
    let public = p.path("trusted.pub");
    std::fs::write(&public, run.stdout()).unwrap();
    (secret, public)
}

/// Adds `section` to the tree's keel.toml as its `[remote]`.
fn remote_section(p: &Project, section: &str) {
    let toml = p.path("tree/keel.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("\n[remote]\n");
    text.push_str(section);
    std::fs::write(toml, text).unwrap();
}

/// Tight timeouts, so that fault tests stay short.
fn with_timeouts(p: &Project) {
    remote_section(p, "connect_timeout = 1\ntimeout = 2\n");
}

/// Every file under `out/` by path relative to it, with its bytes' digest.
fn outputs(tree: &Path) -> BTreeMap<String, String> {
    crate::build::files(&tree.join("out"))
}

/// A read-write build with `url`, signing with `secret`.
fn build_as_writer(p: &Project, url: &str, secret: &Path) -> (Run, BTreeMap<String, String>) {
    let secret = secret.to_str().unwrap();
    build_json(
        p,
        &[
            "--remote-cache",
            url,
            "--remote-read-write",
            "--remote-signing-key",
            secret,
        ],
    )
}

/// A read-only build with `url`, trusting the keys in `public`.
fn build_as_reader(p: &Project, url: &str, public: &Path) -> (Run, BTreeMap<String, String>) {
    let public = public.to_str().unwrap();
    build_json(p, &["--remote-cache", url, "--remote-trusted-keys", public])
}

/// `keel cache stats --json`: the last build's counters of the only remote.
fn last_stats(p: &Project) -> serde_json::Value {
    let run = p.keel(&["--json", "cache", "stats"]).run().success();
    let v: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    let tiers = v["tiers"].as_object().unwrap();
    assert_eq!(tiers.len(), 1, "{v}");
    tiers.values().next().unwrap()["last"].clone()
}

/// The bytes B published under `out/`.
fn published_bytes(tree: &Path) -> u64 {
    outputs(tree)
        .keys()
        .map(|rel| std::fs::metadata(tree.join("out").join(rel)).unwrap().len())
        .sum()
}

/// Machine A: a tree built from nothing with a read-write remote, and its key pair.
struct MachineA {
    p: Project,
    public: PathBuf,
}

/// A builds the example distribution in `p` from nothing with `url` read-write: it runs
/// everything and uploads.
fn machine_a(p: Project, url: &str) -> MachineA {
    let (secret, public) = keys(&p);
    let (run, status_a) = build_as_writer(&p, url, &secret);
    run.success();
    assert!(!executed(&status_a).is_empty());
    let up = last_stats(&p);
    assert!(up["bytes_up"].as_u64().unwrap() > 0, "{up}");
    MachineA { p, public }
}

/// A's build with nginx, done once for the tests that need a filled nginx cache: A's
/// project, with what nginx held afterwards in its `nginx/` directory. Each test serves
/// a copy of that with an nginx of its own ([`filled_nginx`]).
fn nginx_a() -> &'static MachineA {
    static A: std::sync::OnceLock<MachineA> = std::sync::OnceLock::new();
    A.get_or_init(|| {
        let nginx = servers::Nginx::start();
        let p = project().build_shared();
        copy_tree(&example(), &p.path("tree"));
        let a = machine_a(p, &nginx.url());
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(nginx.file(""))
            .arg(a.p.path("nginx"))
            .status()
            .unwrap();
        assert!(status.success());
        a
    })
}

/// An nginx of this test's own, holding what A uploaded.
fn filled_nginx() -> (servers::Nginx, &'static MachineA) {
    let a = nginx_a();
    (servers::Nginx::start_with(&a.p.path("nginx")), a)
}

/// B builds with `url` read-only, after A filled it: B runs nothing, its outputs are
/// A's byte for byte, and it downloads about what it needed.
fn b_after_a(a: &MachineA, url: &str) {
    let b = example_copy();
    let (run, status_b) = build_as_reader(&b, url, &a.public);
    let run = run.success();
    assert!(
        executed(&status_b).is_empty(),
        "B ran {:?}\n{}",
        executed(&status_b),
        run.stderr()
    );
    assert!(status_b.values().any(|s| s == "remote"), "{status_b:?}");
    assert_eq!(outputs(&a.p.path("tree")), outputs(&b.path("tree")));
    let down = last_stats(&b);
    assert_eq!(
        down["bytes_up"], 0,
        "a read-only build uploads nothing: {down}"
    );
    assert_eq!(down["rejected_entries"], 0, "{down}");
    // What B stored from the remote is what it published (plus each package's summary
    // and capabilities, a few percent): no source, no log, nothing it did not need.
    let published = published_bytes(&b.path("tree"));
    let needed = down["output_bytes"].as_u64().unwrap();
    assert!(
        needed >= published && needed as f64 <= published as f64 * 1.1,
        "stored {needed} bytes for {published} published"
    );
    // And the entries (records, signatures) add at most 10% to that.
    let got = down["bytes_down"].as_u64().unwrap();
    assert!(
        got as f64 <= needed as f64 * 1.1,
        "{url}: B downloaded {got} bytes for {needed} bytes of outputs"
    );
    // B's second build answers from its own store.
    let (run, again) = build_as_reader(&b, url, &a.public);
    run.success();
    assert!(executed(&again).is_empty());
}

#[test]
fn machine_b_builds_nothing_with_machine_a_s_nginx_cache() {
    let (nginx, a) = filled_nginx();
    b_after_a(a, &nginx.url());
}

#[test]
fn machine_b_builds_nothing_with_machine_a_s_buildgrid_cache() {
    let bgd = servers::buildgrid();
    let a = machine_a(example_copy(), &bgd.url());
    b_after_a(&a, &bgd.url());
}

/// Whether B's store holds a blob with these bytes (`keel store cat` by digest).
fn stored(p: &Project, bytes: &[u8]) -> bool {
    p.keel(&["store", "cat", &b3(bytes)]).run().code() == 0
}

/// Fetch only what is needed: B asks for one image, a hit. It downloads the image and
/// nothing of what it was made from.
#[test]
fn machine_b_downloads_only_what_it_asked_for() {
    let (nginx, a) = filled_nginx();
    let url = nginx.url();
    let public = &a.public;
    let rpm = |name: &str| std::fs::read(a.p.path(&format!("tree/out/RPMS/{name}"))).unwrap();
    let docs = rpm("noarch/tally-doc-1.0-1.kl1.noarch.rpm");

    let b = example_copy();
    let args = [
        "--remote-cache",
        &url,
        "--remote-trusted-keys",
        public.to_str().unwrap(),
    ];
    let (run, status) = build_json(&b, &[&args[..], &["image:docs-container"]].concat());
    let run = run.success();
    assert!(executed(&status).is_empty(), "{status:?}\n{}", run.stderr());
    assert_eq!(status["image:docs-container"], "remote", "{status:?}");
    let published = outputs(&b.path("tree"));
    assert!(
        !published.is_empty()
            && published
                .keys()
                .all(|f| f.starts_with("images/docs-container/")),
        "{published:?}"
    );
    assert!(!stored(&b, &docs), "the image's package was downloaded");
    let down = last_stats(&b);
    let needed = down["output_bytes"].as_u64().unwrap();
    let image = published_bytes(&b.path("tree"));
    assert!(
        needed as f64 <= image as f64 * 1.1,
        "stored {needed} bytes for an image of {image}"
    );

    // Its second build downloads nothing more: the image is in its own store (the
    // packages' entries are asked for again, their bytes still not needed).
    let (run, again) = build_json(&b, &[&args[..], &["image:docs-container"]].concat());
    run.success();
    assert!(executed(&again).is_empty(), "{again:?}");
    assert_eq!(again["image:docs-container"], "cached", "{again:?}");
    assert_eq!(last_stats(&b)["output_bytes"], 0);
    assert!(!stored(&b, &docs));
}

/// The key (hex) of each action of the project's last build.
fn action_keys(p: &Project) -> BTreeMap<String, String> {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.store().join("builds/last.json")).unwrap())
            .unwrap();
    report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !a.is_null())
        .map(|a| {
            let key = a["key"].as_str().unwrap();
            let hex = key.split('/').next().unwrap();
            (a["name"].as_str().unwrap().to_owned(), hex.to_owned())
        })
        .collect()
}

/// The files under nginx's `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            found.push(p);
        }
    }
    found
}

#[test]
fn a_poisoned_cache_is_detected_reported_and_built_around() {
    let (nginx, a) = filled_nginx();
    let url = nginx.url();
    let public = &a.public;
    let a = &a.p;

    // A CAS blob replaced with other bytes: hello's RPM.
    let hello = std::fs::read(a.path("tree/out/RPMS/x86_64/hello-1.0-1.kl1.x86_64.rpm")).unwrap();
    let cas = files_containing(&nginx.file("cas"), &hello)
        .into_iter()
        .filter(|p| std::fs::read(p).unwrap() == hello)
        .collect::<Vec<_>>();
    assert_eq!(cas.len(), 1);
    let mut evil = hello.clone();
    let mid = evil.len() / 2;
    evil[mid] ^= 0xff;
    std::fs::write(&cas[0], &evil).unwrap();
    // Action-cache entries rewritten: greet-fortune's (a byte changed under the signature)
    // and greet-banner's (replaced by bytes nobody signed). The entries are at
    // ac/<action key>; A's last build report says each action's key.
    let keys = action_keys(a);
    let entry = |name: &str| nginx.file(&format!("ac/{}", keys[name]));
    let fortune = ["srpm:greet-fortune", "rpm:greet-fortune"];
    for name in fortune {
        let mut bytes = std::fs::read(entry(name)).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(entry(name), bytes).unwrap();
    }
    let banner = ["srpm:greet-banner", "rpm:greet-banner"];
    for name in banner {
        std::fs::write(entry(name), b"an entry nobody signed").unwrap();
    }

    let b = example_copy();
    let (run, status) = build_as_reader(&b, &url, public);
    let run = run.success();
    let ran = executed(&status);
    // Rebuilt here: the actions whose entries were refused, and hello, whose RPM came back
    // wrong. Everything else came from the remote.
    for name in ["rpm:hello", "rpm:greet-fortune", "rpm:greet-banner"] {
        assert!(
            ran.contains(&name),
            "{name} not rebuilt: {ran:?}\n{}",
            run.stderr()
        );
    }
    assert!(!ran.contains(&"rpm:libgreet"), "{ran:?}");
    assert!(
        run.stderr().contains("refused action-cache entry"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("/cas/"),
        "the bad blob's URL is named: {}",
        run.stderr()
    );
    let stats = last_stats(&b);
    assert!(stats["verify_failures"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        stats["rejected_entries"].as_u64().unwrap() >= fortune.len() as u64 + banner.len() as u64,
        "{stats}"
    );
    // And the outputs are still right: A's, byte for byte (the builds are reproducible).
    assert_eq!(outputs(&a.path("tree")), outputs(&b.path("tree")));
}

/// A noarch package shipping one file, needing `needs` to build if given.
fn chain_spec(name: &str, needs: Option<&str>) -> String {
    let br = needs
        .map(|n| format!("BuildRequires: {n}\n"))
        .unwrap_or_default();
    format!(
        "Name: {name}\nVersion: 1\nRelease: 1\nSummary: One file\nLicense: MIT\nBuildArch: noarch\n{br}
%description
One file.

%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo {name} > %{{buildroot}}/usr/share/{name}/msg

%files
/usr/share/{name}/msg

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- First.
"
    )
}

/// A tree of three packages in a chain (c needs b needs a), built with real rpmbuild:
/// enough actions for a remote to fail in the middle of, cheap enough for every fault.
fn chain_tree() -> Project {
    project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("tree/SPECS/a/a.spec", chain_spec("a", None))
        .file("tree/SPECS/b/b.spec", chain_spec("b", Some("a")))
        .file("tree/SPECS/c/c.spec", chain_spec("c", Some("b")))
        .build()
}

/// A build with `url` as its only remote completes, all built locally, within the
/// configured timeouts (1 s to connect, 2 s per request).
fn builds_locally_despite(url: &str, read_write: bool) -> Run {
    let p = chain_tree();
    with_timeouts(&p);
    let (secret, _) = keys(&p);
    let mut args = vec!["--remote-cache", url];
    if read_write {
        args.extend([
            "--remote-read-write",
            "--remote-signing-key",
            secret.to_str().unwrap(),
        ]);
    }
    let started = Instant::now();
    let (run, status) = build_json(&p, &args);
    let run = run.success();
    assert!(
        status.values().all(|s| s == "ran" || s == "cut_off"),
        "{status:?}"
    );
    // Retries and a breaker, not a timeout per action: a bound below 7 actions x 2
    // requests x 3 tries x 2 s (84 s), and far above a normal build of the chain.
    assert!(started.elapsed() < Duration::from_secs(60));
    run
}

#[test]
fn a_dead_remote_never_fails_a_build() {
    let run = builds_locally_despite(&format!("http://127.0.0.1:{}", servers::dead_port()), true);
    assert!(
        run.stderr().contains("building locally"),
        "{}",
        run.stderr()
    );
}

#[test]
fn a_remote_answering_500_never_fails_a_build() {
    let server =
        servers::Scripted::start(vec![servers::response("500 Internal Server Error", b"")]);
    builds_locally_despite(&server.url(), true);
    assert!(!server.seen.lock().unwrap().is_empty());
}

#[test]
fn a_hanging_remote_never_hangs_a_build() {
    // Configured in keel.toml this time, as a team would.
    let server = servers::Scripted::start(vec![None]);
    let p = chain_tree();
    remote_section(
        &p,
        &format!(
            "caches = [\"{}\"]\nconnect_timeout = 1\ntimeout = 2\n",
            server.url()
        ),
    );
    let started = Instant::now();
    let (run, status) = build_json(&p, &[]);
    run.success();
    assert!(
        status.values().all(|s| s == "ran" || s == "cut_off"),
        "{status:?}"
    );
    assert!(
        !server.seen.lock().unwrap().is_empty(),
        "keel.toml's cache was asked"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn remote_cache_mistakes_are_named() {
    let p = example_copy();
    remote_section(
        &p,
        "caches = [\"http://127.0.0.1:9\"]\nmode = \"sometimes\"\n",
    );
    p.keel(&["-C", "tree", "build", "--executor", "test"])
        .run()
        .code_is(1)
        .stderr_has("keel.toml: remote.mode must be \"read-only\" or \"read-write\"");
    let p = example_copy();
    let build = |extra: &[&str]| {
        let mut args = vec!["-C", "tree", "build", "--executor", "test"];
        args.extend_from_slice(extra);
        p.keel(&args).run().code_is(1)
    };
    build(&[
        "--remote-cache",
        "http://127.0.0.1:9",
        "--remote-read-write",
    ])
    .stderr_has("keel cache keygen");
    build(&["--remote-cache", "ftp://example.org/cache"])
        .stderr_has("expected http://, https://, grpc:// or grpcs://");
}

#[test]
fn a_remote_killed_mid_build_never_fails_it() {
    let nginx = servers::Nginx::start();
    let p = chain_tree();
    with_timeouts(&p);
    let (secret, _) = keys(&p);
    let mut child = p
        .keel(&[
            "-C",
            "tree",
            "--json",
            "build",
            "--remote-cache",
            &nginx.url(),
            "--remote-read-write",
            "--remote-signing-key",
            secret.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server once the build has uploaded something.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !nginx.requests().iter().any(|r| r.starts_with("PUT /ac/")) {
        assert!(Instant::now() < deadline, "no upload seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the build ended before the remote was killed"
    );
    drop(nginx);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(p.path("tree/out/RPMS/noarch/c-1-1.noarch.rpm").is_file());
}
