//! Reloads leave nothing behind: after 100 reloads the launcher holds as many
//! fds as before (±2) and has no zombie child; an old generation that ignores
//! the stop signal is killed after the drain timeout; a server executable
//! replaced on disk between two reloads is what the next generation runs.

mod runner;
mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use runner::{finish, runtime_dir, signal, spawn_run, wait_ready};
use util::TestEnv;

fn reload(env: &TestEnv, name: &str) -> u32 {
    let out = env.cmd().args(["reload", "--name", name]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The launcher's children as (pid, state).
fn children(pid: u32) -> Vec<(u32, char)> {
    runner::children_of(pid)
        .into_iter()
        .map(|s| (s.pid, s.state))
        .collect()
}

fn gone(pid: u32) -> bool {
    porthold::identity::stat(pid)
        .ok()
        .flatten()
        .is_none_or(|s| s.state == 'Z')
}

#[test]
fn a_hundred_reloads_leak_no_fd_and_leave_no_zombie() {
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "many",
            "--ready",
            "delay:1ms",
            "--reload-confirm",
            "5ms",
            "--drain-timeout",
            "2s",
            "--",
            "sleep",
            "1000",
        ],
    );
    wait_ready(&env, "many", &mut launcher);
    // One reload first: the control socket's serving thread and the
    // reload's own bookkeeping exist from then on.
    let mut last = reload(&env, "many");
    let before = fd_count(launcher.id());
    for _ in 0..100 {
        let pid = reload(&env, "many");
        assert_ne!(pid, last);
        last = pid;
    }
    // The retired generations end (SIGTERM ends `sleep`); then only the
    // current one is a child, and no child is a zombie.
    let deadline = Instant::now() + runner::HANG;
    let kids = loop {
        let kids = children(launcher.id());
        if kids.len() == 1 || Instant::now() >= deadline {
            break kids;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let after = fd_count(launcher.id());
    signal(launcher.id(), libc::SIGTERM);
    let _ = finish(launcher);
    assert_eq!(
        kids.iter().map(|k| k.0).collect::<Vec<_>>(),
        vec![last],
        "children after 101 reloads: {kids:?}"
    );
    assert!(kids.iter().all(|k| k.1 != 'Z'), "{kids:?}");
    assert!(
        after.abs_diff(before) <= 2,
        "the launcher held {before} fds after the first reload and {after} after 100 more"
    );
}

#[test]
fn an_old_generation_that_ignores_the_stop_signal_is_killed_after_the_drain_timeout() {
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "stubborn",
            "--ready",
            "delay:1ms",
            "--reload-confirm",
            "5ms",
            "--drain-timeout",
            "1s",
            "--",
            "sh",
            "-c",
            "trap '' TERM; while :; do sleep 0.05; done",
        ],
    );
    let live = wait_ready(&env, "stubborn", &mut launcher);
    let old = live.record.child_pid.unwrap();
    let started = Instant::now();
    let new = reload(&env, "stubborn");
    assert_ne!(new, old);
    // The record lists both while the old one drains, and `ps` shows it.
    let listed = porthold::discovery::probe(&runtime_dir(&env), "stubborn")
        .unwrap()
        .record
        .unwrap()
        .generations;
    let states: Vec<_> = listed.iter().map(|g| (g.number, g.pid, g.state)).collect();
    use porthold::discovery::GenerationState::{Draining, Ready};
    if !gone(old) {
        assert_eq!(states, vec![(1, old, Draining), (2, new, Ready)]);
        let ps = env.cmd().args(["ps"]).output().unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(ps.contains("2 (1 draining"), "{ps}");
    }
    while !gone(old) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the old generation outlived its drain timeout by far"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!gone(new), "the new generation was killed with the old one");
    let deadline = Instant::now() + runner::HANG;
    loop {
        let listed = porthold::discovery::probe(&runtime_dir(&env), "stubborn")
            .unwrap()
            .record
            .unwrap()
            .generations;
        if listed.len() == 1 {
            assert_eq!((listed[0].number, listed[0].pid), (2, new));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed generation stayed listed: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The reload is remembered with its figures, the drain included.
    let record = porthold::discovery::probe(&runtime_dir(&env), "stubborn")
        .unwrap()
        .record
        .unwrap();
    let [event] = &record.events[..] else {
        panic!("one event: {:?}", record.events)
    };
    assert_eq!(
        (event.generation, event.cause, event.outcome, event.retired),
        (
            2,
            porthold::discovery::GenerationCause::Reload,
            porthold::discovery::EventOutcome::Committed,
            Some(1)
        )
    );
    assert!(event.ready_ms.is_some());
    assert!(
        event.drain_ms.is_some_and(|ms| ms >= 900),
        "the drain lasted the drain timeout (1s): {event:?}"
    );
    // (SIGTERM is ignored by the server: the launcher's stop ends in SIGKILL
    // after the drain timeout too.)
    signal(launcher.id(), libc::SIGTERM);
    let _ = finish(launcher);
}

#[test]
fn a_server_replaced_on_disk_runs_as_the_new_code_after_a_reload() {
    let env = TestEnv::new();
    let bin = env.dir.path().join("server");
    let marker = env.dir.path().join("version");
    let write_server = |version: &str| {
        // Replaced by rename, as a build does: the running generation keeps
        // its old inode, the next exec reads the new one.
        let tmp = env.dir.path().join("server.tmp");
        std::fs::write(
            &tmp,
            format!(
                "#!/bin/sh\necho {version} > '{}'\nexec sleep 1000\n",
                marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &bin).unwrap();
    };
    let read_version = |expect: &str| {
        let deadline = Instant::now() + runner::HANG;
        loop {
            if std::fs::read_to_string(&marker).is_ok_and(|v| v.trim() == expect) {
                return;
            }
            assert!(Instant::now() < deadline, "the server never wrote {expect}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    write_server("v1");
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "rebuilt",
            "--ready",
            "delay:1ms",
            "--reload-confirm",
            "5ms",
            "--",
            bin.to_str().unwrap(),
        ],
    );
    wait_ready(&env, "rebuilt", &mut launcher);
    read_version("v1");
    write_server("v2");
    let pid = reload(&env, "rebuilt");
    read_version("v2");
    let record = porthold::discovery::probe(&runtime_dir(&env), "rebuilt")
        .unwrap()
        .record
        .unwrap();
    assert_eq!(record.child_pid, Some(pid));
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    signal(launcher.id(), libc::SIGTERM);
    let _ = finish(launcher);
}

#[test]
fn sighup_with_on_hup_reload_starts_a_new_generation_and_keeps_the_instance() {
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "hup",
            "--on-hup",
            "reload",
            "--ready",
            "delay:1ms",
            "--reload-confirm",
            "5ms",
            "--",
            "sleep",
            "1000",
        ],
    );
    let live = wait_ready(&env, "hup", &mut launcher);
    let old = live.record.child_pid.unwrap();
    signal(launcher.id(), libc::SIGHUP);
    let deadline = Instant::now() + runner::HANG;
    let record = loop {
        let record = porthold::discovery::probe(&runtime_dir(&env), "hup")
            .unwrap()
            .record
            .expect("the instance lives on");
        if record.generation == 2 && record.state == porthold::discovery::State::Ready {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP never reloaded: {record:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let new = record.child_pid.unwrap();
    assert_ne!(new, old);
    while !gone(old) {
        assert!(
            Instant::now() < deadline,
            "the old generation was never retired"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        launcher.try_wait().unwrap().is_none(),
        "SIGHUP ended the launcher"
    );
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish(launcher);
    assert_eq!(code, Some(128 + libc::SIGTERM), "{err}");
}

#[test]
fn a_launcher_killed_mid_reload_leaves_neither_generation_and_the_name_starts_again() {
    let env = TestEnv::new();
    let args = [
        "--ephemeral",
        "--name",
        "killed",
        "--ready",
        "delay:1ms",
        "--reload-confirm",
        "60s",
        "--",
        "sleep",
        "1000.7171",
    ];
    let mut launcher = spawn_run(&env, &args);
    wait_ready(&env, "killed", &mut launcher);
    // The reload stays in its confirm window (60 s) with both generations alive.
    let mut reload = env
        .std_cmd()
        .args(["reload", "--name", "killed"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + runner::HANG;
    while runner::processes_with("1000.7171")
        .into_iter()
        .filter(|&p| p != launcher.id())
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the new generation never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let generations: Vec<u32> = runner::processes_with("1000.7171")
        .into_iter()
        .filter(|&p| p != launcher.id() && p != reload.id())
        .collect();
    assert_eq!(generations.len(), 2, "{generations:?}");
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    // The parent-death signal (SIGTERM) ends both generations.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !generations.iter().all(|&p| gone(p)) {
        assert!(
            Instant::now() < deadline,
            "a generation outlived its launcher by 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The reload client hears the launcher go (an error, not a hang).
    let status = reload.wait().unwrap();
    assert!(!status.success());
    // The name is free for a new run.
    let mut again = spawn_run(&env, &args);
    wait_ready(&env, "killed", &mut again);
    signal(again.id(), libc::SIGTERM);
    let _ = finish(again);
}

#[test]
fn a_new_run_after_a_launcher_sigkilled_during_a_drain_ends_every_listed_generation() {
    let env = TestEnv::new();
    // Both generations ignore SIGTERM, so the parent-death signal does not
    // end them: only the next owner of the name can.
    let args = [
        "--ephemeral",
        "--name",
        "orphaned",
        "--ready",
        "delay:1ms",
        "--reload-confirm",
        "5ms",
        "--drain-timeout",
        "60s",
        "--",
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 0.05; done; : 1000.8181",
    ];
    let mut launcher = spawn_run(&env, &args);
    let old = wait_ready(&env, "orphaned", &mut launcher)
        .record
        .child_pid
        .unwrap();
    let new = reload(&env, "orphaned");
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    assert!(
        !gone(old) && !gone(new),
        "both generations outlive the launcher"
    );
    // The next run of the name (with a short drain, to end quickly itself).
    let mut short = args;
    short[8] = "1s";
    let mut again = spawn_run(&env, &short);
    wait_ready(&env, "orphaned", &mut again);
    let survivors: Vec<u32> = [old, new].into_iter().filter(|&p| !gone(p)).collect();
    signal(again.id(), libc::SIGTERM);
    let _ = runner::finish_within(again, Duration::from_secs(90));
    for pid in &survivors {
        // Clean up before failing.
        runner::signal_group(*pid, libc::SIGKILL);
    }
    assert!(
        survivors.is_empty(),
        "generations {survivors:?} (old {old}, new {new}) survived the takeover"
    );
}

#[test]
fn a_check_cut_off_by_the_reload_timeout_leaves_no_process_behind() {
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "slowcheck",
            "--ready",
            "delay:1ms",
            "--",
            "sleep",
            "1000",
        ],
    );
    let old = wait_ready(&env, "slowcheck", &mut launcher)
        .record
        .child_pid
        .unwrap();
    // The shell waits for its own child: killing only the shell would leave
    // the `sleep` running.
    let out = env
        .cmd()
        .args([
            "reload",
            "--name",
            "slowcheck",
            "--timeout",
            "1s",
            "--check",
            "sleep 300.9191; true",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("timeout"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left = runner::processes_with("300.9191");
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    for pid in &left {
        signal(*pid, libc::SIGKILL);
    }
    assert!(
        left.is_empty(),
        "the check's processes {left:?} outlived the rollback"
    );
    assert!(!gone(old), "the old generation still serves");
    signal(launcher.id(), libc::SIGTERM);
    let _ = finish(launcher);
}
