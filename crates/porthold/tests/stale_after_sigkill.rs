//! Liveness follows the lock and the process identity, not `kill(pid, 0)`:
//! a SIGKILLed publisher is stale on the very first lookup, a SIGSTOPped one
//! is still alive, and a server it spawned (the lock fd is CLOEXEC) does not
//! keep a dead publisher's name alive or taken.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{DIR, NAME, say};
use porthold::Error;
use porthold::discovery::{Liveness, Publisher, State, lookup, new_instance_id, probe};
use porthold::identity::{self, ProcessIdentity};
use rustix::process::Signal;

const PUBLISHER: &str = "publisher_child";

#[test]
fn publisher_child() {
    let Some(role) = common::role() else { return };
    let dir = common::env_path(DIR);
    let name = common::env_str(NAME);
    let id = new_instance_id().unwrap();
    let mut publisher = Publisher::acquire(&dir, &name, &id).unwrap();
    let mut record = common::record(&name, &id);
    record.state = State::Ready;
    let mut server = None;
    if role == "publisher-with-server" {
        // A server started the usual way (fork + exec): it must not inherit the lock.
        let child = Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        record.child_pid = Some(child.id());
        server = Some(child);
    }
    publisher.publish(&record).unwrap();
    match &server {
        Some(s) => say(format!("ready {id} {}", s.id())),
        None => say(format!("ready {id}")),
    }
    common::wait_for_stdin_eof();
    publisher.finish().unwrap();
}

fn start_publisher(
    dir: &std::path::Path,
    name: &str,
    role: &str,
) -> (std::process::Child, Vec<String>) {
    let (child, out) = common::spawn(common::child(PUBLISHER, role, dir, name));
    let line = out.next();
    let words: Vec<String> = line.split(' ').map(String::from).collect();
    assert_eq!(words[0], "ready", "{line}");
    (child, words)
}

#[test]
fn a_sigkilled_publisher_is_stale_on_the_first_lookup() {
    if common::role().is_some() {
        return;
    }
    let (_tmp, dir) = common::runtime_dir();
    for round in 0..20 {
        let (mut child, words) = start_publisher(&dir, "web", "publisher");
        let live = lookup(&dir, "web").unwrap().expect("alive before the kill");
        assert_eq!(live.record.instance_id, words[1]);
        assert_eq!(live.liveness, Liveness::Alive);
        common::send_signal(child.id(), Signal::KILL);
        child.wait().unwrap();
        // First call after the launcher is gone: not alive, and the reader left the file alone.
        let p = probe(&dir, "web").unwrap();
        assert_eq!(p.liveness, Liveness::StaleLockFree, "round {round}");
        assert!(lookup(&dir, "web").unwrap().is_none());
        assert!(
            dir.join("web.json").exists(),
            "readers never delete a record"
        );
    }
    // The next owner takes the lock and removes the dead owner's record.
    let publisher = Publisher::acquire(&dir, "web", &new_instance_id().unwrap()).unwrap();
    assert!(!dir.join("web.json").exists());
    assert_eq!(probe(&dir, "web").unwrap().liveness, Liveness::Starting);
    publisher.finish().unwrap();
    assert_eq!(probe(&dir, "web").unwrap().liveness, Liveness::Absent);
}

fn wait_for_state(pid: u32, want: char) {
    let deadline = Instant::now() + common::HANG;
    while identity::stat(pid).unwrap().map(|s| s.state) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "pid {pid} never reached state {want}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_sigstopped_publisher_is_still_alive() {
    if common::role().is_some() {
        return;
    }
    let (_tmp, dir) = common::runtime_dir();
    let (mut child, words) = start_publisher(&dir, "api", "publisher");
    common::send_signal(child.id(), Signal::STOP);
    wait_for_state(child.id(), 'T');
    let live = lookup(&dir, "api")
        .unwrap()
        .expect("a stopped publisher is alive");
    assert_eq!(live.liveness, Liveness::Alive);
    assert_eq!(live.record.instance_id, words[1]);
    // And it still owns the name.
    match Publisher::acquire(&dir, "api", &new_instance_id().unwrap()) {
        Err(Error::NameTaken {
            pid, instance_id, ..
        }) => {
            assert_eq!(pid, Some(child.id()));
            assert_eq!(instance_id.as_deref(), Some(words[1].as_str()));
        }
        other => panic!("expected NameTaken, got {other:?}"),
    }
    common::send_signal(child.id(), Signal::CONT);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert!(lookup(&dir, "api").unwrap().is_none());
}

#[test]
fn a_server_spawned_by_a_dead_publisher_does_not_keep_its_name() {
    if common::role().is_some() {
        return;
    }
    let (_tmp, dir) = common::runtime_dir();
    let (mut child, words) = start_publisher(&dir, "db", "publisher-with-server");
    let server_pid: u32 = words[2].parse().unwrap();
    let server = KillOnDrop(
        ProcessIdentity::of(server_pid)
            .unwrap()
            .expect("server runs"),
    );
    common::send_signal(child.id(), Signal::KILL);
    child.wait().unwrap();
    assert!(
        server.0.is_alive(),
        "the server outlives its launcher in this test"
    );
    // The lock died with the launcher: the server did not inherit it.
    let p = probe(&dir, "db").unwrap();
    assert_eq!(p.liveness, Liveness::StaleLockFree);
    Publisher::acquire(&dir, "db", &new_instance_id().unwrap())
        .expect("the name is free once the launcher is dead")
        .finish()
        .unwrap();
}

/// Kills an orphaned process we caused to exist, if it is still the same process.
struct KillOnDrop(ProcessIdentity);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.is_alive() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(self.0.pid as i32).unwrap(),
                Signal::KILL,
            );
        }
    }
}
