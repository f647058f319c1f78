//! Reload as a stateful handoff (`porthold run --handoff`, PRODUCT.md §3.3):
//! the supervisor side of [`crate::handoff`], built on its
//! [`SupervisorSession`] machine.
//!
//! Every generation of a `--handoff` instance gets one end of a fresh
//! `socketpair` as its channel, at the fd right after its listening sockets
//! (`PORTHOLD_HANDOFF_FD`), with its role (`PORTHOLD_HANDOFF_ROLE`), the state
//! directory (`PORTHOLD_STATE_DIR`) and its generation number
//! (`PORTHOLD_GENERATION`). porthold keeps the other end: a reader thread
//! feeds every frame to the channel's machine (which answers `Hello`,
//! heartbeats and protocol violations at once) and a heartbeat thread sends a
//! `Heartbeat` every 250 ms while a session is open.
//!
//! A reload then runs: `PrepareHandoff` → `Drained` → `SealRequest` →
//! `SealComplete` → the successor is spawned on the same sockets → its
//! `Hello` → `Begin` → `Ready` → `Commit` to the incumbent, which exits.
//! The deadline bounds every step from `PrepareHandoff` to `Ready`.
//!
//! - A failure before `SealComplete` (a violation, a seal failure, lost
//!   heartbeats, a closed channel): `Resume` at once; the incumbent never
//!   released anything.
//! - The incumbent misses the deadline before `SealComplete`: it has stopped
//!   accepting and may hold the lock, so it is killed (its process group and
//!   descendants) and the next generation starts cold, as an incumbent, on
//!   the same sockets; it counts as ready at its `Hello` (sent once it holds
//!   the lock and serves).
//! - A failure after `SealComplete` and before `Commit` (the successor exits,
//!   breaks the protocol, stops heartbeating, misses the deadline): the
//!   successor's whole tree is killed with SIGKILL and reaped, then the
//!   incumbent gets `Resume` (it re-acquires the lock and re-reads its state).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use super::{Event, Inbox, Instance, StartFailure};
use crate::control::frame::{Frame, FrameError};
use crate::error::{Error, Result};
use crate::handoff::session::SupervisorState;
use crate::handoff::{
    Channel, ChannelSender, HANDOFF_FD_ENV, HANDOFF_ROLE_ENV, HandoffError, Heartbeater, Role,
    SupervisorDecision, SupervisorEvent, SupervisorSession, channel_pair,
};
use crate::supervisor::generation::{Generation, GenerationSpec};
use crate::supervisor::lifecycle::CancelToken;
use crate::supervisor::ready::ReadyOutcome;
use crate::sync::lock;

/// The variable that names the state directory for each generation.
pub const STATE_DIR_ENV: &str = "PORTHOLD_STATE_DIR";
/// The variable that carries the generation's number.
pub const GENERATION_ENV: &str = "PORTHOLD_GENERATION";
/// `--handoff-deadline`'s usual value.
pub const DEFAULT_HANDOFF_DEADLINE: Duration = Duration::from_secs(5);
/// How often the driver looks at its clocks while it waits for a message.
const TICK: Duration = Duration::from_millis(10);

/// How reloads of a `--handoff` instance run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffOptions {
    /// Bounds each step from `PrepareHandoff` to the successor's `Ready`.
    pub deadline: Duration,
    /// Handed to every generation in `PORTHOLD_STATE_DIR`; porthold never
    /// takes its lock.
    pub state_dir: PathBuf,
}

/// What a channel's reader thread reports.
#[derive(Debug)]
enum LinkEvent {
    Event(SupervisorEvent),
    /// The machine closed the session (a `Resume` went to an incumbent).
    Violation(String),
    /// The channel is unusable (the generation exited, garbage).
    Closed(String),
}

/// porthold's end of one generation's channel.
struct Link {
    machine: Arc<Mutex<SupervisorSession>>,
    sender: ChannelSender,
    events: Receiver<LinkEvent>,
    /// A duplicate of the socket, to end the reader thread.
    shutdown: UnixStream,
    _heartbeat: Heartbeater,
}

