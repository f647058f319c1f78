//! `porthold validate [FILE]`: check configuration without touching the
//! registry. With FILE, that file alone; without, every layer that applies
//! here (user config, porthold.toml, porthold.local.toml, PORTHOLD_*), which
//! were already loaded, so reaching this command means they are valid.

use crate::stdout::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use porthold::config::Config;

use super::print_json;
use crate::ctx::Ctx;
use crate::output::table;

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The file to check [default: every configuration layer that applies here].
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Runs `validate`.
pub fn run(args: ValidateArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let config = match &args.file {
        Some(file) => Config::check_file(&ctx.cwd.join(file))?,
        None => ctx.config.clone(),
    };
    if ctx.json {
        let services: Vec<_> = config
            .services
            .values()
            .map(|s| {
                serde_json::json!({
                    "tag": s.tag,
                    "port": s.port,
                    "offset": s.offset,
                    "env": s.env,
                    "listen": s.listen,
                    "ready": s.ready,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "valid": true,
            "files": config.files,
            "project": config.project_name.as_ref().map(|s| s.value.clone()),
            "pool": config.pool.as_ref().map(|s| s.value.iter().map(ToString::to_string).collect::<Vec<_>>()),
            "exclude": config.exclude.iter().map(|s| s.value.to_string()).collect::<Vec<_>>(),
            "busy_timeout": porthold::duration::format(config.busy_timeout.value),
            "services": services,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    if config.files.is_empty() {
        ctx.note("no configuration files apply here; built-in defaults");
    }
    for file in &config.files {
        outln!("ok: {}", file.display());
    }
    if !config.services.is_empty() {
        let rows = config
            .services
            .values()
            .map(|s| {
                vec![
                    s.tag.clone(),
                    match (s.port, s.offset) {
                        (Some(p), _) => format!("port {p}"),
                        (None, Some(o)) => format!("offset {o}"),
                        (None, None) => "any".to_string(),
                    },
                    s.env.clone(),
                ]
            })
            .collect();
        outln!("{}", table(&["SERVICE", "PORT", "ENV"], rows));
    }
    Ok(ExitCode::SUCCESS)
}
