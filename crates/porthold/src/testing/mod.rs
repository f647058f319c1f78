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
//! A server that can only be told a port *number* (it binds by itself) is
//! started with [`TestServerBuilder::port_env`] (feature `registry` too): it
//! gets a port leased from the registry to the test process and no sockets,
//! and `start` checks that the listener on that port is the server's.
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
use crate::supervisor::launch::{LaunchError, check_port_owner};
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
    ready: Option<ReadyMode>,
    ready_timeout: Duration,
    #[cfg(feature = "registry")]
    port_env: Option<String>,
    #[cfg(feature = "registry")]
    data_dir: Option<PathBuf>,
}

/// Spawns the server; a program that cannot be executed is the typed
/// [`LaunchError::SpawnFailed`].
fn spawn_server(spawner: &Spawner, spec: GenerationSpec) -> Result<Generation> {
    Generation::spawn(spawner, spec).map_err(|e| match e {
        Error::Launch { message } => LaunchError::SpawnFailed { message }.into(),
        other => other,
    })
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
    /// The address a server told its port by number listens on.
    by_number: Option<SocketAddr>,
    /// Its lease, released once the server is gone (after `generation`).
    #[cfg(feature = "registry")]
    _lease: Option<LeaseGuard>,
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
            ready: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            #[cfg(feature = "registry")]
            port_env: None,
            #[cfg(feature = "registry")]
            data_dir: None,
        }
    }

    /// The address of the first IP socket (`default` unless renamed); for a
    /// server told its port by number, `127.0.0.1:PORT`.
    ///
    /// # Panics
    /// When the server has no IP socket (only Unix sockets).
    pub fn addr(&self) -> SocketAddr {
        self.first_addr().expect("the TestServer has no IP socket")
    }

    fn first_addr(&self) -> Option<SocketAddr> {
        self.sockets
            .iter()
            .find_map(|s| s.local_addr)
            .map(ready::probe_address)
            .or(self.by_number)
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

    /// The readiness mode (default [`ReadyMode::Listen`]: ready once
    /// spawned; with [`port_env`](Self::port_env), [`ReadyMode::Tcp`]).
    pub fn ready(mut self, mode: ReadyMode) -> Self {
        self.ready = Some(mode);
        self
    }

    /// For a server that binds by itself and only takes a port number: it
    /// gets `VAR=<port>` and no sockets (no `LISTEN_FDS`, no `PORT` unless
    /// `var` is `PORT`), the way `porthold run --no-fds` runs one.
    ///
    /// The port is leased from the port registry to the test process (as
    /// `porthold pick` leases, without a TTL), so no other test, `pick` or
    /// reservation gets it; the lease is released when the `TestServer` is
    /// stopped or dropped (and is reclaimable once the test process is gone,
    /// if it dies first). The port is held bound until just before the
    /// spawn. [`start`](Self::start) waits for readiness (default
    /// [`ReadyMode::Tcp`]: until something accepts on the port) and then
    /// checks that the listener on the port belongs to the server's process
    /// tree: if another process took the port in the window, `start` fails
    /// with [`LaunchError::PortStolen`] naming its pid and command.
    ///
    /// The registry is the one `porthold` uses: [`data_dir`](Self::data_dir),
    /// else `PORTHOLD_DATA_DIR`, else the user config's `[registry]
    /// data_dir`, else `$XDG_DATA_HOME/porthold` (`~/.local/share/porthold`);
    /// the pool comes from the same layers (`PORTHOLD_POOL`, the user config).
    /// Give no [`listen`](Self::listen) sockets with it.
    ///
    /// Needs the `registry` feature (SQLite).
    #[cfg(feature = "registry")]
    pub fn port_env(mut self, var: impl Into<String>) -> Self {
        self.port_env = Some(var.into());
        self
    }

    /// The data directory of the port registry for
    /// [`port_env`](Self::port_env) (a test suite's own, for isolation);
    /// default: the one `porthold` uses.
    #[cfg(feature = "registry")]
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
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
    /// [`LaunchError`] (spawn failed, exited before ready, ready timeout;
    /// with [`port_env`](Self::port_env): port stolen), each with the
    /// server's stderr tail; the server is stopped and reaped. With
    /// `port_env`, also the registry's errors ([`Error::PoolExhausted`],
    /// [`Error::Busy`], …).
    pub fn start(self) -> Result<TestServer> {
        #[cfg(feature = "registry")]
        if self.port_env.is_some() {
            return self.start_by_number();
        }
        let ready = self.ready.unwrap_or(ReadyMode::Listen);
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
        let notify = notify_for(&ready, &mut env)?;
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
        let generation = spawn_server(
            &spawner,
            GenerationSpec {
                extra_fd: None,
                argv,
                sockets: fds,
                env,
                current_dir: self.current_dir,
                ..GenerationSpec::default()
            },
        )?;
        let server = TestServer {
            generation,
            _spawner: spawner,
            sockets,
            _notify: notify,
            by_number: None,
            #[cfg(feature = "registry")]
            _lease: None,
        };
        finish_start(server, &ready, self.ready_timeout)
    }
}

