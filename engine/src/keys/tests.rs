//! One test per key input: changing it changes the key. Plus the dependency part of the
//! key and the output digest.

use super::*;

fn blob(s: &str) -> BlobDigest {
    BlobDigest::of_bytes(s.as_bytes())
}

fn executor() -> ExecutorId {
    ExecutorId::new("rpmbuild", "sandboxed")
}

fn source_fetch() -> SourceFetchInputs {
    SourceFetchInputs {
        file_name: "foo-1.2.tar.gz".into(),
        sha256: "ab".repeat(32),
        executor: executor(),
    }
}

fn srpm_pack() -> SrpmPackInputs {
    SrpmPackInputs {
        name: "foo".into(),
        evr: Evr::new("1.2", "3"),
        spec: blob("Name: foo"),
        files: [("foo.patch".to_owned(), blob("patch"))].into(),
        macro_files: [("macros.dist".to_owned(), blob("%dist .azl3"))].into(),
        defines: [("dist".to_owned(), ".azl3".to_owned())].into(),
        target_arch: "x86_64".into(),
        toolchain: ToolchainId {
            name: "azl3-x86_64".into(),
            fingerprint: blob("toolchain manifest"),
        },
        executor: executor(),
        build_root: Default::default(),
    }
}

fn rpm_build() -> RpmBuildInputs {
    RpmBuildInputs {
        name: "foo".into(),
        evr: Evr::new("1.2", "3"),
        spec: blob("Name: foo"),
        macro_files: [("macros.dist".to_owned(), blob("%dist .azl3"))].into(),
        defines: [("with_check".to_owned(), "1".to_owned())].into(),
        target_arch: "x86_64".into(),
        toolchain: ToolchainId {
            name: "azl3-x86_64".into(),
            fingerprint: blob("toolchain manifest"),
        },
        env: [("SOURCE_DATE_EPOCH".to_owned(), "0".to_owned())].into(),
        executor: executor(),
        check: true,
        build_root: Default::default(),
    }
}

fn repo_index() -> RepoIndexInputs {
    RepoIndexInputs {
        name: "base".into(),
        target_arch: "x86_64".into(),
        indexer: "createrepo_c 1.1.2".into(),
        options: [("compress".to_owned(), "zstd".to_owned())].into(),
        executor: executor(),
    }
}

fn image() -> ImageInputs {
    ImageInputs {
        name: "core".into(),
        config: blob("image config"),
        package_lists: [("core.json".to_owned(), blob("[bash]"))].into(),
        tools: blob("mkfs 1.47"),
        format: "raw".into(),
        target_arch: "x86_64".into(),
        system: "Standard".into(),
        scripts: [("scripts/cleanup.sh".to_owned(), blob("rm -rf /tmp/*"))].into(),
        env: [("SOURCE_DATE_EPOCH".to_owned(), "0".to_owned())].into(),
        external: BTreeMap::new(),
        executor: executor(),
    }
}

fn key_of(inputs: KeyInputs) -> ActionKey {
    KeyRecord::new(inputs, BTreeMap::new()).compute_key()
}

/// Asserts that `change` applied to the base inputs changes the key, and that the base
/// key is stable (hashing the same thing twice agrees).
macro_rules! input_changes_key {
    ($test:ident, $base:ident, $variant:ident, |$i:ident| $change:expr) => {
        #[test]
        fn $test() {
            let before = key_of(KeyInputs::$variant($base()));
            assert_eq!(before, key_of(KeyInputs::$variant($base())));
            let mut $i = $base();
            $change;
            assert_ne!(before, key_of(KeyInputs::$variant($i)));
        }
    };
}

input_changes_key!(source_fetch_1_file_name, source_fetch, SourceFetch, |i| i
    .file_name =
    "foo-1.3.tar.gz".into());
input_changes_key!(source_fetch_2_sha256, source_fetch, SourceFetch, |i| i
    .sha256 =
    "cd".repeat(32));
input_changes_key!(source_fetch_3_executor, source_fetch, SourceFetch, |i| i
    .executor =
    ExecutorId::new("test", "none"));

input_changes_key!(srpm_pack_1_name, srpm_pack, SrpmPack, |i| i.name =
    "bar".into());
input_changes_key!(srpm_pack_2_evr_release, srpm_pack, SrpmPack, |i| i
    .evr
    .release =
    "4".into());
