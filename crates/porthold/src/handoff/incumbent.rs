//! The incumbent's helper: the generation that serves and, when asked, hands
//! its state over.
//!
//! [`Incumbent::serve`] runs the protocol on the calling thread (start it on a
//! thread of its own beside the accept loop) and calls the server's
//! [`IncumbentHooks`] at each step. A heartbeat thread runs beside it.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::HandoffError;
use super::channel::{Channel, Heartbeater};
use super::data_dir_lock::DataDirLock;
use super::message::{Message, Role};
use super::session::{GenerationDecision, GenerationSession, GenerationState};
use crate::control::frame::FrameError;
use crate::error::{Error, Result};

/// What a server does at each step of a handoff.
pub trait IncumbentHooks {
    /// Stop accepting and finish in-flight work, within `deadline`; return how
    /// many connections are still open. Leave the listening socket open: the
    /// successor uses the same one.
    fn drain(&mut self, deadline: Duration) -> u64;

    /// Make the state durable (the helper releases the data-directory lock
    /// afterwards). `progress(done, total)` may be called along the way.
    ///
    /// # Errors
    /// A reason, sent to the supervisor as `SealFailed`; the lock stays held.
    fn seal(&mut self, progress: &mut dyn FnMut(u64, u64)) -> std::result::Result<(), String>;

    /// The attempt was rolled back: accept again. When `relocked`, the lock
    /// had been released and was re-acquired: re-read the state first (the
    /// successor may have run).
    fn resume(&mut self, relocked: bool);

    /// A session ended abnormally (a violation, a silent supervisor); the
    /// helper already rolled back and opens a new session. For logs.
    fn session_closed(&mut self, _error: &HandoffError) {}
}

/// How [`Incumbent::serve`] ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum Served {
    /// `Commit`: the successor serves; this generation should exit.
    Committed,
    /// The channel is gone (the supervisor died, or sent garbage that cannot be
    /// resynchronised). Any attempt in progress was rolled back; keep serving.
    ChannelClosed(HandoffError),
}

/// The incumbent side of a handoff channel.
#[derive(Debug)]
pub struct Incumbent {
    channel: Channel,
    machine: GenerationSession,
    lock: Option<DataDirLock>,
    dir: PathBuf,
    heartbeat: Option<Heartbeater>,
}

impl Incumbent {
    /// Opens a session on `stream` (sends `Hello`), holding `lock`.
    ///
    /// # Errors
    /// [`Error::Io`] when the channel cannot be configured, [`Error::Frame`]
    /// when `Hello` cannot be sent.
    pub fn new(stream: UnixStream, lock: DataDirLock, build_id: &str) -> Result<Incumbent> {
        let channel = Channel::new(stream)?;
        let machine = GenerationSession::new(
            Role::Incumbent,
            std::process::id(),
            build_id,
            Instant::now(),
        );
        Incumbent::start(channel, machine, lock)
    }

