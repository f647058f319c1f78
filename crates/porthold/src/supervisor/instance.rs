//! One instance, start to end: what `porthold run` does.
//!
//! The order of work is the contract of PRODUCT.md §3.2 and each step closes a race:
//!
//! 1. **Signals first.** The embedder (the CLI) catches every signal that
//!    could terminate the launcher before anything else and passes them in as
//!    a [`SignalSource`] (the library installs no handler); a stop request (TERM, INT,
//!    QUIT, and HUP unless it is forwarded) that arrives before the server is
//!    ready cancels the start (the record never shows `ready`, exit
//!    128+signal); USR1, USR2 and WINCH (and HUP with [`HupAction::Forward`])
//!    go to the server's process group as soon as there is one.
//! 2. **The name lock** ([`Publisher::acquire_with_retry`]): a second instance
//!    of the same name loses here, naming the first (exit 3), before it could
//!    ever see `EADDRINUSE`.
//! 3. **Bind and listen**, then publish the record as `starting`.
//! 4. **Spawn** the child with the sockets at fds 3.. (or, with `--no-fds`,
//!    release the held port just before the spawn), in its own process group,
//!    with a parent-death signal, while porthold is the subreaper of its tree.
//! 5. **Readiness**, by the [`Lifecycle`] state machine: cancellation is checked
//!    before each step and in the same critical section as the final commit to
//!    `Running`, so a cancelled start is never reported running.
//! 6. **Ready**: the record says so. A stop request now sends the stop signal
//!    (TERM and HUP become [`RunOptions::stop_signal`], INT and QUIT stay
//!    themselves) to the child's process group; a second identical stop
//!    request, or the drain timeout, escalates to SIGKILL.
//! 7. **The end**: when the main child exits, whatever remains of its tree is
//!    killed and reaped, the record is removed and the lock released; porthold
//!    exits with the child's code (128+signal when it was killed).
//!
//! One thread reaps: it owns every `waitpid` of the process, so the main
//! child's status can never be stolen by an orphan reap (porthold is a
//! subreaper and adopts the tree's orphans).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::activation::notify::{self, NotifyAccess, NotifyMessage, NotifyServer};
use crate::activation::spawn::{self as spawner, Child, SpawnRequest};
use crate::discovery::{self, Listener, Proto, Publisher, Record, State as RecordState};
use crate::error::{Error, Result};
use crate::net::listen::{BoundSocket, ListenSpec, SocketProto};
use crate::supervisor::generation::{Output, TAIL_BYTES};
use crate::supervisor::launch::LaunchError;
use crate::supervisor::lifecycle::{CancelToken, Lifecycle, StartError, StartSteps};
use crate::supervisor::ready::{self, ProbeOptions, ReadyMode, ReadyOutcome};
use crate::supervisor::signals::{SignalAction, SignalSource};
use crate::supervisor::tree;
use crate::sync::lock;
use crate::test_hooks;

/// How long the rest of the tree gets after the main child exited, before SIGKILL.
const TREE_GRACE: Duration = Duration::from_secs(2);
/// A server's `STATUS=` updates reach the record at most this often.
const STATUS_REPUBLISH: Duration = Duration::from_millis(100);

/// Everything `run` needs, resolved by the caller (the CLI) from flags and config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The runtime directory (discovery records, notify sockets).
    pub runtime_dir: PathBuf,
    /// The instance name.
    pub name: String,
    /// The key the instance runs for.
    pub key: discovery::Key,
    /// The sockets to bind, in fd order (at least one).
    pub listen: Vec<ListenSpec>,
    /// Listen backlog.
    pub backlog: u32,
    /// Release the sockets before the spawn and verify the child's tree bound the port.
    pub no_fds: bool,
    /// Readiness mode.
    pub ready: ReadyMode,
    /// Who may send `READY=1` in notify mode.
    pub notify_access: NotifyAccess,
    /// Readiness timeout.
    pub ready_timeout: Duration,
    /// How long the server may drain after the stop signal before SIGKILL.
    pub drain_timeout: Duration,
    /// The signal that asks the server to stop (what SIGTERM to porthold becomes).
    pub stop_signal: Signal,
    /// The variable that receives the first IP socket's port (`PORT`).
    pub port_env: String,
    /// More environment for the child.
    pub extra_env: Vec<(OsString, OsString)>,
    /// The program and its arguments (`{port}`/`{port:NAME}` not yet substituted).
    pub command: Vec<OsString>,
    /// Say nothing on stderr except errors.
    pub quiet: bool,
}