input_changes_key!(srpm_pack_2_evr_version, srpm_pack, SrpmPack, |i| i
    .evr
    .version =
    "1.3".into());
input_changes_key!(srpm_pack_2_evr_epoch, srpm_pack, SrpmPack, |i| i
    .evr
    .epoch =
    Some(0));
input_changes_key!(srpm_pack_3_spec, srpm_pack, SrpmPack, |i| i.spec =
    blob("Name: foo\n"));
input_changes_key!(srpm_pack_4_files_content, srpm_pack, SrpmPack, |i| i
    .files
    .insert("foo.patch".into(), blob("patch 2")));
input_changes_key!(srpm_pack_4_files_added, srpm_pack, SrpmPack, |i| i
    .files
    .insert("bar.patch".into(), blob("patch")));
input_changes_key!(srpm_pack_4_files_renamed, srpm_pack, SrpmPack, |i| {
    let d = i.files.remove("foo.patch").unwrap();
    i.files.insert("foo2.patch".into(), d);
});
input_changes_key!(srpm_pack_5_macro_files, srpm_pack, SrpmPack, |i| i
    .macro_files[0]
    .1 =
    blob("%dist .azl4"));
input_changes_key!(srpm_pack_5_macro_file_order, srpm_pack, SrpmPack, |i| {
    i.macro_files
        .push(("macros.local".into(), blob("%dist .local")));
    i.macro_files.reverse();
});
input_changes_key!(srpm_pack_6_defines, srpm_pack, SrpmPack, |i| i
    .defines
    .insert("with_check".into(), "0".into()));
input_changes_key!(srpm_pack_7_target_arch, srpm_pack, SrpmPack, |i| i
    .target_arch =
    "aarch64".into());
input_changes_key!(srpm_pack_8_toolchain_name, srpm_pack, SrpmPack, |i| i
    .toolchain
    .name =
    "azl4-x86_64".into());
input_changes_key!(
    srpm_pack_8_toolchain_fingerprint,
    srpm_pack,
    SrpmPack,
    |i| i.toolchain.fingerprint = blob("another toolchain")
);
input_changes_key!(srpm_pack_9_executor, srpm_pack, SrpmPack, |i| i.executor =
    ExecutorId::new("test", "none"));
input_changes_key!(srpm_pack_9_isolation, srpm_pack, SrpmPack, |i| i
    .executor
    .isolation =
    "unsandboxed".into());

input_changes_key!(rpm_build_1_name, rpm_build, RpmBuild, |i| i.name =
    "bar".into());
input_changes_key!(rpm_build_2_evr, rpm_build, RpmBuild, |i| i.evr.release =
    "4".into());
input_changes_key!(rpm_build_3_spec, rpm_build, RpmBuild, |i| i.spec =
    blob("Name: foo\n"));
input_changes_key!(rpm_build_4_macro_files, rpm_build, RpmBuild, |i| i
    .macro_files
    .clear());
input_changes_key!(rpm_build_4_macro_file_order, rpm_build, RpmBuild, |i| {
    i.macro_files
        .push(("macros.local".into(), blob("%dist .local")));
    i.macro_files.reverse();
});
input_changes_key!(rpm_build_5_defines, rpm_build, RpmBuild, |i| i
    .defines
    .insert("with_check".into(), "0".into()));
input_changes_key!(rpm_build_6_target_arch, rpm_build, RpmBuild, |i| i
    .target_arch =
    "aarch64".into());
input_changes_key!(rpm_build_7_toolchain_name, rpm_build, RpmBuild, |i| i
    .toolchain
    .name =
    "azl3-x86_64-new".into());
input_changes_key!(
    rpm_build_7_toolchain_fingerprint,
    rpm_build,
    RpmBuild,
    |i| i.toolchain.fingerprint = blob("toolchain manifest 2")
);
input_changes_key!(rpm_build_8_env, rpm_build, RpmBuild, |i| i
    .env
    .insert("SOURCE_DATE_EPOCH".into(), "1".into()));
input_changes_key!(rpm_build_9_executor, rpm_build, RpmBuild, |i| i.executor =
    ExecutorId::new("test", "none"));
input_changes_key!(rpm_build_9_isolation, rpm_build, RpmBuild, |i| i
    .executor
    .isolation =
    "unsandboxed".into());
