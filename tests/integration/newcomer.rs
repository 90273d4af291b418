//! What a newcomer meets first: the README's install script.

use std::process::Command;

fn install_deps(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/install-deps.sh"
        ))
        .args(args)
        .output()
        .expect("bash runs scripts/install-deps.sh")
}

/// Every name the install script can hand to this machine's package manager is in that
/// manager's index (regression: on apt it picked the rpm column, `rpm-build`).
#[test]
fn every_package_the_install_script_names_is_in_the_package_index() {
    let out = install_deps(&["check-index"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The two columns are told apart: Debian's names are Debian's, the rpm family's are its own.
#[test]
fn the_install_script_names_debian_and_rpm_packages_from_their_own_columns() {
    let names = |family: &str| {
        let out = install_deps(&["names", family]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let apt = names("apt");
    let rpm = names("rpm");
    for n in ["rpm", "createrepo-c", "qemu-utils", "patch"] {
        assert!(apt.iter().any(|a| a == n), "apt names lack {n}: {apt:?}");
    }
    for n in ["rpm-build", "createrepo_c", "qemu-img", "patch"] {
        assert!(rpm.iter().any(|a| a == n), "rpm names lack {n}: {rpm:?}");
    }
    assert!(!apt.iter().any(|a| a == "rpm-build"), "{apt:?}");
    assert!(apt.iter().all(|a| !a.is_empty()) && rpm.iter().all(|a| !a.is_empty()));
}
