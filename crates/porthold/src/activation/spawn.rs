//! The send side of socket activation: start a program with listening sockets
//! at fds 3, 4, … and the `LISTEN_*` environment, the way systemd does.
//!
//! What the child receives:
//! - fds 0, 1, 2 (inherited, or the replacements the caller gives) and the
//!   sockets at `3..3+n`, **without** `FD_CLOEXEC`; no other fd, not even one
//!   porthold itself inherited without `FD_CLOEXEC` (everything from `3+n` up is
//!   closed with `close_range` before `execve`);
//! - optionally one more fd right after the sockets, at `3+n`, also without
//!   `FD_CLOEXEC`, named in a variable of the caller's choice
//!   ([`SpawnRequest::extra_fd`]: the handoff channel, `PORTHOLD_HANDOFF_FD`);
//!   it is requested, so it is no leak, and it is not counted in `LISTEN_FDS`;
//! - `LISTEN_FDS=n`, `LISTEN_PID=<its own pid>`, `LISTEN_FDNAMES=a:b:…` (always
//!   set when n > 0), the caller's extra variables, and porthold's environment
//!   minus stale `LISTEN_*`/`NOTIFY_SOCKET` values;
//! - default signal dispositions and an empty signal mask; optionally its own
//!   process group and a parent-death signal.
//!
//! # Between fork and exec
//!
//! The child is created as `posix_spawn` creates it: `clone(CLONE_VM |
//! CLONE_VFORK)`, on a small stack of its own, sharing the parent's memory
//! until it calls `execve`, while the forking thread waits. Copying the
//! address space of a multi-threaded launcher (what `fork` does: page tables,
//! TLB shootdowns on every CPU, then copy-on-write faults in the parent) would
//! cost more than everything else `porthold run` does before its server runs.
//!
//! A child that shares the memory of a multi-threaded process, like the child
//! of `fork` in one, must not take a lock another thread may hold, nor
//! allocate, nor write what other threads read. So the child runs only
//! async-signal-safe system calls and touches only memory prepared before the
//! clone: argv and envp are built in the parent, the program is resolved
//! through `PATH` in the parent, and `LISTEN_PID`'s value — the one thing only
//! the child knows — is written as digits into a slot reserved in the prepared
//! envp. Its fd table and signal dispositions are its own copies. Nothing
//! allocates (`tests/spawn_never_allocates_after_fork.rs` checks this with an
//! allocator that aborts in the child).
//!
//! # The fd shuffle
//!
//! Sources may already sit at the targets (a socket at fd 4 that must become
//! fd 3, and the one at fd 3 that must become 4). Before forking, every source
//! is duplicated (close-on-exec) to a number at or above `3+n`; in the child
//! those copies are `dup2`ed onto `3..3+n`. No target can then be a pending
//! source, and `dup2` onto a different number always yields an fd without
//! `FD_CLOEXEC`.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::process::Signal;

use crate::error::{Error, Result};

