//! `porthold pick`: lease free ports to a process (by default the caller's
//! parent, i.e. the test runner), one per line on stdout.

use crate::stdout::outln;
use std::process::ExitCode;

use clap::Args;
use porthold::identity::{ProcessIdentity, ppid_of};
use porthold::net::{KernelPorts, SystemProbe};
use porthold::registry::{Lease, MAX_PICK_COUNT, PickRequest, Reclaimed};

use super::{open_registry, print_json};
use crate::ctx::Ctx;

/// Arguments of `pick`.
#[derive(Debug, Args)]
#[command(
    after_help = "EXAMPLES:\n  PORT=$(porthold pick --owner-pid $$)\n  porthold pick --count 3 --ttl 30m --json\n\nA lease is reclaimed only when (its owner is gone or its TTL passed) and nothing\nlistens on the port, and never within 60 s of handout. `porthold release --port N`\nfrees one; `porthold list --leases` shows them."
)]
pub struct PickArgs {
    /// How many ports to lease.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_PICK_COUNT)))]
    pub count: u16,
    /// Test-only: never reclaim a lease younger than this (default 60s).
    #[arg(long, value_name = "DURATION", default_value = "60s", hide = true)]
    pub min_hold: String,
    /// The process that owns the leases [default: the caller's parent].
    #[arg(long, value_name = "PID", value_parser = clap::value_parser!(u32).range(1..))]
    pub owner_pid: Option<u32>,
    /// Lease from these ranges (A-B[,C-D]) instead of the configured pool; their part in the kernel's ephemeral range is never used [env: PORTHOLD_POOL; config: pool.range].
    #[arg(long, value_name = "RANGES")]
    pub pool: Option<String>,
    /// After this long a lease is reclaimable even while its owner lives, unless something listens on the port.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub ttl: String,
}

/// Runs `pick`.
pub fn run(args: PickArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let ttl = porthold::duration::parse(&args.ttl).map_err(|e| in_flag("--ttl", e))?;
    let min_hold =
        porthold::duration::parse(&args.min_hold).map_err(|e| in_flag("--min-hold", e))?;
    let owner_pid = match args.owner_pid {
        Some(pid) => pid,
        None => ppid_of(std::process::id()).ok_or_else(|| {
            porthold::Error::invalid(
                "cannot read this process's parent from /proc",
                Some("pass --owner-pid".into()),
            )
        })?,
    };
    let owner = ProcessIdentity::of(owner_pid)?.ok_or_else(|| {
        porthold::Error::invalid(
            format!("no running process has pid {owner_pid}"),
            Some("pass the pid of the test process that will use the ports".into()),
        )
    })?;
    ctx.explain(format!(
        "lease owner pid {} (start time {}, boot {})",
        owner.pid, owner.starttime, owner.boot_id
    ));
    let kernel = KernelPorts::read();
    let pool = ctx.pool(&ctx.config, args.pool.as_deref(), &kernel)?;
    let mut request = PickRequest::new(owner, pool, kernel);
    request.count = args.count;
    request.ttl = Some(ttl);
    request.min_hold = min_hold;

    let mut registry = open_registry(ctx)?;
    let outcome = registry.pick(&request, &SystemProbe)?;
    if !ctx.json {
        for item in &outcome.reclaimed {
            ctx.note(describe_reclaimed(item));
        }
    }
    if ctx.json {
        print_json(&serde_json::json!({
            "ports": outcome.leases.iter().map(|l| l.port).collect::<Vec<_>>(),
            "leases": outcome.leases.iter().map(lease_json).collect::<Vec<_>>(),
            "reclaimed": outcome.reclaimed.iter().map(reclaimed_json).collect::<Vec<_>>(),
        }));
    } else {
        for lease in &outcome.leases {
            outln!("{}", lease.port);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn in_flag(flag: &str, e: porthold::Error) -> anyhow::Error {
    anyhow::Error::from(e).context(format!("in {flag}"))
}

/// One line about a reclaimed lease.
pub fn describe_reclaimed(item: &Reclaimed) -> String {
    format!(
        "reclaimed port {} leased to pid {}: {}",
        item.lease.port, item.lease.owner.pid, item.reason
    )
}

/// A lease as JSON (`pick --json`, `list --leases --json`).
pub fn lease_json(lease: &Lease) -> serde_json::Value {
    serde_json::json!({
        "port": lease.port,
        "owner": {
            "pid": lease.owner.pid,
            "starttime": lease.owner.starttime,
            "boot_id": lease.owner.boot_id,
        },
        "index": lease.index,
        "created_at": porthold::time::rfc3339(lease.created_at_ms),
        "expires_at": lease.expires_at_ms.map(porthold::time::rfc3339),
    })
}

fn reclaimed_json(item: &Reclaimed) -> serde_json::Value {
    let mut value = lease_json(&item.lease);
    value["reason"] = serde_json::to_value(item.reason).unwrap_or_default();
    value
}
