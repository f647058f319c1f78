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
    /// Wait this long for the registry's write lock (500ms, 5s, 2m).
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        env = "PORTHOLD_BUSY_TIMEOUT",
        default_value = "5s"
    )]
    pub busy_timeout: String,
    /// Colour diagnostics: auto, always or never (NO_COLOR is honoured).
    #[arg(
        long,
        global = true,
        value_name = "WHEN",
        env = "PORTHOLD_COLOR",
        default_value = "auto"
    )]
    pub color: ColorChoice,
    /// Where the registry lives [default: $XDG_DATA_HOME/porthold, i.e. ~/.local/share/porthold].
    #[arg(long, global = true, value_name = "DIR", env = "PORTHOLD_DATA_DIR")]
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
    /// Remove reservations.
    Release(cmd::release::ReleaseArgs),
    /// Reserve a stable port for a project (and tag); prints just the port.
    Reserve(cmd::reserve::ReserveArgs),
    /// Print the data dir.
    ShowDataDir,
    /// Print the resolved project path of a key.
    ShowPath(cmd::show_path::ShowPathArgs),
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
        assert_eq!(cli.global.busy_timeout, "200ms");
    }
}
