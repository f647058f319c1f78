//! `activation::receive::listeners()` takes the inherited sockets only when
//! LISTEN_PID is our own pid, sets close-on-exec on what it takes, leaves the
//! environment alone, takes them only once per process, and rejects a broken
//! environment without taking anything.
//!
//! The child (this binary in role `listeners_check`) is started through `sh` or
//! `python3`, which open fd 3 without close-on-exec, set LISTEN_PID to their own
//! pid (`$$`, `os.getpid()`) and then `exec` the child in the same process.

mod activation_support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use activation_support::{ROLE, parse_report, role_argv, run_role_if_requested, which};

/// Entry point of the child roles; a no-op in a normal test run.
#[test]
fn role_entry() {
    run_role_if_requested();
}

/// Runs the `listeners_check` role through `sh -c SCRIPT`, with `env` set.
fn check_via_sh(script: &str, env: &[(&str, &str)]) -> BTreeMap<String, String> {
    let (argv, _) = role_argv("listeners_check");
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("{script}\nexec \"$0\" \"$@\""))
        .args(&argv);
    run(c, env)
}

fn run(mut c: Command, env: &[(&str, &str)]) -> BTreeMap<String, String> {
    c.env(ROLE, "listeners_check")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("running the child");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "child failed: {}: {text}", out.status);
    let report = parse_report(&text);
    assert!(report.contains_key("CLOEXEC_AFTER"), "no report: {text}");
    report
}

/// The value of `key` in the report, or a panic showing the whole report.
fn get<'a>(r: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    r.get(key)
        .unwrap_or_else(|| panic!("no {key} in the report: {r:#?}"))
}

const PYTHON_LAUNCHER: &str = "\
import os, socket, sys
s = socket.socket()
s.bind(('127.0.0.1', 0))
s.listen()
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ['LISTEN_PID'] = str(os.getpid())
os.environ['LISTEN_FDS'] = '1'
os.environ['LISTEN_FDNAMES'] = 'web'
os.execv(sys.argv[1], sys.argv[1:])
";

#[test]
fn a_passed_socket_is_taken_once_with_cloexec_and_the_env_is_left_alone() {
    let Some(python) = which("python3") else {
        porthold::test_hooks::skip("python3 is not installed");
        return;
    };
    let (argv, _) = role_argv("listeners_check");
    let mut c = Command::new(python);
    c.arg("-c").arg(PYTHON_LAUNCHER).args(&argv);
    let r = run(c, &[]);
    assert_eq!(get(&r, "FIRST"), "1", "{r:#?}");
    assert_eq!(get(&r, "NAMES"), "3:web", "{r:#?}");
    assert_eq!(get(&r, "CLOEXEC_BEFORE"), "false", "{r:#?}");
    assert_eq!(get(&r, "CLOEXEC_AFTER"), "true", "{r:#?}");
    assert_eq!(get(&r, "SECOND"), "0", "{r:#?}");
    assert_eq!(get(&r, "ENV_UNCHANGED"), "true", "{r:#?}");
    assert_eq!(get(&r, "AS_TCP"), "ok", "{r:#?}");
}

#[test]
fn listen_pid_of_another_process_leaves_fd_3_alone() {
    let r = check_via_sh(
        "exec 3</dev/null",
        &[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")],
    );
    assert_eq!(get(&r, "FIRST"), "0", "{r:#?}");
    assert_eq!(
        get(&r, "CLOEXEC_AFTER"),
        "false",
        "fd 3 was touched: {r:#?}"
    );
}

#[test]
fn without_listen_pid_nothing_is_taken() {
    let r = check_via_sh("exec 3</dev/null", &[("LISTEN_FDS", "1")]);
    assert_eq!(get(&r, "FIRST"), "0", "{r:#?}");
    assert_eq!(
        get(&r, "CLOEXEC_AFTER"),
        "false",
        "fd 3 was touched: {r:#?}"
    );
}

#[test]
fn malformed_listen_fds_is_an_error() {
    let r = check_via_sh(
        "exec 3</dev/null\nexport LISTEN_PID=$$",
        &[("LISTEN_FDS", "three")],
    );
    assert!(
        get(&r, "FIRST_ERROR").contains("LISTEN_FDS=`three`"),
        "{r:#?}"
    );
    assert_eq!(get(&r, "CLOEXEC_AFTER"), "false", "{r:#?}");
}

#[test]
fn an_announced_fd_that_is_not_open_is_an_error_and_nothing_is_taken() {
    let r = check_via_sh(
        "exec 3</dev/null\nexec 4<&-\nexport LISTEN_PID=$$",
        &[("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "a:b")],
    );
    assert!(get(&r, "FIRST_ERROR").contains("fd 4"), "{r:#?}");
    assert_eq!(get(&r, "CLOEXEC_AFTER"), "false", "fd 3 was taken: {r:#?}");
}

#[test]
fn fdnames_must_match_the_fd_count() {
    let r = check_via_sh(
        "exec 3</dev/null\nexport LISTEN_PID=$$",
        &[("LISTEN_FDS", "1"), ("LISTEN_FDNAMES", "a:b")],
    );
    assert!(get(&r, "FIRST_ERROR").contains("LISTEN_FDNAMES"), "{r:#?}");
}

#[test]
fn a_taken_fd_that_is_not_a_socket_is_refused_as_tcp_listener() {
    let r = check_via_sh(
        "exec 3</dev/null\nexport LISTEN_PID=$$",
        &[("LISTEN_FDS", "1")],
    );
    assert_eq!(get(&r, "FIRST"), "1", "{r:#?}");
    assert_eq!(get(&r, "NAMES"), "3:-", "{r:#?}");
    assert!(get(&r, "AS_TCP_ERROR").contains("not a socket"), "{r:#?}");
}
