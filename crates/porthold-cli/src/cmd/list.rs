//! `porthold list`: the reservations, and whether something listens on each now.

use crate::stdout::outln;
use std::collections::HashMap;
use std::process::ExitCode;

use clap::Args;
use porthold::net::owner::{Proto, bound_sockets};
use porthold::registry::ListFilter;

use super::{open_existing_registry, print_json, shown};
use crate::ctx::Ctx;
use crate::output::{reservation_json, table};

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
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
    // One pass over /proc for all rows, instead of one per port.
    let mut listeners: HashMap<u16, Option<(u32, String)>> = HashMap::new();
    if !rows.is_empty() {
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
    }
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
