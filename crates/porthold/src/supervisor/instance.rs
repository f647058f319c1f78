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
//! 8. **Reload** (with [`RunOptions::control_socket`]): `porthold reload`
//!    asks through the control socket for a new generation on the same
//!    sockets; see the `reload` submodule for its steps and rollback.
//!
//! Each generation is waited for by its own pid (never `waitpid(-1)`), so an
//! instance disturbs no other child of the process it lives in. Only an
//! embedder that called [`reaper::adopt_orphans`] or
//! [`reaper::adopt_orphans_on_signal`] (the CLI, a subreaper) also has the
//! tree's re-parented orphans reaped, never taking a status an instance owns.
//!
//! [`run_with`] serves from the calling thread alone: one `poll` waits for
//! the generations' exits, the control socket, the signals and the events of
//! the few threads that remain (the `inbox` submodule).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::activation::notify::{self, NotifyAccess, NotifyMessage, NotifyServer};
use crate::activation::spawn as spawner;
use crate::control::{ControlServer, Handler, Request, Response};
use crate::discovery::{
    self, EventOutcome, GenerationCause, GenerationEntry, GenerationEvent, GenerationState,
    Listener, Proto, Publisher, Record, State as RecordState,
};
use crate::error::{Error, Result};
use crate::net::listen::{BoundSocket, ListenSpec, SocketProto};
use crate::supervisor::generation::{Generation, GenerationSpec, GenerationStdio, Output, Spawner};
use crate::supervisor::launch::{self, LaunchError};
use crate::supervisor::lifecycle::{Boundary, CancelToken, Lifecycle, StartError, StartSteps};
use crate::supervisor::ready::{self, ProbeOptions, ReadyMode, ReadyOutcome};
use crate::supervisor::reaper;
use crate::supervisor::signals::SignalSource;
use crate::supervisor::tree;
use crate::sync::lock;
use crate::test_hooks;

mod handoff;
mod inbox;
mod reload;
pub use handoff::{DEFAULT_HANDOFF_DEADLINE, GENERATION_ENV, HandoffOptions, STATE_DIR_ENV};
use inbox::{Inbox, Outbox, SignalIntake};
use reload::ReloadWait;

/// How long the rest of the tree gets after the main child exited, before SIGKILL.
const TREE_GRACE: Duration = Duration::from_secs(2);
/// How long a reload asked for by a signal (`--on-hup reload`) may take.
const SIGNAL_RELOAD_TIMEOUT: Duration = Duration::from_secs(60);
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
    /// Bind a control socket (`<runtime-dir>/<name>.sock`) through which
    /// `porthold reload` asks for a new generation.
    pub control_socket: bool,
    /// In a reload with a readiness that cannot tell two generations apart
    /// through one shared socket (`listen`, `tcp`, `http:`): how long the new
    /// generation must live before it counts as ready.
    pub reload_delay: Duration,
    /// How long a new generation must stay alive after it is ready, while the
    /// old one still serves, before a reload commits.
    pub reload_confirm: Duration,
    /// Whether a server that exits by itself is started again on the same sockets.
    pub restart: RestartPolicy,
    /// Leave `LISTEN_PID` out of the server's environment (for a watcher that
    /// execs the real server as a grandchild).
    pub no_listen_pid: bool,
    /// Reload by a stateful handoff instead of the overlap model (`--handoff`).
    pub handoff: Option<HandoffOptions>,
}

/// When a server that exited by itself is started again, on the same sockets
/// (connections wait in the backlog meanwhile).
///
/// The first restart comes after [`RESTART_FIRST_DELAY`], each next one
/// [`RESTART_FACTOR`] times later, at most [`RESTART_MAX_DELAY`]; a server
/// that ran for [`RESTART_HEALTHY`] resets that. After [`RESTART_MAX_FAILURES`]
/// exits without a healthy run in between, the instance ends with the last
/// exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Never: the server's exit ends the instance.
    #[default]
    Never,
    /// When it exits with a failure (a non-zero code or a signal).
    OnFailure,
    /// Whenever it exits by itself.
    Always,
}

impl RestartPolicy {
    /// Parses `never`, `on-failure` or `always`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the value otherwise.
    pub fn parse(text: &str) -> Result<RestartPolicy> {
        match text {
            "never" | "no" => Ok(RestartPolicy::Never),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            other => Err(Error::invalid(
                format!("unknown restart policy `{other}`"),
                Some("use `never`, `on-failure` or `always`".into()),
            )),
        }
    }

    fn restarts_after(self, status: std::process::ExitStatus) -> bool {
        match self {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => !status.success(),
            RestartPolicy::Always => true,
        }
    }
}

/// The first restart's delay.
pub const RESTART_FIRST_DELAY: Duration = Duration::from_millis(100);
/// Each further restart's delay is the last one times this.
pub const RESTART_FACTOR: f64 = 1.5;
/// The longest delay before a restart.
pub const RESTART_MAX_DELAY: Duration = Duration::from_secs(10);
/// A server that ran this long was healthy: the delays start over.
pub const RESTART_HEALTHY: Duration = Duration::from_secs(30);
/// This many exits without a healthy run in between end the instance.
pub const RESTART_MAX_FAILURES: u32 = 10;

/// The delay before restart number `failures + 1` of an unhealthy streak.
fn restart_delay(failures: u32) -> Duration {
    let factor = RESTART_FACTOR.powi(i32::try_from(failures).unwrap_or(i32::MAX));
    RESTART_FIRST_DELAY
        .mul_f64(factor.min(RESTART_MAX_DELAY.as_secs_f64() / RESTART_FIRST_DELAY.as_secs_f64()))
        .min(RESTART_MAX_DELAY)
}