/// A program to start, with the sockets it gets.
#[derive(Debug)]
pub struct SpawnRequest<'a> {
    argv: Vec<OsString>,
    listeners: Vec<(BorrowedFd<'a>, String)>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    new_process_group: bool,
    parent_death_signal: Option<Signal>,
    ignored_signals: Vec<Signal>,
    no_listen_pid: bool,
    /// One more fd, placed at `3+n`, and the variable that names its number.
    extra_fd: Option<(BorrowedFd<'a>, OsString)>,
}

/// A started child.
#[derive(Debug)]
pub struct Child {
    pid: u32,
}

/// Variables porthold always sets itself or must not pass on stale.
const OWN_VARS: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

impl<'a> SpawnRequest<'a> {
    /// A request to run `argv[0]` (resolved through `PATH` unless it contains `/`).
    pub fn new(argv: Vec<OsString>) -> SpawnRequest<'a> {
        SpawnRequest {
            argv,
            listeners: Vec::new(),
            env: Vec::new(),
            stdin: None,
            stdout: None,
            stderr: None,
            new_process_group: false,
            parent_death_signal: None,
            ignored_signals: Vec::new(),
            no_listen_pid: false,
            extra_fd: None,
        }
    }

    /// Passes `fd` as the fd right after the listening sockets (`3+n`), without
    /// `FD_CLOEXEC`, and sets `env_key` to that number (e.g.
    /// `PORTHOLD_HANDOFF_FD=4` with one socket). It is not counted in
    /// `LISTEN_FDS`. A second call replaces the first.
    pub fn extra_fd(mut self, fd: BorrowedFd<'a>, env_key: impl AsRef<OsStr>) -> Self {
        self.extra_fd = Some((fd, env_key.as_ref().to_owned()));
        self
    }

    /// Leaves `LISTEN_PID` out (`LISTEN_FDS` and `LISTEN_FDNAMES` stay): for a
    /// child that is not the server itself but execs it as a grandchild (a
    /// file watcher), which would otherwise see another process's pid and,
    /// as strict receivers do, ignore the sockets.
    pub fn no_listen_pid(mut self, yes: bool) -> Self {
        self.no_listen_pid = yes;
        self
    }

    /// Adds a socket; the first added becomes fd 3. `name` goes into `LISTEN_FDNAMES`.
    pub fn listener(mut self, fd: BorrowedFd<'a>, name: &str) -> Self {
        self.listeners.push((fd, name.to_string()));
        self
    }

    /// Sets an environment variable for the child (overrides porthold's own).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The child's stdin instead of porthold's.
    pub fn stdin(mut self, fd: OwnedFd) -> Self {
        self.stdin = Some(fd);
        self
    }

    /// The child's stdout instead of porthold's.
    pub fn stdout(mut self, fd: OwnedFd) -> Self {
        self.stdout = Some(fd);
        self
    }

    /// The child's stderr instead of porthold's.
    pub fn stderr(mut self, fd: OwnedFd) -> Self {
        self.stderr = Some(fd);
        self
    }

    /// Puts the child in a new process group whose id is its pid.
    pub fn new_process_group(mut self, yes: bool) -> Self {
        self.new_process_group = yes;
        self
    }

    /// The signal the child gets when porthold (the thread that forked it) dies.
    pub fn parent_death_signal(mut self, signal: Signal) -> Self {
        self.parent_death_signal = Some(signal);
        self
    }

    /// Starts the child with `signal` ignored (`SIG_IGN`, which survives `execve`)
    /// instead of at its default, e.g. SIGHUP for a launcher run under `nohup`.
    pub fn ignore_signal(mut self, signal: Signal) -> Self {
        self.ignored_signals.push(signal);
        self
    }

    /// Starts the child.
    ///
    /// # Errors
    /// [`Error::Launch`] when the program cannot be found or executed ("command
    /// not found: X"), [`Error::Invalid`] for an empty argv or a NUL byte in an
    /// argument or variable, [`Error::Io`] when fork or a pipe fails.
    pub fn spawn(self) -> Result<Child> {
        let prepared = Prepared::new(&self)?;
        prepared.fork_exec()
    }
}

/// Everything the child needs, prepared before the fork.
struct Prepared {
    path: CString,
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    _env: Vec<Vec<u8>>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// Where the child writes LISTEN_PID's digits (inside `_env`).
    pid_slot: Option<*mut u8>,
    /// Close-on-exec copies of the sockets (and the extra fd, last), all
    /// numbered at or above `3 + n` (`3 + n + 1` with the extra fd).
    sources: Vec<OwnedFd>,
    /// Close-on-exec copies of the stdio replacements (same rule), by target 0/1/2.
    stdio: [Option<OwnedFd>; 3],
    new_process_group: bool,
    parent_death_signal: Option<Signal>,
    /// Bit `n` set: signal `n` starts ignored in the child.
    ignore_mask: u64,
    /// The highest signal number (`SIGRTMAX`), read before the fork.
    max_signal: i32,
    parent_pid: libc::pid_t,
    program: OsString,
}

