//! Images as actions of `keel build`: rebuilt only when a package of their closure, their
//! config or the tools change, and never because of a rebuild that was cut off.

use std::collections::BTreeMap;

use crate::support::*;

/// A noarch package installing `msg.txt` (kept beside the spec) as `/usr/share/NAME/msg`.
fn spec(name: &str) -> String {
    format!(
        "Name: {name}
Version: 1
Release: 1
Summary: A message
License: MIT
BuildArch: noarch
Source0: msg.txt

%description
Ships a message.

%install
install -D -m 0644 %{{SOURCE0}} %{{buildroot}}/usr/share/{name}/msg

%files
/usr/share/{name}/msg

%changelog
* Fri Nov 27 2026 keel <keel@example.invalid> - 1-1
- First.
"
    )
}

const CONTAINER: &str = r#"{
    "Disks": [{"Artifacts": [{"Name": "app", "Compression": "tar.gz"}]}],
    "SystemConfigs": [{"Name": "App", "PackageLists": ["lists/app.json"], "Hostname": "app"}]
}"#;

/// A tree of two packages, `inside` (the image's) and `outside`, and an image of `inside`.
fn tree() -> Project {
    project()
        .file(
            "tree/keel.toml",
            "[specs]\ndirs = [\"SPECS\"]\n[images]\nconfigs = [\"images/app.json\"]\n",
        )
        .file("tree/SPECS/inside/inside.spec", spec("inside"))
        .file("tree/SPECS/inside/msg.txt", "inside 1\n")
        .file("tree/SPECS/outside/outside.spec", spec("outside"))
        .file("tree/SPECS/outside/msg.txt", "outside 1\n")
        .file("tree/images/app.json", CONTAINER)
        .file("tree/images/lists/app.json", r#"{"packages": ["inside"]}"#)
        .build()
}

/// `keel build --json ARGS` in the project's tree: the final status of every action.
fn build(p: &Project, extra: &[&str]) -> BTreeMap<String, String> {
    let (run, status) = crate::build::build_json(p, extra);
    run.success();
    status
}

/// The content of `path` in a gzip'd tarball.
fn file_in_tar(tar: &std::path::Path, path: &str) -> String {
    let out = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(tar)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{path} not in {}", tar.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_image_is_rebuilt_only_when_a_package_of_its_closure_changes() {
    let p = tree();
    let tar = p.path("tree/out/images/app/app.tar.gz");
    // The image as a target builds its closure and nothing else.
    let first = build(&p, &["image:app"]);
    assert_eq!(first["image:app"], "ran", "{first:?}");
    assert_eq!(first["rpm:inside"], "ran", "{first:?}");
    assert!(!first.contains_key("rpm:outside"), "{first:?}");
    assert_eq!(file_in_tar(&tar, "usr/share/inside/msg"), "inside 1\n");
    assert!(p.path("tree/out/images/app/App.manifest.json").is_file());

    let all = build(&p, &[]);
    assert_eq!(all["rpm:outside"], "ran", "{all:?}");
    assert_eq!(all["image:app"], "cached", "{all:?}");

    // A package outside the image's closure changes: the image stays.
    std::fs::write(p.path("tree/SPECS/outside/msg.txt"), "outside 2\n").unwrap();
    let outside = build(&p, &[]);
    assert_eq!(outside["rpm:outside"], "ran", "{outside:?}");
    assert_eq!(outside["image:app"], "cached", "{outside:?}");

    // A comment in the image's package's spec: rebuilt, its RPM comes out the same, and
    // the image is cut off.
    let spec = p.path("tree/SPECS/inside/inside.spec");
    let mut text = std::fs::read_to_string(&spec).unwrap();
    text.push_str("# a comment that changes nothing built\n");
    std::fs::write(&spec, text).unwrap();
    let comment = build(&p, &[]);
    assert_eq!(comment["rpm:inside"], "cut_off", "{comment:?}");
    assert_eq!(comment["image:app"], "cached", "{comment:?}");

    // A source of the image's package changes: the image is rebuilt with it.
    std::fs::write(p.path("tree/SPECS/inside/msg.txt"), "inside 2\n").unwrap();
    let source = build(&p, &[]);
    assert_eq!(source["rpm:inside"], "ran", "{source:?}");
    assert_eq!(source["image:app"], "ran", "{source:?}");
    assert_eq!(file_in_tar(&tar, "usr/share/inside/msg"), "inside 2\n");
    let run = p
        .keel(&["-C", "tree", "explain", "image:app"])
        .run()
        .success();
    assert!(
        run.stdout().contains("image:app is up to date"),
        "{}",
        run.stdout()
    );
    assert!(run.stdout().contains("rpm:inside"), "{}", run.stdout());

    // The image's config changes: rebuilt, and explain says why before it runs.
    std::fs::write(
        p.path("tree/images/app.json"),
        CONTAINER.replace("\"app\"}", "\"app2\"}"),
    )
    .unwrap();
    let run = p
        .keel(&["-C", "tree", "build", "--dry-run"])
        .run()
        .success();
    assert!(
        run.stdout().contains("image:app: image config changed"),
        "{}",
        run.stdout()
    );
    let config = build(&p, &[]);
    assert_eq!(config["image:app"], "ran", "{config:?}");
    assert_eq!(config["rpm:inside"], "cached", "{config:?}");
}

#[test]
fn an_image_of_a_package_nobody_provides_names_the_config_and_the_package() {
    let p = tree();
    std::fs::write(
        p.path("tree/images/lists/app.json"),
        r#"{"packages": ["inside", "no-such-package"]}"#,
    )
    .unwrap();
    p.keel(&["-C", "tree", "build"])
        .run()
        .code_is(1)
        .stderr_has("images/app.json")
        .stderr_has("`no-such-package`");
    // A build of packages only does not read the image configs.
    p.keel(&["-C", "tree", "build", "outside"]).run().success();
}

#[test]
fn an_image_takes_what_the_tree_lacks_from_an_external_repository() {
    let p = tree();
    // A vendor's package, prebuilt: `outside`, built by the tree once and moved out of it.
    build(&p, &["outside"]);
    let rpm = "outside-1-1.noarch.rpm";
    std::fs::create_dir_all(p.path("vendor")).unwrap();
    std::fs::copy(
        p.path(&format!("tree/out/RPMS/noarch/{rpm}")),
        p.path(&format!("vendor/{rpm}")),
    )
    .unwrap();
    std::fs::remove_dir_all(p.path("tree/SPECS/outside")).unwrap();
    let toml = p.path("tree/keel.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("[images]\n", "[images]\nrepos = [\"../vendor\"]\n"),
    )
    .unwrap();
    std::fs::write(
        p.path("tree/images/lists/app.json"),
        r#"{"packages": ["inside", "outside"]}"#,
    )
    .unwrap();
    let first = build(&p, &[]);
    assert_eq!(first["image:app"], "ran", "{first:?}");
    let tar = p.path("tree/out/images/app/app.tar.gz");
    assert_eq!(file_in_tar(&tar, "usr/share/outside/msg"), "outside 1\n");
    let manifest =
        std::fs::read_to_string(p.path("tree/out/images/app/App.manifest.json")).unwrap();
    assert!(manifest.contains("outside"), "{manifest}");

    // Nothing changed: cached. The vendor's package changes: the image is rebuilt, and
    // explain names the package.
    assert_eq!(build(&p, &[])["image:app"], "cached");
    let other = project()
        .file("tree/keel.toml", "[specs]\ndirs = [\"SPECS\"]\n")
        .file("tree/SPECS/outside/outside.spec", spec("outside"))
        .file("tree/SPECS/outside/msg.txt", "outside 2\n")
        .build();
    other.keel(&["-C", "tree", "build"]).run().success();
    std::fs::copy(
        other.path(&format!("tree/out/RPMS/noarch/{rpm}")),
        p.path(&format!("vendor/{rpm}")),
    )
    .unwrap();
    let run = p
        .keel(&["-C", "tree", "build", "--dry-run"])
        .run()
        .success();
    assert!(
        run.stdout()
            .contains(&format!("image:app: external package {rpm} changed")),
        "{}",
        run.stdout()
    );
    let second = build(&p, &[]);
    assert_eq!(second["image:app"], "ran", "{second:?}");
    assert_eq!(file_in_tar(&tar, "usr/share/outside/msg"), "outside 2\n");

    // A package neither the tree nor the repository has is still named.
    std::fs::write(
        p.path("tree/images/lists/app.json"),
        r#"{"packages": ["inside", "nowhere"]}"#,
    )
    .unwrap();
    p.keel(&["-C", "tree", "build"])
        .run()
        .code_is(1)
        .stderr_has("`nowhere`");
}
