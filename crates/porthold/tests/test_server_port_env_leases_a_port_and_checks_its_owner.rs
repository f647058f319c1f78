//! `TestServer::port_env`: a server that binds by itself is told a leased
//! port by number, gets no sockets, and must be the one listening on it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use porthold::registry::Registry;
use porthold::supervisor::LaunchError;
use porthold::testing::TestServer;

fn have_python() -> bool {
    if Command::new("python3").arg("-V").output().is_ok() {
        return true;
    }
    porthold::test_hooks::skip("python3 is not installed");
    false
}

/// One registry for every test of this binary: leases are distinct only
/// within one registry, so tests that run in parallel must share it (as a
/// suite's TestServers would share the user's).
fn data_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// The leases of `port` in the shared registry.
fn leases_of(port: u16) -> Vec<porthold::registry::Lease> {
    Registry::open(data_dir(), Duration::from_secs(5))
        .unwrap()
        .leases()
        .unwrap()
        .into_iter()
        .filter(|lease| lease.port == port)
        .collect()
}

fn http_get(url: &str, path: &str) -> String {
    let addr = url.strip_prefix("http://").unwrap();
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn a_python_http_server_on_port_answers_on_url_and_its_lease_ends_with_it() {
    if !have_python() {
        return;
    }
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("index.html"), "served-by-number").unwrap();
    let server = TestServer::builder("sh")
        .args([
            "-c",
            "test -z \"$LISTEN_FDS\" || exit 9; \
             exec python3 -m http.server \"$PORT\" --bind 127.0.0.1",
        ])
        .current_dir(site.path())
        .port_env("PORT")
        .data_dir(data_dir())
        .start()
        .expect("the server bound its port");
    let port = server.port();
    assert_eq!(server.addr(), format!("127.0.0.1:{port}").parse().unwrap());
    assert_eq!(server.url(), format!("http://127.0.0.1:{port}"));
    let response = http_get(&server.url(), "/index.html");
    assert!(response.contains("served-by-number"), "{response}");
    // The port is leased to this test process while the server runs.
    let held = leases_of(port);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].owner.pid, std::process::id());
    drop(server);
    assert!(leases_of(port).is_empty(), "the lease ends with the server");
    assert!(
        TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "nothing of the server holds the port"
    );
}

#[test]
fn another_variable_name_is_the_only_port_the_server_is_told() {
    if !have_python() {
        return;
    }
    let server = TestServer::builder("sh")
        .args([
            "-c",
            "test -z \"$PORT\" || exit 9; \
             exec python3 -m http.server \"$APP_PORT\" --bind 127.0.0.1",
        ])
        .port_env("APP_PORT")
        .data_dir(data_dir())
        .start()
        .expect("the server bound APP_PORT");
    let port = server.port();
    assert_eq!(leases_of(port).len(), 1);
    let response = http_get(&server.url(), "/");
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    server.stop().expect("it ran until stopped");
    assert!(leases_of(port).is_empty(), "stop releases the lease");
}

/// The server ignores its port; once it has been told the number (through a
/// FIFO, so the test waits on an event) a thief binds that port. Readiness
/// (`tcp`) passes on the thief's listener, and the ownership check must
/// name the thief: this test process.
#[test]
fn a_thief_on_the_leased_port_makes_start_fail_as_stolen_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("told");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let fifo_arg = fifo.clone();
    let start = std::thread::spawn(move || {
        TestServer::builder("sh")
            .args([
                "-c",
                "echo \"$PORT\" > \"$1\"; echo 'ignoring PORT' >&2; exec sleep 1000.4242",
            ])
            .arg("sh")
            .arg(&fifo_arg)
            .port_env("PORT")
            .data_dir(data_dir())
            .ready_timeout(Duration::from_secs(20))
            .start()
    });
    // Blocks until the server has opened the FIFO, written and closed it.
    let told = std::fs::read_to_string(&fifo).unwrap();
    let port: u16 = told.trim().parse().unwrap();
    let held = leases_of(port);
    assert_eq!(held.len(), 1, "leased while the server starts: {held:?}");
    assert_eq!(held[0].owner.pid, std::process::id());
    let thief =
        TcpListener::bind(("127.0.0.1", port)).expect("the port was let go before the spawn");
    let err = start.join().unwrap().expect_err("the port is the thief's");
    drop(thief);
    let text = err.to_string();
    match err {
        porthold::Error::Start(launch) => match *launch {
            LaunchError::PortStolen {
                port: stolen,
                pid,
                ref stderr_tail,
                ..
            } => {
                assert_eq!(stolen, port);
                assert_eq!(pid, std::process::id());
                assert!(stderr_tail.contains("ignoring PORT"), "{stderr_tail:?}");
            }
            other => panic!("expected PortStolen, got {other:?}"),
        },
        other => panic!("expected a launch error, got {other:?}"),
    }
    assert!(
        text.contains(&format!("port {port} stolen by pid {}", std::process::id())),
        "{text}"
    );
    assert!(
        leases_of(port).is_empty(),
        "a failed start releases its lease"
    );
}

#[test]
fn a_server_that_never_binds_times_out_not_stolen_and_gives_back_the_lease() {
    let err = TestServer::builder("sh")
        .args(["-c", "echo \"told $PORT\" >&2; exec sleep 1000"])
        .port_env("PORT")
        .data_dir(data_dir())
        .ready_timeout(Duration::from_secs(2))
        .start()
        .expect_err("nobody accepts on the port");
    let launch = match err {
        porthold::Error::Start(launch) => *launch,
        other => panic!("expected a launch error, got {other:?}"),
    };
    let LaunchError::ReadyTimeout { stderr_tail, .. } = &launch else {
        panic!("expected a ready timeout, not {launch:?}");
    };
    let port: u16 = stderr_tail
        .trim()
        .strip_prefix("told ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{stderr_tail:?}"));
    assert!(leases_of(port).is_empty(), "the lease went with the server");
}

#[test]
fn sockets_and_a_port_variable_do_not_mix() {
    let err = TestServer::builder("true")
        .listen("web", "tcp://127.0.0.1:0")
        .port_env("PORT")
        .data_dir(data_dir())
        .start()
        .expect_err("either sockets or a number");
    assert!(matches!(err, porthold::Error::Invalid { .. }), "{err:?}");
}
