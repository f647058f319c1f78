//! `porthold reserve-group` and `porthold autoreserve`: every service of the
//! project's `porthold.toml` reserved in one transaction (all or nothing),
//! then printed as a table, JSON, or shell assignments.

use crate::stdout::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use porthold::config::Config;
use porthold::net::{KernelPorts, OccupancyProbe, SystemProbe};
use porthold::registry::{GroupOutcome, GroupRequest};

use super::{open_registry, print_json, shown};
use crate::ctx::Ctx;
use crate::output::{reservation_json, table};
use crate::shell;

/// Arguments shared by `reserve-group` and `autoreserve`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    /// Allow a --path that is neither an ancestor nor a descendant of the working directory.
    #[arg(long)]
    pub allow_unrelated_path: bool,
    /// Don't remove reservations of deleted directories when the pool is exhausted.
    #[arg(long)]
    pub disable_autoclean: bool,
    /// The project directory holding porthold.toml [default: nearest ancestor with porthold.toml].
    #[arg(long, value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Allocate from these ranges (A-B[,C-D]) instead of the configured pool.
    #[arg(long, value_name = "RANGES")]
    pub pool: Option<String>,
    /// Do not trial-bind candidate ports.
    #[arg(long)]
    pub skip_occupancy_check: bool,
}

/// Arguments of `reserve-group`.
#[derive(Debug, Args)]
pub struct ReserveGroupArgs {
    #[command(flatten)]
    pub group: GroupArgs,
}

/// Output formats of `autoreserve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// `export NAME='port'` lines for `eval`.
    Export,
    /// `NAME='port'` lines for a .env file.
    Dotenv,
    /// The JSON object of docs/cli-json.md.
    Json,
    /// A table.
    Human,
}

/// Arguments of `autoreserve`.
#[derive(Debug, Args)]
#[command(after_help = "EXAMPLE:\n  eval \"$(porthold autoreserve --format export)\"")]
pub struct AutoreserveArgs {
    /// How to print the assignments.
    #[arg(long, value_name = "FORMAT", default_value = "human")]
    pub format: Format,
    #[command(flatten)]
    pub group: GroupArgs,
}

/// The reserved group with its configuration.
struct Reserved {
    config: Config,
    path: PathBuf,
    outcome: GroupOutcome,
    cleaned: Vec<porthold::registry::Cleaned>,
}

fn reserve(args: &GroupArgs, ctx: &Ctx) -> anyhow::Result<Reserved> {
    let (path, config) = match &args.path {
        Some(explicit) => {
            let path = porthold::key::resolve_path(&ctx.cwd.join(explicit));
            if !args.allow_unrelated_path
                && !porthold::key::is_related(&path, &porthold::key::resolve_path(&ctx.cwd))
            {
                return Err(porthold::Error::UnrelatedPath {
                    path,
                    cwd: ctx.cwd.clone(),
                }
                .into());
            }
            let config = ctx.config_for_project(&path)?;
            (path, config)
        }
        None => match &ctx.config.project_root {
            Some(root) => (root.clone(), ctx.config.clone()),
            None => {
                return Err(porthold::Error::invalid(
                    format!(
                        "no {} in `{}` or any parent directory",
                        porthold::config::PROJECT_FILE,
                        shown(&ctx.cwd)
                    ),
                    Some("run `porthold init --config` to write one, or pass --path".into()),
                )
                .into());
            }
        },
    };
    if config.project_root.is_none() {
        return Err(porthold::Error::invalid(
            format!(
                "no {} in `{}`",
                porthold::config::PROJECT_FILE,
                shown(&path)
            ),
            Some("run `porthold init --config` there to write one".into()),
        )
        .into());
    }
    if config.services.is_empty() {
        return Err(porthold::Error::invalid(
            format!("the project `{}` declares no [services]", shown(&path)),
            Some("add a [services.web] table (see `porthold init --config`)".into()),
        )
        .into());
    }
    let (outcome, cleaned) = reserve_project_group(
        ctx,
        &config,
        &path,
        args.pool.as_deref(),
        args.skip_occupancy_check,
        args.disable_autoclean,
    )?;
    Ok(Reserved {
        config,
        path,
        outcome,
        cleaned,
    })
}

