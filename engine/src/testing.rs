//! A deterministic executor for tests, benchmarks and demos of the engine itself.
//!
//! [`TestExecutor`] stores, as an action's single output, a text that is a pure function of
//! the action's key inputs and its dependencies' outputs — so a cached result is exactly
//! what a fresh run would give, which is the property the engine relies on. Files named by
//! digest (spec, patches, macro files, toolchain manifest, image config…) are read from the
//! store and their comment lines (starting with `#`) are left out of that function: editing
//! only a comment changes the action's key but not its output. That is the knob for "same
//! output despite changed inputs", and it exercises early cutoff the way a real build does
//! (a changelog edit rebuilds a package whose bits come out identical).
//!
//! Other knobs, per action name: fail, take real time (polling the cancel flag), panic.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_store::{ActionOutput, BlobDigest, ObjectRef, Store};

use crate::error::ExecError;
use crate::exec::{ExecContext, ExecOutcome, Executor};
use crate::keys::{KeyInputs, compute_output_digest};

/// See the module docs.
#[derive(Debug, Default)]
pub struct TestExecutor {
    fail: HashSet<String>,
    panic: HashSet<String>,
    sleep: HashMap<String, Duration>,
    executed: Mutex<Vec<String>>,
}

impl TestExecutor {
    pub fn new() -> TestExecutor {
        TestExecutor::default()
    }

    /// Makes the action named `name` fail.
    pub fn fail(mut self, name: &str) -> TestExecutor {
        self.fail.insert(name.to_owned());
        self
    }

    /// Makes the action named `name` panic.
    pub fn panic(mut self, name: &str) -> TestExecutor {
        self.panic.insert(name.to_owned());
        self
    }

    /// Makes the action named `name` take `d` of real time, stopping early if cancelled.
    pub fn sleep(mut self, name: &str, d: Duration) -> TestExecutor {
        self.sleep.insert(name.to_owned(), d);
        self
    }

    /// The names of the actions executed so far, in the order they finished.
    pub fn executed(&self) -> Vec<String> {
        self.executed.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Forgets which actions were executed.
    pub fn clear(&self) {
        if let Ok(mut v) = self.executed.lock() {
            v.clear();
        }
    }

    /// The text this executor outputs for an action (pure but for reading blobs).
    pub fn output_text(store: &Store, inputs: &KeyInputs, deps: &[(&str, String)]) -> String {
        let mut significant = inputs.clone();
        let sig = |d: &mut BlobDigest| *d = significant_digest(store, d);
        match &mut significant {
            KeyInputs::SourceFetch(_) | KeyInputs::RepoIndex(_) => {}
            KeyInputs::SrpmPack(i) => {
                sig(&mut i.spec);
                i.files.values_mut().for_each(sig);
                i.macro_files.values_mut().for_each(sig);
            }
            KeyInputs::RpmBuild(i) => {
                sig(&mut i.spec);
                i.macro_files.values_mut().for_each(sig);
                sig(&mut i.toolchain.fingerprint);
            }
            KeyInputs::Image(i) => {
                sig(&mut i.config);
                i.package_lists.values_mut().for_each(sig);
                sig(&mut i.tools);
            }
        }
        let mut text = serde_json::to_string(&significant).expect("inputs serialize");
        let mut deps = deps.to_vec();
        deps.sort();
        for (name, out) in deps {
            text.push('\n');
            text.push_str(name);
            text.push(' ');
            text.push_str(&out);
        }
        text
    }
}

/// The digest of a stored file's bytes without its comment lines; the digest itself when
/// the file is not in the store.
fn significant_digest(store: &Store, d: &BlobDigest) -> BlobDigest {
    match store.read_blob(d) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect();
            BlobDigest::of_bytes(kept.join("\n").as_bytes())
        }
        Err(_) => *d,
    }
}

impl Executor for TestExecutor {
    fn execute(&self, ctx: &ExecContext<'_>) -> Result<ExecOutcome, ExecError> {
        let name = &ctx.action.name;
        if let Some(d) = self.sleep.get(name) {
            let until = Instant::now() + *d;
            while Instant::now() < until {
                if ctx.cancel.is_cancelled() {
                    return Err(ExecError::Cancelled);
                }
                std::thread::sleep(Duration::from_millis(1).min(*d));
            }
        }
        if self.panic.contains(name) {
            panic!("test executor told to panic on {name}");
        }
        if self.fail.contains(name) {
            return Err(ExecError::Failed {
                message: format!("test executor told to fail {name}"),
            });
        }
        let deps: Vec<(&str, String)> = ctx
            .deps
            .iter()
            .map(|(n, r)| (*n, compute_output_digest(&r.outputs).to_hex()))
            .collect();
        let text = TestExecutor::output_text(ctx.store, &ctx.action.inputs, &deps);
        let blob = ctx.store.put_bytes(text.as_bytes())?;
        if let Ok(mut v) = self.executed.lock() {
            v.push(name.clone());
        }
        Ok(ExecOutcome {
            outputs: vec![ActionOutput {
                name: "out".into(),
                object: ObjectRef::Blob(blob),
            }],
            log: None,
        })
    }
}
