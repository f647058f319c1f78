//! Process identity that survives PID reuse.
//!
//! A pid alone does not name a process: the kernel hands the same number to a
//! new process once the old one is reaped, and in a small pid namespace that
//! happens within seconds. `kill(pid, 0)` or the existence of `/proc/<pid>`
//! therefore says nothing about *which* process is there. A
//! [`ProcessIdentity`] adds the process's start time (clock ticks since boot,
//! field 22 of `/proc/<pid>/stat`) and the kernel's boot id
//! (`/proc/sys/kernel/random/boot_id`). A pid is reused only after its previous
//! owner has exited and been reaped, and the kernel hands pids out cyclically,
//! so a newcomer with the same pid *and* the same start tick (ticks are 10 ms
//! with the usual `USER_HZ` of 100) would need the whole pid space to wrap
//! within one tick: not something that happens short of deliberately writing
//! `ns_last_pid`. The boot id makes an identity recorded before a reboot never
//! match a process after it.
//!
//! Invariants:
//! - `/proc/<pid>/stat` is parsed after the **last** `)`, because the command
//!   name in parentheses may itself contain `)`, spaces or anything else.
//! - A zombie (state `Z`) or dead (`X`) process is not alive: it holds no fds,
//!   no locks and no sockets any more.
//! - Pids are those of the pid namespace of the `/proc` we read. Identities
//!   recorded in another pid namespace cannot be checked here; compare
//!   [`pid_namespace`] values before trusting a pid from elsewhere.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who a process is, robustly: pid plus start time plus boot id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The process id (in the pid namespace of the reader's `/proc`).
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub starttime: u64,
    /// The kernel boot id (`/proc/sys/kernel/random/boot_id`), lower-case UUID text.
    pub boot_id: String,
}

/// The fields of `/proc/<pid>/stat` porthold uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The process id (field 1).
    pub pid: u32,
    /// The command name (field 2, without the parentheses; may contain anything).
    pub comm: String,
    /// The state letter (field 3): `R`, `S`, `D`, `Z`, `T`, `t`, `X`, `I`...
    pub state: char,
    /// The parent pid (field 4).
    pub ppid: u32,
    /// The process group id (field 5).
    pub pgrp: u32,
    /// Start time in clock ticks since boot (field 22).
    pub starttime: u64,
}

impl Stat {
    /// Parses the text of a `/proc/<pid>/stat` file.
    ///
    /// The command name is everything between the first `(` and the **last**
    /// `)`; the remaining fields are split on whitespace after that last `)`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the text does not have the expected shape.
    pub fn parse(text: &str) -> Result<Stat> {
        let bad = |what: &str| {
            Error::invalid(
                format!("malformed /proc stat line ({what}): `{}`", text.trim_end()),
                None,
            )
        };
        let open = text.find('(').ok_or_else(|| bad("no `(`"))?;
        let close = text.rfind(')').ok_or_else(|| bad("no `)`"))?;
        if close < open {
            return Err(bad("`)` before `(`"));
        }
        let pid = text[..open].trim().parse::<u32>().map_err(|_| bad("pid"))?;
        let comm = text[open + 1..close].to_string();
        // Fields after the comm start at field 3 (state).
        let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
        let field = |n: usize| {
            rest.get(n - 3)
                .copied()
                .ok_or_else(|| bad("too few fields"))
        };
        let mut state_chars = field(3)?.chars();
        let state = match (state_chars.next(), state_chars.next()) {
            (Some(c), None) => c,
            _ => return Err(bad("state")),
        };
        let ppid = field(4)?.parse::<u32>().map_err(|_| bad("ppid"))?;
        let pgrp = field(5)?.parse::<u32>().map_err(|_| bad("pgrp"))?;
        let starttime = field(22)?.parse::<u64>().map_err(|_| bad("starttime"))?;
        Ok(Stat {
            pid,
            comm,
            state,
            ppid,
            pgrp,
            starttime,
        })
    }

