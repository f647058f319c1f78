//! The `porthold` binary: parses the command line, runs one command, and turns
//! the outcome into an exit code in exactly one place ([`exit`]).

mod cli;
mod cmd;
mod ctx;
mod exit;
mod output;
mod shell;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; usage errors are exit 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let ctx = match ctx::Ctx::new(&cli.global) {
        Ok(ctx) => ctx,
        Err(e) => return exit::report(&e, cli.global.json, cli.global.color),
    };
    match cmd::run(cli.command, &ctx) {
        Ok(code) => code,
        Err(e) => exit::report(&e, ctx.json, ctx.color),
    }
}