impl Link {
    fn new(stream: UnixStream, role: Role) -> Result<Link> {
        let shutdown = stream
            .try_clone()
            .map_err(|e| Error::io("duplicating a handoff channel", e))?;
        let mut channel = Channel::new(stream)?;
        let sender = channel.sender().clone();
        let heartbeat = sender.start_heartbeat();
        let machine = Arc::new(Mutex::new(SupervisorSession::new(role, Instant::now())));
        let (tx, events) = mpsc::channel();
        {
            let (machine, sender) = (machine.clone(), sender.clone());
            std::thread::spawn(move || {
                loop {
                    let frame = match channel.recv_tick() {
                        Ok(frame) => frame,
                        Err(FrameError::TimedOut) => continue,
                        Err(e) => {
                            sender.set_session(None);
                            let _ = tx.send(LinkEvent::Closed(e.to_string()));
                            return;
                        }
                    };
                    let mut m = lock(&machine);
                    let decision = m.on_frame(&frame, Instant::now());
                    let (send, event) = match decision {
                        SupervisorDecision::Nothing | SupervisorDecision::Discarded => (None, None),
                        SupervisorDecision::Proceed { send, event } => {
                            (send, event.map(LinkEvent::Event))
                        }
                        SupervisorDecision::Close { violation, send } => {
                            (send, Some(LinkEvent::Violation(violation.to_string())))
                        }
                    };
                    if let Some(frame) = send {
                        let _ = sender.send_frame(&frame);
                    }
                    sender.set_session(m.session().cloned());
                    drop(m);
                    if let Some(event) = event
                        && tx.send(event).is_err()
                    {
                        return;
                    }
                }
            });
        }
        Ok(Link {
            machine,
            sender,
            events,
            shutdown,
            _heartbeat: heartbeat,
        })
    }

    /// Sends a frame the machine produced and lets heartbeats follow its session.
    fn send(&self, m: &SupervisorSession, frame: &Frame) -> std::result::Result<(), String> {
        let sent = self.sender.send_frame(frame).map_err(|e| e.to_string());
        self.sender.set_session(m.session().cloned());
        sent
    }

    /// The next event within `wait`.
    fn next(&self, wait: Duration) -> Option<LinkEvent> {
        match self.events.recv_timeout(wait) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                Some(LinkEvent::Closed("the channel's reader ended".into()))
            }
        }
    }

    fn check_time(&self) -> std::result::Result<(), HandoffError> {
        lock(&self.machine).check_time(Instant::now())
    }

    /// Sends `Resume` (incumbent channel) if a session is open.
    fn resume(&self, reason: &str) {
        let mut m = lock(&self.machine);
        if let Some(frame) = m.abort(reason) {
            let _ = self.send(&m, &frame);
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.shutdown.shutdown(std::net::Shutdown::Both);
    }
}

/// How the next spawned generation joins (see [`Links::next`]).
#[derive(Debug, Clone, Copy)]
pub(super) enum HandoffWait {
    /// A successor: `Begin` after its `Hello`, ready at its `Ready`, all before `deadline`.
    Successor { deadline: Instant },
    /// A cold start after the incumbent was killed: ready at its `Hello`.
    Cold { deadline: Instant },
}