impl RunOptions {
    /// Options to run `command` as instance `name` of `key`, with `porthold
    /// run`'s defaults: one TCP socket `default` on 127.0.0.1 at a
    /// kernel-chosen port, readiness `listen`, a 60 s readiness timeout, a
    /// 30 s drain, SIGTERM as the stop signal, `PORT`, no control socket, no
    /// restart. Change the fields as needed.
    pub fn new(
        runtime_dir: impl Into<PathBuf>,
        name: impl Into<String>,
        key: discovery::Key,
        command: Vec<OsString>,
    ) -> RunOptions {
        RunOptions {
            runtime_dir: runtime_dir.into(),
            name: name.into(),
            key,
            listen: vec![ListenSpec::parse("default=tcp://127.0.0.1:0").expect("a valid spec")],
            backlog: crate::net::listen::DEFAULT_BACKLOG,
            no_fds: false,
            ready: ReadyMode::Listen,
            notify_access: NotifyAccess::Tree,
            ready_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            stop_signal: Signal::TERM,
            port_env: "PORT".into(),
            extra_env: Vec::new(),
            command,
            quiet: true,
            control_socket: false,
            reload_delay: DEFAULT_RELOAD_DELAY,
            reload_confirm: DEFAULT_RELOAD_CONFIRM,
            restart: RestartPolicy::Never,
            no_listen_pid: false,
            handoff: None,
        }
    }
}

/// [`RunOptions::reload_delay`]'s usual value.
pub const DEFAULT_RELOAD_DELAY: Duration = Duration::from_secs(1);
/// [`RunOptions::reload_confirm`]'s usual value.
pub const DEFAULT_RELOAD_CONFIRM: Duration = Duration::from_millis(500);

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

/// What the serving loop reacts to (taken by its inbox).
#[derive(Debug)]
enum Event {
    /// The generation with this number exited (reap it to learn its status).
    ChildExited(u64),
    /// porthold received this stop request.
    Signal(Signal),
    /// A message arrived on the notify socket (sender not checked yet).
    Notify(NotifyMessage),
    /// `porthold reload` asked for a new generation; the outcome goes to `reply`.
    Reload {
        check: Option<String>,
        timeout: Duration,
        reply: mpsc::Sender<Response>,
    },
}

/// The Unix socket files the instance bound, removed when the instance ends
/// (however it ends) if each is still the socket bound then (same device and
/// inode): a file that someone replaced meanwhile is theirs.
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

/// One generation of an instance: its number (1 for the first child, n+1
/// after each new start on the same sockets) and its child.
#[derive(Debug)]
pub struct Running {
    /// The generation's number.
    pub number: u64,
    /// The child.
    pub generation: Generation,
}

/// An instance: the name lock and discovery record, the bound sockets, the
/// notify socket, and its generations, for the instance's whole life.
///
/// The sockets are bound once, by the first [`Instance::start`], and held
/// until the instance ends: every later generation gets duplicates of the
/// same open file descriptions, so the kernel keeps queueing connections in
/// one backlog whichever generation is accepting.
///
/// Everything an instance does is scoped to its own generations (their
/// process groups and descendants, waited for by their own pids): several
/// instances can live in one process. The one exception is an embedder that
/// called [`reaper::adopt_orphans`]: there the end of an instance also ends
/// every process re-parented to the embedder (what `porthold run` does).
pub struct Instance {
    options: RunOptions,
    spawner: Spawner,
    publisher: Option<Publisher>,
    notify: Option<Arc<NotifyServer>>,
    unix_files: UnixSocketFiles,
    /// The bound sockets (with `no_fds`, held only until the spawn).
    sockets: Vec<BoundSocket>,
    record: Option<Record>,
    /// The child environment besides `LISTEN_*`, fixed at the first bind.
    env: Vec<(OsString, OsString)>,
    /// The latest `STATUS=` an allowed sender sent before ready.
    status: Option<String>,
    generations: Vec<Running>,
    /// The process group signals are forwarded to (0: none yet).
    server_group: Arc<AtomicU32>,
    ignored_in_child: Vec<Signal>,
    /// The control socket (served by [`run_with`]'s loop).
    control: Option<Arc<ControlServer>>,
    /// The generations' handoff channels (`--handoff` only).
    handoff: Option<handoff::Links>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("name", &self.options.name)
            .field("generations", &self.generations)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Takes the instance's name (waiting briefly for a predecessor that is
    /// ending) and, for `notify` readiness, binds its notify socket. Binds no
    /// listening socket yet: [`Instance::start`] does.
    ///
    /// # Errors
    /// [`Error::NameTaken`] when another live instance holds the name; I/O
    /// errors of the runtime directory or the notify socket.
    pub fn open(options: RunOptions, spawner: Spawner) -> Result<Instance> {
        // Taking the name creates (or checks) the runtime directory first.
        let instance_id = discovery::new_instance_id()?;
        let publisher = Publisher::acquire_for_key(
            &options.runtime_dir,
            &options.name,
            &instance_id,
            &options.key,
            discovery::DEFAULT_LOCK_RETRY,
        )?;
        // The notify socket is named after the instance: only the lock holder
        // binds it, replacing one a killed predecessor left behind, so they never
        // pile up. It lives as long as the instance (STATUS=, STOPPING=1 … after READY=1).
        let notify = match options.ready {
            ReadyMode::Notify { .. } => Some(Arc::new(NotifyServer::bind_at(
                &options.runtime_dir.join(format!("{}.notify", options.name)),
            )?)),
            _ => None,
        };
        let control = if options.control_socket {
            Some(Arc::new(ControlServer::bind(
                &options.runtime_dir,
                &options.name,
            )?))
        } else {
            None
        };
        let handoff = options.handoff.as_ref().map(|_| handoff::Links::default());
        Ok(Instance {
            handoff,
            options,
            spawner,
            publisher: Some(publisher),
            notify,
            unix_files: UnixSocketFiles::default(),
            sockets: Vec::new(),
            record: None,
            env: Vec::new(),
            status: None,
            generations: Vec::new(),
            server_group: Arc::default(),
            ignored_in_child: Vec::new(),
            control,
        })
    }

