//! The serving loop's inbox: everything the loop reacts to, taken by one
//! `poll` in the thread that runs the instance.
//!
//! The launcher's main thread waits on, at once:
//! - each live generation's pidfd (readable when it exits: [`Event::ChildExited`]);
//! - the control socket's listener (a connection is accepted and its session
//!   served on a thread of its own, which sends [`Event::Reload`] back here);
//! - the signal source's fd, while the loop takes signals itself
//!   ([`SignalSource::poll_fd`]);
//! - a bell (an eventfd) that every [`Outbox::send`] rings, for the events of
//!   the threads that remain (control sessions, the notify forwarder, a
//!   signal thread).
//!
//! So a plain `porthold run` has no thread but its main one: no thread waits
//! for signals, for the server's exit or for control connections, and the
//! server's exit wakes the loop directly. Signals need a thread only while
//! the instance waits for something other than this inbox (a readiness probe
//! or delay, a reload's steps): the first start that must wait for readiness,
//! the first reload and the first restart move the signal source to a thread
//! ([`Inbox::signals_to_thread`]), which then takes the signals for the rest
//! of the instance, exactly as the loop did (the same [`SignalIntake`]). A
//! source that cannot be polled (a channel of [`SignalAction`]s from an
//! embedder) has its thread from the start.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SendError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::process::Signal;

use super::{Event, Running, SIGNAL_RELOAD_TIMEOUT};
use crate::control::{ControlServer, Handler};
use crate::error::{Error, Result};
use crate::supervisor::lifecycle::CancelToken;
use crate::supervisor::reaper;
use crate::supervisor::signals::{SignalAction, SignalSource};
use crate::supervisor::tree;
use crate::sync::lock;

/// The sending side of the inbox, for threads: each send rings the bell.
#[derive(Clone)]
pub(super) struct Outbox {
    tx: Sender<Event>,
    bell: Arc<OwnedFd>,
}

impl Outbox {
    /// Queues `event` and wakes the loop.
    pub(super) fn send(&self, event: Event) -> std::result::Result<(), SendError<Event>> {
        self.tx.send(event)?;
        // A full eventfd counter (never, at one per event) still wakes the poll.
        let _ = rustix::io::write(&*self.bell, &1u64.to_ne_bytes());
        Ok(())
    }
}

/// What a taken signal does, the same whether the loop or a thread took it.
#[derive(Clone)]
pub(super) struct SignalIntake {
    /// Cancelled by the first stop request.
    pub(super) cancel: CancelToken,
    /// The first stop request's signal (the exit code of a cancelled start).
    pub(super) first_signal: Arc<Mutex<Option<Signal>>>,
    /// The process group forwarded signals go to (0 before the first spawn).
    pub(super) server_group: Arc<AtomicU32>,
}

impl SignalIntake {
    /// Acts on `action`; the event it means for the serving loop, if any.
    fn take(&self, action: SignalAction) -> Option<Event> {
        match action {
            SignalAction::Stop(signal) => {
                lock(&self.first_signal).get_or_insert(signal);
                self.cancel.cancel();
                Some(Event::Signal(signal))
            }
            SignalAction::Forward(signal) => {
                let group = self.server_group.load(Ordering::SeqCst);
                if group != 0 {
                    tree::signal_group(group, signal);
                }
                None
            }
            // Nobody waits for the answer: the serving loop says on stderr how
            // the reload ended.
            SignalAction::Reload => Some(Event::Reload {
                check: None,
                timeout: SIGNAL_RELOAD_TIMEOUT,
                reply: mpsc::channel().0,
            }),
            SignalAction::Reap => {
                reaper::sweep_orphans();
                None
            }
            SignalAction::Ignore => None,
        }
    }
}

/// The control socket and what its sessions do with a request.
struct Control {
    server: Arc<ControlServer>,
    handler: Arc<dyn Handler + Send>,
}

/// The serving loop's inbox (see the module docs). Used from one thread only.
pub(super) struct Inbox {
    rx: Receiver<Event>,
    outbox: Outbox,
    intake: SignalIntake,
    /// The signal source while this loop polls it; `None` once a thread takes it.
    signals: RefCell<Option<Box<dyn SignalSource>>>,
    /// Events taken from the fds, not yet returned.
    taken: RefCell<VecDeque<Event>>,
    /// Live generations by number, each with its own copy of its pidfd.
    exits: RefCell<Vec<(u64, OwnedFd)>>,
    control: Option<Control>,
}

