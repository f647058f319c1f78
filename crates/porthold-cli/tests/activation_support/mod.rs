//! Helpers shared by the activation tests: launchers that hand a listening socket
//! to a child, the child "roles" (this test binary re-run through `current_exe`
//! with `PORTHOLD_TEST_ROLE` set), and a client that makes the one request that
//! starts (and is then served by) the child.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use porthold::activation::receive;

/// Environment variable selecting a child's role; absent in a normal test run.
pub const ROLE: &str = "PORTHOLD_TEST_ROLE";

/// Generous limit that only catches hangs.
pub const HANG: Duration = Duration::from_secs(60);

/// The response every interop receiver sends, after `hello from `.
pub fn reply(who: &str) -> String {
    format!("HTTP/1.0 200 OK\r\n\r\nhello from {who}")
}

/// A program that starts a child with one listening TCP socket at fd 3.
///
/// The lead adds `PortholdRun` here once the send side has landed: it must build
/// the same kind of command (listen address, fd name, extra env, child argv).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// `systemd-socket-activate -l ADDR --fdname=NAME -E K=V -- argv...`: binds,
    /// waits for the first connection, then execs the child in its own process
    /// (so LISTEN_PID is the launcher's pid, which is the child's).
    SystemdSocketActivate,
    /// `porthold run --listen NAME=tcp://ADDR --name … -- argv` (binds first,
    /// starts the child at once; the first connection waits in the backlog).
    PortholdRun,
}

impl Launcher {
    /// `Err(reason)` when the launcher cannot run on this machine (the test skips).
    pub fn available(self) -> Result<(), String> {
        match self {
            Launcher::SystemdSocketActivate => {
                which("systemd-socket-activate").map(|_| ()).ok_or_else(|| {
                    "systemd-socket-activate is not installed (apt install systemd)".to_string()
                })
            }
            Launcher::PortholdRun => Ok(()),
        }
    }

    /// The command that listens on `addr`, names the fd `fd_name`, and runs `argv`
    /// with `env` added to its environment (porthold keeps its runtime and data
    /// directories in `scratch`).
    pub fn command(
        self,
        addr: SocketAddr,
        fd_name: &str,
        env: &[(String, String)],
        argv: &[OsString],
        scratch: &std::path::Path,
    ) -> Command {
        match self {
            Launcher::SystemdSocketActivate => {
                let mut c = Command::new("systemd-socket-activate");
                c.arg(format!("--listen={addr}"))
                    .arg(format!("--fdname={fd_name}"));
                // systemd-socket-activate passes only PATH, TERM, USER, HOME and
                // the -E variables on to the child.
                for (k, v) in env {
                    c.arg(format!("--setenv={k}={v}"));
                }
                c.arg("--").args(argv);
                for var in [
                    "LISTEN_FDS",
                    "LISTEN_PID",
                    "LISTEN_FDNAMES",
                    "NOTIFY_SOCKET",
                ] {
                    c.env_remove(var);
                }
                c
            }
            Launcher::PortholdRun => {
                let dirs = scratch;
                let bin = std::env::var_os("PORTHOLD_TEST_BIN")
                    .unwrap_or_else(|| env!("CARGO_BIN_EXE_porthold").into());
                let mut c = Command::new(bin);
                c.env("PORTHOLD_RUNTIME_DIR", dirs.join("run"))
                    .env("PORTHOLD_DATA_DIR", dirs.join("data"))
                    .arg("--quiet")
                    .arg("run")
                    .arg(format!("--listen={fd_name}=tcp://{addr}"))
                    .arg(format!("--name=interop-{}", addr.port()));
                for (k, v) in env {
                    c.env(k, v);
                }
                c.arg("--").args(argv);
                for var in [
                    "LISTEN_FDS",
                    "LISTEN_PID",
                    "LISTEN_FDNAMES",
                    "NOTIFY_SOCKET",
                ] {
                    c.env_remove(var);
                }
                c
            }
        }
    }

