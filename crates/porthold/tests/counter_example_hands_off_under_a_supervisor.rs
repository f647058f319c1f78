//! The `counter` example under the handoff protocol, as separate processes on
//! one listening socket, driven by a supervisor loop built on the library's
//! supervisor-side machines: a good successor takes over the count (and tags
//! its writes with the next generation) and the incumbent exits on `Commit`; a
//! successor started with `--hang-after-begin-if FILE` (FILE present) stops
//! responding after `Begin`, is killed at the deadline, and the incumbent
//! serves on with its lock and its count.
//!
//! The example's source is compiled into this test binary, which re-runs itself
//! as the server. Each child reaches its channel by connecting to a Unix socket
//! the test listens on (the spawn helper passes only listening sockets), and
//! gets the connected stream as its handoff channel.

#[path = "../examples/counter.rs"]
#[allow(dead_code, unreachable_pub)]
mod counter;
mod handoff_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use porthold::activation::{Child, SpawnRequest};
use porthold::handoff::Role;

use handoff_support::{Attempt, Supervised, run_attempt};

const ROLE: &str = "PORTHOLD_TEST_COUNTER_HANDOFF_ROLE";
const CHANNEL: &str = "PORTHOLD_TEST_CHANNEL_PATH";
const HANG: &str = "PORTHOLD_TEST_HANG_FILE";

#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let role = match role.as_str() {
        "incumbent" => Role::Incumbent,
        _ => Role::Successor,
    };
    let stream = UnixStream::connect(std::env::var_os(CHANNEL).unwrap()).unwrap();
    let mut args = Vec::new();
    if let Some(file) = std::env::var_os(HANG) {
        args.push("--hang-after-begin-if".into());
        args.push(file);
    }
    if let Err(e) = counter::run_with(args, Some((role, stream))) {
        eprintln!("counter: {e}");
        std::process::exit(1);
    }
}

struct Harness {
    listener: TcpListener,
    channels: UnixListener,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let channels = UnixListener::bind(dir.path().join("channels.sock")).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        Harness {
            listener: TcpListener::bind("127.0.0.1:0").unwrap(),
            channels,
            dir,
        }
    }

    fn state(&self) -> std::path::PathBuf {
        self.dir.path().join("state")
    }

    /// Starts a generation in `role`; returns it and porthold's end of its channel.
    fn spawn(&self, role: &str, hang_file: Option<&Path>) -> (Child, UnixStream) {
        let exe = std::env::current_exe().unwrap();
        let mut request = SpawnRequest::new(vec![
            exe.into_os_string(),
            "child_role".into(),
            "--exact".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
            "-q".into(),
        ])
        .listener(self.listener.as_fd(), "counter")
        .env(ROLE, role)
        .env(CHANNEL, self.dir.path().join("channels.sock"))
        .env("PORTHOLD_STATE_DIR", self.state());
        if let Some(file) = hang_file {
            request = request.env(HANG, file);
        }
        let child = request.spawn().unwrap();
        let (stream, _) = self.channels.accept().unwrap();
        (child, stream)
    }

    fn ask(&self, command: &str) -> String {
        let mut conn = TcpStream::connect(self.listener.local_addr().unwrap()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        conn.write_all(format!("{command}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn stored(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.state().join("counter.json")).unwrap()).unwrap()
    }
}

fn start(h: &Harness) -> (Child, Supervised) {
    let (child, stream) = h.spawn("incumbent", None);
    let mut incumbent = Supervised::new(stream, Role::Incumbent);
    incumbent.until_open();
    assert_eq!(h.ask("incr"), "1");
    assert_eq!(h.ask("incr"), "2");
    (child, incumbent)
}

#[test]
fn a_good_successor_takes_the_count_over_and_the_incumbent_exits_on_commit() {
    let h = Harness::new();
    let (old, mut incumbent) = start(&h);
    let mut new = None;
    let outcome = run_attempt(
        &mut incumbent,
        Duration::from_secs(20),
        || {
            let (child, stream) = h.spawn("successor", None);
            new = Some(child);
            stream
        },
        || panic!("nothing to kill"),
    );
    let Attempt::Committed { successor } = outcome else {
        panic!("expected a commit: {outcome:?}");
    };
    let status = old.wait().unwrap();
    assert!(
        status.success(),
        "the incumbent exits cleanly on Commit: {status:?}"
    );
    assert_eq!(h.ask("get"), "2");
    assert_eq!(h.ask("incr"), "3");
    assert_eq!(h.stored(), serde_json::json!({"value": 3, "generation": 2}));
    drop(successor);
    let new = new.unwrap();
    new.kill(rustix::process::Signal::KILL).unwrap();
    new.wait().unwrap();
}

#[test]
fn a_successor_hanging_after_begin_is_killed_and_the_incumbent_serves_on() {
    let h = Harness::new();
    let flag = h.dir.path().join("hang");
    std::fs::write(&flag, "").unwrap();
    let (old, mut incumbent) = start(&h);
    let new = std::cell::RefCell::new(None);
    let outcome = run_attempt(
        &mut incumbent,
        Duration::from_millis(2000),
        || {
            let (child, stream) = h.spawn("successor", Some(&flag));
            *new.borrow_mut() = Some(child);
            stream
        },
        || {
            let child = new.borrow_mut().take().expect("a successor ran");
            child.kill(rustix::process::Signal::KILL).unwrap();
            child.wait().unwrap();
        },
    );
    match outcome {
        Attempt::RolledBack { reason } => assert!(reason.contains("deadline"), "{reason}"),
        other => panic!("expected a rollback: {other:?}"),
    }
    // The incumbent re-locked, re-read its state and accepts again.
    assert_eq!(h.ask("get"), "2");
    assert_eq!(h.ask("incr"), "3");
    assert_eq!(h.stored(), serde_json::json!({"value": 3, "generation": 1}));
    incumbent.until_open();
    old.kill(rustix::process::Signal::KILL).unwrap();
    old.wait().unwrap();
}