input_changes_key!(rpm_build_10_check, rpm_build, RpmBuild, |i| i.check = false);
input_changes_key!(rpm_build_11_build_root, rpm_build, RpmBuild, |i| i
    .build_root
    .insert("sh".into(), "/usr/bin/bash".into()));
input_changes_key!(srpm_pack_10_build_root, srpm_pack, SrpmPack, |i| i
    .build_root
    .insert("rcfile".into(), "/usr/lib/rpm/azl/rpmrc".into()));

input_changes_key!(repo_index_1_name, repo_index, RepoIndex, |i| i.name =
    "extra".into());
input_changes_key!(repo_index_2_target_arch, repo_index, RepoIndex, |i| i
    .target_arch =
    "aarch64".into());
input_changes_key!(repo_index_3_indexer, repo_index, RepoIndex, |i| i.indexer =
    "createrepo_c 1.2.0".into());
input_changes_key!(repo_index_4_options, repo_index, RepoIndex, |i| i
    .options
    .insert("compress".into(), "xz".into()));
input_changes_key!(repo_index_5_executor, repo_index, RepoIndex, |i| i
    .executor =
    ExecutorId::new("test", "none"));

input_changes_key!(image_1_name, image, Image, |i| i.name = "full".into());
input_changes_key!(image_2_config, image, Image, |i| i.config =
    blob("image config 2"));
input_changes_key!(image_3_package_lists, image, Image, |i| i
    .package_lists
    .insert("extra.json".into(), blob("[zsh]")));
input_changes_key!(image_4_tools, image, Image, |i| i.tools = blob("mkfs 1.48"));
input_changes_key!(image_5_format, image, Image, |i| i.format = "vhdx".into());
input_changes_key!(image_6_target_arch, image, Image, |i| i.target_arch =
    "aarch64".into());
input_changes_key!(image_7_system, image, Image, |i| i.system =
    "Minimal".into());
input_changes_key!(image_8_scripts, image, Image, |i| i
    .scripts
    .insert("scripts/cleanup.sh".into(), blob("rm -rf /var/tmp/*")));
input_changes_key!(image_9_env, image, Image, |i| i
    .env
    .insert("SOURCE_DATE_EPOCH".into(), "1".into()));
input_changes_key!(image_10_external, image, Image, |i| i
    .external
    .insert("glibc-2.38-1.x86_64.rpm".into(), blob("glibc")));
input_changes_key!(image_11_executor, image, Image, |i| i.executor =
    ExecutorId::new("test", "none"));
input_changes_key!(image_11_isolation, image, Image, |i| i.executor.isolation =
    "unsandboxed".into());

fn out(s: &str) -> OutputDigest {
    OutputDigest::of_bytes(s.as_bytes())
}

#[test]
fn dependency_output_changes_key() {
    let inputs = KeyInputs::RpmBuild(rpm_build());
    let a = KeyRecord::new(inputs.clone(), [("srpm:foo".into(), out("1"))].into());
    let b = KeyRecord::new(inputs.clone(), [("srpm:foo".into(), out("2"))].into());
    let renamed = KeyRecord::new(inputs.clone(), [("srpm:bar".into(), out("1"))].into());
    let more = KeyRecord::new(
        inputs,
        [
            ("srpm:foo".into(), out("1")),
            ("rpm:glibc".into(), out("1")),
        ]
        .into(),
    );
    let keys = [&a, &b, &renamed, &more].map(|r| r.compute_key());
    for (i, x) in keys.iter().enumerate() {
        for y in &keys[i + 1..] {
            assert_ne!(x, y);
        }
    }
}

#[test]
fn kind_and_version_are_part_of_the_key() {
    let base = KeyRecord::new(KeyInputs::RpmBuild(rpm_build()), BTreeMap::new());
    let mut bumped = base.clone();
    bumped.version += 1;
    assert_ne!(base.compute_key(), bumped.compute_key());
    // Same field values under another kind: a repository and an image sharing a name
    // and arch must not share a key.
    let r = RepoIndexInputs {
        name: "x".into(),
        target_arch: "x86_64".into(),
        indexer: String::new(),
        options: BTreeMap::new(),
        executor: executor(),
    };
    let s = SourceFetchInputs {
        file_name: "x".into(),
        sha256: "x86_64".into(),
        executor: executor(),
    };
    assert_ne!(
        key_of(KeyInputs::RepoIndex(r)),
        key_of(KeyInputs::SourceFetch(s))
    );
}

