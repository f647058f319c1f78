//! The launcher's signals: caught, never fatal, delivered to one loop.
//!
//! porthold must outlive its server to report the server's exit code and to
//! clean up (the server's tree, the record, a Unix socket file), so no signal
//! a user or the system may send it is allowed to kill it silently. Every
//! signal whose default action would terminate porthold is caught (a handler
//! that writes to a self-pipe, from `signal-hook`) and classified by
//! [`SignalPolicy::classify`]:
//!
//! | signal | what porthold does |
//! |---|---|
//! | SIGTERM, SIGINT, SIGQUIT | [`SignalAction::Stop`]: stop the instance (before ready: cancel the start) |
//! | SIGHUP | the terminal went away: [`SignalAction::Stop`] by default, or [`SignalAction::Forward`] ([`HupAction`]); left ignored when porthold inherited it ignored (`nohup`) |
//! | SIGUSR1, SIGUSR2, SIGWINCH | [`SignalAction::Forward`] to the server's process group |
//! | SIGPIPE, SIGALRM, SIGVTALRM, SIGPROF, SIGXCPU, SIGXFSZ, SIGSTKFLT, SIGIO, SIGPWR, the realtime signals | [`SignalAction::Ignore`] |
//!
//! Faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT) keep
//! their default action: a handler that returns would re-run the faulting
//! instruction forever. SIGKILL and SIGSTOP cannot be caught.
//!
//! "Ignored" signals are caught by a handler that does nothing rather than set
//! to `SIG_IGN`: a caught signal goes back to its default at `execve`, so the
//! server starts with ordinary dispositions without the spawner having to know
//! which signals porthold ignores. (The spawner resets every disposition and
//! the mask in the child anyway, except the ones it is told to keep ignored.)
//!
//! # Ctrl-C exactly once
//!
//! A terminal sends SIGINT to every process of its foreground process group.
//! The server runs in its own process group, so Ctrl-C reaches porthold only,
//! and porthold forwards it once. (Were the server in porthold's group, it
//! would receive the terminal's SIGINT *and* porthold's copy.)

use rustix::process::Signal;
use signal_hook::iterator::Signals;

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

    /// Signals the server must start with ignored (SIGHUP under `nohup`).
    fn ignored_in_child(&self) -> Vec<Signal> {
        Vec::new()
    }
}

impl SignalSource for SignalWatcher {
    fn next_action(&mut self) -> Option<SignalAction> {
        self.wait()
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

/// Catches the policy's signals for the life of the process;
/// [`wait`](SignalWatcher::wait) returns what to do with each, in order.
pub struct SignalWatcher {
    signals: Signals,
    policy: SignalPolicy,
}

impl std::fmt::Debug for SignalWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalWatcher")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SignalWatcher {
    /// Installs the handlers. From now on none of these signals terminates the process.
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn install(policy: SignalPolicy) -> Result<SignalWatcher> {
        let signals = Signals::new(policy.caught())
            .map_err(|e| Error::io("installing signal handlers", e))?;
        Ok(SignalWatcher { signals, policy })
    }

    /// The policy the handlers were installed for.
    pub fn policy(&self) -> SignalPolicy {
        self.policy
    }

    /// Blocks until the next caught signal that is not ignored.
    pub fn wait(&mut self) -> Option<SignalAction> {
        for raw in self.signals.forever() {
            match self.policy.classify(raw) {
                SignalAction::Ignore => {}
                action => return Some(action),
            }
        }
        None
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
