//! `porthold list-projects`: one line per project path, with its tags and ports.

use crate::stdout::outln;
use std::process::ExitCode;

use clap::Args;

use super::{open_existing_registry, print_json, shown};
use crate::ctx::Ctx;
use crate::output::table;

/// Arguments of `list-projects`.
#[derive(Debug, Args)]
pub struct ListProjectsArgs {}

/// Runs `list-projects`.
pub fn run(_args: ListProjectsArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let projects = match open_existing_registry(ctx)? {
        Some(registry) => registry.projects()?,
        None => Vec::new(),
    };
    if ctx.json {
        let items: Vec<_> = projects
            .iter()
            .map(|p| {
                serde_json::json!({
                    "path": p.path,
                    "projects": p.projects,
                    "tags": p.tags,
                    "ports": p.ports,
                    "last_used_at": porthold::time::rfc3339(p.last_used_at_ms),
                    "exists": p.exists,
                })
            })
            .collect();
        print_json(&serde_json::json!({ "projects": items }));
        return Ok(ExitCode::SUCCESS);
    }
    if projects.is_empty() {
        ctx.note("no reservations");
        return Ok(ExitCode::SUCCESS);
    }
    let rows = projects
        .iter()
        .map(|p| {
            vec![
                shown(&p.path),
                p.projects.join(","),
                p.tags
                    .iter()
                    .map(|t| if t.is_empty() { "-" } else { t.as_str() })
                    .collect::<Vec<_>>()
                    .join(","),
                p.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                porthold::time::rfc3339(p.last_used_at_ms),
                if p.exists { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(
            &["PATH", "PROJECT", "TAGS", "PORTS", "LAST USED", "EXISTS"],
            rows
        )
    );
    Ok(ExitCode::SUCCESS)
}
