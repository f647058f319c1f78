//! `run --restart`: a server that exits by itself is started again on the same
//! sockets (same address, generation n+1), with growing delays; ten exits in
//! a row end the instance with the last exit code and say why; a clean exit
//! under `on-failure` ends the instance as without `--restart`.

mod runner;
mod util;

use std::time::{Duration, Instant};

use runner::{finish, finish_within, runtime_dir, signal, spawn_run, wait_ready};
use util::TestEnv;

#[test]
fn a_crashing_server_is_restarted_on_the_same_socket() {
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "crashy",
            "--restart",
            "on-failure",
            "--ready",
            "delay:1ms",
            "--",
            "sh",
            "-c",
            "sleep 0.2; exit 1",
        ],
    );
    let first = wait_ready(&env, "crashy", &mut launcher).record;
    let deadline = Instant::now() + runner::HANG;
    let later = loop {
        let record = porthold::discovery::probe(&runtime_dir(&env), "crashy")
            .unwrap()
            .record
            .expect("the instance lives on while its server restarts");
        if record.generation >= 3 && record.state == porthold::discovery::State::Ready {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "never restarted twice: {record:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        later.listeners, first.listeners,
        "the sockets stayed the same"
    );
    assert_eq!(later.instance_id, first.instance_id);
    assert_ne!(later.child_pid, first.child_pid);
    // Each restart is remembered, with its time to ready.
    let restarts: Vec<_> = later
        .events
        .iter()
        .filter(|e| {
            e.cause == porthold::discovery::GenerationCause::Restart
                && e.outcome == porthold::discovery::EventOutcome::Committed
        })
        .collect();
    assert!(restarts.len() >= 2, "{:?}", later.events);
    assert!(restarts.iter().all(|e| e.ready_ms.is_some()));
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish(launcher);
    assert!(matches!(code, Some(1) | Some(143)), "{code:?} {err}");
    assert!(err.contains("starting it again"), "{err}");
}

#[test]
fn ten_exits_in_a_row_end_the_instance_with_the_last_code() {
    let env = TestEnv::new();
    let launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "hopeless",
            "--restart",
            "always",
            "--ready",
            "delay:1ms",
            "--",
            "sh",
            "-c",
            // Ready first (delay:1ms), then the exit: a server that never
            // gets ready fails its start (exit 8), restarts or not.
            "sleep 0.05; exit 3",
        ],
    );
    // 100ms, then 1.5x longer each time: about 11.3 s for ten restarts.
    let (code, _, err) = finish_within(launcher, Duration::from_secs(90));
    assert_eq!(code, Some(3), "{err}");
    assert_eq!(err.matches("starting it again").count(), 10, "{err}");
    assert!(err.contains("giving up"), "{err}");
}

#[test]
fn a_clean_exit_under_on_failure_ends_the_instance() {
    let env = TestEnv::new();
    let launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "clean",
            "--restart",
            "on-failure",
            "--",
            "sh",
            "-c",
            "exit 0",
        ],
    );
    let (code, _, err) = finish(launcher);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("starting it again"), "{err}");
}