/// The channels of a `--handoff` instance, by generation pid.
#[derive(Default)]
pub(super) struct Links {
    by_pid: HashMap<u32, Link>,
    /// The role the next spawned generation gets.
    next_role: Option<Role>,
    /// Why the last successor was given up (for the reload's reason).
    failure: Option<String>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("pids", &self.by_pid.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The parts of a spawn a handoff instance adds: porthold's end of the new channel.
pub(super) struct SpawnEnd {
    ours: UnixStream,
    role: Role,
}

impl Instance {
    /// Adds the channel, role, state directory and generation number to a
    /// generation about to be spawned (nothing without `--handoff`).
    pub(super) fn handoff_spawn(
        &mut self,
        spec: &mut GenerationSpec,
        number: u64,
    ) -> Result<Option<SpawnEnd>> {
        let (Some(options), Some(links)) = (&self.options.handoff, self.handoff.as_mut()) else {
            return Ok(None);
        };
        let role = links.next_role.take().unwrap_or(Role::Incumbent);
        let (ours, theirs) = channel_pair()?;
        spec.extra_fd = Some((OwnedFd::from(theirs), HANDOFF_FD_ENV.into()));
        spec.env
            .push((HANDOFF_ROLE_ENV.into(), role.as_str().into()));
        spec.env
            .push((STATE_DIR_ENV.into(), options.state_dir.clone().into()));
        spec.env
            .push((GENERATION_ENV.into(), number.to_string().into()));
        Ok(Some(SpawnEnd { ours, role }))
    }

    /// Keeps porthold's end of a spawned generation's channel.
    pub(super) fn handoff_attach(&mut self, end: Option<SpawnEnd>, pid: u32) -> Result<()> {
        let (Some(end), Some(links)) = (end, self.handoff.as_mut()) else {
            return Ok(());
        };
        let live: Vec<u32> = self
            .generations
            .iter()
            .map(|g| g.generation.pid())
            .collect();
        links.by_pid.retain(|p, _| live.contains(p));
        links.by_pid.insert(pid, Link::new(end.ours, end.role)?);
        Ok(())
    }

    /// One handoff reload to its commit (`Ok((number, pid, cold))`, `cold`
    /// when the incumbent was killed and the new generation started cold) or
    /// its rollback (`Err(reason)`).
    pub(super) fn handoff_steps(
        &mut self,
        check: Option<&str>,
        token: &CancelToken,
        cancel: &CancelToken,
        inbox: &Inbox,
        deferred: &mut Vec<Event>,
    ) -> std::result::Result<(u64, u32, bool), String> {
        let why_cancelled = || super::reload::why_cancelled(cancel);
        let deadline = self
            .options
            .handoff
            .as_ref()
            .map_or(DEFAULT_HANDOFF_DEADLINE, |h| h.deadline);
        self.preflight(check, token, cancel)?;
        let Some(current) = self.current() else {
            return Err("the instance has no running generation".into());
        };
        let old_pid = current.generation.pid();
        let old = self
            .handoff
            .as_mut()
            .and_then(|links| links.by_pid.remove(&old_pid))
            .ok_or("the serving generation has no handoff channel")?;
        let result = self.handoff_with(&old, old_pid, deadline, token, inbox, deferred);
        // A cancelled attempt says why it was cancelled (a stop or the timeout).
        let result = result.map_err(|reason| {
            if token.is_cancelled() {
                why_cancelled()
            } else {
                reason
            }
        });
        if let Some(links) = self.handoff.as_mut() {
            links.next_role = None;
            // A committed incumbent's channel ends with it; a rolled-back one serves on.
            links.by_pid.insert(old_pid, old);
        }
        result
    }

    fn handoff_with(
        &mut self,
        old: &Link,
        old_pid: u32,
        deadline: Duration,
        token: &CancelToken,
        inbox: &Inbox,
        deferred: &mut Vec<Event>,
    ) -> std::result::Result<(u64, u32, bool), String> {
        // A generation that just started (or just took over) may not have
        // opened its session yet: give it until the deadline.
        let give_up = Instant::now() + deadline;
        while lock(&old.machine).state() == SupervisorState::AwaitHello
            && Instant::now() < give_up
            && !token.is_cancelled()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Events of earlier sessions are stale.
        while old.events.try_recv().is_ok() {}
        let attempt_deadline = {
            let mut m = lock(&old.machine);
            let frame = m.prepare(Instant::now(), deadline).map_err(|e| {
                format!("the incumbent (pid {old_pid}) has no idle handoff session ({e})")
            })?;
            old.send(&m, &frame)?;
            m.deadline().unwrap_or_else(|| Instant::now() + deadline)
        };
        // Until SealComplete: any failure is a Resume at once.
        loop {
            if token.is_cancelled() {
                old.resume("the reload was cancelled");
                return Err("cancelled".into());
            }
            match old.next(TICK) {
                Some(LinkEvent::Event(SupervisorEvent::Sealed)) => break,
                Some(LinkEvent::Event(SupervisorEvent::SealFailed { reason })) => {
                    return Err(format!("the incumbent could not seal: {reason}"));
                }
                Some(LinkEvent::Event(_)) | None => {}
                Some(LinkEvent::Violation(reason)) => {
                    return Err(format!("the incumbent broke the protocol: {reason}"));
                }
                Some(LinkEvent::Closed(reason)) => {
                    return Err(format!("the incumbent's channel closed: {reason}"));
                }
            }
            match old.check_time() {
                Ok(()) => {}
                Err(HandoffError::DeadlineExpired { state }) => {
                    // It stopped accepting and may hold the lock: kill it,
                    // tree and all, and start the next generation cold.
                    self.kill_generation(old_pid);
                    if !self.options.quiet {
                        eprintln!(
                            "porthold: {}: the incumbent (pid {old_pid}) missed the handoff deadline in state {state}; killed it, starting the next generation cold",
                            self.options.name
                        );
                    }
                    let wait = HandoffWait::Cold {
                        deadline: Instant::now() + deadline,
                    };
                    return self
                        .launch_handoff(Role::Incumbent, wait, token, inbox, deferred)
                        .map(|(n, p)| (n, p, true));
                }
                Err(e) => {
                    old.resume(&e.to_string());
                    return Err(format!("the incumbent: {e}"));
                }
            }
        }
        // Sealed: the incumbent released the lock. Start the successor.
        let wait = HandoffWait::Successor {
            deadline: attempt_deadline,
        };
        match self.launch_handoff(Role::Successor, wait, token, inbox, deferred) {
            Ok((number, pid)) => {
                let mut m = lock(&old.machine);
                if let Ok(frame) = m.commit() {
                    let _ = old.send(&m, &frame);
                }
                Ok((number, pid, false))
            }
            Err(reason) => {
                // The successor's tree is dead and reaped (launch_handoff):
                // nothing of it holds the lock any more.
                old.resume(&reason);
                Err(reason)
            }
        }
    }

    /// Spawns the next generation in `role` and waits as `wait` says; on
    /// success it is the current generation.
    fn launch_handoff(
        &mut self,
        role: Role,
        wait: HandoffWait,
        token: &CancelToken,
        inbox: &Inbox,
        deferred: &mut Vec<Event>,
    ) -> std::result::Result<(u64, u32), String> {
        if let Some(links) = self.handoff.as_mut() {
            links.next_role = Some(role);
            links.failure = None;
        }
        let reload_wait = super::ReloadWait {
            inbox,
            deferred,
            overlap: matches!(wait, HandoffWait::Successor { .. }),
            handoff: Some(wait),
        };
        let launched = self.launch(token, &mut |_| {}, Some(reload_wait));
        let failure = self.handoff.as_mut().and_then(|l| l.failure.take());
        let (number, generation) = match launched {
            Ok(launched) => launched,
            Err(StartFailure::Cancelled) => {
                return Err(failure.unwrap_or_else(|| "cancelled".into()));
            }
            Err(StartFailure::Failed(e)) => return Err(failure.unwrap_or_else(|| e.to_string())),
        };
        let pid = generation.pid();
        self.commit(number, generation).map_err(|e| match e {
            StartFailure::Cancelled => "cancelled".to_string(),
            StartFailure::Failed(e) => e.to_string(),
        })?;
        Ok((number, pid))
    }

    /// Kills a generation's process group and descendants and reaps it.
    fn kill_generation(&mut self, pid: u32) {
        if let Some(running) = self.generations.iter().find(|g| g.generation.pid() == pid) {
            running.generation.stop(Signal::KILL, Duration::ZERO);
        }
    }

    fn handoff_failed(&mut self, reason: String) {
        if let Some(links) = self.handoff.as_mut() {
            links.failure = Some(reason);
        }
    }
}

/// The readiness wait of a generation spawned by a handoff: the protocol on
/// its channel. On any failure the child's whole tree is killed (SIGKILL)
/// and reaped before this returns.
pub(super) fn wait_ready(
    instance: &mut Instance,
    wait: HandoffWait,
    child: &Generation,
    cancel: &CancelToken,
) -> ReadyOutcome {
    let started = Instant::now();
    let outcome = wait_protocol(instance, wait, child, cancel);
    match outcome {
        Ok(()) => ReadyOutcome::Ready,
        Err(Failed::Exited(status)) => {
            child.stop(Signal::KILL, Duration::ZERO);
            instance.handoff_failed(format!("the successor exited before Ready ({status})"));
            ReadyOutcome::ChildExited(status)
        }
        Err(Failed::Cancelled) => {
            child.stop(Signal::KILL, Duration::ZERO);
            ReadyOutcome::Cancelled
        }
        Err(Failed::Reason(reason)) => {
            child.stop(Signal::KILL, Duration::ZERO);
            instance.handoff_failed(reason.clone());
            ReadyOutcome::TimedOut {
                waited: started.elapsed(),
                last_error: Some(reason),
            }
        }
    }
}

enum Failed {
    Exited(std::process::ExitStatus),
    Cancelled,
    Reason(String),
}

fn wait_protocol(
    instance: &mut Instance,
    wait: HandoffWait,
    child: &Generation,
    cancel: &CancelToken,
) -> std::result::Result<(), Failed> {
    let pid = child.pid();
    let Some(link) = instance.handoff.as_ref().and_then(|l| l.by_pid.get(&pid)) else {
        return Err(Failed::Reason(
            "the new generation has no handoff channel".into(),
        ));
    };
    let (deadline, cold) = match wait {
        HandoffWait::Successor { deadline } => (deadline, false),
        HandoffWait::Cold { deadline } => (deadline, true),
    };
    let who = if cold {
        "the new generation"
    } else {
        "the successor"
    };
    loop {
        if cancel.is_cancelled() {
            return Err(Failed::Cancelled);
        }
        if let Some(status) = child.try_wait() {
            return Err(Failed::Exited(status));
        }
        if Instant::now() >= deadline {
            let state = lock(&link.machine).state();
            return Err(Failed::Reason(format!(
                "{who} missed the handoff deadline (state {state:?})"
            )));
        }
        let wait = deadline.saturating_duration_since(Instant::now()).min(TICK);
        match link.next(wait) {
            Some(LinkEvent::Event(SupervisorEvent::SessionOpened { .. })) if cold => {
                return Ok(());
            }
            Some(LinkEvent::Event(SupervisorEvent::SessionOpened { .. })) => {
                let mut m = lock(&link.machine);
                let frame = m
                    .begin(Instant::now(), deadline)
                    .map_err(|e| Failed::Reason(e.to_string()))?;
                link.send(&m, &frame)
                    .map_err(|e| Failed::Reason(format!("sending Begin: {e}")))?;
            }
            Some(LinkEvent::Event(SupervisorEvent::Ready)) if !cold => return Ok(()),
            Some(LinkEvent::Event(_)) | None => {}
            Some(LinkEvent::Violation(reason)) => {
                return Err(Failed::Reason(format!(
                    "{who} broke the protocol: {reason}"
                )));
            }
            Some(LinkEvent::Closed(reason)) => {
                if let Some(status) = child.try_wait() {
                    return Err(Failed::Exited(status));
                }
                return Err(Failed::Reason(format!("{who}'s channel closed: {reason}")));
            }
        }
        if let Err(e) = link.check_time()
            && !matches!(e, HandoffError::DeadlineExpired { .. })
        {
            return Err(Failed::Reason(format!("{who}: {e}")));
        }
    }
}
