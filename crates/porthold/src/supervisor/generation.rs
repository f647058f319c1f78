//! One generation: one child of an instance, with its own pidfd, process
//! group, output capture and scoped kill.
//!
//! Everything here acts on *this* child only, so that several generations (a
//! reload's old and new server) and several instances (the `TestServer`s of one
//! test binary) can live in one process without disturbing each other or the
//! embedder's own children:
//!
//! * the child is waited for through its own pid (after a poll on its pidfd),
//!   never with `waitpid(-1)`;
//! * a stop signals the child's process group and the descendants of the
//!   child itself (found in `/proc` while the child still lives, each then
//!   signalled through a pidfd opened for its exact identity), never "every
//!   descendant of this process".
//!
//! # What stopping one generation can miss
//!
//! A process that left the child's process group (`setsid`, `setpgid`) *and*
//! whose parent chain up to the child was already broken when the stop began
//! (its parent exited, so it was re-parented to init or to the nearest
//! subreaper) is no longer findable from the child: neither the group nor the
//! tree walk reaches it. Only an embedder that made itself a subreaper can
//! catch it, by killing everything re-parented to itself when the whole
//! instance ends (`porthold run` does that; see [`super::tree`]).
//!
//! # The spawning thread
//!
//! The parent-death signal (`PR_SET_PDEATHSIG`) fires when the *thread* that
//! forked the child exits, not the process. [`Spawner`] is one dedicated thread
//! that lives as long as its owner and does every fork, so a server started
//! from a short-lived thread (a test's thread, a `OnceLock` initialiser)
//! survives that thread.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::activation::spawn::SpawnRequest;
use crate::error::{Error, Result};
use crate::identity::{self, ProcessHandle, ProcessIdentity};
use crate::supervisor::tree;
use crate::sync::lock;

/// How much of each output stream a generation keeps in memory.
pub const OUTPUT_LIMIT: usize = 1 << 20;
/// How much of stderr goes into an error message.
pub const TAIL_BYTES: usize = 4096;

/// The exit code [`Generation::try_wait`] reports for a child whose status
/// another waiter of the process took.
pub const LOST_STATUS_CODE: i32 = 255;

type Job = Box<dyn FnOnce() + Send>;

/// Where the children of its owner are forked (see the module docs): one
/// dedicated thread ([`Spawner::new`]), or the calling thread itself
/// ([`Spawner::on_calling_thread`]) for an embedder whose calling thread
/// outlives every child it starts (the main thread of `porthold run`).
#[derive(Debug)]
pub struct Spawner {
    jobs: Option<Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
    inline: bool,
}

