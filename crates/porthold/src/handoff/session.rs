//! The protocol's state machines, as pure code: feed a frame (or a local
//! event), get a decision. No I/O, no clock: callers pass the time in.
//!
//! Both sides follow one rule for violations: a frame that is not legal in the
//! current state (out of order, from the wrong party, with another attempt's id
//! or another version) closes the *session*, not the channel. The generation
//! then rolls back whatever it paused and opens a new session with `Hello`; the
//! supervisor answers a violation it detects with `Resume` (which tells the
//! incumbent to do the same) and waits for that `Hello`. Frames that arrive
//! while a side waits for `Hello`/`HelloAck` belong to a session already closed
//! and are discarded.
//!
//! The tables below are the protocol; `docs/handoff.md` shows them as tables.

use std::time::{Duration, Instant};

use super::HandoffError;
use super::message::{Kind, Message, PROTOCOL_MAX, PROTOCOL_MIN, Party, Role};
use crate::control::frame::Frame;

/// How often each side sends a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(250);
/// How many heartbeat intervals may pass without a frame before the peer counts as lost.
pub const MISSED_HEARTBEATS: u32 = 4;

/// The silence after which the peer counts as lost.
pub fn heartbeat_timeout() -> Duration {
    HEARTBEAT_INTERVAL * MISSED_HEARTBEATS
}

/// Why a frame closed a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViolationKind {
    /// Legal from this party, but not in this state.
    OutOfOrder,
    /// This party never sends that message.
    WrongDirection,
    /// The frame carries another attempt's id (or none).
    WrongId,
    /// The frame is written in another protocol version than the one chosen.
    WrongVersion,
    /// `msg` is no known message.
    UnknownMessage,
    /// The `Hello` ranges do not overlap.
    NoCommonVersion,
    /// A `Hello` from the wrong role on this channel.
    WrongRole,
}

/// A protocol violation: what arrived, in which state, and why it is illegal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol violation in state {state}: {got} ({kind:?})")]
pub struct Violation {
    /// The receiver's state.
    pub state: &'static str,
    /// The message type that arrived (`?` when unparsable).
    pub got: String,
    /// Why it is illegal.
    pub kind: ViolationKind,
}

/// A fresh handoff id: 128 random bits in hex.
pub fn new_handoff_id() -> String {
    let mut bytes = [0u8; 16];
    if crate::discovery::random_bytes(&mut bytes).is_err() {
        // No random source at all: ids need only be unique among this
        // supervisor's attempts, which pid, time and a counter give.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        bytes[..4].copy_from_slice(&std::process::id().to_be_bytes());
        bytes[4..12].copy_from_slice(&t.to_be_bytes());
        bytes[12..].copy_from_slice(&(n as u32).to_be_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The session parameters both sides agreed on in `Hello`/`HelloAck`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionId {
    /// The chosen protocol version.
    pub version: u32,
    /// The handoff id of this attempt.
    pub id: String,
}

/// `msg` as a frame of `session`, or (before one exists) without id at the newest version.
pub fn out_frame(session: Option<&SessionId>, msg: &Message) -> Frame {
    let (v, id) = match session {
        Some(s) => (s.version, Some(s.id.as_str())),
        None => (PROTOCOL_MAX, None),
    };
    Frame {
        v,
        id: id.map(str::to_owned),
        fds: 0,
        // Invariant: a Message is plain data (strings and integers, no maps
        // with non-string keys), which serde_json always turns into a Value.
        msg: serde_json::to_value(msg).expect("a handoff message serialises"),
    }
}

/// Parses a frame and checks what every frame of an open session must satisfy.
fn check_frame(
    frame: &Frame,
    from: Party,
    session: Option<&SessionId>,
    state: &'static str,
) -> Result<Message, Violation> {
    let got = frame
        .msg
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("?")
        .to_string();
    let violation = |kind| Violation {
        state,
        got: got.clone(),
        kind,
    };
    let msg = Message::from_frame(frame).map_err(|_| violation(ViolationKind::UnknownMessage))?;
    if !msg.kind().may_be_sent_by(from) {
        return Err(violation(ViolationKind::WrongDirection));
    }
    if let Some(session) = session {
        if frame.id.as_deref() != Some(session.id.as_str()) {
            return Err(violation(ViolationKind::WrongId));
        }
        if frame.v != session.version {
            return Err(violation(ViolationKind::WrongVersion));
        }
    }
    Ok(msg)
}

// ---------------------------------------------------------------------------
// Supervisor side
// ---------------------------------------------------------------------------

/// The supervisor's view of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SupervisorState {
    /// No session: waiting for the generation's `Hello`.
    AwaitHello,
    /// Incumbent channel: session open, serving.
    Idle,
    /// Incumbent channel: `PrepareHandoff` sent, waiting for `Drained`.
    Draining,
    /// Incumbent channel: `SealRequest` sent, waiting for `SealComplete`.
    Sealing,
    /// Incumbent channel: sealed; the successor may start. `Commit` or `Resume` next.
    Sealed,
    /// Incumbent channel: `Commit` sent; the incumbent exits.
    Committed,
    /// Successor channel: session open, waiting for the supervisor's `Begin`.
    AwaitBegin,
    /// Successor channel: `Begin` sent, waiting for `Ready` (after which the
    /// channel is an incumbent channel in `AwaitHello`).
    Starting,
}

impl SupervisorState {
    fn name(self) -> &'static str {
        match self {
            SupervisorState::AwaitHello => "await_hello",
            SupervisorState::Idle => "idle",
            SupervisorState::Draining => "draining",
            SupervisorState::Sealing => "sealing",
            SupervisorState::Sealed => "sealed",
            SupervisorState::Committed => "committed",
            SupervisorState::AwaitBegin => "await_begin",
            SupervisorState::Starting => "starting",
        }
    }
}

/// What happened, for the supervisor's orchestration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// A session opened (a new attempt may start). When `previous` is not
    /// `AwaitHello`, the generation abandoned the session it had (it rolls
    /// back): a successor started for it must be killed.
    SessionOpened {
        /// The state of the session this one replaces.
        previous: SupervisorState,
        /// The handoff id of the new session.
        id: String,
        /// The generation's pid.
        pid: u32,
        /// The generation's build id.
        build_id: String,
    },
    /// The incumbent drained.
    Drained {
        /// Connections still open.
        open_connections: u64,
    },
    /// Sealing advances.
    SealProgress {
        /// Units done.
        done: u64,
        /// Units in all.
        total: u64,
    },
    /// The incumbent sealed and released the lock: start the successor.
    Sealed,
    /// The incumbent could not seal; `Resume` was sent.
    SealFailed {
        /// Why.
        reason: String,
    },
    /// The successor is ready: commit the incumbent. This channel is now the
    /// new incumbent's, waiting for its `Hello`.
    Ready,
}

