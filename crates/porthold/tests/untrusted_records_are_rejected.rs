//! Readers trust only regular files owned by their own uid, never follow
//! symlinks, and never delete anything — not even from another pid namespace
//! where the record's pid means nothing.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::{DIR, NAME, say};
use porthold::Error;
use porthold::discovery::{Liveness, Publisher, State, list, lookup, new_instance_id, probe, wait};

const READER: &str = "reader_child";

fn publish(dir: &std::path::Path, name: &str) -> Publisher {
    let id = new_instance_id().unwrap();
    let mut p = Publisher::acquire(dir, name, &id).unwrap();
    let mut r = common::record(name, &id);
    r.state = State::Ready;
    p.publish(&r).unwrap();
    p
}

fn assert_bad_record(result: porthold::Result<impl std::fmt::Debug>, needle: &str) {
    match result {
        Err(e @ Error::BadRecord { .. }) => {
            assert!(e.to_string().contains(needle), "{e}");
            assert_eq!(e.kind(), porthold::ErrorKind::Corrupt);
        }
        other => panic!("expected BadRecord ({needle}), got {other:?}"),
    }
}

#[test]
fn a_symlinked_record_is_rejected() {
    if common::role().is_some() {
        return;
    }
    let (tmp, dir) = common::runtime_dir();
    let _good = publish(&dir, "good");
    let _held = publish(&dir, "web");
    // Replace the record with a symlink to a perfectly valid copy elsewhere.
    let elsewhere = tmp.path().join("planted.json");
    fs::copy(dir.join("web.json"), &elsewhere).unwrap();
    fs::remove_file(dir.join("web.json")).unwrap();
    symlink(&elsewhere, dir.join("web.json")).unwrap();
    assert_bad_record(lookup(&dir, "web"), "symbolic link");
    // One planted file does not hide the other instances from `ps`.
    let names: Vec<String> = list(&dir)
        .unwrap()
        .into_iter()
        .map(|r| r.record.name)
        .collect();
    assert_eq!(names, ["good"]);
    // The reader left both the symlink and its target alone.
    assert!(
        fs::symlink_metadata(dir.join("web.json"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(elsewhere.exists());
}

#[test]
fn a_symlinked_lock_file_is_rejected_by_readers_and_publishers() {
    if common::role().is_some() {
        return;
    }
    let (tmp, dir) = common::runtime_dir();
    let real = tmp.path().join("real.lock");
    fs::write(&real, b"").unwrap();
    symlink(&real, dir.join("api.lock")).unwrap();
    assert_bad_record(probe(&dir, "api"), "symbolic link");
    assert_bad_record(
        Publisher::acquire(&dir, "api", &new_instance_id().unwrap()),
        "symbolic link",
    );
}

#[test]
fn a_record_owned_by_another_uid_is_rejected() {
    if common::role().is_some() {
        return;
    }
    if !common::is_root() {
        porthold::test_hooks::skip("needs root to chown a record to uid 65534");
        return;
    }
    let (_tmp, dir) = common::runtime_dir();
    let _held = publish(&dir, "web");
    std::os::unix::fs::chown(dir.join("web.json"), Some(65534), Some(65534)).unwrap();
    assert_bad_record(lookup(&dir, "web"), "owned by uid 65534");
    assert!(list(&dir).unwrap().is_empty());
}

#[test]
fn a_planted_fifo_is_rejected_without_hanging() {
    if common::role().is_some() {
        return;
    }
    let (_tmp, dir) = common::runtime_dir();
    let _held = publish(&dir, "web");
    fs::remove_file(dir.join("web.json")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg("-m600")
        .arg(dir.join("web.json"))
        .status();
    if !made.is_ok_and(|s| s.success()) {
        porthold::test_hooks::skip("mkfifo(1) unavailable");
        return;
    }
    assert_bad_record(lookup(&dir, "web"), "not a regular file");
}

/// Runs inside a fresh pid namespace (with its own /proc): reads a record
/// whose owner lives outside, with every reader entry point.
#[test]
fn reader_child() {
    if common::role().as_deref() != Some("reader") {
        return;
    }
    say("started");
    let dir = common::env_path(DIR);
    let name = common::env_str(NAME);
    let p = probe(&dir, &name).unwrap();
    say(format!("probe {:?}", p.liveness));
    say(format!("lookup {}", lookup(&dir, &name).unwrap().is_some()));
    say(format!("list {}", list(&dir).unwrap().len()));
    let id = p.record.map(|r| r.instance_id).unwrap_or_default();
    say(format!(
        "wait {}",
        wait(
            &dir,
            &name,
            Some(&id),
            true,
            std::time::Duration::from_secs(5)
        )
        .is_ok()
    ));
}

#[test]
fn a_reader_in_another_pid_namespace_does_not_delete_a_live_record() {
    if common::role().is_some() {
        return;
    }
    let (_tmp, dir) = common::runtime_dir();
    let held = publish(&dir, "web");
    let record_before = fs::read(dir.join("web.json")).unwrap();
    let lock_before = fs::read(dir.join("web.lock")).unwrap();
    let Some((mut child, out)) = common::unshare_child(READER, "reader", &dir, "web") else {
        return;
    };
    match out.next_or_end().as_deref() {
        Some("started") => {}
        other => {
            let status = child.wait().unwrap();
            porthold::test_hooks::skip(&format!(
                "the test binary did not start inside the pid namespace ({other:?}, {status})"
            ));
            return;
        }
    }
    // Our pid does not exist (or is someone else) in there: the lock alone says alive.
    assert_eq!(out.next(), "probe AliveInOtherPidNamespace");
    assert_eq!(out.next(), "lookup true");
    assert_eq!(out.next(), "list 1");
    assert_eq!(out.next(), "wait true");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(
        fs::read(dir.join("web.json")).unwrap(),
        record_before,
        "the record is untouched"
    );
    assert_eq!(
        fs::read(dir.join("web.lock")).unwrap(),
        lock_before,
        "the lock file is untouched"
    );
    assert_eq!(probe(&dir, "web").unwrap().liveness, Liveness::Alive);
    held.finish().unwrap();
}
