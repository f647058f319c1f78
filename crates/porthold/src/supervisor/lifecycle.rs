//! The lifecycle state machine shared by `run`, `reload` and handoff.
//!
//! An instance (or one generation of it) moves through explicit states:
//!
//! ```text
//! Idle -> Binding -> Spawning -> WaitingReady -> Running -> Stopping -> Stopped
//!   \________\__________\____________\---> Failed { during, reason }
//!    \________\__________\____________\--> Cancelled { during }
//!                                 Running -> Stopped (the child ended by itself)
//! ```
//!
//! Every change is a compare-and-swap under one mutex ([`Lifecycle::transition`]):
//! the caller names the state it believes it is leaving, and a stale belief is an
//! error carrying the actual state, never a silent overwrite. Two threads can
//! therefore never both "win" a transition.
//!
//! # Cancellation always wins before `Running`
//!
//! A start can be cancelled (a signal, `porthold stop`, a reload rollback) through a
//! [`CancelToken`]. The failure this module exists to prevent (P3 in PRODUCT.md) is a
//! start that was cancelled but still reported `Running`, because setup did not
//! block and the "started" step won a race against the cancellation check. The
//! rules here are:
//!
//! * the token is checked before any work ([`Lifecycle::start`] looks at it before
//!   leaving `Idle`), and again at every boundary between steps;
//! * each check is made *inside* the same critical section that commits the next
//!   state ([`Lifecycle::advance`]), so there is no window between "not cancelled"
//!   and "now in the next state";
//! * in particular the final `WaitingReady -> Running` commit re-checks the token:
//!   a cancellation whose `cancel()` returned before that commit is always seen, and
//!   the start ends `Cancelled`, with the child killed and reaped by
//!   [`StartSteps::abort`];
//! * a successful probe does not count as "not cancelled": non-blocking success
//!   proves nothing about the token.
//!
//! A cancellation that arrives after `Running` was committed is an ordinary stop
//! (`Running -> Stopping`), which is the caller's business.
//!
//! # Observing the boundaries
//!
//! [`Lifecycle::start`] calls an observer at each [`Boundary`] just before the
//! check. Callers use it for progress output; tests use it to pause the start and
//! race a cancellation in at every boundary (see
//! `tests/cancelled_start_never_runs.rs`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::supervisor::ready::ReadyOutcome;
use crate::sync::lock;

/// A cloneable, thread-safe cancellation flag that can be waited on.
///
/// Cancelling is idempotent and permanent. Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    // The flag is read without the lock on hot paths; SeqCst makes a `cancel()`
    // that returned visible to every later `is_cancelled()` in any thread.
    flag: AtomicBool,
    lock: Mutex<()>,
    changed: Condvar,
}

impl CancelToken {
    /// A fresh, not yet cancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the token and wakes every waiter. Idempotent.
    pub fn cancel(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        // Taking the lock after the store closes the lost-wakeup window: a waiter
        // either saw the flag under the lock, or is already parked on the condvar.
        let _guard = lock(&self.inner.lock);
        self.inner.changed.notify_all();
    }

