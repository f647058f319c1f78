//! One generation's channel to its supervisor: frames in, frames out, and a
//! heartbeat thread.
//!
//! Two threads write to a channel (the session and the heartbeat), so every
//! frame goes out under a mutex in one `send(MSG_NOSIGNAL)` loop: frames never
//! interleave and a vanished peer is an error, never a `SIGPIPE`.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::io::{FdFlags, fcntl_getfd, fcntl_setfd};

use super::message::{Message, Role};
use super::session::{HEARTBEAT_INTERVAL, SessionId, out_frame};
use super::{HANDOFF_FD_ENV, HANDOFF_ROLE_ENV};
use crate::control::frame::{Frame, FrameError, FrameReader, send_frame};
use crate::error::{Error, Result};
use crate::sync::lock;

/// A writer of an open session's frames, shareable between threads.
#[derive(Debug, Clone)]
pub struct ChannelSender {
    inner: Arc<SenderInner>,
}

#[derive(Debug)]
struct SenderInner {
    stream: UnixStream,
    /// The session frames are written for; the heartbeat thread sends only while one is open.
    session: Mutex<Option<SessionId>>,
    /// Held while a frame is written, so frames never interleave.
    write: Mutex<()>,
}

impl ChannelSender {
    /// Sends `msg` in the open session (version and id), or without id and at
    /// the newest version before a session exists (`Hello`).
    ///
    /// # Errors
    /// [`FrameError`] when the peer is gone or stops reading.
    pub fn send(&self, msg: &Message) -> Result<(), FrameError> {
        let session = lock(&self.inner.session).clone();
        self.send_in(session.as_ref(), msg)
    }

    /// Sends `msg` in `session` (or with no id and the newest version).
    ///
    /// # Errors
    /// [`FrameError`] when the peer is gone or stops reading.
    pub fn send_in(&self, session: Option<&SessionId>, msg: &Message) -> Result<(), FrameError> {
        self.send_frame(&out_frame(session, msg))
    }

    /// Sends a frame as it is (the supervisor's decisions come as frames).
    ///
    /// # Errors
    /// [`FrameError`] when the peer is gone or stops reading.
    pub fn send_frame(&self, frame: &Frame) -> Result<(), FrameError> {
        let _guard = lock(&self.inner.write);
        send_frame(&self.inner.stream, frame)
    }

    /// Sets the session that [`send`](Self::send) and heartbeats write for.
    pub fn set_session(&self, session: Option<SessionId>) {
        *lock(&self.inner.session) = session;
    }

