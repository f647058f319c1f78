//! A generation takes its handoff channel from `PORTHOLD_HANDOFF_FD`: the fd
//! is checked (a number ≥ 3, open, a stream socket), taken once, marked
//! close-on-exec, and speaks the protocol; `channel_pair` creates both ends
//! close-on-exec. Each case runs in a child process that inherits the fd.

use std::os::fd::{AsFd, AsRawFd};
use std::process::Command;

use porthold::handoff::{Role, Successor, SupervisorEvent, channel_from_env, channel_pair};
use rustix::io::{FdFlags, fcntl_getfd, fcntl_setfd};

mod handoff_support;

const ROLE: &str = "PORTHOLD_TEST_ENV_ROLE";

fn child(role: &str, fd_value: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "child_role",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env(ROLE, role)
    .env("PORTHOLD_HANDOFF_FD", fd_value);
    c
}

#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    match role.as_str() {
        "successor" => {
            let stream = channel_from_env().unwrap().expect("a channel");
            let flags = fcntl_getfd(stream.as_fd()).unwrap();
            assert!(
                flags.contains(FdFlags::CLOEXEC),
                "taken fds are close-on-exec"
            );
            assert!(channel_from_env().is_err(), "taken only once");
            let begun = Successor::new(stream, "child")
                .unwrap()
                .wait_begin()
                .unwrap();
            assert_eq!(begun.deadline().as_millis(), 1234);
        }
        "invalid" => match channel_from_env() {
            Err(porthold::Error::Invalid { .. }) => {}
            other => panic!("expected Invalid, got {other:?}"),
        },
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn channel_pair_ends_are_close_on_exec() {
    let (a, b) = channel_pair().unwrap();
    for end in [&a, &b] {
        assert!(fcntl_getfd(end.as_fd()).unwrap().contains(FdFlags::CLOEXEC));
    }
}

#[test]
fn a_successor_takes_its_inherited_channel_and_reaches_begin() {
    let (ours, theirs) = channel_pair().unwrap();
    // Let exactly this end survive exec at its own number.
    fcntl_setfd(theirs.as_fd(), FdFlags::empty()).unwrap();
    let mut process = child("successor", &theirs.as_raw_fd().to_string())
        .spawn()
        .unwrap();
    drop(theirs);
    let mut supervisor = handoff_support::Supervised::new(ours, Role::Successor);
    supervisor.until(|e| matches!(e, SupervisorEvent::SessionOpened { .. }));
    let now = std::time::Instant::now();
    let begin = supervisor
        .machine
        .begin(now, now + std::time::Duration::from_millis(1234))
        .unwrap();
    supervisor.send(&begin);
    let status = process.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_channel_values_are_invalid_and_take_nothing() {
    let file = tempfile::tempfile().unwrap();
    fcntl_setfd(file.as_fd(), FdFlags::empty()).unwrap();
    let not_a_socket = file.as_raw_fd().to_string();
    for value in ["abc", "-1", "2", "987", not_a_socket.as_str()] {
        let status = child("invalid", value).status().unwrap();
        assert!(status.success(), "PORTHOLD_HANDOFF_FD={value}: {status:?}");
    }
}
