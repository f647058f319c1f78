//! A peer whose uid is not the server's effective uid is refused by the
//! `SO_PEERCRED` check: its request never reaches the handler and it gets no
//! reply, while a peer of the right uid is served on the next connection.
//!
//! The runtime directory (0700) and the socket (0600) already stop other users
//! at `connect`; to reach the peer check at all, this test opens them up
//! (0777 and 0666). The foreign peer is this test binary, copied where uid
//! 65534 can run it and started with that uid (needs root; skipped otherwise).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use porthold::control::{ControlClient, ControlServer, Request, Response};

const ROLE: &str = "PORTHOLD_TEST_FOREIGN_PEER_SOCKET";
const NOBODY: u32 = 65534;

/// The foreign peer: connect, ask for the status, print what came back.
#[test]
fn foreign_peer_role() {
    let Some(path) = std::env::var_os(ROLE) else {
        return;
    };
    assert_eq!(rustix::process::getuid().as_raw(), NOBODY);
    let outcome = ControlClient::connect(&PathBuf::from(path))
        .and_then(|mut client| client.request(&Request::Status, Duration::from_secs(10)));
    match outcome {
        Ok(reply) => println!("outcome: reply {reply:?}"),
        Err(e) => println!("outcome: refused ({e})"),
    }
}

#[test]
fn a_peer_with_another_uid_is_refused_and_the_next_peer_is_served() {
    if !rustix::process::geteuid().is_root() {
        porthold::test_hooks::skip("needs root to start a peer with another uid");
        return;
    }
    let dir = private_dir();
    let handled = AtomicU64::new(0);
    let handler = |request: Request| {
        handled.fetch_add(1, Ordering::SeqCst);
        match request {
            Request::Status => Response::Status {
                status: serde_json::json!({"state": "ready"}),
            },
            _ => Response::Unsupported {
                reason: "test".into(),
            },
        }
    };
    let server = ControlServer::bind(dir.path(), "web").unwrap();
    let path = server.path().to_owned();
    // Open the doors the file modes normally keep shut, so the uid check is
    // the only thing left between the foreign peer and the handler.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let exe = dir.path().join("peer");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();

    let stop = server.shutdown_handle();
    std::thread::scope(|s| {
        // A failed assertion must end the serve loop too, or the scope would wait forever.
        let _stop_on_unwind = StopOnDrop(stop.clone());
        let serving = s.spawn(|| server.serve(&handler));
        let output = Command::new(&exe)
            .args([
                "foreign_peer_role",
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(ROLE, &path)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "peer failed: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("outcome: "))
            .unwrap_or_else(|| panic!("no outcome from the peer: {stdout}"));
        eprintln!("foreign peer: {line}");
        assert!(
            line.starts_with("outcome: refused"),
            "the foreign peer was served: {line}"
        );
        assert_eq!(
            handled.load(Ordering::SeqCst),
            0,
            "the foreign request reached the handler"
        );
        assert_eq!(server.stats().refused_peers, 1);

        // The loop is alive and serves a peer of its own uid.
        let mut client = ControlClient::connect(&path).unwrap();
        let reply = client
            .request(&Request::Status, Duration::from_secs(10))
            .unwrap();
        assert!(matches!(reply, Response::Status { .. }), "{reply:?}");
        assert_eq!(handled.load(Ordering::SeqCst), 1);
        drop(client);
        stop.shutdown();
        serving.join().unwrap().unwrap();
    });
}

struct StopOnDrop(porthold::control::ShutdownHandle);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// A runtime directory as `discovery::ensure_runtime_dir` makes it: 0700.
fn private_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}
