//! `porthold reserve`: a stable port for a key, printed alone on stdout.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use porthold::net::{KernelPorts, SystemProbe};
use porthold::pool::{Pool, parse_pool};
use porthold::registry::ReserveRequest;

use super::{KeyArgs, open_registry, print_json};
use crate::ctx::Ctx;
use crate::output::reservation_json;

/// Arguments of `reserve`.
#[derive(Debug, Args)]
#[command(
    after_help = "EXAMPLES:\n  PORT=$(porthold reserve --tag web)\n  porthold reserve --port 8080 --or-any"
)]
pub struct ReserveArgs {
    /// Move the key to a requested --port, or change its sticky --project/--task.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub key: KeyArgs,
    /// With --port: accept another free port when the requested one is taken.
    #[arg(long, requires = "port")]
    pub or_any: bool,
    /// Allocate from these ranges (A-B[,C-D]) instead of the default pool.
    #[arg(long, value_name = "RANGES", env = "PORTHOLD_POOL")]
    pub pool: Option<String>,
    /// Ask for this port; a taken port is an error unless --or-any.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// A sticky project label.
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
    /// Move the key to a new free port.
    #[arg(long, conflicts_with = "port")]
    pub reassign: bool,
    /// Do not trial-bind candidate ports.
    #[arg(long)]
    pub skip_occupancy_check: bool,
    /// A sticky task label.
    #[arg(long, value_name = "NAME")]
    pub task: Option<String>,
}

/// Runs `reserve`.
pub fn run(args: ReserveArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let key = args.key.resolve(ctx, true)?;
    let kernel = KernelPorts::read();
    let configured = args
        .pool
        .as_deref()
        .map(parse_pool)
        .transpose()
        .context("reading --pool")?;
    let (pool, warnings) = Pool::resolve(configured, &kernel)?;
    for warning in warnings {
        ctx.warn(warning);
    }
    let mut request = ReserveRequest::new(key, pool, kernel);
    request.port = args.port;
    request.or_any = args.or_any;
    request.project = args.project;
    request.task = args.task;
    request.force = args.force;
    request.reassign = args.reassign;

    let mut registry = open_registry(ctx)?;
    let probe = SystemProbe;
    let probe: Option<&dyn porthold::net::OccupancyProbe> = if args.skip_occupancy_check {
        None
    } else {
        Some(&probe)
    };
    let outcome = registry.reserve(&request, probe)?;
    for note in &outcome.notes {
        ctx.warn(note);
    }
    if ctx.json {
        let mut value = reservation_json(&outcome.reservation);
        value["created"] = outcome.created.into();
        value["notes"] = outcome
            .notes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .into();
        print_json(&value);
    } else {
        println!("{}", outcome.reservation.port);
    }
    Ok(ExitCode::SUCCESS)
}