    /// Whether [`cancel`](Self::cancel) has been called on this token or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Blocks until the token is cancelled or `timeout` passes; returns whether it
    /// is cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.wait_deadline(deadline),
            // A timeout too large to represent is "forever" for our purposes.
            None => self.wait_deadline(Instant::now() + Duration::from_secs(86_400 * 365)),
        }
    }

    /// Blocks until the token is cancelled or `deadline` is reached; returns whether
    /// it is cancelled.
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        let mut guard = lock(&self.inner.lock);
        loop {
            if self.is_cancelled() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.inner.changed.wait_timeout(guard, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// A state without its data, for naming where a transition starts or where a
/// failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Created, nothing done yet.
    Idle,
    /// Binding the listening sockets.
    Binding,
    /// Spawning the child.
    Spawning,
    /// The child runs; waiting for its readiness.
    WaitingReady,
    /// Ready and serving.
    Running,
    /// A stop was requested; the child is being told to go.
    Stopping,
    /// Ended after having run (terminal).
    Stopped,
    /// Ended without reaching `Running`, by an error (terminal).
    Failed,
    /// Ended without reaching `Running`, because the start was cancelled (terminal).
    Cancelled,
}

impl Phase {
    /// A stable lower-case name (`waiting-ready`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Binding => "binding",
            Phase::Spawning => "spawning",
            Phase::WaitingReady => "waiting-ready",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::Cancelled => "cancelled",
        }
    }

    /// Whether no transition leaves this phase.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Stopped | Phase::Failed | Phase::Cancelled)
    }

    /// Whether this phase lies before `Running` (a start still in progress).
    pub fn is_starting(self) -> bool {
        matches!(
            self,
            Phase::Idle | Phase::Binding | Phase::Spawning | Phase::WaitingReady
        )
    }

    /// Whether the state machine allows `self -> to`.
    pub fn allows(self, to: Phase) -> bool {
        use Phase::*;
        match (self, to) {
            (Idle, Binding)
            | (Binding, Spawning)
            | (Spawning, WaitingReady)
            | (WaitingReady, Running) => true,
            (from, Failed | Cancelled) => from.is_starting(),
            (Running, Stopping | Stopped) | (Stopping, Stopped) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lifecycle state, with the data of the terminal failure states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// See [`Phase::Idle`].
    Idle,
    /// See [`Phase::Binding`].
    Binding,
    /// See [`Phase::Spawning`].
    Spawning,
    /// See [`Phase::WaitingReady`].
    WaitingReady,
    /// See [`Phase::Running`].
    Running,
    /// See [`Phase::Stopping`].
    Stopping,
    /// See [`Phase::Stopped`].
    Stopped,
    /// The start failed.
    Failed {
        /// The phase the start was in.
        during: Phase,
        /// What went wrong.
        reason: String,
    },
    /// The start was cancelled.
    Cancelled {
        /// The phase the start was in when the cancellation was seen.
        during: Phase,
    },
}

impl State {
    /// The phase of this state.
    pub fn phase(&self) -> Phase {
        match self {
            State::Idle => Phase::Idle,
            State::Binding => Phase::Binding,
            State::Spawning => Phase::Spawning,
            State::WaitingReady => Phase::WaitingReady,
            State::Running => Phase::Running,
            State::Stopping => Phase::Stopping,
            State::Stopped => Phase::Stopped,
            State::Failed { .. } => Phase::Failed,
            State::Cancelled { .. } => Phase::Cancelled,
        }
    }

    fn of_plain(phase: Phase) -> Option<State> {
        Some(match phase {
            Phase::Idle => State::Idle,
            Phase::Binding => State::Binding,
            Phase::Spawning => State::Spawning,
            Phase::WaitingReady => State::WaitingReady,
            Phase::Running => State::Running,
            Phase::Stopping => State::Stopping,
            Phase::Stopped => State::Stopped,
            Phase::Failed | Phase::Cancelled => return None,
        })
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Failed { during, reason } => write!(f, "failed while {during}: {reason}"),
            State::Cancelled { during } => write!(f, "cancelled while {during}"),
            other => f.write_str(other.phase().as_str()),
        }
    }
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The machine was not in the expected state (someone else moved it).
    #[error("expected state {expected}, found {actual}")]
    Unexpected {
        /// The state the caller believed it was leaving.
        expected: Phase,
        /// The state actually found.
        actual: State,
    },
    /// The state machine has no such edge.
    #[error("transition {from} -> {to} is not allowed")]
    NotAllowed {
        /// The source phase.
        from: Phase,
        /// The target phase.
        to: Phase,
    },
    /// The token was cancelled; the machine is now `Cancelled { during: from }`.
    #[error("cancelled while {during}")]
    Cancelled {
        /// The phase the start was in.
        during: Phase,
    },
}

/// The shared state of one lifecycle. Cheap to share behind an `Arc`; every
/// method takes `&self`.
#[derive(Debug)]
pub struct Lifecycle {
    state: Mutex<State>,
    changed: Condvar,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A lifecycle in [`State::Idle`].
    pub fn new() -> Self {
        Lifecycle {
            state: Mutex::new(State::Idle),
            changed: Condvar::new(),
        }
    }

    /// A snapshot of the current state.
    pub fn state(&self) -> State {
        self.lock().clone()
    }

    /// Compare-and-swap: moves to `to` only if the current phase is `from` and the
    /// edge exists.
    ///
    /// # Errors
    ///
    /// [`TransitionError::Unexpected`] with the actual state, or
    /// [`TransitionError::NotAllowed`].
    pub fn transition(&self, from: Phase, to: State) -> Result<(), TransitionError> {
        let mut state = self.lock();
        self.swap_locked(&mut state, from, to)
    }

