//! Shared by the handoff tests: an incumbent server with recording hooks, run
//! on a thread, and a supervisor end of its channel built from the library's
//! supervisor-side state machine.
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use porthold::control::frame::{Frame, FrameError};
use porthold::handoff::session::SupervisorState;
use porthold::handoff::{
    Channel, DataDirLock, HandoffError, Heartbeater, Incumbent, IncumbentHooks, Message, Role,
    Served, SupervisorDecision, SupervisorEvent, SupervisorSession,
};

/// Generous limit that only catches hangs.
pub const HANG: Duration = Duration::from_secs(30);

/// What the incumbent's hooks did, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Hook {
    Drained,
    Sealed,
    Resumed { relocked: bool },
    Closed(String),
}

/// Hooks of a tiny stateful server: its state is a number in `<dir>/state`.
pub struct Recorder {
    pub dir: PathBuf,
    pub value: u64,
    pub events: Sender<Hook>,
}

impl IncumbentHooks for Recorder {
    fn drain(&mut self, _deadline: Duration) -> u64 {
        let _ = self.events.send(Hook::Drained);
        0
    }
    fn seal(&mut self, progress: &mut dyn FnMut(u64, u64)) -> Result<(), String> {
        std::fs::write(self.dir.join("state"), self.value.to_string())
            .map_err(|e| e.to_string())?;
        progress(1, 1);
        let _ = self.events.send(Hook::Sealed);
        Ok(())
    }
    fn resume(&mut self, relocked: bool) {
        if relocked {
            self.value = read_state(&self.dir);
        }
        let _ = self.events.send(Hook::Resumed { relocked });
    }
    fn session_closed(&mut self, error: &HandoffError) {
        let what = match error {
            HandoffError::Violation(v) => format!("{:?}", v.kind),
            other => other.to_string(),
        };
        let _ = self.events.send(Hook::Closed(what));
    }
}