    /// The options the instance was opened with.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// The instance's generations, oldest first.
    pub fn generations(&self) -> &[Running] {
        &self.generations
    }

    /// The current (newest) generation.
    pub fn current(&self) -> Option<&Running> {
        self.generations.last()
    }

    /// The record as last published (`None` before the first bind).
    pub fn record(&self) -> Option<&Record> {
        self.record.as_ref()
    }

    /// Signals every generation starts with ignored (SIGHUP under `nohup`).
    pub fn set_ignored_in_child(&mut self, signals: Vec<Signal>) {
        self.ignored_in_child = signals;
    }

    fn publisher(&mut self) -> Result<&mut Publisher> {
        self.publisher.as_mut().ok_or_else(|| Error::Launch {
            message: "internal error: the instance has ended".into(),
        })
    }

    /// Starts a generation and waits for its readiness, under the
    /// [`Lifecycle`] rules (`cancel` is checked before every step and in the
    /// same critical section as the commit to running). The first start binds
    /// the sockets and publishes the record as `starting`; on success the
    /// record says `ready` with the new generation's pid. Returns the
    /// generation's number.
    ///
    /// # Errors
    /// [`StartError::Cancelled`] for a cancelled start; otherwise the start's
    /// failure (bind conflicts, spawn failures, an early exit, a readiness
    /// timeout, a port stolen with `no_fds`), the child killed and reaped.
    pub fn start(
        &mut self,
        cancel: &CancelToken,
        observer: &mut dyn FnMut(Boundary),
    ) -> std::result::Result<u64, StartFailure> {
        let (number, generation) = self.launch(cancel, observer, None)?;
        self.commit(number, generation)?;
        Ok(number)
    }

    /// Starts the next generation and waits for its readiness (see
    /// [`Instance::start`]); the generation is not the current one yet.
    /// With `reload`, the instance already serves: readiness comes through
    /// the serving loop's inbox, and events meant for the loop are kept.
    fn launch(
        &mut self,
        cancel: &CancelToken,
        observer: &mut dyn FnMut(Boundary),
        reload: Option<ReloadWait<'_>>,
    ) -> std::result::Result<(u64, Generation), StartFailure> {
        let lifecycle = Lifecycle::new();
        let number = self.generations.last().map_or(1, |g| g.number + 1);
        let mut steps = GenerationStart {
            instance: self,
            tail: None,
            reload,
        };
        let started = lifecycle.start(cancel, &mut steps, observer);
        let tail = steps.tail.take().map(|t| t.tail()).unwrap_or_default();
        let started = match started {
            Ok(started) => started,
            Err(StartError::Cancelled { .. }) => return Err(StartFailure::Cancelled),
            Err(error) => {
                // A start that failed after the held port was released: if a
                // foreign process holds it now, that is the cause to report.
                if self.options.no_fds
                    && let Some(record) = &self.record
                    && let Err(Error::Start(stolen)) = verify_no_fds_owner(record, 0, &tail)
                    && matches!(*stolen, LaunchError::PortStolen { .. })
                {
                    return Err(StartFailure::Failed(Error::Start(stolen)));
                }
                let message = error.to_string();
                return Err(StartFailure::Failed(match Error::from(error) {
                    Error::Launch { .. } => Error::Launch {
                        message: with_tail(message, &tail),
                    },
                    other => other,
                }));
            }
        };
        let generation = started.child;
        let pid = generation.pid();
        if self.options.no_fds
            && let Some(record) = &self.record
            && let Err(err) = verify_no_fds_owner(record, pid, &tail)
        {
            generation.stop(Signal::TERM, TREE_GRACE);
            return Err(StartFailure::Failed(err));
        }
        Ok((number, generation))
    }

    /// Makes a started generation the current one: the record says `ready`
    /// with its pid, and forwarded signals go to its process group.
    fn commit(
        &mut self,
        number: u64,
        generation: Generation,
    ) -> std::result::Result<(), StartFailure> {
        let pid = generation.pid();
        self.server_group.store(pid, Ordering::SeqCst);
        if let Some(record) = self.record.as_mut() {
            for entry in &mut record.generations {
                if entry.state == GenerationState::Ready {
                    entry.state = GenerationState::Draining;
                }
            }
        }
        self.note_generation(number, pid, GenerationState::Ready);
        self.generations.push(Running { number, generation });
        let status = self.status.take();
        let mut record = self.record.take().ok_or_else(|| {
            StartFailure::Failed(Error::Launch {
                message: "internal error: no record after bind".into(),
            })
        })?;
        if status.is_some() {
            record.status = status;
        }
        record.state = RecordState::Ready;
        record.child_pid = Some(pid);
        record.pgid = Some(pid);
        record.generation = number;
        let published = self.publisher().and_then(|p| p.publish(&record));
        self.record = Some(record);
        published.map_err(StartFailure::Failed)?;
        Ok(())
    }

