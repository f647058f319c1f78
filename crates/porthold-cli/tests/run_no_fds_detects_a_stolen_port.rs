//! `porthold run --no-fds`: for servers that bind by themselves. porthold
//! holds the key's port until just before the spawn, then checks that the
//! listener on it belongs to the child's tree.

mod runner;
mod util;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use runner::{EXIT_BOUND, finish, finish_within, have, http_get, signal, spawn_run, wait_ready};
use util::TestEnv;

fn reserve(env: &TestEnv, tag: &str, pool: &str) -> u16 {
    let out = env
        .cmd()
        .args(["reserve", "--tag", tag, "--pool", pool])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_python_http_server_bound_from_port_is_served_and_found_by_url() {
    if !have("python3") {
        porthold::test_hooks::skip(
            "python3 is not installed (scripts/install-test-deps.sh installs it)",
        );
        return;
    }
    let env = TestEnv::new();
    let port = reserve(&env, "py", "24700-24729");
    std::fs::write(env.project().join("index.html"), "served-by-python").unwrap();
    let mut launcher = spawn_run(
        &env,
        &[
            "--tag",
            "py",
            "--name",
            "nofds",
            "--no-fds",
            "--",
            "sh",
            "-c",
            "exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
        ],
    );
    let live = wait_ready(&env, "nofds", &mut launcher);
    assert_eq!(live.record.listeners[0].port, Some(port));
    let out = env.cmd().args(["url", "--name", "nofds"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("http://127.0.0.1:{port}")
    );
    let response = http_get(format!("127.0.0.1:{port}").parse().unwrap(), "/index.html");
    assert!(response.contains("served-by-python"), "{response}");
    signal(launcher.id(), libc::SIGTERM);
    finish(launcher);
}

#[test]
fn a_thief_that_binds_the_port_in_the_window_is_named_with_exit_8() {
    let env = TestEnv::new();
    let port = reserve(&env, "stolen", "24750-24799");
    // Widen the window between porthold releasing its socket and the spawn.
    let mut cmd = env.std_cmd();
    cmd.env("PORTHOLD_TEST_PAUSE", "run.no-fds-window:1500")
        .args([
            "run",
            "--tag",
            "stolen",
            "--no-fds",
            "--ready-timeout",
            "5s",
            "--",
            "sh",
            "-c",
            "sleep 1000.6161",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let launcher = cmd.spawn().unwrap();
    // Once porthold holds the port (its record says `starting`)...
    let deadline = Instant::now() + runner::HANG;
    let run = runner::runtime_dir(&env);
    let name = porthold::discovery::default_name(&env.project(), "stolen");
    while porthold::discovery::probe(&run, &name)
        .map(|p| p.record.is_none())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "porthold never bound the port");
        std::thread::sleep(Duration::from_millis(2));
    }
    // ...the thief keeps trying until porthold lets go of it.
    let thief = loop {
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            break listener;
        }
        assert!(
            Instant::now() < deadline,
            "porthold never released the port"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    // The thief listens, so readiness (tcp) passes at once and the ownership
    // check decides within a second or two. Were the check broken, porthold
    // would keep serving `sleep`: bounded, so that fails in seconds, not a minute.
    let (code, _, err) = finish_within(launcher, EXIT_BOUND);
    drop(thief);
    assert_eq!(code, Some(8), "{err}");
    assert!(
        err.contains(&format!("port {port} stolen by pid {}", std::process::id())),
        "{err}"
    );
    assert!(
        runner::processes_with("1000.6161").is_empty(),
        "the child was killed"
    );
}

#[test]
fn a_server_that_never_binds_is_exit_8_never_bound_not_stolen() {
    let env = TestEnv::new();
    reserve(&env, "lazy", "24730-24739");
    let out = env
        .cmd()
        .args([
            "run",
            "--tag",
            "lazy",
            "--no-fds",
            "--ready-timeout",
            "500ms",
            "--",
            "sleep",
            "1000",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{err}");
    assert!(
        err.contains("never bound") || err.contains("not ready"),
        "{err}"
    );
    assert!(!err.contains("stolen"), "{err}");
}