/// Bytes reserved for LISTEN_PID's digits (a pid has at most 10 digits) plus NUL.
const PID_SLOT: usize = 12;
const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

fn cstring(bytes: Vec<u8>, what: &str) -> Result<CString> {
    CString::new(bytes).map_err(|_| {
        Error::invalid(
            format!("{what} contains a NUL byte"),
            Some("remove the NUL byte".into()),
        )
    })
}

/// Duplicates `fd` close-on-exec to a number `>= min`.
fn dup_above(fd: RawFd, min: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an fd the caller keeps open for the call; the
    // result is a fresh fd we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(Error::io(
            "duplicating a socket for the child",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `new` was just returned by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Finds `program` the way `execvp` would, but before the fork.
fn resolve(program: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(program));
    }
    let path_var = path_var.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(path_var) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Some(candidate);
        }
    }
    None
}

fn is_executable(path: &Path) -> bool {
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
        && std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

impl Prepared {
    fn new(request: &SpawnRequest<'_>) -> Result<Prepared> {
        let Some(program) = request.argv.first() else {
            return Err(Error::invalid(
                "no command to run",
                Some("give the server's command after `--`".into()),
            ));
        };
        let n = request.listeners.len();
        for (_, name) in &request.listeners {
            crate::net::listen::validate_fd_name(name)?;
        }

        // The environment: ours, minus what we set, plus the caller's.
        let extra_key = request.extra_fd.as_ref().map(|(_, k)| k.as_os_str());
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| {
                !OWN_VARS.iter().any(|v| k == v)
                    && k != "NOTIFY_SOCKET"
                    && Some(k.as_os_str()) != extra_key
                    && !request.env.iter().any(|(ek, _)| ek == k)
            })
            .collect();
        env.extend(
            request
                .env
                .iter()
                .filter(|(k, _)| Some(k.as_os_str()) != extra_key)
                .cloned(),
        );
        if let Some(key) = extra_key {
            env.push((key.to_owned(), (3 + n).to_string().into()));
        }
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone());
        let resolved = resolve(program, path_var.as_deref()).ok_or_else(|| Error::Launch {
            message: format!("command not found: {}", program.to_string_lossy()),
        })?;

        let mut env_bytes: Vec<Vec<u8>> = Vec::with_capacity(env.len() + 3);
        for (k, v) in env {
            let mut entry = k.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(v.as_bytes());
            if entry.contains(&0) {
                return Err(Error::invalid(
                    "an environment variable contains a NUL byte",
                    None,
                ));
            }
            entry.push(0);
            env_bytes.push(entry);
        }
        let mut pid_slot = None;
        if n > 0 {
            let names: Vec<&str> = request.listeners.iter().map(|(_, n)| n.as_str()).collect();
            env_bytes.push(format!("LISTEN_FDS={n}\0").into_bytes());
            env_bytes.push(format!("LISTEN_FDNAMES={}\0", names.join(":")).into_bytes());
            if !request.no_listen_pid {
                let mut slot = LISTEN_PID_PREFIX.to_vec();
                slot.extend_from_slice(&[0u8; PID_SLOT]);
                pid_slot = Some(env_bytes.len());
                env_bytes.push(slot);
            }
        }
        // Raw pointers taken once, mutably: the child writes LISTEN_PID's digits
        // through the slot pointer, and the kernel reads the same bytes at execve.
        let mut envp_ptrs: Vec<*const libc::c_char> = env_bytes
            .iter_mut()
            .map(|e| e.as_mut_ptr().cast_const().cast())
            .collect();
        let pid_slot = pid_slot.map(|i| {
            // SAFETY: entry i is LISTEN_PID_PREFIX followed by PID_SLOT bytes.
            unsafe {
                envp_ptrs[i]
                    .cast_mut()
                    .cast::<u8>()
                    .add(LISTEN_PID_PREFIX.len())
            }
        });
        envp_ptrs.push(std::ptr::null());

        let argv: Vec<CString> = request
            .argv
            .iter()
            .map(|a| cstring(a.as_bytes().to_vec(), "an argument"))
            .collect::<Result<_>>()?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());

        // Copies above the target range (the extra fd included): the shuffle
        // in the child can never overwrite a source it still needs.
        let total = n + usize::from(request.extra_fd.is_some());
        let floor = RawFd::try_from(3 + total).unwrap_or(RawFd::MAX);
        let sources = request
            .listeners
            .iter()
            .map(|(fd, _)| fd.as_raw_fd())
            .chain(request.extra_fd.as_ref().map(|(fd, _)| fd.as_raw_fd()))
            .map(|fd| dup_above(fd, floor))
            .collect::<Result<Vec<_>>>()?;
        let stdio = [
            request.stdin.as_ref(),
            request.stdout.as_ref(),
            request.stderr.as_ref(),
        ]
        .map(|fd| fd.map(|fd| dup_above(fd.as_raw_fd(), floor)).transpose());
        let [a, b, c] = stdio;
        let stdio = [a?, b?, c?];

        Ok(Prepared {
            path: cstring(resolved.into_os_string().into_vec(), "the program path")?,
            _argv: argv,
            argv_ptrs,
            _env: env_bytes,
            envp_ptrs,
            pid_slot,
            sources,
            stdio,
            new_process_group: request.new_process_group,
            parent_death_signal: request.parent_death_signal,
            ignore_mask: request
                .ignored_signals
                .iter()
                .filter(|s| (1..64).contains(&s.as_raw()))
                .fold(0u64, |mask, s| mask | (1u64 << s.as_raw())),
            max_signal: libc::SIGRTMAX().min(63),
            // SAFETY: getpid has no preconditions.
            parent_pid: unsafe { libc::getpid() },
            program: program.clone(),
        })
    }

    fn fork_exec(self) -> Result<Child> {
        let n = self.sources.len();
        let floor = RawFd::try_from(3 + n).unwrap_or(RawFd::MAX);
        // The exec-error pipe: CLOEXEC, so a successful exec closes it (EOF).
        let (err_read, err_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| Error::io("creating a pipe", e.into()))?;
        // Above the target range too; the original is closed at once (only
        // the copy may stay open until exec, or the read below never sees EOF).
        let err_write = {
            let low = err_write;
            dup_above(low.as_raw_fd(), floor)?
        };
        let err_fd = err_write.as_raw_fd();
        let source_fds: Vec<RawFd> = self.sources.iter().map(|f| f.as_raw_fd()).collect();
        let stdio_fds: [RawFd; 3] =
            [0, 1, 2].map(|i| self.stdio[i].as_ref().map_or(-1, |f| f.as_raw_fd()));
        let mut empty_mask = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given.
        unsafe { libc::sigemptyset(empty_mask.as_mut_ptr()) };
        // SAFETY: initialised just above.
        let empty_mask = unsafe { empty_mask.assume_init() };
        let env_slot: *mut u8 = self.pid_slot.unwrap_or(std::ptr::null_mut());

        // Block every signal across the fork: a handler of the embedder's
        // (porthold itself installs none) must never run in the child before the
        // child has reset the dispositions. The child unblocks after the reset.
        let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        let mut previous = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset initialises `all`; pthread_sigmask writes `previous`.
        unsafe {
            libc::sigfillset(all.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), previous.as_mut_ptr());
        }
        // Until the new pid is recorded as owned, no orphan reaper may reap a
        // child (this one could exit at once). The child never touches the lock.
        let owner = crate::supervisor::reaper::ForkGuard::lock();
        let plan = ChildPlan {
            path: self.path.as_ptr(),
            argv: self.argv_ptrs.as_ptr(),
            envp: self.envp_ptrs.as_ptr(),
            pid_slot: env_slot,
            sources: source_fds.as_ptr(),
            n,
            stdio: stdio_fds,
            err_fd,
            empty_mask: &empty_mask,
            new_process_group: self.new_process_group,
            pdeathsig: self.parent_death_signal.map_or(0, |s| s.as_raw()),
            ignore_mask: self.ignore_mask,
            max_signal: self.max_signal,
            parent_pid: self.parent_pid,
        };
        // The child's own stack while it shares our memory (16-byte aligned;
        // it grows down from the end). The child only makes system calls.
        // Left uninitialised: zeroing it would touch (page-fault) all of it,
        // where the child touches a page or two at its top.
        let mut stack: Vec<u128> = Vec::with_capacity(CHILD_STACK_BYTES / 16);
        // SAFETY: one past the end of the allocation (its capacity), the top of
        // a descending stack; only the child writes there, nothing reads it as
        // a `u128`.
        let stack_top = unsafe { stack.as_mut_ptr().add(stack.capacity()) }.cast::<libc::c_void>();
        // SAFETY: CLONE_VM|CLONE_VFORK (what posix_spawn does): the child runs
        // `child_entry` on its own stack in our address space, and this thread
        // is suspended until the child has called execve or _exit, so nothing
        // it reads (the plan and everything it points to, all prepared above)
        // changes or is freed under it. Other threads run on, but the child
        // touches no memory they use: it makes async-signal-safe system calls
        // only (its fd table and signal dispositions are its own copies, since
        // neither CLONE_FILES nor CLONE_SIGHAND is set), writes only its pid
        // into the envp buffer it execs with, and never allocates. Every
        // signal is blocked here, so no handler of ours runs in the child
        // before it has reset the dispositions.
        let pid = unsafe {
            libc::clone(
                child_entry,
                stack_top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::from_ref(&plan).cast_mut().cast::<libc::c_void>(),
            )
        };
        if pid > 0 {
            owner.owns(pid as u32);
        } else {
            drop(owner);
        }
        // SAFETY: restores the mask saved above (initialised by pthread_sigmask).
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, previous.as_ptr(), std::ptr::null_mut())
        };
        drop(stack);
        if pid < 0 {
            return Err(Error::io("clone", std::io::Error::last_os_error()));
        }
        drop(err_write);
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::pause("spawn.after-fork");
        // Did exec succeed? EOF: yes. Four bytes: the errno of the failure.
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match rustix::io::read(&err_read, &mut buf[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
        }
        let pid = pid as u32;
        if got == 4 {
            let errno = i32::from_ne_bytes(buf);
            let child = Child { pid };
            let _ = child.wait();
            let err = std::io::Error::from_raw_os_error(errno);
            let program = self.program.to_string_lossy();
            return Err(Error::Launch {
                message: if errno == libc::ENOENT {
                    format!("command not found: {program}")
                } else {
                    format!("cannot execute `{program}`: {err}")
                },
            });
        }
        Ok(Child { pid })
    }
}