impl Spawner {
    /// Starts the spawning thread.
    ///
    /// # Errors
    /// When the thread cannot be created.
    pub fn new() -> Result<Spawner> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let thread = thread::Builder::new()
            .name("porthold-spawner".into())
            .spawn(move || {
                for job in inbox {
                    job();
                }
            })
            .map_err(|e| Error::io("starting the spawner thread", e))?;
        Ok(Spawner {
            jobs: Some(jobs),
            thread: Some(thread),
            inline: false,
        })
    }

    /// Forks on whichever thread asks. The parent-death signal then fires when
    /// *that* thread ends: use it only where the thread that starts the
    /// instance lives as long as the instance (a program's main thread).
    pub fn on_calling_thread() -> Spawner {
        Spawner {
            jobs: None,
            thread: None,
            inline: true,
        }
    }

    /// Runs `job` on the spawning thread and returns its result.
    fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        if self.inline {
            return Ok(job());
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = self.jobs.as_ref().map(|jobs| {
            jobs.send(Box::new(move || {
                let _ = reply.send(job());
            }))
        });
        match sent {
            Some(Ok(())) => answer
                .recv()
                .map_err(|_| Error::io("the spawner thread", std::io::Error::other("it ended"))),
            _ => Err(Error::io(
                "the spawner thread",
                std::io::Error::other("it ended"),
            )),
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One captured output stream: everything up to its limit ([`OUTPUT_LIMIT`]
/// by default; the latest bytes win), filled by a thread until the child's
/// tree closes it.
#[derive(Debug, Clone)]
pub struct Output {
    bytes: Arc<Mutex<Vec<u8>>>,
    limit: usize,
}

impl Default for Output {
    fn default() -> Self {
        Output::keeping(OUTPUT_LIMIT)
    }
}

impl Output {
    /// An output that keeps only its last `limit` bytes.
    pub(crate) fn keeping(limit: usize) -> Output {
        Output {
            bytes: Arc::default(),
            limit,
        }
    }

    pub(crate) fn push(&self, bytes: &[u8]) {
        let mut buf = lock(&self.bytes);
        buf.extend_from_slice(bytes);
        if buf.len() > self.limit {
            let cut = buf.len() - self.limit;
            buf.drain(..cut);
        }
    }

    /// Everything captured so far (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.bytes)).into_owned()
    }

    /// The last [`TAIL_BYTES`] captured, trimmed at the end.
    pub fn tail(&self) -> String {
        let buf = lock(&self.bytes);
        let start = buf.len().saturating_sub(TAIL_BYTES);
        String::from_utf8_lossy(&buf[start..])
            .trim_end()
            .to_string()
    }

    /// Fills `into` from `from` until EOF; with `echo`, also copies every
    /// byte to this process's stderr.
    fn capture(from: OwnedFd, into: Output, echo: bool) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let mut file = std::fs::File::from(from);
            let mut buf = [0u8; 8192];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        into.push(&buf[..n]);
                        if echo {
                            let _ = std::io::Write::write_all(&mut std::io::stderr(), &buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        })
    }
}

/// What to start as a generation.
#[derive(Debug, Default)]
pub struct GenerationSpec {
    /// The program and its arguments (ports already substituted).
    pub argv: Vec<OsString>,
    /// The sockets, in fd order from 3, with their names (duplicates of the instance's).
    pub sockets: Vec<(OwnedFd, String)>,
    /// Extra environment.
    pub env: Vec<(OsString, OsString)>,
    /// The working directory, when not the caller's.
    pub current_dir: Option<std::path::PathBuf>,
    /// Signals the child starts with ignored.
    pub ignored_signals: Vec<Signal>,
    /// The signal the child gets when the spawning thread ends (`None`: SIGKILL).
    pub parent_death_signal: Option<Signal>,
    /// How the child's standard streams are connected.
    pub stdio: GenerationStdio,
    /// Leave `LISTEN_PID` out (see [`SpawnRequest::no_listen_pid`]).
    pub no_listen_pid: bool,
    /// One more fd right after the sockets and the variable naming it (see
    /// [`SpawnRequest::extra_fd`]): a handoff channel.
    pub extra_fd: Option<(OwnedFd, OsString)>,
}

/// How a generation's standard streams are connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GenerationStdio {
    /// stdin is `/dev/null`; stdout and stderr are captured in memory (up to
    /// [`OUTPUT_LIMIT`] each): what a test wants.
    #[default]
    Captured,
    /// stdin and stdout are the embedder's own; stderr is copied to the
    /// embedder's stderr as it comes, and its last [`TAIL_BYTES`] are kept to
    /// explain a failed start: what `porthold run` does while a start can
    /// still fail after the spawn (a readiness that waits, `no_fds`).
    InheritedKeepingTail,
    /// stdin, stdout and stderr are the embedder's own, nothing is copied and
    /// [`Generation::stderr`] stays empty: for a start that cannot fail
    /// after the spawn (readiness `listen`), where a tail would never be shown.
    Inherited,
}

