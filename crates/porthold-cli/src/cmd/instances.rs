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
use porthold::discovery::{self, LiveRecord, Record};
use porthold::identity::ProcessHandle;
use serde_json::{Value, json};

use super::{KeyArgs, print_json};
use crate::ctx::Ctx;
use crate::output::table;

/// Which instance: `--name`, or the key (`--path`, `--tag`) whose default name is used.
#[derive(Debug, Args, Clone, Default)]
pub struct InstanceArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// The instance name [default: <basename of path>-<tag or "default">-<8 hex of a hash of path>].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

impl InstanceArgs {
    /// The instance name these flags select.
    pub fn resolve_name(&self, ctx: &Ctx) -> anyhow::Result<String> {
        if let Some(name) = &self.name {
            if self.key.path.is_some() || self.key.tag.is_some() {
                anyhow::bail!(porthold::Error::invalid(
                    "--name cannot be combined with --path or --tag",
                    Some("a name already selects one instance; drop --path/--tag".into()),
                ));
            }
            discovery::validate_name(name)?;
            return Ok(name.clone());
        }
        let key = self.key.resolve(ctx, false)?;
        Ok(discovery::default_name(&key.path, &key.tag))
    }
}

/// Arguments of `url`.
#[derive(Debug, Args)]
pub struct UrlArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// The URL scheme.
    #[arg(long, default_value = "http", value_name = "SCHEME")]
    pub scheme: String,
}

/// Arguments of `ps`.
#[derive(Debug, Args)]
pub struct PsArgs {}

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
pub struct StopArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    /// Wait this long for the instance to end after SIGTERM (then exit 5, or SIGKILL with --kill).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub timeout: String,
    /// Send SIGKILL to the launcher when it has not ended within --timeout.
    #[arg(long)]
    pub kill: bool,
}

fn duration(text: &str, flag: &str) -> anyhow::Result<Duration> {
    porthold::duration::parse(text).with_context(|| format!("in {flag}"))
}

/// The live instance `name`, or a not-found error (exit 1) that says why.
fn live(ctx: &Ctx, name: &str) -> anyhow::Result<LiveRecord> {
    let probe = discovery::probe(&ctx.runtime_dir, name)?;
    match probe.record {
        Some(record) if probe.liveness.is_alive() => Ok(LiveRecord {
            record,
            liveness: probe.liveness,
            path: ctx.runtime_dir.join(format!("{name}.json")),
        }),
        _ => Err(porthold::Error::NotFound(format!(
            "no live instance `{name}` in `{}` ({})",
            ctx.runtime_dir.display(),
            probe.liveness
        ))
        .into()),
    }
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
    let name = args.instance.resolve_name(ctx)?;
    let live = live(ctx, &name)?;
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

/// `porthold ps`: every live instance.
pub fn run_ps(_args: PsArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let all = discovery::list(&ctx.runtime_dir)?;
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
            let key = if r.key.tag.is_empty() {
                r.key.path.clone()
            } else {
                format!("{} ({})", r.key.path, r.key.tag)
            };
            vec![
                r.name.clone(),
                key,
                r.pid.to_string(),
                r.child_pid.map(|p| p.to_string()).unwrap_or_default(),
                r.generation.to_string(),
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
    let name = args.instance.resolve_name(ctx)?;
    let timeout = duration(&args.timeout, "--timeout")?;
    let live = discovery::wait(&ctx.runtime_dir, &name, None, true, timeout)?;
    if ctx.json {
        print_json(&instance_json(&live));
    } else if let Some(url) = live.record.url("http") {
        outln!("{url}");
    } else {
        outln!("{name}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `porthold stop`: SIGTERM to the launcher (identity-checked), then wait.
pub fn run_stop(args: StopArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let name = args.instance.resolve_name(ctx)?;
    let timeout = duration(&args.timeout, "--timeout")?;
    let live = live(ctx, &name)?;
    if live.liveness != discovery::Liveness::Alive {
        anyhow::bail!(porthold::Error::invalid(
            format!(
                "instance `{name}` runs in another pid namespace; porthold cannot signal it from here"
            ),
            Some("stop it from inside its namespace".into()),
        ));
    }
    let identity = live.record.identity();
    let Some(handle) = ProcessHandle::open(&identity)? else {
        // It ended between the lookup and now: that is what we wanted.
        return report_stop(ctx, &name, identity.pid, "already stopped");
    };
    handle.signal(rustix::process::Signal::TERM)?;
    if handle.wait_exit(timeout) {
        return report_stop(ctx, &name, identity.pid, "stopped");
    }
    if !args.kill {
        anyhow::bail!(porthold::Error::Busy {
            what: format!("instance `{name}` (pid {})", identity.pid),
            detail: format!(
                "it did not stop within {} of SIGTERM (use --kill to SIGKILL it)",
                porthold::duration::format(timeout)
            ),
        });
    }
    handle.signal(rustix::process::Signal::KILL)?;
    // SIGKILL cannot be caught; the kernel only needs a moment to tear it down.
    if !handle.wait_exit(Duration::from_secs(10)) {
        anyhow::bail!(porthold::Error::Busy {
            what: format!("instance `{name}` (pid {})", identity.pid),
            detail: "it was still there 10s after SIGKILL".into(),
        });
    }
    report_stop(ctx, &name, identity.pid, "killed")
}

fn report_stop(ctx: &Ctx, name: &str, pid: u32, outcome: &str) -> anyhow::Result<ExitCode> {
    if ctx.json {
        print_json(&json!({ "name": name, "pid": pid, "outcome": outcome }));
    } else if !ctx.quiet {
        eprintln!("porthold: {name} (pid {pid}) {outcome}");
    }
    Ok(ExitCode::SUCCESS)
}
