//! Stateful handoff: hand a server's exclusive data directory from one
//! generation (the *incumbent*) to the next (the *successor*) on the same
//! listening sockets, with a bounded outage and a tested rollback.
//!
//! The sockets never close (porthold holds them); what moves is the state.
//! Each generation of a `--handoff` instance gets a private channel to its
//! supervisor: one end of a `socketpair`, passed as the fd right after the
//! listening sockets and named in `PORTHOLD_HANDOFF_FD` (its role in
//! `PORTHOLD_HANDOFF_ROLE`). The channel speaks the control framing
//! ([`crate::control::frame`]) with the messages of [`message`].
//!
//! ```text
//! supervisor → incumbent   PrepareHandoff      incumbent stops accepting, drains
//! incumbent  → supervisor  Drained
//! supervisor → incumbent   SealRequest         incumbent makes state durable, releases the lock
//! incumbent  → supervisor  SealComplete        (supervisor spawns the successor)
//! supervisor → successor   Begin               successor takes the lock, opens the state
//! successor  → supervisor  Ready
//! supervisor → incumbent   Commit              incumbent exits
//! ```
//!
//! Any failure before `Commit` ends in `Resume`: the incumbent re-acquires the
//! lock if it had released it (after the supervisor killed the successor),
//! re-reads its state and accepts again. The state machines of both sides are
//! pure code in [`session`]; [`Incumbent`] and [`Successor`] are the helpers a
//! server calls; [`DataDirLock`] is the exclusive lock on the state directory.
//! `docs/handoff.md` is the full protocol.

mod channel;
mod data_dir_lock;
mod incumbent;
pub mod message;
pub mod session;
mod successor;

pub use channel::{
    Channel, ChannelSender, Heartbeater, channel_from_env, channel_pair, role_from_env,
};
pub use data_dir_lock::DataDirLock;
pub use incumbent::{Incumbent, IncumbentHooks, Served};
pub use message::{Message, PROTOCOL_MAX, PROTOCOL_MIN, Role};
pub use session::{
    GenerationDecision, GenerationSession, SupervisorDecision, SupervisorEvent, SupervisorSession,
    Violation,
};
pub use successor::{Begun, Successor};

use crate::control::frame::FrameError;

/// Environment variable naming the channel fd of a generation.
pub const HANDOFF_FD_ENV: &str = "PORTHOLD_HANDOFF_FD";
/// Environment variable naming a generation's role (`incumbent` or `successor`).
pub const HANDOFF_ROLE_ENV: &str = "PORTHOLD_HANDOFF_ROLE";

/// Why a handoff step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoffError {
    /// The peer broke the protocol; the session was closed.
    #[error(transparent)]
    Violation(#[from] Violation),
    /// The channel is unusable (closed, truncated, garbage).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// No frame from the peer for four heartbeat intervals.
    #[error("no heartbeat from the peer for {} ms", session::heartbeat_timeout().as_millis())]
    HeartbeatLost,
    /// The attempt's deadline passed.
    #[error("the handoff deadline passed in state {state}")]
    DeadlineExpired {
        /// The state the attempt was in.
        state: &'static str,
    },
    /// A local step was asked for in a state where it is not legal.
    #[error("cannot {what} in state {state}")]
    NotNow {
        /// The step.
        what: &'static str,
        /// The state.
        state: &'static str,
    },
    /// The supervisor rolled the attempt back (successor side: it was told to stop).
    #[error("handoff rolled back: {reason}")]
    RolledBack {
        /// Why.
        reason: String,
    },
}

impl HandoffError {
    /// The crate-wide class of this error.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            HandoffError::Violation(_) | HandoffError::Frame(_) => crate::ErrorKind::Corrupt,
            HandoffError::HeartbeatLost
            | HandoffError::DeadlineExpired { .. }
            | HandoffError::RolledBack { .. } => crate::ErrorKind::RolledBack,
            HandoffError::NotNow { .. } => crate::ErrorKind::Busy,
        }
    }
}
