//! `porthold run`: the bound socket reaches the server, each readiness mode
//! works, and a failed start is exit 8 with the child killed.

mod runner;
mod util;

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::Duration;

use runner::{
    finish, http_get, read_file_eventually, signal, skip_without_python, spawn_run, wait_ready,
};

use util::TestEnv;

/// A Python server that accepts on fd 3 and answers every request with `hello`.
const PY_FD3: &str = "import socket\ns=socket.socket(fileno=3)\nwhile True:\n    c,_=s.accept()\n    c.recv(65536)\n    c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nhello')\n    c.close()\n";

#[test]
fn a_python_server_serves_through_the_passed_socket_and_url_finds_it() {
    if skip_without_python() {
        return;
    }
    let env = TestEnv::new();
    let mut launcher = spawn_run(
        &env,
        &["--ephemeral", "--name", "py", "--", "python3", "-c", PY_FD3],
    );
    let live = wait_ready(&env, "py", &mut launcher);
    let addr = live.record.listeners[0].socket_addr().unwrap();
    assert!(http_get(addr, "/").ends_with("hello"));
    let out = env.cmd().args(["url", "--name", "py"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("http://{addr}")
    );
    signal(launcher.id(), libc::SIGTERM);
    finish(launcher);
}

/// The fd numbers and socket inodes of a process, from outside it.
fn fds_of(pid: u32) -> Vec<(u32, String)> {
    let mut fds: Vec<(u32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let n = e.file_name().to_str().unwrap().parse().unwrap();
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            (n, target)
        })
        .collect();
    fds.sort();
    fds
}

