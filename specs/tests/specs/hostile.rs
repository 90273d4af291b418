//! Specs nobody should trust: each test reads a hostile spec with containment on and
//! checks that it ends quickly, in an error where rpm would hang or run wild, and that
//! nothing escapes the sandbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_specs::macros::Containment;
use keel_specs::{EngineConfig, MacroTable, ReaderConfig, ShellRunner, read_spec};

const HEAD: &str = "Name: hostile\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n";

fn contained(root: &Path) -> ReaderConfig {
    let e = EngineConfig {
        shell: Arc::new(ShellRunner::contained(Duration::from_secs(2), 1 << 20)),
        containment: Some(Arc::new(Containment {
            roots: vec![root.to_path_buf()],
            lua_memory: 64 << 20,
            lua_timeout: Duration::from_secs(2),
            scratch: Default::default(),
        })),
        ..EngineConfig::default()
    };
    ReaderConfig::new(MacroTable::new(), e)
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write spec");
    p
}

fn read_timed(
    p: &Path,
    cfg: &ReaderConfig,
) -> (Result<keel_specs::Spec, keel_specs::SpecError>, Duration) {
    let t = Instant::now();
    let r = read_spec(p, cfg);
    (r, t.elapsed())
}

#[test]
fn sleeping_shell_is_stopped_by_the_timeout() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = write(
        d.path(),
        "s.spec",
        &format!("{HEAD}%description\n%(sleep 1000)\n"),
    );
    let (r, t) = read_timed(&p, &contained(d.path()));
    let e = r.expect_err("must fail");
    assert!(e.message.contains("timed out"), "{e}");
    assert!(t < Duration::from_secs(10), "took {t:?}");
}

#[test]
fn background_children_do_not_outlive_the_expansion() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = write(
        d.path(),
        "s.spec",
        &format!("{HEAD}%description\n%(sleep 1000 & echo started)\n"),
    );
    let (r, t) = read_timed(&p, &contained(d.path()));
    let spec = r.expect("reads");
    assert!(spec.parsed.contains("started"));
    assert!(t < Duration::from_secs(10), "took {t:?}");
}

#[test]
fn shell_cannot_write_to_the_tree() {
    let d = tempfile::tempdir().expect("tempdir");
    let marker = d.path().join("written-by-spec");
    let p = write(
        d.path(),
        "s.spec",
        &format!(
            "{HEAD}%description\n%(echo x > {} 2>/dev/null; echo done)\n",
            marker.display()
        ),
    );
    let spec = read_spec(&p, &contained(d.path())).expect("reads");
    assert!(spec.parsed.contains("done"));
    assert!(!marker.exists(), "the spec wrote into the tree");
}

#[test]
fn shell_has_no_network() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = l.local_addr().expect("addr").port();
    l.set_nonblocking(true).expect("nonblocking");
    let d = tempfile::tempdir().expect("tempdir");
    let p = write(
        d.path(),
        "s.spec",
        &format!(
            "{HEAD}%description\n%(bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected' 2>/dev/null || echo refused)\n"
        ),
    );
    let spec = read_spec(&p, &contained(d.path())).expect("reads");
    assert!(spec.parsed.contains("refused"), "{}", spec.parsed);
    assert!(l.accept().is_err(), "the spec reached the network");
}

#[test]
fn include_outside_the_tree_is_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = write(
        d.path(),
        "s.spec",
        &format!("{HEAD}%include /etc/passwd\n%description\nd\n"),
    );
    let e = read_spec(&p, &contained(d.path())).expect_err("must fail");
    assert!(e.message.contains("outside the allowed directories"), "{e}");
    let p = write(
        d.path(),
        "l.spec",
        &format!("{HEAD}%description\n%{{load:/etc/passwd}}\n"),
    );
    let e = read_spec(&p, &contained(d.path())).expect_err("must fail");
    assert!(e.message.contains("outside the allowed directories"), "{e}");
}

#[test]
fn include_loops_and_missing_includes_are_errors() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = write(
        d.path(),
        "loop.spec",
        &format!("{HEAD}%include loop.spec\n%description\nd\n"),
    );
    let e = read_spec(&p, &contained(d.path())).expect_err("must fail");
    assert!(e.message.contains("nested too deeply"), "{e}");
    let p = write(
        d.path(),
        "miss.spec",
        &format!("{HEAD}%include nothere.inc\n%description\nd\n"),
    );
    let e = read_spec(
        &p,
        &ReaderConfig::new(MacroTable::new(), EngineConfig::default()),
    )
    .expect_err("must fail");
    assert!(e.message.contains("Unable to open") && e.line == 6, "{e}");
}

#[test]
fn exponential_macros_end_in_an_error_within_seconds() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut body = String::from(
        "%define a0 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
    );
    for i in 1..40 {
        body.push_str(&format!("%define a{i} %{{a{}}}%{{a{}}}\n", i - 1, i - 1));
    }
    let p = write(
        d.path(),
        "s.spec",
        &format!("{body}{HEAD}%description\n%a39\n"),
    );
    let (r, t) = read_timed(&p, &contained(d.path()));
    let e = r.expect_err("must fail");
    assert!(e.message.contains("size limit"), "{e}");
    assert!(t < Duration::from_secs(20), "took {t:?}");
}

