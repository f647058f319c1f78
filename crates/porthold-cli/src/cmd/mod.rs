//! One file per command: each turns its flags into a library request, calls
//! one library function, and renders the result.

pub mod init;
pub mod list;
pub mod pick;
pub mod release;
pub mod reserve;
pub mod show_path;

// The full registry.
pub mod assert;
pub mod clean;
pub mod completions;
pub mod exclude;
pub mod group;
pub mod migrate;
pub mod projects;
pub mod scan;
pub mod validate;

// Running servers.
pub mod instances;
pub mod run;

use crate::stdout::outln;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use porthold::key::{Key, KeyRequest};

use crate::cli::Command;
use crate::ctx::Ctx;

/// Runs one command.
pub fn run(command: Command, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match command {
        Command::Init(args) => init::run(args, ctx),
        Command::List(args) => list::run(args, ctx),
        Command::Pick(args) => pick::run(args, ctx),
        Command::Release(args) => release::run(args, ctx),
        Command::Reserve(args) => reserve::run(args, ctx),
        Command::ShowDataDir => show_path::run_data_dir(ctx),
        Command::ShowPath(args) => show_path::run(args, ctx),
        Command::AssertDataDir(args) => assert::run_data_dir(args, ctx),
        Command::AssertPort(args) => assert::run_port(args, ctx),
        Command::AssertReservation(args) => assert::run_reservation(args, ctx),
        Command::Autoclean(args) => clean::run_autoclean(args, ctx),
        Command::Autoreserve(args) => group::run_autoreserve(args, ctx),
        Command::Completions(args) => completions::run_completions(args, ctx),
        Command::Exclude(args) => exclude::run(args, ctx),
        Command::Expire(args) => clean::run_expire(args, ctx),
        Command::ListProjects(args) => projects::run(args, ctx),
        Command::Man(args) => completions::run_man(args, ctx),
        Command::Migrate(args) => migrate::run(args, ctx),
        Command::PortInfo(args) => scan::run_port_info(args, ctx),
        Command::Prune(args) => clean::run_prune(args, ctx),
        Command::ReserveGroup(args) => group::run_reserve_group(args, ctx),
        Command::Scan(args) => scan::run_scan(args, ctx),
        Command::Validate(args) => validate::run(args, ctx),
        Command::Run(args) => run::run(args, ctx),
        Command::Url(args) => instances::run_url(args, ctx),
        Command::Ps(args) => instances::run_ps(args, ctx),
        Command::Wait(args) => instances::run_wait(args, ctx),
        Command::Stop(args) => instances::run_stop(args, ctx),
        Command::Reload(args) => instances::run_reload(args, ctx),
    }
}

/// `--path`, `--tag` and the unrelated-path guard, shared by the key commands.
#[derive(Debug, Args, Clone, Default)]
pub struct KeyArgs {
    /// Allow a --path that is neither an ancestor nor a descendant of the working directory.
    #[arg(long)]
    pub allow_unrelated_path: bool,
    /// The project directory; an existing one is canonicalised (symlinks resolved) [default: nearest ancestor with porthold.toml, else the git work tree root, else the working directory].
    #[arg(long, value_name = "PATH")]
    pub path: Option<std::path::PathBuf>,
    /// The service name within the project (web, api).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
}

impl KeyArgs {
    /// Resolves the key, applying the unrelated-path guard when `guard` is set.
    pub fn resolve(&self, ctx: &Ctx, guard: bool) -> anyhow::Result<Key> {
        let request = KeyRequest {
            path: self.path.as_deref(),
            tag: self.tag.as_deref(),
            allow_unrelated_path: self.allow_unrelated_path,
            guard_unrelated: guard,
        };
        let key = Key::resolve_in(&request, &ctx.cwd, &ctx.project.dir)?;
        if key.tag.is_empty() {
            ctx.explain(format!("key {}", key.path.display()));
        } else {
            ctx.explain(format!("key {} (tag {})", key.path.display(), key.tag));
        }
        Ok(key)
    }
}

/// Opens (creating if needed) the registry, with the data dir in the error
/// context, after checking the data dir's owner and mode.
pub fn open_registry(ctx: &Ctx) -> anyhow::Result<porthold::registry::Registry> {
    porthold::config::check_data_dir(&ctx.data_dir)?;
    let started = std::time::Instant::now();
    let registry = porthold::registry::Registry::open(&ctx.data_dir, ctx.busy_timeout)
        .with_context(|| format!("opening the registry in `{}`", shown(&ctx.data_dir)))?;
    ctx.explain(format!(
        "registry {} opened in {} µs",
        registry.path().display(),
        started.elapsed().as_micros()
    ));
    Ok(registry)
}

/// Opens the registry only if it exists.
pub fn open_existing_registry(ctx: &Ctx) -> anyhow::Result<Option<porthold::registry::Registry>> {
    porthold::config::check_data_dir(&ctx.data_dir)?;
    porthold::registry::Registry::open_existing(&ctx.data_dir, ctx.busy_timeout)
        .with_context(|| format!("opening the registry in `{}`", shown(&ctx.data_dir)))
}

/// Prints a JSON value on stdout.
pub fn print_json(value: &serde_json::Value) {
    outln!("{value}");
}

/// Displays a path for humans, control characters escaped.
pub fn shown(path: &Path) -> String {
    porthold::text::escape_path(path)
}