    /// Whether the state is zombie or dead: the process has exited and holds nothing.
    pub fn is_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The whole of a `/proc` file in two reads (the data, then the end) into a
/// buffer that fits it. `fs::read_to_string` would first `statx` and `lseek`
/// the file (whose size `/proc` reports as 0) to size its buffer, then read
/// 32 bytes at a time, doubling: 9 system calls instead of 4 for a `stat`
/// line. (Through `take`, `read_to_end` skips that size probe.)
fn read_proc(path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(1024);
    fs::File::open(path)?.take(u64::MAX).read_to_end(&mut buf)?;
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads and parses `/proc/<pid>/stat`; `Ok(None)` when there is no such process.
///
/// # Errors
/// [`Error::Io`] for read failures other than "no such process", and
/// [`Error::Invalid`] for an unparsable file.
pub fn stat(pid: u32) -> Result<Option<Stat>> {
    let path = format!("/proc/{pid}/stat");
    match read_proc(&path) {
        Ok(text) => Stat::parse(&text).map(Some),
        // ESRCH can surface when the process exits between open and read.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Ok(None)
        }
        Err(e) => Err(Error::io(format!("reading `{path}`"), e)),
    }
}

/// The current boot id (read once per process: it cannot change while we run).
///
/// # Errors
/// [`Error::Io`] when `/proc/sys/kernel/random/boot_id` cannot be read.
pub fn boot_id() -> Result<String> {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    if let Some(id) = BOOT_ID.get() {
        return Ok(id.clone());
    }
    let path = "/proc/sys/kernel/random/boot_id";
    let text = read_proc(path).map_err(|e| Error::io(format!("reading `{path}`"), e))?;
    let id = text.trim().to_ascii_lowercase();
    if id.is_empty() {
        return Err(Error::invalid(format!("`{path}` is empty"), None));
    }
    Ok(BOOT_ID.get_or_init(|| id).clone())
}

impl ProcessIdentity {
    /// The identity of the calling process.
    ///
    /// # Errors
    /// When `/proc` cannot be read (not Linux, `/proc` not mounted).
    pub fn current() -> Result<ProcessIdentity> {
        // A process's start time never changes, so it is read once per pid
        // (keyed by pid: a forked child is another process with its own).
        static OWN_START: Mutex<Option<(u32, u64)>> = Mutex::new(None);
        let pid = std::process::id();
        let cached = *crate::sync::lock(&OWN_START);
        let starttime = match cached {
            Some((cached_pid, starttime)) if cached_pid == pid => starttime,
            _ => {
                // /proc/self is the caller's own entry even when /proc belongs to
                // another pid namespace (then the pid below would not match it;
                // we use our own).
                let text = read_proc("/proc/self/stat")
                    .map_err(|e| Error::io("reading `/proc/self/stat`", e))?;
                let starttime = Stat::parse(&text)?.starttime;
                *crate::sync::lock(&OWN_START) = Some((pid, starttime));
                starttime
            }
        };
        Ok(ProcessIdentity {
            pid,
            starttime,
            boot_id: boot_id()?,
        })
    }

    /// The identity of the process that has `pid` now, `Ok(None)` when no such
    /// process exists (or it is a zombie: it has exited).
    ///
    /// # Errors
    /// When `/proc` cannot be read for other reasons.
    pub fn of(pid: u32) -> Result<Option<ProcessIdentity>> {
        if pid == 0 {
            return Ok(None);
        }
        match stat(pid)? {
            Some(st) if !st.is_exited() => Ok(Some(ProcessIdentity {
                pid,
                starttime: st.starttime,
                boot_id: boot_id()?,
            })),
            _ => Ok(None),
        }
    }

    /// Whether this exact process still runs: a process with this pid exists,
    /// is not a zombie, and has the same start time, in the same boot.
    ///
    /// Errors reading `/proc` count as "not provably alive" (false).
    pub fn is_alive(&self) -> bool {
        matches!(ProcessIdentity::of(self.pid), Ok(Some(now)) if now.same_as(self))
    }

    /// Whether two identities name the same process (pid, start time and boot id all equal).
    pub fn same_as(&self, other: &ProcessIdentity) -> bool {
        self.pid == other.pid && self.starttime == other.starttime && self.boot_id == other.boot_id
    }
}

/// A handle on one exact process (a pidfd), for signalling and waiting without
/// the pid-reuse race of `kill(pid, ...)`.
///
/// The pidfd is opened first and the identity checked afterwards: if the
/// process we checked is the one with that pid *after* the pidfd exists, the
/// pidfd refers to it, and every later signal goes to it even if the pid is
/// reused in between.
#[derive(Debug)]
pub struct ProcessHandle {
    pidfd: std::os::fd::OwnedFd,
    identity: ProcessIdentity,
}

impl ProcessHandle {
    /// Opens a handle on `identity`'s process, `Ok(None)` when that exact
    /// process no longer runs (exited, or its pid now belongs to another).
    ///
    /// # Errors
    /// When the pidfd cannot be opened for another reason than "no such
    /// process" (e.g. a kernel without pidfd support, before Linux 5.3).
    pub fn open(identity: &ProcessIdentity) -> Result<Option<ProcessHandle>> {
        let Some(pid) = rustix::process::Pid::from_raw(identity.pid as i32) else {
            return Ok(None);
        };
        let pidfd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("opening a pidfd for pid {}", identity.pid),
                    e.into(),
                ));
            }
        };
        if !identity.is_alive() {
            return Ok(None);
        }
        Ok(Some(ProcessHandle {
            pidfd,
            identity: identity.clone(),
        }))
    }

    /// The identity this handle was opened for.
    pub fn identity(&self) -> &ProcessIdentity {
        &self.identity
    }

    /// Sends `signal` to the process. `Ok(false)` when it has already exited.
    ///
    /// # Errors
    /// When the kernel refuses (e.g. `EPERM` for another user's process).
    pub fn signal(&self, signal: rustix::process::Signal) -> Result<bool> {
        match rustix::process::pidfd_send_signal(&self.pidfd, signal) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(e) => Err(Error::io(
                format!("signalling pid {}", self.identity.pid),
                e.into(),
            )),
        }
    }

    /// Waits up to `timeout` for the process to exit; true when it has.
    ///
    /// A pidfd becomes readable when its process exits (for a child of ours:
    /// once it is a zombie, before it is reaped).
    pub fn wait_exit(&self, timeout: std::time::Duration) -> bool {
        use rustix::event::{PollFd, PollFlags, poll};
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            let spec = rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            });
            match poll(&mut fds, Some(&spec)) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(rustix::io::Errno::INTR) if !left.is_zero() => continue,
                Err(_) => return !self.identity.is_alive(),
            }
        }
    }
}

