//! `porthold url`, `ps`, `wait` and `stop`: finding and stopping running
//! instances through their discovery records (docs/discovery.md).
//!
//! Every lookup goes through the library's identity-checked liveness
//! ([`porthold::discovery::probe`]); nothing here deletes a record, and `stop`
//! signals the launcher through a pidfd opened for its recorded identity, so a
//! recycled pid is never signalled.

use crate::stdout::outln;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use porthold::discovery::{self, Key, LiveRecord, Record, StopOutcome};
use serde_json::{Value, json};

use super::{KeyArgs, print_json};
use crate::ctx::Ctx;
use crate::output::table;

/// Which instance: `--name`, or the key (`--path`, `--tag`) whose default name is used.
#[derive(Debug, Args, Clone, Default)]
pub struct InstanceArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// The instance name [default: <basename of path>-<tag or "default">-<16 hex of SHA-256 of path and tag>].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// An instance selected by name, or by key (then the record's key must match).
#[derive(Debug, Clone)]
pub struct Selection {
    /// The instance name to look up.
    pub name: String,
    /// The key asked for, when the selection was by key.
    pub key: Option<Key>,
}

impl InstanceArgs {
    /// The instance these flags select.
    pub fn resolve(&self, ctx: &Ctx) -> anyhow::Result<Selection> {
        if let Some(name) = &self.name {
            if self.key.path.is_some() || self.key.tag.is_some() {
                anyhow::bail!(porthold::Error::invalid(
                    "--name cannot be combined with --path or --tag",
                    Some("a name already selects one instance; drop --path/--tag".into()),
                ));
            }
            discovery::validate_name(name)?;
            return Ok(Selection {
                name: name.clone(),
                key: None,
            });
        }
        let key = self.key.resolve(ctx, false)?;
        Ok(Selection {
            name: discovery::default_name(&key.path, &key.tag),
            key: Some(Key::new(&key.path, &key.tag)),
        })
    }
}

/// Arguments of `url`.
#[derive(Debug, Args)]
pub struct UrlArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// The URL scheme: a letter, then letters, digits, `+`, `.` or `-` (lower case).
    #[arg(long, default_value = "http", value_name = "SCHEME", value_parser = parse_scheme)]
    pub scheme: String,
}

/// Accepts a URL scheme of the form `[a-z][a-z0-9+.-]*`.
fn parse_scheme(text: &str) -> Result<String, String> {
    let mut bytes = text.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    if first_ok
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'.' | b'-')
        })
    {
        Ok(text.to_string())
    } else {
        Err(format!(
            "`{text}` is not a URL scheme: want a lower-case letter, then lower-case letters, digits, `+`, `.` or `-`"
        ))
    }
}

/// Arguments of `ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only instances of this project directory (every tag unless --tag is given).
    #[arg(long, value_name = "PATH")]
    pub path: Option<std::path::PathBuf>,
    /// Only instances with this tag (of --path, or of the project of the working directory).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
}

/// Arguments of `wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Give up after this long (exit 1).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub timeout: String,
}

/// Arguments of `stop`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:\n  \
    porthold stop --tag web          # the instance of this project's key (tag web)\n  \
    porthold stop --all-tags         # every instance of this project, any tag\n  \
    porthold stop --all --kill       # every live instance of this user, SIGKILL if stubborn")]
pub struct StopArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Stop every live instance of the project path, whatever its tag.
    #[arg(long, conflicts_with_all = ["name", "tag", "all"])]
    pub all_tags: bool,
    /// Stop every live instance of this user (in this runtime directory).
    #[arg(long, conflicts_with_all = ["name", "tag", "path"])]
    pub all: bool,
    /// Wait this long for the instance to end after SIGTERM (then exit 5, or SIGKILL with
    /// --kill) [default: the instance's drain timeout plus 5s].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// SIGKILL the server's whole process tree, then the launcher, when it has not ended within --timeout.
    #[arg(long)]
    pub kill: bool,
}

/// Arguments of `reload`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLES:\n  \
    porthold reload                       # the instance of this directory\n  \
    porthold reload --name api --check 'cargo build --release'")]
pub struct ReloadArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// A pre-flight shell command (with the server's environment); when it fails,
    /// nothing is started or stopped (exit 7).
    #[arg(long, value_name = "CMD")]
    pub check: Option<String>,
    /// Roll back when the new generation is not ready and confirmed within this long.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub timeout: String,
}

fn duration(text: &str, flag: &str) -> anyhow::Result<Duration> {
    porthold::duration::parse(text).with_context(|| format!("in {flag}"))
}

/// A not-found error (exit 1) for a record that was rejected, after a warning saying why.
fn rejected(ctx: &Ctx, name: &str, err: &porthold::Error) -> anyhow::Error {
    ctx.warn(format!("{err}"));
    porthold::Error::NotFound(format!(
        "no live instance `{name}` in `{}` (its record was rejected)",
        ctx.runtime_dir.display()
    ))
    .into()
}