#[test]
fn runaway_recursion_and_deep_expressions_are_errors() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = write(
        d.path(),
        "r.spec",
        &format!("%define r %{{r}}\n{HEAD}%description\n%r\n"),
    );
    let e = read_spec(&p, &contained(d.path())).expect_err("must fail");
    assert!(e.message.contains("Too many levels of recursion"), "{e}");
    let deep = format!("{}1{}", "(".repeat(200_000), ")".repeat(200_000));
    let p = write(
        d.path(),
        "e.spec",
        &format!("{HEAD}%if {deep}\n%endif\n%description\nd\n"),
    );
    let e = read_spec(&p, &contained(d.path())).expect_err("must fail");
    assert!(e.message.contains("bad %if condition"), "{e}");
}

#[test]
fn lua_cannot_run_commands_or_write_and_is_time_limited() {
    let d = tempfile::tempdir().expect("tempdir");
    let marker = d.path().join("lua-wrote");
    let p = write(
        d.path(),
        "x.spec",
        &format!(
            "{HEAD}%description\n%{{lua: os.execute('touch {}')}}\n",
            marker.display()
        ),
    );
    assert!(read_spec(&p, &contained(d.path())).is_err());
    let p = write(
        d.path(),
        "w.spec",
        &format!(
            "{HEAD}%description\n%{{lua: io.open('{}', 'w')}}\n",
            marker.display()
        ),
    );
    assert!(read_spec(&p, &contained(d.path())).is_err());
    assert!(!marker.exists());
    let p = write(
        d.path(),
        "l.spec",
        &format!("{HEAD}%description\n%{{lua: while true do end}}\n"),
    );
    let (r, t) = read_timed(&p, &contained(d.path()));
    assert!(r.expect_err("must fail").message.contains("time limit"));
    assert!(t < Duration::from_secs(10), "took {t:?}");
}

/// netcf's `%prep` keeps its patch list in `os.tmpname()`: contained, that name is in a
/// scratch directory of the reading's own, writable, gone when the reading is; nothing
/// outside it, `..` included, can be written or removed.
#[test]
fn contained_lua_writes_only_in_its_own_scratch() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = contained(d.path());
    let p = write(
        d.path(),
        "t.spec",
        &format!(
            "{HEAD}%description\n%{{lua: t = os.tmpname(); f = io.open(t, 'w+'); \
             f:write('a\\n'); f:close(); g = io.open(t); \
             print('read:' .. g:read('l') .. ' ' .. t); g:close(); os.remove(t)}}\n"
        ),
    );
    let spec = read_spec(&p, &cfg).expect("reads");
    let line = spec
        .parsed
        .lines()
        .find_map(|l| l.strip_prefix("read:"))
        .unwrap_or_else(|| panic!("{}", spec.parsed));
    let (text, name) = line.split_once(' ').expect("two words");
    assert_eq!(text, "a");
    let scratch = Path::new(name).parent().expect("a directory").to_path_buf();
    assert!(!scratch.starts_with(d.path()) && !Path::new(name).exists());
    let escape = scratch.join("..").join("keel-lua-escape");
    for body in [
        format!("io.open('{}', 'w')", escape.display()),
        format!("os.remove('{}')", d.path().join("t.spec").display()),
    ] {
        let p = write(
            d.path(),
            "e.spec",
            &format!("{HEAD}%description\n%{{lua: t = os.tmpname(); {body}}}\n"),
        );
        assert!(read_spec(&p, &cfg).is_err(), "{body}");
    }
    assert!(!escape.exists() && d.path().join("t.spec").exists());
    drop(cfg);
    assert!(
        !scratch.exists(),
        "{} outlived its reading",
        scratch.display()
    );
}

#[test]
fn bad_input_gives_errors_with_lines_not_panics() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = ReaderConfig::new(MacroTable::new(), EngineConfig::default());
    let p = write(
        d.path(),
        "u.spec",
        &format!("{HEAD}%if 1\n%description\nd\n"),
    );
    let e = read_spec(&p, &cfg).expect_err("unterminated %if");
    assert!(e.message.contains("Unclosed %if"), "{e}");
    let p = write(
        d.path(),
        "t.spec",
        &format!("{HEAD}Bogus: x\n%description\nd\n"),
    );
    let e = read_spec(&p, &cfg).expect_err("unknown tag");
    assert_eq!(e.line, 6);
    let mut bytes = HEAD.as_bytes().to_vec();
    bytes.extend_from_slice(b"%description\n\xff\xfe invalid \xc3\x28 utf-8\n");
    let p = d.path().join("bin.spec");
    std::fs::write(&p, bytes).expect("write");
    let _ = read_spec(&p, &cfg);
}
