//! A stateful counter server that hands its state over with `porthold::handoff`.
//!
//! Protocol on the listening socket (LISTEN_FDS fd 3): one command per line,
//! `incr` → the new value, `get` → the current value, each answered as `N\n`.
//! An `incr` is answered only once the new value is durable: the state file
//! `<state-dir>/counter.json` (`{"value": N, "generation": G}`) is written to a
//! temp file, fsynced, renamed over, and the directory fsynced. Every write is
//! tagged with the writer's generation: one more than the generation that wrote
//! the state it opened (or `$PORTHOLD_GENERATION` when the supervisor sets it).
//!
//! ```text
//! counter [--state-dir DIR] [--hang-after-begin-if FILE]
//! ```
//!
//! For fault and ordering tests (test-only, off unless set):
//! - `PORTHOLD_COUNTER_WRITE_LOG=FILE`: every durable state write also appends
//!   `<generation> <value>` to FILE (O_APPEND, one write per line), and so do
//!   the changes of who holds the state lock: `lock <generation>` once a
//!   generation has taken it, `seal <generation>` right before the incumbent
//!   releases it (after its sealing write), `resume <generation>` once a
//!   rolled-back incumbent has taken it again; so a test can check that no
//!   generation ever writes without holding the lock;
//! - `PORTHOLD_COUNTER_EXIT_AT_FILE=FILE`: as a successor, exit 1 at the step
//!   FILE names, when it exists: `before-hello`, `after-hello` (before
//!   `Begin`), `after-begin` (before taking the lock), `after-lock` (before
//!   `Ready`); or misbehave after `Begin`: `garbage-after-begin` (a frame
//!   that is not JSON), `stop-after-begin` (SIGSTOP itself: no heartbeats);
//! - `PORTHOLD_COUNTER_HANG_ON_PREPARE_FILE=FILE`: as an incumbent, when FILE
//!   exists at `PrepareHandoff`, stop accepting and never answer again.
//!
//! `--state-dir` defaults to `$PORTHOLD_STATE_DIR`. Without
//! `PORTHOLD_HANDOFF_FD` it is a plain server. Under `porthold run --handoff`
//! it is the incumbent or the successor (`PORTHOLD_HANDOFF_ROLE`); as a
//! successor, `--hang-after-begin-if FILE` makes it stop responding after
//! `Begin` when FILE exists (for fault tests).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use porthold::handoff::{DataDirLock, Incumbent, IncumbentHooks, Role, Served, Successor};
use rustix::event::{PollFd, PollFlags, poll};
use serde::{Deserialize, Serialize};

const BUILD_ID: &str = concat!("counter ", env!("CARGO_PKG_VERSION"));
const STATE_FILE: &str = "counter.json";

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq)]
struct Stored {
    value: u64,
    generation: u64,
}

struct State {
    value: u64,
    generation: u64,
    /// Not accepting and not executing commands: a handoff is in progress.
    paused: bool,
    /// Not accepting (a handoff began); open connections may still finish.
    draining: bool,
    open_connections: u64,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
    /// Written to wake the accept loop out of `poll` when pausing.
    wake_tx: OwnedFd,
    wake_rx: OwnedFd,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read_stored(dir: &Path) -> Result<Stored, String> {
    match std::fs::read(dir.join(STATE_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: {e}", dir.join(STATE_FILE).display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(e) => Err(format!("reading {}: {e}", dir.join(STATE_FILE).display())),
    }
}

/// Appends `<generation> <value>` to the write log, if one is configured.
fn log_write(stored: Stored) -> std::io::Result<()> {
    log_line(&format!("{} {}", stored.generation, stored.value))
}

/// Appends one line to the write log, if one is configured (one `write`
/// with O_APPEND: lines of several processes never mix).
fn log_line(line: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("PORTHOLD_COUNTER_WRITE_LOG") else {
        return Ok(());
    };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)?;
    file.write_all(format!("{line}\n").as_bytes())
}

/// Test-only exit points of a successor (see the module docs).
fn exit_if_asked(step: &str) {
    if let Some(path) = std::env::var_os("PORTHOLD_COUNTER_EXIT_AT_FILE")
        && let Ok(text) = std::fs::read_to_string(path)
        && text.trim() == step
    {
        eprintln!("counter: exiting at {step} (test fault)");
        std::process::exit(1);
    }
}

/// Test-only faults of a successor after `Begin` (see the module docs):
/// `garbage-after-begin` sends a frame whose body is not JSON, then waits;
/// `stop-after-begin` stops the whole process (SIGSTOP: no more heartbeats).
fn misbehave_if_asked(raw: &std::os::unix::net::UnixStream) {
    let Some(path) = std::env::var_os("PORTHOLD_COUNTER_EXIT_AT_FILE") else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    match text.trim() {
        "garbage-after-begin" => {
            eprintln!("counter: sending garbage after begin (test fault)");
            let body = b"not json";
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(body);
            let _ = (&*raw).write_all(&frame);
            loop {
                std::thread::park();
            }
        }
        "stop-after-begin" => {
            eprintln!("counter: stopping after begin (test fault)");
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::STOP,
            );
        }
        _ => {}
    }
}

