//! `porthold reserve`: a stable port for a key, printed alone on stdout.

use crate::stdout::outln;
use std::process::ExitCode;

use clap::Args;
use porthold::net::{KernelPorts, SystemProbe};
use porthold::registry::{CleanPolicy, DEFAULT_EXPIRE_AFTER, ReserveRequest};

use super::{KeyArgs, open_registry, print_json};
use crate::ctx::Ctx;
use crate::output::reservation_json;

/// Arguments of `reserve`.
#[derive(Debug, Args)]
#[command(
    after_help = "EXAMPLES:\n  PORT=$(porthold reserve --tag web)\n  porthold reserve --port 8080 --or-any"
)]
pub struct ReserveArgs {
    /// When the pool is exhausted, do not remove reservations of deleted or long-unused projects.
    #[arg(long)]
    pub disable_autoclean: bool,
    /// Move the key to a requested --port, or change its sticky --project/--task.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub key: KeyArgs,
    /// With --port: accept another free port when the requested one is taken.
    #[arg(long, requires = "port")]
    pub or_any: bool,
    /// Allocate from these ranges (A-B[,C-D]) instead of the configured pool [env: PORTHOLD_POOL; config: pool.range].
    #[arg(long, value_name = "RANGES")]
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
    for (flag, label) in [("--project", &args.project), ("--task", &args.task)] {
        if let Some(label) = label {
            porthold::text::validate_label(flag, label)?;
        }
    }
    let key = args.key.resolve(ctx, true)?;
    let kernel = KernelPorts::read();
    let pool = ctx.pool(&ctx.config, args.pool.as_deref(), &kernel)?;
    let mut request = ReserveRequest::new(key, pool, kernel);
    request.port = args.port;
    request.or_any = args.or_any;
    request.project = args.project;
    request.task = args.task;
    request.force = args.force;
    request.reassign = args.reassign;
    request.excluded = ctx.config.excluded_ranges();

    let mut registry = open_registry(ctx)?;
    let probe = SystemProbe;
    let probe: Option<&dyn porthold::net::OccupancyProbe> = if args.skip_occupancy_check {
        None
    } else {
        Some(&probe)
    };
    let (outcome, cleaned) = if args.disable_autoclean {
        (registry.reserve(&request, probe)?, Vec::new())
    } else {
        let policy = CleanPolicy::autoclean(DEFAULT_EXPIRE_AFTER);
        registry.reserve_with_autoclean(&request, probe, &policy)?
    };
    let key = &request.key;
    let notes: Vec<String> = outcome
        .notes
        .iter()
        .filter(|note| !super::instances::note_is_about_own_instance(ctx, key, note))
        .map(|note| crate::exit::note_for("reserve", note))
        .collect();
    for note in &notes {
        ctx.warn(note);
    }
    if !cleaned.is_empty() && !ctx.json {
        ctx.note(format!(
            "the pool was exhausted; autoclean removed {} reservation(s):",
            cleaned.len()
        ));
        for item in &cleaned {
            ctx.note(format!("  {}", super::clean::describe(item)));
        }
    }
    if ctx.json {
        let mut value = reservation_json(&outcome.reservation);
        value["created"] = outcome.created.into();
        value["notes"] = notes.clone().into();
        value["cleaned"] = cleaned
            .iter()
            .map(super::clean::cleaned_json)
            .collect::<Vec<_>>()
            .into();
        print_json(&value);
    } else {
        outln!("{}", outcome.reservation.port);
    }
    // main exits next.
    registry.finish_before_exit();
    Ok(ExitCode::SUCCESS)
}
