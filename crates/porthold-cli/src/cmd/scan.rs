//! `porthold scan` and `porthold port-info`: what listens, who owns it, and
//! what the registry says about it.

use crate::stdout::outln;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use porthold::net::owner::{Proto, SocketEntry};
use porthold::net::{KernelPorts, Occupancy, PortRange, SystemProbe};
use porthold::registry::{Reservation, ScanEntry};

use super::{open_existing_registry, open_registry, print_json, shown};
use crate::ctx::Ctx;
use crate::output::{reservation_json, table};

/// Arguments of `scan`.
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Exclude every unreserved port found listening, so it is never handed out.
    #[arg(long)]
    pub autoexclude: bool,
    /// Only ports in this range (A-B) [default: the configured pool].
    #[arg(long, value_name = "A-B")]
    pub range: Option<String>,
}

/// Arguments of `port-info`.
#[derive(Debug, Args)]
pub struct PortInfoArgs {
    /// The port.
    #[arg(value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
}

fn proto_name(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

fn holder_text(r: &Reservation) -> String {
    match r.lease_pid {
        Some(pid) => format!("leased to pid {pid}"),
        None if r.tag.is_empty() => format!("reserved by {}", shown(&r.path)),
        None => format!("reserved by {} (tag {})", shown(&r.path), r.tag),
    }
}

fn socket_json(s: &SocketEntry) -> serde_json::Value {
    serde_json::json!({
        "proto": proto_name(s.proto),
        "addr": s.addr.to_string(),
        "port": s.port,
        "uid": s.uid,
        "pid": s.owner.as_ref().map(|o| o.pid),
        "command": s.owner.as_ref().map(|o| o.comm.clone()),
    })
}

fn owner_text(s: &SocketEntry) -> (String, String) {
    match &s.owner {
        Some(o) => (o.pid.to_string(), o.comm.clone()),
        None => ("-".into(), "owner unknown".into()),
    }
}

/// Runs `scan`.
pub fn run_scan(args: ScanArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let ranges: Vec<PortRange> = match &args.range {
        Some(text) => vec![text.parse().context("reading --range")?],
        None => {
            let kernel = KernelPorts::read();
            ctx.pool(&ctx.config, None, &kernel)?.ranges().to_vec()
        }
    };
    let mut registry = if args.autoexclude {
        Some(open_registry(ctx)?)
    } else {
        open_existing_registry(ctx)?
    };
    let mut entries: Vec<ScanEntry> = Vec::new();
    for range in &ranges {
        entries.extend(porthold::registry::scan(registry.as_ref(), *range)?);
    }
    let autoexcluded = match (&mut registry, args.autoexclude) {
        (Some(registry), true) => registry.autoexclude(&entries)?,
        _ => Vec::new(),
    };
    let instances = if entries.is_empty() {
        Vec::new()
    } else {
        super::instances::live_instances_quietly(ctx)
    };
    let on_port = |port| super::instances::instance_on_port(&instances, port);
    if ctx.json {
        let listeners: Vec<_> = entries
            .iter()
            .map(|e| {
                let mut value = socket_json(&e.socket);
                value["instance"] = super::instances::instance_brief_json(on_port(e.socket.port));
                value["reserved"] = e.reservation.is_some().into();
                value["reservation"] = e
                    .reservation
                    .as_ref()
                    .map_or(serde_json::Value::Null, reservation_json);
                value["excluded"] = (e.excluded || autoexcluded.contains(&e.socket.port)).into();
                value
            })
            .collect();
        print_json(&serde_json::json!({
            "ranges": ranges.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "listeners": listeners,
            "autoexcluded": autoexcluded,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        ctx.note("nothing listens in the range");
    } else {
        let rows = entries
            .iter()
            .map(|e| {
                let (pid, mut command) = owner_text(&e.socket);
                if let Some(live) = on_port(e.socket.port) {
                    command = format!("{command}, {}", super::instances::instance_text(live));
                }
                let status = match &e.reservation {
                    Some(r) => holder_text(r),
                    None if autoexcluded.contains(&e.socket.port) => {
                        "unreserved (now excluded)".to_string()
                    }
                    None if e.excluded => "unreserved (excluded)".to_string(),
                    None => "unreserved".to_string(),
                };
                vec![
                    e.socket.port.to_string(),
                    proto_name(e.socket.proto).to_string(),
                    e.socket.addr.to_string(),
                    pid,
                    command,
                    status,
                ]
            })
            .collect();
        outln!(
            "{}",
            table(
                &["PORT", "PROTO", "ADDRESS", "PID", "COMMAND", "STATUS"],
                rows
            )
        );
    }
    if !autoexcluded.is_empty() {
        ctx.note(format!(
            "excluded {} port(s): {}",
            autoexcluded.len(),
            autoexcluded
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `port-info`.
pub fn run_port_info(args: PortInfoArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let registry = open_existing_registry(ctx)?;
    let info = porthold::registry::port_info(registry.as_ref(), args.port, &SystemProbe)?;
    let occupancy = match info.occupancy {
        Occupancy::Free => "free",
        Occupancy::Busy => "in use",
        Occupancy::Unusable => "not bindable by this user",
    };
    let instances = super::instances::live_instances_quietly(ctx);
    let instance = super::instances::instance_on_port(&instances, info.port);
    if ctx.json {
        print_json(&serde_json::json!({
            "port": info.port,
            "reservation": info.reservation.as_ref().map_or(serde_json::Value::Null, reservation_json),
            "exclusions": info.exclusions.iter().map(super::exclude::exclusion_json).collect::<Vec<_>>(),
            "occupancy": match info.occupancy {
                Occupancy::Free => "free",
                Occupancy::Busy => "busy",
                Occupancy::Unusable => "unusable",
            },
            "sockets": info.sockets.iter().map(|s| {
                let mut value = socket_json(s);
                value["instance"] = super::instances::instance_brief_json(instance);
                value
            }).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = vec![format!("port:        {}", info.port)];
    lines.push(format!(
        "reservation: {}",
        info.reservation
            .as_ref()
            .map_or("none".to_string(), holder_text)
    ));
    lines.push(format!(
        "excluded:    {}",
        if info.exclusions.is_empty() {
            "no".to_string()
        } else {
            info.exclusions
                .iter()
                .map(|x| match &x.note {
                    Some(note) => format!("yes ({}: {note})", x.range()),
                    None => format!("yes ({})", x.range()),
                })
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    lines.push(format!("occupancy:   {occupancy}"));
    if info.sockets.is_empty() {
        lines.push("listeners:   none".to_string());
    } else {
        for (i, s) in info.sockets.iter().enumerate() {
            let (pid, command) = owner_text(s);
            let mut owner = if s.owner.is_some() {
                format!("pid {pid} ({command})")
            } else {
                command
            };
            if let Some(live) = instance {
                owner = format!("{owner}, {}", super::instances::instance_text(live));
            }
            lines.push(format!(
                "{}{} {} {owner}",
                if i == 0 {
                    "listeners:   "
                } else {
                    "             "
                },
                proto_name(s.proto),
                s.addr
            ));
        }
    }
    outln!("{}", lines.join("\n"));
    Ok(ExitCode::SUCCESS)
}
