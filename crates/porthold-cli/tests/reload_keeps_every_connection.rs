//! `porthold reload`: a new generation on the same listening socket, then the
//! old one retired. Clients that connect all through the reloads are never
//! refused; a new generation that fails (exits before ready, crashes inside
//! the confirm window, a failing check) is rolled back with exit 7 while the
//! old one serves on; a second reload meanwhile is exit 5.

mod runner;
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use runner::{finish, signal, skip_without_python, spawn_run, wait_ready};
use util::TestEnv;

/// Accepts on fd 3, answers each connection with `<pid> <LISTEN_PID>`, says
/// READY=1 once listening; on SIGTERM stops accepting and exits 0. Exits 3
/// before ready when `fail` exists in the test's directory (`__DIR__`), never
/// gets ready when `hang` does, and exits 1 right after READY=1 when `crash`
/// does.
const SERVER: &str = r#"
import os, signal, socket, sys, time
d = "__DIR__"
if os.path.exists(os.path.join(d, "fail")):
    sys.exit(3)
if os.path.exists(os.path.join(d, "hang")):
    time.sleep(1000)
s = socket.socket(fileno=3)
s.settimeout(0.05)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
if os.path.exists(os.path.join(d, "crash")):
    sys.exit(1)
answer = ("%d %s" % (os.getpid(), os.environ.get("LISTEN_PID", "-"))).encode()
while not stop:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    except InterruptedError:
        continue
    c.settimeout(5)
    try:
        c.sendall(answer)
    finally:
        c.close()
"#;

fn start(env: &TestEnv, name: &str) -> (std::process::Child, SocketAddr) {
    let server = SERVER.replace("__DIR__", &env.dir.path().display().to_string());
    let mut launcher = spawn_run(
        env,
        &[
            "--ephemeral",
            "--name",
            name,
            "--ready",
            "notify",
            "--reload-confirm",
            "100ms",
            "--ready-timeout",
            "3s",
            "--drain-timeout",
            "5s",
            "--",
            "python3",
            "-c",
            &server,
        ],
    );
    let live = wait_ready(env, name, &mut launcher);
    (launcher, live.record.listeners[0].socket_addr().unwrap())
}

/// One connection: the server's answer `(pid, LISTEN_PID)`.
fn ask(addr: SocketAddr) -> std::io::Result<(u32, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    let (pid, listen_pid) = answer
        .split_once(' ')
        .ok_or_else(|| std::io::Error::other(format!("answer {answer:?}")))?;
    Ok((
        pid.parse().map_err(std::io::Error::other)?,
        listen_pid.to_string(),
    ))
}

