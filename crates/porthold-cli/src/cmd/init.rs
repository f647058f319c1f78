//! `porthold init`: create the data dir and an empty registry.

use std::process::ExitCode;

use clap::Args;

use super::{open_registry, print_json};
use crate::ctx::Ctx;

/// Arguments of `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Also write a commented porthold.toml in the working directory.
    #[arg(long)]
    pub config: bool,
}

/// Runs `init`.
pub fn run(args: InitArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let config_file = if args.config {
        Some(write_config(ctx)?)
    } else {
        None
    };
    let existed = ctx.data_dir.join(porthold::registry::FILE_NAME).exists();
    let registry = open_registry(ctx)?;
    if ctx.json {
        print_json(&serde_json::json!({
            "data_dir": ctx.data_dir,
            "registry": registry.path(),
            "created": !existed,
            "config": config_file,
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

/// Writes the commented `porthold.toml` template here, never over an existing file.
fn write_config(ctx: &Ctx) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write as _;
    let path = ctx.cwd.join(porthold::config::PROJECT_FILE);
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(porthold::Error::invalid(
                format!("`{}` already exists", path.display()),
                Some("edit it, or remove it and run `porthold init --config` again".into()),
            )
            .into());
        }
        Err(e) => {
            return Err(porthold::Error::io(format!("creating `{}`", path.display()), e).into());
        }
    };
    file.write_all(porthold::config::TEMPLATE.as_bytes())
        .map_err(|e| porthold::Error::io(format!("writing `{}`", path.display()), e))?;
    ctx.note(format!("wrote `{}`", path.display()));
    Ok(path)
}
