//! `porthold reload`: a new generation on the same listening socket, then the
//! old one retired. Clients that connect all through the reloads are never
//! refused; a new generation that fails (exits before ready, hangs until the
//! ready timeout, crashes inside the confirm window, a failing check) is
//! rolled back with exit 7 while the old one serves on, with clients
//! connecting all along and none failing; a second reload meanwhile is exit 5.
//! The crash matrix goes on past the commit: a new generation that crashes
//! after it under `--restart on-failure` is restarted on the same socket, and
//! an old generation that crashes while it drains is only forgotten (no
//! restart, the instance serves on); neither costs a client a connection.
//! Test servers crash only where they hold no connection (before their first
//! accept or between connections): a crash holding one resets it, whatever
//! porthold does (docs/lifecycle.md).

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
/// does. Between connections it exits 1 once `die-<its pid>` exists; after
/// SIGTERM, while `linger` exists, it keeps running (draining, accepting
/// nothing) until `die-<its pid>` appears, then exits 1.
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
    os._exit(1)
answer = ("%d %s" % (os.getpid(), os.environ.get("LISTEN_PID", "-"))).encode()
die = os.path.join(d, "die-%d" % os.getpid())
while not stop:
    if os.path.exists(die):
        sys.exit(1)
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
while os.path.exists(os.path.join(d, "linger")):
    if os.path.exists(die):
        sys.exit(1)
    time.sleep(0.01)
"#;

fn start(env: &TestEnv, name: &str) -> (std::process::Child, SocketAddr) {
    start_with(env, name, &[])
}