fn reload(env: &TestEnv, name: &str, extra: &[&str]) -> std::process::Output {
    env.cmd()
        .args(["reload", "--name", name])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn clients_connecting_through_five_reloads_are_never_refused() {
    if skip_without_python() {
        return;
    }
    let env = TestEnv::new();
    let (launcher, addr) = start(&env, "reloads");
    let first = ask(addr).expect("the first generation answers").0;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (stop, served) = (stop.clone(), served.clone());
        clients.push(std::thread::spawn(move || -> Vec<String> {
            let mut failures = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match ask(addr) {
                    Ok((pid, listen_pid)) if listen_pid == pid.to_string() => {
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(other) => failures.push(format!("LISTEN_PID mismatch: {other:?}")),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    let mut pids = vec![first];
    for round in 0..5 {
        let out = reload(&env, "reloads", &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "reload {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(
            !pids.contains(&pid),
            "reload {round} printed an old pid {pid}"
        );
        pids.push(pid);
        // The committed generation is the record's current one.
        let live = porthold::discovery::probe(&runner::runtime_dir(&env), "reloads").unwrap();
        let record = live.record.unwrap();
        assert_eq!(record.child_pid, Some(pid));
        assert_eq!(record.generation, round + 2);
    }
    // After the commit new connections reach the newest generation (the
    // retired one stops accepting on SIGTERM).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ask(addr).map(|(pid, _)| pid).ok() == pids.last().copied() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the newest generation never answered"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let served = served.load(Ordering::SeqCst);
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish(launcher);
    assert!(
        failures.is_empty(),
        "{} of {} connections failed: {:?}",
        failures.len(),
        served + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(served > 0);
    assert_eq!(code, Some(0), "the server exits 0 on SIGTERM: {err}");
    // Every old generation was retired: none of their pids is alive.
    for pid in &pids {
        assert!(
            porthold::identity::stat(*pid)
                .ok()
                .flatten()
                .is_none_or(|s| s.state == 'Z'),
            "generation pid {pid} survived the instance"
        );
    }
    eprintln!("served {served} connections through 5 reloads, 0 failed");
}

#[test]
fn a_generation_that_fails_is_rolled_back_and_the_old_one_serves_on() {
    if skip_without_python() {
        return;
    }
    let env = TestEnv::new();
    let (launcher, addr) = start(&env, "rollback");
    let old = ask(addr).unwrap().0;

    // Exits before ready.
    std::fs::write(env.dir.path().join("fail"), "").unwrap();
    let out = reload(&env, "rollback", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    std::fs::remove_file(env.dir.path().join("fail")).unwrap();
    assert_eq!(ask(addr).unwrap().0, old);

    // Never gets ready: the readiness timeout rolls back.
    std::fs::write(env.dir.path().join("hang"), "").unwrap();
    let out = reload(&env, "rollback", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    std::fs::remove_file(env.dir.path().join("hang")).unwrap();
    assert_eq!(ask(addr).unwrap().0, old);

    // Crashes inside the confirm window.
    std::fs::write(env.dir.path().join("crash"), "").unwrap();
    let out = reload(&env, "rollback", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("confirm window"), "{err}");
    std::fs::remove_file(env.dir.path().join("crash")).unwrap();
    assert_eq!(ask(addr).unwrap().0, old);

    // A failing check starts nothing.
    let out = reload(&env, "rollback", &["--check", "exit 4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("check"), "{err}");
    assert_eq!(ask(addr).unwrap().0, old);
    let record = porthold::discovery::probe(&runner::runtime_dir(&env), "rollback")
        .unwrap()
        .record
        .unwrap();
    assert_eq!(record.child_pid, Some(old));
    assert_eq!(record.generation, 1);
    assert_eq!(record.state, porthold::discovery::State::Ready);
    // Four rollbacks, each remembered with its reason.
    let outcomes: Vec<_> = record.events.iter().map(|e| e.outcome).collect();
    assert_eq!(
        outcomes,
        vec![porthold::discovery::EventOutcome::RolledBack; 4]
    );
    assert!(
        record.events.iter().all(|e| e.reason.is_some()),
        "{:?}",
        record.events
    );
    assert_eq!(record.generations.len(), 1, "{:?}", record.generations);

    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish(launcher);
    assert_eq!(code, Some(0), "the server exits 0 on SIGTERM: {err}");
}

#[test]
fn a_second_reload_while_one_runs_is_busy() {
    if skip_without_python() {
        return;
    }
    let env = TestEnv::new();
    let (launcher, addr) = start(&env, "busy");
    let started = env.dir.path().join("check-started");
    let check = format!("touch '{}'; sleep 2", started.display());
    let mut first = env
        .std_cmd()
        .args(["reload", "--name", "busy", "--check", &check])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + runner::HANG;
    while !started.exists() {
        assert!(
            Instant::now() < deadline,
            "the first reload's check never ran"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = reload(&env, "busy", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("reload in progress"), "{err}");
    let mut first_out = String::new();
    first
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut first_out)
        .unwrap();
    assert!(first.wait().unwrap().success());
    let pid: u32 = first_out.trim().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ask(addr).unwrap().0 != pid {
        assert!(
            Instant::now() < deadline,
            "the new generation never answered"
        );
    }
    let _ = std::io::stderr().flush();
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish(launcher);
    assert_eq!(code, Some(0), "the server exits 0 on SIGTERM: {err}");
}
