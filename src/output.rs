//! The one output layer: results on stdout, everything for humans on stderr.
//!
//! Query results (digests, stats, reports) go to stdout, as text or, with `--json`, as
//! JSON. Status lines, warnings and errors go to stderr, through here or through
//! `tracing` (filtered by `KEEL_LOG`, e.g. `KEEL_LOG=keel_store=debug`).

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;

/// Sets up `tracing` on stderr, filtered by `KEEL_LOG` (default: warnings and errors).
pub fn init_logging() {
    let filter = EnvFilter::try_from_env("KEEL_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_target(true)
        .without_time()
        .try_init();
}

/// Where a command's results go.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    /// A line of results on stdout. Errors (a closed pipe among them) are returned so the
    /// caller stops; `exit_codes` turns a broken pipe into success.
    pub fn line(&self, s: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(s.as_bytes())?;
        out.write_all(b"\n")
    }

    /// A JSON value on stdout, on one line.
    pub fn json_value(&self, v: &impl serde::Serialize) -> anyhow::Result<()> {
        let s = serde_json::to_string(v)?;
        self.line(&s)?;
        Ok(())
    }

    /// A status line for humans on stderr (suppressed by `--quiet`).
    pub fn status(&self, s: &str) {
        if !self.quiet {
            error_line(s);
        }
    }
}

/// A line on stderr, whatever happens to it.
pub fn error_line(s: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(s.as_bytes());
    let _ = err.write_all(b"\n");
}
