//! `porthold show-path` and `porthold show-data-dir`.

use crate::stdout::outln;
use std::process::ExitCode;

use clap::Args;

use super::{KeyArgs, print_json};
use crate::ctx::Ctx;

/// Arguments of `show-path`.
#[derive(Debug, Args)]
pub struct ShowPathArgs {
    #[command(flatten)]
    pub key: KeyArgs,
}

/// Prints the key path `reserve` would use here.
pub fn run(args: ShowPathArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let key = args.key.resolve(ctx, false)?;
    if ctx.json {
        print_json(&serde_json::json!({ "path": key.path, "tag": key.tag }));
    } else {
        outln!("{}", key.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the data dir.
pub fn run_data_dir(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if ctx.json {
        print_json(&serde_json::json!({ "data_dir": ctx.data_dir }));
    } else {
        outln!("{}", ctx.data_dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
