//! Documented exit codes (also listed in the README).
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (also when stdout was closed early: a broken pipe is not an error) |
//! | 1 | an error: the message on stderr names the file, package, digest or URL |
//! | 2 | the command line was not understood |
//! | 3 | `keel store verify` found damaged objects (they were quarantined) |

use std::io;

pub const SUCCESS: i32 = 0;
pub const ERROR: i32 = 1;
/// clap exits with 2 on usage errors by itself; listed for completeness.
#[expect(dead_code, reason = "documents clap's own exit code")]
pub const USAGE: i32 = 2;
pub const DAMAGED: i32 = 3;

/// Prints an error chain the way users read it and returns the exit code to use.
pub fn report(err: &anyhow::Error) -> i32 {
    if is_broken_pipe(err) {
        return SUCCESS;
    }
    let mut msg = format!("error: {err}");
    for cause in err.chain().skip(1) {
        msg.push_str(&format!("\n  caused by: {cause}"));
    }
    crate::output::error_line(&msg);
    ERROR
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
