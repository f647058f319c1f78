//! `porthold run` and the signals it does not stop on: SIGUSR1, SIGUSR2 and
//! SIGWINCH reach the server, SIGPIPE, SIGALRM, … and the realtime signals are
//! ignored (porthold never dies of them), and SIGHUP means the terminal went
//! away: it stops the instance, unless `--on-hup forward`, or unless porthold
//! was started with SIGHUP ignored (`nohup`), which then stays ignored for
//! porthold and the server.

mod runner;
mod util;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use runner::{
    EXIT_BOUND, finish_within, read_file_eventually, signal, signal_set, spawn_run, wait_ready,
};
use util::TestEnv;

/// A server that logs the signals it traps to `log` and exits 42 on SIGTERM.
fn logging_server(log: &Path, traps: &[&str]) -> String {
    let mut script = String::new();
    for sig in traps {
        script.push_str(&format!("trap 'echo {sig} >> {0}' {sig}; ", log.display()));
    }
    script.push_str(&format!(
        "trap 'echo TERM >> {0}; exit 42' TERM; echo started >> {0}; while :; do sleep 0.02; done",
        log.display()
    ));
    script
}

/// Waits (bounded) until `log` has `count` lines equal to `line`; fails at once
/// when the launcher exits first.
fn wait_for_lines(log: &Path, line: &str, count: usize, launcher: &mut Child) {
    let deadline = Instant::now() + runner::HANG;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().filter(|l| *l == line).count() >= count {
            return;
        }
        if let Some(status) = launcher.try_wait().unwrap() {
            panic!("the launcher ended ({status}) before `{line}` x{count} was logged: {text:?}");
        }
        assert!(
            Instant::now() < deadline,
            "`{line}` x{count} never logged: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until no signal is pending for process `pid` any more: each
/// was delivered (handled, ignored, or fatal).
fn wait_delivered(pid: u32) {
    let deadline = Instant::now() + runner::HANG;
    while !signal_set(pid, "ShdPnd").is_empty() {
        assert!(Instant::now() < deadline, "signals stayed pending");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn server_pid(env: &TestEnv, name: &str, launcher: &mut Child) -> u32 {
    wait_ready(env, name, launcher)
        .record
        .child_pid
        .expect("child pid in the record")
}

#[test]
fn usr1_usr2_winch_reach_the_server_and_unhandled_signals_never_kill_porthold() {
    let env = TestEnv::new();
    let log = env.dir.path().join("signals.log");
    let script = logging_server(&log, &["USR1", "USR2", "WINCH"]);
    let mut launcher = spawn_run(
        &env,
        &["--ephemeral", "--name", "sigs", "--", "sh", "-c", &script],
    );
    let server = server_pid(&env, "sigs", &mut launcher);
    read_file_eventually(&log);
    for (sig, name) in [
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
        (libc::SIGWINCH, "WINCH"),
    ] {
        signal(launcher.id(), sig);
        wait_for_lines(&log, name, 1, &mut launcher);
    }
    let ignored = [
        libc::SIGPIPE,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGSTKFLT,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGRTMIN(),
        libc::SIGRTMIN() + 1,
        libc::SIGRTMAX(),
    ];
    for sig in ignored {
        signal(launcher.id(), sig);
        wait_delivered(launcher.id());
    }
    // The server starts with ordinary dispositions: nothing porthold ignores is
    // ignored in it.
    let server_ignores: Vec<i32> = signal_set(server, "SigIgn")
        .into_iter()
        .filter(|s| ignored.contains(s))
        .collect();
    assert_eq!(server_ignores, Vec::<i32>::new());
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish_within(launcher, EXIT_BOUND);
    // Some(42): porthold exited normally with the server's code; had one of the
    // signals above killed it, code() would be None.
    assert_eq!(code, Some(42), "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("USR") || *l == "WINCH")
            .count(),
        3,
        "each forwarded signal arrived once: {text:?}"
    );
}

#[test]
fn sighup_stops_the_instance_with_the_stop_signal_by_default() {
    let env = TestEnv::new();
    let log = env.dir.path().join("hup.log");
    let script = logging_server(&log, &["HUP"]);
    let mut launcher = spawn_run(
        &env,
        &["--ephemeral", "--name", "hup", "--", "sh", "-c", &script],
    );
    wait_ready(&env, "hup", &mut launcher);
    read_file_eventually(&log);
    signal(launcher.id(), libc::SIGHUP);
    let (code, _, err) = finish_within(launcher, EXIT_BOUND);
    assert_eq!(code, Some(42), "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("TERM"),
        "the server got the stop signal: {text:?}"
    );
    assert!(!text.contains("HUP"), "SIGHUP was not forwarded: {text:?}");
}

#[test]
fn sighup_before_ready_cancels_the_start_with_129() {
    let env = TestEnv::new();
    let launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "hupstart",
            "--ready",
            "cmd:false",
            "--",
            "sleep",
            "1000.7171",
        ],
    );
    // Once the server runs (its start is waiting for readiness; the launcher's
    // own command line carries the marker too)...
    let deadline = Instant::now() + runner::HANG;
    while runner::processes_with("1000.7171")
        .iter()
        .all(|&pid| pid == launcher.id())
    {
        assert!(Instant::now() < deadline, "the server never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(launcher.id(), libc::SIGHUP);
    let (code, _, err) = finish_within(launcher, EXIT_BOUND);
    assert_eq!(code, Some(129), "{err}");
    assert!(runner::processes_with("1000.7171").is_empty());
}

#[test]
fn with_on_hup_forward_sighup_reaches_the_server_which_keeps_serving() {
    let env = TestEnv::new();
    let log = env.dir.path().join("hupfwd.log");
    let script = logging_server(&log, &["HUP"]);
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "hupfwd",
            "--on-hup",
            "forward",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    wait_ready(&env, "hupfwd", &mut launcher);
    read_file_eventually(&log);
    signal(launcher.id(), libc::SIGHUP);
    wait_for_lines(&log, "HUP", 1, &mut launcher);
    signal(launcher.id(), libc::SIGHUP);
    wait_for_lines(&log, "HUP", 2, &mut launcher);
    let live = porthold::discovery::probe(&runner::runtime_dir(&env), "hupfwd")
        .expect("probe")
        .record
        .expect("record");
    assert_eq!(live.state, porthold::discovery::State::Ready);
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish_within(launcher, EXIT_BOUND);
    assert_eq!(code, Some(42), "{err}");
}

#[test]
fn an_inherited_ignored_sighup_stays_ignored_by_porthold_and_the_server() {
    let env = TestEnv::new();
    let log = env.dir.path().join("nohup.log");
    let script = logging_server(&log, &[]);
    let mut cmd = env.std_cmd();
    cmd.args([
        "run",
        "--ephemeral",
        "--name",
        "nohup",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    // SAFETY: signal(2) is async-signal-safe; this is what `nohup` does before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut launcher = cmd.spawn().expect("spawn porthold run");
    let server = server_pid(&env, "nohup", &mut launcher);
    read_file_eventually(&log);
    assert!(
        signal_set(launcher.id(), "SigIgn").contains(&libc::SIGHUP),
        "porthold no longer ignores SIGHUP"
    );
    assert!(
        signal_set(server, "SigIgn").contains(&libc::SIGHUP),
        "the server does not ignore SIGHUP"
    );
    signal(launcher.id(), libc::SIGHUP);
    wait_delivered(launcher.id());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .all(|l| l != "TERM"),
        "SIGHUP stopped the server"
    );
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish_within(launcher, EXIT_BOUND);
    assert_eq!(code, Some(42), "{err}");
}