    /// Whether the launcher binds first and starts the child only on the first connection.
    pub fn starts_on_first_connection(self) -> bool {
        match self {
            Launcher::SystemdSocketActivate => true,
            Launcher::PortholdRun => false,
        }
    }
}

/// The first executable named `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// argv that re-runs this test binary in `role` (only its `role_entry` test).
pub fn role_argv(role: &str) -> (Vec<OsString>, (String, String)) {
    let exe = std::env::current_exe().expect("current_exe");
    let argv = vec![
        exe.into_os_string(),
        "role_entry".into(),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
        "-q".into(),
    ];
    (argv, (ROLE.to_string(), role.to_string()))
}

/// A random port in 20000-29999 that was free a moment ago.
pub fn candidate_port() -> u16 {
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mix = nanos ^ std::process::id().wrapping_mul(2_654_435_761);
        let port = 20000 + (mix % 10000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs `argv` under `launcher` with one TCP socket named `fd_name`, makes one
/// `GET /` request through it and returns the whole response. Retries on a
/// port that turned out to be taken.
pub fn serve_one(
    launcher: Launcher,
    fd_name: &str,
    env: &[(String, String)],
    argv: &[OsString],
) -> String {
    serve_one_on_ports(launcher, fd_name, env, argv, &mut candidate_port)
}

/// [`serve_one`] with the candidate ports drawn from `next_port`.
///
/// A port that was free a moment ago may be taken by anyone before the
/// launcher binds it (other tests, other users of the machine). The request is
/// therefore only sent once the listener on the port is known to be the
/// launcher's (its pid or a descendant holds it, checked through `/proc`); a
/// foreign listener there means "taken": the launcher is stopped and the next
/// port tried. (Connecting first would talk to whoever holds the port, and a
/// foreign server that never answers would leave the test waiting for a reply.)
pub fn serve_one_on_ports(
    launcher: Launcher,
    fd_name: &str,
    env: &[(String, String)],
    argv: &[OsString],
    next_port: &mut dyn FnMut() -> u16,
) -> String {
    // Removed when this returns (the launchers have ended by then).
    let scratch = tempfile::tempdir().expect("a scratch directory");
    for _attempt in 0..10 {
        let addr: SocketAddr = ([127, 0, 0, 1], next_port()).into();
        let mut child = launcher
            .command(addr, fd_name, env, argv, scratch.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the launcher");
        let mut stream = match connect_when_ours(&mut child, addr) {
            Connect::Ours(stream) => stream,
            Connect::Taken => {
                let _ = child.kill();
                let _ = finish(child);
                continue;
            }
            Connect::Exited => {
                let out = finish(child);
                if out.contains("Address already in use") || out.contains("is in use") {
                    continue;
                }
                panic!("launcher exited before accepting a connection on {addr}: {out}");
            }
        };
        stream.set_read_timeout(Some(HANG)).expect("read timeout");
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
            .expect("sending the request");
        let mut response = String::new();
        let read = stream.read_to_string(&mut response);
        // Close our end first: a receiver may wait for it before exiting.
        drop(stream);
        let out = finish(child);
        assert!(
            !out.starts_with("KILLED"),
            "the child did not exit after serving: {out}"
        );
        if let Err(e) = read {
            panic!("reading the response: {e}; launcher/child output: {out}");
        }
        assert!(
            !response.is_empty(),
            "empty response; launcher/child output: {out}"
        );
        return response;
    }
    panic!("no free port found in 10 attempts");
}

/// How [`connect_when_ours`] ended.
enum Connect {
    /// Connected to the launcher's own listener.
    Ours(TcpStream),
    /// Another process listens on the port.
    Taken,
    /// The launcher exited first.
    Exited,
}

/// Whether `pid` is `root` or one of its descendants.
fn in_tree(pid: u32, root: u32) -> bool {
    let mut current = pid;
    for _ in 0..64 {
        if current == root {
            return true;
        }
        match porthold::identity::ppid_of(current) {
            Some(ppid) if ppid > 1 && ppid != current => current = ppid,
            _ => return false,
        }
    }
    false
}

/// Waits until a listener on `addr`'s port belongs to `child`'s tree, then connects.
fn connect_when_ours(child: &mut Child, addr: SocketAddr) -> Connect {
    let start = Instant::now();
    while start.elapsed() < HANG {
        if child.try_wait().expect("try_wait").is_some() {
            return Connect::Exited;
        }
        let entries = porthold::net::listeners_on_port(addr.port());
        // An owner we cannot see is not ours either: our own processes are readable.
        if entries
            .iter()
            .any(|e| e.owner.as_ref().is_none_or(|o| !in_tree(o.pid, child.id())))
        {
            return Connect::Taken;
        }
        if !entries.is_empty() {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(s) => return Connect::Ours(s),
                Err(_) => continue,
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    panic!("nothing listened on {addr} within {HANG:?}");
}

/// Waits (bounded) for the launcher/child to exit and returns its status and output.
fn finish(mut child: Child) -> String {
    let start = Instant::now();
    let mut killed = "";
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if start.elapsed() > HANG {
            let _ = child.kill();
            killed = "KILLED after hanging; ";
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("wait");
    format!(
        "{killed}{}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The body of an HTTP response.
pub fn body(response: &str) -> &str {
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
}

/// Parses `KEY=VALUE` lines.
pub fn parse_report(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// Roles (run in the child)
// ---------------------------------------------------------------------------

/// Runs the role named by `PORTHOLD_TEST_ROLE` and exits; returns when unset.
pub fn run_role_if_requested() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let code = match role.as_str() {
        "probe" => role_probe(),
        "porthold" => serve_with_porthold(),
        "sdnotify" => serve_with_sd_notify(),
        "listenfd" => serve_with_listenfd(),
        "notify_ready" => role_notify_ready(),
        "idle" => role_idle(),
        "spawn_sender" => role_spawn_sender(),
        "listeners_check" => role_listeners_check(),
        "notify_receiver" => role_notify_receiver(),
        other => {
            eprintln!("unknown role {other}");
            3
        }
    };
    std::process::exit(code);
}

/// What the probe sees of the activation environment, as `KEY=VALUE` lines.
/// Gathered first thing, before anything opens a file.
fn probe_report() -> String {
    let pid = std::process::id();
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "<unset>".into());
    let mut lines = vec![
        format!("LISTEN_FDS={}", var("LISTEN_FDS")),
        format!("LISTEN_FDNAMES={}", var("LISTEN_FDNAMES")),
        format!(
            "LISTEN_PID_IS_SELF={}",
            std::env::var("LISTEN_PID").ok() == Some(pid.to_string())
        ),
    ];
    // The directory handle read_dir holds shows up in its own listing; it is the
    // entry whose link points at /proc/<pid>/fd.
    let own_dir = format!("/proc/{pid}/fd");
    let mut fds: Vec<u32> = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let entry = entry.expect("fd entry");
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target == std::path::Path::new(&own_dir) {
            continue;
        }
        if let Some(n) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            fds.push(n);
        }
    }
    fds.sort_unstable();
    let fds: Vec<String> = fds.iter().map(u32::to_string).collect();
    lines.push(format!("FDS={}", fds.join(",")));
    let link = std::fs::read_link("/proc/self/fd/3")
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "<closed>".into());
    lines.push(format!("FD3={link}"));
    lines.push(format!("FD3_CLOEXEC={}", fd_cloexec(3)));
    lines.join("\n")
}

/// Whether fd `n` has close-on-exec set, from /proc/self/fdinfo.
pub fn fd_cloexec(n: u32) -> String {
    let Ok(info) = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")) else {
        return "<closed>".into();
    };
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok());
    match flags {
        Some(f) => (f & 0o2_000_000 != 0).to_string(),
        None => "<unknown>".into(),
    }
}

/// Accepts one connection on `listener`, reads the request head and replies `response`.
fn serve_once(listener: &TcpListener, response: &str) -> i32 {
    let (mut conn, _) = match listener.accept() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("accept: {e}");
            return 4;
        }
    };
    let _ = conn.set_read_timeout(Some(HANG));
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
        if line == "\r\n" || line == "\n" {
            break;
        }
        line.clear();
    }
    if let Err(e) = conn.write_all(response.as_bytes()) {
        eprintln!("write: {e}");
        return 5;
    }
    0
}

