//! The `porthold` binary: parses the command line, runs one command, and turns
//! the outcome into an exit code in exactly one place ([`exit`]).
//!
//! The binary has its own C `main` instead of Rust's runtime start-up
//! (`no_main`), which, before `main` runs, reads and parses `/proc/self/maps`
//! and installs stack-overflow handlers with an alternate signal stack for
//! the main thread and every thread it starts: about 20 system calls and
//! 0.1 ms of every short command (docs/performance.md). [`startup`] keeps the
//! two parts of it a supervisor depends on: standard fds that are open, and
//! SIGPIPE ignored. A stack overflow still ends the process (SIGSEGV on the
//! guard page), only without Rust's message.

#![cfg_attr(not(test), no_main)]

mod cli;
mod cmd;
mod ctx;
mod exit;
mod output;
mod shell;
mod startup;
mod stdout;

use std::ffi::OsString;
use std::process::ExitCode;

/// The process's entry point (see the crate docs): std's start-up
/// essentials, the command, then `std::process::exit`, which flushes stdout
/// exactly as a return from a Rust `main` does.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    startup::init();
    std::process::exit(startup::status_of(run()))
}

/// The same program in a unit-test build, where the test harness owns the
/// entry point (and std's start-up runs).
#[cfg(test)]
fn main() -> ExitCode {
    startup::init();
    run()
}

fn run() -> ExitCode {
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
