//! `porthold run`: bind first, hand the bound sockets to the server, wait for
//! readiness, publish it for discovery, and stay with it until it ends.
//!
//! This file turns flags into a [`porthold::supervisor::plan::PlanRequest`];
//! the library's plan decides the service, sockets, ports, readiness,
//! environment and name ([`porthold::supervisor::plan`]), and this file
//! renders the plan's notes and hands it to the instance. The order of work
//! and every race it avoids live in the library.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use porthold::net::SystemProbe;
use porthold::net::listen::ListenSpec;
use porthold::supervisor::instance::{self, RunOptions};
use porthold::supervisor::plan::{self, PlanNote, PlanRequest, PortChoice};
use porthold::supervisor::ready::ReadyMode;
use porthold::supervisor::signals::{HupAction, SignalPolicy, SignalWatcher};

use super::{KeyArgs, open_registry};
use crate::ctx::Ctx;

/// Arguments of `run`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:\n  \
    porthold run -- python3 -m myapp            # the server accepts on fd 3 (LISTEN_FDS)\n  \
    porthold run --ready http:/health -- ./server\n  \
    porthold run --listen web=tcp://127.0.0.1:0 --listen admin=unix:///tmp/a.sock -- ./server\n  \
    porthold run --no-fds -- sh -c 'exec python3 -m http.server \"$PORT\" --bind 127.0.0.1'\n  \
    porthold run --handoff --state-dir ./data -- ./db-server   # reload hands the state over")]
pub struct RunArgs {
    /// Listen backlog of the sockets porthold binds.
    #[arg(long, value_name = "N", default_value_t = porthold::net::listen::DEFAULT_BACKLOG)]
    pub backlog: u32,
    /// Grace period for the server to drain on stop before SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub drain_timeout: String,
    /// Bind a kernel-chosen port instead of the key's reserved port.
    #[arg(long, conflicts_with = "port")]
    pub ephemeral: bool,
    /// Reload by a stateful handoff instead of running two generations at once: each
    /// generation gets a private channel at the fd after its sockets (PORTHOLD_HANDOFF_FD,
    /// PORTHOLD_HANDOFF_ROLE), and `porthold reload` asks the serving one to drain and seal
    /// its state before the next one starts and takes it over (docs/handoff.md). Needs
    /// --state-dir.
    #[arg(long, requires = "state_dir")]
    pub handoff: bool,
    /// With --handoff: the bound of each handoff step from PrepareHandoff to the
    /// successor's Ready; a successor that misses it is killed and the incumbent resumes,
    /// an incumbent that misses it before sealing is killed and the next generation starts cold.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5s",
        requires = "handoff"
    )]
    pub handoff_deadline: String,
    /// With --handoff: the server's state directory, handed to every generation in
    /// PORTHOLD_STATE_DIR (porthold never takes its lock).
    #[arg(long, value_name = "DIR", requires = "handoff")]
    pub state_dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub key: KeyArgs,
    /// A socket to bind, `NAME=SPEC` (repeatable; fds follow this order): tcp://127.0.0.1:0,
    /// tcp://[::]:8080 (?v6only=0), udp://127.0.0.1:0, unix:///path/sock (?mode=0660).
    #[arg(long, value_name = "SPEC")]
    pub listen: Vec<String>,
    /// The instance name [default: <basename of path>-<tag or "default">-<16 hex of SHA-256 of path and tag>].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Leave LISTEN_PID out (LISTEN_FDS and LISTEN_FDNAMES stay): for a watcher that
    /// execs the real server as a grandchild (`cargo watch -x run`), whose pid the
    /// launcher cannot know.
    #[arg(long)]
    pub no_listen_pid: bool,
    /// Don't pass sockets: hold the port until just before the spawn, then check the
    /// child's tree bound it (for servers that can only bind by themselves).
    #[arg(long)]
    pub no_fds: bool,
    /// What SIGHUP to porthold (the terminal went away) does: stop the instance (stop
    /// signal, drain, kill), forward SIGHUP to the server, or reload it (a new generation
    /// on the same sockets, as `porthold reload`). Under `nohup` SIGHUP stays ignored,
    /// for porthold and the server.
    #[arg(long, value_name = "ACTION", default_value = "stop", value_parser = ["stop", "forward", "reload"])]
    pub on_hup: String,
    /// Who may send READY=1 in --ready notify: tree (the child and its descendants) or main.
    #[arg(long, value_name = "WHO", default_value = "tree")]
    pub notify_access: String,
    /// Bind this port (reserved for the key through the registry).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// The environment variable that receives the first socket's port.
    #[arg(long, value_name = "VAR", default_value = "PORT")]
    pub port_env: String,
    /// Readiness: listen, notify, tcp, http:/path, cmd:SHELL, delay:500ms
    /// [default: the service's `ready`, else listen (tcp with --no-fds)].
    #[arg(long, value_name = "MODE")]
    pub ready: Option<String>,
    /// In a reload with `listen`, `tcp` or `http:` readiness (which cannot tell two
    /// generations apart through one socket): how long the new generation must stay
    /// alive to count as ready (`notify` is exact: prefer it).
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub reload_delay: String,
    /// How long a reload's new generation must stay alive after it is ready, while
    /// the old one still serves, before the reload commits.
    #[arg(long, value_name = "DURATION", default_value = "500ms")]
    pub reload_confirm: String,
    /// Start the server again on the same sockets when it exits by itself: never,
    /// on-failure (a non-zero exit or a signal) or always; after 100ms, then 1.5x longer
    /// each time up to 10s (reset by 30s of uptime); 10 exits in a row end the instance.
    #[arg(long, value_name = "WHEN", default_value = "never", value_parser = ["never", "on-failure", "always"])]
    pub restart: String,
    /// Give up on readiness after this long (exit 8, the child killed).
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub ready_timeout: String,
    /// The signal that asks the server to stop (TERM, INT, QUIT, HUP, USR1, USR2).
    #[arg(long, value_name = "SIG", default_value = "TERM")]
    pub stop_signal: String,
    /// The server and its arguments; `{port}` and `{port:NAME}` are replaced by bound ports.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs the server; exits with its exit code.
