//! The launcher's signals: caught, never fatal, delivered to one loop.
//!
//! porthold must outlive its server to report the server's exit code and to
//! clean up (the server's tree, the record, a Unix socket file), so no signal
//! a user or the system may send it is allowed to kill it silently. Every
//! signal whose default action would terminate porthold is blocked in the
//! thread that installs the [`SignalWatcher`] (and so in every thread it
//! starts later), taken with `sigwaitinfo` by a thread that waits, or read
//! from the watcher's `signalfd` by a loop that polls it
//! ([`SignalSource::poll_fd`]: the instance's serving loop, which then needs
//! no thread for signals), and classified by [`SignalPolicy::classify`]:
//!
//! | signal | what porthold does |
//! |---|---|
//! | SIGTERM, SIGINT, SIGQUIT | [`SignalAction::Stop`]: stop the instance (before ready: cancel the start) |
//! | SIGHUP | the terminal went away: [`SignalAction::Stop`] by default, or [`SignalAction::Forward`] ([`HupAction`]); left ignored when porthold inherited it ignored (`nohup`) |
//! | SIGUSR1, SIGUSR2, SIGWINCH | [`SignalAction::Forward`] to the server's process group |
//! | SIGCHLD | [`SignalAction::Reap`]: a child exited (orphans of the tree are reaped then, see [`super::reaper::adopt_orphans_on_signal`]) |
//! | SIGPIPE, SIGALRM, SIGVTALRM, SIGPROF, SIGXCPU, SIGXFSZ, SIGSTKFLT, SIGIO, SIGPWR, the realtime signals | [`SignalAction::Ignore`] |
//!
//! Faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT) keep
//! their default action: a handler that returns would re-run the faulting
//! instruction forever. SIGKILL and SIGSTOP cannot be caught.
//!
//! Blocking instead of handling costs two system calls however many signals
//! there are (a handler is two per signal, about 60 signals): it is on every
//! `porthold run`'s path. No disposition changes, so the server starts with
//! ordinary dispositions without the spawner having to know which signals
//! porthold takes; the spawner clears the mask in the child (and resets every
//! disposition anyway, except the ones it is told to keep ignored). "Ignored"
//! signals are taken and dropped, not set to `SIG_IGN`, which the server
//! would inherit.
//!
//! # Ctrl-C exactly once
//!
//! A terminal sends SIGINT to every process of its foreground process group.
//! The server runs in its own process group, so Ctrl-C reaches porthold only,
//! and porthold forwards it once. (Were the server in porthold's group, it
//! would receive the terminal's SIGINT *and* porthold's copy.)

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::process::Signal;

use crate::error::{Error, Result};

/// What SIGHUP to the launcher means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HupAction {
    /// The terminal went away: stop the instance (stop signal, drain, kill).
    #[default]
    Stop,
    /// Pass SIGHUP on to the server's process group.
    Forward,
    /// Reload the instance: a new generation on the same sockets.
    Reload,
}

impl HupAction {
    /// Parses `stop` or `forward`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the value otherwise.
    pub fn parse(text: &str) -> Result<HupAction> {
        match text {
            "stop" => Ok(HupAction::Stop),
            "forward" => Ok(HupAction::Forward),
            "reload" => Ok(HupAction::Reload),
            other => Err(Error::invalid(
                format!("unknown SIGHUP action `{other}`"),
                Some("use `stop`, `forward` or `reload`".to_string()),
            )),
        }
    }
}

/// What the instance does with one caught signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    /// Stop the instance (before ready: cancel the start, exit 128+signal).
    Stop(Signal),
    /// Send this signal to the server's process group (if there is a server yet).
    Forward(Signal),
    /// Start a new generation on the same sockets, as `porthold reload` does.
    Reload,
    /// A child exited (SIGCHLD): reap the orphans that are ours to reap.
    Reap,
    /// Nothing: the signal only must not kill porthold.
    Ignore,
}

/// Signals that stop the instance.
const STOP: [Signal; 3] = [Signal::TERM, Signal::INT, Signal::QUIT];
/// Signals passed on to the server.
const FORWARD: [Signal; 3] = [Signal::USR1, Signal::USR2, Signal::WINCH];
/// Terminating-by-default signals that are neither faults nor requests.
const IGNORED: [Signal; 9] = [
    Signal::PIPE,
    Signal::ALARM,
    Signal::VTALARM,
    Signal::PROF,
    Signal::XCPU,
    Signal::XFSZ,
    Signal::STKFLT,
    Signal::IO,
    Signal::POWER,
];

