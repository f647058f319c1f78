//! TestServer under contention, with a negative control.
//!
//! 64 TestServers start at once (one thread each), 20 times: every one serves.
//! The control runs the naive "bind port 0, close, start the server on that
//! number" pattern against a thief that keeps binding freshly released ports,
//! in a private network namespace whose ephemeral range is narrowed to 16 ports
//! (needs root): there the naive pattern fails, and TestServer, facing the same
//! thief, never does.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use porthold::testing::TestServer;

/// Accepts connections on fd 3 forever, answering each with `hi <pid>`.
const FD3_SERVER: &str = "import os, socket\n\
s = socket.socket(fileno=3)\n\
while True:\n    c, _ = s.accept()\n    c.sendall(b'hi %d' % os.getpid())\n    c.recv(1)\n    c.close()\n";

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "pass"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some("python3")
}

/// Reads the greeting, expected to be `want`, then resets the connection:
/// the servers wait for the client to go first and a reset leaves no
/// TIME_WAIT socket behind, which in the narrowed namespace would use up the
/// few ephemeral ports (and make the test about exhaustion, not the race).
fn answer_of(conn: TcpStream, want_len: usize, timeout: Duration) -> std::io::Result<String> {
    conn.set_read_timeout(Some(timeout))?;
    let conn = socket2::Socket::from(conn);
    conn.set_linger(Some(Duration::ZERO))?;
    let mut conn = TcpStream::from(conn);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    while buf.len() < want_len {
        match conn.read(&mut chunk)? {
            0 => break,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn answer(addr: std::net::SocketAddr, want: &str) -> std::io::Result<String> {
    answer_of(
        TcpStream::connect(addr)?,
        want.len(),
        Duration::from_secs(10),
    )
}

fn start_and_check() -> Result<(), String> {
    let server = TestServer::builder("python3")
        .args(["-S", "-c", FD3_SERVER])
        .start()
        .map_err(|e| format!("start: {e}"))?;
    let want = format!("hi {}", server.pid());
    let text = answer(server.addr(), &want).map_err(|e| format!("connect/read: {e}"))?;
    if text != want {
        return Err(format!("unexpected answer {text:?}"));
    }
    server.stop().map_err(|e| format!("stop: {e}"))?;
    Ok(())
}

#[test]
fn sixty_four_test_servers_at_once_twenty_times_never_fail() {
    if python().is_none() {
        porthold::test_hooks::skip("python3 is not installed");
        return;
    }
    let mut failures = Vec::new();
    for round in 0..20 {
        let threads: Vec<_> = (0..64)
            .map(|_| std::thread::spawn(start_and_check))
            .collect();
        for t in threads {
            if let Err(e) = t.join().expect("a server thread panicked") {
                failures.push(format!("round {round}: {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
}

const INNER_ENV: &str = "PORTHOLD_TEST_IN_PRIVATE_NETNS";

/// Binds freshly released ephemeral ports and keeps the last three listening.
fn start_thief(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut held = std::collections::VecDeque::new();
        let mut binds = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(listener) = TcpListener::bind("127.0.0.1:0") {
                binds += 1;
                held.push_back(listener);
                if held.len() > 3 {
                    held.pop_front();
                }
            }
        }
        binds
    })
}

/// The naive pattern: learn a free port, release it, start a server that binds it.
fn naive_attempt() -> Result<(), String> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("probe bind: {e}"))?
        .port();
    let script = "import os, socket, sys\n\
s = socket.socket()\n\
s.bind(('127.0.0.1', int(sys.argv[1])))\n\
s.listen(16)\n\
c, _ = s.accept()\n\
c.sendall(b'hi %d' % os.getpid())\n\
c.recv(1)\n";
    let mut child = Command::new("python3")
        .args(["-S", "-c", script, &port.to_string()])
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("server exited ({status}): port {port} was taken"));
        }
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(conn) => {
                // A thief's listener accepts into its backlog but never answers.
                let want = format!("hi {}", child.id());
                let text =
                    answer_of(conn, want.len(), Duration::from_millis(500)).unwrap_or_default();
                if text == want {
                    break Ok(());
                }
                if !text.is_empty() || child.try_wait().ok().flatten().is_some() {
                    break Err(format!("port {port}: answered by someone else: {text:?}"));
                }
            }
            Err(_) if Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => break Err(format!("port {port}: {e}")),
        }
        if Instant::now() >= deadline {
            break Err(format!("port {port}: the server never answered"));
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

#[test]
fn the_naive_pattern_loses_ports_to_a_thief_and_test_server_never_does() {
    if python().is_none() {
        porthold::test_hooks::skip("python3 is not installed");
        return;
    }
    if rustix::process::geteuid().as_raw() != 0 {
        porthold::test_hooks::skip("needs root for a private network namespace");
        return;
    }
    let me = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--net", "--"])
        .arg(me)
        .args([
            "--exact",
            "inside_a_private_network_namespace",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER_ENV, "1")
        .output()
        .expect("running unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inside the namespace:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the inner test did not run:\n{text}"
    );
}

#[test]
#[ignore = "run by the_naive_pattern_loses_ports_to_a_thief_and_test_server_never_does inside `unshare --net`"]
fn inside_a_private_network_namespace() {
    assert_eq!(
        std::env::var(INNER_ENV).as_deref(),
        Ok("1"),
        "only meaningful inside the private namespace its outer test creates"
    );
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip");
    assert!(up.success());
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "20000 20015")
        .expect("narrowing the ephemeral range");

    let stop = Arc::new(AtomicBool::new(false));
    let thief = start_thief(stop.clone());
    let naive: Vec<_> = (0..20).map(|_| naive_attempt()).collect();
    let ours: Vec<_> = (0..20).map(|_| start_and_check()).collect();
    stop.store(true, Ordering::Relaxed);
    let binds = thief.join().unwrap();

    let naive_failures = naive.iter().filter(|r| r.is_err()).count();
    let our_failures: Vec<_> = ours.iter().filter_map(|r| r.as_ref().err()).collect();
    eprintln!("thief binds: {binds}; naive failures: {naive_failures}/20");
    assert!(
        naive_failures >= 5,
        "the control did not fail reliably ({naive_failures}/20): the thief had no fair chance"
    );
    assert!(
        our_failures.is_empty(),
        "TestServer failed: {our_failures:#?}"
    );
}