impl Inbox {
    /// An inbox taking signals from `signals` with `intake` (by polling when
    /// the source can be polled, else from a thread started now).
    ///
    /// # Errors
    /// When the bell cannot be created, or the signal thread cannot start.
    pub(super) fn new(signals: Box<dyn SignalSource>, intake: SignalIntake) -> Result<Inbox> {
        let bell = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| Error::io("creating the serving loop's eventfd", e.into()))?;
        let (tx, rx) = mpsc::channel();
        let inbox = Inbox {
            rx,
            outbox: Outbox {
                tx,
                bell: Arc::new(bell),
            },
            intake,
            signals: RefCell::new(Some(signals)),
            taken: RefCell::default(),
            exits: RefCell::default(),
            control: None,
        };
        let pollable = inbox
            .signals
            .borrow()
            .as_ref()
            .is_some_and(|s| s.poll_fd().is_some());
        if !pollable {
            inbox.signals_to_thread()?;
        }
        Ok(inbox)
    }

    /// A sender for a thread whose events the loop must see.
    pub(super) fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// Serves `server`'s connections from this loop; each session's
    /// requests go to `handler` (on the session's thread).
    pub(super) fn serve_control(
        &mut self,
        server: Arc<ControlServer>,
        handler: Arc<dyn Handler + Send>,
    ) {
        self.control = Some(Control { server, handler });
    }

    /// Reports [`Event::ChildExited`] once `running` has exited.
    ///
    /// # Errors
    /// When its pidfd cannot be duplicated.
    pub(super) fn watch_exit(&self, running: &Running) -> Result<()> {
        let pidfd = running
            .generation
            .pidfd()
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicating a pidfd", e))?;
        let mut exits = self.exits.borrow_mut();
        exits.retain(|(number, _)| *number != running.number);
        exits.push((running.number, pidfd));
        Ok(())
    }

    /// Hands the signal source to a thread of its own for the rest of the
    /// instance (a no-op when one has it already): from now on the instance
    /// may wait for something other than this inbox, and a stop request must
    /// cancel that wait meanwhile. Signals pending now are taken here first.
    ///
    /// # Errors
    /// When the thread cannot start; the source went with it, so the caller
    /// must fail what it was about to do.
    pub(super) fn signals_to_thread(&self) -> Result<()> {
        self.take_signals();
        let Some(mut signals) = self.signals.borrow_mut().take() else {
            return Ok(());
        };
        let (intake, outbox) = (self.intake.clone(), self.outbox.clone());
        std::thread::Builder::new()
            .name("porthold-signals".into())
            .spawn(move || {
                while let Some(action) = signals.next_action() {
                    if let Some(event) = intake.take(action)
                        && outbox.send(event).is_err()
                    {
                        return;
                    }
                }
            })
            .map(drop)
            .map_err(|e| Error::io("starting the signal thread", e))
    }

    /// Takes every signal pending now, if this loop takes signals: a stop
    /// request cancels at once (for the start's next boundary check), and
    /// the events wait for the next receive.
    pub(super) fn take_signals(&self) {
        let mut signals = self.signals.borrow_mut();
        let Some(source) = signals.as_mut() else {
            return;
        };
        while let Some(action) = source.try_next_action() {
            if let Some(event) = self.intake.take(action) {
                self.taken.borrow_mut().push_back(event);
            }
        }
    }

    /// The next event, waiting at most `timeout`.
    pub(super) fn recv_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<Event, RecvTimeoutError> {
        self.next(Instant::now().checked_add(timeout))
    }

    /// The next event, however long it takes.
    pub(super) fn recv(&self) -> std::result::Result<Event, RecvTimeoutError> {
        self.next(None)
    }

    fn next(&self, deadline: Option<Instant>) -> std::result::Result<Event, RecvTimeoutError> {
        loop {
            if let Some(event) = self.taken.borrow_mut().pop_front() {
                return Ok(event);
            }
            if let Ok(event) = self.rx.try_recv() {
                return Ok(event);
            }
            self.poll_once(deadline.map(|at| at.saturating_duration_since(Instant::now())));
            if self.taken.borrow().is_empty() && deadline.is_some_and(|at| Instant::now() >= at) {
                return self.rx.try_recv().map_err(|_| RecvTimeoutError::Timeout);
            }
        }
    }

    /// One `poll` of every source, at most `left` long; what became ready is
    /// taken (events queued in `taken`, the bell reset, connections accepted).
    fn poll_once(&self, left: Option<Duration>) {
        let signals = self.signals.borrow();
        let exits = self.exits.borrow();
        let mut fds = Vec::with_capacity(3 + exits.len());
        fds.push(PollFd::new(&*self.outbox.bell, PollFlags::IN));
        let signal_at = signals.as_ref().and_then(|s| s.poll_fd()).map(|fd| {
            fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            fds.len() - 1
        });
        let control_at = self.control.as_ref().map(|c| {
            fds.push(PollFd::from_borrowed_fd(c.server.as_fd(), PollFlags::IN));
            fds.len() - 1
        });
        let first_exit = fds.len();
        for (_, pidfd) in exits.iter() {
            fds.push(PollFd::new(pidfd, PollFlags::IN));
        }
        // (A zero wait still polls once.)
        let timeout = left.map(|d| rustix::event::Timespec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => return,
            Ok(_) => {}
            // EINTR (no handler here makes it likely) or an fd gone bad:
            // the caller's loop looks again.
            Err(_) => return,
        }
        let ready = |i: usize| !fds[i].revents().is_empty();
        if ready(0) {
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&*self.outbox.bell, &mut count);
        }
        let signals_ready = signal_at.is_some_and(ready);
        let control_ready = control_at.is_some_and(ready);
        let exited: Vec<u64> = exits
            .iter()
            .enumerate()
            .filter(|(i, _)| ready(first_exit + i))
            .map(|(_, (number, _))| *number)
            .collect();
        drop(fds);
        drop(exits);
        drop(signals);
        if signals_ready {
            self.take_signals();
        }
        if control_ready && let Some(control) = &self.control {
            // An accept error that would repeat (the fd limit): the session is
            // not served; the loop goes on (a reload then times out, as it would).
            let _ = control.server.accept_pending(&control.handler);
        }
        if !exited.is_empty() {
            self.exits
                .borrow_mut()
                .retain(|(number, _)| !exited.contains(number));
            let mut taken = self.taken.borrow_mut();
            taken.extend(exited.into_iter().map(Event::ChildExited));
        }
    }
}