/// The live instance selected, or a not-found error (exit 1) that says why.
///
/// A rejected record (symlink, foreign owner, unparsable, unknown major
/// schema) is no live instance, with a warning; a record of another key under
/// the selected key's default name is no live instance of this key.
fn live(ctx: &Ctx, selection: &Selection) -> anyhow::Result<LiveRecord> {
    let name = &selection.name;
    let probe = match discovery::probe(&ctx.runtime_dir, name) {
        Ok(probe) => probe,
        Err(err @ porthold::Error::BadRecord { .. }) => return Err(rejected(ctx, name, &err)),
        Err(err) => return Err(err.into()),
    };
    match probe.record {
        Some(record) if probe.liveness.is_alive() => {
            if let Some(key) = &selection.key
                && !record.is_for(key)
            {
                return Err(porthold::Error::NotFound(format!(
                    "no live instance for key {key}: `{name}` runs for key {}",
                    record.key
                ))
                .into());
            }
            Ok(LiveRecord {
                record,
                liveness: probe.liveness,
                path: ctx.runtime_dir.join(format!("{name}.json")),
            })
        }
        _ => Err(porthold::Error::NotFound(format!(
            "no live instance `{name}` in `{}` ({})",
            ctx.runtime_dir.display(),
            probe.liveness
        ))
        .into()),
    }
}

/// Every live instance, warning about each rejected record.
fn live_instances(ctx: &Ctx) -> anyhow::Result<Vec<LiveRecord>> {
    let listing = discovery::list_with_rejections(&ctx.runtime_dir)?;
    for err in &listing.rejected {
        ctx.warn(format!("{err}"));
    }
    Ok(listing.live)
}

/// The live instance (of this user, in this runtime directory) that listens
/// on `port`, if any: how `list`, `scan`, `port-info` and `reserve` tell
/// porthold's own instance from a foreign listener.
pub fn instance_on_port(instances: &[LiveRecord], port: u16) -> Option<&LiveRecord> {
    instances.iter().find(|live| live.record.listens_on(port))
}

/// Every live instance, or none when the runtime directory cannot be read
/// (for commands where instances only annotate other output).
pub fn live_instances_quietly(ctx: &Ctx) -> Vec<LiveRecord> {
    discovery::list(&ctx.runtime_dir).unwrap_or_default()
}

/// `instance shop-web-… (server pid 41240)` for tables.
pub fn instance_text(live: &LiveRecord) -> String {
    match live.record.child_pid {
        Some(child) => format!("instance {} (server pid {child})", live.record.name),
        None => format!(
            "instance {} (launcher pid {})",
            live.record.name, live.record.pid
        ),
    }
}

/// The short JSON description of the instance on a port.
pub fn instance_brief_json(live: Option<&LiveRecord>) -> Value {
    match live {
        Some(live) => json!({
            "name": live.record.name,
            "key": live.record.key,
            "pid": live.record.pid,
            "child_pid": live.record.child_pid,
        }),
        None => Value::Null,
    }
}

/// Whether a reserve note only says that `key`'s own running instance holds
/// its port (which is what a reservation is for, so no warning is due).
pub fn note_is_about_own_instance(
    ctx: &Ctx,
    key: &porthold::key::Key,
    note: &porthold::registry::ReserveNote,
) -> bool {
    let porthold::registry::ReserveNote::InUse { port, .. } = note else {
        return false;
    };
    let wanted = Key::new(&key.path, &key.tag);
    instance_on_port(&live_instances_quietly(ctx), *port)
        .is_some_and(|live| live.record.is_for(&wanted))
}

/// The JSON object of one instance: the record plus `alive` and `uptime_ms`.
pub fn instance_json(live: &LiveRecord) -> Value {
    let mut value = serde_json::to_value(&live.record).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("liveness".into(), json!(live.liveness.describe()));
        object.insert("uptime_ms".into(), json!(uptime_ms(&live.record)));
    }
    value
}

/// The current generation, then any other live one with its state and
/// age: `3 (2 draining 4s)`.
fn generations_text(record: &Record) -> String {
    let now = porthold::time::now_ms().max(0) as u64;
    let others: Vec<String> = record
        .generations
        .iter()
        .filter(|g| g.number != record.generation)
        .map(|g| {
            let state = match g.state {
                porthold::discovery::GenerationState::Starting => "starting",
                porthold::discovery::GenerationState::Ready => "ready",
                porthold::discovery::GenerationState::Draining => "draining",
                _ => "unknown",
            };
            format!(
                "{} {state} {}",
                g.number,
                human_uptime(now.saturating_sub(g.started_at))
            )
        })
        .collect();
    if others.is_empty() {
        record.generation.to_string()
    } else {
        format!("{} ({})", record.generation, others.join(", "))
    }
}