    /// The incumbent of `PORTHOLD_HANDOFF_FD`, or `None` without one (a plain server).
    ///
    /// # Errors
    /// As [`super::channel_from_env`] and [`Incumbent::new`].
    pub fn from_env(lock: DataDirLock, build_id: &str) -> Result<Option<Incumbent>> {
        match super::channel_from_env()? {
            Some(stream) => Incumbent::new(stream, lock, build_id).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn start(
        channel: Channel,
        machine: GenerationSession,
        lock: DataDirLock,
    ) -> Result<Incumbent> {
        channel.sender().set_session(None);
        channel.sender().send(&machine.hello())?;
        let heartbeat = Some(channel.sender().start_heartbeat());
        Ok(Incumbent {
            dir: lock.dir().to_path_buf(),
            channel,
            machine,
            lock: Some(lock),
            heartbeat,
        })
    }

    /// Whether this generation holds the data-directory lock now.
    pub fn holds_lock(&self) -> bool {
        self.lock.is_some()
    }

    /// The protocol state.
    pub fn state(&self) -> GenerationState {
        self.machine.state()
    }

    /// Runs the protocol until `Commit` or the end of the channel.
    ///
    /// # Errors
    /// [`Error::Io`] when the lock cannot be re-acquired during a rollback.
    pub fn serve<H: IncumbentHooks>(&mut self, hooks: &mut H) -> Result<Served> {
        loop {
            let decision = match self.channel.recv_tick() {
                Ok(frame) => self.machine.on_frame(&frame, Instant::now()),
                Err(FrameError::TimedOut) => match self.machine.check_time(Instant::now()) {
                    Ok(()) => continue,
                    Err(lost) => {
                        hooks.session_closed(&lost);
                        self.machine.lost()
                    }
                },
                Err(broken) => return self.channel_gone(hooks, broken),
            };
            match self.act(decision, hooks)? {
                Ok(Some(served)) => return Ok(served),
                Ok(None) => {}
                Err(broken) => return self.channel_gone(hooks, broken),
            }
        }
    }

    /// Executes one decision. The outer `Result` is a local failure, the
    /// inner `Err` a channel that broke while sending.
    #[allow(clippy::type_complexity)]
    fn act<H: IncumbentHooks>(
        &mut self,
        decision: GenerationDecision,
        hooks: &mut H,
    ) -> Result<std::result::Result<Option<Served>, FrameError>> {
        let sender = self.channel.sender().clone();
        let sent = match decision {
            GenerationDecision::Nothing => Ok(()),
            GenerationDecision::Opened => {
                sender.set_session(self.machine.session().cloned());
                Ok(())
            }
            GenerationDecision::Drain { deadline } => {
                let open = hooks.drain(deadline);
                let msg = self.machine.drained(open)?;
                sender.send(&msg)
            }
            GenerationDecision::Seal => {
                let machine = &mut self.machine;
                let mut progress_error = None;
                let outcome = hooks.seal(&mut |done, total| {
                    if progress_error.is_some() {
                        return;
                    }
                    let sent = machine
                        .seal_progress(done, total)
                        .map_err(Error::from)
                        .and_then(|msg| sender.send(&msg).map_err(Error::from));
                    if let Err(e) = sent {
                        progress_error = Some(e);
                    }
                });
                if let Some(broken) = progress_error {
                    // The channel broke while sealing: keep the lock (the
                    // session is lost; the caller rolls back and serves on).
                    return match broken {
                        Error::Frame(e) => Ok(Err(e)),
                        other => Err(other),
                    };
                }
                match outcome {
                    Ok(()) => {
                        // Durable: release the lock before saying so.
                        self.lock = None;
                        let msg = self.machine.sealed()?;
                        sender.send(&msg)
                    }
                    Err(reason) => {
                        let msg = self.machine.seal_failed(&reason)?;
                        sender.send(&msg)
                    }
                }
            }
            GenerationDecision::Exit => {
                sender.set_session(None);
                self.heartbeat = None;
                return Ok(Ok(Some(Served::Committed)));
            }
            GenerationDecision::Rollback {
                relock,
                was_paused,
                violation,
                hello,
            } => {
                sender.set_session(None);
                if let Some(violation) = violation {
                    hooks.session_closed(&HandoffError::Violation(violation));
                }
                self.roll_back(hooks, relock, was_paused)?;
                sender.send(&hello)
            }
            GenerationDecision::Start { .. } | GenerationDecision::Fail(_) => {
                return Err(HandoffError::NotNow {
                    what: "start as a successor",
                    state: "incumbent",
                }
                .into());
            }
        };
        Ok(sent.map(|()| None))
    }

    fn roll_back<H: IncumbentHooks>(
        &mut self,
        hooks: &mut H,
        relock: bool,
        was_paused: bool,
    ) -> Result<()> {
        if relock || self.lock.is_none() {
            // The supervisor kills the successor before it sends Resume; should
            // a successor still hold the lock, waiting here (in the kernel) is
            // what keeps two writers off the state.
            self.lock = Some(DataDirLock::acquire_blocking(&self.dir)?);
        }
        if was_paused {
            hooks.resume(relock);
        }
        Ok(())
    }

    fn channel_gone<H: IncumbentHooks>(
        &mut self,
        hooks: &mut H,
        broken: FrameError,
    ) -> Result<Served> {
        self.channel.sender().set_session(None);
        self.heartbeat = None;
        if let GenerationDecision::Rollback {
            relock, was_paused, ..
        } = self.machine.lost()
        {
            self.roll_back(hooks, relock, was_paused)?;
        }
        Ok(Served::ChannelClosed(HandoffError::Frame(broken)))
    }
}

impl Drop for Incumbent {
    fn drop(&mut self) {
        self.heartbeat = None;
    }
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Incumbent>();
    is_send::<Message>();
}
