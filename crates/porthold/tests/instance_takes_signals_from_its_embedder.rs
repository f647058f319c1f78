//! `supervisor::instance::run` installs no signal handler: the embedder passes
//! the signals in as a `SignalSource`. Here the source is a channel: a stop
//! request sent on it ends a ready instance with the server's status, and the
//! process's own SIGTERM disposition is never touched.

use std::sync::mpsc;
use std::time::Duration;

use porthold::activation::notify::NotifyAccess;
use porthold::discovery;
use porthold::net::listen::ListenSpec;
use porthold::supervisor::instance::{self, RunOptions};
use porthold::supervisor::ready::ReadyMode;
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
    let options = RunOptions {
        runtime_dir: runtime_dir.clone(),
        name: "embedded".into(),
        key: discovery::Key {
            path: dir.path().display().to_string(),
            tag: String::new(),
        },
        listen: vec![ListenSpec::parse("default=tcp://127.0.0.1:0").unwrap()],
        backlog: 128,
        no_fds: false,
        ready: ReadyMode::Listen,
        notify_access: NotifyAccess::Tree,
        ready_timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(30),
        stop_signal: Signal::TERM,
        port_env: "PORT".into(),
        extra_env: Vec::new(),
        command: vec!["sleep".into(), "1000".into()],
        quiet: true,
        control_socket: false,
        reload_delay: instance::DEFAULT_RELOAD_DELAY,
        reload_confirm: instance::DEFAULT_RELOAD_CONFIRM,
        restart: instance::RestartPolicy::Never,
    };
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