fn role_probe() -> i32 {
    let mut report = probe_report();
    let taken = match receive::listeners() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("listeners: {e}");
            return 6;
        }
    };
    report.push_str(&format!("\nTAKEN={}", taken.len()));
    report.push_str(&format!("\nFD3_CLOEXEC_AFTER_TAKE={}", fd_cloexec(3)));
    let Some(first) = taken.into_iter().next() else {
        eprintln!("no listener taken; report:\n{report}");
        return 7;
    };
    let listener = match first.into_tcp_listener() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fd 3: {e}");
            return 8;
        }
    };
    if let Ok(a) = listener.local_addr() {
        report.push_str(&format!("\nFD3_LOCAL={a}"));
    }
    serve_once(&listener, &format!("HTTP/1.0 200 OK\r\n\r\n{report}\n"))
}

fn serve_with_porthold() -> i32 {
    let listener = receive::listeners()
        .ok()
        .and_then(|v| v.into_iter().next())
        .and_then(|l| l.into_tcp_listener().ok());
    match listener {
        Some(l) => serve_once(&l, &reply("porthold")),
        None => 9,
    }
}

fn serve_with_sd_notify() -> i32 {
    let fds = match sd_notify::listen_fds_with_names() {
        Ok(fds) => fds.collect::<Vec<_>>(),
        Err(e) => {
            eprintln!("sd_notify::listen_fds_with_names: {e}");
            return 10;
        }
    };
    let Some((fd, name)) = fds.into_iter().next() else {
        eprintln!("sd-notify found no fds (LISTEN_PID mismatch?)");
        return 11;
    };
    use std::os::fd::FromRawFd;
    // SAFETY: sd-notify checked LISTEN_PID against our pid and LISTEN_FDS, so fd
    // `fd` was passed to this process by the launcher and nothing else owns it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    serve_once(&listener, &reply(&format!("sd-notify ({name})")))
}