/// What the supervisor must do with one frame or command.
#[derive(Debug, Clone, PartialEq)]
pub enum SupervisorDecision {
    /// Nothing to do (a heartbeat).
    Nothing,
    /// A frame of a closed session; dropped.
    Discarded,
    /// Send `send` (if any) and act on `event` (if any).
    Proceed {
        /// The frame to send on this channel.
        send: Option<Frame>,
        /// What happened.
        event: Option<SupervisorEvent>,
    },
    /// The session is closed by a violation. On an incumbent channel, `send`
    /// is the `Resume` that rolls the incumbent back and makes it open a new
    /// session; on a successor channel the supervisor kills the successor.
    Close {
        /// What was violated.
        violation: Violation,
        /// The frame to send before forgetting the session.
        send: Option<Frame>,
    },
}

/// The supervisor's state machine for one generation's channel.
#[derive(Debug, Clone)]
pub struct SupervisorSession {
    role: Role,
    state: SupervisorState,
    session: Option<SessionId>,
    last_heard: Instant,
    deadline: Option<Instant>,
}

impl SupervisorSession {
    /// A machine for the channel of a generation in `role`, created at `now`.
    pub fn new(role: Role, now: Instant) -> SupervisorSession {
        SupervisorSession {
            role,
            state: SupervisorState::AwaitHello,
            session: None,
            last_heard: now,
            deadline: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> SupervisorState {
        self.state
    }

    /// The open session, if any: version and id to write frames with.
    pub fn session(&self) -> Option<&SessionId> {
        self.session.as_ref()
    }

    /// The generation's role on this channel.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The deadline of the attempt in progress.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Feeds one frame received at `now`.
    pub fn on_frame(&mut self, frame: &Frame, now: Instant) -> SupervisorDecision {
        self.last_heard = now;
        use SupervisorState as S;
        let name = self.state.name();
        // A generation sends Hello only after it closed its session (Resume, a
        // violation it saw, a lost supervisor): in any state, Hello ends the
        // current session and opens the next one. Other frames before Hello
        // belong to a session already closed.
        if let Ok(msg @ Message::Hello { .. }) = Message::from_frame(frame) {
            return self.on_hello(msg);
        }
        if self.state == S::AwaitHello {
            return SupervisorDecision::Discarded;
        }
        let msg = match check_frame(frame, self.role.into(), self.session.as_ref(), name) {
            Ok(msg) => msg,
            Err(violation) => return self.close(violation),
        };
        let next = match (self.role, self.state, &msg) {
            (_, _, Message::Heartbeat { .. }) => return SupervisorDecision::Nothing,
            (Role::Incumbent, S::Draining, Message::Drained { open_connections }) => (
                S::Sealing,
                Some(self.out(Message::SealRequest)),
                Some(SupervisorEvent::Drained {
                    open_connections: *open_connections,
                }),
            ),
            (Role::Incumbent, S::Sealing, Message::SealProgress { done, total }) => (
                S::Sealing,
                None,
                Some(SupervisorEvent::SealProgress {
                    done: *done,
                    total: *total,
                }),
            ),
            (Role::Incumbent, S::Sealing, Message::SealComplete) => {
                (S::Sealed, None, Some(SupervisorEvent::Sealed))
            }
            (Role::Incumbent, S::Sealing, Message::SealFailed { reason }) => {
                let resume = self.out(Message::Resume {
                    reason: format!("seal failed: {reason}"),
                });
                self.end_session();
                return SupervisorDecision::Proceed {
                    send: Some(resume),
                    event: Some(SupervisorEvent::SealFailed {
                        reason: reason.clone(),
                    }),
                };
            }
            (Role::Successor, S::Starting, Message::Ready) => {
                // The successor now serves and is the next incumbent: its
                // channel becomes an incumbent channel, and it opens a new
                // session on it with Hello (role incumbent).
                self.role = Role::Incumbent;
                self.end_session();
                return SupervisorDecision::Proceed {
                    send: None,
                    event: Some(SupervisorEvent::Ready),
                };
            }
            _ => {
                return self.close(Violation {
                    state: name,
                    got: msg.kind().as_str().to_string(),
                    kind: ViolationKind::OutOfOrder,
                });
            }
        };
        self.state = next.0;
        SupervisorDecision::Proceed {
            send: next.1,
            event: next.2,
        }
    }

    fn on_hello(&mut self, msg: Message) -> SupervisorDecision {
        let Message::Hello {
            role,
            pid,
            build_id,
            proto_min,
            proto_max,
        } = msg
        else {
            return SupervisorDecision::Discarded;
        };
        let violation = |kind| Violation {
            state: SupervisorState::AwaitHello.name(),
            got: Kind::Hello.as_str().into(),
            kind,
        };
        if role != self.role {
            self.end_session();
            return SupervisorDecision::Close {
                violation: violation(ViolationKind::WrongRole),
                send: None,
            };
        }
        let version = proto_max.min(PROTOCOL_MAX);
        if version < proto_min.max(PROTOCOL_MIN) {
            self.end_session();
            return SupervisorDecision::Close {
                violation: violation(ViolationKind::NoCommonVersion),
                send: None,
            };
        }
        let previous = self.state;
        let id = new_handoff_id();
        self.session = Some(SessionId {
            version,
            id: id.clone(),
        });
        self.state = match self.role {
            Role::Incumbent => SupervisorState::Idle,
            Role::Successor => SupervisorState::AwaitBegin,
        };
        SupervisorDecision::Proceed {
            send: Some(self.out(Message::HelloAck { version })),
            event: Some(SupervisorEvent::SessionOpened {
                previous,
                id,
                pid,
                build_id,
            }),
        }
    }

    /// `msg` as a frame of the open session (or of none).
    fn out(&self, msg: Message) -> Frame {
        out_frame(self.session.as_ref(), &msg)
    }

    fn end_session(&mut self) {
        self.state = SupervisorState::AwaitHello;
        self.session = None;
        self.deadline = None;
    }

    fn close(&mut self, violation: Violation) -> SupervisorDecision {
        let send = (self.role == Role::Incumbent).then(|| {
            self.out(Message::Resume {
                reason: violation.to_string(),
            })
        });
        self.end_session();
        SupervisorDecision::Close { violation, send }
    }

    /// Incumbent channel: start an attempt bounded by `deadline` (from `now`
    /// until the successor is ready). Returns `PrepareHandoff` to send.
    ///
    /// # Errors
    /// [`HandoffError::NotNow`] unless the session is idle.
    pub fn prepare(&mut self, now: Instant, deadline: Duration) -> Result<Frame, HandoffError> {
        self.command(Role::Incumbent, SupervisorState::Idle, "prepare")?;
        self.state = SupervisorState::Draining;
        self.deadline = Some(now + deadline);
        Ok(self.out(Message::PrepareHandoff {
            deadline_ms: deadline.as_millis() as u64,
        }))
    }

    /// Successor channel: the incumbent sealed; let the successor start, with
    /// the time left until `deadline`. Returns `Begin` to send.
    ///
    /// # Errors
    /// [`HandoffError::NotNow`] unless the successor's session is open and waiting.
    pub fn begin(&mut self, now: Instant, deadline: Instant) -> Result<Frame, HandoffError> {
        self.command(Role::Successor, SupervisorState::AwaitBegin, "begin")?;
        self.state = SupervisorState::Starting;
        self.deadline = Some(deadline);
        Ok(self.out(Message::Begin {
            deadline_ms: deadline.saturating_duration_since(now).as_millis() as u64,
        }))
    }

    /// Incumbent channel: the successor is ready. Returns `Commit` to send.
    ///
    /// # Errors
    /// [`HandoffError::NotNow`] unless the incumbent has sealed.
    pub fn commit(&mut self) -> Result<Frame, HandoffError> {
        self.command(Role::Incumbent, SupervisorState::Sealed, "commit")?;
        self.state = SupervisorState::Committed;
        self.deadline = None;
        Ok(self.out(Message::Commit))
    }

    /// Incumbent channel: abandon the attempt (deadline, successor failed,
    /// heartbeats lost). Returns the `Resume` to send, or `None` when no
    /// session is open. The caller must have killed the successor's process
    /// tree first when the incumbent has sealed: the incumbent re-acquires the lock.
    pub fn abort(&mut self, reason: &str) -> Option<Frame> {
        if self.role != Role::Incumbent
            || matches!(
                self.state,
                SupervisorState::AwaitHello | SupervisorState::Committed
            )
        {
            return None;
        }
        let resume = self.out(Message::Resume {
            reason: reason.to_string(),
        });
        self.end_session();
        Some(resume)
    }

    /// Checks the clock: `Err` when the attempt's deadline passed or the peer
    /// has been silent for [`MISSED_HEARTBEATS`] intervals while a session is open.
    ///
    /// # Errors
    /// [`HandoffError::DeadlineExpired`], [`HandoffError::HeartbeatLost`].
    pub fn check_time(&self, now: Instant) -> Result<(), HandoffError> {
        if let Some(deadline) = self.deadline
            && now >= deadline
        {
            return Err(HandoffError::DeadlineExpired {
                state: self.state.name(),
            });
        }
        if self.session.is_some() && now.duration_since(self.last_heard) > heartbeat_timeout() {
            return Err(HandoffError::HeartbeatLost);
        }
        Ok(())
    }

    fn command(
        &self,
        role: Role,
        state: SupervisorState,
        what: &'static str,
    ) -> Result<(), HandoffError> {
        if self.role == role && self.state == state {
            Ok(())
        } else {
            Err(HandoffError::NotNow {
                what,
                state: self.state.name(),
            })
        }
    }
}

// ---------------------------------------------------------------------------
// Generation side
// ---------------------------------------------------------------------------

/// A generation's view of its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationState {
    /// `Hello` sent, waiting for `HelloAck`.
    AwaitHelloAck,
    /// Incumbent: serving, no attempt in progress.
    Idle,
    /// Incumbent: draining (the server's drain hook runs).
    Draining,
    /// Incumbent: `Drained` sent, waiting for `SealRequest`.
    Drained,
    /// Incumbent: sealing (the server's seal hook runs).
    Sealing,
    /// Incumbent: `SealComplete` sent (lock released), waiting for `Commit` or `Resume`.
    Sealed,
    /// Incumbent: `SealFailed` sent, waiting for `Resume`.
    SealFailed,
    /// Incumbent: `Commit` received; exit.
    Committed,
    /// Successor: waiting for `Begin`.
    AwaitBegin,
    /// Successor: acquiring the lock and opening the state.
    Starting,
    /// Successor: `Ready` sent; from here the generation is the incumbent.
    Ready,
}

impl GenerationState {
    fn name(self) -> &'static str {
        match self {
            GenerationState::AwaitHelloAck => "await_hello_ack",
            GenerationState::Idle => "idle",
            GenerationState::Draining => "draining",
            GenerationState::Drained => "drained",
            GenerationState::Sealing => "sealing",
            GenerationState::Sealed => "sealed",
            GenerationState::SealFailed => "seal_failed",
            GenerationState::Committed => "committed",
            GenerationState::AwaitBegin => "await_begin",
            GenerationState::Starting => "starting",
            GenerationState::Ready => "ready",
        }
    }
}

