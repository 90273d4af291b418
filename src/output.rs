//! The one output layer: results on stdout, everything for humans on stderr.
//!
//! Query results (digests, stats, reports) go to stdout, as text or, with `--json`, as
//! JSON. Status lines, warnings and errors go to stderr, through here or through
//! `tracing` (filtered by `KEEL_LOG`, e.g. `KEEL_LOG=keel_store=debug`).

use std::io::{self, IsTerminal as _, Write};

use tracing_subscriber::EnvFilter;

/// Sets up `tracing` on stderr, filtered by `KEEL_LOG` (default: warnings and errors).
pub fn init_logging() {
    let filter = EnvFilter::try_from_env("KEEL_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(colour_on_stderr())
        .with_target(true)
        .without_time()
        .try_init();
}

/// Whether what goes to stderr may carry colour: only to a terminal, and not when
/// `NO_COLOR` is set to anything but the empty string (<https://no-color.org>). A log
/// redirected to a file or read through a pipe stays plain text.
pub fn colour_on_stderr() -> bool {
    wants_colour(
        io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

fn wants_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
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

/// At most `max` items of a list, joined with ", ", the rest counted: "a, b, c and 147
/// more". A summary stays one readable line at 3,000 packages.
pub fn short_list<T: AsRef<str>>(items: &[T], max: usize) -> String {
    let max = max.max(1);
    let shown: Vec<&str> = items.iter().take(max).map(AsRef::as_ref).collect();
    let mut s = shown.join(", ");
    if items.len() > max {
        s.push_str(&format!(" and {} more", items.len() - max));
    }
    s
}

/// A chain (`a -> b -> c`) of at most `max` links: its first ones and its last, the
/// middle counted ("a -> b -> ... 40 more ... -> z").
pub fn short_chain<T: AsRef<str>>(items: &[T], max: usize) -> String {
    let max = max.max(2);
    let all: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    if all.len() <= max {
        return all.join(" -> ");
    }
    let head = &all[..max - 1];
    let hidden = all.len() - max;
    format!(
        "{} -> ... {hidden} more ... -> {}",
        head.join(" -> "),
        all[all.len() - 1]
    )
}

/// Prints the help of the subcommand at `path` (`&["spec"]`) on stdout, as
/// `keel help SUBCOMMAND` does: styled on a terminal, plain text otherwise.
pub fn print_help(path: &[&str]) -> io::Result<()> {
    let mut cmd = crate::cli();
    cmd.build();
    let mut sub = &mut cmd;
    for name in path {
        sub = sub
            .find_subcommand_mut(name)
            .expect("print_help is called with keel's own subcommands");
    }
    let help = sub.render_help();
    let styled = wants_colour(
        io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let text = if styled {
        help.ansi().to_string()
    } else {
        help.to_string()
    };
    io::stdout().write_all(text.as_bytes())
}

/// A line on stderr, whatever happens to it.
pub fn error_line(s: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(s.as_bytes());
    let _ = err.write_all(b"\n");
}

#[cfg(test)]
mod tests {
    use super::{short_chain, short_list, wants_colour};
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(wants_colour(true, None));
        assert!(wants_colour(true, Some(OsStr::new(""))));
        assert!(!wants_colour(true, Some(OsStr::new("1"))));
        assert!(!wants_colour(false, None));
        assert!(!wants_colour(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn long_lists_and_chains_are_counted_not_printed() {
        let names: Vec<String> = (0..150).map(|i| format!("srpm:p{i}")).collect();
        assert_eq!(
            short_list(&names, 3),
            "srpm:p0, srpm:p1, srpm:p2 and 147 more"
        );
        assert_eq!(short_list(&names[..2], 3), "srpm:p0, srpm:p1");
        assert_eq!(short_list::<&str>(&[], 3), "");
        assert_eq!(
            short_chain(&names, 4),
            "srpm:p0 -> srpm:p1 -> srpm:p2 -> ... 146 more ... -> srpm:p149"
        );
        assert_eq!(
            short_chain(&names[..4], 4),
            "srpm:p0 -> srpm:p1 -> srpm:p2 -> srpm:p3"
        );
    }
}