    /// Lists generation `number` (server `pid`) in the record, or updates it.
    fn note_generation(&mut self, number: u64, pid: u32, state: GenerationState) {
        let Some(record) = self.record.as_mut() else {
            return;
        };
        match record.generations.iter_mut().find(|g| g.number == number) {
            Some(entry) => entry.state = state,
            None => record.generations.push(GenerationEntry {
                number,
                pid,
                pgid: pid,
                state,
                started_at: u64::try_from(crate::time::now_ms()).unwrap_or(0),
            }),
        }
    }

    /// Remembers a reload or restart in the record (the last few).
    fn record_event(
        &mut self,
        generation: u64,
        cause: GenerationCause,
        outcome: std::result::Result<(Option<u64>, Option<u64>), String>,
    ) {
        let Some(record) = self.record.as_mut() else {
            return;
        };
        let (ready_ms, retired, reason) = match outcome {
            Ok((ready_ms, retired)) => (ready_ms, retired, None),
            Err(reason) => (None, None, Some(reason)),
        };
        record.events.push(GenerationEvent {
            generation,
            cause,
            outcome: if reason.is_none() {
                EventOutcome::Committed
            } else {
                EventOutcome::RolledBack
            },
            reason,
            ready_ms,
            retired,
            drain_ms: None,
            at: u64::try_from(crate::time::now_ms()).unwrap_or(0),
        });
        let excess = record.events.len().saturating_sub(discovery::MAX_EVENTS);
        record.events.drain(..excess);
    }

    /// Notes in the record how long the retired generation `number` took to
    /// end after its reload committed; returns that duration.
    fn record_drained(&mut self, number: u64) -> Option<u64> {
        let record = self.record.as_mut()?;
        let event = record
            .events
            .iter_mut()
            .rev()
            .find(|e| e.retired == Some(number) && e.drain_ms.is_none())?;
        let now = u64::try_from(crate::time::now_ms()).unwrap_or(0);
        event.drain_ms = Some(now.saturating_sub(event.at));
        event.drain_ms
    }

    /// Drops the generation whose server is `pid` from the record's list.
    fn forget_generation(&mut self, pid: u32) {
        if let Some(record) = self.record.as_mut() {
            record.generations.retain(|g| g.pid != pid);
        }
    }

    /// Publishes the record as it is now (best effort for status updates).
    fn republish(&mut self) -> Result<()> {
        let Some(record) = self.record.take() else {
            return Ok(());
        };
        let result = self.publisher().and_then(|p| p.publish(&record));
        self.record = Some(record);
        result
    }

    /// Ends the instance: stops every generation still running (`stop_signal`,
    /// then SIGKILL after `grace`), ends what is left of their process groups,
    /// and, for an embedder that adopts orphans, every process re-parented to
    /// it; then removes the record and releases the name.
    ///
    /// # Errors
    /// When the record cannot be removed.
    pub fn finish(mut self, stop_signal: Signal, grace: Duration) -> Result<()> {
        self.end_generations(stop_signal, grace);
        match self.publisher.take() {
            Some(publisher) => publisher.finish(),
            None => Ok(()),
        }
    }

    fn end_generations(&mut self, stop_signal: Signal, grace: Duration) {
        self.server_group.store(0, Ordering::SeqCst);
        for running in self.generations.drain(..) {
            running.generation.stop(stop_signal, grace);
        }
        if reaper::adopts_orphans() {
            tree::end_descendants(grace);
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !self.generations.is_empty() || reaper::adopts_orphans() {
            self.end_generations(Signal::TERM, TREE_GRACE);
        }
        if let Some(server) = &self.notify {
            server.remove_file();
        }
    }
}

/// How [`Instance::start`] failed.
#[derive(Debug)]
pub enum StartFailure {
    /// The start was cancelled (no generation runs; the record never said ready).
    Cancelled,
    /// The start failed; the child, if one was spawned, is killed and reaped.
    Failed(Error),
}

impl From<Error> for StartFailure {
    fn from(error: Error) -> Self {
        StartFailure::Failed(error)
    }
}

/// The start's steps, for [`Lifecycle::start`].
struct GenerationStart<'a> {
    instance: &'a mut Instance,
    /// The new child's stderr tail, to explain a failed start.
    tail: Option<Output>,
    /// Set for a reload (the instance already serves).
    reload: Option<ReloadWait<'a>>,
}

