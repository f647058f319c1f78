//! The command-line definition (clap derive). Help text, completions and the
//! man page are all generated from these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cmd;
use crate::output::ColorChoice;

const EXIT_STATUS: &str = "\
EXIT STATUS:
  0 success · 1 negative answer (assertion false, nothing found) · 2 usage or
  config error · 3 conflict (port held by another key or process, name already
  running) · 4 pool exhausted · 5 busy (registry lock timeout, reload in
  progress) · 6 registry unreadable or corrupt · 7 reload rolled back ·
  8 launch failure";

/// Race-free local ports: reserve a stable port per project, bind and hold it,
/// hand the bound socket to your server, and find it again.
#[derive(Debug, Parser)]
#[command(name = "porthold", version, about, after_help = EXIT_STATUS, help_expected = true, max_term_width = 100)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Wait this long for the registry's write lock (500ms, 5s, 2m) [env: PORTHOLD_BUSY_TIMEOUT; config: registry.busy_timeout; default: 5s].
    #[arg(long, global = true, value_name = "DURATION")]
    pub busy_timeout: Option<String>,
    /// Colour diagnostics: auto, always or never (NO_COLOR is honoured).
    #[arg(
        long,
        global = true,
        value_name = "WHEN",
        env = "PORTHOLD_COLOR",
        default_value = "auto"
    )]
    pub color: ColorChoice,
    /// Where the registry lives [env: PORTHOLD_DATA_DIR; config: registry.data_dir; default: $XDG_DATA_HOME/porthold, i.e. ~/.local/share/porthold].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print machine-readable JSON (errors too, on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print no warnings or notes, only data and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Where discovery records live [default: $XDG_RUNTIME_DIR/porthold, else /tmp/porthold-$UID].
    #[arg(long, global = true, value_name = "DIR", env = "PORTHOLD_RUNTIME_DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Print more about what porthold does.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data dir and an empty registry.
    Init(cmd::init::InitArgs),
    /// List reservations, and whether something listens on each port now.
    List(cmd::list::ListArgs),
    /// Lease free ports outside the ephemeral range to a process (default: the caller's parent), one per line.
    Pick(cmd::pick::PickArgs),
    /// Remove reservations or a lease (--port).
    Release(cmd::release::ReleaseArgs),
    /// Reserve a stable port for a project (and tag); prints just the port.
    Reserve(cmd::reserve::ReserveArgs),
    /// Print the data dir.
    ShowDataDir,
    /// Print the resolved project path of a key.
    ShowPath(cmd::show_path::ShowPathArgs),

    // Issue 4: the full registry.
    /// Exit 0 if the data dir holds a registry (--validate: a sound one), else 1.
    AssertDataDir(cmd::assert::AssertDataDirArgs),
    /// Exit 0 if some key holds PORT, else 1.
    AssertPort(cmd::assert::AssertPortArgs),
    /// Exit 0 if the key has a reservation (on --port), else 1.
    AssertReservation(cmd::assert::AssertReservationArgs),
    /// Remove reservations whose path is gone or that were unused for --older-than (30d).
    Autoclean(cmd::clean::AutocleanArgs),
    /// Find porthold.toml upward, reserve its services, print assignments (--format export for eval).
    Autoreserve(cmd::group::AutoreserveArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::CompletionsArgs),
    /// Exclude a port or range from allocation; without one, list exclusions.
    Exclude(cmd::exclude::ExcludeArgs),
    /// Remove reservations unused for longer than --older-than.
    Expire(cmd::clean::ExpireArgs),
    /// List project paths with their tags and ports.
    ListProjects(cmd::projects::ListProjectsArgs),
    /// Print the man page (roff).
    Man(cmd::completions::ManArgs),
    /// Move reservations from an old project path to a new one, atomically.
    Migrate(cmd::migrate::MigrateArgs),
    /// Show the reservation, exclusions, occupancy and owner of a port.
    PortInfo(cmd::scan::PortInfoArgs),
    /// Remove reservations whose project directory no longer exists.
    Prune(cmd::clean::PruneArgs),
    /// Reserve every service of porthold.toml at once (all or nothing).
    ReserveGroup(cmd::group::ReserveGroupArgs),
    /// List TCP/UDP listeners with owner pid and command, marking reserved ports.
    Scan(cmd::scan::ScanArgs),
    /// Check configuration files without touching the registry.
    Validate(cmd::validate::ValidateArgs),

    // Issue 5: running servers.
    /// Bind first, hand the bound socket to a server (LISTEN_FDS), wait until it is ready, publish it.
    Run(cmd::run::RunArgs),
    /// List live instances (name, key, pid, generation, state, listeners, uptime).
    Ps(cmd::instances::PsArgs),
    /// SIGTERM a running instance's launcher and wait for it to end.
    Stop(cmd::instances::StopArgs),
    /// Print a running instance's URL (exit 1 if none is live).
    Url(cmd::instances::UrlArgs),
    /// Wait until an instance is live and ready (exit 1 on timeout).
    Wait(cmd::instances::WaitArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["porthold", "reserve", "--json", "--busy-timeout", "200ms"])
            .unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.busy_timeout.as_deref(), Some("200ms"));
    }
}
