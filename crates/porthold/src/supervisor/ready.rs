//! Readiness: when is a freshly spawned server "ready"?
//!
//! `porthold run --ready MODE` chooses one of these [`ReadyMode`]s:
//!
//! | text | mode | ready when |
//! |---|---|---|
//! | `listen` (default) | [`ReadyMode::Listen`] | at once: the socket was bound and listening before the spawn, so connections already queue in its backlog |
//! | `notify` | [`ReadyMode::Notify`] | the child's tree sends `READY=1` on the `NOTIFY_SOCKET` (waited on by the launcher's notify server, not here) |
//! | `http:/path` | [`ReadyMode::Http`] | an HTTP/1.1 `GET /path` to the listener answers with a status 200–399 |
//! | `tcp` | [`ReadyMode::Tcp`] | a TCP connect to the listener succeeds |
//! | `cmd:SHELL` | [`ReadyMode::Cmd`] | `sh -c SHELL` exits 0 |
//! | `delay:500ms` | [`ReadyMode::Delay`] | the time has passed (weak: a guess, not a check) |
//!
//! The probe loops ([`wait_ready`], [`poll_until`]) retry with a backoff from
//! 10 ms to 250 ms until the timeout, and stop early, with a typed
//! [`ReadyOutcome`], when the cancellation token fires or the child exits. The
//! order of the checks in each round is fixed: cancellation, then child exit,
//! then the deadline, then one attempt. A successful attempt is re-checked
//! against the token, so a probe never reports `Ready` for a cancelled start.
//!
//! Note on `tcp` and `http` with passed sockets: the kernel completes TCP
//! handshakes into the backlog of a listening socket even before the server calls
//! `accept`, so `tcp` is only meaningful for `--no-fds` servers that bind by
//! themselves; `http` does wait for a real answer.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitStatus;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::activation::spawn::{Child, SpawnRequest};
use crate::error::{Error, Result};
use crate::supervisor::lifecycle::CancelToken;

/// Who may send `READY=1` in [`ReadyMode::Notify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyAccess {
    /// Any process of the child's tree (the default).
    #[default]
    Tree,
    /// Only the main child process.
    Main,
}

/// How readiness of a spawned server is decided. Parse from text with [`FromStr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyMode {
    /// Ready at once (the socket already listens).
    Listen,
    /// `READY=1` on the notify socket.
    Notify {
        /// Who may send it.
        access: NotifyAccess,
    },
    /// `GET path` answered with a status 200–399.
    Http {
        /// The request path, starting with `/`.
        path: String,
    },
    /// A TCP connect succeeds.
    Tcp,
    /// `sh -c` of this command exits 0.
    Cmd(String),
    /// Ready after this long.
    Delay(Duration),
}

impl FromStr for ReadyMode {
    type Err = Error;

    /// Parses `listen`, `notify`, `http:/path`, `tcp`, `cmd:SHELL`, `delay:500ms`.
    fn from_str(text: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::invalid(
                format!("invalid readiness mode `{text}`: {why}"),
                "use one of listen, notify, tcp, http:/path, cmd:SHELL, delay:500ms".to_string(),
            )
        };
        match text {
            "listen" => return Ok(ReadyMode::Listen),
            "notify" => {
                return Ok(ReadyMode::Notify {
                    access: NotifyAccess::Tree,
                });
            }
            "tcp" => return Ok(ReadyMode::Tcp),
            _ => {}
        }
        let Some((kind, rest)) = text.split_once(':') else {
            return Err(invalid("unknown mode"));
        };
        match kind {
            "http" => {
                if !rest.starts_with('/') {
                    return Err(invalid("the path must start with `/`, as in http:/health"));
                }
                if rest.starts_with("//") {
                    return Err(invalid(
                        "give a path, not a URL: the probe always asks the server's own listener",
                    ));
                }
                if rest
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b >= 0x80)
                {
                    return Err(invalid(
                        "the path contains spaces, control or non-ASCII characters (percent-encode them)",
                    ));
                }
                Ok(ReadyMode::Http {
                    path: rest.to_string(),
                })
            }
            "cmd" if rest.trim().is_empty() => Err(invalid("the command is empty")),
            "cmd" => Ok(ReadyMode::Cmd(rest.to_string())),
            "delay" => match crate::duration::parse(rest) {
                Ok(delay) => Ok(ReadyMode::Delay(delay)),
                Err(error) => Err(invalid(&error.to_string())),
            },
            _ => Err(invalid("unknown mode")),
        }
    }
}