impl StartSteps for GenerationStart<'_> {
    type Sockets = ();
    type Child = Generation;

    fn bind(&mut self) -> Result<()> {
        let instance = &mut *self.instance;
        if instance.record.is_some() {
            // A later generation: the sockets are the instance's, bound already.
            return Ok(());
        }
        let mut sockets = Vec::with_capacity(instance.options.listen.len());
        for spec in &instance.options.listen {
            let socket = crate::net::listen::bind(spec, instance.options.backlog)?;
            instance.unix_files.remember(&socket);
            sockets.push(socket);
        }
        let listeners = sockets.iter().map(discovery_listener).collect();
        let publisher = instance.publisher.as_mut().ok_or_else(|| Error::Launch {
            message: "internal error: the instance has ended".into(),
        })?;
        let mut record = Record::new(
            &instance.options.name,
            publisher.instance_id(),
            instance.options.key.clone(),
            listeners,
        )?;
        record.state = RecordState::Starting;
        record.control_socket = instance
            .control
            .as_ref()
            .map(|c| c.path().display().to_string());
        record.drain_timeout_ms =
            Some(u64::try_from(instance.options.drain_timeout.as_millis()).unwrap_or(u64::MAX));
        publisher.publish(&record)?;
        instance.env = child_env(
            &instance.options,
            &sockets,
            publisher.instance_id(),
            instance.notify.as_deref(),
        );
        instance.record = Some(record);
        instance.sockets = sockets;
        Ok(())
    }

    fn spawn(&mut self, _: &()) -> Result<Generation> {
        let instance = &mut *self.instance;
        let ports: Vec<(String, u16)> = instance
            .record
            .as_ref()
            .map(|r| {
                r.listeners
                    .iter()
                    .filter_map(|l| Some((l.name.clone(), l.port?)))
                    .collect()
            })
            .unwrap_or_default();
        let argv = spawner::substitute_ports(&instance.options.command, &ports)?;
        let mut sockets = Vec::new();
        if !instance.options.no_fds {
            for socket in &instance.sockets {
                let fd = socket
                    .fd
                    .try_clone()
                    .map_err(|e| Error::io("duplicating a listening socket", e))?;
                sockets.push((fd, socket.name.clone()));
            }
        }
        let number = instance.generations.last().map_or(1, |g| g.number + 1);
        let mut spec = GenerationSpec {
            extra_fd: None,
            argv,
            sockets,
            env: instance.env.clone(),
            current_dir: None,
            ignored_signals: instance.ignored_in_child.clone(),
            parent_death_signal: Some(Signal::TERM),
            no_listen_pid: instance.options.no_listen_pid,
            // With `listen` readiness the start is complete at the spawn: no
            // failure could show a tail, so the server writes to our stderr
            // directly (no pipe, no copying thread).
            stdio: if instance.options.ready == ReadyMode::Listen && !instance.options.no_fds {
                GenerationStdio::Inherited
            } else {
                GenerationStdio::InheritedKeepingTail
            },
        };
        if instance.options.no_fds {
            // The port is free from here until the child binds it. The test
            // hook widens this window so a test can race a thief into it.
            instance.sockets.clear();
            test_hooks::pause("run.no-fds-window");
        }
        let channel = instance.handoff_spawn(&mut spec, number)?;
        let generation = Generation::spawn(&instance.spawner, spec)?;
        instance.handoff_attach(channel, generation.pid())?;
        self.tail = Some(generation.stderr().clone());
        if instance.generations.is_empty() {
            // Forwarded signals reach the first server from its spawn on (a
            // reload's new generation only once it is committed).
            instance
                .server_group
                .store(generation.pid(), Ordering::SeqCst);
        }
        // The server leads its own group: record it at once, so whoever takes
        // the name after this launcher died by SIGKILL can end what is left of
        // the tree (until then, the parent-death signal covers the child). A
        // failed republish leaves only that fallback, so it does not fail the start.
        // (With `listen` readiness the ready record, pgid included, follows at
        // once: no record in between.)
        instance.note_generation(number, generation.pid(), GenerationState::Starting);
        if let Some(record) = instance.record.as_mut()
            && instance.generations.is_empty()
        {
            record.pgid = Some(generation.pid());
            if instance.options.ready != ReadyMode::Listen {
                let _ = instance.republish();
            }
        } else {
            // A reload's or restart's new generation: listed (with its group)
            // at once, for whoever takes over after a SIGKILLed launcher.
            let _ = instance.republish();
        }
        Ok(generation)
    }

    fn wait_ready(&mut self, child: &mut Generation, cancel: &CancelToken) -> ReadyOutcome {
        if let Some(reload) = self.reload.as_mut() {
            return reload::wait_ready(self.instance, reload, child, cancel);
        }
        let instance = &mut *self.instance;
        let child: &Generation = child;
        let main_pid = child.pid();
        let mut child_exited = || child.try_wait();
        match &instance.options.ready {
            // The socket accepted into its backlog before the spawn: ready now,
            // even if the server has already finished (its exit code is the answer).
            ReadyMode::Listen if cancel.is_cancelled() => ReadyOutcome::Cancelled,
            ReadyMode::Listen => ReadyOutcome::Ready,
            ReadyMode::Notify { .. } => match &instance.notify {
                Some(server) => wait_notify(
                    &mut |wait| server.recv(wait).map_err(|e| e.to_string()),
                    instance.options.notify_access,
                    main_pid,
                    instance.options.ready_timeout,
                    cancel,
                    &mut child_exited,
                    &mut instance.status,
                ),
                None => ReadyOutcome::TimedOut {
                    waited: Duration::ZERO,
                    last_error: Some("no notify socket".into()),
                },
            },
            mode => wait_probe(instance, mode, cancel, &mut child_exited),
        }
    }

    fn abort(&mut self, child: Generation) -> Option<std::process::ExitStatus> {
        if self.instance.generations.is_empty() {
            self.instance.server_group.store(0, Ordering::SeqCst);
        }
        self.instance.forget_generation(child.pid());
        Some(child.stop(Signal::TERM, TREE_GRACE))
    }
}

