//! The `porthold` binary: parses the command line, runs one command, and turns
//! the outcome into an exit code in exactly one place ([`exit`]).

mod cli;
mod cmd;
mod ctx;
mod exit;
mod output;
mod shell;
mod stdout;

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let (cli, command) = match cli::parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => return exit::report_usage(&e, json_requested(&args)),
    };
    let ctx = match ctx::Ctx::new(&cli.global) {
        Ok(ctx) => ctx,
        Err(e) => return exit::report(&e, cli.global.json, cli.global.color, &command),
    };
    let started = std::time::Instant::now();
    let outcome = cmd::run(cli.command, &ctx);
    ctx.explain(format!(
        "`{command}` took {} µs (registry transactions included)",
        started.elapsed().as_micros()
    ));
    match outcome {
        Ok(code) => code,
        Err(e) => exit::report(&e, ctx.json, ctx.color, &command),
    }
}

/// Whether `--json` appears before `--` (after which the words belong to the
/// server's command line): then even a parse error is the JSON error object.
fn json_requested(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| a.as_os_str() != "--")
        .any(|a| a.as_os_str() == "--json")
}
