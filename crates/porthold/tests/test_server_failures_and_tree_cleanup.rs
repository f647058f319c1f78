//! A server that exits during start-up, a server that forked, a server started
//! from a thread that ends.

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use porthold::supervisor::LaunchError;
use porthold::supervisor::ready::ReadyMode;
use porthold::testing::TestServer;

const FD3_SERVER: &str = "import os, socket\n\
s = socket.socket(fileno=3)\n\
while True:\n    c, _ = s.accept()\n    c.sendall(b'hi %d' % os.getpid())\n    c.close()\n";

fn have_python() -> bool {
    if Command::new("python3").arg("-V").output().is_ok() {
        return true;
    }
    porthold::test_hooks::skip("python3 is not installed");
    false
}

fn answer(addr: std::net::SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text
}

fn launch_error(e: porthold::Error) -> LaunchError {
    match e {
        porthold::Error::Start(e) => *e,
        other => panic!("expected a launch error, got {other:?}"),
    }
}

#[test]
fn with_notify_readiness_an_exit_during_start_up_fails_start_with_the_stderr_tail() {
    let err = TestServer::builder("sh")
        .args(["-c", "echo 'config file missing' >&2; exit 3"])
        .ready("notify".parse().unwrap())
        .start()
        .expect_err("the server exited before READY=1");
    let text = err.to_string();
    match launch_error(err) {
        LaunchError::ExitedBeforeReady {
            status,
            stderr_tail,
        } => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(stderr_tail, "config file missing");
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert!(
        text.contains("exited with code 3") && text.contains("config file missing"),
        "{text}"
    );
}

#[test]
fn with_http_readiness_an_exit_during_start_up_fails_start_with_the_stderr_tail() {
    if !have_python() {
        return;
    }
    let err = TestServer::builder("python3")
        .args([
            "-S",
            "-c",
            "import sys; sys.stderr.write('no database\\n'); sys.exit(4)",
        ])
        .ready(ReadyMode::Http {
            path: "/health".into(),
        })
        .start()
        .expect_err("the server exited before answering");
    let e = launch_error(err);
    assert_eq!(e.status().and_then(|s| s.code()), Some(4), "{e:?}");
    assert_eq!(e.stderr_tail(), "no database");
}

#[test]
fn notify_readiness_succeeds_when_the_server_says_ready() {
    if !have_python() {
        return;
    }
    let server = TestServer::builder("python3")
        .args([
            "-S",
            "-c",
            "import os, socket\n\
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
n.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
s = socket.socket(fileno=3)\n\
while True:\n    c, _ = s.accept()\n    c.sendall(b'hi %d' % os.getpid())\n    c.close()\n",
        ])
        .ready("notify".parse().unwrap())
        .ready_timeout(Duration::from_secs(20))
        .start()
        .unwrap();
    assert_eq!(answer(server.addr()), format!("hi {}", server.pid()));
    assert_eq!(server.stop().unwrap().signal(), Some(libc::SIGTERM));
}

#[test]
fn with_listen_readiness_stop_reports_an_exit_nobody_asked_for_with_the_tail() {
    if !have_python() {
        return;
    }
    let server = TestServer::builder("python3")
        .args([
            "-S",
            "-c",
            "import socket, sys\n\
s = socket.socket(fileno=3)\n\
c, _ = s.accept()\n\
sys.stderr.write('crashed on first request\\n')\n\
sys.exit(5)\n",
        ])
        .start()
        .expect("listen readiness: ready once spawned");
    // The connection ends when the server exits; then wait for its zombie.
    let _ = answer(server.addr());
    let pid = server.pid();
    while !porthold::identity::stat(pid)
        .unwrap()
        .is_some_and(|s| s.is_exited())
    {
        std::thread::yield_now();
    }
    let err = server.stop().expect_err("the server exited on its own");
    let text = err.to_string();
    match launch_error(err) {
        LaunchError::ExitedUnexpectedly {
            status,
            stderr_tail,
        } => {
            assert_eq!(status.code(), Some(5));
            assert_eq!(stderr_tail, "crashed on first request");
        }
        other => panic!("wrong error: {other:?}"),
    }
    assert!(text.contains("exited with code 5"), "{text}");
}

#[test]
fn a_program_that_cannot_be_run_is_a_spawn_failure() {
    let err = TestServer::builder("/nonexistent/porthold-test-server")
        .start()
        .expect_err("no such program");
    assert!(
        matches!(launch_error(err), LaunchError::SpawnFailed { .. }),
        "a missing program is a spawn failure"
    );
}

/// Every live (non-zombie) process whose parent chain reaches `root`.
fn live_tree(root: u32) -> Vec<u32> {
    let snapshot = porthold::identity::processes();
    porthold::identity::descendants_in(&snapshot, root)
        .into_iter()
        .map(|i| i.pid)
        .collect()
}

fn gone(pid: u32) -> bool {
    // Gone, or a zombie (exited; orphans re-parented to pid 1 wait for init).
    porthold::identity::stat(pid)
        .unwrap()
        .is_none_or(|s| s.is_exited())
}

#[test]
fn dropping_a_server_that_forked_leaves_no_process_of_its_tree() {
    if !have_python() {
        return;
    }
    let script = format!(
        "sleep 300 & exec python3 -S -c \"{}\"",
        FD3_SERVER.replace('"', "\\\"")
    );
    let server = TestServer::builder("sh")
        .args(["-c", &script])
        .start()
        .unwrap();
    // Once the server answers, `sh` has exec'd it and the sleep runs below it.
    assert_eq!(answer(server.addr()), format!("hi {}", server.pid()));
    let mut tree = live_tree(server.pid());
    assert!(!tree.is_empty(), "the background sleep is part of the tree");
    tree.push(server.pid());
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !tree.iter().all(|&p| gone(p)) {
        assert!(
            Instant::now() < deadline,
            "left alive: {:?}",
            tree.iter().filter(|&&p| !gone(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_server_started_in_a_thread_that_ended_keeps_serving() {
    if !have_python() {
        return;
    }
    let server = std::thread::spawn(|| {
        TestServer::builder("python3")
            .args(["-S", "-c", FD3_SERVER])
            .start()
            .unwrap()
    })
    .join()
    .unwrap();
    // The starting thread is gone; a parent-death signal tied to it would have fired.
    assert_eq!(answer(server.addr()), format!("hi {}", server.pid()));
    assert_eq!(server.stop().unwrap().signal(), Some(libc::SIGTERM));
}

#[test]
fn a_server_that_never_gets_ready_is_a_ready_timeout_with_the_last_probe_and_the_tail() {
    if !have_python() {
        return;
    }
    let started = Instant::now();
    let err = TestServer::builder("python3")
        .args([
            "-S",
            "-c",
            "import socket, sys\n\
sys.stderr.write('warming up\\n'); sys.stderr.flush()\n\
s = socket.socket(fileno=3)\n\
while True:\n    c, _ = s.accept()\n    c.recv(4096)\n    \
c.sendall(b'HTTP/1.0 503 Service Unavailable\\r\\nContent-Length: 0\\r\\n\\r\\n')\n    c.close()\n",
        ])
        .ready("http:/health".parse().unwrap())
        .ready_timeout(Duration::from_millis(1500))
        .start()
        .expect_err("the server never answers 2xx");
    assert!(started.elapsed() < Duration::from_secs(20));
    match launch_error(err) {
        LaunchError::ReadyTimeout {
            last_error,
            stderr_tail,
            ..
        } => {
            assert!(
                last_error.as_deref().is_some_and(|e| e.contains("503")),
                "{last_error:?}"
            );
            assert_eq!(stderr_tail, "warming up");
        }
        other => panic!("wrong error: {other:?}"),
    }
}
