//! `porthold release`: remove reservations. Releasing nothing succeeds (with a
//! note), so scripts can call it unconditionally.

use std::process::ExitCode;

use clap::Args;
use porthold::registry::ReleaseTarget;

use super::{KeyArgs, open_existing_registry, print_json, shown};
use crate::ctx::Ctx;
use crate::output::reservation_json;

/// Arguments of `release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Release every tag of the path.
    #[arg(long, conflicts_with_all = ["tag", "recursive", "port"])]
    pub all_tags: bool,
    /// Allow --recursive of `/` or your home directory (every project below it).
    #[arg(long, requires = "recursive")]
    pub force: bool,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Release whatever holds this port.
    #[arg(long, value_name = "PORT", conflicts_with_all = ["path", "tag", "recursive"], value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Release every key at or under the path (component-aware: /a/b does not match /a/bc).
    #[arg(long)]
    pub recursive: bool,
}

/// Runs `release`.
pub fn run(args: ReleaseArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let target = match args.port {
        Some(port) => ReleaseTarget::Port(port),
        None => {
            let key = args.key.resolve(ctx, true)?;
            if args.recursive {
                if !args.force && is_too_broad(&key.path) {
                    return Err(porthold::Error::invalid(
                        format!(
                            "release --recursive of `{}` would release every project below it",
                            shown(&key.path)
                        ),
                        Some("pass --force if that is what you mean".into()),
                    )
                    .into());
                }
                ReleaseTarget::Recursive {
                    path: key.path,
                    tag: args.key.tag.clone(),
                }
            } else if args.all_tags {
                ReleaseTarget::AllTags(key.path)
            } else {
                ReleaseTarget::Key(key)
            }
        }
    };
    let removed = match open_existing_registry(ctx)? {
        Some(mut registry) => registry.release(&target)?,
        None => Vec::new(),
    };
    if removed.is_empty() {
        ctx.note("nothing to release");
    }
    if ctx.json {
        print_json(
            &serde_json::json!({ "released": removed.iter().map(reservation_json).collect::<Vec<_>>() }),
        );
    } else if !ctx.quiet {
        for r in &removed {
            if let Some(pid) = r.lease_pid {
                eprintln!("porthold: released port {} leased to pid {pid}", r.port);
                continue;
            }
            let tag = if r.tag.is_empty() {
                String::new()
            } else {
                format!(" (tag {})", r.tag)
            };
            eprintln!(
                "porthold: released port {} of {}{}",
                r.port,
                shown(&r.path),
                porthold::text::escape(&tag)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a recursive release of `path` would sweep up unrelated projects:
/// the root directory or the user's home (resolved as keys are).
fn is_too_broad(path: &std::path::Path) -> bool {
    if path.parent().is_none() {
        return true;
    }
    std::env::var_os("HOME")
        .filter(|home| std::path::Path::new(home).is_absolute())
        .is_some_and(|home| porthold::key::resolve_path(std::path::Path::new(&home)) == path)
}
