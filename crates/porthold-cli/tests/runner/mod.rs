//! Helpers for the `porthold run` tests: start an instance in the background,
//! wait for it through discovery, talk HTTP to it, look for processes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use porthold::discovery::{self, LiveRecord};

use crate::util::TestEnv;

/// Generous bound that only catches a hang.
pub const HANG: Duration = Duration::from_secs(60);

pub fn runtime_dir(env: &TestEnv) -> PathBuf {
    env.dir.path().join("run")
}

/// `porthold run ARGS...` in the background, in its own process group (so a
/// test can signal "the foreground group" without hitting the test harness).
pub fn spawn_run(env: &TestEnv, args: &[&str]) -> Child {
    let mut cmd = env.std_cmd();
    cmd.arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cmd.spawn().expect("spawn porthold run")
}

/// Waits until instance `name` is live and ready, failing early if the launcher exits.
pub fn wait_ready(env: &TestEnv, name: &str, launcher: &mut Child) -> LiveRecord {
    let deadline = Instant::now() + HANG;
    loop {
        if let Ok(live) = discovery::wait(
            &runtime_dir(env),
            name,
            None,
            true,
            Duration::from_millis(20),
        ) {
            return live;
        }
        if let Some(status) = launcher.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = launcher.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("launcher exited before `{name}` was ready: {status}\n{err}");
        }
        assert!(Instant::now() < deadline, "`{name}` never became ready");
    }
}

/// Waits for the launcher to exit (bounded) and returns its exit code and stderr.
pub fn finish(launcher: Child) -> (Option<i32>, String, String) {
    finish_within(launcher, HANG)
}

/// Like [`finish`], but fails (killing the launcher and showing its stderr) when
/// the launcher is still running after `limit`: for tests whose broken case is
/// a launcher that keeps running.
pub fn finish_within(mut launcher: Child, limit: Duration) -> (Option<i32>, String, String) {
    let deadline = Instant::now() + limit;
    loop {
        if launcher.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            // SIGTERM first, so porthold takes its server's tree down with it
            // (a SIGKILLed launcher leaves a forking server's children behind).
            signal(launcher.id(), libc::SIGTERM);
            let grace = Instant::now() + Duration::from_secs(5);
            while launcher.try_wait().unwrap().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = launcher.kill();
            let out = launcher.wait_with_output().unwrap();
            panic!(
                "launcher still running after {limit:?}; its stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = launcher.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One HTTP/1.0 GET; returns the whole response.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// How long a launcher gets to exit once it has been told to: long enough for
/// a loaded machine, short enough that a launcher that never exits fails fast.
pub const EXIT_BOUND: Duration = Duration::from_secs(10);

/// Signal numbers the kernel shows as set in `/proc/PID/status` field `field` (`SigIgn`, `SigCgt`).
pub fn signal_set(pid: u32, field: &str) -> Vec<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let Some(hex) = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
    else {
        return Vec::new();
    };
    let mask = u64::from_str_radix(hex.trim(), 16).unwrap_or(0);
    (1..=64).filter(|n| mask & (1u64 << (n - 1)) != 0).collect()
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned; no memory is involved.
    unsafe { libc::kill(pid as i32, sig) };
}

pub fn signal_group(pgid: u32, sig: i32) {
    // SAFETY: kill(2) to a process group we created with process_group(0).
    unsafe { libc::kill(-(pgid as i32), sig) };
}

/// `true` (after a printed skip, which fails under `PORTHOLD_REQUIRE_ALL=1`)
/// when python3 is missing.
pub fn skip_without_python() -> bool {
    if have("python3") {
        return false;
    }
    porthold::test_hooks::skip(
        "python3 is not installed (scripts/install-test-deps.sh installs it)",
    );
    true
}

/// The children of `pid` (from `/proc`), zombies included, with their stat lines.
pub fn children_of(pid: u32) -> Vec<porthold::identity::Stat> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| porthold::identity::stat(p).ok().flatten())
        .filter(|s| s.ppid == pid)
        .collect()
}

/// Pids of live (non-zombie) processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if cmdline.contains(marker) && !zombie {
            out.push(pid);
        }
    }
    out
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn read_file_eventually(path: &Path) -> String {
    let deadline = Instant::now() + HANG;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