/// The command name of a process (`/proc/<pid>/comm`, at most 15 bytes), if readable.
pub fn comm(pid: u32) -> Option<String> {
    let text = fs::read(format!("/proc/{pid}/comm")).ok()?;
    let text = String::from_utf8_lossy(&text);
    Some(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

/// The effective uid of a process (second value of `Uid:` in `/proc/<pid>/status`), if readable.
pub fn uid_of(pid: u32) -> Option<u32> {
    let text = read_proc(&format!("/proc/{pid}/status")).ok()?;
    parse_status_uid(&text)
}

fn parse_status_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line["Uid:".len()..].split_whitespace().nth(1)?.parse().ok()
}

/// The parent pid of a process, if it exists.
pub fn ppid_of(pid: u32) -> Option<u32> {
    stat(pid).ok().flatten().map(|s| s.ppid)
}

/// Whether `pid` has exited (a zombie waiting to be reaped) or is gone.
pub fn is_zombie(pid: u32) -> bool {
    stat(pid).ok().flatten().is_none_or(|s| s.is_exited())
}

/// The pid namespace a process belongs to: the inode number of `/proc/<pid>/ns/pid`.
///
/// `None` when unreadable (no permission, no such process, no namespace support).
pub fn pid_namespace(pid: u32) -> Option<u64> {
    fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

/// The pid namespace of the calling process (inode of `/proc/self/ns/pid`).
pub fn current_pid_namespace() -> Option<u64> {
    fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// One running (not exited) process seen in `/proc`, with what porthold needs
/// to decide whether it belongs to an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEntry {
    /// Its identity (pid, start time, boot id).
    pub identity: ProcessIdentity,
    /// Its parent pid.
    pub ppid: u32,
    /// Its process group.
    pub pgrp: u32,
}

/// Every running process in `/proc` (zombies left out: they hold nothing).
/// Processes that vanish while being read are skipped.
pub fn processes() -> Vec<ProcessEntry> {
    let Ok(boot) = boot_id() else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| stat(pid).ok().flatten())
        .filter(|st| !st.is_exited())
        .map(|st| ProcessEntry {
            identity: ProcessIdentity {
                pid: st.pid,
                starttime: st.starttime,
                boot_id: boot.clone(),
            },
            ppid: st.ppid,
            pgrp: st.pgrp,
        })
        .collect()
}

/// The descendants of `root` (children, grandchildren, …) in `snapshot`.
pub fn descendants_in(snapshot: &[ProcessEntry], root: u32) -> Vec<ProcessIdentity> {
    let mut out = Vec::new();
    let mut frontier = vec![root];
    let mut seen = std::collections::HashSet::from([root]);
    while let Some(parent) = frontier.pop() {
        for p in snapshot.iter().filter(|p| p.ppid == parent) {
            if seen.insert(p.identity.pid) {
                out.push(p.identity.clone());
                frontier.push(p.identity.pid);
            }
        }
    }
    out
}

/// The members of process group `pgid` that started at or after `not_before`
/// (clock ticks since boot) and belong to `uid`.
///
/// This is how a dead instance's leftovers are recognised: the kernel does not
/// reuse a process-group id while the group has members, so a member that
/// started after the instance did can only be the instance's server or one of
/// its descendants that kept the group.
pub fn group_members_since(pgid: u32, not_before: u64, uid: u32) -> Vec<ProcessIdentity> {
    if pgid <= 1 {
        return Vec::new();
    }
    processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && p.identity.starttime >= not_before)
        .filter(|p| uid_of(p.identity.pid) == Some(uid))
        .map(|p| p.identity)
        .collect()
}