/// The stack of the child between clone and exec (it makes system calls only).
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// The child's entry point after `clone`.
extern "C" fn child_entry(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` is the ChildPlan the parent passed to clone, alive until
    // this child has exec'd or exited (the parent is suspended by CLONE_VFORK).
    unsafe { child_after_fork(&*plan.cast::<ChildPlan<'_>>()) }
}

/// Raw pointers and numbers for the child; nothing in it allocates or frees.
struct ChildPlan<'a> {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    pid_slot: *mut u8,
    sources: *const RawFd,
    n: usize,
    stdio: [RawFd; 3],
    err_fd: RawFd,
    empty_mask: &'a libc::sigset_t,
    new_process_group: bool,
    pdeathsig: i32,
    ignore_mask: u64,
    max_signal: i32,
    parent_pid: libc::pid_t,
}

/// Reports `errno` to the parent and exits. Async-signal-safe.
///
/// # Safety
/// Only in the child of fork.
unsafe fn child_fail(err_fd: RawFd) -> ! {
    // SAFETY: errno location is thread-local and valid; write/_exit are
    // async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(err_fd, bytes.as_ptr().cast(), 4);
        libc::_exit(127)
    }
}

/// The child between fork and exec: async-signal-safe system calls only, no
/// allocation, no locks.
///
/// # Safety
/// Only in the child of fork, with a plan whose pointers point into memory
/// prepared before the fork.
unsafe fn child_after_fork(plan: &ChildPlan<'_>) -> ! {
    // SAFETY (whole block): every call is an async-signal-safe system call on
    // fds and memory prepared before the fork; see the module docs.
    unsafe {
        if plan.new_process_group && libc::setpgid(0, 0) != 0 {
            child_fail(plan.err_fd);
        }
        if plan.pdeathsig != 0 {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                plan.pdeathsig as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                child_fail(plan.err_fd);
            }
            // The parent may have died before prctl: then nobody will send it.
            if libc::getppid() != plan.parent_pid {
                libc::_exit(128 + plan.pdeathsig);
            }
        }
        // Default dispositions (a handler would be reset by exec anyway, but an
        // ignored signal — std ignores SIGPIPE — would stay ignored, and until
        // exec a handler of the parent's could run here), realtime signals
        // included, except those the caller wants ignored; then an empty mask.
        // (The C library refuses its reserved realtime signals: harmless.)
        for sig in 1..=plan.max_signal {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                let ignore = plan.ignore_mask & (1u64 << sig) != 0;
                libc::signal(sig, if ignore { libc::SIG_IGN } else { libc::SIG_DFL });
            }
        }
        libc::sigprocmask(libc::SIG_SETMASK, plan.empty_mask, std::ptr::null_mut());

        for (target, &source) in plan.stdio.iter().enumerate() {
            if source >= 0 && libc::dup2(source, target as RawFd) < 0 {
                child_fail(plan.err_fd);
            }
        }
        for i in 0..plan.n {
            // Sources are all >= 3+n, so dup2 never lands on a pending source,
            // and the new fd never has FD_CLOEXEC.
            if libc::dup2(*plan.sources.add(i), 3 + i as RawFd) < 0 {
                child_fail(plan.err_fd);
            }
        }
        if !plan.pid_slot.is_null() {
            write_decimal(plan.pid_slot, libc::getpid() as u32);
        }
        // Close everything else except the exec-error pipe (CLOEXEC: exec closes it).
        let first = 3 + plan.n as u32;
        let err = plan.err_fd as u32;
        if close_range(first, err.saturating_sub(1)) != 0 || close_range(err + 1, u32::MAX) != 0 {
            // Before Linux 5.9: close one by one up to the fd limit.
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(1 << 20) as u32
            } else {
                65_536
            };
            for fd in first..max {
                if fd != err {
                    libc::close(fd as RawFd);
                }
            }
        }
        libc::execve(plan.path, plan.argv, plan.envp);
        child_fail(plan.err_fd)
    }
}

/// `close_range(first, last, 0)`; an empty range is a success.
///
/// # Safety
/// Closes fds: only in the child after fork, where no Rust object owns them.
unsafe fn close_range(first: u32, last: u32) -> libc::c_long {
    if first > last {
        return 0;
    }
    // SAFETY: a raw system call with integer arguments.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) }
}

/// Writes `value` as decimal digits and a NUL at `out` (at most 11 bytes).
///
/// # Safety
/// `out` must be valid for [`PID_SLOT`] bytes.
unsafe fn write_decimal(out: *mut u8, mut value: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (value % 10) as u8;
        len += 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: len <= 10 < PID_SLOT, within the slot.
        unsafe { *out.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above.
    unsafe { *out.add(len) = 0 };
}

impl Child {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the child to exit and reaps it.
    ///
    /// # Errors
    /// When `waitpid` fails (e.g. someone else reaped it: `ECHILD`).
    pub fn wait(&self) -> Result<std::process::ExitStatus> {
        crate::supervisor::reaper::reap_blocking(self.pid)
            .map_err(|e| Error::io(format!("waiting for pid {}", self.pid), e))
    }

    /// Reaps the child if it has exited.
    ///
    /// # Errors
    /// When `waitpid` fails.
    pub fn try_wait(&self) -> Result<Option<std::process::ExitStatus>> {
        crate::supervisor::reaper::reap(self.pid)
            .map_err(|e| Error::io(format!("waiting for pid {}", self.pid), e))
    }

    /// Sends `signal` to the child.
    ///
    /// # Errors
    /// When `kill` fails (other than the child being gone already, which is fine).
    pub fn kill(&self, signal: Signal) -> Result<()> {
        let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) else {
            return Ok(());
        };
        match rustix::process::kill_process(pid, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::io(format!("signalling pid {}", self.pid), e.into())),
        }
    }
}

/// Replaces `{port}` (the first port) and `{port:NAME}` in every argument.
///
/// # Errors
/// [`Error::Invalid`] for `{port:NAME}` with an unknown NAME, or `{port}` without any port.
pub fn substitute_ports(args: &[OsString], ports: &[(String, u16)]) -> Result<Vec<OsString>> {
    args.iter()
        .map(|arg| substitute_one(arg.as_bytes(), ports).map(OsString::from_vec))
        .collect()
}

fn substitute_one(arg: &[u8], ports: &[(String, u16)]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = find(rest, b"{port") {
        out.extend_from_slice(&rest[..start]);
        let after = &rest[start + 5..];
        let (port, consumed) = if after.first() == Some(&b'}') {
            let port = ports.first().map(|(_, p)| *p).ok_or_else(|| {
                Error::invalid(
                    "`{port}` is used but no socket has a port",
                    Some("add a tcp:// or udp:// listener".into()),
                )
            })?;
            (port, 1)
        } else if after.first() == Some(&b':')
            && let Some(end) = after.iter().position(|&b| b == b'}')
        {
            let name = String::from_utf8_lossy(&after[1..end]).into_owned();
            let port = ports
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| *p)
                .ok_or_else(|| {
                    Error::invalid(
                        format!("`{{port:{name}}}` names no socket"),
                        Some(format!(
                            "known socket names: {}",
                            ports
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    )
                })?;
            (port, end + 1)
        } else {
            out.extend_from_slice(b"{port");
            rest = after;
            continue;
        };
        out.extend_from_slice(port.to_string().as_bytes());
        rest = &after[consumed..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(args: &[&str], ports: &[(&str, u16)]) -> Result<Vec<String>> {
        let ports: Vec<(String, u16)> = ports.iter().map(|(n, p)| (n.to_string(), *p)).collect();
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        Ok(substitute_ports(&args, &ports)?
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn ports_are_substituted_by_position_and_name() {
        let ports = [("web", 10001), ("admin", 10002)];
        assert_eq!(
            s(
                &[
                    "--port={port}",
                    "{port:admin}",
                    "x{port}y{port:web}",
                    "{port",
                    "{portal}"
                ],
                &ports
            )
            .unwrap(),
            ["--port=10001", "10002", "x10001y10001", "{port", "{portal}"]
        );
        assert!(
            s(&["{port:nope}"], &ports)
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
        assert!(s(&["{port}"], &[]).is_err());
    }

    #[test]
    fn decimal_digits_fill_the_slot() {
        let mut slot = [0xffu8; PID_SLOT];
        // SAFETY: the slot has PID_SLOT bytes.
        unsafe { write_decimal(slot.as_mut_ptr(), 4_194_304) };
        assert_eq!(&slot[..8], b"4194304\0");
        // SAFETY: as above.
        unsafe { write_decimal(slot.as_mut_ptr(), 0) };
        assert_eq!(&slot[..2], b"0\0");
    }

    #[test]
    fn a_missing_program_is_command_not_found() {
        let err = SpawnRequest::new(vec!["porthold-no-such-program".into()])
            .spawn()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "command not found: porthold-no-such-program"
        );
        let err = SpawnRequest::new(vec!["/nonexistent/x".into()])
            .spawn()
            .unwrap_err();
        assert!(err.to_string().contains("command not found"), "{err}");
    }
}
