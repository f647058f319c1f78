//! Start a real server on pre-bound sockets inside a test (feature `testing`).
//!
//! [`TestServer`] binds its sockets *before* the server starts and hands them
//! over at fds 3.. (`LISTEN_FDS`, as systemd does), so no other process can
//! take the port between "pick a free port" and "the server binds it", and
//! clients may connect as soon as [`TestServerBuilder::start`] returns: the
//! kernel queues them until the server accepts. The server receives its
//! sockets with [`crate::activation::listeners`] (or any systemd-compatible
//! library).
//!
//! Each `TestServer` is independent: it waits for its own child only (never
//! `waitpid(-1)`), stops only its own process group and the descendants of its
//! own child, installs no signal handler and does not make the test binary a
//! subreaper, so the test's own children and its other servers are never
//! touched. Its child is forked from a spawner thread that lives as long as
//! the `TestServer`, so a server started in a thread that then exits keeps
//! running until the `TestServer` is dropped.
//!
//! ```no_run
//! # fn main() -> Result<(), porthold::Error> {
//! use porthold::testing::TestServer;
//! let server = TestServer::builder("python3")
//!     .args(["-c", "import socket; s = socket.socket(fileno=3); c, _ = s.accept(); c.sendall(b'hi')"])
//!     .start()?;
//! let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
//! let mut answer = String::new();
//! std::io::Read::read_to_string(&mut conn, &mut answer).unwrap();
//! assert_eq!(answer, "hi");
//! let status = server.stop()?; // Err if the server exited on its own before
//! # let _ = status;
//! # Ok(())
//! # }
//! ```

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::activation::notify::{self, NotifyAccess, NotifyServer};
use crate::error::{Error, Result};
use crate::net::listen::{self, BoundSocket, ListenSpec};
use crate::supervisor::generation::{Generation, GenerationSpec, Spawner};
use crate::supervisor::launch::LaunchError;
use crate::supervisor::lifecycle::CancelToken;
use crate::supervisor::ready::{self, ProbeOptions, ReadyMode, ReadyOutcome};

/// How long a stopping server may take after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The default readiness timeout.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Configures and starts a [`TestServer`]; see [`TestServer::builder`].
#[derive(Debug)]
pub struct TestServerBuilder {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    listen: Vec<(String, String)>,
    ready: ReadyMode,
    ready_timeout: Duration,
}

/// A server started for a test, on sockets bound before it started.
///
/// Dropping it stops the server's whole process group (and its own
/// descendants) and reaps it.
#[derive(Debug)]
pub struct TestServer {
    // Field order is drop order: the generation (the child) goes first, while
    // the spawner thread (its parent-death signal) still lives.
    generation: Generation,
    _spawner: Spawner,
    sockets: Vec<BoundSocket>,
    _notify: Option<NotifyFile>,
}

#[derive(Debug)]
struct NotifyFile(NotifyServer);

impl Drop for NotifyFile {
    fn drop(&mut self) {
        self.0.remove_file();
    }
}

impl TestServer {
    /// A builder for `program` (resolved through `PATH` unless it contains `/`).
    pub fn builder(program: impl Into<OsString>) -> TestServerBuilder {
        TestServerBuilder {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
            listen: Vec::new(),
            ready: ReadyMode::Listen,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }

    /// The address of the first IP socket (`default` unless renamed).
    ///
    /// # Panics
    /// When the server has no IP socket (only Unix sockets).
    pub fn addr(&self) -> SocketAddr {
        self.sockets
            .iter()
            .find_map(|s| s.local_addr)
            .map(ready::probe_address)
            .expect("the TestServer has no IP socket")
    }

    /// The port of [`addr`](Self::addr).
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// `http://127.0.0.1:PORT` for [`addr`](Self::addr) (IPv6 in brackets).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The server's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.generation.pid()
    }

    /// The address of the socket named `name`, `None` for an unknown name or a Unix socket.
    pub fn addr_of(&self, name: &str) -> Option<SocketAddr> {
        self.sockets
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.local_addr)
            .map(ready::probe_address)
    }

    /// Everything the server wrote to stdout so far (up to 1 MiB, the latest).
    pub fn stdout(&self) -> String {
        self.generation.stdout().text()
    }

    /// Everything the server wrote to stderr so far (up to 1 MiB, the latest).
    pub fn stderr(&self) -> String {
        self.generation.stderr().text()
    }

    /// Stops the server (SIGTERM to its process group, SIGKILL after 5 s) and
    /// returns its exit status.
    ///
    /// # Errors
    /// [`LaunchError::ExitedUnexpectedly`] (inside [`Error::Start`]) when the
    /// server had already exited before `stop` was called: an exit the test
    /// did not ask for, with its status and stderr tail.
    pub fn stop(self) -> Result<ExitStatus> {
        if let Some(status) = self.generation.try_wait() {
            // Still end whatever of its tree is left.
            self.generation.stop(Signal::KILL, Duration::ZERO);
            return Err(LaunchError::ExitedUnexpectedly {
                status,
                stderr_tail: self.generation.stderr().tail(),
            }
            .into());
        }
        Ok(self.generation.stop(Signal::TERM, STOP_GRACE))
    }
}

