//! `porthold exclude`: ports and ranges never handed out. Without a range it
//! lists the exclusions; `--remove` trims a range out of them; `--compact`
//! merges overlapping and adjacent rows.

use crate::stdout::outln;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use porthold::net::PortRange;
use porthold::registry::Exclusion;

use super::{open_existing_registry, open_registry, print_json};
use crate::ctx::Ctx;
use crate::output::table;

/// Arguments of `exclude`.
#[derive(Debug, Args)]
#[command(
    after_help = "EXAMPLES:\n  porthold exclude 5432\n  porthold exclude 27000-27100 --note mongo\n  porthold exclude 27050 --remove\n  porthold exclude --compact"
)]
pub struct ExcludeArgs {
    /// Merge overlapping and adjacent exclusions (after any change).
    #[arg(long)]
    pub compact: bool,
    /// Why the range is excluded (shown by `exclude` and `port-info`).
    #[arg(long, value_name = "TEXT", conflicts_with = "remove")]
    pub note: Option<String>,
    /// The port or range (PORT or A-B); without it, list the exclusions.
    #[arg(value_name = "PORT|A-B")]
    pub range: Option<String>,
    /// Remove the range from the exclusions instead of adding it.
    #[arg(long, requires = "range")]
    pub remove: bool,
}

/// Runs `exclude`.
pub fn run(args: ExcludeArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let range: Option<PortRange> = args
        .range
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("reading PORT|A-B")?;
    let mut changed: Option<serde_json::Value> = None;
    let exclusions = if range.is_none() && !args.compact {
        match open_existing_registry(ctx)? {
            Some(registry) => registry.exclusions()?,
            None => Vec::new(),
        }
    } else {
        let mut registry = open_registry(ctx)?;
        if let Some(range) = range {
            if args.remove {
                let touched = registry.unexclude(range)?;
                if touched.is_empty() {
                    ctx.note(format!("{range} was not excluded"));
                }
                changed = Some(serde_json::json!({ "removed": range.to_string() }));
            } else {
                let outcome = registry.exclude(range, args.note.as_deref())?;
                if !outcome.added {
                    ctx.note(format!("{range} was already excluded"));
                }
                for r in &outcome.reserved_inside {
                    ctx.warn(format!(
                        "port {} is reserved by `{}`{}; it keeps its reservation",
                        r.port,
                        r.path.display(),
                        if r.tag.is_empty() {
                            String::new()
                        } else {
                            format!(" (tag {})", r.tag)
                        }
                    ));
                }
                changed = Some(serde_json::json!({
                    "added": range.to_string(),
                    "new": outcome.added,
                    "reserved_inside": outcome.reserved_inside.iter().map(|r| r.port).collect::<Vec<_>>(),
                }));
            }
        }
        if args.compact {
            registry.compact_exclusions()?
        } else {
            registry.exclusions()?
        }
    };
    if ctx.json {
        let mut value = serde_json::json!({
            "exclusions": exclusions.iter().map(exclusion_json).collect::<Vec<_>>(),
        });
        if let Some(changed) = changed {
            value["change"] = changed;
        }
        print_json(&value);
    } else if range.is_none() {
        if exclusions.is_empty() {
            ctx.note("no exclusions");
        } else {
            print_table(&exclusions);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON shape of an exclusion.
pub fn exclusion_json(x: &Exclusion) -> serde_json::Value {
    serde_json::json!({ "start": x.start, "end": x.end, "note": x.note })
}

fn print_table(exclusions: &[Exclusion]) {
    let rows = exclusions
        .iter()
        .map(|x| vec![x.range().to_string(), x.note.clone().unwrap_or_default()])
        .collect();
    outln!("{}", table(&["PORTS", "NOTE"], rows));
}
