//! Running the external image tools (`rpm`, `mkfs.ext4`, `qemu-img`, …).

use std::path::Path;
use std::process::Command;

use crate::Error;

/// Runs `cmd`, failing with its status and output tail when it does not succeed.
pub(crate) fn run(cmd: &mut Command, program: &str, artifact: &Path) -> Result<(), Error> {
    let out = cmd.output().map_err(|e| Error::Tool {
        program: program.to_owned(),
        artifact: artifact.to_owned(),
        message: format!("cannot start it ({e}); is it installed?"),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(Error::Tool {
        program: program.to_owned(),
        artifact: artifact.to_owned(),
        message: format!("{}: {}", out.status, tail.join("\n")),
    })
}

/// Runs `cmd` and returns its stdout.
#[cfg(test)]
pub(crate) fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
