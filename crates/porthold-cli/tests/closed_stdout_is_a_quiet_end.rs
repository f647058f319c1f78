//! A reader that closed its end of the pipe (`porthold list | true`,
//! `porthold completions fish | head -c 10`) ends porthold quietly with status
//! 0: no panic, no exit 101, nothing on stderr.

mod util;

use std::os::fd::OwnedFd;
use std::process::Stdio;

use util::TestEnv;

/// Runs porthold with stdout a pipe whose read end is already closed.
fn run_into_closed_pipe(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let (read, write): (OwnedFd, OwnedFd) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    drop(read);
    env.std_cmd()
        .args(args)
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn commands_writing_to_a_closed_pipe_exit_zero_without_a_panic() {
    let env = TestEnv::new();
    env.cmd()
        .args(["reserve", "--skip-occupancy-check"])
        .output()
        .unwrap();
    for args in [
        &["list"][..],
        &["completions", "fish"][..],
        &["man"][..],
        &["list-projects"][..],
        &["exclude"][..],
        &["--json", "list"][..],
    ] {
        let output = run_into_closed_pipe(&env, args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