pub fn run(args: RunArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    // Signals first, before the registry or the name lock: from here on no
    // signal can end porthold without cleanup (see supervisor::signals).
    let on_hup = HupAction::parse(&args.on_hup)?;
    let signals = SignalWatcher::install(SignalPolicy::new(on_hup))?;
    porthold::config::validate_env_name(&args.port_env).context("in --port-env")?;
    let key = args.key.resolve(ctx, true)?;
    let config = match &ctx.config.project_root {
        Some(root) if root == &key.path => ctx.config.clone(),
        _ if key.path.join("porthold.toml").exists() => ctx.config_for_project(&key.path)?,
        _ => ctx.config.clone(),
    };
    let listen = args
        .listen
        .iter()
        .map(|text| ListenSpec::parse(text).with_context(|| format!("in --listen {text}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let handoff = match (args.handoff, &args.state_dir) {
        // (clap makes --handoff require --state-dir.)
        (false, _) | (true, None) => None,
        (true, Some(dir)) => Some(instance::HandoffOptions {
            deadline: porthold::duration::parse(&args.handoff_deadline)
                .context("in --handoff-deadline")?,
            state_dir: std::path::absolute(dir)
                .with_context(|| format!("in --state-dir {}", dir.display()))?,
        }),
    };
    let ready = args
        .ready
        .as_deref()
        .map(|text| {
            text.parse::<ReadyMode>()
                .with_context(|| format!("in --ready {text}"))
        })
        .transpose()?;

    let mut request = PlanRequest::new(key.clone(), &config);
    request.port = match (args.port, args.ephemeral) {
        (Some(port), _) => PortChoice::Exact(port),
        (None, true) => PortChoice::Ephemeral,
        (None, false) => PortChoice::Reserved,
    };
    request.listen = listen;
    request.ready = ready;
    request.no_fds = args.no_fds;
    request.port_env = args.port_env.clone();
    request.name = args.name.clone();
    let mut pending = plan::prepare(request)?;
    render_notes(ctx, &key, pending.take_notes());
    // (Registry errors get run's hints from `exit::hint_for`.)
    let mut plan = if pending.needs_registry() {
        let mut registry = open_registry(ctx)?;
        pending.reserve(&mut registry, &SystemProbe)?
    } else {
        pending.with_ports(plan::Ports::default())?
    };
    render_notes(ctx, &key, std::mem::take(&mut plan.notes));
    let leased_port = plan.lease;

    let options = RunOptions {
        runtime_dir: ctx.runtime_dir.clone(),
        key: plan.discovery_key(),
        name: plan.name,
        listen: plan.listen,
        backlog: args.backlog,
        no_fds: plan.no_fds,
        ready: plan.ready,
        notify_access: porthold::activation::notify::NotifyAccess::parse(&args.notify_access)?,
        ready_timeout: porthold::duration::parse(&args.ready_timeout)
            .context("in --ready-timeout")?,
        drain_timeout: porthold::duration::parse(&args.drain_timeout)
            .context("in --drain-timeout")?,
        stop_signal: instance::parse_signal(&args.stop_signal)?,
        port_env: plan.port_env,
        extra_env: plan.extra_env,
        command: args.command,
        quiet: ctx.quiet,
        control_socket: true,
        reload_delay: porthold::duration::parse(&args.reload_delay).context("in --reload-delay")?,
        reload_confirm: porthold::duration::parse(&args.reload_confirm)
            .context("in --reload-confirm")?,
        restart: instance::RestartPolicy::parse(&args.restart)?,
        no_listen_pid: args.no_listen_pid,
        handoff,
    };
    // porthold owns its server's whole tree: orphans of the tree are
    // re-parented here and reaped, and the instance's end ends them too.
    porthold::supervisor::reaper::adopt_orphans_on_signal()?;
    // The main thread lives as long as the instance: it can fork the server
    // itself (the parent-death signal follows the forking thread).
    let spawner = porthold::supervisor::Spawner::on_calling_thread();
    let code = instance::run_with(options, signals, spawner);
    if let Some(port) = leased_port {
        release_own_lease(ctx, port);
    }
    let code = code?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)))
}