/// How a readiness wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadyOutcome {
    /// The server is ready.
    Ready,
    /// The child exited first, with this status.
    ChildExited(ExitStatus),
    /// The timeout passed first.
    TimedOut {
        /// How long the wait lasted.
        waited: Duration,
        /// The last attempt's failure (`connection refused`, `HTTP 503`), if any.
        last_error: Option<String>,
    },
    /// The cancellation token fired first.
    Cancelled,
}

/// The result of one probe attempt in [`poll_until`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Ready.
    Ready,
    /// Not yet, with the reason.
    NotYet(String),
}

/// Where and how long to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The address to probe for `http` and `tcp` (see [`probe_address`]); its port
    /// is also given to `cmd` as `PORT`.
    pub address: Option<SocketAddr>,
    /// The overall readiness timeout.
    pub timeout: Duration,
    /// Extra environment for `cmd` probes.
    pub cmd_env: Vec<(OsString, OsString)>,
}

impl ProbeOptions {
    /// Options probing `address` with `timeout`.
    pub fn new(address: Option<SocketAddr>, timeout: Duration) -> Self {
        ProbeOptions {
            address,
            timeout,
            cmd_env: Vec::new(),
        }
    }
}

/// The address a probe should connect to for a listener bound at `bound`: an
/// unspecified address (`0.0.0.0`, `::`) is replaced by the loopback of its family.
pub fn probe_address(bound: SocketAddr) -> SocketAddr {
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(match bound {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

const FIRST_INTERVAL: Duration = Duration::from_millis(10);
const MAX_INTERVAL: Duration = Duration::from_millis(250);
const MAX_ATTEMPT: Duration = Duration::from_secs(2);
const DELAY_STEP: Duration = Duration::from_millis(25);

/// Waits until `mode` says the server is ready, the child exits, `cancel` fires,
/// or `options.timeout` passes.
///
/// `child_exited` is polled between attempts; it returns the main child's status
/// once it has exited (typically `Child::try_wait` or a pidfd check).
///
/// # Errors
///
/// [`Error::Invalid`] for [`ReadyMode::Notify`] (its wait belongs to the notify
/// socket server: use [`poll_until`] with a check of that socket), or when
/// `http`/`tcp` have no address to probe.
pub fn wait_ready(
    mode: &ReadyMode,
    options: &ProbeOptions,
    cancel: &CancelToken,
    child_exited: &mut dyn FnMut() -> Option<ExitStatus>,
) -> Result<ReadyOutcome> {
    let need_address = || {
        options.address.ok_or_else(|| {
            Error::invalid(
                format!("readiness mode {mode:?} needs a TCP listener to probe"),
                None,
            )
        })
    };
    Ok(match mode {
        ReadyMode::Listen => match (cancel.is_cancelled(), child_exited()) {
            (true, _) => ReadyOutcome::Cancelled,
            (false, Some(status)) => ReadyOutcome::ChildExited(status),
            (false, None) => ReadyOutcome::Ready,
        },
        ReadyMode::Notify { .. } => {
            return Err(Error::invalid(
                "notify readiness is signalled on the NOTIFY_SOCKET, not probed",
                None,
            ));
        }
        ReadyMode::Tcp => {
            let address = need_address()?;
            poll_until(options.timeout, cancel, child_exited, |left| {
                tcp_attempt(address, left)
            })
        }
        ReadyMode::Http { path } => {
            let address = need_address()?;
            poll_until(options.timeout, cancel, child_exited, |left| {
                http_attempt(address, path, left)
            })
        }
        ReadyMode::Delay(delay) => wait_delay(*delay, options.timeout, cancel, child_exited),
        ReadyMode::Cmd(command) => wait_cmd(command, options, cancel, child_exited)?,
    })
}

/// The generic probe loop: calls `attempt(time_left)` until it says
/// [`Attempt::Ready`], with a backoff between attempts, stopping early on
/// cancellation, child exit or timeout. Each round checks, in order: `cancel`,
/// `child_exited`, the deadline; then makes one attempt.
pub fn poll_until(
    timeout: Duration,
    cancel: &CancelToken,
    child_exited: &mut dyn FnMut() -> Option<ExitStatus>,
    mut attempt: impl FnMut(Duration) -> Attempt,
) -> ReadyOutcome {
    let start = Instant::now();
    let mut interval = FIRST_INTERVAL;
    let mut last_error = None;
    loop {
        if let Some(outcome) = early_exit(cancel, child_exited) {
            return outcome;
        }
        let waited = start.elapsed();
        let Some(left) = timeout.checked_sub(waited).filter(|left| !left.is_zero()) else {
            return ReadyOutcome::TimedOut { waited, last_error };
        };
        match attempt(left) {
            Attempt::Ready if cancel.is_cancelled() => return ReadyOutcome::Cancelled,
            Attempt::Ready => return ReadyOutcome::Ready,
            Attempt::NotYet(why) => last_error = Some(why),
        }
        let left = timeout.saturating_sub(start.elapsed());
        if cancel.wait_timeout(interval.min(left)) {
            return ReadyOutcome::Cancelled;
        }
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

fn early_exit(
    cancel: &CancelToken,
    child_exited: &mut dyn FnMut() -> Option<ExitStatus>,
) -> Option<ReadyOutcome> {
    if cancel.is_cancelled() {
        return Some(ReadyOutcome::Cancelled);
    }
    child_exited().map(ReadyOutcome::ChildExited)
}

fn tcp_attempt(address: SocketAddr, left: Duration) -> Attempt {
    match TcpStream::connect_timeout(&address, left.min(MAX_ATTEMPT)) {
        Ok(_) => Attempt::Ready,
        Err(error) => Attempt::NotYet(describe_io(&error)),
    }
}

fn http_attempt(address: SocketAddr, path: &str, left: Duration) -> Attempt {
    match http_status(address, path, left.min(MAX_ATTEMPT)) {
        Ok(status) if (200..400).contains(&status) => Attempt::Ready,
        Ok(status) => Attempt::NotYet(format!("HTTP {status}")),
        Err(error) => Attempt::NotYet(error),
    }
}

/// One `GET`: returns the status code of the response.
fn http_status(
    address: SocketAddr,
    path: &str,
    limit: Duration,
) -> std::result::Result<u16, String> {
    let deadline = Instant::now() + limit;
    let mut stream = TcpStream::connect_timeout(&address, limit).map_err(|e| describe_io(&e))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream
        .set_write_timeout(Some(left()))
        .map_err(|e| describe_io(&e))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: porthold-ready\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| describe_io(&e))?;
    // Only the status line matters; read until its end (or 1 KiB, whichever first).
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        stream
            .set_read_timeout(Some(left()))
            .map_err(|e| describe_io(&e))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(format!("no response: {}", describe_io(&error))),
        }
    }
    parse_status_line(&head).ok_or_else(|| {
        if head.is_empty() {
            "the connection closed without a response".to_string()
        } else {
            "the response is not HTTP".to_string()
        }
    })
}

/// `HTTP/1.1 204 No Content` -> 204.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".to_string(),
        _ => error.to_string(),
    }
}

