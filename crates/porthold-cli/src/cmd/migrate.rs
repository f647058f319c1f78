//! `porthold migrate --from OLD --to NEW [--recursive]`: move a project's
//! reservations when its directory moves, atomically. Both paths resolve as
//! keys do (canonical where they exist; a moved-away OLD through its longest
//! existing prefix). Both are guarded by the unrelated-path rule (an ancestor
//! or descendant of the working directory unless --allow-unrelated-path),
//! except OLD when the working directory is inside NEW. The same path twice
//! is exit 2; a NEW that does not exist is a warning.

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

/// Resolves both paths as keys are resolved (canonical where they exist) and
/// applies the unrelated-path guard: `--to` must be related to the working
/// directory; `--from` must be too, unless the working directory is inside
/// `--to` (the usual `mv old new && cd new && porthold migrate --from old
/// --to .`, where the old path is by then unrelated).
fn resolve_pair(args: &MigrateArgs, ctx: &Ctx) -> anyhow::Result<(PathBuf, PathBuf)> {
    let resolve = |path: &std::path::Path, guard: bool| -> anyhow::Result<PathBuf> {
        let request = KeyRequest {
            path: Some(path),
            tag: None,
            allow_unrelated_path: args.allow_unrelated_path,
            guard_unrelated: guard,
        };
        Ok(Key::resolve_in(&request, &ctx.cwd, &ctx.project.dir)?.path)
    };
    let to = resolve(&args.to, true)?;
    let cwd = porthold::key::resolve_path(&ctx.cwd);
    let from = resolve(&args.from, !cwd.starts_with(&to))?;
    Ok((from, to))
}

/// Runs `migrate`.
pub fn run(args: MigrateArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let (from, to) = resolve_pair(&args, ctx)?;
    if from == to {
        return Err(porthold::Error::invalid(
            format!("--from and --to are the same path `{}`", shown(&from)),
            Some("pass the project's old path as --from and its new path as --to".into()),
        )
        .into());
    }
    if !to.exists() {
        ctx.warn(format!(
            "--to `{}` does not exist; the reservations move there anyway",
            shown(&to)
        ));
    }
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
        ctx.note(format!("nothing reserved at `{}`", shown(&from)));
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