/// The realtime signals available to applications (`SIGRTMIN..=SIGRTMAX`; the
/// C library keeps the first few for itself).
pub fn realtime_signals() -> std::ops::RangeInclusive<i32> {
    libc::SIGRTMIN()..=libc::SIGRTMAX()
}

/// How the launcher treats each signal; built once, before any handler is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalPolicy {
    /// What SIGHUP means.
    pub hup: HupAction,
    /// SIGHUP was ignored when porthold started (`nohup`): it stays ignored,
    /// for porthold and for the server.
    pub hup_inherited_ignored: bool,
}

impl SignalPolicy {
    /// The policy for `hup`, honouring an inherited ignored SIGHUP of this process.
    pub fn new(hup: HupAction) -> SignalPolicy {
        SignalPolicy {
            hup,
            hup_inherited_ignored: is_ignored(Signal::HUP),
        }
    }

    /// What to do with `raw`, a caught signal number.
    pub fn classify(&self, raw: i32) -> SignalAction {
        if raw == Signal::HUP.as_raw() {
            return match (self.hup_inherited_ignored, self.hup) {
                (true, _) => SignalAction::Ignore,
                (false, HupAction::Stop) => SignalAction::Stop(Signal::HUP),
                (false, HupAction::Forward) => SignalAction::Forward(Signal::HUP),
                (false, HupAction::Reload) => SignalAction::Reload,
            };
        }
        if let Some(s) = STOP.into_iter().find(|s| s.as_raw() == raw) {
            return SignalAction::Stop(s);
        }
        if let Some(s) = FORWARD.into_iter().find(|s| s.as_raw() == raw) {
            return SignalAction::Forward(s);
        }
        if raw == Signal::CHILD.as_raw() {
            return SignalAction::Reap;
        }
        SignalAction::Ignore
    }

    /// The signals the server must start with ignored (SIGHUP under `nohup`).
    pub fn ignored_in_child(&self) -> Vec<Signal> {
        if self.hup_inherited_ignored {
            vec![Signal::HUP]
        } else {
            Vec::new()
        }
    }

    /// Every signal number the launcher installs a handler for.
    fn caught(&self) -> Vec<i32> {
        let mut raw: Vec<i32> = STOP
            .iter()
            .chain(FORWARD.iter())
            .chain(IGNORED.iter())
            .chain([Signal::CHILD].iter())
            .map(|s| s.as_raw())
            .collect();
        if !self.hup_inherited_ignored {
            raw.push(Signal::HUP.as_raw());
        }
        raw.extend(realtime_signals());
        raw
    }
}

/// Whether `signal`'s disposition in this process is `SIG_IGN`.
fn is_ignored(signal: Signal) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into
    // `old`, a zeroed (valid) sigaction owned by this frame.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal.as_raw(), std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Where an instance learns about the signals its embedder receives.
///
/// The library installs no signal handler of its own: a program that runs an
/// instance (the `porthold` CLI) installs them, typically a [`SignalWatcher`],
/// and passes the source in; a test or an embedding program can pass any other
/// source (a channel of [`SignalAction`]s).
pub trait SignalSource: Send {
    /// Blocks until the next signal that needs an action; `None` when no more will come.
    fn next_action(&mut self) -> Option<SignalAction>;

    /// A file descriptor that is readable while a signal waits to be taken,
    /// for a loop that polls it (with [`try_next_action`](Self::try_next_action))
    /// instead of blocking a thread in [`next_action`](Self::next_action).
    /// `None`, the default, for a source that cannot be polled.
    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// The next signal that needs an action if one waits, without blocking
    /// (only meaningful with a [`poll_fd`](Self::poll_fd)).
    fn try_next_action(&mut self) -> Option<SignalAction> {
        None
    }

    /// Signals the server must start with ignored (SIGHUP under `nohup`).
    fn ignored_in_child(&self) -> Vec<Signal> {
        Vec::new()
    }
}