/// A notify socket for [`ReadyMode::Notify`] (its `NOTIFY_SOCKET` added to `env`).
fn notify_for(
    ready: &ReadyMode,
    env: &mut Vec<(OsString, OsString)>,
) -> Result<Option<NotifyFile>> {
    Ok(match ready {
        ReadyMode::Notify { .. } => {
            let server = NotifyServer::bind(&std::env::temp_dir())?;
            env.push((
                OsString::from("NOTIFY_SOCKET"),
                server.path().as_os_str().to_owned(),
            ));
            Some(NotifyFile(server))
        }
        _ => None,
    })
}

/// Waits for the started server's readiness; on failure stops it and
/// returns the typed error with its stderr tail. A server told its port by
/// number must then hold that port itself.
fn finish_start(server: TestServer, ready: &ReadyMode, timeout: Duration) -> Result<TestServer> {
    let outcome = server.wait_ready(ready, timeout)?;
    let failure = match outcome {
        ReadyOutcome::Ready => match server.by_number {
            None => return Ok(server),
            Some(addr) => match check_port_owner(addr.port(), server.pid(), "") {
                Ok(()) => return Ok(server),
                Err(error) => {
                    server.generation.stop(Signal::KILL, Duration::ZERO);
                    return Err(with_stderr_tail(error, server.generation.stderr().tail()));
                }
            },
        },
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
    // A foreign process on the port is the cause to report, as for
    // `run --no-fds` (nothing of the server's tree is left to hold it).
    if let Some(addr) = server.by_number
        && let Err(Error::Start(stolen)) = check_port_owner(addr.port(), 0, &tail)
        && matches!(*stolen, LaunchError::PortStolen { .. })
    {
        return Err(Error::Start(stolen));
    }
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
        let options = ProbeOptions::new(self.first_addr(), timeout);
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

/// `error` with the server's stderr tail, for the typed start failures that carry one.
fn with_stderr_tail(error: Error, tail: String) -> Error {
    match error {
        Error::Start(launch) => match *launch {
            LaunchError::PortStolen {
                port, pid, comm, ..
            } => LaunchError::PortStolen {
                port,
                pid,
                comm,
                stderr_tail: tail,
            }
            .into(),
            LaunchError::NeverBound { port, .. } => LaunchError::NeverBound {
                port,
                stderr_tail: tail,
            }
            .into(),
            other => Error::Start(Box::new(other)),
        },
        Error::Launch { message } if !tail.is_empty() => Error::Launch {
            message: format!("{message}\n--- last output of the server ---\n{tail}"),
        },
        other => other,
    }
}

/// The lease of a server told its port by number: released (if it is still
/// the test process's) when dropped, after the server is gone.
#[cfg(feature = "registry")]
#[derive(Debug)]
struct LeaseGuard {
    data_dir: PathBuf,
    busy_timeout: Duration,
    port: u16,
}

#[cfg(feature = "registry")]
impl Drop for LeaseGuard {
    fn drop(&mut self) {
        // Best effort: a lease left behind is reclaimed once the test
        // process is gone and nothing listens on the port.
        if let Ok(mut registry) = crate::registry::Registry::open(&self.data_dir, self.busy_timeout)
        {
            let _ = crate::supervisor::plan::release_own_lease(&mut registry, self.port);
        }
    }
}

/// The registry's data dir and the layered configuration (user config,
/// `PORTHOLD_*` variables), resolved as `porthold` resolves them; `explicit`
/// (the builder's `data_dir`) wins.
#[cfg(feature = "registry")]
fn registry_config(explicit: Option<PathBuf>) -> Result<(PathBuf, crate::config::Config)> {
    use crate::config::{self, Config, Overrides, Sources};
    let home = std::env::var_os("HOME");
    let sources = Sources {
        user_config: config::default_user_config(
            std::env::var_os("XDG_CONFIG_HOME").as_deref(),
            home.as_deref(),
        ),
        project_dir: None,
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with("PORTHOLD_"))
            .collect(),
        flags: Overrides {
            data_dir: explicit,
            ..Overrides::default()
        },
    };
    let config = Config::load(&sources)?;
    let data_dir = match &config.data_dir {
        Some(setting) => setting.value.clone(),
        None => config::default_data_dir(
            std::env::var_os("XDG_DATA_HOME").as_deref(),
            home.as_deref(),
        )
        .ok_or_else(|| {
            Error::invalid(
                "no data directory for the port registry: HOME is not set",
                Some("set PORTHOLD_DATA_DIR, or give the TestServer a data dir".to_string()),
            )
        })?,
    };
    config::check_data_dir(&data_dir)?;
    Ok((data_dir, config))
}

#[cfg(feature = "registry")]
impl TestServerBuilder {
    /// [`start`](Self::start) for [`port_env`](Self::port_env): the run plan
    /// of a server that binds by itself (a leased port, `VAR=<port>`, no
    /// sockets, readiness `tcp` by default), then the ownership check.
    fn start_by_number(mut self) -> Result<TestServer> {
        use crate::supervisor::plan::{self, PlanRequest, PortChoice};
        let Some(var) = self.port_env.take() else {
            return Err(Error::invalid("no port variable", None));
        };
        if !self.listen.is_empty() {
            return Err(Error::invalid(
                format!(
                    "a server told its port by number (in {var}) gets no sockets, \
                     but listen specs were given"
                ),
                Some("give either listen specs or a port variable".to_string()),
            ));
        }
        let (data_dir, config) = registry_config(self.data_dir.take())?;
        let here = match &self.current_dir {
            Some(dir) => dir.clone(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        };
        let key = crate::key::Key {
            path: here,
            tag: String::new(),
        };
        let mut request = PlanRequest::new(key, &config);
        request.port = PortChoice::Ephemeral;
        request.no_fds = true;
        request.port_env = var;
        request.ready = self.ready.take();
        let pending = plan::prepare(request)?;
        let busy_timeout = config.busy_timeout.value;
        let mut registry = crate::registry::Registry::open(&data_dir, busy_timeout)?;
        let plan = pending.reserve(&mut registry, &crate::net::SystemProbe)?;
        drop(registry);
        let (Some(port), Some(spec)) = (plan.lease, plan.listen.first()) else {
            return Err(Error::invalid(
                "internal error: the plan of a server told its port by number has no lease",
                None,
            ));
        };
        let lease = LeaseGuard {
            data_dir,
            busy_timeout,
            port,
        };
        let mut env = vec![(
            OsString::from(&plan.port_env),
            OsString::from(port.to_string()),
        )];
        let notify = notify_for(&plan.ready, &mut env)?;
        env.extend(plan.extra_env.iter().cloned());
        env.extend(self.env);
        let mut argv = vec![self.program];
        argv.extend(self.args);
        let spawner = Spawner::new()?;
        // Held until just before the spawn (what `run --no-fds` does): the
        // bind proves the leased port free now, and the window in which
        // another process could take it is the spawn itself.
        let held = listen::bind(spec, 1024)?;
        let addr = held.local_addr.map(ready::probe_address);
        drop(held);
        let generation = spawn_server(
            &spawner,
            GenerationSpec {
                extra_fd: None,
                argv,
                env,
                current_dir: self.current_dir,
                ..GenerationSpec::default()
            },
        )?;
        let server = TestServer {
            generation,
            _spawner: spawner,
            sockets: Vec::new(),
            _notify: notify,
            by_number: addr,
            _lease: Some(lease),
        };
        finish_start(server, &plan.ready, self.ready_timeout)
    }
}
