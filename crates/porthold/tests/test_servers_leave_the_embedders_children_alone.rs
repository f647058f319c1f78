//! Isolation inside one process: a test binary with its own unrelated children
//! starts and drops 10 TestServers; porthold never reaps or signals those
//! children (`Child::wait()` still returns their real exit status) and never
//! disturbs the binary's other TestServer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use porthold::testing::TestServer;

const FD3_SERVER: &str = "import os, socket\n\
s = socket.socket(fileno=3)\n\
while True:\n    c, _ = s.accept()\n    c.sendall(b'hi %d' % os.getpid())\n    c.close()\n";

fn answer(server: &TestServer) -> String {
    let mut conn = TcpStream::connect(server.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text
}

fn server() -> TestServer {
    TestServer::builder("python3")
        .args(["-S", "-c", FD3_SERVER])
        .start()
        .unwrap()
}

#[test]
fn test_servers_never_reap_or_signal_the_embedders_own_children() {
    if Command::new("python3").arg("-V").output().is_err() {
        porthold::test_hooks::skip("python3 is not installed");
        return;
    }
    // One child that has exited before any TestServer exists (a zombie until
    // we wait: a `waitpid(-1)` anywhere would steal its status), and one that
    // runs until we close its stdin (a kill of "everything below this
    // process" would end it with a signal instead of its own code).
    let mut exited = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
    let mut running = Command::new("sh")
        .args(["-c", "read line; exit 9"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (without reaping) until the first one is a zombie.
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", exited.id())).unwrap();
        let state = stat.rsplit_once(')').unwrap().1.split_whitespace().next();
        if state == Some("Z") {
            break;
        }
        std::thread::yield_now();
    }

    let other = server();
    let other_pid = other.pid();
    for _ in 0..10 {
        let s = server();
        assert_eq!(answer(&s), format!("hi {}", s.pid()));
        drop(s);
        assert_eq!(
            answer(&other),
            format!("hi {other_pid}"),
            "the other server was disturbed"
        );
    }
    let status = other
        .stop()
        .expect("the other server ran until asked to stop");
    assert_eq!(status.signal(), Some(libc::SIGTERM));

    assert!(
        running.try_wait().unwrap().is_none(),
        "our running child was signalled"
    );
    running.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(running.wait().unwrap().code(), Some(9));
    assert_eq!(
        exited.wait().expect("our child's status was stolen").code(),
        Some(7)
    );
}