/// Waits for a probe readiness (`tcp`, `http:`, `cmd:`, `delay:`) of the
/// instance's server; a probe that cannot run is a timeout naming why.
fn wait_probe(
    instance: &Instance,
    mode: &ReadyMode,
    cancel: &CancelToken,
    child_exited: &mut dyn FnMut() -> Option<std::process::ExitStatus>,
) -> ReadyOutcome {
    let address = instance
        .record
        .as_ref()
        .and_then(|r| r.listeners.iter().find_map(|l| l.socket_addr()))
        .map(ready::probe_address);
    let mut probe = ProbeOptions::new(address, instance.options.ready_timeout);
    probe.cmd_env = instance.env.clone();
    match ready::wait_ready(mode, &probe, cancel, child_exited) {
        Ok(outcome) => outcome,
        Err(e) => ReadyOutcome::TimedOut {
            waited: Duration::ZERO,
            last_error: Some(e.to_string()),
        },
    }
}

/// Waits for `READY=1` from an allowed sender; `next(wait)` is the next
/// notify message within `wait` (`Ok(None)`: none yet).
fn wait_notify(
    next: &mut dyn FnMut(Duration) -> std::result::Result<Option<NotifyMessage>, String>,
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
        match next(left.min(Duration::from_millis(50))) {
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
            Err(e) => ignored = Some(e),
        }
    }
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
    record
        .listeners
        .iter()
        .filter_map(|listener| listener.port)
        .try_for_each(|port| launch::check_port_owner(port, main_pid, stderr_tail))
}

/// Runs the instance to its end; returns porthold's exit code (the child's,
/// or 128+signal for a start cancelled by a signal). `signals` tells it what
/// the process received ([`signals::SignalWatcher`](crate::supervisor::signals::SignalWatcher)
/// for a launcher process).
///
/// The generation is forked from a dedicated [`Spawner`] thread; the instance
/// installs no signal handler and does not make the process a subreaper (an
/// embedder that wants orphans reaped calls [`reaper::adopt_orphans`] first).
///
/// # Errors
/// Before the child started: [`Error::NameTaken`] (exit 3), bind conflicts
/// ([`Error::PortInUse`]-like conflicts, exit 3), invalid options (exit 2),
/// [`Error::Launch`] for a spawn failure, an early exit, a readiness timeout
/// or a stolen port (exit 8, the child killed and reaped).
pub fn run(options: RunOptions, signals: impl SignalSource + 'static) -> Result<i32> {
    run_with(options, signals, Spawner::new()?)
}

/// [`run`] with the given [`Spawner`] (`porthold run` forks from its main
/// thread, which outlives the instance: [`Spawner::on_calling_thread`]).
///
/// # Errors
/// As [`run`].
pub fn run_with(
    options: RunOptions,
    signals: impl SignalSource + 'static,
    spawner: Spawner,
) -> Result<i32> {
    // 1. Signals: the embedder caught them before anything else; the inbox
    // turns them into cancellation, events and forwarded signals (polled by
    // this thread, or taken by a thread while the instance waits elsewhere).
    let ignored_in_child = signals.ignored_in_child();
    let cancel = CancelToken::new();
    let intake = SignalIntake {
        cancel: cancel.clone(),
        first_signal: Arc::default(),
        server_group: Arc::default(),
    };
    let mut inbox = Inbox::new(Box::new(signals), intake.clone())?;
    if options.ready != ReadyMode::Listen || options.handoff.is_some() {
        // The start waits for readiness: a stop request must cancel the wait.
        inbox.signals_to_thread()?;
    }

    // 2. The name.
    let mut instance = Instance::open(options, spawner)?;
    instance.server_group = intake.server_group.clone();
    instance.set_ignored_in_child(ignored_in_child);

    // 3-5. Bind, spawn, readiness: the lifecycle decides. (Signals that came
    // meanwhile are taken just before each boundary's cancellation check.)
    let started = instance.start(&cancel, &mut |boundary| {
        test_hooks::pause(&format!("run.{boundary:?}"));
        inbox.take_signals();
    });
    match started {
        Ok(_) => {}
        Err(StartFailure::Cancelled) => {
            // A signal (the only canceller here) ended the start: exit 128+signal.
            let code = lock(&intake.first_signal).map_or(130, |s| 128 + s.as_raw());
            instance.finish(Signal::TERM, TREE_GRACE)?;
            return Ok(code);
        }
        Err(StartFailure::Failed(error)) => return Err(error),
    }
    let Some(current) = instance.current() else {
        return Err(Error::Launch {
            message: "internal error: no generation after a start".into(),
        });
    };
    let main_pid = current.generation.pid();
    inbox.watch_exit(current)?;
    if let Some(server) = &instance.notify {
        forward_notify_messages(server.clone(), inbox.outbox());
    }
    if let Some(server) = instance.control.clone() {
        inbox.serve_control(server, control_handler(inbox.outbox()));
    }

    // 6. Ready.
    if !instance.options.quiet
        && let Some(record) = instance.record()
    {
        let name = &instance.options.name;
        let url = record.url("http").unwrap_or_else(|| name.clone());
        eprintln!("porthold: {name} ready on {url} (pid {main_pid})");
    }

    // 7. Serve until the child ends; forward signals; reload on request.
    let status = supervise(&mut instance, &inbox, &cancel);
    instance.finish(Signal::TERM, TREE_GRACE)?;
    Ok(exit_code(status))
}