/// What the generation must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GenerationDecision {
    /// Nothing (a heartbeat, or a frame of a closed session, discarded).
    Nothing,
    /// The session is open.
    Opened,
    /// Incumbent: stop accepting and drain, then report with [`GenerationSession::drained`].
    Drain {
        /// Time the supervisor gives the whole attempt.
        deadline: Duration,
    },
    /// Incumbent: make the state durable, release the lock, then report with [`GenerationSession::sealed`].
    Seal,
    /// Incumbent: exit.
    Exit,
    /// Incumbent: the session ended (`Resume`, or a violation: then `violation`
    /// is set). Roll back — re-acquire the lock first when `relock` — resume
    /// accepting, and open a new session by sending `hello`.
    Rollback {
        /// The lock was released (`SealComplete` sent) and must be taken back.
        relock: bool,
        /// Whether the drain hook had run (accepting must restart).
        was_paused: bool,
        /// The violation that closed the session, if one did.
        violation: Option<Violation>,
        /// The `Hello` that opens the next session.
        hello: Message,
    },
    /// Successor: acquire the lock and open the state, then report with [`GenerationSession::ready`].
    Start {
        /// Time left to become ready.
        deadline: Duration,
    },
    /// Successor: the session is closed by a violation; the successor cannot continue.
    Fail(Violation),
}

