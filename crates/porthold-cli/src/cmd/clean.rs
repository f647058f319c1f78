//! `porthold prune`, `porthold expire --older-than AGE`, `porthold autoclean`:
//! remove reservations of projects that are gone or unused. Each takes
//! `--dry-run`, which reports what would go and changes nothing.

use crate::stdout::outln;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use porthold::registry::{CleanPolicy, Cleaned, DEFAULT_EXPIRE_AFTER};

use super::{open_existing_registry, print_json, shown};
use crate::ctx::Ctx;
use crate::output::{reservation_json, table};

/// Arguments of `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Report what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `expire`.
#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// Report what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove reservations not used for this long (30d, 12h).
    #[arg(long, value_name = "AGE", required = true)]
    pub older_than: String,
}

/// Arguments of `autoclean`.
#[derive(Debug, Args)]
pub struct AutocleanArgs {
    /// Report what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove reservations not used for this long [default: 30d].
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
}

fn parse_age(text: &str) -> anyhow::Result<Duration> {
    porthold::duration::parse(text).context("reading --older-than")
}

/// Runs `prune`.
pub fn run_prune(args: PruneArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    run(CleanPolicy::prune(), args.dry_run, ctx)
}

/// Runs `expire`.
pub fn run_expire(args: ExpireArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    run(
        CleanPolicy::expire(parse_age(&args.older_than)?),
        args.dry_run,
        ctx,
    )
}

/// Runs `autoclean`.
pub fn run_autoclean(args: AutocleanArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let age = match &args.older_than {
        Some(text) => parse_age(text)?,
        None => DEFAULT_EXPIRE_AFTER,
    };
    run(CleanPolicy::autoclean(age), args.dry_run, ctx)
}

fn run(policy: CleanPolicy, dry_run: bool, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let cleaned = match open_existing_registry(ctx)? {
        Some(mut registry) => registry.clean(&policy, dry_run)?,
        None => Vec::new(),
    };
    if ctx.json {
        print_json(&serde_json::json!({
            "dry_run": dry_run,
            "removed": cleaned.iter().map(cleaned_json).collect::<Vec<_>>(),
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if cleaned.is_empty() {
        ctx.note("nothing to clean");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = cleaned
        .iter()
        .map(|c| {
            vec![
                c.reservation.port.to_string(),
                shown(&c.reservation.path),
                c.reservation.tag.clone(),
                c.reason.to_string(),
                porthold::time::rfc3339(c.reservation.last_used_at_ms),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(&["PORT", "PATH", "TAG", "REASON", "LAST USED"], rows)
    );
    if dry_run {
        ctx.note(format!(
            "dry run: {} reservation(s) would be removed",
            cleaned.len()
        ));
    } else {
        ctx.note(format!("removed {} reservation(s)", cleaned.len()));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line for a cleaned reservation: `port 20000 of /p (tag web): path missing`.
pub fn describe(item: &Cleaned) -> String {
    let r = &item.reservation;
    let tag = if r.tag.is_empty() {
        String::new()
    } else {
        format!(" (tag {})", r.tag)
    };
    format!(
        "port {} of {}{tag}: {}",
        r.port,
        r.path.display(),
        item.reason
    )
}

/// The JSON shape of a cleaned reservation: a reservation plus `reason`.
pub fn cleaned_json(item: &Cleaned) -> serde_json::Value {
    let mut value = reservation_json(&item.reservation);
    value["reason"] = serde_json::to_value(item.reason).unwrap_or_default();
    value
}
