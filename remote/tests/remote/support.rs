//! Servers for the tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use keel_remote::DigestMap;
use keel_remote::http::{HttpConfig, HttpTier};

/// A real nginx serving WebDAV on 127.0.0.1 at a free port, from a temporary directory.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start() -> Nginx {
        Nginx::serving(None)
    }

    /// An nginx whose WebDAV root starts as a copy of `root` (what another nginx's
    /// [`Nginx::file`]`("")` held): a remote cache that others already filled.
    #[allow(
        dead_code,
        reason = "used by the keel binary's tests, which share this file"
    )]
    pub fn start_with(root: &Path) -> Nginx {
        Nginx::serving(Some(root))
    }

    fn serving(content: Option<&Path>) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["tmp", "logs"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        match content {
            // Modes and owners kept: nginx's worker (`nobody` under root) writes there.
            Some(from) => {
                let status = Command::new("cp")
                    .arg("-a")
                    .arg(from)
                    .arg(d.join("root"))
                    .status()
                    .unwrap();
                assert!(status.success(), "cp -a {}", from.display());
            }
            None => std::fs::create_dir(d.join("root")).unwrap(),
        }
        // The worker runs as `nobody` when the master is root: let it write the dav root.
        for p in [
            d.to_path_buf(),
            d.join("root"),
            d.join("tmp"),
            d.join("logs"),
        ] {
            set_mode(&p, 0o777);
        }
        let port = free_port();
        let p = d.display();
        let conf = format!(
            r#"
pid {p}/nginx.pid;
error_log {p}/logs/error.log info;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {p}/logs/access.log;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {p}/root;
        client_max_body_size 0;
        dav_methods PUT DELETE;
        create_full_put_path on;
        dav_access user:rw group:rw all:r;
        # A remote that is full: every upload under /full/ answers 507.
        location /full/ {{
            if ($request_method = PUT) {{ return 507; }}
        }}
    }}
}}
"#
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx must be installed (apt-get install nginx)");
        let mut n = Nginx { child, port, dir };
        n.wait_ready();
        n
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.path().join("logs/error.log"))
                    .unwrap_or_default();
                panic!("nginx exited with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "nginx did not start listening");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The file nginx serves for `path` (relative to the URL).
    pub fn file(&self, path: &str) -> PathBuf {
        self.dir
            .path()
            .join("root")
            .join(path.trim_start_matches('/'))
    }

    /// Every request line nginx logged so far. nginx logs a request once it is finished,
    /// which can be after the client saw the answer, so this sends a marker request and
    /// waits until the marker is logged.
    pub fn requests(&self) -> Vec<String> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let marker = format!("/__marker-{n}");
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            c,
            "GET {marker} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let _ = c.read_to_end(&mut Vec::new());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = std::fs::read_to_string(self.dir.path().join("logs/access.log"))
                .unwrap_or_default();
            let lines: Vec<String> = log
                .lines()
                .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
                .collect();
            if lines.iter().any(|l| l.contains(&marker)) {
                return lines
                    .into_iter()
                    .filter(|l| !l.contains("/__marker-"))
                    .collect();
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not log the marker request"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`Nginx::requests`] once `done` holds for them: a request whose body nginx discards
    /// (a refused upload) is logged only after the body was drained, maybe after the marker.
    pub fn requests_until(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = self.requests();
            if done(&r) || Instant::now() > deadline {
                return r;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM, not SIGKILL: the master must stop its workers, or they outlive the test.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.wait();
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port nothing listens on.
pub fn dead_port() -> u16 {
    free_port()
}

/// A tier with test-sized timeouts and backoff.
pub fn tier(url: &str, f: impl FnOnce(&mut HttpConfig)) -> HttpTier {
    tier_with_map(url, Arc::new(DigestMap::default()), f)
}

pub fn tier_with_map(url: &str, map: Arc<DigestMap>, f: impl FnOnce(&mut HttpConfig)) -> HttpTier {
    let mut c = HttpConfig::new(url);
    c.connect_timeout = Duration::from_millis(500);
    c.io_timeout = Duration::from_millis(500);
    c.backoff = Duration::from_millis(10);
    f(&mut c);
    HttpTier::new(c, map).unwrap()
}

/// A received request: its head and body.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
}

/// A scripted HTTP server (a stand-in for fault injection only): answers the n-th request
/// with the n-th response of `script` (the last one repeats), one request per connection.
/// `None` in the script means: accept, read the request, and never answer.
pub struct Scripted {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Scripted {
    pub fn start(script: Vec<Option<Vec<u8>>>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        thread::spawn(move || {
            let mut hung = Vec::new();
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { return };
                let Some(req) = read_request(&mut conn) else {
                    continue;
                };
                seen2.lock().unwrap().push(req);
                match &script[i.min(script.len() - 1)] {
                    Some(resp) => {
                        let _ = conn.write_all(resp);
                    }
                    None => hung.push(conn),
                }
            }
        });
        Scripted { port, seen }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Seen> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Seen { head, body })
}

/// An HTTP/1.1 response with a body.
pub fn response(status: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    Some(r)
}

/// A response that announces `announced` bytes and sends `body`, then closes.
pub fn truncated(announced: usize, body: &[u8]) -> Option<Vec<u8>> {
    let mut r =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n")
            .into_bytes();
    r.extend_from_slice(body);
    Some(r)
}

/// A real BuildGrid (`bgd`, from `pip install buildgrid==0.4.4`) serving CAS, ByteStream
/// and the ActionCache from in-memory LRU storage on 127.0.0.1, shared by the tests of
/// this binary (it takes seconds to start). It is started through `sh`, which kills it
/// when this process's end of its stdin closes, so it never outlives the tests.
pub struct BuildGrid {
    pub port: u16,
    _dir: tempfile::TempDir,
    _child: Mutex<Child>,
}

pub fn buildgrid() -> &'static BuildGrid {
    static BG: std::sync::OnceLock<BuildGrid> = std::sync::OnceLock::new();
    BG.get_or_init(BuildGrid::start)
}

impl BuildGrid {
    fn start() -> BuildGrid {
        // KEEL_TEST_BGD, else where scripts/install-deps.sh installs it, else the PATH.
        let bgd = std::env::var("KEEL_TEST_BGD").unwrap_or_else(|_| {
            let venv = "/opt/keel-buildgrid/bin/bgd";
            if std::path::Path::new(venv).exists() {
                venv.into()
            } else {
                "bgd".into()
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = format!(
            r#"
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
storages:
  - !lru-storage &main-storage
    size: 256MB
caches:
  - !lru-action-cache &main-action
    storage: *main-storage
    max-cached-refs: 4096
    allow-updates: true
    cache-failed-actions: true
instances:
  - name: ""
    services:
      - !action-cache
        cache: *main-action
      - !cas
        storage: *main-storage
      - !bytestream
        storage: *main-storage
  - name: "ro"
    services:
      - !cas
        storage: *main-storage
"#
        );
        let conf_path = dir.path().join("bgd.yml");
        std::fs::write(&conf_path, conf).unwrap();
        let log = dir.path().join("bgd.log");
        let script = format!(
            "'{bgd}' server start '{}' >'{}' 2>&1 & pid=$!; cat >/dev/null; kill $pid",
            conf_path.display(),
            log.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // The pipe's write end stays open in `child` for the life of this process.
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "BuildGrid did not start (needs `pip install buildgrid==0.4.4`; set \
                     KEEL_TEST_BGD to its bgd if not on PATH): {log}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        BuildGrid {
            port,
            _dir: dir,
            _child: Mutex::new(child),
        }
    }

    pub fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }
}

/// Runs `f` and counts the warnings it logged on this thread.
pub fn count_warnings<T>(f: impl FnOnce() -> T) -> (T, usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing_subscriber::layer::SubscriberExt as _;

    struct Count(Arc<AtomicUsize>);
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            if *e.metadata().level() == tracing::Level::WARN {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let n = Arc::new(AtomicUsize::new(0));
    let subscriber = tracing_subscriber::registry().with(Count(n.clone()));
    let out = tracing::subscriber::with_default(subscriber, f);
    (out, n.load(Ordering::SeqCst))
}
