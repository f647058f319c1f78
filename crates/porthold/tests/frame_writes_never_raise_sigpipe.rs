//! Writing a frame to a channel whose peer is gone is an `EPIPE` error, never a
//! `SIGPIPE`, even in a process that left `SIGPIPE` at its default disposition
//! (Rust programs ignore it, but a library may live in any host). Each case
//! runs in a child with `SIGPIPE` restored to the default; the negative control
//! (a plain `write(2)` on the same socket) proves the child would die of it.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use porthold::control::frame::{Frame, FrameError, send_frame};

const ROLE: &str = "PORTHOLD_TEST_SIGPIPE_ROLE";

fn run_child(role: &str) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, role)
        .status()
        .unwrap()
}

#[test]
fn child_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    // SAFETY: restoring a default signal disposition is async-signal-safe and
    // this child process runs nothing else concurrently that depends on it.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let frame = Frame::new(
        1,
        Some("x"),
        &serde_json::json!({"type": "heartbeat", "seq": 1}),
    )
    .unwrap();
    match role.as_str() {
        "plain-write" => {
            // write(2) on the socket, as any fd-level writer (a File over a
            // received fd, a C host) does.
            let file = std::fs::File::from(std::os::fd::OwnedFd::from(a));
            let _ = (&file).write_all(&frame.encode().unwrap());
        }
        "send-frame" => {
            let err = send_frame(&a, &frame).unwrap_err();
            assert!(
                matches!(&err, FrameError::Io(e) if e.raw_os_error() == Some(libc::EPIPE)),
                "{err:?}"
            );
        }
        "channel" => {
            let channel = porthold::handoff::Channel::new(a).unwrap();
            assert!(channel.sender().send_frame(&frame).is_err());
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_plain_write_to_a_closed_peer_kills_a_default_disposition_process() {
    assert_eq!(run_child("plain-write").signal(), Some(libc::SIGPIPE));
}

#[test]
fn send_frame_to_a_closed_peer_is_epipe_not_a_signal() {
    let status = run_child("send-frame");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_handoff_channel_to_a_closed_peer_is_an_error_not_a_signal() {
    let status = run_child("channel");
    assert!(status.success(), "{status:?}");
}