/// A generation's state machine (incumbent or successor).
#[derive(Debug, Clone)]
pub struct GenerationSession {
    role: Role,
    state: GenerationState,
    session: Option<SessionId>,
    pid: u32,
    build_id: String,
    last_heard: Instant,
}

impl GenerationSession {
    /// A machine for a generation in `role`; send [`hello`](Self::hello) first.
    pub fn new(role: Role, pid: u32, build_id: &str, now: Instant) -> GenerationSession {
        GenerationSession {
            role,
            state: GenerationState::AwaitHelloAck,
            session: None,
            pid,
            build_id: build_id.to_string(),
            last_heard: now,
        }
    }

    /// The `Hello` that opens a session.
    pub fn hello(&self) -> Message {
        Message::Hello {
            role: self.role,
            pid: self.pid,
            build_id: self.build_id.clone(),
            proto_min: PROTOCOL_MIN,
            proto_max: PROTOCOL_MAX,
        }
    }

    /// The current state.
    pub fn state(&self) -> GenerationState {
        self.state
    }

    /// The current role (a successor becomes the incumbent once ready).
    pub fn role(&self) -> Role {
        self.role
    }

    /// The open session, if any.
    pub fn session(&self) -> Option<&SessionId> {
        self.session.as_ref()
    }

    /// Feeds one frame received at `now`.
    pub fn on_frame(&mut self, frame: &Frame, now: Instant) -> GenerationDecision {
        use GenerationState as S;
        self.last_heard = now;
        let name = self.state.name();
        if self.state == S::AwaitHelloAck {
            return match Message::from_frame(frame) {
                Ok(Message::HelloAck { version })
                    if (PROTOCOL_MIN..=PROTOCOL_MAX).contains(&version)
                        && frame.v == version
                        && frame.id.is_some() =>
                {
                    self.session = Some(SessionId {
                        version,
                        id: frame.id.clone().unwrap_or_default(),
                    });
                    self.state = match self.role {
                        Role::Incumbent => S::Idle,
                        Role::Successor => S::AwaitBegin,
                    };
                    GenerationDecision::Opened
                }
                Ok(Message::HelloAck { .. }) => self.close(Violation {
                    state: name,
                    got: Kind::HelloAck.as_str().into(),
                    kind: ViolationKind::NoCommonVersion,
                }),
                // Frames of a session this side already closed.
                _ => GenerationDecision::Nothing,
            };
        }
        let msg = match check_frame(frame, Party::Supervisor, self.session.as_ref(), name) {
            Ok(msg) => msg,
            Err(violation) => return self.close(violation),
        };
        match (self.role, self.state, &msg) {
            (_, _, Message::Heartbeat { .. }) => GenerationDecision::Nothing,
            (Role::Incumbent, S::Idle, Message::PrepareHandoff { deadline_ms }) => {
                self.state = S::Draining;
                GenerationDecision::Drain {
                    deadline: Duration::from_millis(*deadline_ms),
                }
            }
            (Role::Incumbent, S::Drained, Message::SealRequest) => {
                self.state = S::Sealing;
                GenerationDecision::Seal
            }
            (Role::Incumbent, S::Sealed, Message::Commit) => {
                self.state = S::Committed;
                GenerationDecision::Exit
            }
            (
                Role::Incumbent,
                S::Idle | S::Draining | S::Drained | S::Sealing | S::Sealed | S::SealFailed,
                Message::Resume { .. },
            ) => self.rollback(None),
            (Role::Successor, S::AwaitBegin, Message::Begin { deadline_ms }) => {
                self.state = S::Starting;
                GenerationDecision::Start {
                    deadline: Duration::from_millis(*deadline_ms),
                }
            }
            _ => self.close(Violation {
                state: name,
                got: msg.kind().as_str().to_string(),
                kind: ViolationKind::OutOfOrder,
            }),
        }
    }

