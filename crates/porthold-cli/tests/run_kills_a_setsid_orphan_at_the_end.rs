//! `porthold run` is a subreaper: a process of the server's tree that left its
//! process group (`setsid`) and whose parent died is re-parented to porthold,
//! and the end of the instance kills it too. Neither the server's process
//! group nor a walk from the server can find it; only this can.

mod runner;
mod util;

use std::time::{Duration, Instant};

use runner::{children_of, finish, processes_with, spawn_run, wait_ready};
use util::TestEnv;

#[test]
fn a_setsid_process_whose_parent_died_is_killed_at_the_end_of_the_instance() {
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "escapee",
            "--",
            "sh",
            "-c",
            "(setsid sleep 1000.5151 &); exec sleep 999.5151",
        ],
    );
    wait_ready(&env, "escapee", &mut launcher);
    let deadline = Instant::now() + runner::HANG;
    // (The launcher's own command line names both markers: look for `sleep`s.)
    let sleeps = |marker: &str| -> Vec<porthold::identity::Stat> {
        processes_with(marker)
            .into_iter()
            .filter_map(|pid| porthold::identity::stat(pid).ok().flatten())
            .filter(|s| s.comm == "sleep")
            .collect()
    };
    let escapee = loop {
        // Re-parented to porthold once its subshell parent exited.
        if let Some(stat) = sleeps("1000.5151")
            .into_iter()
            .find(|s| s.ppid == launcher.id())
        {
            break stat;
        }
        assert!(Instant::now() < deadline, "the escapee never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    let server = sleeps("999.5151");
    assert_eq!(server.len(), 1);
    assert_ne!(
        escapee.pgrp, server[0].pgrp,
        "the escapee left the server's group"
    );

    let out = env
        .cmd()
        .args(["stop", "--name", "escapee"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Wait for the launcher's exit, not for EOF on its output: a surviving
    // escapee would hold the inherited pipes open.
    let deadline = Instant::now() + runner::HANG;
    while launcher.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the launcher never exited");
        std::thread::sleep(Duration::from_millis(10));
    }
    let survived = porthold::identity::ProcessIdentity::of(escapee.pid)
        .unwrap()
        .filter(|now| now.starttime == escapee.starttime);
    if let Some(identity) = &survived {
        // Clean up this exact process before failing.
        let _ =
            porthold::identity::kill_all(std::slice::from_ref(identity), Duration::from_secs(5));
    }
    assert!(
        survived.is_none(),
        "the setsid orphan survived the instance"
    );
    let _ = finish(launcher);
}

#[test]
fn orphans_of_the_server_re_parented_to_porthold_are_reaped_while_it_serves() {
    let env = TestEnv::new();
    let spawned = env.dir.path().join("spawned");
    let script = format!(
        "for i in 1 2 3 4 5 6 7 8; do (sleep 0.0161 &); done; touch '{}'; exec sleep 999.6161",
        spawned.display()
    );
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "orphans",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    wait_ready(&env, "orphans", &mut launcher);
    let deadline = Instant::now() + runner::HANG;
    while !spawned.exists() {
        assert!(
            Instant::now() < deadline,
            "the server never forked its helpers"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Each helper is re-parented to porthold when its subshell exits, then
    // exits itself: porthold must reap it (a zombie child of porthold that
    // stays is a leak for the instance's whole life).
    let leftovers = loop {
        let children = children_of(launcher.id());
        let helpers: Vec<_> = children
            .iter()
            .filter(|s| {
                (s.comm == "sleep" && s.state == 'Z') || processes_with("0.0161").contains(&s.pid)
            })
            .collect();
        if helpers.is_empty() {
            break None;
        }
        if Instant::now() >= deadline {
            break Some(format!("{helpers:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let server: Vec<_> = children_of(launcher.id())
        .into_iter()
        .filter(|s| s.state != 'Z')
        .collect();
    runner::signal(launcher.id(), libc::SIGTERM);
    let _ = finish(launcher);
    assert_eq!(
        leftovers, None,
        "orphans of the server stayed zombies of porthold"
    );
    assert_eq!(server.len(), 1, "only the server is left: {server:?}");
}