fn uptime_ms(record: &Record) -> u64 {
    (porthold::time::now_ms().max(0) as u64).saturating_sub(record.started_at)
}

fn human_uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn listeners_text(record: &Record) -> String {
    record
        .listeners
        .iter()
        .map(|l| match l.port {
            Some(_) => format!(
                "{}={}://{}",
                l.name,
                serde_json::to_value(l.proto)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                l.socket_addr().map(|a| a.to_string()).unwrap_or_default()
            ),
            None => format!("{}=unix://{}", l.name, l.addr),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `porthold url`: prints the first IP listener's URL; exit 1 without a live instance.
pub fn run_url(args: UrlArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let selection = args.instance.resolve(ctx)?;
    let name = &selection.name;
    let live = live(ctx, &selection)?;
    let url = live.record.url(&args.scheme).ok_or_else(|| {
        porthold::Error::NotFound(format!(
            "instance `{name}` has no TCP or UDP listener (only Unix sockets)"
        ))
    })?;
    if ctx.json {
        print_json(&json!({ "url": url, "name": name, "instance": instance_json(&live) }));
    } else {
        outln!("{url}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `porthold ps`: every live instance (of the key or path asked for).
pub fn run_ps(args: PsArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut all = live_instances(ctx)?;
    if args.path.is_some() || args.tag.is_some() {
        let key_args = KeyArgs {
            allow_unrelated_path: true,
            path: args.path.clone(),
            tag: args.tag.clone(),
        };
        let key = key_args.resolve(ctx, false)?;
        let wanted = Key::new(&key.path, &key.tag);
        all.retain(|live| {
            live.record.key.path == wanted.path
                && (args.tag.is_none() || live.record.key.tag == wanted.tag)
        });
    }
    if ctx.json {
        let instances: Vec<Value> = all.iter().map(instance_json).collect();
        print_json(&json!({ "instances": instances }));
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        if !ctx.quiet {
            eprintln!("no live instances in `{}`", ctx.runtime_dir.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows = all
        .iter()
        .map(|live| {
            let r = &live.record;
            vec![
                r.name.clone(),
                r.key.to_string(),
                r.pid.to_string(),
                r.child_pid.map(|p| p.to_string()).unwrap_or_default(),
                generations_text(r),
                r.state.to_string(),
                listeners_text(r),
                human_uptime(uptime_ms(r)),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &[
                "NAME",
                "KEY",
                "PID",
                "CHILD",
                "GEN",
                "STATE",
                "LISTENERS",
                "UPTIME"
            ],
            rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// `porthold wait`: blocks until the instance is live and ready; exit 1 on timeout.
pub fn run_wait(args: WaitArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let selection = args.instance.resolve(ctx)?;
    let name = &selection.name;
    let timeout = duration(&args.timeout, "--timeout")?;
    let live = match discovery::wait_for_key(
        &ctx.runtime_dir,
        name,
        selection.key.as_ref(),
        None,
        true,
        timeout,
    ) {
        Ok(live) => live,
        Err(err @ porthold::Error::BadRecord { .. }) => return Err(rejected(ctx, name, &err)),
        Err(err) => return Err(err.into()),
    };
    if ctx.json {
        print_json(&instance_json(&live));
    } else if let Some(url) = live.record.url("http") {
        outln!("{url}");
    } else {
        outln!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `porthold stop`: SIGTERM to the launcher (identity-checked), then wait;
/// with `--all-tags`/`--all`, every matching live instance.
pub fn run_stop(args: StopArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let timeout = args
        .timeout
        .as_deref()
        .map(|t| duration(t, "--timeout"))
        .transpose()?;
    if args.all || args.all_tags {
        let mut targets = live_instances(ctx)?;
        if args.all_tags {
            let key = args.instance.key.resolve(ctx, false)?;
            let path = key.path.to_string_lossy().into_owned();
            targets.retain(|live| live.record.key.path == path);
        }
        let mut reports = Vec::new();
        let mut busy = None;
        for live in &targets {
            match stop_one(live, timeout, args.kill) {
                Ok(report) => reports.push(report),
                Err(err) => {
                    ctx.warn(format!("{err:#}"));
                    busy.get_or_insert(err);
                }
            }
        }
        if ctx.json {
            let stopped: Vec<Value> = reports.iter().map(StopReport::json).collect();
            print_json(&json!({ "stopped": stopped }));
        } else if !ctx.quiet {
            for report in &reports {
                report.say();
            }
            if targets.is_empty() {
                eprintln!("porthold: no live instance to stop");
            }
        }
        return match busy {
            Some(err) => Err(err),
            None => Ok(ExitCode::SUCCESS),
        };
    }

    let selection = args.instance.resolve(ctx)?;
    let live = match live(ctx, &selection) {
        Ok(live) => live,
        Err(err) => return Err(not_found_with_hints(ctx, &selection, err)),
    };
    let report = stop_one(&live, timeout, args.kill)?;
    if ctx.json {
        print_json(&report.json());
    } else if !ctx.quiet {
        report.say();
    }
    Ok(ExitCode::SUCCESS)
}

/// What `stop` did to one instance.
struct StopReport {
    name: String,
    pid: u32,
    outcome: StopOutcome,
}

impl StopReport {
    fn json(&self) -> Value {
        json!({ "name": self.name, "pid": self.pid, "outcome": self.outcome.as_str() })
    }

    fn say(&self) {
        eprintln!(
            "porthold: {} (pid {}) {}",
            self.name,
            self.pid,
            self.outcome.as_str()
        );
    }
}

fn stop_one(
    live: &LiveRecord,
    timeout: Option<Duration>,
    kill: bool,
) -> anyhow::Result<StopReport> {
    let name = live.record.name.clone();
    let pid = live.record.pid;
    let timeout = timeout.unwrap_or_else(|| discovery::default_stop_timeout(live));
    let outcome = discovery::stop(live, timeout, kill)?;
    if outcome == StopOutcome::StillRunning {
        anyhow::bail!(porthold::Error::Busy {
            what: format!("instance `{name}` (pid {pid})"),
            detail: format!(
                "it did not stop within {} of SIGTERM (use --kill to SIGKILL its tree)",
                porthold::duration::format(timeout)
            ),
        });
    }
    Ok(StopReport { name, pid, outcome })
}

/// Plain `stop` found nothing: end what a dead launcher left under that name
/// (taking its lock, as a new owner would), and name the live instances of
/// the same path, so a wrong `--tag` is easy to correct.
fn not_found_with_hints(ctx: &Ctx, selection: &Selection, err: anyhow::Error) -> anyhow::Error {
    if let Ok(probe) = discovery::probe(&ctx.runtime_dir, &selection.name)
        && probe.liveness == discovery::Liveness::StaleLockFree
        && let Ok(id) = discovery::new_instance_id()
        && let Ok(publisher) = discovery::Publisher::acquire(&ctx.runtime_dir, &selection.name, &id)
    {
        let ended = publisher.leftovers_ended();
        if publisher.finish().is_ok() && ended > 0 {
            ctx.warn(format!(
                "`{}` had no live launcher; ended {ended} leftover process(es) of its server",
                selection.name
            ));
        }
    }
    let Some(key) = &selection.key else {
        return err;
    };
    let Ok(all) = discovery::list(&ctx.runtime_dir) else {
        return err;
    };
    let same_path: Vec<String> = all
        .iter()
        .filter(|live| live.record.key.path == key.path)
        .map(|live| format!("`{}` (key {})", live.record.name, live.record.key))
        .collect();
    match err.downcast_ref::<porthold::Error>() {
        Some(porthold::Error::NotFound(message)) if !same_path.is_empty() => {
            porthold::Error::NotFound(format!(
                "{message}; live instances of `{}`: {}",
                key.path,
                same_path.join(", ")
            ))
            .into()
        }
        _ => err,
    }
}

/// `porthold reload`: asks the instance's launcher, through its control
/// socket, for a new generation; prints the new server's pid.
pub fn run_reload(args: ReloadArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    use porthold::control::{ControlClient, Request, Response};
    let timeout = duration(&args.timeout, "--timeout")?;
    let selection = args.instance.resolve(ctx)?;
    let live = live(ctx, &selection).map_err(|e| not_found_with_hints(ctx, &selection, e))?;
    let name = &live.record.name;
    let Some(socket) = live.record.control_socket.as_deref() else {
        anyhow::bail!(porthold::Error::invalid(
            format!("instance {name} has no control socket"),
            Some("start it with a porthold run that supports reload".into()),
        ));
    };
    let mut client = ControlClient::connect(std::path::Path::new(socket))?;
    let request = Request::Reload {
        check: args.check.clone(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    // The launcher answers at the commit or the rollback, within the timeout
    // plus the rollback's bounded kill.
    let response = client.request(&request, timeout + Duration::from_secs(30))?;
    match response {
        Response::Reloaded { pid } => {
            crate::stdout::outln!("{pid}");
            Ok(ExitCode::SUCCESS)
        }
        Response::RolledBack { reason } => Err(porthold::Error::RolledBack { reason }.into()),
        Response::InProgress => Err(porthold::Error::Busy {
            what: format!("instance {name}"),
            detail: "reload in progress".into(),
        }
        .into()),
        Response::Unsupported { reason } => Err(porthold::Error::invalid(reason, None).into()),
        other => Err(porthold::Error::ControlProtocol {
            reason: format!("unexpected reply {other:?}"),
        }
        .into()),
    }
}
