//! The instance owns its server's whole process tree.
//!
//! A server may fork workers, daemonise a helper, or be a shell that started
//! something in the background (`sh -c 'sleep 1000 & exec server'`). When the
//! instance stops, none of that may keep running or keep the port. porthold
//! therefore:
//! - is a **child subreaper** (`PR_SET_CHILD_SUBREAPER`, when the embedder
//!   opted in with [`super::reaper::adopt_orphans`], as the CLI does): orphans
//!   of the tree are re-parented to porthold instead of init, so they stay
//!   findable as our descendants and their zombies are ours to reap;
//! - starts the server in its **own process group**, so one `kill(-pgid)`
//!   reaches every process that did not leave the group;
//! - stops one generation through its group and the descendants of its own
//!   root ([`super::generation::Generation::stop`]);
//! - at the end of the instance, in a process that adopts orphans, signals
//!   every descendant ([`end_descendants`], walking `/proc/*/stat` parent links
//!   from porthold itself, which catches re-parented orphans and processes that
//!   changed group), waits a grace period and SIGKILLs the survivors.

use std::collections::{HashMap, HashSet};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::error::{Error, Result};

/// Makes the calling process a child subreaper.
///
/// # Errors
/// When `prctl` fails (kernels before 3.4).
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with integer arguments; no memory is passed.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(Error::io(
            "becoming a child subreaper",
            std::io::Error::last_os_error(),
        ))
    }
}

/// `pid -> ppid` of every process visible in `/proc`.
fn parent_map() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = crate::identity::ppid_of(pid) {
            map.insert(pid, ppid);
        }
    }
    map
}

/// Every descendant of `root` (children, grandchildren, …), zombies included.
pub fn descendants(root: u32) -> Vec<u32> {
    let map = parent_map();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in &map {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

/// Whether `pid` is `root` or one of its descendants (walks the parent chain).
pub fn is_in_tree(pid: u32, root: u32) -> bool {
    if root == 0 {
        return false;
    }
    let mut current = pid;
    for _ in 0..4096 {
        if current == root {
            return true;
        }
        match crate::identity::ppid_of(current) {
            Some(ppid) if ppid != 0 && ppid != current => current = ppid,
            _ => return false,
        }
    }
    false
}

/// Sends `signal` to the process group `pgid` (the server's pid: it leads its group).
/// A group that no longer exists is not an error.
pub fn signal_group(pgid: u32, signal: Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid as i32) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

fn signal_pid(pid: u32, signal: Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// Ends every descendant of this process: SIGTERM to all of them, up to
/// `grace` for them to go, then SIGKILL to the survivors, waiting (bounded)
/// until none is left. Their zombies are reaped as orphans
/// ([`super::reaper::adopt_orphans`] and its variant), which only a process that adopts
/// orphans runs: this is the end of an instance in such a process (the CLI),
/// and catches what a generation's own stop cannot find (a process that left
/// the server's group and whose parent died: re-parented to us, the subreaper).
pub fn end_descendants(grace: Duration) {
    let me = std::process::id();
    // No children, no tree: skips the /proc walk in the common case of a
    // server whose tree ended with it.
    if !has_children() {
        return;
    }
    let live = |pids: Vec<u32>| -> Vec<u32> {
        pids.into_iter()
            .filter(|&pid| !crate::identity::is_zombie(pid))
            .collect()
    };
    let first = live(descendants(me));
    if first.is_empty() {
        return;
    }
    for &pid in &first {
        signal_pid(pid, Signal::TERM);
    }
    if !wait_descendants_gone(me, grace) {
        for pid in descendants(me) {
            signal_pid(pid, Signal::KILL);
        }
        wait_descendants_gone(me, Duration::from_secs(10));
    }
}

/// Whether this process has any child, running or exited-but-unreaped.
pub fn has_children() -> bool {
    // SAFETY: waitid with WNOWAIT only peeks; the siginfo is a valid out-pointer.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    !(r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// Waits until `me` has no live descendant (zombies, which the orphan
/// reaper is about to reap, do not count).
fn wait_descendants_gone(me: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if descendants(me).into_iter().all(crate::identity::is_zombie) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The exit code a shell would report for `status`: the code, or 128+signal.
pub fn exit_code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn exit_codes_map_like_a_shell() {
        assert_eq!(exit_code_of(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code_of(ExitStatus::from_raw(libc::SIGTERM)), 143);
        assert_eq!(exit_code_of(ExitStatus::from_raw(libc::SIGKILL)), 137);
    }

    #[test]
    fn a_child_is_in_our_tree_and_we_are_not_in_its() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id();
        assert!(is_in_tree(child.id(), me));
        assert!(!is_in_tree(me, child.id()));
        assert!(descendants(me).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