    fn close(&mut self, violation: Violation) -> GenerationDecision {
        match self.role {
            Role::Incumbent => self.rollback(Some(violation)),
            Role::Successor => {
                self.session = None;
                GenerationDecision::Fail(violation)
            }
        }
    }

    fn rollback(&mut self, violation: Option<Violation>) -> GenerationDecision {
        use GenerationState as S;
        let relock = matches!(self.state, S::Sealed);
        let was_paused = !matches!(self.state, S::Idle | S::AwaitHelloAck);
        self.state = S::AwaitHelloAck;
        self.session = None;
        GenerationDecision::Rollback {
            relock,
            was_paused,
            violation,
            hello: self.hello(),
        }
    }

    /// Incumbent: draining ended. Returns `Drained` to send.
    ///
    /// # Errors
    /// [`HandoffError::NotNow`] outside `Draining`.
    pub fn drained(&mut self, open_connections: u64) -> Result<Message, HandoffError> {
        self.local(
            GenerationState::Draining,
            GenerationState::Drained,
            "drained",
        )?;
        Ok(Message::Drained { open_connections })
    }

    /// Incumbent: sealing advances. Returns `SealProgress` to send.
    ///
    /// # Errors
    /// [`HandoffError::NotNow`] outside `Sealing`.
    pub fn seal_progress(&mut self, done: u64, total: u64) -> Result<Message, HandoffError> {
        self.local(
            GenerationState::Sealing,
            GenerationState::Sealing,
            "seal_progress",
        )?;
        Ok(Message::SealProgress { done, total })
    }