/// One running (or exited, not yet dropped) child with its own process group.
#[derive(Debug)]
pub struct Generation {
    pid: u32,
    pidfd: OwnedFd,
    status: Mutex<Option<ExitStatus>>,
    lost: std::sync::atomic::AtomicBool,
    stdout: Output,
    stderr: Output,
    copiers: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl Generation {
    /// Spawns `spec` on `spawner`'s thread, in a new process group, with
    /// SIGKILL as its parent-death signal and stdout/stderr captured.
    ///
    /// # Errors
    /// The spawn's errors ([`Error::Launch`] for a program that cannot be
    /// executed), or [`Error::Io`] for pipes and the pidfd.
    pub fn spawn(spawner: &Spawner, spec: GenerationSpec) -> Result<Generation> {
        let pipe = || {
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
                .map_err(|e| Error::io("creating an output pipe", e.into()))
        };
        let captured = spec.stdio == GenerationStdio::Captured;
        let (out_read, out_write) = if captured {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let (err_read, err_write) = if spec.stdio == GenerationStdio::Inherited {
            (None, None)
        } else {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        };
        let stdin: Option<OwnedFd> = if captured {
            let devnull =
                std::fs::File::open("/dev/null").map_err(|e| Error::io("opening /dev/null", e))?;
            Some(devnull.into())
        } else {
            None
        };
        let argv = match &spec.current_dir {
            Some(dir) => wrap_in_dir(dir, spec.argv),
            None => spec.argv,
        };
        let (sockets, env, ignored) = (spec.sockets, spec.env, spec.ignored_signals);
        let no_listen_pid = spec.no_listen_pid;
        let extra_fd = spec.extra_fd;
        let death_signal = spec.parent_death_signal.unwrap_or(Signal::KILL);
        let spawned = spawner.run(move || -> Result<(u32, OwnedFd)> {
            let mut request = SpawnRequest::new(argv)
                .no_listen_pid(no_listen_pid)
                .new_process_group(true)
                .parent_death_signal(death_signal);
            if let Some(stderr) = err_write {
                request = request.stderr(stderr);
            }
            if let Some(stdin) = stdin {
                request = request.stdin(stdin);
            }
            if let Some(stdout) = out_write {
                request = request.stdout(stdout);
            }
            for (fd, name) in &sockets {
                request = request.listener(fd.as_fd(), name);
            }
            if let Some((fd, key)) = &extra_fd {
                request = request.extra_fd(fd.as_fd(), key);
            }
            for (k, v) in &env {
                request = request.env(k, v);
            }
            for signal in &ignored {
                request = request.ignore_signal(*signal);
            }
            let child = request.spawn()?;
            let pid = child.pid();
            let raw = rustix::process::Pid::from_raw(pid as i32)
                .ok_or_else(|| Error::io("spawning", std::io::Error::other("pid 0")))?;
            // The child is ours and not reaped yet: its pid cannot be reused,
            // so this pidfd refers to it.
            let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
                .map_err(|e| Error::io(format!("opening a pidfd for pid {pid}"), e.into()))?;
            Ok((pid, pidfd))
        })??;
        let (pid, pidfd) = spawned;
        let stdout = Output::default();
        let stderr = if captured {
            Output::default()
        } else {
            Output::keeping(TAIL_BYTES)
        };
        let mut copiers = Vec::new();
        if let Some(err_read) = err_read {
            copiers.push(Output::capture(err_read, stderr.clone(), !captured));
        }
        if let Some(out_read) = out_read {
            copiers.push(Output::capture(out_read, stdout.clone(), false));
        }
        Ok(Generation {
            pid,
            pidfd,
            status: Mutex::new(None),
            lost: std::sync::atomic::AtomicBool::new(false),
            stdout,
            stderr,
            copiers: Mutex::new(copiers),
        })
    }

    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's pidfd: readable once the child has exited (for an event loop's `poll`).
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Its captured stdout.
    pub fn stdout(&self) -> &Output {
        &self.stdout
    }

    /// Its captured stderr.
    pub fn stderr(&self) -> &Output {
        &self.stderr
    }

    /// The child's exit status once it exited (reaping it by its own pid), `None` while it runs.
    ///
    /// A status some other waiter of the process took first (a
    /// `waitpid(-1)` outside porthold, which breaks the rule that each child
    /// has one waiter) cannot be known any more: it is reported as exit code
    /// [`LOST_STATUS_CODE`], and [`Generation::status_lost`] says so.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        let mut slot = lock(&self.status);
        if slot.is_none() {
            match super::reaper::reap(self.pid) {
                Ok(Some(status)) => *slot = Some(status),
                Ok(None) => {}
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
                    *slot = Some(std::os::unix::process::ExitStatusExt::from_raw(
                        LOST_STATUS_CODE << 8,
                    ));
                }
                Err(_) => {}
            }
        }
        *slot
    }

    /// Whether the child's exit status was taken by another waiter of the
    /// process (see [`Generation::try_wait`]).
    pub fn status_lost(&self) -> bool {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the child to exit (polling its pidfd).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        use rustix::event::{PollFd, PollFlags, poll};
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            let spec = rustix::event::Timespec::try_from(left).unwrap_or(rustix::event::Timespec {
                tv_sec: i64::MAX,
                tv_nsec: 0,
            });
            let _ = poll(&mut fds, Some(&spec));
        }
    }

    /// Sends `signal` to the child's process group (and the child itself, in
    /// case it left the group).
    pub fn signal(&self, signal: Signal) {
        if lock(&self.status).is_some() {
            // Reaped: its pid (and group id) may belong to someone else now.
            return;
        }
        tree::signal_group(self.pid, signal);
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, signal);
    }

    /// Stops the generation: `stop_signal` to its group and to the
    /// descendants of the child, up to `grace` for the child to exit, then
    /// SIGKILL to all of them; reaps the child and returns its status.
    ///
    /// Descendants are signalled through pidfds opened for their exact
    /// identity, so a pid reused meanwhile is never touched. See the module
    /// docs for what this can miss.
    ///
    /// When the child had already exited, whatever is left of its process
    /// group gets `stop_signal` and the grace period before SIGKILL.
    pub fn stop(&self, stop_signal: Signal, grace: Duration) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            if group_alive(self.pid) {
                tree::signal_group(self.pid, stop_signal);
                let deadline = Instant::now() + grace;
                while group_alive(self.pid) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(5));
                }
                tree::signal_group(self.pid, Signal::KILL);
            }
            self.join_output();
            return status;
        }
        let mut known = self.tree_members();
        self.signal(stop_signal);
        for member in &known {
            let _ = member.signal(stop_signal);
        }
        let deadline = Instant::now() + grace;
        let status = loop {
            if let Some(status) = self.try_wait() {
                break Some(status);
            }
            // The child still lives: its tree is still findable from it.
            merge(&mut known, self.tree_members());
            if Instant::now() >= deadline {
                break None;
            }
            self.wait_timeout(Duration::from_millis(20).min(grace));
        };
        let status = match status {
            Some(status) => {
                // The child is gone; its remaining descendants get the grace left.
                let left = deadline.saturating_duration_since(Instant::now());
                for member in &known {
                    member.wait_exit(left);
                }
                status
            }
            None => {
                self.signal(Signal::KILL);
                loop {
                    if let Some(status) = self.wait_timeout(Duration::from_secs(3600)) {
                        break status;
                    }
                }
            }
        };
        // Whatever of the tree survived (a member that left the group) is killed now.
        tree::signal_group(self.pid, Signal::KILL);
        for member in &known {
            let _ = member.signal(Signal::KILL);
        }
        for member in &known {
            member.wait_exit(Duration::from_secs(5));
        }
        self.join_output();
        status
    }

    /// Waits for the output pipes to close (the whole tree let go of them),
    /// at most briefly: a process that escaped the stop may hold them forever.
    fn join_output(&self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut copiers = lock(&self.copiers);
        while Instant::now() < deadline && copiers.iter().any(|c| !c.is_finished()) {
            thread::sleep(Duration::from_millis(5));
        }
        copiers.retain(|c| !c.is_finished());
    }

    /// Pidfd handles on the child's live descendants.
    fn tree_members(&self) -> Vec<ProcessHandle> {
        if lock(&self.status).is_some() {
            // Reaped: its pid may be someone else's now; what was found before stays known.
            return Vec::new();
        }
        let snapshot = identity::processes();
        let mut ids: Vec<ProcessIdentity> = identity::descendants_in(&snapshot, self.pid);
        // Members of the group that are no longer below the child (their parent died).
        for p in &snapshot {
            if p.pgrp == self.pid
                && p.identity.pid != self.pid
                && !ids.iter().any(|i| i.pid == p.identity.pid)
            {
                ids.push(p.identity.clone());
            }
        }
        ids.iter()
            .filter_map(|id| ProcessHandle::open(id).ok().flatten())
            .collect()
    }
}