impl TestServerBuilder {
    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the server.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The server's working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Adds a socket named `name` (`tcp://127.0.0.1:0`, `udp://…`,
    /// `unix:///path`); fds are given in the order added, from 3. Without
    /// any, the server gets one `tcp://127.0.0.1:0` socket named `default`.
    pub fn listen(mut self, name: impl Into<String>, spec: impl Into<String>) -> Self {
        self.listen.push((name.into(), spec.into()));
        self
    }

    /// The readiness mode (default [`ReadyMode::Listen`]: ready once spawned).
    pub fn ready(mut self, mode: ReadyMode) -> Self {
        self.ready = mode;
        self
    }

    /// How long [`start`](Self::start) waits for readiness (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Binds the sockets, starts the server and waits for its readiness.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad listen spec, bind errors
    /// ([`Error::PortTaken`], [`Error::Io`]), and [`Error::Start`] with a
    /// [`LaunchError`] (spawn failed, exited before ready, ready timeout),
    /// each with the server's stderr tail; the server is stopped and reaped.
    pub fn start(self) -> Result<TestServer> {
        let listen = if self.listen.is_empty() {
            vec![("default".to_string(), "tcp://127.0.0.1:0".to_string())]
        } else {
            self.listen
        };
        let mut sockets = Vec::with_capacity(listen.len());
        for (name, spec) in &listen {
            let spec = ListenSpec::parse(&format!("{name}={spec}"))?;
            sockets.push(listen::bind(&spec, 1024)?);
        }
        let mut env = Vec::new();
        let notify = match self.ready {
            ReadyMode::Notify { .. } => {
                let server = NotifyServer::bind(&std::env::temp_dir())?;
                env.push((
                    OsString::from("NOTIFY_SOCKET"),
                    server.path().as_os_str().to_owned(),
                ));
                Some(NotifyFile(server))
            }
            _ => None,
        };
        if let Some(port) = sockets.iter().find_map(BoundSocket::port) {
            env.push(("PORT".into(), port.to_string().into()));
        }
        env.extend(self.env);
        let mut fds: Vec<(OwnedFd, String)> = Vec::with_capacity(sockets.len());
        for socket in &sockets {
            let fd = socket
                .fd
                .try_clone()
                .map_err(|e| Error::io("duplicating a listening socket", e))?;
            fds.push((fd, socket.name.clone()));
        }
        let mut argv = vec![self.program];
        argv.extend(self.args);
        let spawner = Spawner::new()?;
        let generation = Generation::spawn(
            &spawner,
            GenerationSpec {
                argv,
                sockets: fds,
                env,
                current_dir: self.current_dir,
                ..GenerationSpec::default()
            },
        )
        .map_err(|e| match e {
            Error::Launch { message } => LaunchError::SpawnFailed { message }.into(),
            other => other,
        })?;
        let server = TestServer {
            generation,
            _spawner: spawner,
            sockets,
            _notify: notify,
        };
        let outcome = server.wait_ready(&self.ready, self.ready_timeout)?;
        let failure = match outcome {
            ReadyOutcome::Ready => return Ok(server),
            ReadyOutcome::ChildExited(status) => LaunchError::ExitedBeforeReady {
                status,
                stderr_tail: String::new(),
            },
            ReadyOutcome::TimedOut { waited, last_error } => LaunchError::ReadyTimeout {
                waited,
                last_error,
                stderr_tail: String::new(),
            },
            ReadyOutcome::Cancelled => unreachable!("nobody cancels a TestServer's start"),
        };
        // End the whole tree first: then its stderr is complete.
        server.generation.stop(Signal::KILL, Duration::ZERO);
        let tail = server.generation.stderr().tail();
        Err(match failure {
            LaunchError::ExitedBeforeReady { status, .. } => LaunchError::ExitedBeforeReady {
                status,
                stderr_tail: tail,
            },
            LaunchError::ReadyTimeout {
                waited, last_error, ..
            } => LaunchError::ReadyTimeout {
                waited,
                last_error,
                stderr_tail: tail,
            },
            other => other,
        }
        .into())
    }
}

impl TestServer {
    fn wait_ready(&self, mode: &ReadyMode, timeout: Duration) -> Result<ReadyOutcome> {
        let cancel = CancelToken::new();
        let mut exited = || self.generation.try_wait();
        if let ReadyMode::Notify { access } = mode {
            let server = &self._notify.as_ref().expect("notify mode binds a socket").0;
            let access = match access {
                ready::NotifyAccess::Tree => NotifyAccess::Tree,
                ready::NotifyAccess::Main => NotifyAccess::Main,
            };
            return Ok(wait_notify(
                server,
                access,
                self.pid(),
                timeout,
                &mut exited,
            ));
        }
        let address = self.sockets.iter().find_map(|s| s.local_addr);
        let options = ProbeOptions::new(address.map(ready::probe_address), timeout);
        ready::wait_ready(mode, &options, &cancel, &mut exited)
    }
}

fn wait_notify(
    server: &NotifyServer,
    access: NotifyAccess,
    pid: u32,
    timeout: Duration,
    exited: &mut dyn FnMut() -> Option<ExitStatus>,
) -> ReadyOutcome {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if let Some(status) = exited() {
            return ReadyOutcome::ChildExited(status);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return ReadyOutcome::TimedOut {
                waited: start.elapsed(),
                last_error: None,
            };
        }
        // Short waits: the child's exit is only noticed between them.
        match server.recv(left.min(Duration::from_millis(20))) {
            Ok(Some(message)) if message.ready && notify::accepts(access, pid, message.pid) => {
                return ReadyOutcome::Ready;
            }
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
