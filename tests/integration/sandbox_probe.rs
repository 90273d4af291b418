//! What a real rpmbuild `%build` sees in keel's sandbox, whoever runs keel: no
//! capability, no mount, no device nodes, no host secrets or network, no keel variables.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::*;

/// A `%build` that records what it can do, one `PROBE name=value` line each, in its log.
const PROBE_SPEC: &str = r#"Name: capprobe
Version: 1
Release: 1
Summary: Records what a build can do
License: MIT
BuildArch: noarch

%description
Probe.

%build
cat > probe.sh <<'EOF'
echo "PROBE uid=$(id -u)"
echo "PROBE capeff=$(awk '/^CapEff/ {print $2}' /proc/self/status)"
mkdir -p m
if mount -t tmpfs none m 2>/dev/null; then echo PROBE mount=ok; else echo PROBE mount=failed; fi
if mknod nod c 1 3 2>/dev/null; then echo PROBE mknod=ok; else echo PROBE mknod=failed; fi
if head -c1 /etc/shadow >/dev/null 2>&1; then echo PROBE shadow=read; else echo PROBE shadow=unreadable; fi
if head -c1 /etc/gshadow >/dev/null 2>&1; then echo PROBE gshadow=read; else echo PROBE gshadow=unreadable; fi
if test -e /etc/ssh; then echo PROBE ssh=visible; else echo PROBE ssh=absent; fi
if test -e /opt; then echo PROBE opt=visible; else echo PROBE opt=absent; fi
echo "PROBE netdev=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ',')"
if timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/@PORT@' 2>/dev/null; then echo PROBE loopback=connected; else echo PROBE loopback=refused; fi
echo "PROBE keelvars=$(env | grep -c '^KEEL_')"
echo "PROBE var=$(echo $(ls -A /var))"
EOF
bash probe.sh

%install
mkdir -p %{buildroot}/usr/share/capprobe
echo ok > %{buildroot}/usr/share/capprobe/ok

%files
/usr/share/capprobe/ok

%changelog
* Fri Dec 04 2026 keel <keel@example.invalid> - 1-1
- Probe.
"#;

/// The probe's lines from its build log, as `name=value` strings.
fn probe_lines(store: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(store.join("logs/rpm_capprobe.log")).unwrap();
    log.lines()
        .filter_map(|l| l.strip_prefix("PROBE "))
        .map(str::to_owned)
        .collect()
}

fn assert_contained(lines: &[String]) {
    let get = |k: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {lines:#?}"))
            .to_owned()
    };
    assert_eq!(get("capeff"), "0000000000000000", "{lines:#?}");
    assert_eq!(get("mount"), "failed", "{lines:#?}");
    assert_eq!(get("mknod"), "failed", "{lines:#?}");
    assert_eq!(get("shadow"), "unreadable", "{lines:#?}");
    assert_eq!(get("gshadow"), "unreadable", "{lines:#?}");
    assert_eq!(get("ssh"), "absent", "{lines:#?}");
    assert_eq!(get("opt"), "absent", "{lines:#?}");
    assert_eq!(get("netdev"), "lo,", "{lines:#?}");
    assert_eq!(get("loopback"), "refused", "{lines:#?}");
    assert_eq!(get("keelvars"), "0", "{lines:#?}");
    assert_eq!(get("var"), "tmp", "{lines:#?}");
}

fn probe_project(port: u16) -> Project {
    project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file(
            "tree/SPECS/capprobe/capprobe.spec",
            PROBE_SPEC.replace("@PORT@", &port.to_string()),
        )
        .build()
}

#[test]
fn a_build_run_by_root_has_no_capability_secret_or_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = probe_project(listener.local_addr().unwrap().port());
    p.keel(&["-C", "tree", "build"])
        .env("KEEL_REMOTE_TOKEN", "probe-secret")
        .env("KEEL_REMOTE_SIGNING_KEY", "probe-secret")
        .run()
        .success();
    assert_contained(&probe_lines(&p.store()));
}

/// The same probe with keel run as `nobody` (when the tests run as root; as another user
/// the test above already is the ordinary-user case).
#[test]
fn a_build_run_by_an_ordinary_user_has_no_capability_secret_or_network() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return a_build_run_by_root_has_no_capability_secret_or_network();
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = probe_project(listener.local_addr().unwrap().port());
    // nobody must reach the binary and own the project.
    let bin = p.path("bin/keel");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_keel"), &bin).unwrap();
    std::fs::set_permissions(p.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(p.root())
        .status()
        .unwrap();
    assert!(chown.success());
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&bin)
        .arg("--store")
        .arg(p.store())
        .args(["-C", "tree", "build"])
        .current_dir(p.root())
        .env("HOME", p.root())
        .env("KEEL_REMOTE_TOKEN", "probe-secret");
    for (k, _) in std::env::vars() {
        if k.starts_with("KEEL_") && k != "KEEL_REMOTE_TOKEN" {
            c.env_remove(k);
        }
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = probe_lines(&p.store());
    assert!(lines.iter().any(|l| l == "uid=0"), "{lines:#?}");
    assert_contained(&lines);
}
