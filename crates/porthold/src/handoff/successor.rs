//! The successor's helper: a generation started to take the state over.
//!
//! ```no_run
//! use porthold::handoff::{DataDirLock, Successor};
//! # fn main() -> porthold::Result<()> {
//! let sockets = porthold::activation::listeners()?; // the same sockets the incumbent serves
//! let successor = Successor::from_env("myserver 1.2")?.expect("started by porthold --handoff");
//! let begun = successor.wait_begin()?;            // the incumbent has sealed
//! let lock = DataDirLock::acquire("/var/lib/myserver".as_ref())?;
//! // ... open the state, start accepting on `sockets` ...
//! let mut incumbent = begun.ready(lock)?;         // from now on, this is the incumbent
//! # let _ = (sockets, &mut incumbent);
//! # Ok(())
//! # }
//! ```

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::HandoffError;
use super::channel::{Channel, Heartbeater};
use super::data_dir_lock::DataDirLock;
use super::incumbent::Incumbent;
use super::message::Role;
use super::session::{GenerationDecision, GenerationSession};
use crate::control::frame::FrameError;
use crate::error::Result;

/// A successor waiting for `Begin`.
#[derive(Debug)]
pub struct Successor {
    channel: Channel,
    machine: GenerationSession,
    heartbeat: Heartbeater,
}

/// A successor that received `Begin`: acquire the lock, open the state, then
/// call [`ready`](Self::ready) within [`deadline`](Self::deadline).
#[derive(Debug)]
pub struct Begun {
    channel: Channel,
    machine: GenerationSession,
    heartbeat: Heartbeater,
    deadline: Duration,
}

impl Successor {
    /// Opens a session on `stream` (sends `Hello` as successor).
    ///
    /// # Errors
    /// [`crate::Error::Io`], [`crate::Error::Frame`].
    pub fn new(stream: UnixStream, build_id: &str) -> Result<Successor> {
        let channel = Channel::new(stream)?;
        let machine = GenerationSession::new(
            Role::Successor,
            std::process::id(),
            build_id,
            Instant::now(),
        );
        channel.sender().send(&machine.hello())?;
        let heartbeat = channel.sender().start_heartbeat();
        Ok(Successor {
            channel,
            machine,
            heartbeat,
        })
    }

    /// The successor of `PORTHOLD_HANDOFF_FD`, or `None` without one.
    ///
    /// # Errors
    /// As [`super::channel_from_env`] and [`Successor::new`].
    pub fn from_env(build_id: &str) -> Result<Option<Successor>> {
        match super::channel_from_env()? {
            Some(stream) => Successor::new(stream, build_id).map(Some),
            None => Ok(None),
        }
    }

    /// Waits for `HelloAck` and then `Begin`.
    ///
    /// # Errors
    /// [`HandoffError::Violation`] when the supervisor broke the protocol,
    /// [`HandoffError::HeartbeatLost`], [`HandoffError::Frame`] when the channel
    /// ended. In every case the successor must exit without touching the state.
    pub fn wait_begin(mut self) -> Result<Begun> {
        loop {
            let decision = match self.channel.recv_tick() {
                Ok(frame) => self.machine.on_frame(&frame, Instant::now()),
                Err(FrameError::TimedOut) => {
                    self.machine.check_time(Instant::now())?;
                    continue;
                }
                Err(e) => return Err(HandoffError::Frame(e).into()),
            };
            match decision {
                GenerationDecision::Nothing => {}
                GenerationDecision::Opened => {
                    self.channel
                        .sender()
                        .set_session(self.machine.session().cloned());
                }
                GenerationDecision::Start { deadline } => {
                    return Ok(Begun {
                        channel: self.channel,
                        machine: self.machine,
                        heartbeat: self.heartbeat,
                        deadline,
                    });
                }
                GenerationDecision::Fail(violation) => {
                    return Err(HandoffError::Violation(violation).into());
                }
                _ => {
                    return Err(HandoffError::NotNow {
                        what: "act as an incumbent",
                        state: "successor",
                    }
                    .into());
                }
            }
        }
    }
}

impl Begun {
    /// The time the supervisor gave to become ready, counted from `Begin`.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Sends `Ready` (the successor holds `lock` and serves) and becomes the
    /// incumbent: it opens its next session as one.
    ///
    /// # Errors
    /// [`crate::Error::Frame`] when the channel broke.
    pub fn ready(mut self, lock: DataDirLock) -> Result<Incumbent> {
        let msg = self.machine.ready()?;
        self.channel.sender().send(&msg)?;
        self.machine.become_incumbent();
        drop(self.heartbeat);
        Incumbent::start(self.channel, self.machine, lock)
    }
}
