//! A request is served through the socket a launcher passed at fd 3 by receivers
//! written against other libraries and runtimes: the sd-notify crate (strict
//! LISTEN_PID check), the listenfd crate, porthold's own `listeners()`, Python's
//! `socket.socket(fileno=3)` and Node's `server.listen({fd: 3})`.

mod activation_support;

use std::ffi::OsString;

use activation_support::{
    Launcher, candidate_port, reply, role_argv, run_role_if_requested, serve_one,
    serve_one_on_ports, which,
};

/// Entry point of the child roles; a no-op in a normal test run.
#[test]
fn role_entry() {
    run_role_if_requested();
}

const LAUNCHERS: &[Launcher] = &[Launcher::SystemdSocketActivate, Launcher::PortholdRun];

/// Serves one request with `argv` (plus `env`) under every available launcher
/// and checks the reply is exactly `reply(who)`.
fn check_receiver(who: &str, env: &[(String, String)], argv: &[OsString]) {
    for &launcher in LAUNCHERS {
        if let Err(reason) = launcher.available() {
            porthold::test_hooks::skip(&format!("{launcher:?}: {reason}"));
            continue;
        }
        let response = serve_one(launcher, "web", env, argv);
        assert_eq!(response, reply(who), "{who} under {launcher:?}");
    }
}

fn check_role(role: &str, who: &str) {
    let (argv, role_env) = role_argv(role);
    check_receiver(who, &[role_env], &argv);
}

#[test]
fn request_is_served_by_a_sd_notify_receiver_with_strict_listen_pid() {
    check_role("sdnotify", "sd-notify (web)");
}

#[test]
fn request_is_served_by_a_listenfd_receiver() {
    check_role("listenfd", "listenfd");
}

/// The harness itself must not be fooled by the race porthold exists to
/// remove: a port that was free when chosen can be taken before the launcher
/// binds it. A squatter that listens but never answers holds the first
/// candidate; the request must go to the launcher's socket on the next port,
/// never to the squatter (which would leave the test waiting for a reply).
#[test]
fn a_candidate_port_taken_by_a_silent_listener_is_skipped_not_requested() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("squatter");
    let taken = squatter.local_addr().expect("addr").port();
    let mut ports = std::iter::once(taken).chain(std::iter::repeat_with(candidate_port));
    let (argv, role_env) = role_argv("porthold");
    let response = serve_one_on_ports(
        Launcher::PortholdRun,
        "web",
        &[role_env],
        &argv,
        &mut || ports.next().expect("endless"),
    );
    assert_eq!(response, reply("porthold"));
    drop(squatter);
}

#[test]
fn request_is_served_by_porthold_listeners() {
    check_role("porthold", "porthold");
}

const PYTHON_RECEIVER: &str = "\
import socket
s = socket.socket(fileno=3)
c, _ = s.accept()
data = b''
while b'\\r\\n\\r\\n' not in data:
    chunk = c.recv(4096)
    if not chunk:
        break
    data += chunk
c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nhello from python')
c.close()
";

#[test]
fn request_is_served_by_python_socket_fileno_3() {
    let Some(python) = which("python3") else {
        porthold::test_hooks::skip("python3 is not installed");
        return;
    };
    let argv: Vec<OsString> = vec![python.into(), "-c".into(), PYTHON_RECEIVER.into()];
    check_receiver("python", &[], &argv);
}

const NODE_RECEIVER: &str = "\
const net = require('net');
const server = net.createServer((c) => {
  let data = '';
  c.on('data', (chunk) => {
    data += chunk;
    if (data.includes('\\r\\n\\r\\n')) {
      c.end('HTTP/1.0 200 OK\\r\\n\\r\\nhello from node');
      server.close();
    }
  });
});
server.listen({ fd: 3 });
";

#[test]
fn request_is_served_by_node_listen_fd_3() {
    let Some(node) = which("node") else {
        porthold::test_hooks::skip("node is not installed");
        return;
    };
    let argv: Vec<OsString> = vec![node.into(), "-e".into(), NODE_RECEIVER.into()];
    check_receiver("node", &[], &argv);
}
