//! Helpers shared by the discovery tests: re-running the test binary as a
//! child process in a "role", and reading its tagged output lines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::Duration;

use porthold::discovery::{Key, Listener, Proto, Record};

/// Environment variable selecting a child's role; absent in a normal test run.
pub const ROLE: &str = "PORTHOLD_TEST_ROLE";
/// The runtime directory a child works in.
pub const DIR: &str = "PORTHOLD_TEST_DIR";
/// The instance name a child works on.
pub const NAME: &str = "PORTHOLD_TEST_NAME";

/// Generous limit that only catches hangs.
pub const HANG: Duration = Duration::from_secs(60);

/// The role this process was started in, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

pub fn env_path(var: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(var).unwrap_or_else(|| panic!("{var} not set")))
}

pub fn env_str(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} not set"))
}

/// Arguments that make the test binary run only `test_name`, printing directly.
pub fn exact_args(test_name: &str) -> Vec<String> {
    vec![
        test_name.into(),
        "--exact".into(),
        "--nocapture".into(),
        "--test-threads=1".into(),
        "-q".into(),
    ]
}

/// A command that re-runs this test binary as `role`, executing only `test_name`.
pub fn child(test_name: &str, role: &str, dir: &Path, name: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("current_exe"));
    c.args(exact_args(test_name))
        .env(ROLE, role)
        .env(DIR, dir)
        .env(NAME, name);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

/// Lines a child printed with the `@@ ` prefix, delivered through a channel.
pub struct Tagged {
    rx: Receiver<String>,
}

impl Tagged {
    pub fn new(stdout: ChildStdout) -> Tagged {
        let (tx, rx) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("@@ ")
                    && tx.send(rest.to_string()).is_err()
                {
                    break;
                }
            }
        });
        Tagged { rx }
    }

    /// The next tagged line; panics after [`HANG`] or if the child closed stdout.
    pub fn next(&self) -> String {
        match self.rx.recv_timeout(HANG) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => panic!("child printed nothing for {HANG:?}"),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("child exited without the expected output")
            }
        }
    }

    /// The next tagged line, or `None` if the child ended first.
    pub fn next_or_end(&self) -> Option<String> {
        match self.rx.recv_timeout(HANG) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Timeout) => panic!("child printed nothing for {HANG:?}"),
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }
}

/// Spawns `cmd` and wraps its stdout.
pub fn spawn(mut cmd: Command) -> (Child, Tagged) {
    let mut child = cmd.spawn().expect("spawn child");
    let out = child.stdout.take().expect("piped stdout");
    (child, Tagged::new(out))
}

/// Blocks until stdin reaches EOF (the parent dropped our pipe).
pub fn wait_for_stdin_eof() {
    let mut sink = String::new();
    let stdin = std::io::stdin();
    while stdin
        .lock()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {}
}

/// Prints a tagged line and flushes.
pub fn say(line: impl AsRef<str>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {}", line.as_ref()).expect("stdout");
    out.flush().expect("flush");
}

/// A plausible record for `name`/`id` in the calling process.
pub fn record(name: &str, id: &str) -> Record {
    Record::new(
        name,
        id,
        Key {
            path: "/tmp/project".into(),
            tag: "web".into(),
        },
        vec![Listener::inet(
            "web",
            Proto::Tcp,
            "127.0.0.1:10001".parse().expect("addr"),
        )],
    )
    .expect("record")
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

pub fn send_signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("nonzero pid");
    rustix::process::kill_process(pid, sig).expect("kill");
}

/// A private runtime directory inside a fresh temp dir (kept alive by the returned guard).
pub fn runtime_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    porthold::discovery::ensure_runtime_dir(&dir).expect("runtime dir");
    (tmp, dir)
}

/// Runs this test binary under `unshare -p -f --mount-proc` in `role`.
/// `None` (with the reason printed) when unshare is unavailable or not permitted.
pub fn unshare_child(
    test_name: &str,
    role: &str,
    dir: &Path,
    name: &str,
) -> Option<(Child, Tagged)> {
    if !is_root() {
        porthold::test_hooks::skip("needs root for unshare -p");
        return None;
    }
    if which("unshare").is_none() {
        porthold::test_hooks::skip("unshare(1) not installed");
        return None;
    }
    let probe = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc", "true"])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            porthold::test_hooks::skip(&format!(
                "unshare -p -f --mount-proc failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            return None;
        }
        Err(e) => {
            porthold::test_hooks::skip(&format!("cannot run unshare: {e}"));
            return None;
        }
    }
    let mut c = Command::new("unshare");
    c.args(["-p", "-f", "--mount-proc"])
        .arg(std::env::current_exe().expect("current_exe"));
    c.args(exact_args(test_name))
        .env(ROLE, role)
        .env(DIR, dir)
        .env(NAME, name);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Some(spawn(c))
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}