    /// Like [`transition`](Self::transition) to the plain state `to`, but first
    /// checks `cancel` in the same critical section: if it is cancelled, the
    /// machine moves to `Cancelled { during: from }` instead.
    ///
    /// This is the only way a start moves forward, so "not cancelled" and "now in
    /// the next state" are one atomic step.
    ///
    /// # Errors
    ///
    /// [`TransitionError::Cancelled`] after moving to `Cancelled`, or the errors of
    /// [`transition`](Self::transition).
    pub fn advance(
        &self,
        from: Phase,
        to: Phase,
        cancel: &CancelToken,
    ) -> Result<(), TransitionError> {
        let mut state = self.lock();
        if state.phase() != from {
            return Err(TransitionError::Unexpected {
                expected: from,
                actual: state.clone(),
            });
        }
        if cancel.is_cancelled() && from.is_starting() {
            self.swap_locked(&mut state, from, State::Cancelled { during: from })?;
            return Err(TransitionError::Cancelled { during: from });
        }
        let target = State::of_plain(to).ok_or(TransitionError::NotAllowed { from, to })?;
        self.swap_locked(&mut state, from, target)
    }

    /// Blocks until `done(phase)` holds or `timeout` passes; returns the last state seen.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(Phase) -> bool) -> State {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.lock();
        loop {
            if done(state.phase()) {
                return state.clone();
            }
            let now = Instant::now();
            let left = match deadline {
                Some(deadline) if now >= deadline => return state.clone(),
                Some(deadline) => deadline - now,
                None => Duration::from_secs(3600),
            };
            state = match self.changed.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Runs a start: `Idle -> Binding -> Spawning -> WaitingReady -> Running`,
    /// checking `cancel` before any work and at every boundary, calling `observer`
    /// just before each check.
    ///
    /// On success the machine is `Running` and the bound sockets and child are
    /// returned. On any failure or cancellation the child (if one was spawned) has
    /// been handed to [`StartSteps::abort`], and the machine is `Failed` or
    /// `Cancelled`: never `Running`.
    ///
    /// # Errors
    ///
    /// A [`StartError`] saying where and why the start ended.
    pub fn start<S: StartSteps>(
        &self,
        cancel: &CancelToken,
        steps: &mut S,
        observer: &mut dyn FnMut(Boundary),
    ) -> Result<Started<S>, StartError> {
        // Checked before any work at all: an already-cancelled token never binds.
        observer(Boundary::BeforeBind);
        self.advance(Phase::Idle, Phase::Binding, cancel)
            .map_err(StartError::from_transition)?;
        let sockets = match steps.bind() {
            Ok(sockets) => sockets,
            Err(error) => return Err(self.fail(Phase::Binding, error, None)),
        };

        observer(Boundary::BeforeSpawn);
        self.advance(Phase::Binding, Phase::Spawning, cancel)
            .map_err(StartError::from_transition)?;
        let mut child = match steps.spawn(&sockets) {
            Ok(child) => child,
            Err(error) => return Err(self.fail(Phase::Spawning, error, None)),
        };

        observer(Boundary::BeforeReadyWait);
        if let Err(error) = self.advance(Phase::Spawning, Phase::WaitingReady, cancel) {
            let status = steps.abort(child);
            return Err(StartError::from_transition(error).with_status(status));
        }
        let outcome = steps.wait_ready(&mut child, cancel);

        observer(Boundary::BeforeRunning);
        match outcome {
            ReadyOutcome::Ready => {}
            ReadyOutcome::Cancelled => {
                let _ = self.transition(
                    Phase::WaitingReady,
                    State::Cancelled {
                        during: Phase::WaitingReady,
                    },
                );
                let status = steps.abort(child);
                return Err(StartError::Cancelled {
                    during: Phase::WaitingReady,
                    child_status: status,
                });
            }
            ReadyOutcome::ChildExited(status) => {
                let reason = format!(
                    "the server exited before it was ready ({})",
                    describe_status(status)
                );
                let _ = self.transition(
                    Phase::WaitingReady,
                    State::Failed {
                        during: Phase::WaitingReady,
                        reason,
                    },
                );
                // The main child is gone, but its descendants may not be.
                let _ = steps.abort(child);
                return Err(StartError::ChildExited { status });
            }
            ReadyOutcome::TimedOut { waited, last_error } => {
                let reason = format!(
                    "the server was not ready after {}",
                    crate::duration::format(waited)
                );
                let _ = self.transition(
                    Phase::WaitingReady,
                    State::Failed {
                        during: Phase::WaitingReady,
                        reason,
                    },
                );
                let status = steps.abort(child);
                return Err(StartError::ReadyTimedOut {
                    waited,
                    last_error,
                    child_status: status,
                });
            }
        }
        // The final check: cancellation that happened before this commit wins, even
        // though the probe succeeded.
        if let Err(error) = self.advance(Phase::WaitingReady, Phase::Running, cancel) {
            let status = steps.abort(child);
            return Err(StartError::from_transition(error).with_status(status));
        }
        Ok(Started { sockets, child })
    }

    fn fail(
        &self,
        during: Phase,
        error: Error,
        child_status: Option<std::process::ExitStatus>,
    ) -> StartError {
        let reason = error.to_string();
        match self.transition(during, State::Failed { during, reason }) {
            Ok(()) => StartError::Step {
                during,
                error,
                child_status,
            },
            Err(transition) => StartError::Transition(transition),
        }
    }

    fn swap_locked(
        &self,
        state: &mut MutexGuard<'_, State>,
        from: Phase,
        to: State,
    ) -> Result<(), TransitionError> {
        if state.phase() != from {
            return Err(TransitionError::Unexpected {
                expected: from,
                actual: (**state).clone(),
            });
        }
        if !from.allows(to.phase()) {
            return Err(TransitionError::NotAllowed {
                from,
                to: to.phase(),
            });
        }
        **state = to;
        self.changed.notify_all();
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// A point between two steps of [`Lifecycle::start`] where the cancellation token
/// is checked; the observer is called just before the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Boundary {
    /// Before any work: the `Idle -> Binding` check.
    BeforeBind,
    /// Sockets bound, nothing spawned: the `Binding -> Spawning` check.
    BeforeSpawn,
    /// The child exists: the `Spawning -> WaitingReady` check.
    BeforeReadyWait,
    /// The readiness wait returned: the final `WaitingReady -> Running` check.
    BeforeRunning,
}

impl Boundary {
    /// Every boundary, in the order a start meets them.
    pub const ALL: [Boundary; 4] = [
        Boundary::BeforeBind,
        Boundary::BeforeSpawn,
        Boundary::BeforeReadyWait,
        Boundary::BeforeRunning,
    ];
}

/// The work of a start, supplied by the caller (the real launcher, a reload, or a test).
pub trait StartSteps {
    /// What `bind` produces (the listening sockets).
    type Sockets;
    /// A spawned child.
    type Child;

    /// Binds and listens.
    ///
    /// # Errors
    ///
    /// Any [`Error`]; the start ends `Failed`.
    fn bind(&mut self) -> Result<Self::Sockets, Error>;

    /// Spawns the child on the sockets.
    ///
    /// # Errors
    ///
    /// Any [`Error`]; the start ends `Failed`.
    fn spawn(&mut self, sockets: &Self::Sockets) -> Result<Self::Child, Error>;

    /// Waits for readiness; must return [`ReadyOutcome::Cancelled`] promptly once
    /// `cancel` fires (the probe loops of [`crate::supervisor::ready`] do).
    fn wait_ready(&mut self, child: &mut Self::Child, cancel: &CancelToken) -> ReadyOutcome;

    /// Kills the child's whole tree and reaps it; returns the child's status when known.
    /// Called exactly once for every child of a start that does not reach `Running`.
    fn abort(&mut self, child: Self::Child) -> Option<std::process::ExitStatus>;
}

/// What a successful start hands back.
pub struct Started<S: StartSteps> {
    /// The bound sockets.
    pub sockets: S::Sockets,
    /// The running, ready child.
    pub child: S::Child,
}

impl<S: StartSteps> fmt::Debug for Started<S>
where
    S::Sockets: fmt::Debug,
    S::Child: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Started")
            .field("sockets", &self.sockets)
            .field("child", &self.child)
            .finish()
    }
}