/// [`start`] with more `run` options (in place of the defaults they name).
fn start_with(env: &TestEnv, name: &str, extra: &[&str]) -> (std::process::Child, SocketAddr) {
    let server = SERVER.replace("__DIR__", &env.dir.path().display().to_string());
    let mut args = extra.to_vec();
    args.extend_from_slice(&["--ephemeral", "--name", name, "--ready", "notify"]);
    for (option, value) in [
        ("--reload-confirm", "100ms"),
        ("--ready-timeout", "3s"),
        ("--drain-timeout", "5s"),
    ] {
        if !extra.contains(&option) {
            args.extend_from_slice(&[option, value]);
        }
    }
    args.extend_from_slice(&["--", "python3", "-c", &server]);
    let mut launcher = spawn_run(env, &args);
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

/// Client threads connecting one after another (each waits for its answer)
/// until stopped; bounded by a count and a time.
struct Clients {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Clients {
    fn start(addr: SocketAddr) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let threads = (0..2)
            .map(|_| {
                let (stop, served) = (stop.clone(), served.clone());
                std::thread::spawn(move || -> Vec<String> {
                    let mut failures = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(120);
                    let mut count = 0;
                    while !stop.load(Ordering::SeqCst)
                        && Instant::now() < deadline
                        && count < 500_000
                    {
                        count += 1;
                        // A few hundred connections/s in all, not flat out.
                        std::thread::sleep(Duration::from_millis(2));
                        match ask(addr) {
                            Ok((pid, listen_pid)) if listen_pid == pid.to_string() => {
                                served.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(other) => failures.push(format!("LISTEN_PID mismatch: {other:?}")),
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    failures
                })
            })
            .collect();
        Clients {
            stop,
            served,
            threads,
        }
    }

    /// How many connections were answered so far.
    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Waits, before `deadline`, until `count` connections were answered.
    fn wait_served(&self, count: usize, deadline: Instant) {
        while self.served() < count {
            assert!(Instant::now() < deadline, "the clients stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the clients; fails the test if any connection failed or too few
    /// were made to mean anything. Returns how many were answered.
    fn finish(self, min: usize) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let failures: Vec<String> = self
            .threads
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        let served = self.served.load(Ordering::SeqCst);
        assert!(
            failures.is_empty(),
            "{} of {} connections failed: {:?}",
            failures.len(),
            served + failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(served >= min, "too little load: {served} connections");
        served
    }
}

/// Waits until `pid` is gone (or a zombie: nobody reaped it yet).
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + runner::HANG;
    while porthold::identity::stat(pid)
        .ok()
        .flatten()
        .is_some_and(|s| s.state != 'Z')
    {
        assert!(Instant::now() < deadline, "pid {pid} never ended");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn record(env: &TestEnv, name: &str) -> porthold::discovery::Record {
    porthold::discovery::probe(&runner::runtime_dir(env), name)
        .unwrap()
        .record
        .expect("the instance is live")
}

fn reload(env: &TestEnv, name: &str, extra: &[&str]) -> std::process::Output {
    env.cmd()
        .args(["reload", "--name", name])
        .args(extra)
        .output()
        .unwrap()
}

/// Reloads `name`, which must commit (exit 0); the pid `reload` printed.
fn reloaded(env: &TestEnv, name: &str, what: &str) -> u32 {
    let out = reload(env, name, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Waits, before `deadline`, until a connection to `addr` is answered by
/// `pid` (every attempt must connect).
fn wait_answered_by(addr: SocketAddr, pid: u32, deadline: Instant, what: &str) {
    while ask(addr).unwrap().0 != pid {
        assert!(Instant::now() < deadline, "{what} never answered");
    }
}

/// Ends the instance with SIGTERM; the server exits 0.
fn stop(launcher: std::process::Child) {
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish(launcher);
    assert_eq!(code, Some(0), "the server exits 0 on SIGTERM: {err}");
}

#[test]
fn clients_connecting_through_five_reloads_are_never_refused() {
    if skip_without_python() {
        return;
    }
    let env = TestEnv::new();
    let (launcher, addr) = start(&env, "reloads");
    let first = ask(addr).expect("the first generation answers").0;

    let clients = Clients::start(addr);
    let mut pids = vec![first];
    for round in 0..5 {
        let pid = reloaded(&env, "reloads", &format!("reload {round}"));
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
    let served = clients.finish(1);
    stop(launcher);
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
    // A confirm window long enough that the crashing generation (which exits
    // right after READY=1) ends inside it even on a loaded machine.
    let (launcher, addr) = start_with(&env, "rollback", &["--reload-confirm", "1s"]);
    let old = ask(addr).unwrap().0;
    // Under load: clients connect all through the four rollbacks.
    let clients = Clients::start(addr);

    // With the file `fault` present the next generation fails that way; each
    // reload rolls back (exit 7, saying `why`) and the old generation serves on.
    let rolls_back = |fault: Option<&str>, args: &[&str], why: &str| {
        if let Some(fault) = fault {
            std::fs::write(env.dir.path().join(fault), "").unwrap();
        }
        let out = reload(&env, "rollback", args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{err}");
        assert!(err.contains(why), "{err}");
        if let Some(fault) = fault {
            std::fs::remove_file(env.dir.path().join(fault)).unwrap();
        }
        assert_eq!(ask(addr).unwrap().0, old);
    };
    // Exits before ready.
    rolls_back(Some("fail"), &[], "rolled back");
    // Never gets ready: the readiness timeout rolls back.
    rolls_back(Some("hang"), &[], "rolled back");
    // Crashes inside the confirm window.
    rolls_back(Some("crash"), &[], "confirm window");
    // A failing check starts nothing.
    rolls_back(None, &["--check", "exit 4"], "check");
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
    let served = clients.finish(100);
    eprintln!("served {served} connections through 4 rollbacks, 0 failed");

    stop(launcher);
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
    wait_answered_by(addr, pid, deadline, "the new generation");
    let _ = std::io::stderr().flush();
    stop(launcher);
}

#[test]
fn a_generation_crashing_after_the_commit_is_restarted_under_on_failure() {
    use porthold::discovery::{EventOutcome, GenerationCause};
    if skip_without_python() {
        return;
    }
    let env = TestEnv::new();
    let (launcher, addr) = start_with(&env, "aftercommit", &["--restart", "on-failure"]);
    let clients = Clients::start(addr);
    let committed = reloaded(&env, "aftercommit", "the reload");
    // Generation 2, committed, crashes (exit 1) between two connections.
    let served_before = clients.served();
    std::fs::write(env.dir.path().join(format!("die-{committed}")), "").unwrap();
    wait_gone(committed);
    let deadline = Instant::now() + runner::HANG;
    let restarted = loop {
        let now = record(&env, "aftercommit");
        // (The restart's event is written just after the record says ready.)
        if now.generation >= 3
            && now.state == porthold::discovery::State::Ready
            && now.events.iter().any(|e| e.generation >= 3)
        {
            break now;
        }
        assert!(Instant::now() < deadline, "never restarted: {now:?}");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(restarted.generation, 3, "{restarted:?}");
    let pid = restarted.child_pid.unwrap();
    assert_ne!(pid, committed);
    let causes: Vec<_> = restarted
        .events
        .iter()
        .map(|e| (e.generation, e.cause, e.outcome))
        .collect();
    assert_eq!(
        causes,
        vec![
            (2, GenerationCause::Reload, EventOutcome::Committed),
            (3, GenerationCause::Restart, EventOutcome::Committed),
        ]
    );
    // The restarted generation answers, and the clients kept going across it.
    let deadline = Instant::now() + runner::HANG;
    wait_answered_by(addr, pid, deadline, "generation 3");
    clients.wait_served(served_before + 100, deadline);
    let served = clients.finish(100);
    eprintln!("served {served} connections through a reload and a crash after it, 0 failed");
    stop(launcher);
}

#[test]
fn an_old_generation_crashing_while_it_drains_is_only_forgotten() {
    use porthold::discovery::{EventOutcome, GenerationCause, GenerationState};
    if skip_without_python() {
        return;
    }
    let env = TestEnv::new();
    // Under `on-failure`, so that a draining generation's crash taken for
    // the current one's would show as a restart.
    let (launcher, addr) = start_with(&env, "draincrash", &["--restart", "on-failure"]);
    let old = ask(addr).unwrap().0;
    let clients = Clients::start(addr);
    // The retired generation drains (holding the socket, accepting nothing)
    // until it is told to crash.
    std::fs::write(env.dir.path().join("linger"), "").unwrap();
    let new = reloaded(&env, "draincrash", "the first reload");
    let draining = record(&env, "draincrash");
    let states: Vec<_> = draining
        .generations
        .iter()
        .map(|g| (g.number, g.pid, g.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (1, old, GenerationState::Draining),
            (2, new, GenerationState::Ready)
        ]
    );
    let served_before = clients.served();
    std::fs::write(env.dir.path().join(format!("die-{old}")), "").unwrap();
    wait_gone(old);
    // The loop forgets the retired generation once it has reaped it.
    let deadline = Instant::now() + runner::HANG;
    let after = loop {
        let now = record(&env, "draincrash");
        if now.generations.iter().all(|g| g.number != 1) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "generation 1 never forgotten: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(after.generation, 2, "{after:?}");
    assert_eq!(after.child_pid, Some(new));
    assert_eq!(after.state, porthold::discovery::State::Ready);
    // The clients kept going across the crash.
    clients.wait_served(served_before + 100, deadline);
    // Another reload is served right after (none is refused as "being
    // restarted"), and nothing but the two reloads started a generation.
    std::fs::remove_file(env.dir.path().join("linger")).unwrap();
    reloaded(&env, "draincrash", "the second reload");
    let last = record(&env, "draincrash");
    let causes: Vec<_> = last
        .events
        .iter()
        .map(|e| (e.generation, e.cause, e.outcome))
        .collect();
    assert_eq!(
        causes,
        vec![
            (2, GenerationCause::Reload, EventOutcome::Committed),
            (3, GenerationCause::Reload, EventOutcome::Committed),
        ]
    );
    assert_eq!(last.generation, 3);
    let served = clients.finish(100);
    eprintln!("served {served} connections through a crash while draining, 0 failed");
    stop(launcher);
}
