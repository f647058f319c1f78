//! The `counter` example as a plain server (no handoff channel): on a socket
//! the test binds and passes as fd 3, `incr` and `get` answer with the value;
//! an acknowledged `incr` survives `kill -9`, and the next generation, started
//! on the same socket, serves the persisted value and tags its writes with the
//! next generation number. A client that connects while no generation runs is
//! answered by the next one.
//!
//! The example's source is compiled into this test binary (`#[path]`), and the
//! binary re-runs itself as the server: `cargo test --test` does not build
//! examples, and this runs exactly the example's code.

#[path = "../examples/counter.rs"]
#[allow(dead_code, unreachable_pub)]
mod counter;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use porthold::activation::{Child, SpawnRequest};

const ROLE: &str = "PORTHOLD_TEST_COUNTER_ROLE";

#[test]
fn child_role() {
    if std::env::var(ROLE).is_err() {
        return;
    }
    if let Err(e) = counter::run(Vec::new()) {
        eprintln!("counter: {e}");
        std::process::exit(1);
    }
}

fn spawn(listener: &TcpListener, state_dir: &Path) -> Child {
    let exe = std::env::current_exe().unwrap();
    SpawnRequest::new(vec![
        exe.into_os_string(),
        "child_role".into(),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
        "-q".into(),
    ])
    .listener(listener.as_fd(), "counter")
    .env(ROLE, "1")
    .env("PORTHOLD_STATE_DIR", state_dir)
    .spawn()
    .unwrap()
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(listener: &TcpListener) -> Client {
        let conn = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Client {
            reader: BufReader::new(conn.try_clone().unwrap()),
            writer: conn,
        }
    }

    fn ask(&mut self, command: &str) -> String {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "a whole line: {line:?}");
        line.trim_end().to_string()
    }
}

fn stored(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("counter.json")).unwrap()).unwrap()
}

fn stop(child: Child) {
    child.kill(rustix::process::Signal::KILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn incr_and_get_answer_and_acknowledged_values_survive_a_kill_and_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let state = tempfile::tempdir().unwrap();

    let first = spawn(&listener, state.path());
    let mut a = Client::connect(&listener);
    assert_eq!(a.ask("incr"), "1");
    assert_eq!(a.ask("incr"), "2");
    assert_eq!(a.ask("get"), "2");
    let mut b = Client::connect(&listener);
    assert_eq!(b.ask("get"), "2");
    assert_eq!(b.ask("incr"), "3");
    assert_eq!(a.ask("get"), "3");
    assert!(b.ask("frobnicate").starts_with("error"));
    assert_eq!(
        stored(state.path()),
        serde_json::json!({"value": 3, "generation": 1})
    );
    stop(first);

    // Nobody accepts now, but the socket is still bound and listening.
    let mut waiting = Client::connect(&listener);
    let second = spawn(&listener, state.path());
    assert_eq!(waiting.ask("get"), "3");
    assert_eq!(waiting.ask("incr"), "4");
    assert_eq!(
        stored(state.path()),
        serde_json::json!({"value": 4, "generation": 2})
    );
    stop(second);
}

#[test]
fn a_second_server_on_the_same_state_directory_refuses_to_start() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let state = tempfile::tempdir().unwrap();
    let first = spawn(&listener, state.path());
    let mut a = Client::connect(&listener);
    assert_eq!(a.ask("incr"), "1");
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let second = spawn(&other, state.path());
    let status = second.wait().unwrap();
    assert_eq!(status.code(), Some(1), "the data-directory lock is held");
    assert_eq!(a.ask("get"), "1");
    stop(first);
}
