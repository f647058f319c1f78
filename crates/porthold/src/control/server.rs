//! The control socket server: `<runtime-dir>/<name>.sock`.
//!
//! [`ControlServer::bind`] creates the socket so that nobody ever sees it with
//! a mode other than 0600: the socket's own inode is set to 0600 *before*
//! `bind(2)` (Linux creates the file with the socket inode's mode, minus the
//! umask), it is bound under a temporary name in the same directory, set to
//! exactly 0600 (in case the umask took bits away), and only then renamed to
//! its public name. A peer can therefore only ever connect to a 0600 socket.
//! Dropping the server removes the socket it created (and only that one: a
//! successor's socket at the same path is left alone).
//!
//! [`ControlServer::serve`] accepts connections until a [`ShutdownHandle`]
//! fires; an embedder with a poll loop of its own polls
//! [`ControlServer::as_fd`] instead and calls
//! [`ControlServer::accept_pending`] when it is readable (the instance's
//! serving loop does: no thread waits for connections). Each connection is a *session*: its peer's uid (`SO_PEERCRED`) must
//! be the server's effective uid, then it sends request frames and gets one
//! reply each, in order, from the embedder's [`Handler`]. A session that breaks
//! the protocol — a frame over the cap, a truncated frame, a body that is not
//! JSON, another protocol version, an unknown or out-of-order message, a
//! request id used twice — gets a best-effort
//! [`Response::ProtocolError`] and is closed; the serve loop goes on. A
//! session is bounded: each frame must arrive completely within the session
//! timeout (a peer that trickles bytes does not reset it), and at most
//! [`MAX_SESSIONS`] sessions run at once, each on its own thread, so a slow
//! handler (a reload) does not keep a second client from hearing "in progress".

use std::collections::HashSet;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::fs::Mode;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::frame::{Frame, FrameDecoder, FrameError, send_frame};
use super::request::{CONTROL_VERSION, Request, Response};
use crate::error::{Error, Result};

/// The longest path a Unix socket address holds: `sun_path` is 108 bytes,
/// one of which is the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// How many sessions may run at once; a connection beyond that is closed at once.
pub const MAX_SESSIONS: usize = 8;

/// The default bound on the wait for each request frame.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(5);

/// What the embedder does with a request. Called from session threads, so it
/// may run concurrently with itself (one call per session at a time).
pub trait Handler: Sync {
    /// The reply to `request`.
    fn handle(&self, request: Request) -> Response;
}

impl<F: Fn(Request) -> Response + Sync> Handler for F {
    fn handle(&self, request: Request) -> Response {
        self(request)
    }
}

/// Counters of what the server has seen, for status views and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted.
    pub sessions: u64,
    /// Sessions closed because the peer's uid is not the server's euid.
    pub refused_peers: u64,
    /// Sessions closed for a protocol violation.
    pub protocol_errors: u64,
    /// Sessions closed because a frame did not arrive in time.
    pub timed_out: u64,
    /// Connections closed unserved because [`MAX_SESSIONS`] were running.
    pub over_capacity: u64,
    /// Requests handed to the handler.
    pub requests: u64,
}

#[derive(Debug, Default)]
struct Counters {
    /// Sessions running now (at most [`MAX_SESSIONS`]).
    active: AtomicUsize,
    sessions: AtomicU64,
    refused_peers: AtomicU64,
    protocol_errors: AtomicU64,
    timed_out: AtomicU64,
    over_capacity: AtomicU64,
    requests: AtomicU64,
}

/// Stops a running [`ControlServer::serve`] from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    wake: Arc<OwnedFd>,
}

impl ShutdownHandle {
    /// Makes `serve` return once its running sessions have ended.
    pub fn shutdown(&self) {
        // The pipe is non-blocking: a full pipe already holds a wake-up.
        let _ = rustix::io::write(&*self.wake, &[1]);
    }
}

/// A bound control socket.
#[derive(Debug)]
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    /// (st_dev, st_ino) of the socket file we created, so drop removes only it.
    identity: (u64, u64),
    euid: u32,
    session_timeout: Duration,
    wake_read: OwnedFd,
    wake_write: Arc<OwnedFd>,
    counters: Arc<Counters>,
}