    /// Incumbent: the state is durable and the lock released. Returns `SealComplete`.
    ///
    /// # Errors
    /// [`HandoffError::NotNow`] outside `Sealing`.
    pub fn sealed(&mut self) -> Result<Message, HandoffError> {
        self.local(GenerationState::Sealing, GenerationState::Sealed, "sealed")?;
        Ok(Message::SealComplete)
    }

    /// Incumbent: sealing failed (the lock is still held). Returns `SealFailed`.
    ///
    /// # Errors
    /// [`HandoffError::NotNow`] outside `Sealing`.
    pub fn seal_failed(&mut self, reason: &str) -> Result<Message, HandoffError> {
        self.local(
            GenerationState::Sealing,
            GenerationState::SealFailed,
            "seal_failed",
        )?;
        Ok(Message::SealFailed {
            reason: reason.to_string(),
        })
    }

    /// Successor: it holds the lock and serves. Returns `Ready` to send; the
    /// session is done and this generation is now the incumbent: send
    /// [`hello`](Self::hello) (role incumbent) to open its next session.
    ///
    /// # Errors
    /// [`HandoffError::NotNow`] outside `Starting`.
    pub fn ready(&mut self) -> Result<Message, HandoffError> {
        self.local(GenerationState::Starting, GenerationState::Ready, "ready")?;
        Ok(Message::Ready)
    }

    /// After [`ready`](Self::ready): become the incumbent, waiting for `HelloAck`.
    pub fn become_incumbent(&mut self) {
        self.role = Role::Incumbent;
        self.state = GenerationState::AwaitHelloAck;
        self.session = None;
    }

    /// `Err(HeartbeatLost)` when the supervisor has been silent too long while a session is open.
    ///
    /// # Errors
    /// [`HandoffError::HeartbeatLost`].
    pub fn check_time(&self, now: Instant) -> Result<(), HandoffError> {
        if self.session.is_some() && now.duration_since(self.last_heard) > heartbeat_timeout() {
            return Err(HandoffError::HeartbeatLost);
        }
        Ok(())
    }

    /// Incumbent: the supervisor went silent or away; end the session as if
    /// `Resume` had arrived (see [`GenerationDecision::Rollback`]).
    pub fn lost(&mut self) -> GenerationDecision {
        self.rollback(None)
    }

