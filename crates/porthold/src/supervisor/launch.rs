//! Typed start failures: what went wrong, with what a caller needs to act on it.
//!
//! The library never names a CLI flag in these; the CLI renders them and adds
//! its hints.

use std::process::ExitStatus;
use std::time::Duration;

use crate::supervisor::lifecycle::describe_status;

/// Why a server did not start (or ended when nobody asked it to).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program could not be started at all.
    #[error("the server could not be started: {message}")]
    SpawnFailed {
        /// What the spawn said (`command not found: X`, …).
        message: String,
    },
    /// The server exited before it was ready.
    #[error("the server {} before it was ready{}", describe_status(*.status), tail_suffix(.stderr_tail))]
    ExitedBeforeReady {
        /// Its exit status.
        status: ExitStatus,
        /// The last bytes of its stderr.
        stderr_tail: String,
    },
    /// The server was not ready within the timeout (it was killed).
    #[error("the server was not ready within {}{}{}", crate::duration::format(*.waited), last_error_suffix(.last_error), tail_suffix(.stderr_tail))]
    ReadyTimeout {
        /// How long the start waited.
        waited: Duration,
        /// The last probe's failure, if any.
        last_error: Option<String>,
        /// The last bytes of its stderr.
        stderr_tail: String,
    },
    /// A port released for the server was taken by another process first.
    #[error("port {port} stolen by pid {pid} ({comm}) before the server could bind it{}", tail_suffix(.stderr_tail))]
    PortStolen {
        /// The port.
        port: u16,
        /// The thief's pid.
        pid: u32,
        /// The thief's command name.
        comm: String,
        /// The last bytes of the server's stderr.
        stderr_tail: String,
    },
    /// The server never bound a port it was given by number.
    #[error("the server never bound port {port}{}", tail_suffix(.stderr_tail))]
    NeverBound {
        /// The port.
        port: u16,
        /// The last bytes of its stderr.
        stderr_tail: String,
    },
    /// The server exited while it was serving, without being asked to stop.
    #[error("the server {} while nobody asked it to stop{}", describe_status(*.status), tail_suffix(.stderr_tail))]
    ExitedUnexpectedly {
        /// Its exit status.
        status: ExitStatus,
        /// The last bytes of its stderr.
        stderr_tail: String,
    },
}

impl LaunchError {
    /// The server's stderr tail this error carries (empty when there is none).
    pub fn stderr_tail(&self) -> &str {
        match self {
            LaunchError::SpawnFailed { .. } => "",
            LaunchError::ExitedBeforeReady { stderr_tail, .. }
            | LaunchError::ReadyTimeout { stderr_tail, .. }
            | LaunchError::PortStolen { stderr_tail, .. }
            | LaunchError::NeverBound { stderr_tail, .. }
            | LaunchError::ExitedUnexpectedly { stderr_tail, .. } => stderr_tail,
        }
    }

    /// The server's exit status, when the error is about an exit.
    pub fn status(&self) -> Option<ExitStatus> {
        match self {
            LaunchError::ExitedBeforeReady { status, .. }
            | LaunchError::ExitedUnexpectedly { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<LaunchError> for crate::Error {
    fn from(e: LaunchError) -> crate::Error {
        crate::Error::Start(Box::new(e))
    }
}

/// For a server told its port by number: `Ok` when a listener on `port`
/// belongs to the tree of `main_pid` (the server or a descendant; `0` for
/// "no server": nothing is ours); otherwise [`LaunchError::PortStolen`] when
/// another process holds it, [`LaunchError::NeverBound`] when nobody does,
/// or an [`Error::Launch`](crate::Error::Launch) when the holder cannot be
/// seen, each with `stderr_tail`. (What `run --no-fds` checks, without a
/// discovery record.)
pub(crate) fn check_port_owner(port: u16, main_pid: u32, stderr_tail: &str) -> crate::Result<()> {
    let entries = crate::net::listeners_on_port(port);
    let mut foreign = None;
    for entry in &entries {
        match &entry.owner {
            Some(owner) if crate::supervisor::tree::is_in_tree(owner.pid, main_pid) => {
                return Ok(());
            }
            Some(owner) => foreign = Some(owner.clone()),
            None => {}
        }
    }
    let stderr_tail = stderr_tail.to_string();
    Err(match foreign {
        Some(owner) => LaunchError::PortStolen {
            port,
            pid: owner.pid,
            comm: owner.comm,
            stderr_tail,
        }
        .into(),
        None if !entries.is_empty() => crate::Error::Launch {
            message: format!(
                "port {port} is held by a socket whose owner porthold cannot see, not by the server{}",
                tail_suffix(&stderr_tail)
            ),
        },
        None => LaunchError::NeverBound { port, stderr_tail }.into(),
    })
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n--- last output of the server ---\n{tail}")
    }
}

fn last_error_suffix(last: &Option<String>) -> String {
    match last {
        Some(e) => format!(" (last attempt: {e})"),
        None => String::new(),
    }
}
