//! `porthold run`: bind first, hand the bound sockets to the server, wait for
//! readiness, publish it for discovery, and stay with it until it ends.
//!
//! This file turns flags (and the project's `[services.<tag>]` table) into a
//! [`porthold::supervisor::instance::RunOptions`]; the order of work and every
//! race it avoids live in the library.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use porthold::discovery;
use porthold::net::listen::ListenSpec;
use porthold::net::{KernelPorts, SystemProbe};
use porthold::registry::ReserveRequest;
use porthold::supervisor::instance::{self, RunOptions};
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
    porthold run --no-fds -- sh -c 'exec python3 -m http.server \"$PORT\" --bind 127.0.0.1'")]
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
    #[command(flatten)]
    pub key: KeyArgs,
    /// A socket to bind, `NAME=SPEC` (repeatable; fds follow this order): tcp://127.0.0.1:0,
    /// tcp://[::]:8080 (?v6only=0), udp://127.0.0.1:0, unix:///path/sock (?mode=0660).
    #[arg(long, value_name = "SPEC")]
    pub listen: Vec<String>,
    /// The instance name [default: <basename of path>-<tag or "default">-<16 hex of SHA-256 of path and tag>].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Don't pass sockets: hold the port until just before the spawn, then check the
    /// child's tree bound it (for servers that can only bind by themselves).
    #[arg(long)]
    pub no_fds: bool,
    /// What SIGHUP to porthold (the terminal went away) does: stop the instance (stop
    /// signal, drain, kill) or forward SIGHUP to the server. Under `nohup` SIGHUP stays
    /// ignored, for porthold and the server.
    #[arg(long, value_name = "ACTION", default_value = "stop", value_parser = ["stop", "forward"])]
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
    // The project's services, when the key is that project (its path holds the
    // porthold.toml the config came from).
    let in_project = config.project_root.as_deref() == Some(key.path.as_path());
    let service = if in_project {
        config.services.get(&key.tag)
    } else {
        None
    };
    if in_project && service.is_none() && !key.tag.is_empty() && !config.services.is_empty() {
        ctx.warn(format!(
            "--tag {} names no service of {}; its services are: {}",
            key.tag,
            key.path.join(porthold::config::PROJECT_FILE).display(),
            config
                .services
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let name = match &args.name {
        Some(name) => {
            discovery::validate_name(name)?;
            name.clone()
        }
        None => discovery::default_name(&key.path, &key.tag),
    };
    let default_name = if key.tag.is_empty() {
        "default".to_string()
    } else {
        key.tag.clone()
    };
    // An explicit choice of socket wins over the service's reservation.
    let explicit = args.port.is_some() || args.ephemeral || !args.listen.is_empty();
    // The sockets: `--listen` flags, else the service's `listen` (already
    // checked at load, with file:line), else the default below.
    let specs: Vec<ListenSpec> = if args.listen.is_empty() {
        match service {
            Some(service) => service.listen_specs()?,
            None => Vec::new(),
        }
    } else {
        args.listen
            .iter()
            .map(|text| ListenSpec::parse(text).with_context(|| format!("in --listen {text}")))
            .collect::<anyhow::Result<_>>()?
    };
    porthold::net::listen::validate_listen_specs(&specs)?;
    // A server that binds by itself needs a number it can be told in
    // advance: lease one (owned by this launcher) instead of port 0.
    let leased_port = if specs.is_empty() && args.ephemeral && args.no_fds {
        Some(lease(ctx, &config)?)
    } else {
        None
    };
    let needs_reserved =
        (specs.is_empty() && !args.ephemeral) || specs.iter().any(ListenSpec::needs_reserved_port);

    // The key's port, and its siblings' ports (`API_PORT` for `run --tag web`).
    let mut reserved_port = leased_port;
    let mut sibling_ports: Vec<(String, u16)> = Vec::new();
    if let Some(service) = service
        && !explicit
    {
        // Exactly what reserve-group does (the whole group, atomically), so a
        // service run first and `autoreserve` later agree on every port. (Its
        // errors get run's hints from `exit::hint_for`.)
        let (outcome, _) =
            super::group::reserve_project_group(ctx, &config, &key.path, None, false, false)?;
        for (tag, member) in &outcome.members {
            if *tag == service.tag {
                reserved_port = Some(member.reservation.port);
            } else {
                sibling_ports.push((tag.clone(), member.reservation.port));
            }
        }
    } else {
        if needs_reserved {
            reserved_port = Some(reserve(ctx, &config, &key, args.port)?);
        }
        if service.is_some() {
            // Explicit choice: only siblings that are reserved already.
            let registry = open_registry(ctx)?;
            for tag in config.services.keys().filter(|t| **t != key.tag) {
                let sibling = porthold::key::Key {
                    path: key.path.clone(),
                    tag: tag.clone(),
                };
                if let Some(reservation) = registry.get(&sibling)? {
                    sibling_ports.push((tag.clone(), reservation.port));
                }
            }
        }
    }

    // `{port}` (or no port) means the key's reserved port.
    let specs: Vec<ListenSpec> = specs
        .into_iter()
        .map(|spec| match reserved_port {
            Some(port) if spec.needs_reserved_port() => spec.with_port(port),
            _ => spec,
        })
        .collect();
    let mut specs = specs;
    if specs.is_empty() {
        let port = reserved_port.unwrap_or(0);
        specs.push(
            ListenSpec::parse(&format!("{default_name}=tcp://127.0.0.1:{port}"))
                .context("building the default listener")?,
        );
    }

    let ready_text = args
        .ready
        .clone()
        .or_else(|| service.and_then(|s| s.ready.clone()))
        .unwrap_or_else(|| if args.no_fds { "tcp" } else { "listen" }.to_string());
    let ready: ReadyMode = ready_text
        .parse()
        .with_context(|| format!("in --ready {ready_text}"))?;
    let mut extra_env: Vec<(OsString, OsString)> = Vec::new();
    if let (Some(service), Some(port)) = (service, reserved_port)
        && service.env != args.port_env
    {
        extra_env.push((service.env.clone().into(), port.to_string().into()));
    }
    for (tag, port) in &sibling_ports {
        if let Some(sibling) = config.services.get(tag)
            && sibling.env != args.port_env
        {
            extra_env.push((sibling.env.clone().into(), port.to_string().into()));
        }
    }

    let options = RunOptions {
        runtime_dir: ctx.runtime_dir.clone(),
        name,
        key: discovery::Key {
            path: key.path.to_string_lossy().into_owned(),
            tag: key.tag.clone(),
        },
        listen: specs,
        backlog: args.backlog,
        no_fds: args.no_fds,
        ready,
        notify_access: porthold::activation::notify::NotifyAccess::parse(&args.notify_access)?,
        ready_timeout: porthold::duration::parse(&args.ready_timeout)
            .context("in --ready-timeout")?,
        drain_timeout: porthold::duration::parse(&args.drain_timeout)
            .context("in --drain-timeout")?,
        stop_signal: instance::parse_signal(&args.stop_signal)?,
        port_env: args.port_env.clone(),
        extra_env,
        command: args.command,
        quiet: ctx.quiet,
    };
    // porthold owns its server's whole tree: orphans of the tree are
    // re-parented here and reaped, and the instance's end ends them too.
    porthold::supervisor::reaper::adopt_orphans()?;
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

/// The key's port from the registry (reserving one, or `--port`, if needed).
fn reserve(
    ctx: &Ctx,
    config: &porthold::config::Config,
    key: &porthold::key::Key,
    port: Option<u16>,
) -> anyhow::Result<u16> {
    let kernel = KernelPorts::read();
    let pool = ctx.pool(config, None, &kernel)?;
    let mut request = ReserveRequest::new(key.clone(), pool, kernel);
    request.port = port;
    request.excluded = config.excluded_ranges();
    let mut registry = open_registry(ctx)?;
    let outcome = registry.reserve(&request, Some(&SystemProbe))?;
    for note in &outcome.notes {
        if !super::instances::note_is_about_own_instance(ctx, key, note) {
            ctx.warn(crate::exit::note_for("run", note));
        }
    }
    Ok(outcome.reservation.port)
}

/// A leased port for `--ephemeral --no-fds`, owned by this launcher, no TTL.
fn lease(ctx: &Ctx, config: &porthold::config::Config) -> anyhow::Result<u16> {
    let kernel = KernelPorts::read();
    let pool = ctx.pool(config, None, &kernel)?;
    let owner = porthold::identity::ProcessIdentity::current()?;
    let mut request = porthold::registry::PickRequest::new(owner, pool, kernel);
    request.ttl = None;
    let mut registry = open_registry(ctx)?;
    let outcome = registry.pick(&request, &SystemProbe)?;
    for item in &outcome.reclaimed {
        ctx.note(super::pick::describe_reclaimed(item));
    }
    outcome
        .leases
        .first()
        .map(|lease| lease.port)
        .ok_or_else(|| anyhow::anyhow!("pick returned no port"))
}

/// Releases the lease of `port` if it is still this launcher's (best effort:
/// a lease left behind is reclaimable once this launcher has exited).
fn release_own_lease(ctx: &Ctx, port: u16) {
    let (Ok(me), Ok(mut registry)) = (
        porthold::identity::ProcessIdentity::current(),
        open_registry(ctx),
    ) else {
        return;
    };
    let ours = registry.leases().is_ok_and(|leases| {
        leases
            .iter()
            .any(|l| l.port == port && l.owner.same_as(&me))
    });
    if ours {
        let _ = registry.release(&porthold::registry::ReleaseTarget::Port(port));
    }
}