    fn local(
        &mut self,
        from: GenerationState,
        to: GenerationState,
        what: &'static str,
    ) -> Result<(), HandoffError> {
        if self.state != from {
            return Err(HandoffError::NotNow {
                what,
                state: self.state.name(),
            });
        }
        self.state = to;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(session: Option<&SessionId>) -> Frame {
        out_frame(session, &Message::Heartbeat { seq: 9 })
    }

    /// Feeds a supervisor frame to the generation and returns its decision.
    fn to_gen(g: &mut GenerationSession, f: Frame) -> GenerationDecision {
        g.on_frame(&f, Instant::now())
    }

    fn emit(
        g: &mut GenerationSession,
        step: impl FnOnce(&mut GenerationSession) -> Result<Message, HandoffError>,
    ) -> Frame {
        let msg = step(g).unwrap();
        out_frame(g.session(), &msg)
    }

    fn sent(d: SupervisorDecision) -> Frame {
        match d {
            SupervisorDecision::Proceed { send: Some(f), .. } => f,
            other => panic!("expected a frame to send, got {other:?}"),
        }
    }

    /// A heartbeat in the current state changes nothing, on both machines.
    fn heartbeat_is_legal(s: &mut SupervisorSession, g: &mut GenerationSession) {
        let (ss, gs) = (s.state(), g.state());
        let d = s.on_frame(&hb(g.session()), Instant::now());
        let expect = if ss == SupervisorState::AwaitHello {
            SupervisorDecision::Discarded
        } else {
            SupervisorDecision::Nothing
        };
        assert_eq!(d, expect, "supervisor in {ss:?}");
        assert_eq!(s.state(), ss);
        assert_eq!(
            to_gen(g, hb(s.session())),
            GenerationDecision::Nothing,
            "generation in {gs:?}"
        );
        assert_eq!(g.state(), gs);
    }

    #[test]
    fn heartbeats_are_legal_in_every_state_of_a_whole_handoff() {
        let now = Instant::now();
        let mut inc_sup = SupervisorSession::new(Role::Incumbent, now);
        let mut inc = GenerationSession::new(Role::Incumbent, 10, "old", now);
        let mut suc_sup = SupervisorSession::new(Role::Successor, now);
        let mut suc = GenerationSession::new(Role::Successor, 11, "new", now);
        heartbeat_is_legal(&mut inc_sup, &mut inc);
        heartbeat_is_legal(&mut suc_sup, &mut suc);

        let ack = sent(inc_sup.on_frame(&out_frame(None, &inc.hello()), now));
        assert_eq!(to_gen(&mut inc, ack), GenerationDecision::Opened);
        assert_eq!(inc_sup.state(), SupervisorState::Idle);
        heartbeat_is_legal(&mut inc_sup, &mut inc);

        let prepare = inc_sup.prepare(now, Duration::from_secs(5)).unwrap();
        assert!(
            matches!(to_gen(&mut inc, prepare), GenerationDecision::Drain { deadline } if deadline == Duration::from_secs(5))
        );
        assert_eq!(inc.state(), GenerationState::Draining);
        heartbeat_is_legal(&mut inc_sup, &mut inc);
        let drained = emit(&mut inc, |g| g.drained(2));
        heartbeat_is_legal(&mut inc_sup, &mut inc);
        let seal = sent(inc_sup.on_frame(&drained, now));
        assert_eq!(inc_sup.state(), SupervisorState::Sealing);
        assert_eq!(to_gen(&mut inc, seal), GenerationDecision::Seal);
        heartbeat_is_legal(&mut inc_sup, &mut inc);
        let progress = emit(&mut inc, |g| g.seal_progress(1, 2));
        assert!(matches!(
            inc_sup.on_frame(&progress, now),
            SupervisorDecision::Proceed {
                send: None,
                event: Some(SupervisorEvent::SealProgress { done: 1, total: 2 })
            }
        ));
        let complete = emit(&mut inc, |g| g.sealed());
        assert_eq!(
            inc_sup.on_frame(&complete, now),
            SupervisorDecision::Proceed {
                send: None,
                event: Some(SupervisorEvent::Sealed)
            }
        );
        assert_eq!(inc_sup.state(), SupervisorState::Sealed);
        heartbeat_is_legal(&mut inc_sup, &mut inc);

        let ack = sent(suc_sup.on_frame(&out_frame(None, &suc.hello()), now));
        assert_eq!(to_gen(&mut suc, ack), GenerationDecision::Opened);
        heartbeat_is_legal(&mut suc_sup, &mut suc);
        let begin = suc_sup.begin(now, now + Duration::from_secs(3)).unwrap();
        assert!(matches!(
            to_gen(&mut suc, begin),
            GenerationDecision::Start { .. }
        ));
        heartbeat_is_legal(&mut suc_sup, &mut suc);
        let ready = emit(&mut suc, |g| g.ready());
        assert_eq!(
            suc_sup.on_frame(&ready, now),
            SupervisorDecision::Proceed {
                send: None,
                event: Some(SupervisorEvent::Ready)
            }
        );
        // The successor's channel is now an incumbent channel awaiting Hello.
        assert_eq!(
            (suc_sup.role(), suc_sup.state()),
            (Role::Incumbent, SupervisorState::AwaitHello)
        );
        suc.become_incumbent();
        heartbeat_is_legal(&mut suc_sup, &mut suc);

        let commit = inc_sup.commit().unwrap();
        assert_eq!(to_gen(&mut inc, commit), GenerationDecision::Exit);
        heartbeat_is_legal(&mut inc_sup, &mut inc);

        let ack = sent(suc_sup.on_frame(&out_frame(None, &suc.hello()), now));
        assert_eq!(to_gen(&mut suc, ack), GenerationDecision::Opened);
        assert_eq!(suc_sup.state(), SupervisorState::Idle);
    }

    #[test]
    fn a_failed_seal_is_answered_with_resume_in_the_same_session() {
        let now = Instant::now();
        let mut s = SupervisorSession::new(Role::Incumbent, now);
        let mut g = GenerationSession::new(Role::Incumbent, 10, "old", now);
        let hello = out_frame(None, &g.hello());
        to_gen(&mut g, sent(s.on_frame(&hello, now)));
        to_gen(&mut g, s.prepare(now, Duration::from_secs(1)).unwrap());
        let seal = sent(s.on_frame(&emit(&mut g, |g| g.drained(0)), now));
        to_gen(&mut g, seal);
        let failed = emit(&mut g, |g| g.seal_failed("disk full"));
        let resume = sent(s.on_frame(&failed, now));
        assert_eq!(s.state(), SupervisorState::AwaitHello);
        assert!(matches!(
            to_gen(&mut g, resume),
            GenerationDecision::Rollback {
                relock: false,
                was_paused: true,
                violation: None,
                ..
            }
        ));
    }

    #[test]
    fn the_deadline_and_silence_are_failures_of_the_attempt() {
        let now = Instant::now();
        let mut s = SupervisorSession::new(Role::Incumbent, now);
        let g = GenerationSession::new(Role::Incumbent, 10, "old", now);
        s.on_frame(&out_frame(None, &g.hello()), now);
        s.prepare(now, Duration::from_millis(500)).unwrap();
        assert!(s.check_time(now + Duration::from_millis(499)).is_ok());
        assert!(matches!(
            s.check_time(now + Duration::from_millis(500)),
            Err(HandoffError::DeadlineExpired { state: "draining" })
        ));
        let mut idle = SupervisorSession::new(Role::Incumbent, now);
        idle.on_frame(&out_frame(None, &g.hello()), now);
        assert!(idle.check_time(now + heartbeat_timeout()).is_ok());
        assert!(matches!(
            idle.check_time(now + heartbeat_timeout() + Duration::from_millis(1)),
            Err(HandoffError::HeartbeatLost)
        ));
    }

    #[test]
    fn supervisor_closes_on_out_of_order_wrong_id_and_wrong_direction() {
        let now = Instant::now();
        let open = || {
            let mut s = SupervisorSession::new(Role::Incumbent, now);
            let g = GenerationSession::new(Role::Incumbent, 10, "old", now);
            s.on_frame(&out_frame(None, &g.hello()), now);
            s
        };
        let mut s = open();
        // Every session gets a fresh id; the cases are built for the first and
        // each later one is re-addressed to the session it is fed to.
        let sid = s.session().cloned().unwrap();
        let cases = [
            (
                out_frame(Some(&sid), &Message::SealComplete),
                ViolationKind::OutOfOrder,
            ),
            (
                out_frame(Some(&sid), &Message::Ready),
                ViolationKind::WrongDirection,
            ),
            (
                out_frame(Some(&sid), &Message::Commit),
                ViolationKind::WrongDirection,
            ),
            (
                out_frame(
                    Some(&SessionId {
                        version: 1,
                        id: "other".into(),
                    }),
                    &Message::Heartbeat { seq: 1 },
                ),
                ViolationKind::WrongId,
            ),
            (
                out_frame(
                    Some(&SessionId {
                        version: 2,
                        id: sid.id.clone(),
                    }),
                    &Message::Heartbeat { seq: 1 },
                ),
                ViolationKind::WrongVersion,
            ),
        ];
        for (mut frame, kind) in cases {
            let sid = s.session().cloned().unwrap();
            if kind != ViolationKind::WrongId {
                frame.id = Some(sid.id.clone());
            }
            match s.on_frame(&frame, now) {
                SupervisorDecision::Close {
                    violation,
                    send: Some(resume),
                } => {
                    assert_eq!(violation.kind, kind);
                    assert_eq!(
                        resume.id.as_deref(),
                        Some(sid.id.as_str()),
                        "Resume is sent in the closed session"
                    );
                    assert_eq!(resume.msg["type"], "resume");
                }
                other => panic!("{kind:?}: {other:?}"),
            }
            assert_eq!(s.state(), SupervisorState::AwaitHello);
            s = open();
        }
    }
}