/// What the control socket's sessions do with a request: a reload goes to
/// the serving loop, one at a time (a second one meanwhile is told so).
fn control_handler(outbox: Outbox) -> Arc<dyn Handler + Send> {
    let outbox = Mutex::new(outbox);
    let reloading = std::sync::atomic::AtomicBool::new(false);
    Arc::new(move |request: Request| -> Response {
        match request {
            Request::Reload { check, timeout_ms } => {
                if reloading.swap(true, Ordering::SeqCst) {
                    return Response::InProgress;
                }
                let timeout = Duration::from_millis(timeout_ms);
                let (reply, answer) = mpsc::channel();
                let sent = lock(&outbox)
                    .send(Event::Reload {
                        check,
                        timeout,
                        reply,
                    })
                    .is_ok();
                // The loop answers within the timeout (plus the rollback's
                // own bounded kill); it is gone when the instance ended.
                let response = if sent {
                    answer
                        .recv_timeout(timeout + TREE_GRACE * 4)
                        .unwrap_or_else(|_| Response::RolledBack {
                            reason: "the instance ended during the reload".into(),
                        })
                } else {
                    Response::RolledBack {
                        reason: "the instance has ended".into(),
                    }
                };
                reloading.store(false, Ordering::SeqCst);
                response
            }
            Request::Status => Response::Unsupported {
                reason: "status is read from the discovery record (`porthold ps`)".into(),
            },
        }
    })
}