/// How a start ended without reaching `Running`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The token was cancelled before `Running`.
    #[error("start cancelled while {during}")]
    Cancelled {
        /// Where the cancellation was seen.
        during: Phase,
        /// The child's status, if a child had been spawned and reaped.
        child_status: Option<std::process::ExitStatus>,
    },
    /// The child exited before it was ready.
    #[error("the server exited before it was ready ({})", describe_status(*status))]
    ChildExited {
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// Readiness did not come in time; the child was killed.
    #[error("the server was not ready after {}{}", crate::duration::format(*waited), last_error.as_deref().map(|e| format!(" (last attempt: {e})")).unwrap_or_default())]
    ReadyTimedOut {
        /// How long we waited.
        waited: Duration,
        /// The last probe failure, if the mode probes.
        last_error: Option<String>,
        /// The child's status after it was killed.
        child_status: Option<std::process::ExitStatus>,
    },
    /// A step failed.
    #[error("{error}")]
    Step {
        /// The phase whose step failed.
        during: Phase,
        /// The step's error.
        error: Error,
        /// The child's status, if one was spawned.
        child_status: Option<std::process::ExitStatus>,
    },
    /// The machine was moved by someone else, or an edge was missing.
    #[error(transparent)]
    Transition(TransitionError),
}

impl StartError {
    fn from_transition(error: TransitionError) -> Self {
        match error {
            TransitionError::Cancelled { during } => StartError::Cancelled {
                during,
                child_status: None,
            },
            other => StartError::Transition(other),
        }
    }