/// SIGKILLs each of `targets` through a pidfd opened for its identity (a
/// process whose pid was reused in between is never touched), then waits up
/// to `timeout` for all of them to be gone. Returns how many were killed.
///
/// # Errors
/// When a pidfd cannot be opened or the kernel refuses the signal.
pub fn kill_all(targets: &[ProcessIdentity], timeout: std::time::Duration) -> Result<usize> {
    let mut handles = Vec::new();
    for target in targets {
        if let Some(handle) = ProcessHandle::open(target)?
            && handle.signal(rustix::process::Signal::KILL)?
        {
            handles.push(handle);
        }
    }
    let deadline = std::time::Instant::now() + timeout;
    for handle in &handles {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        handle.wait_exit(left);
    }
    Ok(handles.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_file_is_read_whole_however_long() {
        let own = read_proc("/proc/self/stat").unwrap();
        assert_eq!(Stat::parse(&own).unwrap().pid, std::process::id());
        // Longer than the first buffer: the growth path.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long");
        let text: String = (0..700).map(|i| format!("{i:>6}\n")).collect();
        fs::write(&path, &text).unwrap();
        assert_eq!(read_proc(path.to_str().unwrap()).unwrap(), text);
    }

    fn stat_line(comm: &str, state: char, starttime: u64) -> String {
        // 52 fields in total on modern kernels; field 22 is starttime.
        let mut fields = vec![state.to_string(), "77".into()];
        for n in 5..=21 {
            fields.push(n.to_string());
        }
        fields.push(starttime.to_string());
        for n in 23..=52 {
            fields.push(n.to_string());
        }
        format!("4242 ({comm}) {}\n", fields.join(" "))
    }

    #[test]
    fn parses_a_plain_stat_line() {
        let st = Stat::parse(&stat_line("sleep", 'S', 123456)).unwrap();
        assert_eq!(st.pid, 4242);
        assert_eq!(st.comm, "sleep");
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 77);
        assert_eq!(st.pgrp, 5);
        assert_eq!(st.starttime, 123456);
    }

    #[test]
    fn parses_after_the_last_paren_when_comm_has_parens_and_spaces() {
        for comm in [
            "a) b (c",
            ") ) )",
            "x 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
            "(",
            "",
            "tab\there",
        ] {
            let st = Stat::parse(&stat_line(comm, 'R', 987)).unwrap();
            assert_eq!(st.comm, comm);
            assert_eq!(st.starttime, 987, "comm {comm:?}");
            assert_eq!(st.state, 'R');
        }
    }

    #[test]
    fn rejects_malformed_stat_lines() {
        for bad in [
            "",
            "12 sleep S 1",
            "12 (sleep) S",
            "x (sleep) S 1 2",
            "12 (sleep) SS 1",
        ] {
            assert!(Stat::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zombies_are_exited() {
        assert!(Stat::parse(&stat_line("z", 'Z', 1)).unwrap().is_exited());
        assert!(!Stat::parse(&stat_line("t", 'T', 1)).unwrap().is_exited());
    }

    #[test]
    fn current_process_is_alive_and_same_as_itself() {
        let me = ProcessIdentity::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.is_alive());
        let again = ProcessIdentity::of(me.pid).unwrap().unwrap();
        assert!(again.same_as(&me));
        let other_start = ProcessIdentity {
            starttime: me.starttime + 1,
            ..me.clone()
        };
        assert!(!other_start.is_alive());
        let other_boot = ProcessIdentity {
            boot_id: "00000000-0000-0000-0000-000000000000".into(),
            ..me.clone()
        };
        assert!(!other_boot.is_alive());
    }

    #[test]
    fn a_reaped_child_is_not_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let id = ProcessIdentity::of(child.id()).unwrap().unwrap();
        assert!(id.is_alive());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!id.is_alive());
    }

    #[test]
    fn an_unreaped_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait until it has exited but do not reap it yet.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while stat(pid).unwrap().map(|s| !s.is_exited()).unwrap_or(false) {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(ProcessIdentity::of(pid).unwrap(), None);
        child.wait().unwrap();
    }

    #[test]
    fn status_uid_is_the_effective_uid() {
        let status = "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\t5\t5\t5\n";
        assert_eq!(parse_status_uid(status), Some(1001));
        assert_eq!(
            uid_of(std::process::id()),
            Some(rustix::process::geteuid().as_raw())
        );
    }

    #[test]
    fn comm_and_namespace_of_self_are_readable() {
        assert!(comm(std::process::id()).is_some());
        assert_eq!(pid_namespace(std::process::id()), current_pid_namespace());
        assert_eq!(
            ppid_of(std::process::id()),
            Some(rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32))
        );
    }
}
