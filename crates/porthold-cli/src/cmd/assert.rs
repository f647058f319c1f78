//! `porthold assert-reservation`, `assert-port`, `assert-data-dir`: exit 0
//! when the assertion holds, 1 when it does not (`--not` inverts), for
//! scripts and CI. Errors other than the answer keep their own exit codes
//! (a busy registry is still 5), so a script can tell "no" from "could not
//! tell".

use std::process::ExitCode;

use clap::Args;

use super::{KeyArgs, open_existing_registry, print_json};
use crate::ctx::Ctx;
use crate::exit;

/// Arguments of `assert-reservation`.
#[derive(Debug, Args)]
pub struct AssertReservationArgs {
    #[command(flatten)]
    pub key: KeyArgs,
    /// Invert: succeed when the key has no such reservation.
    #[arg(long)]
    pub not: bool,
    /// Also require the key's port to be this one.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
}

/// Arguments of `assert-port`.
#[derive(Debug, Args)]
pub struct AssertPortArgs {
    /// Invert: succeed when nobody holds the port.
    #[arg(long)]
    pub not: bool,
    /// The port that must be reserved (or leased) by some key.
    #[arg(value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
}

/// Arguments of `assert-data-dir`.
#[derive(Debug, Args)]
pub struct AssertDataDirArgs {
    /// Invert: succeed when there is no (valid) registry.
    #[arg(long)]
    pub not: bool,
    /// Also open the registry and check its schema and integrity.
    #[arg(long)]
    pub validate: bool,
}

/// Reports the answer and turns it into the exit code.
fn answer(ctx: &Ctx, holds: bool, not: bool, what: String) -> ExitCode {
    let success = holds != not;
    if ctx.json {
        print_json(&serde_json::json!({
            "assertion": what,
            "holds": holds,
            "not": not,
            "success": success,
        }));
    } else if !success {
        ctx.note(format!(
            "assertion failed: {}{what}",
            if not { "not " } else { "" }
        ));
    }
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::NEGATIVE)
    }
}

/// Runs `assert-reservation`.
pub fn run_reservation(args: AssertReservationArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let key = args.key.resolve(ctx, false)?;
    let found = match open_existing_registry(ctx)? {
        Some(registry) => registry.get(&key)?,
        None => None,
    };
    let holds = found.is_some_and(|r| args.port.is_none_or(|p| p == r.port));
    let tag = if key.tag.is_empty() {
        String::new()
    } else {
        format!(" (tag {})", key.tag)
    };
    let port = args
        .port
        .map(|p| format!(" on port {p}"))
        .unwrap_or_default();
    let what = format!("`{}`{tag} is reserved{port}", key.path.display());
    Ok(answer(ctx, holds, args.not, what))
}

/// Runs `assert-port`.
pub fn run_port(args: AssertPortArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let holds = match open_existing_registry(ctx)? {
        Some(registry) => registry.by_port(args.port)?.is_some(),
        None => false,
    };
    Ok(answer(
        ctx,
        holds,
        args.not,
        format!("port {} is reserved", args.port),
    ))
}

/// Runs `assert-data-dir`.
pub fn run_data_dir(args: AssertDataDirArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut holds = porthold::registry::Registry::exists_in(&ctx.data_dir);
    let mut what = format!("`{}` holds a registry", ctx.data_dir.display());
    if holds && args.validate {
        what.push_str(" that is valid");
        let checked = porthold::registry::Registry::open_existing(&ctx.data_dir, ctx.busy_timeout)
            .and_then(|registry| match registry {
                Some(registry) => registry.check_integrity(),
                None => Ok(vec!["the registry vanished".into()]),
            });
        match checked {
            Ok(problems) => {
                for problem in &problems {
                    ctx.note(format!("integrity: {problem}"));
                }
                holds = problems.is_empty();
            }
            // The answer "not a valid registry"; a registry that cannot be
            // read at all (permission denied, busy) is not an answer and keeps
            // its own exit code.
            Err(
                e @ (porthold::Error::Corrupt { .. }
                | porthold::Error::ForeignDatabase { .. }
                | porthold::Error::NewerSchema { .. }),
            ) => {
                ctx.note(e.to_string());
                holds = false;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(answer(ctx, holds, args.not, what))
}