/// Whether any process (a zombie included) is still in process group `pgid`.
fn group_alive(pgid: u32) -> bool {
    rustix::process::Pid::from_raw(pgid as i32)
        .is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}

fn merge(known: &mut Vec<ProcessHandle>, more: Vec<ProcessHandle>) {
    for handle in more {
        if !known
            .iter()
            .any(|k| k.identity().same_as(handle.identity()))
        {
            known.push(handle);
        }
    }
}

/// `argv` run in `dir`: through `/bin/sh -c 'cd "$1" && shift && exec "$@"'`,
/// since nothing but async-signal-safe calls may run between fork and exec.
fn wrap_in_dir(dir: &std::path::Path, argv: Vec<OsString>) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![
        "/bin/sh".into(),
        "-c".into(),
        "cd \"$0\" && exec \"$@\"".into(),
        dir.as_os_str().to_owned(),
    ];
    out.extend(argv);
    out
}

impl Drop for Generation {
    fn drop(&mut self) {
        if lock(&self.status).is_none() {
            self.stop(Signal::KILL, Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_another_waiter_took_is_reported_as_lost_not_waited_for_forever() {
        let spawner = Spawner::new().unwrap();
        let spec = GenerationSpec {
            argv: vec!["sh".into(), "-c".into(), "exit 7".into()],
            ..GenerationSpec::default()
        };
        let generation = Generation::spawn(&spawner, spec).unwrap();
        // A foreign waiter (as a `waitpid(-1)` elsewhere in the process would).
        let mut raw = 0;
        // SAFETY: waitpid on one pid with a valid status pointer.
        let reaped = unsafe { libc::waitpid(generation.pid() as i32, &mut raw, 0) };
        assert_eq!(reaped, generation.pid() as i32);
        let status = generation
            .wait_timeout(Duration::from_secs(10))
            .expect("a status, not a wait forever");
        assert_eq!(status.code(), Some(LOST_STATUS_CODE));
        assert!(generation.status_lost());
        assert_eq!(
            generation.stop(Signal::TERM, Duration::from_secs(1)).code(),
            Some(255)
        );
    }
}