#[test]
fn the_child_gets_only_0_1_2_and_the_passed_socket_even_with_a_leaky_inherited_fd() {
    let env = TestEnv::new();
    let leaky = std::fs::File::open("/dev/null").unwrap();
    let mut cmd = env.std_cmd();
    cmd.args(["run", "--ephemeral", "--name", "fds", "--", "sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&leaky);
    // SAFETY: between fork and exec we only call dup2, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // fd 9 in porthold, without CLOEXEC: porthold must not pass it on.
            if libc::dup2(fd, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut launcher = cmd.spawn().unwrap();
    let live = wait_ready(&env, "fds", &mut launcher);
    let child = live.record.child_pid.unwrap();
    assert!(
        fds_of(launcher.id()).iter().any(|(n, _)| *n == 9),
        "porthold did inherit fd 9"
    );
    let child_fds = fds_of(child);
    let numbers: Vec<u32> = child_fds.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [0, 1, 2, 3], "{child_fds:?}");
    // fd 3 is the very socket porthold bound (same inode), not a copy of another.
    let socket = &child_fds[3].1;
    assert!(socket.starts_with("socket:["), "{socket}");
    assert!(
        fds_of(launcher.id()).iter().any(|(_, t)| t == socket),
        "porthold holds {socket}"
    );
    let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    let vars: Vec<&str> = environ.split('\0').collect();
    assert!(vars.contains(&"LISTEN_FDS=1"), "{vars:?}");
    assert!(vars.contains(&"LISTEN_FDNAMES=default"), "{vars:?}");
    assert!(
        vars.contains(&format!("LISTEN_PID={child}").as_str()),
        "{vars:?}"
    );
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish(launcher);
    assert_eq!(code, Some(143), "{err}");
}

#[test]
fn port_env_and_port_substitution_name_the_bound_port() {
    let env = TestEnv::new();
    let report = env.dir.path().join("port");
    let out = env
        .cmd()
        .args([
            "run",
            "--listen",
            "web=tcp://127.0.0.1:0",
            "--listen",
            "admin=tcp://127.0.0.1:0",
            "--port-env",
            "WEB_PORT",
            "--",
            "sh",
            "-c",
            &format!(
                "echo \"$WEB_PORT $1 $2 $LISTEN_FDNAMES $PORTHOLD_INSTANCE_ID\" > {}",
                report.display()
            ),
            "sh",
            "{port}",
            "{port:admin}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = read_file_eventually(&report);
    let parts: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(parts[0], parts[1], "PORT env and {{port}} agree: {text}");
    assert_ne!(
        parts[1], parts[2],
        "{{port:admin}} is the second socket: {text}"
    );
    assert_eq!(parts[3], "web:admin");
    assert_eq!(parts[4].len(), 32, "instance id: {text}");
}

#[test]
fn the_default_socket_is_the_keys_reserved_port() {
    let env = TestEnv::new();
    let port = env
        .cmd()
        .args(["reserve", "--tag", "web", "--pool", "24600-24699"])
        .output()
        .unwrap();
    let port = String::from_utf8_lossy(&port.stdout).trim().to_string();
    let report = env.dir.path().join("p");
    let out = env
        .cmd()
        .args([
            "run",
            "--tag",
            "web",
            "--",
            "sh",
            "-c",
            &format!("echo \"$PORT $LISTEN_FDNAMES\" > {}", report.display()),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_file_eventually(&report).trim(), format!("{port} web"));
}

#[test]
fn readiness_tcp_http_cmd_and_delay_each_reach_ready() {
    if skip_without_python() {
        return;
    }
    let env = TestEnv::new();
    for (i, mode) in [
        "tcp",
        "http:/health",
        "cmd:test -n \"$PORT\"",
        "delay:200ms",
        "listen",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("mode{i}");
        let mut launcher = spawn_run(
            &env,
            &[
                "--ephemeral",
                "--name",
                &name,
                "--ready",
                mode,
                "--ready-timeout",
                "60s",
                "--",
                "python3",
                "-c",
                PY_FD3,
            ],
        );
        let live = wait_ready(&env, &name, &mut launcher);
        assert_eq!(
            live.record.state,
            porthold::discovery::State::Ready,
            "{mode}"
        );
        signal(launcher.id(), libc::SIGTERM);
        let (code, _, err) = finish(launcher);
        assert_eq!(code, Some(143), "{mode}: {err}");
    }
}

#[test]
fn http_readiness_waits_for_a_2xx_and_times_out_with_exit_8_on_errors() {
    if skip_without_python() {
        return;
    }
    let env = TestEnv::new();
    let always_503 = PY_FD3.replace("200 OK", "503 Service Unavailable");
    let out = env
        .cmd()
        .args([
            "run",
            "--ephemeral",
            "--ready",
            "http:/",
            "--ready-timeout",
            "1s",
            "--",
            "python3",
            "-c",
            &always_503,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{err}");
    assert!(err.contains("not ready"), "{err}");
}

#[test]
fn a_child_that_exits_before_ready_is_exit_8_with_its_status_and_output() {
    let env = TestEnv::new();
    let out = env
        .cmd()
        // (tcp readiness would pass at once: porthold's own socket accepts.)
        .args([
            "run",
            "--ephemeral",
            "--ready",
            "http:/",
            "--ready-timeout",
            "30s",
            "--",
            "sh",
            "-c",
            "echo boom-marker >&2; exit 3",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{err}");
    assert!(
        err.contains("exited with code 3")
            || err.contains("exit code 3")
            || err.contains("status 3"),
        "{err}"
    );
    assert!(err.contains("boom-marker"), "the tail of its output: {err}");
}

#[test]
fn a_ready_timeout_is_exit_8_and_the_child_is_killed() {
    let env = TestEnv::new();
    let out = env
        .cmd()
        .args([
            "run",
            "--ephemeral",
            "--ready",
            "notify",
            "--ready-timeout",
            "500ms",
            "--",
            "sleep",
            "1000.5151",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        runner::processes_with("1000.5151").is_empty(),
        "the child was killed and reaped"
    );
}

#[test]
fn notify_readiness_comes_from_the_child_and_an_unrelated_sender_is_ignored() {
    if skip_without_python() {
        return;
    }
    let env = TestEnv::new();
    let socket_file = env.dir.path().join("notify-path");
    let go = env.dir.path().join("go");
    // The child publishes its NOTIFY_SOCKET path, waits for `go`, then says READY=1.
    let child = format!(
        "import os,socket,time\nopen('{sf}','w').write(os.environ['NOTIFY_SOCKET']+'\\n')\nwhile not os.path.exists('{go}'): time.sleep(0.01)\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\np=os.environ['NOTIFY_SOCKET']\ns.sendto(b'READY=1',('\\0'+p[1:]) if p.startswith('@') else p)\ntime.sleep(1000)\n",
        sf = socket_file.display(),
        go = go.display()
    );
    let mut launcher = spawn_run(
        &env,
        &[
            "--ephemeral",
            "--name",
            "nt",
            "--ready",
            "notify",
            "--",
            "python3",
            "-c",
            &child,
        ],
    );
    let path = read_file_eventually(&socket_file).trim().to_string();
    // An unrelated process (the test, not a descendant of the child) claims readiness.
    let fake = std::process::Command::new("python3")
        .args([
            "-c",
            "import socket,sys\np=sys.argv[1]\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.sendto(b'READY=1',('\\0'+p[1:]) if p.startswith('@') else p)",
            &path,
        ])
        .status()
        .unwrap();
    assert!(fake.success());
    std::thread::sleep(Duration::from_millis(500));
    let probe = porthold::discovery::lookup(&runner::runtime_dir(&env), "nt").unwrap();
    assert!(
        probe.is_none_or(|live| live.record.state != porthold::discovery::State::Ready),
        "READY=1 from an unrelated process must be ignored"
    );
    std::fs::write(&go, "").unwrap();
    wait_ready(&env, "nt", &mut launcher);
    signal(launcher.id(), libc::SIGTERM);
    finish(launcher);
}

#[test]
fn a_cmd_probe_gets_only_0_1_2_even_with_a_leaky_inherited_fd() {
    let env = TestEnv::new();
    let listing = env.dir.path().join("probe-fds");
    let leaky = std::fs::File::open("/dev/null").unwrap();
    let probe = format!(
        "cmd:ls /proc/$$/fd > {0}.tmp && mv {0}.tmp {0} && test ! -e /proc/$$/fd/9",
        listing.display()
    );
    let mut cmd = env.std_cmd();
    cmd.args([
        "run",
        "--ephemeral",
        "--name",
        "probefds",
        "--ready",
        &probe,
        "--ready-timeout",
        "5s",
        "--",
        "sleep",
        "1000",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .process_group(0);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&leaky);
    // SAFETY: between fork and exec we only call dup2, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // fd 9 in porthold, without CLOEXEC: the probe must not get it.
            if libc::dup2(fd, 9) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut launcher = cmd.spawn().unwrap();
    wait_ready(&env, "probefds", &mut launcher);
    let fds = std::fs::read_to_string(&listing).unwrap();
    // 0, 1, 2, and whatever the shell itself opened for the redirection (dash
    // saves fd 1 at 10 and up); nothing of porthold's.
    let numbers: Vec<u32> = fds.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        numbers.iter().all(|&n| n <= 2 || n >= 10) && numbers.len() >= 3,
        "the probe's fds: {numbers:?}"
    );
    signal(launcher.id(), libc::SIGTERM);
    let (code, _, err) = finish(launcher);
    assert_eq!(code, Some(143), "{err}");
}

#[test]
fn a_unix_listeners_socket_file_is_removed_when_the_instance_ends() {
    let env = TestEnv::new();
    let sock = env.dir.path().join("app.sock");
    let spec = format!("app=unix://{}", sock.display());
    // The server checks the socket file is there while it runs.
    let check = format!("test -S {}", sock.display());
    let out = env
        .cmd()
        .args(["run", "--listen", &spec, "--", "sh", "-c", &check])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!sock.exists(), "socket file left after a normal end");
    // A failed start (exit 8) cleans up too.
    let out = env
        .cmd()
        .args([
            "run",
            "--listen",
            &spec,
            "--ready",
            "cmd:false",
            "--ready-timeout",
            "300ms",
            "--",
            "sleep",
            "1000",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!sock.exists(), "socket file left after a failed start");
}

#[test]
fn no_listen_pid_leaves_only_listen_pid_out() {
    let env = TestEnv::new();
    for (flag, name) in [(None, "with-pid"), (Some("--no-listen-pid"), "without-pid")] {
        let dump = env.dir.path().join(format!("{name}.env"));
        let script = format!(
            "env > '{0}.tmp' && echo end >> '{0}.tmp' && mv '{0}.tmp' '{0}'; exec sleep 1000",
            dump.display()
        );
        let mut args = vec!["--ephemeral", "--name", name];
        args.extend(flag);
        args.extend(["--", "sh", "-c", &script]);
        let mut launcher = spawn_run(&env, &args);
        let live = wait_ready(&env, name, &mut launcher);
        let vars = read_file_eventually(&dump);
        let has = |var: &str| vars.lines().any(|l| l.starts_with(&format!("{var}=")));
        assert!(has("LISTEN_FDS") && has("LISTEN_FDNAMES"), "{name}: {vars}");
        match flag {
            None => assert!(
                vars.lines()
                    .any(|l| l == format!("LISTEN_PID={}", live.record.child_pid.unwrap())),
                "{vars}"
            ),
            Some(_) => assert!(!has("LISTEN_PID"), "{vars}"),
        }
        signal(launcher.id(), libc::SIGTERM);
        finish(launcher);
    }
}
