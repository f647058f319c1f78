//! `porthold completions SHELL` and `porthold man`: generated from the clap
//! definitions, so they never drift from the real command line.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::cli::Cli;
use crate::ctx::Ctx;

/// Arguments of `completions`.
#[derive(Debug, Args)]
#[command(
    after_help = "EXAMPLE:\n  porthold completions bash > ~/.local/share/bash-completion/completions/porthold"
)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

/// Arguments of `man`.
#[derive(Debug, Args)]
pub struct ManArgs {}

/// Runs `completions`.
pub fn run_completions(args: CompletionsArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    // Rendered into memory first: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "porthold", &mut script);
    crate::stdout::write_all(&script);
    Ok(ExitCode::SUCCESS)
}

/// Runs `man`: a roff page on stdout.
pub fn run_man(_args: ManArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let man = clap_mangen::Man::new(Cli::command());
    let mut out = Vec::new();
    man.render(&mut out).context("rendering the man page")?;
    crate::stdout::write_all(&out);
    Ok(ExitCode::SUCCESS)
}
