//! Stopping an instance from outside: what `porthold stop` does.
//!
//! The launcher is signalled through a pidfd opened for its recorded
//! identity, so a recycled pid is never signalled. A polite stop is SIGTERM to
//! the launcher, which forwards the stop signal to its server, drains and
//! cleans up. A forced stop cannot rely on the launcher any more: killing only
//! the launcher would leave a TERM-ignoring server running with ppid 1, still
//! listening. So, while the launcher is still alive (and, as a subreaper,
//! still the ancestor of every orphan of its tree), the tree is read from
//! `/proc`, every descendant and every member of the server's process group
//! is SIGKILLed through an identity-checked pidfd, the walk is repeated until
//! nothing is left (a process may fork while we kill), and only then the
//! launcher is killed.

use std::time::Duration;

use rustix::process::Signal;

use super::reader::LiveRecord;
use crate::error::{Error, Result};
use crate::identity::{self, ProcessHandle, ProcessIdentity};

/// How long a SIGKILLed process may take to be torn down by the kernel.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How often the tree is walked again while killing (forks race the kill).
const KILL_ROUNDS: usize = 16;

/// The margin [`default_stop_timeout`] adds to the instance's drain timeout.
pub const STOP_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// The drain timeout assumed for a record that does not carry one (schema 1.0).
pub const ASSUMED_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for an instance to end after SIGTERM by default: its
/// recorded drain timeout (after which its launcher kills the server itself)
/// plus [`STOP_TIMEOUT_MARGIN`], so a stubborn server is reported killed, not busy.
pub fn default_stop_timeout(live: &LiveRecord) -> Duration {
    live.record
        .drain_timeout_ms
        .map_or(ASSUMED_DRAIN_TIMEOUT, Duration::from_millis)
        .saturating_add(STOP_TIMEOUT_MARGIN)
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopOutcome {
    /// The launcher had already ended before it could be signalled.
    AlreadyStopped,
    /// It ended within the timeout after SIGTERM.
    Stopped,
    /// It did not end in time and the whole tree was SIGKILLed.
    Killed,
    /// It did not end in time and killing was not asked for.
    StillRunning,
}

impl StopOutcome {
    /// `already stopped`, `stopped`, `killed`, `still running`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopOutcome::AlreadyStopped => "already stopped",
            StopOutcome::Stopped => "stopped",
            StopOutcome::Killed => "killed",
            StopOutcome::StillRunning => "still running",
        }
    }
}

/// Stops the instance of `live`: SIGTERM to its launcher, up to `timeout`
/// for it to end; then, when `kill`, [`kill_instance`].
///
/// # Errors
/// [`Error::Invalid`] for an instance in another pid namespace (its pids mean
/// nothing here); [`Error::Io`] when signalling fails; [`Error::Busy`] when a
/// SIGKILLed launcher is still there after 10 s.
pub fn stop(live: &LiveRecord, timeout: Duration, kill: bool) -> Result<StopOutcome> {
    if live.liveness != super::Liveness::Alive {
        return Err(Error::invalid(
            format!(
                "instance `{}` runs in another pid namespace; it cannot be signalled from here",
                live.record.name
            ),
            Some("stop it from inside its pid namespace".into()),
        ));
    }
    let Some(launcher) = ProcessHandle::open(&live.record.identity())? else {
        return Ok(StopOutcome::AlreadyStopped);
    };
    if !launcher.signal(Signal::TERM)? {
        return Ok(StopOutcome::AlreadyStopped);
    }
    if launcher.wait_exit(timeout) {
        return Ok(StopOutcome::Stopped);
    }
    if !kill {
        return Ok(StopOutcome::StillRunning);
    }
    kill_tree_then_launcher(live, &launcher)?;
    Ok(StopOutcome::Killed)
}

/// SIGKILLs the instance's whole tree, then its launcher; afterwards nothing
/// of it runs and its ports are free. `Ok(false)` when the launcher had
/// already ended.
///
/// # Errors
/// As [`stop`].
pub fn kill_instance(live: &LiveRecord) -> Result<bool> {
    let Some(launcher) = ProcessHandle::open(&live.record.identity())? else {
        return Ok(false);
    };
    kill_tree_then_launcher(live, &launcher)?;
    Ok(true)
}

fn kill_tree_then_launcher(live: &LiveRecord, launcher: &ProcessHandle) -> Result<()> {
    let record = &live.record;
    let me = super::names::euid();
    for _ in 0..KILL_ROUNDS {
        // Only while the launcher lives is "its descendants" a meaningful set:
        // once it is gone, its orphans belong to init and cannot be told apart.
        if !launcher.identity().is_alive() {
            break;
        }
        let snapshot = identity::processes();
        let mut targets: Vec<ProcessIdentity> = identity::descendants_in(&snapshot, record.pid);
        for pgid in record.process_groups() {
            for member in identity::group_members_since(pgid, record.starttime, me) {
                if !targets.iter().any(|t| t.pid == member.pid) {
                    targets.push(member);
                }
            }
        }
        if targets.is_empty() {
            break;
        }
        identity::kill_all(&targets, KILL_WAIT)?;
    }
    launcher.signal(Signal::KILL)?;
    if !launcher.wait_exit(KILL_WAIT) {
        return Err(Error::Busy {
            what: format!("instance `{}` (pid {})", record.name, record.pid),
            detail: format!(
                "it was still there {} after SIGKILL",
                crate::duration::format(KILL_WAIT)
            ),
        });
    }
    Ok(())
}