/// Reserves every service of `config` (the project at `path`) in one
/// transaction ([`GroupRequest::for_project`], which `run --tag SERVICE`
/// reserves too, so both agree on every port). Prints the autoclean notes
/// and the members' warnings.
fn reserve_project_group(
    ctx: &Ctx,
    config: &Config,
    path: &std::path::Path,
    pool: Option<&str>,
    skip_occupancy_check: bool,
    disable_autoclean: bool,
) -> anyhow::Result<(GroupOutcome, Vec<porthold::registry::Cleaned>)> {
    let kernel = KernelPorts::read();
    let pool = ctx.pool(config, pool, &kernel)?;
    let request = GroupRequest::for_project(config, path, pool, kernel);
    let probe = SystemProbe;
    let probe: Option<&dyn OccupancyProbe> = if skip_occupancy_check {
        None
    } else {
        Some(&probe)
    };
    let mut registry = open_registry(ctx)?;
    let (outcome, cleaned) = if disable_autoclean {
        (registry.reserve_group(&request, probe)?, Vec::new())
    } else {
        let policy =
            porthold::registry::CleanPolicy::autoclean(porthold::registry::DEFAULT_EXPIRE_AFTER);
        registry.reserve_group_with_autoclean(&request, probe, &policy)?
    };
    note_cleaned(ctx, &cleaned);
    for (_, member) in &outcome.members {
        for note in &member.notes {
            ctx.warn(crate::exit::note_for("reserve-group", note));
        }
    }
    Ok((outcome, cleaned))
}

/// Tells what autoclean removed to make room (humans only: `--json`
/// output lists it in the result).
pub(crate) fn note_cleaned(ctx: &Ctx, cleaned: &[porthold::registry::Cleaned]) {
    if !cleaned.is_empty() && !ctx.json {
        ctx.note(format!(
            "the pool was exhausted; autoclean removed {} reservation(s):",
            cleaned.len()
        ));
        for item in cleaned {
            ctx.note(format!("  {}", super::clean::describe(item)));
        }
    }
}

/// `(env name, port)` per service, in tag order.
fn assignments(reserved: &Reserved) -> Vec<(String, u16)> {
    reserved
        .outcome
        .members
        .iter()
        .map(|(tag, member)| {
            let env = reserved
                .config
                .services
                .get(tag)
                .map(|s| s.env.clone())
                .unwrap_or_default();
            (env, member.reservation.port)
        })
        .collect()
}

fn print_json_result(reserved: &Reserved) {
    let services: Vec<_> = reserved
        .outcome
        .members
        .iter()
        .map(|(tag, member)| {
            let mut value = reservation_json(&member.reservation);
            value["env"] = reserved
                .config
                .services
                .get(tag)
                .map(|s| s.env.clone())
                .into();
            value["created"] = member.created.into();
            value
        })
        .collect();
    let env: serde_json::Map<String, serde_json::Value> = assignments(reserved)
        .into_iter()
        .map(|(name, port)| (name, port.into()))
        .collect();
    print_json(&serde_json::json!({
        "path": reserved.path,
        "project": reserved.config.project_name.as_ref().map(|s| s.value.clone()),
        "services": services,
        "env": env,
        "cleaned": reserved.cleaned.iter().map(super::clean::cleaned_json).collect::<Vec<_>>(),
    }));
}

fn print_table(reserved: &Reserved) {
    let rows = reserved
        .outcome
        .members
        .iter()
        .zip(assignments(reserved))
        .map(|((tag, member), (env, _))| {
            vec![
                tag.clone(),
                member.reservation.port.to_string(),
                env,
                if member.created { "new" } else { "kept" }.to_string(),
            ]
        })
        .collect();
    outln!("{}", table(&["SERVICE", "PORT", "ENV", "STATUS"], rows));
}

/// Runs `reserve-group`.
pub fn run_reserve_group(args: ReserveGroupArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let reserved = reserve(&args.group, ctx)?;
    if ctx.json {
        print_json_result(&reserved);
    } else {
        print_table(&reserved);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `autoreserve`.
pub fn run_autoreserve(args: AutoreserveArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let reserved = reserve(&args.group, ctx)?;
    let format = if ctx.json { Format::Json } else { args.format };
    match format {
        Format::Json => print_json_result(&reserved),
        Format::Human => {
            print_table(&reserved);
            ctx.note(format!("project `{}`", shown(&reserved.path)));
        }
        Format::Export | Format::Dotenv => {
            let prefix = if format == Format::Export {
                "export "
            } else {
                ""
            };
            let mut lines = vec![format!(
                "{prefix}{}",
                shell::assignment("PORTHOLD_PROJECT_PATH", &reserved.path.to_string_lossy())?
            )];
            for (name, port) in assignments(&reserved) {
                lines.push(format!(
                    "{prefix}{}",
                    shell::assignment(&name, &port.to_string())?
                ));
            }
            outln!("{}", lines.join("\n"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
