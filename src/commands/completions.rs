//! `keel completions SHELL` and `keel man`: shell completions and the manual page, both
//! generated from the command line's definition ([`crate::cli`]) so they list exactly the
//! commands and options keel parses. `make install` writes them where shells and `man`
//! look.

use std::io::Write as _;

use crate::exit_codes;

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete keel's commands and options in
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells keel writes completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(args: &CompletionsArgs) -> anyhow::Result<i32> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut crate::cli(), "keel", &mut script);
    write_stdout(&script)
}

pub fn man() -> anyhow::Result<i32> {
    let mut page = Vec::new();
    clap_mangen::Man::new(crate::cli()).render(&mut page)?;
    write_stdout(&page)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(exit_codes::SUCCESS)
}