/// Tells the plan's notes on stderr, with run's words for them.
fn render_notes(ctx: &Ctx, key: &porthold::key::Key, notes: Vec<PlanNote>) {
    for note in notes {
        match &note {
            PlanNote::UnknownService {
                tag,
                project_file,
                services,
            } => ctx.warn(format!(
                "--tag {tag} names no service of {}; its services are: {}",
                project_file.display(),
                services.join(", ")
            )),
            PlanNote::Pool(warning) => ctx.warn(warning),
            PlanNote::Reserve(note) => {
                if !super::instances::note_is_about_own_instance(ctx, key, note) {
                    ctx.warn(crate::exit::note_for("run", note));
                }
            }
            // Exactly what reserve-group says about its members.
            PlanNote::GroupMember { note, .. } => {
                ctx.warn(crate::exit::note_for("reserve-group", note));
            }
            PlanNote::Autocleaned(cleaned) => super::group::note_cleaned(ctx, cleaned),
            PlanNote::Reclaimed(item) => ctx.note(super::pick::describe_reclaimed(item)),
            _ => ctx.warn(&note),
        }
    }
}

/// Releases the lease of `port` if it is still this launcher's (best effort:
/// a lease left behind is reclaimable once this launcher has exited).
fn release_own_lease(ctx: &Ctx, port: u16) {
    if let Ok(mut registry) = open_registry(ctx) {
        let _ = plan::release_own_lease(&mut registry, port);
    }
}
