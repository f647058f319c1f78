//! `porthold run --ready notify`: the notify socket lives as long as the
//! instance, so `STATUS=`, `WATCHDOG=1`, `STOPPING=1` sent after `READY=1` are
//! accepted (the latest `STATUS=` shows in the record, hence in `ps --json`);
//! the socket file is gone when the instance ends, and one left by a killed
//! launcher is replaced by the next instance of the name, never piled up.

mod runner;
mod util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use porthold::activation::receive;
use runner::{EXIT_BOUND, finish_within, runtime_dir, signal, spawn_run, wait_ready};
use util::TestEnv;

const ROLE: &str = "PORTHOLD_TEST_ROLE";

/// Entry point of the server role; a no-op in a normal test run.
#[test]
fn role_entry() {
    if std::env::var(ROLE).as_deref() != Ok("late_notifier") {
        return;
    }
    std::process::exit(late_notifier());
}

/// Waits (bounded) for `path` to exist.
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + runner::HANG;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The server: `READY=1` with a first status, then, each time the test creates
/// `go-N` in PORTHOLD_TEST_DIR, sends the N-th later message and writes the
/// outcome (`ok` or the error) to `sent-N`; exits when `end` appears.
fn late_notifier() -> i32 {
    let dir = PathBuf::from(std::env::var_os("PORTHOLD_TEST_DIR").unwrap_or_default());
    if let Err(e) = receive::notify("READY=1\nSTATUS=warming up") {
        eprintln!("READY=1: {e}");
        return 20;
    }
    let later = [
        "STATUS=serving 1",
        "WATCHDOG=1\nSTATUS=serving 2",
        "STOPPING=1",
    ];
    for (n, message) in later.iter().enumerate() {
        wait_for_file(&dir.join(format!("go-{n}")));
        let outcome = match receive::notify(message) {
            Ok(true) => "ok".to_string(),
            Ok(false) => "no NOTIFY_SOCKET".to_string(),
            Err(e) => e.to_string(),
        };
        let _ = std::fs::write(dir.join(format!("sent-{n}")), outcome);
    }
    wait_for_file(&dir.join("end"));
    0
}

fn role_command(dir: &Path) -> Vec<String> {
    let exe = std::env::current_exe().expect("current_exe");
    vec![
        "env".into(),
        format!("{ROLE}=late_notifier"),
        format!("PORTHOLD_TEST_DIR={}", dir.display()),
        exe.display().to_string(),
        "role_entry".into(),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
        "-q".into(),
    ]
}

fn record(env: &TestEnv, name: &str) -> porthold::discovery::Record {
    porthold::discovery::probe(&runtime_dir(env), name)
        .expect("probe")
        .record
        .expect("a record")
}

/// Waits (bounded) until the record satisfies `check`.
fn wait_record(
    env: &TestEnv,
    name: &str,
    what: &str,
    check: impl Fn(&porthold::discovery::Record) -> bool,
) {
    let deadline = Instant::now() + runner::HANG;
    loop {
        let r = record(env, name);
        if check(&r) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the record never showed {what}: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Notify socket files (of any naming) in the runtime dir.
fn notify_files(env: &TestEnv) -> Vec<String> {
    std::fs::read_dir(runtime_dir(env))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("notify"))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends the N-th later message and returns what the sender saw.
fn send_later(dir: &Path, n: usize) -> String {
    std::fs::write(dir.join(format!("go-{n}")), "").unwrap();
    let sent = dir.join(format!("sent-{n}"));
    wait_for_file(&sent);
    // The role writes the file in one call; an empty read means "not yet".
    let deadline = Instant::now() + runner::HANG;
    loop {
        let text = std::fs::read_to_string(&sent).unwrap_or_default();
        if !text.is_empty() {
            return text;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn status_watchdog_and_stopping_after_ready_are_accepted_and_status_shows_in_ps_json() {
    let env = TestEnv::new();
    let dir = env.dir.path().join("late");
    std::fs::create_dir_all(&dir).unwrap();
    let command = role_command(&dir);
    let mut args = vec!["--ephemeral", "--name", "late", "--ready", "notify", "--"];
    args.extend(command.iter().map(String::as_str));
    let mut launcher = spawn_run(&env, &args);
    let live = wait_ready(&env, "late", &mut launcher);
    assert_eq!(live.record.status.as_deref(), Some("warming up"));
    assert_eq!(notify_files(&env), vec!["late.notify".to_string()]);

    assert_eq!(send_later(&dir, 0), "ok", "STATUS= after READY=1");
    wait_record(&env, "late", "status `serving 1`", |r| {
        r.status.as_deref() == Some("serving 1")
    });
    assert_eq!(send_later(&dir, 1), "ok", "WATCHDOG=1 after READY=1");
    wait_record(&env, "late", "status `serving 2`", |r| {
        r.status.as_deref() == Some("serving 2")
    });
    let out = env.cmd().args(["--json", "ps"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ps --json");
    let instances = json["instances"].as_array().cloned().unwrap_or_default();
    assert_eq!(instances.len(), 1, "{json}");
    assert_eq!(instances[0]["status"], "serving 2", "{json}");
    assert_eq!(send_later(&dir, 2), "ok", "STOPPING=1 after READY=1");
    wait_record(&env, "late", "state stopping", |r| {
        r.state == porthold::discovery::State::Stopping
    });

    std::fs::write(dir.join("end"), "").unwrap();
    let (code, _, err) = finish_within(launcher, EXIT_BOUND);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(notify_files(&env), Vec::<String>::new(), "socket file left");
}

#[test]
fn a_killed_launchers_notify_socket_is_replaced_by_the_next_instance_of_the_name() {
    let env = TestEnv::new();
    for round in 0..3 {
        let dir = env.dir.path().join(format!("round{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        let command = role_command(&dir);
        let mut args = vec![
            "--ephemeral",
            "--name",
            "phoenix",
            "--ready",
            "notify",
            "--",
        ];
        args.extend(command.iter().map(String::as_str));
        let mut launcher = spawn_run(&env, &args);
        wait_ready(&env, "phoenix", &mut launcher);
        assert_eq!(
            notify_files(&env),
            vec!["phoenix.notify".to_string()],
            "round {round}"
        );
        signal(launcher.id(), libc::SIGKILL);
        launcher.wait().unwrap();
        // Let the orphaned server go (it got SIGTERM from its parent-death signal;
        // `end` covers a server that outlived it).
        std::fs::write(dir.join("end"), "").unwrap();
    }
    assert_eq!(notify_files(&env), vec!["phoenix.notify".to_string()]);
}
