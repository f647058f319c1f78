//! `porthold list`: the reservations, and whether something listens on each now.

use crate::stdout::outln;
use std::collections::HashMap;
use std::process::ExitCode;

use clap::Args;
use porthold::net::owner::{Proto, bound_sockets};
use porthold::registry::{ListFilter, OwnerStatus};

use super::{open_existing_registry, print_json, shown};
use crate::ctx::Ctx;
use crate::output::{reservation_json, table};

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show leases (from `porthold pick`) instead of reservations: port, owner, expiry, listening.
    #[arg(long, conflicts_with_all = ["path", "project", "tag"])]
    pub leases: bool,
    /// Only keys at or under this path.
    #[arg(long, value_name = "PATH")]
    pub path: Option<std::path::PathBuf>,
    /// Only keys with this project label.
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
    /// Only keys with this tag.
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
}

/// Runs `list`.
pub fn run(args: ListArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if args.leases {
        return run_leases(ctx);
    }
    let filter = ListFilter {
        path: args
            .path
            .map(|p| porthold::key::resolve_path(&ctx.cwd.join(p))),
        project: args.project,
        tag: args.tag,
    };
    let rows = match open_existing_registry(ctx)? {
        Some(registry) => registry.list(&filter)?,
        None => Vec::new(),
    };
    let listeners = if rows.is_empty() {
        HashMap::new()
    } else {
        tcp_listeners()
    };
    let instances = if rows.is_empty() {
        Vec::new()
    } else {
        super::instances::live_instances_quietly(ctx)
    };
    let on_port = |port| super::instances::instance_on_port(&instances, port);
    if ctx.json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut value = reservation_json(r);
                value["listening"] = listeners.contains_key(&r.port).into();
                value["listener"] = match listeners.get(&r.port) {
                    Some(Some((pid, comm))) => serde_json::json!({ "pid": pid, "command": comm }),
                    _ => serde_json::Value::Null,
                };
                value["instance"] = super::instances::instance_brief_json(on_port(r.port));
                value
            })
            .collect();
        print_json(&serde_json::json!({ "reservations": items }));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        ctx.note("no reservations");
        return Ok(ExitCode::SUCCESS);
    }
    let body = rows
        .iter()
        .map(|r| {
            let listening = match (listeners.get(&r.port), on_port(r.port)) {
                (Some(_), Some(live)) => format!("yes ({})", super::instances::instance_text(live)),
                (Some(Some((pid, comm))), None) => format!("yes (pid {pid} {comm})"),
                (Some(None), None) => "yes".to_string(),
                (None, _) => "no".to_string(),
            };
            vec![
                r.port.to_string(),
                shown(&r.path),
                r.tag.clone(),
                r.project.clone().unwrap_or_default(),
                r.task.clone().unwrap_or_default(),
                porthold::time::rfc3339(r.last_used_at_ms),
                listening,
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &[
                "PORT",
                "PATH",
                "TAG",
                "PROJECT",
                "TASK",
                "LAST USED",
                "LISTENING"
            ],
            body
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// Every TCP port something is bound on, with an owner when knowable: one
/// pass over /proc for all rows, instead of one per port.
fn tcp_listeners() -> HashMap<u16, Option<(u32, String)>> {
    let mut listeners: HashMap<u16, Option<(u32, String)>> = HashMap::new();
    for socket in bound_sockets()
        .into_iter()
        .filter(|s| s.proto == Proto::Tcp)
    {
        let owner = socket.owner.map(|o| (o.pid, o.comm));
        let entry = listeners.entry(socket.port).or_insert(None);
        if entry.is_none() {
            *entry = owner;
        }
    }
    listeners
}

/// `list --leases`.
fn run_leases(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let leases = match open_existing_registry(ctx)? {
        Some(registry) => registry.leases()?,
        None => Vec::new(),
    };
    let listeners = if leases.is_empty() {
        HashMap::new()
    } else {
        tcp_listeners()
    };
    let statuses: Vec<OwnerStatus> = leases.iter().map(|l| l.owner_status()).collect();
    if ctx.json {
        let items: Vec<_> = leases
            .iter()
            .zip(&statuses)
            .map(|(lease, status)| {
                let mut value = super::pick::lease_json(lease);
                value["owner"]["status"] = serde_json::to_value(status).unwrap_or_default();
                value["listening"] = listeners.contains_key(&lease.port).into();
                value["listener"] = match listeners.get(&lease.port) {
                    Some(Some((pid, comm))) => serde_json::json!({ "pid": pid, "command": comm }),
                    _ => serde_json::Value::Null,
                };
                value
            })
            .collect();
        print_json(&serde_json::json!({ "leases": items }));
        return Ok(ExitCode::SUCCESS);
    }
    if leases.is_empty() {
        ctx.note("no leases");
        return Ok(ExitCode::SUCCESS);
    }
    let body = leases
        .iter()
        .zip(&statuses)
        .map(|(lease, status)| {
            let owner = match status {
                OwnerStatus::Alive => format!("{} (alive)", lease.owner.pid),
                OwnerStatus::Dead => format!("{} (exited)", lease.owner.pid),
                OwnerStatus::Replaced => format!("{} (pid reused)", lease.owner.pid),
            };
            let listening = match listeners.get(&lease.port) {
                Some(Some((pid, comm))) => format!("yes (pid {pid} {comm})"),
                Some(None) => "yes".to_string(),
                None => "no".to_string(),
            };
            vec![
                lease.port.to_string(),
                owner,
                porthold::time::rfc3339(lease.created_at_ms),
                lease
                    .expires_at_ms
                    .map(porthold::time::rfc3339)
                    .unwrap_or_else(|| "never".into()),
                listening,
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &["PORT", "OWNER PID", "LEASED", "EXPIRES", "LISTENING"],
            body
        )
    );
    Ok(ExitCode::SUCCESS)
}
