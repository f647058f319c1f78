//! `PORTHOLD_REQUIRE_ALL=1` (set by `.ci/run`) turns a test's "skipped" into a
//! failure, so CI can never be green with a test skipped for a missing
//! program or privilege.

use std::process::Command;

const ROLE: &str = "PORTHOLD_TEST_SKIP_ROLE";

/// Runs in a child process of the test binary: calls `skip` and reports.
#[test]
fn skip_child() {
    if std::env::var_os(ROLE).is_none() {
        return;
    }
    porthold::test_hooks::skip("the program under test is missing");
    println!("returned after skip");
}

fn run_child(require_all: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "skip_child", "--nocapture", "--test-threads=1"])
        .env(ROLE, "1")
        .env_remove("PORTHOLD_REQUIRE_ALL");
    if let Some(value) = require_all {
        cmd.env("PORTHOLD_REQUIRE_ALL", value);
    }
    cmd.output().unwrap()
}

#[test]
fn a_skip_is_a_printed_reason_without_require_all() {
    let output = run_child(None);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("skipped: the program under test is missing"),
        "{stderr}"
    );
    assert!(stdout.contains("returned after skip"), "{stdout}");
}

#[test]
fn a_skip_fails_the_test_under_require_all() {
    let output = run_child(Some("1"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}")
            .contains("PORTHOLD_REQUIRE_ALL=1 but this test would be skipped"),
        "{stdout}{stderr}"
    );
    assert!(!stdout.contains("returned after skip"), "{stdout}");
}
