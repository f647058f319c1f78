//! `porthold run`: the child's exit code passes through, signals reach the
//! child exactly once, and nothing of the instance's process tree survives it.

mod runner;
mod util;

use std::time::Duration;

use runner::{
    finish, processes_with, read_file_eventually, signal, signal_group, spawn_run, wait_ready,
};
use util::TestEnv;

#[test]
fn the_childs_exit_code_passes_through_every_time() {
    let env = TestEnv::new();
    for _ in 0..20 {
        let out = env
            .cmd()
            .args(["run", "--ephemeral", "--", "sh", "-c", "exit 7"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(7),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = env
        .cmd()
        .args(["run", "--ephemeral", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn sigterm_to_porthold_reaches_a_child_that_traps_it_and_its_code_passes_through() {
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "trapper",
            "--",
            "sh",
            "-c",
            "trap 'exit 42' TERM; while :; do sleep 0.05; done",
        ],
    );
    wait_ready(&env, "trapper", &mut launcher);
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish(launcher);
    assert_eq!(code, Some(42), "{err}");
}

#[test]
fn a_child_killed_by_sigterm_makes_porthold_exit_143_without_dying_itself() {
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &["--ephemeral", "--name", "plain", "--", "sleep", "1000"],
    );
    wait_ready(&env, "plain", &mut launcher);
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish(launcher);
    // code() is Some only for a normal exit: porthold exited, it was not killed.
    assert_eq!(code, Some(143), "{err}");
}

#[test]
fn ctrl_c_to_the_foreground_process_group_reaches_the_child_exactly_once() {
    let env = TestEnv::new();
    let count = env.dir.path().join("ints");
    let script = format!(
        "trap 'echo INT >> {0}' INT; echo started >> {0}; while :; do sleep 0.05; done",
        count.display()
    );
    for round in 0..5 {
        let _ = std::fs::remove_file(&count);
        let name = format!("ctrlc{round}");
        let mut launcher = spawn_run(
            &env,
            &["--ephemeral", "--name", &name, "--", "sh", "-c", &script],
        );
        wait_ready(&env, &name, &mut launcher);
        read_file_eventually(&count);
        // As a terminal does on Ctrl-C: SIGINT to every process of porthold's group.
        signal_group(launcher.id(), libc::SIGINT);
        std::thread::sleep(Duration::from_millis(500));
        signal(launcher.id(), libc::SIGTERM);
        let (code, _, err) = finish(launcher);
        assert_eq!(code, Some(143), "{err}");
        let text = std::fs::read_to_string(&count).unwrap();
        assert_eq!(text.matches("INT").count(), 1, "round {round}: {text:?}");
    }
}

#[test]
fn after_stop_no_process_of_the_instance_tree_remains() {
    let env = TestEnv::new();
    // Unique durations mark this test's processes in /proc.
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "tree",
            "--",
            "sh",
            "-c",
            "sleep 1000.4242 & exec sleep 999.4242",
        ],
    );
    wait_ready(&env, "tree", &mut launcher);
    let deadline = std::time::Instant::now() + runner::HANG;
    while processes_with("1000.4242").is_empty() || processes_with("999.4242").is_empty() {
        assert!(std::time::Instant::now() < deadline, "tree never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = env.cmd().args(["stop", "--name", "tree"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = finish(launcher);
    assert_eq!(
        processes_with("1000.4242"),
        Vec::<u32>::new(),
        "background sleep survived"
    );
    assert_eq!(
        processes_with("999.4242"),
        Vec::<u32>::new(),
        "server survived"
    );
}

#[test]
fn after_sigkill_of_the_launcher_url_exits_1_on_its_first_call_and_the_child_is_terminated() {
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "doomed",
            "--",
            "sleep",
            "1000.4343",
        ],
    );
    wait_ready(&env, "doomed", &mut launcher);
    signal(launcher.id(), libc::SIGKILL);
    launcher.wait().unwrap();
    let out = env
        .cmd()
        .args(["url", "--name", "doomed"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The parent-death signal took the server down too.
    let deadline = std::time::Instant::now() + runner::HANG;
    while !processes_with("1000.4343").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphaned server kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_sigstopped_launcher_still_counts_as_alive() {
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &["--ephemeral", "--name", "paused", "--", "sleep", "1000"],
    );
    wait_ready(&env, "paused", &mut launcher);
    signal(launcher.id(), libc::SIGSTOP);
    let out = env
        .cmd()
        .args(["url", "--name", "paused"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    signal(launcher.id(), libc::SIGCONT);
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, _) = finish(launcher);
    assert_eq!(code, Some(143));
}

#[test]
fn two_runs_of_the_same_name_one_wins_and_the_loser_exits_3_naming_it() {
    let env = TestEnv::new();
    for round in 0..100 {
        let name = format!("race{round}");
        let args = [
            "--ephemeral",
            "--name",
            name.as_str(),
            "--",
            "sleep",
            "1000",
        ];
        let mut a = spawn_run(&env, &args);
        let mut b = spawn_run(&env, &args);
        // Whichever exits first is the loser; the winner keeps running.
        let deadline = std::time::Instant::now() + runner::HANG;
        let a_lost = loop {
            if a.try_wait().unwrap().is_some() {
                break true;
            }
            if b.try_wait().unwrap().is_some() {
                break false;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: neither lost"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let (mut winner, loser) = if a_lost { (b, a) } else { (a, b) };
        let winner_pid = winner.id();
        let (code, _, err) = finish(loser);
        assert_eq!(code, Some(3), "round {round}: {err}");
        assert!(
            err.contains(&format!("pid {winner_pid}")),
            "round {round}: {err}"
        );
        assert!(
            !err.contains("Address already in use"),
            "round {round}: {err}"
        );
        assert!(
            winner.try_wait().unwrap().is_none(),
            "round {round}: the winner died"
        );
        signal(winner_pid, libc::SIGTERM);
        let (code, _, _) = finish(winner);
        assert_eq!(code, Some(143), "round {round}");
    }
}
