//! One module per command. Each takes the [`Context`] and returns an exit code.

pub mod build;
pub mod cache;
pub mod completions;
pub mod explain;
pub mod graph;
pub mod image;
pub mod query;
pub mod run;
pub mod sources;
pub mod spec;
pub mod store;

use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::{self, Tree};
use crate::output::Output;

/// What every command may need: the output layer, the tree, and the store's location.
#[derive(Debug)]
pub struct Context {
    pub out: Output,
    pub tree: Option<Tree>,
    store_flag: Option<PathBuf>,
    jobs: Option<usize>,
}

impl Context {
    pub fn new(g: &crate::GlobalArgs) -> anyhow::Result<Context> {
        let tree = Tree::find(g.tree.as_deref())?;
        Ok(Context {
            out: Output {
                json: g.json,
                quiet: g.quiet,
            },
            tree,
            store_flag: g.store.clone(),
            jobs: g.jobs,
        })
    }

    /// How many actions to run at once: `-j`, else the number of CPUs.
    pub fn jobs(&self) -> usize {
        self.jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// The store's directory (not opened).
    pub fn store_dir(&self) -> anyhow::Result<PathBuf> {
        config::store_dir(self.store_flag.as_deref(), self.tree.as_ref())
    }

    /// Opens the store, telling the user when another keel holds it and this one waits.
    pub fn open_store(&self) -> anyhow::Result<keel_store::Store> {
        let dir = self.store_dir()?;
        let out = self.out;
        let opts = keel_store::StoreOptions {
            no_wait: false,
            on_blocked: Some(Box::new(move |path, holder| {
                let who = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (held by {holder})")
                };
                out.status(&format!(
                    "    Blocking waiting for file lock on store {}{who}",
                    path.display()
                ));
            })),
        };
        keel_store::Store::open_with(&dir, opts)
            .with_context(|| format!("failed to open the store at {}", dir.display()))
    }

    /// The store for a command that only reads the tree (`graph`, `query`, `sources`):
    /// its spec and `%(shell)` caches make the answer fast and the same as a build's (a
    /// `%(shell)` whose output changes gives the value the build used). Never created and
    /// never waited for: without one, or while a build holds it, the tree is read afresh.
    pub fn store_for_reading(&self) -> anyhow::Result<Option<keel_store::Store>> {
        let dir = self.store_dir()?;
        if !keel_store::Store::exists(&dir) {
            return Ok(None);
        }
        let opts = keel_store::StoreOptions {
            no_wait: true,
            on_blocked: None,
        };
        match keel_store::Store::open_with(&dir, opts) {
            Ok(s) => Ok(Some(s)),
            Err(keel_store::StoreError::Busy { path, holder }) => {
                self.out.status(&format!(
                    "note: the store at {} is in use ({holder}); reading the tree without its caches",
                    path.display()
                ));
                Ok(None)
            }
            Err(e) => {
                Err(e).with_context(|| format!("failed to open the store at {}", dir.display()))
            }
        }
    }
}
