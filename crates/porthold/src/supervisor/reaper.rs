//! Who reaps which child of this process.
//!
//! Every child porthold forks (a generation's server, a `cmd:` readiness
//! probe) is *owned*: exactly one waiter reaps it, by its own pid
//! ([`reap`]), so its exit status reaches that waiter and nobody else.
//! porthold never calls `waitpid(-1)` on behalf of an instance: inside a test
//! binary or any other embedder that would steal the exit statuses of the
//! embedder's own children.
//!
//! # Adopting orphans
//!
//! A process that made itself a child subreaper (`porthold run` does, so that
//! a server's double-forked helpers stay findable) also inherits zombies it
//! never forked: orphans of a server's tree re-parented to it. Someone must
//! reap those, or they pile up for the instance's whole life. An embedder
//! opts into that with [`adopt_orphans`]: it makes the process a subreaper and
//! starts one thread that reaps every child *no porthold waiter owns*. The
//! thread peeks with `waitid(WNOWAIT)` (which reaps nothing), and reaps a pid
//! only after checking, under the same lock that every fork holds until its
//! new pid is recorded, that the pid is not owned: a child that exits the
//! instant it is forked is therefore never mistaken for an orphan.
//!
//! [`adopt_orphans_on_signal`] is the same without the thread, for a process
//! whose instance takes SIGCHLD through a [`super::signals::SignalWatcher`]
//! (the CLI): each SIGCHLD ([`super::signals::SignalAction::Reap`]) sweeps the
//! exited orphans with the same peek and the same check, and so does every
//! reap of an owned child (an owned child that has exited but is not reaped
//! yet hides the ones behind it from the peek).
//!
//! Only a program whose children are all started by porthold should adopt
//! orphans (the CLI): the sweep would also reap children the program starts
//! by other means. The library never calls either by itself.

use std::collections::BTreeSet;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sync::lock;

/// The pids of this process's children that a porthold waiter owns.
struct Owned {
    pids: Mutex<BTreeSet<u32>>,
    /// Notified when a pid is added (a child now exists) or removed (reaped).
    changed: Condvar,
}

fn owned() -> &'static Owned {
    static OWNED: OnceLock<Owned> = OnceLock::new();
    OWNED.get_or_init(|| Owned {
        pids: Mutex::new(BTreeSet::new()),
        changed: Condvar::new(),
    })
}

static ADOPTING: AtomicBool = AtomicBool::new(false);
/// Orphans are swept on SIGCHLD and after each owned reap ([`adopt_orphans_on_signal`]).
static SWEEPING: AtomicBool = AtomicBool::new(false);

/// Held across a fork: the orphan reaper cannot decide about any pid until
/// the new child's pid is recorded as owned.
pub(crate) struct ForkGuard {
    pids: MutexGuard<'static, BTreeSet<u32>>,
}

impl ForkGuard {
    /// Takes the lock; call right before `fork`.
    pub(crate) fn lock() -> ForkGuard {
        ForkGuard {
            pids: lock(&owned().pids),
        }
    }

    /// Records the forked child's pid as owned.
    pub(crate) fn owns(mut self, pid: u32) {
        self.pids.insert(pid);
        drop(self);
        owned().changed.notify_all();
    }
}

/// Reaps the owned child `pid` if it has exited (never blocks), giving up its ownership.
///
/// # Errors
/// When `waitpid` fails (for example `ECHILD`: it was never our child).
pub(crate) fn reap(pid: u32) -> std::io::Result<Option<ExitStatus>> {
    let status = wait_pid(pid, libc::WNOHANG);
    // Reaped, or no longer our child (another waiter took it): not owned any more.
    if matches!(&status, Ok(Some(_)))
        || matches!(&status, Err(e) if e.raw_os_error() == Some(libc::ECHILD))
    {
        disown(pid);
    }
    status
}

/// Waits for the owned child `pid` to exit and reaps it.
///
/// # Errors
/// When `waitpid` fails.
pub(crate) fn reap_blocking(pid: u32) -> std::io::Result<ExitStatus> {
    loop {
        if let Some(status) = wait_pid(pid, 0)? {
            disown(pid);
            return Ok(status);
        }
    }
}