/// Once the server is ready, passes every notify message on to the serving loop.
fn forward_notify_messages(server: Arc<NotifyServer>, events: Outbox) {
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

/// The serving loop: returns the current generation's exit status.
fn supervise(
    instance: &mut Instance,
    inbox: &Inbox,
    cancel: &CancelToken,
) -> std::process::ExitStatus {
    let mut kill_at: Option<Instant> = None;
    // Retired generations still draining: number and SIGKILL deadline.
    let mut draining: Vec<(u64, Instant)> = Vec::new();
    // Events a reload or restart took from the inbox while it waited (notify
    // messages included), for this loop to handle afterwards.
    let mut pending: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
    let mut stop_requests: Vec<Signal> = Vec::new();
    let mut last_publish = Instant::now();
    let mut publish_at: Option<Instant> = None;
    let options = instance.options.clone();
    // `--restart`: when the pending restart is due, the exit it follows, the
    // unhealthy streak's length, and when the current generation started.
    let mut restart_at: Option<(Instant, std::process::ExitStatus)> = None;
    let mut failures: u32 = 0;
    let mut current_since = Instant::now();
    loop {
        let Some(current) = instance.current() else {
            // Unreachable after a successful start; end as if killed.
            return std::os::unix::process::ExitStatusExt::from_raw(libc::SIGKILL);
        };
        let main_pid = current.generation.pid();
        if restart_at.is_none()
            && let Some(status) = current.generation.try_wait()
        {
            if kill_at.is_some() || cancel.is_cancelled() || !options.restart.restarts_after(status)
            {
                return status;
            }
            if current_since.elapsed() >= RESTART_HEALTHY {
                failures = 0;
            }
            if failures >= RESTART_MAX_FAILURES {
                eprintln!(
                    "porthold: {}: the server exited {} times without running {:?}; giving up ({status})",
                    options.name, RESTART_MAX_FAILURES, RESTART_HEALTHY
                );
                return status;
            }
            let delay = restart_delay(failures);
            failures += 1;
            if !options.quiet {
                eprintln!(
                    "porthold: {}: the server exited ({status}); starting it again in {delay:?}",
                    options.name
                );
            }
            instance.set_state(RecordState::Starting);
            restart_at = Some((Instant::now() + delay, status));
        }
        let deadline = [kill_at, publish_at, restart_at.map(|(at, _)| at)]
            .into_iter()
            .flatten()
            .chain(draining.iter().map(|(_, at)| *at))
            .min();
        let event = if let Some(event) = pending.pop_front() {
            Some(event)
        } else {
            match deadline {
                Some(at) => {
                    match inbox.recv_timeout(at.saturating_duration_since(Instant::now())) {
                        Ok(event) => Some(event),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => None,
                    }
                }
                None => inbox.recv().ok(),
            }
        };
        match event {
            // Reaped here, by its own pid; only the current generation's exit
            // ends the loop (at its first check). A retired generation that
            // ended is forgotten.
            Some(Event::ChildExited(number)) => {
                let current = instance.current().map(|g| g.number);
                if let Some(index) = instance.generations.iter().position(|g| g.number == number)
                    && instance.generations[index].generation.try_wait().is_some()
                    && Some(number) != current
                {
                    let retired = instance.generations.remove(index);
                    // Whatever its tree left behind goes with it.
                    retired.generation.stop(Signal::KILL, Duration::ZERO);
                    draining.retain(|(n, _)| *n != number);
                    instance.forget_generation(retired.generation.pid());
                    let drained = instance.record_drained(number);
                    let _ = instance.republish();
                    if !options.quiet
                        && let Some(ms) = drained
                    {
                        eprintln!(
                            "porthold: {}: generation {number} ended {ms} ms after it was retired",
                            options.name
                        );
                    }
                }
            }
            Some(Event::Reload {
                check,
                timeout,
                reply,
            }) => {
                let response = if kill_at.is_some() {
                    Response::RolledBack {
                        reason: "the instance is stopping".into(),
                    }
                } else if restart_at.is_some() {
                    Response::RolledBack {
                        reason: "the server exited and is being restarted".into(),
                    }
                } else {
                    let mut deferred = Vec::new();
                    // The reload waits for more than the inbox: a stop request
                    // must cancel it meanwhile.
                    let outcome = inbox.signals_to_thread().and_then(|()| {
                        instance.reload(check.as_deref(), timeout, cancel, inbox, &mut deferred)
                    });
                    pending.extend(deferred);
                    match outcome {
                        Ok(reloaded) => {
                            if let Some(current) = instance.current() {
                                let _ = inbox.watch_exit(current);
                            }
                            draining
                                .push((reloaded.retired, Instant::now() + options.drain_timeout));
                            if !options.quiet {
                                eprintln!(
                                    "porthold: {} reloaded: generation {} (pid {}) serves, ready in {} ms",
                                    options.name, reloaded.number, reloaded.pid, reloaded.ready_ms
                                );
                            }
                            Response::Reloaded { pid: reloaded.pid }
                        }
                        Err(Error::RolledBack { reason }) => {
                            eprintln!("porthold: {} reload rolled back: {reason}", options.name);
                            Response::RolledBack { reason }
                        }
                        Err(other) => Response::Unsupported {
                            reason: other.to_string(),
                        },
                    }
                };
                let _ = reply.send(response);
            }
            Some(Event::Signal(_)) if restart_at.is_some() => {
                // Nothing runs: a stop request ends the instance with the last exit.
                if let Some((_, status)) = restart_at {
                    return status;
                }
            }
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
                    if let Some(record) = instance.record.as_mut() {
                        record.state = RecordState::Stopping;
                    }
                    let _ = instance.republish();
                    last_publish = Instant::now();
                    publish_at = None;
                }
                tree::signal_group(main_pid, forwarded);
            }
            Some(Event::Notify(message)) => {
                if !notify::accepts(options.notify_access, main_pid, message.pid) {
                    continue;
                }
                let Some(record) = instance.record.as_mut() else {
                    continue;
                };
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
                        let _ = instance.republish();
                        last_publish = Instant::now();
                    } else {
                        publish_at.get_or_insert(due);
                    }
                }
            }
            None => {
                let now = Instant::now();
                if let Some((at, status)) = restart_at
                    && now >= at
                {
                    let mut deferred = Vec::new();
                    let next = instance.generations.last().map_or(1, |g| g.number + 1);
                    let restarted = match inbox.signals_to_thread() {
                        Ok(()) => instance.restart(cancel, inbox, &mut deferred),
                        Err(error) => Err(StartFailure::Failed(error)),
                    };
                    pending.extend(deferred);
                    let ready_ms = u64::try_from(now.elapsed().as_millis()).unwrap_or(u64::MAX);
                    match &restarted {
                        Ok((number, _)) => instance.record_event(
                            *number,
                            GenerationCause::Restart,
                            Ok((Some(ready_ms), None)),
                        ),
                        Err(StartFailure::Failed(error)) => instance.record_event(
                            next,
                            GenerationCause::Restart,
                            Err(error.to_string()),
                        ),
                        Err(StartFailure::Cancelled) => {}
                    }
                    let _ = instance.republish();
                    match restarted {
                        Ok((number, pid)) => {
                            restart_at = None;
                            current_since = Instant::now();
                            if let Some(current) = instance.current() {
                                let _ = inbox.watch_exit(current);
                            }
                            if !options.quiet {
                                eprintln!(
                                    "porthold: {}: restarted: generation {number} (pid {pid})",
                                    options.name
                                );
                            }
                        }
                        Err(StartFailure::Cancelled) => return status,
                        Err(StartFailure::Failed(error)) => {
                            if failures >= RESTART_MAX_FAILURES {
                                eprintln!("porthold: {}: giving up: {error}", options.name);
                                return status;
                            }
                            let delay = restart_delay(failures);
                            failures += 1;
                            eprintln!(
                                "porthold: {}: the restart failed ({error}); trying again in {delay:?}",
                                options.name
                            );
                            restart_at = Some((Instant::now() + delay, status));
                        }
                    }
                    continue;
                }
                if publish_at.is_some_and(|at| now >= at) {
                    let _ = instance.republish();
                    last_publish = now;
                    publish_at = None;
                }
                for (number, _) in draining.iter().filter(|(_, at)| now >= *at) {
                    if let Some(retired) = instance.generations.iter().find(|g| g.number == *number)
                    {
                        retired.generation.signal(Signal::KILL);
                    }
                }
                draining.retain(|(_, at)| now < *at);
                if kill_at.is_some_and(|at| now >= at) {
                    tree::signal_group(main_pid, Signal::KILL);
                    kill_at = None;
                } else if deadline.is_none() {
                    // The channel closed: nobody can tell us about the child any more.
                    if let Some(current) = instance.current()
                        && let Some(status) =
                            current.generation.wait_timeout(Duration::from_secs(3600))
                    {
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
    use crate::supervisor::generation::TAIL_BYTES;

    #[test]
    fn stop_signals_parse_with_or_without_the_sig_prefix() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::TERM);
        assert_eq!(parse_signal("sigint").unwrap(), Signal::INT);
        assert!(parse_signal("TERMINATE").is_err());
    }

    #[test]
    fn restart_delays_grow_by_half_from_100ms_up_to_10s() {
        let delays: Vec<u128> = (0..12).map(|n| restart_delay(n).as_millis()).collect();
        assert_eq!(&delays[..4], &[100, 150, 225, 337]);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert!(restart_delay(11) < RESTART_MAX_DELAY);
        assert_eq!(restart_delay(12), RESTART_MAX_DELAY);
        assert_eq!(restart_delay(u32::MAX), RESTART_MAX_DELAY);
        assert_eq!(
            RestartPolicy::parse("on-failure").unwrap(),
            RestartPolicy::OnFailure
        );
        assert!(RestartPolicy::parse("sometimes").is_err());
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