fn wait_delay(
    delay: Duration,
    timeout: Duration,
    cancel: &CancelToken,
    child_exited: &mut dyn FnMut() -> Option<ExitStatus>,
) -> ReadyOutcome {
    let start = Instant::now();
    loop {
        if let Some(outcome) = early_exit(cancel, child_exited) {
            return outcome;
        }
        let waited = start.elapsed();
        if waited >= delay {
            return ReadyOutcome::Ready;
        }
        if waited >= timeout {
            return ReadyOutcome::TimedOut {
                waited,
                last_error: None,
            };
        }
        let step = DELAY_STEP.min(delay - waited).min(timeout - waited);
        if cancel.wait_timeout(step) {
            return ReadyOutcome::Cancelled;
        }
    }
}

/// `cmd:` probes: `sh -c COMMAND` in its own process group (so a command that
/// starts helpers is killed whole), stdin/stdout/stderr on /dev/null, `PORT` set to
/// the probed port when there is one. It is started by the same spawner as the
/// server, so it gets the same clean fd set: 0, 1, 2 and nothing porthold holds
/// or inherited. An attempt that runs past the deadline or meets a cancellation
/// is killed and reaped; the child's exit is checked every 10 ms while a command runs.
fn wait_cmd(
    command: &str,
    options: &ProbeOptions,
    cancel: &CancelToken,
    child_exited: &mut dyn FnMut() -> Option<ExitStatus>,
) -> Result<ReadyOutcome> {
    let start = Instant::now();
    let mut interval = FIRST_INTERVAL;
    let mut last_error = None;
    loop {
        if let Some(outcome) = early_exit(cancel, child_exited) {
            return Ok(outcome);
        }
        let waited = start.elapsed();
        if waited >= options.timeout {
            return Ok(ReadyOutcome::TimedOut { waited, last_error });
        }
        let mut shell = SpawnRequest::new(vec!["/bin/sh".into(), "-c".into(), command.into()])
            .stdin(dev_null()?)
            .stdout(dev_null()?)
            .stderr(dev_null()?)
            .new_process_group(true)
            .parent_death_signal(rustix::process::Signal::KILL);
        if let Some(address) = options.address
            && !options.cmd_env.iter().any(|(k, _)| k == "PORT")
        {
            shell = shell.env("PORT", address.port().to_string());
        }
        for (k, v) in &options.cmd_env {
            shell = shell.env(k, v);
        }
        let probe = shell.spawn().map_err(|e| match e {
            Error::Io { source, .. } => {
                Error::io(format!("running the readiness command `{command}`"), source)
            }
            other => other,
        })?;
        let status = loop {
            match probe.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) => {}
                Err(error) => {
                    kill_probe(&probe);
                    return Err(error);
                }
            }
            let stop = if cancel.is_cancelled() {
                Some(ReadyOutcome::Cancelled)
            } else if let Some(status) = child_exited() {
                Some(ReadyOutcome::ChildExited(status))
            } else if start.elapsed() >= options.timeout {
                Some(ReadyOutcome::TimedOut {
                    waited: start.elapsed(),
                    last_error: Some("the readiness command was still running".to_string()),
                })
            } else {
                None
            };
            if let Some(outcome) = stop {
                kill_probe(&probe);
                return Ok(outcome);
            }
            cancel.wait_timeout(Duration::from_millis(10));
        };
        match status {
            Some(status) if status.success() => {
                if cancel.is_cancelled() {
                    return Ok(ReadyOutcome::Cancelled);
                }
                return Ok(ReadyOutcome::Ready);
            }
            Some(status) => {
                last_error = Some(format!(
                    "the readiness command {}",
                    crate::supervisor::lifecycle::describe_status(status)
                ))
            }
            None => {}
        }
        let left = options.timeout.saturating_sub(start.elapsed());
        if cancel.wait_timeout(interval.min(left)) {
            return Ok(ReadyOutcome::Cancelled);
        }
        interval = (interval * 2).min(MAX_INTERVAL);
    }
}