fn wait_pid(pid: u32, flags: i32) -> std::io::Result<Option<ExitStatus>> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one pid with a valid status pointer.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, flags) };
        if r == pid as i32 {
            return Ok(Some(std::os::unix::process::ExitStatusExt::from_raw(
                status,
            )));
        }
        if r == 0 {
            return Ok(None);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

fn disown(pid: u32) {
    lock(&owned().pids).remove(&pid);
    owned().changed.notify_all();
    // Exited orphans behind this child in the peek order are visible now.
    sweep_orphans();
}

/// Makes this process a child subreaper and reaps, from one thread, every
/// child that no porthold waiter owns (see the module docs). Idempotent.
///
/// From then on, the end of an instance also ends every process that was
/// re-parented to this process (what `porthold run` does). Call it only in a
/// program that runs one instance and starts no children of its own.
///
/// # Errors
/// When the process cannot become a subreaper or the thread cannot start.
pub fn adopt_orphans() -> Result<()> {
    adopt(|| {
        std::thread::Builder::new()
            .name("porthold-reaper".into())
            .spawn(reap_orphans)
            .map(drop)
            .map_err(|e| Error::io("starting the orphan reaper", e))
    })
}

/// Becomes a subreaper, then sets up who reaps the orphans (`reaping`), once
/// per process: a concurrent or later second call returns at once; a failure
/// leaves the process as if never called.
fn adopt(reaping: impl FnOnce() -> Result<()>) -> Result<()> {
    if ADOPTING
        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return Ok(());
    }
    let started = super::tree::become_subreaper().and_then(|()| reaping());
    if started.is_err() {
        ADOPTING.store(false, Ordering::SeqCst);
    }
    started
}

/// Makes this process a child subreaper whose orphans are reaped without a
/// thread of their own: on each SIGCHLD that its instance's serving loop (or
/// its signal thread) takes from a [`super::signals::SignalWatcher`]
/// ([`super::instance::run_with`]), and after each reap of an owned child.
/// For a program that runs one instance that way and starts no children of
/// its own (the CLI); see the module docs. Idempotent.
///
/// # Errors
/// When the process cannot become a subreaper.
pub fn adopt_orphans_on_signal() -> Result<()> {
    adopt(|| {
        SWEEPING.store(true, Ordering::SeqCst);
        Ok(())
    })
}

/// Whether [`adopt_orphans`] or [`adopt_orphans_on_signal`] was called in this process.
pub fn adopts_orphans() -> bool {
    ADOPTING.load(Ordering::SeqCst)
}

/// Reaps every exited orphan the peek can see now (never blocks), in a
/// process that adopted orphans with [`adopt_orphans_on_signal`]; a no-op
/// otherwise. Stops at an owned child that has exited: its owner reaps it,
/// and that reap sweeps again.
pub(crate) fn sweep_orphans() {
    if !SWEEPING.load(Ordering::SeqCst) {
        return;
    }
    while let Some(pid) = peek_exited(libc::WNOHANG) {
        if !reap_if_orphan(pid) {
            return;
        }
    }
}

/// Reaps the exited child `pid` if no porthold waiter owns it; whether it did.
fn reap_if_orphan(pid: u32) -> bool {
    // Decided under the lock every fork holds until its pid is recorded: a
    // child that exited the instant it was forked is owned by then. (An exited
    // pid is a zombie until reaped: no new child can take it meanwhile.)
    if lock(&owned().pids).contains(&pid) {
        return false;
    }
    // Not owned, exited: an adopted orphan (or a child of the embedder's own).
    let _ = wait_pid(pid, libc::WNOHANG);
    true
}

/// The first exited child (without reaping it), `None` when there is no
/// child at all (or, with `WNOHANG` in `flags`, none has exited).
fn peek_exited(flags: i32) -> Option<u32> {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with WNOWAIT only reports; `info` is valid for writes.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOWAIT | flags,
            )
        };
        if r == 0 {
            // SAFETY: waitid filled `info` for a child event (si_pid is valid;
            // 0 with WNOHANG when no child has exited).
            let pid = unsafe { info.si_pid() };
            return u32::try_from(pid).ok().filter(|&pid| pid != 0);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

fn reap_orphans() {
    let owned = owned();
    loop {
        let Some(pid) = peek_exited(0) else {
            // No child at all: orphans arrive only below a child we fork, so
            // wait until one is forked (bounded, in case of a fork by other means).
            let pids = lock(&owned.pids);
            let _ = owned.changed.wait_timeout(pids, Duration::from_millis(500));
            continue;
        };
        if !reap_if_orphan(pid) {
            // Its owner reaps it: wait until it has (bounded: the owner may be
            // slow to look, and a different child may be waiting meanwhile).
            let pids = lock(&owned.pids);
            let _ = owned
                .changed
                .wait_timeout_while(pids, Duration::from_millis(50), |p| p.contains(&pid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // The child is reaped by `reap_blocking`, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    fn an_owned_child_is_reaped_by_its_own_pid_only() {
        let guard = ForkGuard::lock();
        let child = std::process::Command::new("true").spawn().unwrap();
        guard.owns(child.id());
        assert!(lock(&owned().pids).contains(&child.id()));
        let status = reap_blocking(child.id()).unwrap();
        assert!(status.success());
        assert!(!lock(&owned().pids).contains(&child.id()));
        // Reaped once: a second reap is ECHILD, not a status.
        assert!(reap(child.id()).is_err());
    }
}