    fn with_status(mut self, status: Option<std::process::ExitStatus>) -> Self {
        if let StartError::Cancelled { child_status, .. } = &mut self {
            *child_status = status;
        }
        self
    }
}

impl From<StartError> for Error {
    /// Cancellation and transition errors become [`Error::Launch`] too; the CLI
    /// decides the exit code of a cancelled start (128+signal) itself.
    fn from(error: StartError) -> Self {
        match error {
            StartError::Step { error, .. } => error,
            other => Error::Launch {
                message: other.to_string(),
            },
        }
    }
}

/// `exited with code 3` / `killed by signal 9`.
pub(crate) fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("wait status {:#x}", status.into_raw()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_is_compare_and_swap() {
        let machine = Lifecycle::new();
        machine.transition(Phase::Idle, State::Binding).unwrap();
        let err = machine.transition(Phase::Idle, State::Binding).unwrap_err();
        assert_eq!(
            err,
            TransitionError::Unexpected {
                expected: Phase::Idle,
                actual: State::Binding
            }
        );
    }

    #[test]
    fn edges_outside_the_table_are_refused() {
        let machine = Lifecycle::new();
        let err = machine.transition(Phase::Idle, State::Running).unwrap_err();
        assert_eq!(
            err,
            TransitionError::NotAllowed {
                from: Phase::Idle,
                to: Phase::Running
            }
        );
        assert_eq!(machine.state(), State::Idle);
        // Terminal states have no way out.
        machine
            .transition(
                Phase::Idle,
                State::Cancelled {
                    during: Phase::Idle,
                },
            )
            .unwrap();
        for to in [State::Idle, State::Binding, State::Running, State::Stopped] {
            assert!(machine.transition(Phase::Cancelled, to).is_err());
        }
        // A running instance cannot be "cancelled" or "failed" as a start.
        assert!(!Phase::Running.allows(Phase::Cancelled));
        assert!(!Phase::Running.allows(Phase::Failed));
    }

    #[test]
    fn advance_with_a_cancelled_token_ends_cancelled() {
        let machine = Lifecycle::new();
        let token = CancelToken::new();
        machine
            .advance(Phase::Idle, Phase::Binding, &token)
            .unwrap();
        token.cancel();
        let err = machine
            .advance(Phase::Binding, Phase::Spawning, &token)
            .unwrap_err();
        assert_eq!(
            err,
            TransitionError::Cancelled {
                during: Phase::Binding
            }
        );
        assert_eq!(
            machine.state(),
            State::Cancelled {
                during: Phase::Binding
            }
        );
    }

    #[test]
    fn cancel_token_wakes_waiters_and_times_out() {
        let token = CancelToken::new();
        assert!(!token.wait_timeout(Duration::from_millis(1)));
        let clone = token.clone();
        let waiter = std::thread::spawn(move || clone.wait_timeout(Duration::from_secs(60)));
        token.cancel();
        assert!(waiter.join().unwrap());
        assert!(token.is_cancelled());
        token.cancel();
        assert!(token.wait_timeout(Duration::ZERO));
    }

    #[test]
    fn wait_until_sees_a_later_transition() {
        let machine = Arc::new(Lifecycle::new());
        let other = Arc::clone(&machine);
        let waiter = std::thread::spawn(move || {
            other.wait_until(Duration::from_secs(60), Phase::is_terminal)
        });
        machine
            .transition(
                Phase::Idle,
                State::Failed {
                    during: Phase::Idle,
                    reason: "x".into(),
                },
            )
            .unwrap();
        assert_eq!(waiter.join().unwrap().phase(), Phase::Failed);
    }
}
