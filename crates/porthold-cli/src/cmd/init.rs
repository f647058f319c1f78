//! `porthold init`: create the data dir and an empty registry.

use std::process::ExitCode;

use clap::Args;

use super::{open_registry, print_json};
use crate::ctx::Ctx;

/// Arguments of `init`.
#[derive(Debug, Args)]
pub struct InitArgs {}

/// Runs `init`.
pub fn run(_args: InitArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let existed = ctx.data_dir.join(porthold::registry::FILE_NAME).exists();
    let registry = open_registry(ctx)?;
    if ctx.json {
        print_json(&serde_json::json!({
            "data_dir": ctx.data_dir,
            "registry": registry.path(),
            "created": !existed,
        }));
    } else if existed {
        ctx.note(format!(
            "registry `{}` already exists",
            registry.path().display()
        ));
    } else {
        ctx.note(format!("created registry `{}`", registry.path().display()));
    }
    Ok(ExitCode::SUCCESS)
}
