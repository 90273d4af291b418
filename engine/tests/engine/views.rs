//! Dependents are keyed on the view of a dependency they read: an RPM whose bytes change
//! but whose summary does not (a changelog edit) cuts off the builds that read only its
//! payload, never the repository index that reads its bytes.

use std::collections::BTreeMap;

use keel_engine::{
    ActionKind, Config, Engine, ExecContext, ExecError, ExecOutcome, Executor, Graph, KeyInputs,
    RepoIndexInputs, RpmBuildInputs, SUMMARY_OUTPUT, Status, ToolchainId, View,
};
use keel_store::{ActionOutput, ObjectRef, Store};

/// Builds "RPMs" whose bytes are the spec's (changelog included) and whose summary is the
/// spec's first line (its payload); a repository lists its dependencies' bytes.
struct Rpms;

impl Executor for Rpms {
    fn execute(&self, ctx: &ExecContext<'_>) -> Result<ExecOutcome, ExecError> {
        let s = ctx.store;
        let outputs = match &ctx.action.inputs {
            KeyInputs::RpmBuild(i) => {
                let spec = s.read_blob(&i.spec)?;
                let payload = spec.split(|b| *b == b'\n').next().unwrap_or_default();
                vec![
                    ActionOutput {
                        name: format!("{}.rpm", i.name),
                        object: ObjectRef::Blob(s.put_bytes(&spec)?),
                    },
                    ActionOutput {
                        name: SUMMARY_OUTPUT.into(),
                        object: ObjectRef::Blob(s.put_bytes(payload)?),
                    },
                ]
            }
            KeyInputs::RepoIndex(_) => {
                let mut index = Vec::new();
                for (_, rec) in &ctx.deps {
                    for o in rec.outputs.iter().filter(|o| o.name.ends_with(".rpm")) {
                        if let ObjectRef::Blob(d) = &o.object {
                            index.extend_from_slice(d.to_hex().as_bytes());
                        }
                    }
                }
                vec![ActionOutput {
                    name: "repodata".into(),
                    object: ObjectRef::Blob(s.put_bytes(&index)?),
                }]
            }
            other => panic!("unexpected {other:?}"),
        };
        Ok(ExecOutcome { outputs, log: None })
    }
}

fn graph(store: &Store, lib_spec: &str) -> Graph {
    let rpm = |name: &str, spec: &str| {
        KeyInputs::RpmBuild(RpmBuildInputs {
            name: name.into(),
            evr: keel_engine::Evr::new("1", "1"),
            spec: store.put_bytes(spec.as_bytes()).unwrap(),
            macro_files: Vec::new(),
            defines: BTreeMap::new(),
            target_arch: "x86_64".into(),
            executor: keel_engine::ExecutorId::new("test", "none"),
            check: true,
            toolchain: ToolchainId {
                name: "test".into(),
                fingerprint: store.put_bytes(b"toolchain").unwrap(),
            },
            env: BTreeMap::new(),
            build_root: Default::default(),
        })
    };
    let mut g = Graph::new();
    let lib = g.add("rpm:lib", rpm("lib", lib_spec), &[]).unwrap();
    let user = g
        .add("rpm:user", rpm("user", "payload of user\n"), &[lib])
        .unwrap();
    g.add(
        "repo:x86_64",
        KeyInputs::RepoIndex(RepoIndexInputs {
            name: "x86_64".into(),
            target_arch: "x86_64".into(),
            indexer: "test".into(),
            options: BTreeMap::new(),
            executor: keel_engine::ExecutorId::new("test", "none"),
        }),
        &[lib, user],
    )
    .unwrap();
    g
}

fn statuses(store: &Store, g: &Graph) -> BTreeMap<String, Status> {
    let config = Config {
        jobs: 2,
        ..Config::default()
    };
    let r = Engine::new(store)
        .run(g, &Rpms, &config, &mut |_| {})
        .unwrap();
    assert!(r.success());
    g.iter()
        .map(|(id, a)| (a.name.clone(), r.get(id).unwrap().status.clone()))
        .collect()
}

#[test]
fn a_changelog_edit_reindexes_but_does_not_rebuild_payload_readers() {
    assert_eq!(ActionKind::RepoIndex.dependency_view(), View::Bytes);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let first = statuses(&store, &graph(&store, "payload of lib\nchangelog 1\n"));
    assert!(first.values().all(|s| *s == Status::Ran), "{first:?}");

    let g = graph(&store, "payload of lib\nchangelog 2\n");
    let second = statuses(&store, &g);
    assert_eq!(second["rpm:lib"], Status::Ran, "its bytes changed");
    assert_eq!(
        second["rpm:user"],
        Status::Cached,
        "it reads only the payload"
    );
    assert_eq!(second["repo:x86_64"], Status::Ran, "it reads the bytes");

    // The dry run agrees with what ran: nothing left to do.
    let plan = Engine::new(&store).plan(&g, &[]).unwrap();
    assert!(
        plan.actions
            .iter()
            .all(|a| a.decision == keel_engine::Decision::UpToDate),
        "{plan:?}"
    );

    // A payload change reaches every reader (user's own bytes come out the same).
    let third = statuses(&store, &graph(&store, "payload of lib, new\nchangelog 2\n"));
    assert_eq!(third["rpm:user"], Status::CutOff, "{third:?}");
    assert_eq!(third["repo:x86_64"], Status::Ran, "{third:?}");
}