fn write_stored(dir: &Path, stored: Stored) -> std::io::Result<()> {
    log_write(stored)?;
    let tmp = dir.join(format!("{STATE_FILE}.tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(&stored).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

fn open_state(dir: &Path) -> Result<(u64, u64), String> {
    let stored = read_stored(dir)?;
    let generation = match std::env::var("PORTHOLD_GENERATION") {
        Ok(g) => g
            .parse()
            .map_err(|_| format!("PORTHOLD_GENERATION={g} is not a number"))?,
        Err(_) => stored.generation + 1,
    };
    Ok((stored.value, generation))
}

fn handle(shared: Arc<Shared>, conn: TcpStream) {
    let Ok(reader) = conn.try_clone() else { return };
    let mut out = conn;
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        let reply = {
            let mut st = shared.lock();
            while st.paused {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            match line.trim() {
                "get" => format!("{}\n", st.value),
                "incr" => {
                    let next = Stored {
                        value: st.value + 1,
                        generation: st.generation,
                    };
                    // Durable before acknowledged; under the lock, so writes are ordered.
                    match write_stored(&shared.dir, next) {
                        Ok(()) => {
                            st.value = next.value;
                            format!("{}\n", st.value)
                        }
                        Err(e) => format!("error {e}\n"),
                    }
                }
                other => format!("error unknown command `{other}`\n"),
            }
        };
        if out.write_all(reply.as_bytes()).is_err() {
            break;
        }
    }
    shared.lock().open_connections -= 1;
    shared.changed.notify_all();
}

/// Accepts while not paused; while paused, leaves connections in the shared
/// backlog for whoever accepts next (this generation after a rollback, or the successor).
fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    loop {
        {
            let mut st = shared.lock();
            while st.paused || st.draining {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        let mut fds = [
            PollFd::new(&listener, PollFlags::IN),
            PollFd::new(&shared.wake_rx, PollFlags::IN),
        ];
        if poll(&mut fds, None).is_err() {
            continue;
        }
        if !fds[1].revents().is_empty() {
            let mut buf = [0u8; 64];
            let _ = rustix::io::read(shared.wake_rx.as_fd(), &mut buf);
        }
        let mut st = shared.lock();
        if st.paused || st.draining {
            continue;
        }
        match listener.accept() {
            Ok((conn, _)) => {
                let _ = conn.set_nonblocking(false);
                st.open_connections += 1;
                drop(st);
                let shared = shared.clone();
                std::thread::spawn(move || handle(shared, conn));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {}
        }
    }
}

struct Hooks(Arc<Shared>);

impl IncumbentHooks for Hooks {
    fn drain(&mut self, deadline: Duration) -> u64 {
        let mut st = self.0.lock();
        // Stop accepting; let the open connections finish (for up to half
        // the deadline), then block commands. Holding the lock means no
        // command is half done.
        st.draining = true;
        let _ = rustix::io::write(self.0.wake_tx.as_fd(), b"p");
        let until = std::time::Instant::now() + deadline / 2;
        while st.open_connections > 0 {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .0
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.paused = true;
        if let Some(path) = std::env::var_os("PORTHOLD_COUNTER_HANG_ON_PREPARE_FILE")
            && Path::new(&path).exists()
        {
            // Fault injection: paused, holding the lock, never answering.
            drop(st);
            loop {
                std::thread::park();
            }
        }
        st.open_connections
    }

    fn seal(&mut self, progress: &mut dyn FnMut(u64, u64)) -> Result<(), String> {
        let st = self.0.lock();
        let stored = Stored {
            value: st.value,
            generation: st.generation,
        };
        write_stored(&self.0.dir, stored).map_err(|e| e.to_string())?;
        // The library releases the lock as soon as this returns.
        log_line(&format!("seal {}", st.generation)).map_err(|e| e.to_string())?;
        progress(1, 1);
        Ok(())
    }

    fn resume(&mut self, relocked: bool) {
        let mut st = self.0.lock();
        if relocked {
            let _ = log_line(&format!("resume {}", st.generation));
            if let Ok(stored) = read_stored(&self.0.dir) {
                st.value = stored.value;
            }
        }
        st.paused = false;
        st.draining = false;
        self.0.changed.notify_all();
    }

    fn session_closed(&mut self, error: &porthold::handoff::HandoffError) {
        eprintln!("counter: handoff session closed: {error}");
    }
}

struct Args {
    state_dir: PathBuf,
    hang_after_begin_if: Option<PathBuf>,
}

fn parse_args(args: Vec<std::ffi::OsString>) -> Result<Args, String> {
    let mut state_dir = std::env::var_os("PORTHOLD_STATE_DIR").map(PathBuf::from);
    let mut hang = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--state-dir") => state_dir = args.next().map(PathBuf::from),
            Some("--hang-after-begin-if") => hang = args.next().map(PathBuf::from),
            _ => return Err(format!("unknown argument {}", arg.to_string_lossy())),
        }
    }
    Ok(Args {
        state_dir: state_dir.ok_or("no --state-dir and no PORTHOLD_STATE_DIR")?,
        hang_after_begin_if: hang,
    })
}

/// The whole server; `args` without the program name. The handoff role and
/// channel come from `PORTHOLD_HANDOFF_ROLE` / `PORTHOLD_HANDOFF_FD`.
pub fn run(args: Vec<std::ffi::OsString>) -> Result<(), String> {
    let role = porthold::handoff::role_from_env().map_err(|e| e.to_string())?;
    let handoff = match role {
        Some(role) => {
            let channel = porthold::handoff::channel_from_env()
                .map_err(|e| e.to_string())?
                .ok_or("PORTHOLD_HANDOFF_ROLE is set but PORTHOLD_HANDOFF_FD is not")?;
            Some((role, channel))
        }
        None => None,
    };
    run_with(args, handoff)
}

/// The whole server, with the handoff role and channel given (or none: a plain server).
pub fn run_with(
    args: Vec<std::ffi::OsString>,
    handoff: Option<(Role, std::os::unix::net::UnixStream)>,
) -> Result<(), String> {
    let args = parse_args(args)?;
    let mut sockets = porthold::activation::listeners().map_err(|e| e.to_string())?;
    if sockets.is_empty() {
        return Err("no listening socket passed (LISTEN_FDS)".into());
    }
    let listener = sockets
        .remove(0)
        .into_tcp_listener()
        .map_err(|e| e.to_string())?;
    let (role, channel) = match handoff {
        Some((role, channel)) => (Some(role), Some(channel)),
        None => (None, None),
    };
    let mut channel = channel;
    let successor = match role {
        Some(Role::Successor) => {
            let stream = channel.take().ok_or("no handoff channel")?;
            // For the test-only faults after `Begin` that bypass the library.
            let raw = stream.try_clone().map_err(|e| e.to_string())?;
            exit_if_asked("before-hello");
            let successor = Successor::new(stream, BUILD_ID).map_err(|e| e.to_string())?;
            exit_if_asked("after-hello");
            let begun = successor.wait_begin().map_err(|e| e.to_string())?;
            exit_if_asked("after-begin");
            misbehave_if_asked(&raw);
            if let Some(flag) = &args.hang_after_begin_if
                && flag.exists()
            {
                // Fault injection: stop responding, keep the channel open.
                loop {
                    std::thread::park();
                }
            }
            Some(begun)
        }
        _ => None,
    };
    let lock = DataDirLock::acquire(&args.state_dir).map_err(|e| e.to_string())?;
    if role == Some(Role::Successor) {
        exit_if_asked("after-lock");
    }
    let (value, generation) = open_state(&args.state_dir)?;
    log_line(&format!("lock {generation}")).map_err(|e| e.to_string())?;
    let (wake_rx, wake_tx) = rustix::pipe::pipe_with(
        rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
    )
    .map_err(|e| e.to_string())?;
    let shared = Arc::new(Shared {
        dir: args.state_dir.clone(),
        state: Mutex::new(State {
            value,
            generation,
            paused: false,
            draining: false,
            open_connections: 0,
        }),
        changed: Condvar::new(),
        wake_tx,
        wake_rx,
    });
    let accepting = {
        let shared = shared.clone();
        std::thread::spawn(move || accept_loop(shared, listener))
    };
    let incumbent = match (role, successor) {
        (Some(Role::Successor), Some(begun)) => Some(begun.ready(lock).map_err(|e| e.to_string())?),
        (Some(Role::Incumbent), _) => Some(
            Incumbent::new(channel.take().ok_or("no handoff channel")?, lock, BUILD_ID)
                .map_err(|e| e.to_string())?,
        ),
        _ => {
            // A plain server: hold the lock for as long as we serve.
            let _lock = lock;
            let _ = accepting.join();
            return Ok(());
        }
    };
    if let Some(mut incumbent) = incumbent {
        match incumbent
            .serve(&mut Hooks(shared.clone()))
            .map_err(|e| e.to_string())?
        {
            Served::Committed => return Ok(()),
            other => {
                eprintln!("counter: handoff channel ended ({other:?}); serving on");
                let _keep_lock = incumbent;
                let _ = accepting.join();
            }
        }
    }
    Ok(())
}

#[allow(dead_code)] // the tests include this file and call `run` themselves
fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("counter: {e}");
            ExitCode::FAILURE
        }
    }
}
