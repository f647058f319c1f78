//! `porthold migrate --from OLD --to NEW [--recursive]`: move a project's
//! reservations when its directory moves, atomically. Both paths are guarded
//! by the unrelated-path rule (each must be an ancestor or descendant of the
//! working directory unless --allow-unrelated-path).

use crate::stdout::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use porthold::key::{Key, KeyRequest};

use super::{open_existing_registry, print_json, shown};
use crate::ctx::Ctx;
use crate::output::table;

/// Arguments of `migrate`.
#[derive(Debug, Args)]
#[command(
    after_help = "EXAMPLE:\n  porthold migrate --from ~/old/shop --to ~/src/shop --recursive"
)]
pub struct MigrateArgs {
    /// Allow paths that are neither ancestors nor descendants of the working directory.
    #[arg(long)]
    pub allow_unrelated_path: bool,
    /// The old project path.
    #[arg(long, value_name = "OLD")]
    pub from: PathBuf,
    /// Also move every key under OLD (component-aware: /a/b never touches /a/bc).
    #[arg(long)]
    pub recursive: bool,
    /// The new project path.
    #[arg(long, value_name = "NEW")]
    pub to: PathBuf,
}

fn guarded(path: &std::path::Path, args: &MigrateArgs, ctx: &Ctx) -> anyhow::Result<PathBuf> {
    let request = KeyRequest {
        path: Some(path),
        tag: None,
        allow_unrelated_path: args.allow_unrelated_path,
        guard_unrelated: true,
    };
    Ok(Key::resolve(&request, &ctx.cwd)?.path)
}

/// Runs `migrate`.
pub fn run(args: MigrateArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let from = guarded(&args.from, &args, ctx)?;
    let to = guarded(&args.to, &args, ctx)?;
    let moved = match open_existing_registry(ctx)? {
        Some(mut registry) => registry.migrate(&from, &to, args.recursive)?,
        None => Vec::new(),
    };
    if ctx.json {
        let items: Vec<_> = moved
            .iter()
            .map(|m| {
                serde_json::json!({
                    "port": m.before.port,
                    "tag": m.before.tag,
                    "from": m.before.path,
                    "to": m.new_path,
                })
            })
            .collect();
        print_json(&serde_json::json!({ "migrated": items }));
        return Ok(ExitCode::SUCCESS);
    }
    if moved.is_empty() {
        ctx.note(format!("nothing reserved at `{}`", from.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let rows = moved
        .iter()
        .map(|m| {
            vec![
                m.before.port.to_string(),
                m.before.tag.clone(),
                shown(&m.before.path),
                shown(&m.new_path),
            ]
        })
        .collect();
    outln!("{}", table(&["PORT", "TAG", "FROM", "TO"], rows));
    Ok(ExitCode::SUCCESS)
}