impl SignalSource for SignalWatcher {
    fn next_action(&mut self) -> Option<SignalAction> {
        self.wait()
    }

    fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.signalfd.as_fd())
    }

    fn try_next_action(&mut self) -> Option<SignalAction> {
        self.try_take()
    }

    fn ignored_in_child(&self) -> Vec<Signal> {
        self.policy.ignored_in_child()
    }
}

impl SignalSource for std::sync::mpsc::Receiver<SignalAction> {
    fn next_action(&mut self) -> Option<SignalAction> {
        self.recv().ok()
    }
}

/// Takes the policy's signals for the life of the process;
/// [`wait`](SignalWatcher::wait) returns what to do with each, in order.
///
/// Install it on the main thread before any other thread starts: the signals
/// are blocked in the installing thread and the threads it starts afterwards,
/// and a thread started before would still take them with their default
/// (terminating) action.
pub struct SignalWatcher {
    set: SignalSet,
    policy: SignalPolicy,
    /// Readable while one of the set's signals is pending (non-blocking).
    signalfd: OwnedFd,
}

/// A `sigset_t` (plain data, valid once `sigemptyset` has run).
#[derive(Clone, Copy)]
struct SignalSet(libc::sigset_t);

impl SignalSet {
    fn of(signals: &[i32]) -> Result<SignalSet> {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset only
        // writes into that initialised set.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for &raw in signals {
                if libc::sigaddset(set.as_mut_ptr(), raw) != 0 {
                    return Err(Error::io(
                        format!("adding signal {raw} to a signal set"),
                        std::io::Error::last_os_error(),
                    ));
                }
            }
            Ok(SignalSet(set.assume_init()))
        }
    }
}