#[test]
fn map_entries_cannot_run_together() {
    // {"a": "bc"} and {"ab": "c"} would collide without length prefixes.
    let mut a = repo_index();
    a.options = [("a".to_owned(), "bc".to_owned())].into();
    let mut b = repo_index();
    b.options = [("ab".to_owned(), "c".to_owned())].into();
    assert_ne!(
        key_of(KeyInputs::RepoIndex(a)),
        key_of(KeyInputs::RepoIndex(b))
    );
}

#[test]
fn key_record_json_round_trips() {
    let r = KeyRecord::new(
        KeyInputs::Image(image()),
        [("repo:base".into(), out("r"))].into(),
    );
    let back = KeyRecord::from_json(&r.to_json()).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.compute_key(), r.compute_key());
    assert!(KeyRecord::from_json("{\"version\":1}").is_none());
}

fn output(name: &str, content: &str) -> ActionOutput {
    ActionOutput {
        name: name.into(),
        object: ObjectRef::Blob(blob(content)),
    }
}

#[test]
fn output_digest_ignores_order_but_not_names_or_content() {
    let a = compute_output_digest(&[output("x", "1"), output("y", "2")]);
    assert_eq!(
        a,
        compute_output_digest(&[output("y", "2"), output("x", "1")])
    );
    assert_ne!(
        a,
        compute_output_digest(&[output("x", "1"), output("z", "2")])
    );
    assert_ne!(
        a,
        compute_output_digest(&[output("x", "1"), output("y", "3")])
    );
}

#[test]
fn summary_output_alone_decides_the_summary_digest() {
    let a = compute_summary_digest(&[output("rpm", "built at 10:00"), output(SUMMARY_OUTPUT, "s")]);
    let b = compute_summary_digest(&[output("rpm", "built at 11:00"), output(SUMMARY_OUTPUT, "s")]);
    assert_eq!(a, b);
    let c = compute_summary_digest(&[output("rpm", "built at 11:00"), output(SUMMARY_OUTPUT, "t")]);
    assert_ne!(a, c);
}

#[test]
fn bytes_digest_sees_what_the_summary_leaves_out() {
    // A changelog-only edit: the RPM's bytes change, its summary does not. Whoever reads
    // the bytes (a repository index, an image's rpm database) must see the change.
    let a = [output("x.rpm", "changelog 1"), output(SUMMARY_OUTPUT, "s")];
    let b = [output("x.rpm", "changelog 2"), output(SUMMARY_OUTPUT, "s")];
    let (da, db) = (OutputDigests::of(&a), OutputDigests::of(&b));
    assert_eq!(da.summary, db.summary);
    assert_ne!(da.bytes, db.bytes);
    assert_eq!(da.view(View::Summary), da.summary);
    assert_eq!(da.view(View::Bytes), da.bytes);
    // Without a summary both views are the bytes.
    let plain = OutputDigests::of(&[output("x.src.rpm", "1")]);
    assert_eq!(plain.bytes, plain.summary);
    // A summary digest is never a bytes digest, even of outputs that hold only it.
    let only = OutputDigests::of(&[output(SUMMARY_OUTPUT, "s")]);
    assert_ne!(only.bytes, only.summary);
}

#[test]
fn only_builds_and_packings_read_their_dependencies_as_summaries() {
    for kind in [
        ActionKind::SourceFetch,
        ActionKind::RepoIndex,
        ActionKind::Image,
    ] {
        assert_eq!(kind.dependency_view(), View::Bytes, "{kind}");
    }
    assert_eq!(ActionKind::RpmBuild.dependency_view(), View::Summary);
    assert_eq!(ActionKind::SrpmPack.dependency_view(), View::Summary);
}

#[test]
fn compute_key_agrees_with_key_record() {
    let inputs = KeyInputs::RpmBuild(rpm_build());
    let deps: BTreeMap<String, OutputDigest> = [("srpm:foo".into(), out("1"))].into();
    assert_eq!(
        compute_key(&inputs, &deps),
        KeyRecord::new(inputs.clone(), deps).compute_key()
    );
}
