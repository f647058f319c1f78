//! READY=1 reaches the launcher with the sender's pid from the kernel, and the
//! access policy accepts it only from the main child (Main) or its process tree
//! (Tree): a process that is not a descendant of the main child is rejected even
//! though it can write to the socket.

mod activation_support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};

use activation_support::{HANG, ROLE, role_argv, run_role_if_requested};
use porthold::activation::notify::{NotifyAccess, NotifyMessage, NotifyServer, accepts};

/// Entry point of the child roles; a no-op in a normal test run.
#[test]
fn role_entry() {
    run_role_if_requested();
}

/// Starts this binary in `role` with stdin piped (closing it ends the child).
fn spawn_role(role: &str, notify_socket: Option<&std::path::Path>, status: &str) -> Child {
    let (argv, _) = role_argv(role);
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .env(ROLE, role)
        .env("PORTHOLD_TEST_STATUS", status)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(p) = notify_socket {
        c.env("NOTIFY_SOCKET", p);
    }
    c.spawn().expect("spawning a role")
}

/// Reads the child's stdout until a `KEY=` line and returns its value. Reads a
/// byte at a time so nothing after that line is consumed (later calls see it).
fn read_value(child: &mut Child, key: &str) -> String {
    use std::io::Read;
    let out = child.stdout.as_mut().expect("piped stdout");
    let prefix = format!("{key}=");
    loop {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = out.read(&mut byte).expect("reading child stdout");
            assert!(n > 0, "child ended before printing {key}=");
            if byte[0] == b'\n' {
                break;
            }
            line.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        if let Some(v) = line.strip_prefix(&prefix) {
            return v.to_string();
        }
    }
}

/// Closes the child's stdin (its signal to exit) and reaps it.
fn end(mut child: Child) {
    drop(child.stdin.take());
    let status = child.wait().expect("wait");
    assert!(status.success(), "role child failed: {status}");
}

fn recv_ready(server: &NotifyServer) -> NotifyMessage {
    server
        .recv(HANG)
        .expect("recv")
        .expect("no notify message before the hang limit")
}

#[test]
fn ready_from_the_main_child_is_received_with_its_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NotifyServer::bind(dir.path()).expect("bind");
    let mut main = spawn_role("notify_ready", Some(server.path()), "warming up");
    assert_eq!(read_value(&mut main, "SENT"), "true");
    let msg = recv_ready(&server);
    assert!(msg.ready, "{msg:?}");
    assert_eq!(msg.status.as_deref(), Some("warming up"));
    assert_eq!(msg.pid, main.id());
    assert_eq!(msg.uid, rustix::process::getuid().as_raw());
    assert!(accepts(NotifyAccess::Main, main.id(), msg.pid));
    assert!(accepts(NotifyAccess::Tree, main.id(), msg.pid));
    end(main);
}

#[test]
fn ready_from_an_unrelated_process_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NotifyServer::bind(dir.path()).expect("bind");
    // The main child never says anything; a sibling of it (also our child, but
    // not the main child's descendant) sends READY=1.
    let mut main = spawn_role("idle", Some(server.path()), "");
    read_value(&mut main, "IDLE");
    let mut intruder = spawn_role("notify_ready", Some(server.path()), "intruder");
    assert_eq!(read_value(&mut intruder, "SENT"), "true");
    let msg = recv_ready(&server);
    assert!(msg.ready);
    assert_eq!(msg.pid, intruder.id(), "the kernel names the real sender");
    assert!(!accepts(NotifyAccess::Tree, main.id(), msg.pid));
    assert!(!accepts(NotifyAccess::Main, main.id(), msg.pid));
    end(intruder);
    end(main);
}

#[test]
fn a_grandchild_is_accepted_under_tree_and_rejected_under_main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NotifyServer::bind(dir.path()).expect("bind");
    let mut main = spawn_role("spawn_sender", Some(server.path()), "from the tree");
    let grandchild: u32 = read_value(&mut main, "GRANDCHILD")
        .parse()
        .expect("grandchild pid");
    let msg = recv_ready(&server);
    assert!(msg.ready);
    assert_eq!(msg.pid, grandchild);
    assert_ne!(msg.pid, main.id());
    assert!(accepts(NotifyAccess::Tree, main.id(), msg.pid));
    assert!(!accepts(NotifyAccess::Main, main.id(), msg.pid));
    // The main child is not a descendant of its own grandchild.
    assert!(!accepts(NotifyAccess::Tree, grandchild, main.id()));
    end(main);
}