impl std::fmt::Debug for SignalWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalWatcher")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SignalWatcher {
    /// Blocks the policy's signals in the calling thread (and the threads it
    /// starts from now on). From now on none of these signals terminates the
    /// process; [`wait`](SignalWatcher::wait) takes them.
    ///
    /// # Errors
    /// When the mask cannot be changed.
    pub fn install(policy: SignalPolicy) -> Result<SignalWatcher> {
        let set = SignalSet::of(&policy.caught())?;
        // SAFETY: `set.0` is an initialised sigset_t; a null old mask is allowed.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set.0, std::ptr::null_mut()) };
        if r != 0 {
            return Err(Error::io(
                "blocking the launcher's signals",
                std::io::Error::from_raw_os_error(r),
            ));
        }
        // SAFETY: `set.0` is an initialised sigset_t; -1 asks for a new fd.
        let fd = unsafe { libc::signalfd(-1, &set.0, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(Error::io(
                "creating the launcher's signalfd",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: signalfd returned a new fd that nothing else owns.
        let signalfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(SignalWatcher {
            set,
            policy,
            signalfd,
        })
    }

    /// Takes the next pending signal that is not ignored, if any (never blocks).
    pub fn try_take(&mut self) -> Option<SignalAction> {
        loop {
            let mut info = std::mem::MaybeUninit::<libc::signalfd_siginfo>::uninit();
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reads at most `size` bytes into `info`, which has room for them.
            let n =
                unsafe { libc::read(self.signalfd.as_raw_fd(), info.as_mut_ptr().cast(), size) };
            if n < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // EAGAIN: nothing pending.
                    _ => return None,
                }
            }
            if usize::try_from(n).ok() != Some(size) {
                return None;
            }
            // SAFETY: the kernel filled the whole record.
            let info = unsafe { info.assume_init() };
            let raw = i32::try_from(info.ssi_signo).unwrap_or(0);
            match self.policy.classify(raw) {
                SignalAction::Ignore => {}
                action => return Some(action),
            }
        }
    }

    /// The policy the signals were taken for.
    pub fn policy(&self) -> SignalPolicy {
        self.policy
    }

    /// Blocks until the next taken signal that is not ignored.
    pub fn wait(&mut self) -> Option<SignalAction> {
        loop {
            // SAFETY: `self.set.0` is an initialised sigset_t; a null siginfo
            // pointer is allowed (only the number is needed).
            let raw = unsafe { libc::sigwaitinfo(&self.set.0, std::ptr::null_mut()) };
            if raw < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    _ => return None,
                }
            }
            match self.policy.classify(raw) {
                SignalAction::Ignore => {}
                action => return Some(action),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_has_its_documented_action() {
        let policy = SignalPolicy {
            hup: HupAction::Stop,
            hup_inherited_ignored: false,
        };
        assert_eq!(
            policy.classify(libc::SIGTERM),
            SignalAction::Stop(Signal::TERM)
        );
        assert_eq!(
            policy.classify(libc::SIGHUP),
            SignalAction::Stop(Signal::HUP)
        );
        assert_eq!(
            policy.classify(libc::SIGWINCH),
            SignalAction::Forward(Signal::WINCH)
        );
        assert_eq!(policy.classify(libc::SIGPIPE), SignalAction::Ignore);
        assert_eq!(policy.classify(libc::SIGCHLD), SignalAction::Reap);
        assert_eq!(policy.classify(libc::SIGRTMIN()), SignalAction::Ignore);
        let forward = SignalPolicy {
            hup: HupAction::Forward,
            ..policy
        };
        assert_eq!(
            forward.classify(libc::SIGHUP),
            SignalAction::Forward(Signal::HUP)
        );
        let nohup = SignalPolicy {
            hup_inherited_ignored: true,
            ..forward
        };
        assert_eq!(nohup.classify(libc::SIGHUP), SignalAction::Ignore);
        assert!(!nohup.caught().contains(&libc::SIGHUP));
        assert_eq!(nohup.ignored_in_child(), vec![Signal::HUP]);
    }

    #[test]
    fn a_taken_signal_is_waited_for_and_its_disposition_left_alone() {
        // Its own thread: the mask is per thread, and the test harness's
        // other threads must keep theirs.
        std::thread::spawn(|| {
            let policy = SignalPolicy {
                hup: HupAction::Stop,
                hup_inherited_ignored: false,
            };
            let mut watcher = SignalWatcher::install(policy).unwrap();
            // SAFETY: raise sends SIGUSR1 to this thread, where it is blocked
            // (pending until taken); sigaction with a null new action only reads.
            unsafe {
                assert_eq!(libc::raise(libc::SIGPIPE), 0);
                assert_eq!(libc::raise(libc::SIGUSR1), 0);
                let mut old: libc::sigaction = std::mem::zeroed();
                assert_eq!(
                    libc::sigaction(libc::SIGUSR1, std::ptr::null(), &mut old),
                    0
                );
                assert_eq!(old.sa_sigaction, libc::SIG_DFL);
            }
            // SIGPIPE (ignored by the policy) is taken and dropped.
            assert_eq!(watcher.wait(), Some(SignalAction::Forward(Signal::USR1)));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_taken_signal_can_be_polled_for_instead_of_waited_for() {
        std::thread::spawn(|| {
            let policy = SignalPolicy {
                hup: HupAction::Stop,
                hup_inherited_ignored: false,
            };
            let mut watcher = SignalWatcher::install(policy).unwrap();
            assert_eq!(watcher.try_take(), None, "nothing pending yet");
            // SAFETY: raise sends each signal to this thread, where it is blocked.
            unsafe {
                assert_eq!(libc::raise(libc::SIGPIPE), 0);
                assert_eq!(libc::raise(libc::SIGCHLD), 0);
                assert_eq!(libc::raise(libc::SIGTERM), 0);
            }
            let fd = watcher.poll_fd().unwrap();
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            assert_eq!(rustix::event::poll(&mut fds, None).unwrap(), 1);
            // Pending signals come lowest number first; SIGPIPE is dropped.
            let taken: Vec<_> = std::iter::from_fn(|| watcher.try_take()).collect();
            assert_eq!(
                taken,
                [SignalAction::Stop(Signal::TERM), SignalAction::Reap]
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn hup_actions_parse() {
        assert_eq!(HupAction::parse("stop").unwrap(), HupAction::Stop);
        assert_eq!(HupAction::parse("forward").unwrap(), HupAction::Forward);
        assert_eq!(HupAction::parse("reload").unwrap(), HupAction::Reload);
        assert!(HupAction::parse("restart").is_err());
        let reload = SignalPolicy {
            hup: HupAction::Reload,
            hup_inherited_ignored: false,
        };
        assert_eq!(reload.classify(libc::SIGHUP), SignalAction::Reload);
    }
}