/// Parses a signal name for `--stop-signal`: `TERM`, `SIGTERM`, `INT`, `QUIT`, `HUP`, `USR1`, `USR2`, `KILL`.
///
/// # Errors
/// [`Error::Invalid`] naming the text.
pub fn parse_signal(text: &str) -> Result<Signal> {
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Ok(match bare {
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "QUIT" => Signal::QUIT,
        "HUP" => Signal::HUP,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "KILL" => Signal::KILL,
        _ => {
            return Err(Error::invalid(
                format!("unknown signal `{text}`"),
                Some("use TERM, INT, QUIT, HUP, USR1, USR2 or KILL".into()),
            ));
        }
    })
}

/// What the reaper and the signal thread tell the main loop.
#[derive(Debug)]
enum Event {
    /// The main child exited with this raw wait status.
    ChildExited(std::process::ExitStatus),
    /// porthold received this stop request.
    Signal(Signal),
    /// A message arrived on the notify socket (sender not checked yet).
    Notify(NotifyMessage),
}

/// Shared between the reaper thread and the start: the main child's status once it exited.
type ExitSlot = Arc<Mutex<Option<std::process::ExitStatus>>>;

/// Copies `from` to our stderr, keeping the tail; ends at EOF (the tree closed it).
fn copy_stderr(from: OwnedFd, tail: Output) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut file = std::fs::File::from(from);
        let mut buf = [0u8; 8192];
        loop {
            match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    tail.push(&buf[..n]);
                    let _ = std::io::stderr().write_all(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

/// The Unix socket files the instance bound, removed on every way out of
/// [`run`] if each is still the socket bound then (same device and inode): a
/// file that someone replaced meanwhile is theirs.
#[derive(Default)]
struct UnixSocketFiles(Mutex<Vec<(PathBuf, (u64, u64))>>);

impl UnixSocketFiles {
    fn remember(&self, socket: &BoundSocket) {
        use std::os::unix::fs::MetadataExt;
        if socket.proto != SocketProto::Unix {
            return;
        }
        if let Some(path) = &socket.path
            && let Ok(meta) = path.symlink_metadata()
        {
            lock(&self.0).push((path.clone(), (meta.dev(), meta.ino())));
        }
    }
}

impl Drop for UnixSocketFiles {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        for (path, id) in lock(&self.0).drain(..) {
            if path
                .symlink_metadata()
                .is_ok_and(|m| (m.dev(), m.ino()) == id)
            {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// The start's steps, for [`Lifecycle::start`].
struct RunSteps<'a> {
    options: &'a RunOptions,
    unix_files: &'a UnixSocketFiles,
    publisher: &'a mut Publisher,
    record: Option<Record>,
    /// With `--no-fds`: the sockets holding the ports until just before the spawn.
    held: Vec<BoundSocket>,
    notify: Option<Arc<NotifyServer>>,
    /// The latest `STATUS=` an allowed sender sent before ready.
    status: Option<String>,
    env: Vec<(OsString, OsString)>,
    exit_slot: ExitSlot,
    /// The last [`TAIL_BYTES`] of the child's stderr, to explain a failed start.
    tail: Output,
    stderr_copier: Option<thread::JoinHandle<()>>,
    /// The server's process group once it is spawned (0 before), for forwarded signals.
    server_group: Arc<AtomicU32>,
    /// Signals the server starts with ignored.
    ignored_in_child: Vec<Signal>,
}

/// What [`RunSteps::bind`] produces: the sockets passed to the child (empty with `--no-fds`).
struct Bound {
    sockets: Vec<BoundSocket>,
}

/// Reaps the main child if it exited (only this pid: a `cmd:` readiness probe
/// is our child too and its own waiter must get its status), recording it.
fn poll_main(pid: u32, slot: &ExitSlot) -> Option<std::process::ExitStatus> {
    let mut guard = lock(slot);
    if guard.is_none() {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if r == pid as i32 {
            *guard = Some(std::os::unix::process::ExitStatusExt::from_raw(status));
        }
    }
    *guard
}

impl StartSteps for RunSteps<'_> {
    type Sockets = Bound;
    type Child = Child;

    fn bind(&mut self) -> Result<Bound> {
        let mut sockets = Vec::with_capacity(self.options.listen.len());
        for spec in &self.options.listen {
            let socket = crate::net::listen::bind(spec, self.options.backlog)?;
            self.unix_files.remember(&socket);
            sockets.push(socket);
        }
        let listeners = sockets.iter().map(discovery_listener).collect();
        let mut record = Record::new(
            &self.options.name,
            self.publisher.instance_id(),
            self.options.key.clone(),
            listeners,
        )?;
        record.state = RecordState::Starting;
        record.drain_timeout_ms =
            Some(u64::try_from(self.options.drain_timeout.as_millis()).unwrap_or(u64::MAX));
        self.publisher.publish(&record)?;
        self.record = Some(record);
        self.env = child_env(
            self.options,
            &sockets,
            self.publisher.instance_id(),
            self.notify.as_deref(),
        );
        if self.options.no_fds {
            self.held = sockets;
            Ok(Bound {
                sockets: Vec::new(),
            })
        } else {
            Ok(Bound { sockets })
        }
    }

    fn spawn(&mut self, bound: &Bound) -> Result<Child> {
        let ports: Vec<(String, u16)> = self
            .record
            .as_ref()
            .map(|r| {
                r.listeners
                    .iter()
                    .filter_map(|l| Some((l.name.clone(), l.port?)))
                    .collect()
            })
            .unwrap_or_default();
        let argv = spawner::substitute_ports(&self.options.command, &ports)?;
        let (stderr_read, stderr_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| Error::io("creating the stderr pipe", e.into()))?;
        let mut request = SpawnRequest::new(argv);
        for socket in &bound.sockets {
            request = request.listener(socket.fd.as_fd(), &socket.name);
        }
        for (k, v) in &self.env {
            request = request.env(k, v);
        }
        request = request
            .stderr(stderr_write)
            .new_process_group(true)
            .parent_death_signal(Signal::TERM);
        for &signal in &self.ignored_in_child {
            request = request.ignore_signal(signal);
        }
        // --no-fds: the port is free from here until the child binds it. The test
        // hook widens this window so a test can race a thief into it.
        self.held.clear();
        if self.options.no_fds {
            test_hooks::pause("run.no-fds-window");
        }
        let child = request.spawn()?;
        self.server_group.store(child.pid(), Ordering::SeqCst);
        // The server leads its own group: record it at once, so whoever takes
        // the name after this launcher died by SIGKILL can end what is left of
        // the tree (until then, the parent-death signal covers the child). A
        // failed republish leaves only that fallback, so it does not fail the start.
        if let Some(record) = self.record.as_mut() {
            record.pgid = Some(child.pid());
            let _ = self.publisher.publish(record);
        }
        self.stderr_copier = Some(copy_stderr(stderr_read, self.tail.clone()));
        Ok(child)
    }

    fn wait_ready(&mut self, child: &mut Child, cancel: &CancelToken) -> ReadyOutcome {
        let exit_slot = self.exit_slot.clone();
        let main_pid = child.pid();
        let mut child_exited = move || poll_main(main_pid, &exit_slot);
        let address = self
            .record
            .as_ref()
            .and_then(|r| r.listeners.iter().find_map(|l| l.socket_addr()))
            .map(ready::probe_address);
        let mut probe = ProbeOptions::new(address, self.options.ready_timeout);
        probe.cmd_env = self.env.clone();
        match &self.options.ready {
            // The socket accepted into its backlog before the spawn: ready now,
            // even if the server has already finished (its exit code is the answer).
            ReadyMode::Listen if cancel.is_cancelled() => ReadyOutcome::Cancelled,
            ReadyMode::Listen => ReadyOutcome::Ready,
            ReadyMode::Notify { .. } => match &self.notify {
                Some(server) => wait_notify(
                    server,
                    self.options.notify_access,
                    child.pid(),
                    self.options.ready_timeout,
                    cancel,
                    &mut child_exited,
                    &mut self.status,
                ),
                None => ReadyOutcome::TimedOut {
                    waited: Duration::ZERO,
                    last_error: Some("no notify socket".into()),
                },
            },
            mode => match ready::wait_ready(mode, &probe, cancel, &mut child_exited) {
                Ok(outcome) => outcome,
                Err(e) => ReadyOutcome::TimedOut {
                    waited: Duration::ZERO,
                    last_error: Some(e.to_string()),
                },
            },
        }
    }

    fn abort(&mut self, child: Child) -> Option<std::process::ExitStatus> {
        self.server_group.store(0, Ordering::SeqCst);
        let reaped = tree::kill_tree_and_reap(child.pid(), TREE_GRACE);
        let mut slot = lock(&self.exit_slot);
        if let Some((_, status)) = reaped.iter().find(|(pid, _)| *pid == child.pid()) {
            *slot = Some(*status);
        }
        *slot
    }
}

/// Waits for `READY=1` from an allowed sender.
fn wait_notify(
    server: &NotifyServer,
    access: NotifyAccess,
    main_pid: u32,
    timeout: Duration,
    cancel: &CancelToken,
    child_exited: &mut dyn FnMut() -> Option<std::process::ExitStatus>,
    status: &mut Option<String>,
) -> ReadyOutcome {
    let start = Instant::now();
    let mut ignored = None;
    loop {
        if cancel.is_cancelled() {
            return ReadyOutcome::Cancelled;
        }
        if let Some(status) = child_exited() {
            return ReadyOutcome::ChildExited(status);
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return ReadyOutcome::TimedOut {
                waited: start.elapsed(),
                last_error: ignored,
            };
        }
        match server.recv(left.min(Duration::from_millis(50))) {
            Ok(Some(message)) if message.ready => {
                if notify::accepts(access, main_pid, message.pid) {
                    if message.status.is_some() {
                        status.clone_from(&message.status);
                    }
                    return ReadyOutcome::Ready;
                }
                ignored = Some(format!(
                    "ignored READY=1 from pid {} (not in the server's process tree)",
                    message.pid
                ));
            }
            Ok(Some(message)) => {
                if message.status.is_some() && notify::accepts(access, main_pid, message.pid) {
                    status.clone_from(&message.status);
                }
            }
            Ok(None) => {}
            Err(e) => ignored = Some(e.to_string()),
        }
    }
}

/// Waits (bounded) until the reaper has recorded the main child's status.
fn wait_slot(slot: &ExitSlot, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = *lock(slot) {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// The reaper, once the server runs: `waitpid(-1)` until no child is left,
/// reaping re-parented orphans as they die and reporting the main child.
/// (Started only after readiness: a `cmd:` probe's status must reach its own waiter.)
fn start_reaper(main_pid: u32, events: Sender<Event>, slot: ExitSlot) {
    thread::spawn(move || {
        loop {
            if let Some(status) = *lock(&slot) {
                let _ = events.send(Event::ChildExited(status));
                return;
            }
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let r = unsafe { libc::waitpid(-1, &mut status, 0) };
            if r < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return; // ECHILD: nothing left to wait for.
            }
            if r as u32 == main_pid {
                let status = std::os::unix::process::ExitStatusExt::from_raw(status);
                *lock(&slot) = Some(status);
                let _ = events.send(Event::ChildExited(status));
                return;
            }
        }
    });
}

/// The record's description of a bound socket.
fn discovery_listener(socket: &BoundSocket) -> Listener {
    match (socket.local_addr, &socket.path) {
        (Some(addr), _) => Listener::inet(
            socket.name.clone(),
            if socket.proto == SocketProto::Udp {
                Proto::Udp
            } else {
                Proto::Tcp
            },
            addr,
        ),
        (None, path) => Listener::unix(
            socket.name.clone(),
            path.as_deref().unwrap_or(std::path::Path::new("")),
        ),
    }
}

/// The child's environment besides `LISTEN_*` (which the spawner sets).
fn child_env(
    options: &RunOptions,
    sockets: &[BoundSocket],
    instance_id: &str,
    notify: Option<&NotifyServer>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    env.push(("PORTHOLD_INSTANCE_ID".into(), instance_id.into()));
    if let Some(port) = sockets.iter().find_map(BoundSocket::port) {
        env.push((options.port_env.clone().into(), port.to_string().into()));
    }
    if let Some(server) = notify {
        env.push(("NOTIFY_SOCKET".into(), server.path().as_os_str().to_owned()));
    }
    env.extend(options.extra_env.iter().cloned());
    env
}

/// The exit code for a child's status: its code, or 128+signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    tree::exit_code_of(status)
}

/// With `--no-fds`: who listens on the instance's ports now. `Ok` when every
/// port is held by the child's tree; otherwise a typed launch error saying
/// whether a foreign process took it ([`LaunchError::PortStolen`]) or nobody
/// bound it ([`LaunchError::NeverBound`]), with `stderr_tail`.
fn verify_no_fds_owner(record: &Record, main_pid: u32, stderr_tail: &str) -> Result<()> {
    for listener in &record.listeners {
        let Some(port) = listener.port else { continue };
        let entries = crate::net::listeners_on_port(port);
        let mut foreign = None;
        let mut ours = false;
        for entry in &entries {
            match &entry.owner {
                Some(owner) if tree::is_in_tree(owner.pid, main_pid) => ours = true,
                Some(owner) => foreign = Some(owner.clone()),
                None => {}
            }
        }
        if ours {
            continue;
        }
        let stderr_tail = stderr_tail.to_string();
        return Err(match foreign {
            Some(owner) => LaunchError::PortStolen {
                port,
                pid: owner.pid,
                comm: owner.comm,
                stderr_tail,
            }
            .into(),
            None if !entries.is_empty() => Error::Launch {
                message: with_tail(
                    format!(
                        "port {port} is held by a socket whose owner porthold cannot see, not by the server"
                    ),
                    &stderr_tail,
                ),
            },
            None => LaunchError::NeverBound { port, stderr_tail }.into(),
        });
    }
    Ok(())
}

/// Runs the instance to its end; returns porthold's exit code (the child's,
/// or 128+signal for a start cancelled by a signal). `signals` tells it what
/// the process received ([`signals::SignalWatcher`](crate::supervisor::signals::SignalWatcher)
/// for a launcher process).
///
/// # Errors
/// Before the child started: [`Error::NameTaken`] (exit 3), bind conflicts
/// ([`Error::PortInUse`]-like conflicts, exit 3), invalid options (exit 2),
/// [`Error::Launch`] for a spawn failure, an early exit, a readiness timeout
/// or a stolen port (exit 8, the child killed and reaped).
pub fn run(options: RunOptions, mut signals: impl SignalSource + 'static) -> Result<i32> {
    // 1. Signals: the embedder caught them before anything else; one thread
    // turns them into cancellation, events and forwarded signals.
    let ignored_in_child = signals.ignored_in_child();
    let (events, inbox) = mpsc::channel::<Event>();
    let cancel = CancelToken::new();
    let first_signal: Arc<Mutex<Option<Signal>>> = Arc::default();
    let server_group: Arc<AtomicU32> = Arc::default();
    {
        let events = events.clone();
        let cancel = cancel.clone();
        let first_signal = first_signal.clone();
        let server_group = server_group.clone();
        thread::spawn(move || {
            while let Some(action) = signals.next_action() {
                match action {
                    SignalAction::Stop(signal) => {
                        lock(&first_signal).get_or_insert(signal);
                        cancel.cancel();
                        if events.send(Event::Signal(signal)).is_err() {
                            return;
                        }
                    }
                    SignalAction::Forward(signal) => {
                        let group = server_group.load(Ordering::SeqCst);
                        if group != 0 {
                            tree::signal_group(group, signal);
                        }
                    }
                    SignalAction::Ignore => {}
                }
            }
        });
    }

    // 2. The name.
    discovery::ensure_runtime_dir(&options.runtime_dir)?;
    let instance_id = discovery::new_instance_id()?;
    let mut publisher = Publisher::acquire_for_key(
        &options.runtime_dir,
        &options.name,
        &instance_id,
        &options.key,
        discovery::DEFAULT_LOCK_RETRY,
    )?;
    tree::become_subreaper()?;
    // The notify socket is named after the instance: only the lock holder binds
    // it, replacing one a killed predecessor left behind, so they never pile up.
    // It lives as long as the instance (STATUS=, STOPPING=1 … after READY=1).
    let notify = match options.ready {
        ReadyMode::Notify { .. } => Some(Arc::new(NotifyServer::bind_at(
            &options.runtime_dir.join(format!("{}.notify", options.name)),
        )?)),
        _ => None,
    };
    let _notify_file = NotifyFile(notify.clone());
    let unix_files = UnixSocketFiles::default();

    // 3-5. Bind, spawn, readiness: the lifecycle decides.
    let lifecycle = Lifecycle::new();
    let exit_slot: ExitSlot = Arc::default();
    let tail = Output::keeping(TAIL_BYTES);
    let mut steps = RunSteps {
        options: &options,
        unix_files: &unix_files,
        publisher: &mut publisher,
        record: None,
        held: Vec::new(),
        notify: notify.clone(),
        status: None,
        env: Vec::new(),
        exit_slot: exit_slot.clone(),
        tail: tail.clone(),
        stderr_copier: None,
        server_group: server_group.clone(),
        ignored_in_child,
    };
    let started = lifecycle.start(&cancel, &mut steps, &mut |boundary| {
        test_hooks::pause(&format!("run.{boundary:?}"));
    });
    let signal_code = |first: &Arc<Mutex<Option<Signal>>>| lock(first).map(|s| 128 + s.as_raw());
    let started = match started {
        Ok(started) => started,
        Err(StartError::Cancelled { .. }) => {
            // A signal (the only canceller here) ended the start: exit 128+signal.
            let code = signal_code(&first_signal).unwrap_or(130);
            drop(steps);
            publisher.finish()?;
            return Ok(code);
        }
        Err(error) => {
            let tail_text = tail.tail();
            // A start that failed after the held port was released: if a
            // foreign process holds it now, that is the cause to report.
            if options.no_fds
                && let Some(record) = &steps.record
                && let Err(Error::Start(stolen)) = verify_no_fds_owner(record, 0, &tail_text)
                && matches!(*stolen, LaunchError::PortStolen { .. })
            {
                return Err(Error::Start(stolen));
            }
            let message = error.to_string();
            let err = match Error::from(error) {
                Error::Launch { .. } => Error::Launch {
                    message: with_tail(message, &tail_text),
                },
                other => other,
            };
            return Err(err);
        }
    };
    let child = started.child;
    let main_pid = child.pid();
    start_reaper(main_pid, events.clone(), exit_slot.clone());
    let mut record = steps.record.take().ok_or_else(|| Error::Launch {
        message: "internal error: no record after bind".into(),
    })?;
    record.status = steps.status.take();
    drop(steps);
    if let Some(server) = &notify {
        forward_notify_messages(server.clone(), events.clone());
    }

    if options.no_fds
        && let Err(err) = verify_no_fds_owner(&record, main_pid, &tail.tail())
    {
        tree::kill_tree_and_reap(main_pid, TREE_GRACE);
        return Err(err);
    }

    // 6. Ready.
    record.state = RecordState::Ready;
    record.child_pid = Some(main_pid);
    publisher.publish(&record)?;
    if !options.quiet {
        let url = record.url("http").unwrap_or_else(|| options.name.clone());
        eprintln!("porthold: {} ready on {url} (pid {main_pid})", options.name);
    }

    // 7. Serve until the child ends; forward signals.
    let status = supervise(
        &options,
        main_pid,
        &inbox,
        &exit_slot,
        &mut publisher,
        &mut record,
    );
    server_group.store(0, Ordering::SeqCst);
    tree::kill_tree_and_reap(main_pid, TREE_GRACE);
    publisher.finish()?;
    Ok(exit_code(status))
}

/// Removes the instance's notify socket file on every way out of [`run`] (the
/// receiving thread keeps its own handle to the socket).
struct NotifyFile(Option<Arc<NotifyServer>>);

impl Drop for NotifyFile {
    fn drop(&mut self) {
        if let Some(server) = &self.0 {
            server.remove_file();
        }
    }
}

/// Once the server is ready, passes every notify message on to the serving loop.
fn forward_notify_messages(server: Arc<NotifyServer>, events: Sender<Event>) {
    thread::spawn(move || {
        loop {
            match server.recv(Duration::from_secs(3600)) {
                Ok(Some(message)) => {
                    if events.send(Event::Notify(message)).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                // Receiving failed for good (it does not for a bound datagram
                // socket): late messages then queue unread, which harms no sender.
                Err(_) => return,
            }
        }
    });
}

fn with_tail(message: String, tail: &str) -> String {
    if tail.is_empty() {
        message
    } else {
        format!("{message}\n--- last output of the server ---\n{tail}")
    }
}

/// The serving loop: returns the main child's exit status.
fn supervise(
    options: &RunOptions,
    main_pid: u32,
    inbox: &Receiver<Event>,
    exit_slot: &ExitSlot,
    publisher: &mut Publisher,
    record: &mut Record,
) -> std::process::ExitStatus {
    let mut kill_at: Option<Instant> = None;
    let mut stop_requests: Vec<Signal> = Vec::new();
    let mut last_publish = Instant::now();
    let mut publish_at: Option<Instant> = None;
    loop {
        if let Some(status) = *lock(exit_slot) {
            return status;
        }
        let deadline = [kill_at, publish_at].into_iter().flatten().min();
        let event = match deadline {
            Some(at) => match inbox.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => None,
            },
            None => inbox.recv().ok(),
        };
        match event {
            Some(Event::ChildExited(status)) => return status,
            Some(Event::Signal(signal)) => {
                // Every event here is a stop request (forwarded signals never reach this loop).
                let forwarded = if matches!(signal, Signal::TERM | Signal::HUP) {
                    options.stop_signal
                } else {
                    signal
                };
                if stop_requests.contains(&signal) {
                    // The same stop request twice (Ctrl-C, Ctrl-C): no more patience.
                    tree::signal_group(main_pid, Signal::KILL);
                    continue;
                }
                stop_requests.push(signal);
                if kill_at.is_none() {
                    kill_at = Some(Instant::now() + options.drain_timeout);
                    record.state = RecordState::Stopping;
                    let _ = publisher.publish(record);
                    last_publish = Instant::now();
                    publish_at = None;
                }
                tree::signal_group(main_pid, forwarded);
            }
            Some(Event::Notify(message)) => {
                if !notify::accepts(options.notify_access, main_pid, message.pid) {
                    continue;
                }
                let mut changed = false;
                if let Some(status) = message.status
                    && record.status.as_ref() != Some(&status)
                {
                    record.status = Some(status);
                    changed = true;
                }
                if message.stopping && record.state != RecordState::Stopping {
                    record.state = RecordState::Stopping;
                    changed = true;
                }
                if let Some(pid) = message.main_pid
                    && pid != main_pid
                    && tree::is_in_tree(pid, main_pid)
                    && record.child_pid != Some(pid)
                {
                    record.child_pid = Some(pid);
                    changed = true;
                }
                // WATCHDOG=1 needs no answer: porthold sets no watchdog timeout.
                if changed {
                    let due = last_publish + STATUS_REPUBLISH;
                    if Instant::now() >= due {
                        let _ = publisher.publish(record);
                        last_publish = Instant::now();
                    } else {
                        publish_at.get_or_insert(due);
                    }
                }
            }
            None => {
                let now = Instant::now();
                if publish_at.is_some_and(|at| now >= at) {
                    let _ = publisher.publish(record);
                    last_publish = now;
                    publish_at = None;
                }
                if kill_at.is_some_and(|at| now >= at) {
                    tree::signal_group(main_pid, Signal::KILL);
                    kill_at = None;
                } else if deadline.is_none() {
                    // The channel closed: nobody can tell us about the child any more.
                    if let Some(status) = wait_slot(exit_slot, Duration::from_secs(3600)) {
                        return status;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_parse_with_or_without_the_sig_prefix() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::TERM);
        assert_eq!(parse_signal("sigint").unwrap(), Signal::INT);
        assert!(parse_signal("TERMINATE").is_err());
    }

    #[test]
    fn the_tail_keeps_the_last_bytes() {
        let tail = Output::keeping(TAIL_BYTES);
        tail.push(&vec![b'a'; TAIL_BYTES]);
        tail.push(b"end");
        let text = tail.tail();
        assert_eq!(text.len(), TAIL_BYTES);
        assert!(text.ends_with("end"));
    }
}
