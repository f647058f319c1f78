//! `supervisor::instance::run` installs no signal handler: the embedder passes
//! the signals in as a `SignalSource`. Here the source is a channel: a stop
//! request sent on it ends a ready instance with the server's status, and the
//! process's own SIGTERM disposition is never touched.

use std::sync::mpsc;
use std::time::Duration;

use porthold::discovery;
use porthold::supervisor::instance::{self, RunOptions};
use porthold::supervisor::signals::SignalAction;
use rustix::process::Signal;

/// Signal numbers set in `/proc/self/status` field `field` (`SigCgt`, `SigIgn`).
fn own_signal_set(field: &str) -> Vec<i32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap();
    let mask = u64::from_str_radix(hex.trim(), 16).unwrap();
    (1..=64).filter(|n| mask & (1u64 << (n - 1)) != 0).collect()
}

#[test]
fn a_stop_request_from_the_embedders_source_ends_the_instance_and_no_handler_is_installed() {
    let dir = tempfile::tempdir().unwrap();
    let runtime_dir = dir.path().join("run");
    discovery::ensure_runtime_dir(&runtime_dir).unwrap();
    let key = discovery::Key {
        path: dir.path().display().to_string(),
        tag: String::new(),
    };
    let options = RunOptions::new(
        runtime_dir.clone(),
        "embedded",
        key,
        vec!["sleep".into(), "1000".into()],
    );
    let (stop, source) = mpsc::channel::<SignalAction>();
    let instance = std::thread::spawn(move || instance::run(options, source));
    let live = discovery::wait(
        &runtime_dir,
        "embedded",
        None,
        true,
        Duration::from_secs(60),
    )
    .expect("the instance became ready");
    assert!(live.record.child_pid.is_some());
    assert!(
        !own_signal_set("SigCgt").contains(&libc::SIGTERM),
        "the library installed a SIGTERM handler"
    );
    stop.send(SignalAction::Stop(Signal::TERM)).unwrap();
    let code = instance.join().unwrap().expect("run");
    assert_eq!(code, 128 + libc::SIGTERM);
    let after = discovery::probe(&runtime_dir, "embedded").unwrap();
    assert!(after.record.is_none(), "the record was removed");
}