/// Checks that `path` fits in a Unix socket address.
///
/// # Errors
/// [`Error::SocketPathTooLong`] naming the path and its length.
pub fn check_socket_path(path: &Path) -> Result<()> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(Error::SocketPathTooLong {
            path: path.to_owned(),
            len,
            max: MAX_SOCKET_PATH,
        });
    }
    Ok(())
}

/// The bind-to-temp-then-rename sequence is safe only where nobody else can
/// add, replace or remove names: a directory of ours that group and others
/// cannot touch (what `discovery::ensure_runtime_dir` creates).
fn check_private_dir(dir: &Path) -> Result<()> {
    let stat = rustix::fs::lstat(dir).map_err(|e| {
        Error::io(
            format!("inspecting runtime directory {}", dir.display()),
            e.into(),
        )
    })?;
    let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    let why = if kind != rustix::fs::FileType::Directory {
        "is not a directory (or is a symbolic link)"
    } else if stat.st_uid != rustix::process::geteuid().as_raw() {
        "is owned by another user"
    } else if stat.st_mode & 0o077 != 0 {
        "is accessible to group or others"
    } else {
        return Ok(());
    };
    Err(Error::invalid(
        format!(
            "runtime directory `{}` {why}; refusing to create a control socket in it",
            dir.display()
        ),
        Some("use a private runtime directory (mode 0700, owned by you)".into()),
    ))
}

/// Characters for temporary names; a name taken (a stale temp) moves to the next.
const TEMP_SUFFIXES: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

impl ControlServer {
    /// Creates and listens on `<runtime_dir>/<name>.sock` (mode 0600 from
    /// its first appearance), replacing a stale socket of that name: the
    /// caller holds the instance's name lock.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a name that is not a plain file name or a
    /// runtime directory that is not private (ours, mode 0700 or stricter),
    /// [`Error::SocketPathTooLong`] when the path does not fit in `sun_path`,
    /// [`Error::Io`] when creating, binding or renaming fails.
    pub fn bind(runtime_dir: &Path, name: &str) -> Result<ControlServer> {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\0']) {
            return Err(Error::invalid(
                format!(
                    "`{name}` is not usable as a control socket name (empty, leading dot, `/` or NUL)"
                ),
                None,
            ));
        }
        check_private_dir(runtime_dir)?;
        let path = runtime_dir.join(format!("{name}.sock"));
        // The temporary name `.<name>.<c>` is two bytes shorter than
        // `<name>.sock`, so checking the public path covers both.
        check_socket_path(&path)?;