fn serve_with_listenfd() -> i32 {
    let mut fds = listenfd::ListenFd::from_env();
    match fds.take_tcp_listener(0) {
        Ok(Some(l)) => serve_once(&l, &reply("listenfd")),
        Ok(None) => {
            eprintln!("listenfd found no fd 3");
            12
        }
        Err(e) => {
            eprintln!("listenfd: {e}");
            13
        }
    }
}

/// Blocks until stdin reaches end of file: the parent decides when we exit.
fn wait_for_stdin_eof() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// Sends READY=1 (plus `STATUS=` from PORTHOLD_TEST_STATUS) through NOTIFY_SOCKET,
/// prints `SENT=<bool>` and waits for stdin to close (so the parent can check our
/// ancestry while we are alive).
fn role_notify_ready() -> i32 {
    let status = std::env::var("PORTHOLD_TEST_STATUS").unwrap_or_default();
    let result = if status.is_empty() {
        receive::notify_ready()
    } else {
        receive::notify(&format!("READY=1\nSTATUS={status}"))
    };
    match result {
        Ok(sent) => println!("SENT={sent}"),
        Err(e) => {
            println!("ERROR={e}");
            return 14;
        }
    }
    let _ = std::io::stdout().flush();
    wait_for_stdin_eof();
    0
}