#[test]
fn a_great_grandchild_is_accepted_under_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NotifyServer::bind(dir.path()).expect("bind");
    let (argv, _) = role_argv("spawn_sender");
    let mut main = Command::new(&argv[0])
        .args(&argv[1..])
        .env(ROLE, "spawn_sender")
        .env("PORTHOLD_TEST_DEPTH", "3")
        .env("NOTIFY_SOCKET", server.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let sender: u32 = read_value(&mut main, "GRANDCHILD").parse().expect("pid");
    let msg = recv_ready(&server);
    assert_eq!(msg.pid, sender);
    assert!(accepts(NotifyAccess::Tree, main.id(), msg.pid));
    assert!(!accepts(NotifyAccess::Main, main.id(), msg.pid));
    end(main);
}

#[test]
fn pid_zero_and_vanished_processes_are_never_accepted() {
    let me = std::process::id();
    assert!(!accepts(NotifyAccess::Tree, me, 0));
    assert!(!accepts(NotifyAccess::Main, 0, 0));
    assert!(!accepts(NotifyAccess::Tree, 0, me));
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let gone_pid = gone.id();
    gone.wait().expect("wait");
    // Reaped: /proc/<pid> no longer exists, so its ancestry is unknown.
    assert!(!accepts(NotifyAccess::Tree, me, gone_pid));
}

#[test]
fn a_sender_outside_the_receivers_pid_namespace_is_dropped() {
    // The receiver runs as pid 1 of a new pid namespace; we (outside it) have no
    // pid there, so the kernel reports our pid as 0 and the message is dropped.
    let unshare_works = Command::new("unshare")
        .args(["-p", "-f", "true"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !unshare_works {
        porthold::test_hooks::skip("`unshare -p -f` is unavailable (needs root and util-linux)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (argv, _) = role_argv("notify_receiver");
    let mut receiver = Command::new("unshare")
        .args(["-p", "-f", "--kill-child"])
        .args(&argv)
        .env(ROLE, "notify_receiver")
        .env("PORTHOLD_TEST_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let path = read_value(&mut receiver, "PATH");
    porthold::activation::receive::notify_to(
        std::ffi::OsStr::new(&path),
        "READY=1\nSTATUS=outsider",
    )
    .expect("send from outside");
    {
        use std::io::Write;
        let stdin = receiver.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("go");
    }
    assert_eq!(read_value(&mut receiver, "FIRST_STATUS"), "self");
    assert_eq!(read_value(&mut receiver, "FIRST_PID"), "1");
    end(receiver);
}

#[test]
fn notify_without_notify_socket_sends_nothing_and_says_so() {
    let mut child = spawn_role("notify_ready", None, "");
    assert_eq!(read_value(&mut child, "SENT"), "false");
    end(child);
}

#[test]
fn notify_reaches_an_abstract_socket() {
    let name = format!("porthold-test-notify-{}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .expect("abstract addr");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract");
    sock.set_read_timeout(Some(HANG)).expect("timeout");
    let abstract_path = std::path::PathBuf::from(format!("@{name}"));
    let mut child = spawn_role("notify_ready", Some(&abstract_path), "abstract");
    assert_eq!(read_value(&mut child, "SENT"), "true");
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("recv on abstract socket");
    assert_eq!(&buf[..n], b"READY=1\nSTATUS=abstract");
    end(child);
}

#[test]
fn notify_socket_file_is_private_unique_and_removed_on_drop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = NotifyServer::bind(dir.path()).expect("bind a");
    let b = NotifyServer::bind(dir.path()).expect("bind b");
    assert_ne!(a.path(), b.path());
    for s in [&a, &b] {
        assert_eq!(s.path().parent(), Some(dir.path()));
        let meta = std::fs::symlink_metadata(s.path()).expect("socket file");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    // Only the two sockets are left: no temporary names.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 2);
    let a_path = a.path().to_path_buf();
    drop(a);
    assert!(!a_path.exists(), "socket file left behind");
    assert!(b.path().exists());
}

#[test]
fn recv_gives_up_after_the_timeout_when_nobody_sends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NotifyServer::bind(dir.path()).expect("bind");
    let got = server
        .recv(std::time::Duration::from_millis(50))
        .expect("recv");
    assert_eq!(got, None);
}

#[test]
fn the_socket_is_close_on_exec() {
    use std::os::fd::{AsFd, AsRawFd};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = NotifyServer::bind(dir.path()).expect("bind");
    let fd = server.as_fd().as_raw_fd();
    let flags = rustix::io::fcntl_getfd(server.as_fd()).expect("getfd");
    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC), "fd {fd}");
}