    /// Starts a thread that sends a `Heartbeat` every [`HEARTBEAT_INTERVAL`]
    /// while a session is set; it stops when the returned handle is dropped.
    pub fn start_heartbeat(&self) -> Heartbeater {
        let (stop, stopped) = mpsc::channel::<()>();
        let sender = self.clone();
        let thread = std::thread::spawn(move || {
            let mut seq = 0u64;
            // The timeout is the heartbeat period; the channel only signals "stop".
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT_INTERVAL) {
                let session = lock(&sender.inner.session).clone();
                if let Some(session) = session {
                    seq += 1;
                    if sender
                        .send_in(Some(&session), &Message::Heartbeat { seq })
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        Heartbeater {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

/// A running heartbeat thread; dropping it stops and joins the thread.
#[derive(Debug)]
pub struct Heartbeater {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Heartbeater {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A channel: a reader plus a [`ChannelSender`].
#[derive(Debug)]
pub struct Channel {
    reader: FrameReader<UnixStream>,
    sender: ChannelSender,
}

impl Channel {
    /// Wraps a connected stream socket (one end of a `socketpair`).
    ///
    /// # Errors
    /// [`Error::Io`] when the socket cannot be duplicated or configured.
    pub fn new(stream: UnixStream) -> Result<Channel> {
        // try_clone duplicates with F_DUPFD_CLOEXEC.
        let reader = stream
            .try_clone()
            .map_err(|e| Error::io("duplicating the handoff channel", e))?;
        // A peer that stops reading must not block a writer forever.
        stream
            .set_write_timeout(Some(HEARTBEAT_INTERVAL * 4))
            .map_err(|e| Error::io("configuring the handoff channel", e))?;
        Ok(Channel {
            reader: FrameReader::new(reader),
            sender: ChannelSender {
                inner: Arc::new(SenderInner {
                    stream,
                    session: Mutex::new(None),
                    write: Mutex::new(()),
                }),
            },
        })
    }

    /// The sending half.
    pub fn sender(&self) -> &ChannelSender {
        &self.sender
    }

    /// The socket, e.g. to poll it.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.reader.get_ref().as_fd()
    }

    /// Waits for a frame until `until` (or at most one heartbeat interval, so
    /// callers get to check their clocks).
    ///
    /// # Errors
    /// [`FrameError::TimedOut`] when nothing complete arrived in time; the
    /// other [`FrameError`]s mean the channel is unusable.
    pub fn recv_until(&mut self, until: Instant) -> Result<Frame, FrameError> {
        let left = until
            .saturating_duration_since(Instant::now())
            .min(HEARTBEAT_INTERVAL)
            .max(Duration::from_millis(1));
        self.reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(FrameError::Io)?;
        self.reader.read_frame()
    }

    /// Waits for a frame for at most one heartbeat interval.
    ///
    /// # Errors
    /// As [`recv_until`](Self::recv_until).
    pub fn recv_tick(&mut self) -> Result<Frame, FrameError> {
        self.recv_until(Instant::now() + HEARTBEAT_INTERVAL)
    }
}

/// A new channel for one generation: a connected `socketpair(AF_UNIX,
/// SOCK_STREAM | SOCK_CLOEXEC)`. The supervisor keeps the first end and passes
/// the second to the generation (the spawn code clears close-on-exec only on
/// the copy it places for the child), so a process spawned concurrently never
/// inherits either end and cannot hide the channel's end of stream.
///
/// # Errors
/// [`Error::Io`] when the socketpair cannot be created.
pub fn channel_pair() -> Result<(UnixStream, UnixStream)> {
    // std creates the pair with SOCK_CLOEXEC atomically.
    UnixStream::pair().map_err(|e| Error::io("creating a handoff channel", e))
}

static CHANNEL_TAKEN: AtomicBool = AtomicBool::new(false);

/// The role porthold gave this generation (`PORTHOLD_HANDOFF_ROLE`), if any.
///
/// # Errors
/// [`Error::Invalid`] for a value other than `incumbent` or `successor`.
pub fn role_from_env() -> Result<Option<Role>> {
    let value = std::env::var(HANDOFF_ROLE_ENV).unwrap_or_default();
    if value.is_empty() {
        return Ok(None);
    }
    [Role::Incumbent, Role::Successor]
        .into_iter()
        .find(|r| r.as_str() == value)
        .map(Some)
        .ok_or_else(|| {
            Error::invalid(
                format!("{HANDOFF_ROLE_ENV}={value} is neither `incumbent` nor `successor`"),
                None,
            )
        })
}

/// Takes the channel named by `PORTHOLD_HANDOFF_FD`: `Ok(None)` when the
/// variable is unset (no supervisor speaks the handoff protocol: run as a
/// plain server). The fd gets `FD_CLOEXEC`; only the first call takes it.
///
/// # Errors
/// [`Error::Invalid`] when the value is no fd number ≥ 3, the fd is not open,
/// or it is not a stream socket; [`Error::Io`] when its flags cannot be set.
pub fn channel_from_env() -> Result<Option<UnixStream>> {
    let Some(value) = std::env::var_os(HANDOFF_FD_ENV) else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    let fd: i32 = match text.parse() {
        Ok(fd) if fd >= 3 => fd,
        _ => {
            return Err(Error::invalid(
                format!("{HANDOFF_FD_ENV}={text} is not a file descriptor number of 3 or more"),
                None,
            ));
        }
    };
    // SAFETY: the borrow lives only for these two checks; a closed fd makes
    // fcntl fail with EBADF, which is what the first one tests for.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let is_stream_socket = fcntl_getfd(borrowed).is_ok()
        && rustix::net::sockopt::socket_type(borrowed) == Ok(rustix::net::SocketType::STREAM);
    if !is_stream_socket {
        return Err(Error::invalid(
            format!("{HANDOFF_FD_ENV}={fd} is not an open stream socket"),
            Some("the supervisor did not pass the handoff channel it announced".into()),
        ));
    }
    if CHANNEL_TAKEN.swap(true, Ordering::AcqRel) {
        return Err(Error::invalid(
            format!("the handoff channel (fd {fd}) was already taken"),
            None,
        ));
    }
    // SAFETY: the supervisor passed this fd to us for the channel and nothing
    // in this process owns it yet; CHANNEL_TAKEN (set above, never cleared)
    // makes this the only place that ever takes it, and it is open (checked).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let flags = fcntl_getfd(&owned)
        .map_err(|e| Error::io(format!("reading flags of fd {fd}"), e.into()))?;
    fcntl_setfd(&owned, flags | FdFlags::CLOEXEC)
        .map_err(|e| Error::io(format!("setting close-on-exec on fd {fd}"), e.into()))?;
    Ok(Some(UnixStream::from(owned)))
}