fn role_idle() -> i32 {
    println!("IDLE={}", std::process::id());
    let _ = std::io::stdout().flush();
    wait_for_stdin_eof();
    0
}

/// Starts a chain of `PORTHOLD_TEST_DEPTH` (default 1) processes below us whose
/// last one is a `notify_ready` sender; all share our stdin. The process that
/// starts the sender prints `GRANDCHILD=<its pid>` on the shared stdout.
fn role_spawn_sender() -> i32 {
    let depth: u32 = std::env::var("PORTHOLD_TEST_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(1);
    let role = if depth > 1 {
        "spawn_sender"
    } else {
        "notify_ready"
    };
    let (argv, _) = role_argv(role);
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .env(ROLE, role)
        .env("PORTHOLD_TEST_DEPTH", (depth.saturating_sub(1)).to_string())
        .stdin(Stdio::inherit());
    if depth > 1 {
        c.stdout(Stdio::inherit());
    } else {
        c.stdout(Stdio::null());
    }
    match c.spawn() {
        Ok(mut child) => {
            if depth <= 1 {
                println!("GRANDCHILD={}", child.id());
                let _ = std::io::stdout().flush();
            }
            let _ = child.wait();
            0
        }
        Err(e) => {
            eprintln!("spawn: {e}");
            15
        }
    }
}

/// Calls `listeners()` twice and reports what it saw, as `KEY=VALUE` lines on stdout.
fn role_listeners_check() -> i32 {
    let env_before: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let before = fd_cloexec(3);
    let first = receive::listeners();
    let after = fd_cloexec(3);
    let second = receive::listeners();
    let env_after: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    match &first {
        Ok(v) => {
            println!("FIRST={}", v.len());
            let names: Vec<String> = v
                .iter()
                .map(|l| format!("{}:{}", l.raw_fd(), l.name.as_deref().unwrap_or("-")))
                .collect();
            println!("NAMES={}", names.join(","));
        }
        Err(e) => println!("FIRST_ERROR={e}"),
    }
    match &second {
        Ok(v) => println!("SECOND={}", v.len()),
        Err(e) => println!("SECOND_ERROR={e}"),
    }
    println!("CLOEXEC_BEFORE={before}");
    println!("CLOEXEC_AFTER={after}");
    println!("ENV_UNCHANGED={}", env_before == env_after);
    if let Ok(v) = first
        && let Some(l) = v.into_iter().next()
    {
        match l.into_tcp_listener() {
            Ok(_) => println!("AS_TCP=ok"),
            Err(e) => println!("AS_TCP_ERROR={e}"),
        }
    }
    let _ = std::io::stdout().flush();
    0
}

/// Binds a NotifyServer in PORTHOLD_TEST_DIR, prints `PATH=`, waits for a line
/// on stdin, sends `STATUS=self` to itself and prints the first message it
/// accepts (`FIRST_STATUS=`, `FIRST_PID=`) or `FIRST_STATUS=<none>`.
fn role_notify_receiver() -> i32 {
    use porthold::activation::notify::NotifyServer;
    let dir = PathBuf::from(std::env::var_os("PORTHOLD_TEST_DIR").unwrap_or_default());
    let server = match NotifyServer::bind(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bind: {e}");
            return 16;
        }
    };
    println!("PATH={}", server.path().display());
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    if let Err(e) = receive::notify_to(server.path().as_os_str(), "STATUS=self") {
        eprintln!("notify_to: {e}");
        return 17;
    }
    match server.recv(HANG) {
        Ok(Some(m)) => {
            println!("FIRST_STATUS={}", m.status.unwrap_or_default());
            println!("FIRST_PID={}", m.pid);
        }
        Ok(None) => println!("FIRST_STATUS=<none>"),
        Err(e) => {
            eprintln!("recv: {e}");
            return 18;
        }
    }
    let _ = std::io::stdout().flush();
    0
}