/// Ends a shell porthold started in a process group of its own (a `cmd:`
/// probe, a reload's check), everything of it still in that group, and reaps it.
pub(crate) fn kill_probe(probe: &Child) {
    // The probe leads its own process group (new_process_group above), and we have
    // not reaped it yet, so its pid, and with it the group id, cannot be reused.
    if let Some(pid) = rustix::process::Pid::from_raw(probe.pid() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = probe.kill(rustix::process::Signal::KILL);
    let _ = probe.wait();
}

/// `/dev/null` for the probe's stdin, stdout and stderr.
pub(crate) fn dev_null() -> Result<std::os::fd::OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(std::os::fd::OwnedFd::from)
        .map_err(|e| Error::io("opening /dev/null for the readiness command", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_mode() {
        assert_eq!("listen".parse::<ReadyMode>().unwrap(), ReadyMode::Listen);
        assert_eq!(
            "notify".parse::<ReadyMode>().unwrap(),
            ReadyMode::Notify {
                access: NotifyAccess::Tree
            }
        );
        assert_eq!("tcp".parse::<ReadyMode>().unwrap(), ReadyMode::Tcp);
        assert_eq!(
            "http:/healthz?full=1".parse::<ReadyMode>().unwrap(),
            ReadyMode::Http {
                path: "/healthz?full=1".into()
            }
        );
        assert_eq!(
            "cmd:curl -fs localhost:$PORT".parse::<ReadyMode>().unwrap(),
            ReadyMode::Cmd("curl -fs localhost:$PORT".into())
        );
        assert_eq!(
            "delay:500ms".parse::<ReadyMode>().unwrap(),
            ReadyMode::Delay(Duration::from_millis(500))
        );
    }

    #[test]
    fn rejects_bad_modes_naming_the_value() {
        for bad in [
            "",
            "ready",
            "http",
            "http:",
            "http:health",
            "http://x/y",
            "http:/a b",
            "cmd:",
            "cmd:  ",
            "delay:",
            "delay:5x",
            "tcp:80",
            "Listen",
        ] {
            let err = bad.parse::<ReadyMode>().unwrap_err();
            assert!(
                err.to_string().contains(&format!("`{bad}`")),
                "{bad:?}: {err}"
            );
            assert_eq!(err.kind(), crate::ErrorKind::Usage);
        }
        // Durations accept bare seconds and decimals, as systemd does.
        for good in ["delay:5", "delay:1.5s"] {
            assert!(good.parse::<ReadyMode>().is_ok(), "{good}");
        }
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 302 Found\r\nLocation: /x\r\n"),
            Some(302)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 200\r\n"), Some(200));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 x\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 999 x\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn probe_address_replaces_unspecified_with_loopback() {
        assert_eq!(
            probe_address("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            probe_address("[::]:80".parse().unwrap()),
            "[::1]:80".parse().unwrap()
        );
        assert_eq!(
            probe_address("10.0.0.1:80".parse().unwrap()),
            "10.0.0.1:80".parse().unwrap()
        );
    }
}
