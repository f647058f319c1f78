//! A start cancelled by a signal at any step of `porthold run` ends with exit
//! 128+signal, never shows `ready`, and leaves no process behind (PRODUCT.md
//! P3). Test-only pause points hold the start at each boundary of the
//! lifecycle while the test sends SIGTERM; the library test
//! `cancelled_start_never_runs.rs` races the same boundaries 1,000 times
//! in-process.

mod runner;
mod util;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use runner::{processes_with, signal};
use util::TestEnv;

const BOUNDARIES: [&str; 4] = [
    "BeforeBind",
    "BeforeSpawn",
    "BeforeReadyWait",
    "BeforeRunning",
];

#[test]
fn sigterm_at_every_boundary_of_the_start_exits_143_and_never_reports_ready() {
    let env = TestEnv::new();
    for round in 0..10 {
        for boundary in BOUNDARIES {
            let name = format!("cancel-{boundary}-{round}");
            let marker = format!("1000.{round}{}", boundary.len());
            let mut launcher = env
                .std_cmd()
                .env("PORTHOLD_TEST_PAUSE", format!("run.{boundary}:600"))
                .args([
                    "run",
                    "--ephemeral",
                    "--name",
                    &name,
                    "--",
                    "sleep",
                    &marker,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stderr = BufReader::new(launcher.stderr.take().unwrap());
            let mut seen = String::new();
            loop {
                let mut line = String::new();
                assert!(
                    stderr.read_line(&mut line).unwrap() > 0,
                    "no pause at {boundary}: {seen}"
                );
                seen.push_str(&line);
                if line.contains(&format!("paused at run.{boundary}")) {
                    break;
                }
            }
            signal(launcher.id(), libc::SIGTERM);
            let mut rest = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
            let status = launcher.wait().unwrap();
            seen.push_str(&rest);
            assert_eq!(status.code(), Some(143), "{boundary}: {seen}");
            assert!(
                !seen.contains("ready on"),
                "{boundary}: reported ready: {seen}"
            );
            assert!(
                processes_with(&marker).is_empty(),
                "{boundary}: the server survived"
            );
            let out = env.cmd().args(["url", "--name", &name]).output().unwrap();
            assert_eq!(out.status.code(), Some(1), "{boundary}: still published");
        }
    }
}