        let (wake_read, wake_write) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .map_err(|e| Error::io("creating the control server's wake-up pipe", e.into()))?;
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| Error::io("creating the control socket", e.into()))?;
        // Linux gives the file that bind(2) creates the socket inode's mode
        // (minus the umask): 0600 here means the temporary name is never
        // more open than 0600 either.
        rustix::fs::fchmod(&socket, Mode::from_raw_mode(0o600))
            .map_err(|e| Error::io("setting the control socket's mode", e.into()))?;

        let mut temp = None;
        for &c in TEMP_SUFFIXES {
            let candidate = runtime_dir.join(format!(".{name}.{}", c as char));
            let addr = SocketAddrUnix::new(candidate.as_path()).map_err(|e| {
                Error::io(format!("socket address {}", candidate.display()), e.into())
            })?;
            match rustix::net::bind(&socket, &addr) {
                Ok(()) => {
                    temp = Some(candidate);
                    break;
                }
                Err(rustix::io::Errno::ADDRINUSE) => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("binding the control socket at {}", candidate.display()),
                        e.into(),
                    ));
                }
            }
        }
        let Some(temp) = temp else {
            return Err(Error::io(
                format!(
                    "binding the control socket in {}: every temporary name `.{name}.?` is taken",
                    runtime_dir.display()
                ),
                io::Error::from(io::ErrorKind::AddrInUse),
            ));
        };
        let finish = || -> Result<(u64, u64)> {
            let stat = rustix::fs::lstat(&temp)
                .map_err(|e| Error::io(format!("stat {}", temp.display()), e.into()))?;
            // Exactly 0600 even if the umask removed bits from the owner's
            // (only then: a chmod is a journalled metadata write on ext4).
            if stat.st_mode & 0o7777 != 0o600 {
                rustix::fs::chmod(&temp, Mode::from_raw_mode(0o600))
                    .map_err(|e| Error::io(format!("chmod {}", temp.display()), e.into()))?;
            }
            rustix::net::listen(&socket, 64)
                .map_err(|e| Error::io("listening on the control socket", e.into()))?;
            rustix::fs::rename(&temp, &path).map_err(|e| {
                Error::io(
                    format!("renaming {} to {}", temp.display(), path.display()),
                    e.into(),
                )
            })?;
            Ok((stat.st_dev, stat.st_ino))
        };
        let identity = match finish() {
            Ok(identity) => identity,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        let listener = UnixListener::from(socket);
        let server = ControlServer {
            listener,
            path,
            identity,
            euid: rustix::process::geteuid().as_raw(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            wake_read,
            wake_write: Arc::new(wake_write),
            counters: Arc::default(),
        };
        server
            .listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the control socket non-blocking", e))?;
        Ok(server)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bounds the wait for each request frame (default [`DEFAULT_SESSION_TIMEOUT`]).
    pub fn set_session_timeout(&mut self, timeout: Duration) {
        self.session_timeout = timeout.max(Duration::from_millis(1));
    }

    /// A handle that stops [`serve`](Self::serve).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            wake: Arc::clone(&self.wake_write),
        }
    }

    /// What the server has seen so far.
    pub fn stats(&self) -> ServerStats {
        let c = &self.counters;
        ServerStats {
            sessions: c.sessions.load(Ordering::Relaxed),
            refused_peers: c.refused_peers.load(Ordering::Relaxed),
            protocol_errors: c.protocol_errors.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            over_capacity: c.over_capacity.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
        }
    }

    /// Serves sessions until the shutdown handle fires; returns after the
    /// running sessions ended. A broken session never ends the loop.
    ///
    /// # Errors
    /// [`Error::Io`] when polling or accepting fails for a reason that would
    /// repeat (e.g. the fd limit is reached: waiting for it would spin).
    pub fn serve<H: Handler + ?Sized>(&self, handler: &H) -> Result<()> {
        std::thread::scope(|scope| {
            loop {
                let mut fds = [
                    PollFd::new(&self.listener, PollFlags::IN),
                    PollFd::new(&self.wake_read, PollFlags::IN),
                ];
                match rustix::event::poll(&mut fds, None) {
                    Ok(_) => {}
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(Error::io("polling the control socket", e.into())),
                }
                if !fds[1].revents().is_empty() {
                    return Ok(());
                }
                while let Some(stream) = self.next_admitted()? {
                    let spawned = std::thread::Builder::new()
                        .name("porthold-control".into())
                        .spawn_scoped(scope, move || {
                            self.session(stream, handler);
                            self.session_ended();
                        });
                    if spawned.is_err() {
                        self.session_not_started();
                    }
                }
            }
        })
    }

    /// The listening socket, readable while a connection waits to be accepted.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.listener.as_fd()
    }

    /// Accepts every connection waiting now (never blocks) and serves each
    /// session on a thread of its own, as [`serve`](Self::serve) does, at
    /// most [`MAX_SESSIONS`] at once; for a caller that polls
    /// [`as_fd`](Self::as_fd) in its own loop.
    ///
    /// # Errors
    /// [`Error::Io`] when accepting fails for a reason that would repeat.
    pub fn accept_pending(self: &Arc<Self>, handler: &Arc<dyn Handler + Send>) -> Result<()> {
        while let Some(stream) = self.next_admitted()? {
            let (server, handler) = (Arc::clone(self), Arc::clone(handler));
            let spawned = std::thread::Builder::new()
                .name("porthold-control".into())
                .spawn(move || {
                    server.session(stream, &*handler);
                    server.session_ended();
                });
            if spawned.is_err() {
                self.session_not_started();
            }
        }
        Ok(())
    }

    /// The next connection waiting on the (non-blocking) socket that may
    /// start a session, counted as active; `None` when none waits. A
    /// connection beyond [`MAX_SESSIONS`] running is closed at once.
    fn next_admitted(&self) -> Result<Option<UnixStream>> {
        let counters = &self.counters;
        loop {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(Error::io("accepting on the control socket", e)),
            };
            counters.sessions.fetch_add(1, Ordering::Relaxed);
            let admitted = counters
                .active
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < MAX_SESSIONS).then_some(n + 1)
                })
                .is_ok();
            if admitted {
                return Ok(Some(stream));
            }
            counters.over_capacity.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn session_ended(&self) {
        self.counters.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// A session whose thread could not start: the stream went with the
    /// closure (the connection is closed), and it counts as over capacity.
    fn session_not_started(&self) {
        self.session_ended();
        self.counters.over_capacity.fetch_add(1, Ordering::Relaxed);
    }

    fn session<H: Handler + ?Sized>(&self, stream: UnixStream, handler: &H) {
        let counters = &self.counters;
        match rustix::net::sockopt::socket_peercred(&stream) {
            Ok(cred) if cred.uid.as_raw() == self.euid => {}
            _ => {
                counters.refused_peers.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // Accepted sockets do not inherit O_NONBLOCK on Linux; make sure.
        if stream.set_nonblocking(false).is_err()
            || stream
                .set_write_timeout(Some(self.session_timeout))
                .is_err()
        {
            return;
        }
        let mut decoder = FrameDecoder::new();
        let mut seen = HashSet::new();
        loop {
            let deadline = Instant::now() + self.session_timeout;
            let frame = match read_frame_until(&stream, &mut decoder, deadline) {
                Ok(frame) => frame,
                Err(FrameError::Closed) => return,
                Err(FrameError::TimedOut) => {
                    counters.timed_out.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(FrameError::Io(_)) => return,
                Err(e) => {
                    self.protocol_error(&stream, None, &e.to_string());
                    return;
                }
            };
            let (id, request) = match Request::from_frame(&frame) {
                Ok(parsed) => parsed,
                Err(e) => {
                    self.protocol_error(&stream, frame.id.as_deref(), &e.to_string());
                    return;
                }
            };
            if !seen.insert(id.clone()) {
                self.protocol_error(
                    &stream,
                    Some(&id),
                    &format!("request id `{id}` was already used in this session"),
                );
                return;
            }
            counters.requests.fetch_add(1, Ordering::Relaxed);
            // A panicking handler ends this session, not the serve loop (a
            // panicked scoped thread would make `serve` panic at shutdown).
            let Ok(response) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(request)))
            else {
                return;
            };
            let sent = match response.to_frame(&id).and_then(|f| f.encode().map(|_| f)) {
                Ok(frame) => send_frame(&stream, &frame),
                Err(e) => {
                    self.protocol_error(
                        &stream,
                        Some(&id),
                        &format!("the reply cannot be sent: {e}"),
                    );
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    }

    fn protocol_error(&self, stream: &UnixStream, id: Option<&str>, reason: &str) {
        self.counters
            .protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        let reply = Response::ProtocolError {
            reason: reason.to_owned(),
        };
        if let Ok(frame) = Frame::new(CONTROL_VERSION, id, &reply) {
            let _ = send_frame(stream, &frame);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        // Remove the socket only if the path still names the one we created.
        if let Ok(stat) = rustix::fs::lstat(&self.path)
            && (stat.st_dev, stat.st_ino) == self.identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Reads one whole frame, which must complete before `deadline` however the
/// peer paces its bytes.
pub(crate) fn read_frame_until(
    stream: &UnixStream,
    decoder: &mut FrameDecoder,
    deadline: Instant,
) -> std::result::Result<Frame, FrameError> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(FrameError::TimedOut);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(FrameError::Io)?;
        decoder.read_once(stream, &mut chunk)?;
    }
}