pub fn read_state(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("state"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// An incumbent serving on a thread.
pub struct Running {
    pub events: Receiver<Hook>,
    pub thread: JoinHandle<(Served, bool)>,
}

impl Running {
    /// Waits for the next hook event.
    pub fn next_hook(&self) -> Hook {
        self.events.recv_timeout(HANG).expect("a hook event")
    }

    /// Waits for the serve loop to end: how it ended and whether it held the lock then.
    pub fn join(self) -> (Served, bool) {
        self.thread.join().expect("incumbent thread")
    }

    /// As [`join`](Self::join), plus the hook events not yet taken.
    pub fn finish(self) -> (Served, bool, Vec<Hook>) {
        let (served, held) = self.thread.join().expect("incumbent thread");
        (served, held, self.events.try_iter().collect())
    }
}

/// Starts an incumbent holding the lock on `dir` with state `value`; returns
/// it and the supervisor's end of its channel.
pub fn start_incumbent(dir: &Path, value: u64) -> (Running, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let lock = DataDirLock::acquire(dir).expect("lock");
    let (events, rx) = channel();
    let mut hooks = Recorder {
        dir: dir.to_path_buf(),
        value,
        events,
    };
    let thread = thread::spawn(move || {
        let mut incumbent = Incumbent::new(theirs, lock, "old build").expect("incumbent");
        let served = incumbent.serve(&mut hooks).expect("serve");
        (served, incumbent.holds_lock())
    });
    (Running { events: rx, thread }, ours)
}

/// The supervisor's end of one channel: the library's state machine plus I/O.
pub struct Supervised {
    pub channel: Channel,
    pub machine: SupervisorSession,
    _heartbeat: Heartbeater,
}

impl Supervised {
    pub fn new(stream: UnixStream, role: Role) -> Supervised {
        let channel = Channel::new(stream).expect("channel");
        let heartbeat = channel.sender().start_heartbeat();
        Supervised {
            channel,
            machine: SupervisorSession::new(role, Instant::now()),
            _heartbeat: heartbeat,
        }
    }

    pub fn send(&self, frame: &Frame) {
        self.channel.sender().send_frame(frame).expect("send");
        self.sync();
    }

    /// Heartbeats follow the machine's session.
    pub fn sync(&self) {
        self.channel
            .sender()
            .set_session(self.machine.session().cloned());
    }

    /// Reads one frame (or one heartbeat interval of silence), applies the
    /// machine's decision and returns the event, if any. `Err` on a closed
    /// channel, a deadline or lost heartbeats.
    pub fn pump(&mut self) -> Result<Option<SupervisorEvent>, HandoffError> {
        let frame = match self.channel.recv_tick() {
            Ok(frame) => Some(frame),
            Err(FrameError::TimedOut) => None,
            Err(e) => return Err(HandoffError::Frame(e)),
        };
        let mut event = None;
        if let Some(frame) = frame {
            match self.machine.on_frame(&frame, Instant::now()) {
                SupervisorDecision::Nothing | SupervisorDecision::Discarded => {}
                SupervisorDecision::Proceed { send, event: e } => {
                    if let Some(f) = send {
                        self.send(&f);
                    }
                    event = e;
                }
                SupervisorDecision::Close { violation, send } => {
                    if let Some(f) = send {
                        self.send(&f);
                    }
                    return Err(HandoffError::Violation(violation));
                }
            }
            self.sync();
        }
        self.machine.check_time(Instant::now())?;
        Ok(event)
    }

    /// Pumps until `want` matches an event (panics on errors and after [`HANG`]).
    pub fn until(&mut self, want: impl Fn(&SupervisorEvent) -> bool) -> SupervisorEvent {
        let give_up = Instant::now() + HANG;
        while Instant::now() < give_up {
            if let Some(e) = self.pump().expect("supervisor channel")
                && want(&e)
            {
                return e;
            }
        }
        panic!("no matching event within {HANG:?}");
    }

    pub fn until_open(&mut self) {
        self.until(|e| matches!(e, SupervisorEvent::SessionOpened { .. }));
        assert!(matches!(
            self.machine.state(),
            SupervisorState::Idle | SupervisorState::AwaitBegin
        ));
    }
}

/// How a supervised handoff attempt ended.
#[derive(Debug)]
pub enum Attempt {
    Committed { successor: Supervised },
    RolledBack { reason: String },
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Supervised({:?})", self.machine.state())
    }
}

/// One handoff attempt as porthold runs it: `spawn` starts a successor and
/// returns the supervisor's end of its channel; `kill` kills the successor's
/// process tree (and returns once it is gone).
pub fn run_attempt(
    incumbent: &mut Supervised,
    deadline: Duration,
    spawn: impl FnOnce() -> UnixStream,
    kill: impl FnOnce(),
) -> Attempt {
    let prepare = incumbent
        .machine
        .prepare(Instant::now(), deadline)
        .expect("idle incumbent");
    incumbent.send(&prepare);
    let abort = |incumbent: &mut Supervised, reason: String| {
        if let Some(resume) = incumbent.machine.abort(&reason) {
            incumbent.send(&resume);
        }
        Attempt::RolledBack { reason }
    };
    loop {
        match incumbent.pump() {
            Ok(Some(SupervisorEvent::Sealed)) => break,
            Ok(Some(SupervisorEvent::SealFailed { reason })) => {
                return Attempt::RolledBack { reason };
            }
            Ok(_) => {}
            Err(e) => return abort(incumbent, e.to_string()),
        }
    }
    let attempt_deadline = incumbent.machine.deadline().expect("attempt deadline");
    let mut successor = Supervised::new(spawn(), Role::Successor);
    let failure = loop {
        if Instant::now() >= attempt_deadline {
            break "deadline passed".to_string();
        }
        match successor.pump() {
            Ok(Some(SupervisorEvent::SessionOpened { .. })) => {
                let begin = successor
                    .machine
                    .begin(Instant::now(), attempt_deadline)
                    .expect("successor awaits begin");
                successor.send(&begin);
            }
            Ok(Some(SupervisorEvent::Ready)) => {
                let commit = incumbent.machine.commit().expect("sealed incumbent");
                incumbent.send(&commit);
                return Attempt::Committed { successor };
            }
            Ok(_) => {}
            Err(e) => break e.to_string(),
        }
    };
    // The successor may hold the lock: it must be gone before the incumbent
    // takes the lock back.
    kill();
    drop(successor);
    abort(incumbent, failure)
}

/// Reads frames from a raw supervisor end until one that is not a heartbeat.
pub fn next_non_heartbeat(channel: &mut Channel) -> (Frame, Message) {
    let give_up = Instant::now() + HANG;
    while Instant::now() < give_up {
        match channel.recv_tick() {
            Ok(frame) => {
                let msg = Message::from_frame(&frame).expect("a message");
                if !matches!(msg, Message::Heartbeat { .. }) {
                    return (frame, msg);
                }
            }
            Err(FrameError::TimedOut) => {}
            Err(e) => panic!("channel: {e}"),
        }
    }
    panic!("no frame within {HANG:?}");
}
