//! The command-line definition (clap derive). Help text, completions and the
//! man page are all generated from these types.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

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
// One value per process, parsed once and moved once: the size of the largest
// variant (`run`'s arguments) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
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

    // The full registry.
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

    // Running servers.
    /// Bind first, hand the bound socket to a server (LISTEN_FDS), wait until it is ready, publish it.
    Run(cmd::run::RunArgs),
    /// List live instances (name, key, pid, generation, state, listeners, uptime).
    Ps(cmd::instances::PsArgs),
    /// SIGTERM a running instance's launcher and wait for it to end.
    Stop(cmd::instances::StopArgs),
    /// Start a new generation of a running instance on the same sockets, then retire the old one.
    Reload(cmd::instances::ReloadArgs),
    /// Print a running instance's URL (exit 1 if none is live).
    Url(cmd::instances::UrlArgs),
    /// Wait until an instance is live and ready (exit 1 on timeout).
    Wait(cmd::instances::WaitArgs),
}

/// Parses the command line into the [`Cli`] and the subcommand's name.
///
/// Building clap's whole tree (every subcommand with every argument) is most
/// of a short command's start-up, so the one subcommand that `args` names is
/// built alone, on a root with just the global options. Whenever that parse
/// fails (help, a usage error, a word that is not a subcommand), the whole
/// tree parses `args` again, so every help text and error message is the
/// whole tree's. The version text is the root's alone, so `--version` is
/// answered by the small root. Tests check that each subcommand built alone
/// has exactly the arguments it has in the whole tree.
///
/// # Errors
/// The whole tree's error (which includes `--help` and `--version`).
pub fn parse(args: &[OsString]) -> Result<(Cli, String), clap::Error> {
    let small = match subcommand_word(args) {
        Some(word) => one_subcommand(word).map(|sub| small_root().subcommand(sub)),
        None => Some(small_root()),
    };
    if let Some(small) = small {
        match small.try_get_matches_from(args) {
            Ok(matches) => return from_matches(matches),
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayVersion => return Err(e),
            Err(_) => {}
        }
    }
    from_matches(Cli::command().try_get_matches_from(args)?)
}

/// The typed command line (taking the values out of `matches`: derive's
/// `from_arg_matches` would clone every matched value first).
fn from_matches(mut matches: clap::ArgMatches) -> Result<(Cli, String), clap::Error> {
    let name = matches.subcommand_name().unwrap_or_default().to_string();
    Cli::from_arg_matches_mut(&mut matches).map(|cli| (cli, name))
}

/// The root command with the global options and no subcommand.
fn small_root() -> clap::Command {
    Root::command()
        .subcommand_required(true)
        .arg_required_else_help(true)
}

/// The root of [`Cli`] without its subcommands (the same attributes).
#[derive(Debug, Parser)]
#[command(name = "porthold", version, about, after_help = EXIT_STATUS, help_expected = true, max_term_width = 100)]
struct Root {
    #[command(flatten)]
    global: GlobalArgs,
}

/// The first word of `args` that is not a global option (or its value): the
/// subcommand's name. `None` when an unknown option or `--` comes first.
fn subcommand_word(args: &[OsString]) -> Option<&str> {
    const WITH_VALUE: [&str; 4] = ["--busy-timeout", "--color", "--data-dir", "--runtime-dir"];
    const FLAGS: [&str; 4] = ["--json", "--quiet", "--verbose", "--help"];
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_str()?;
        if WITH_VALUE.contains(&word) {
            words.next()?;
        } else if WITH_VALUE
            .iter()
            .any(|o| word.strip_prefix(o).is_some_and(|r| r.starts_with('=')))
            || FLAGS.contains(&word)
            || word.strip_prefix('-').is_some_and(|shorts| {
                !shorts.is_empty() && shorts.bytes().all(|b| b == b'q' || b == b'v')
            })
        {
        } else if word.starts_with('-') {
            return None;
        } else {
            return Some(word);
        }
    }
    None
}

/// The subcommand `name` alone, as the whole tree builds it (but without its
/// one-line about, which only help shows).
fn one_subcommand(name: &str) -> Option<clap::Command> {
    fn with<A: Args>(name: &'static str) -> clap::Command {
        A::augment_args(clap::Command::new(name))
    }
    Some(match name {
        "init" => with::<cmd::init::InitArgs>("init"),
        "list" => with::<cmd::list::ListArgs>("list"),
        "release" => with::<cmd::release::ReleaseArgs>("release"),
        "reserve" => with::<cmd::reserve::ReserveArgs>("reserve"),
        "show-data-dir" => clap::Command::new("show-data-dir"),
        "show-path" => with::<cmd::show_path::ShowPathArgs>("show-path"),
        "assert-data-dir" => with::<cmd::assert::AssertDataDirArgs>("assert-data-dir"),
        "assert-port" => with::<cmd::assert::AssertPortArgs>("assert-port"),
        "assert-reservation" => with::<cmd::assert::AssertReservationArgs>("assert-reservation"),
        "autoclean" => with::<cmd::clean::AutocleanArgs>("autoclean"),
        "autoreserve" => with::<cmd::group::AutoreserveArgs>("autoreserve"),
        "completions" => with::<cmd::completions::CompletionsArgs>("completions"),
        "exclude" => with::<cmd::exclude::ExcludeArgs>("exclude"),
        "expire" => with::<cmd::clean::ExpireArgs>("expire"),
        "list-projects" => with::<cmd::projects::ListProjectsArgs>("list-projects"),
        "man" => with::<cmd::completions::ManArgs>("man"),
        "migrate" => with::<cmd::migrate::MigrateArgs>("migrate"),
        "port-info" => with::<cmd::scan::PortInfoArgs>("port-info"),
        "prune" => with::<cmd::clean::PruneArgs>("prune"),
        "reserve-group" => with::<cmd::group::ReserveGroupArgs>("reserve-group"),
        "scan" => with::<cmd::scan::ScanArgs>("scan"),
        "validate" => with::<cmd::validate::ValidateArgs>("validate"),
        "run" => with::<cmd::run::RunArgs>("run"),
        "ps" => with::<cmd::instances::PsArgs>("ps"),
        "stop" => with::<cmd::instances::StopArgs>("stop"),
        "reload" => with::<cmd::instances::ReloadArgs>("reload"),
        "url" => with::<cmd::instances::UrlArgs>("url"),
        "wait" => with::<cmd::instances::WaitArgs>("wait"),
        "pick" => with::<cmd::pick::PickArgs>("pick"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// A subcommand's parsing-relevant shape: everything but its about text
    /// and its place in the root's help.
    fn shape(sub: &clap::Command) -> String {
        format!(
            "{:?}",
            sub.clone()
                .display_order(0)
                .about(None::<&str>)
                .long_about(None::<&str>)
        )
    }

    #[test]
    fn each_subcommand_built_alone_is_the_one_in_the_whole_tree() {
        let whole = Cli::command();
        let mut seen = 0;
        for sub in whole.get_subcommands() {
            let alone = one_subcommand(sub.get_name())
                .unwrap_or_else(|| panic!("`{}` cannot be built alone", sub.get_name()));
            assert_eq!(shape(&alone), shape(sub), "`{}` differs", sub.get_name());
            seen += 1;
        }
        assert_eq!(
            seen, 29,
            "a subcommand was added: build it alone in one_subcommand"
        );
        assert!(one_subcommand("no-such-command").is_none());
    }

    #[test]
    fn the_small_root_is_the_whole_trees_root() {
        let whole = Cli::command();
        let small = small_root();
        let args = |c: &clap::Command| {
            c.get_arguments()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(args(&small), args(&whole));
        assert_eq!(small.get_version(), whole.get_version());
        assert_eq!(small.get_name(), whole.get_name());
        assert_eq!(
            small.is_subcommand_required_set(),
            whole.is_subcommand_required_set()
        );
        assert_eq!(
            small.is_arg_required_else_help_set(),
            whole.is_arg_required_else_help_set()
        );
    }

    #[test]
    fn the_subcommand_word_skips_global_options_and_their_values() {
        let word = |args: &[&str]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            subcommand_word(&args).map(str::to_string)
        };
        assert_eq!(word(&["porthold", "reserve"]).as_deref(), Some("reserve"));
        assert_eq!(
            word(&[
                "porthold",
                "--data-dir",
                "run",
                "-qv",
                "--color=never",
                "--json",
                "ps"
            ])
            .as_deref(),
            Some("ps")
        );
        assert_eq!(word(&["porthold", "--data-dir"]), None);
        assert_eq!(word(&["porthold", "--bogus", "run"]), None);
        assert_eq!(word(&["porthold", "--", "run"]), None);
        assert_eq!(word(&["porthold", "-x", "run"]), None);
    }

    #[test]
    fn parsing_with_one_subcommand_gives_what_the_whole_tree_gives() {
        let cases: &[&[&str]] = &[
            &["porthold", "reserve"],
            &[
                "porthold",
                "reserve",
                "--json",
                "--busy-timeout",
                "200ms",
                "--tag",
                "web",
            ],
            &["porthold", "--data-dir", "/d", "-qvv", "show-data-dir"],
            &[
                "porthold",
                "--color=never",
                "run",
                "--ephemeral",
                "--",
                "sh",
                "-c",
                "exit 7",
            ],
            &["porthold", "run", "--name", "x", "--", "true", "--help"],
            &["porthold", "list", "--json"],
            &["porthold", "completions", "bash"],
            &["porthold", "man"],
            &["porthold", "stop", "--all"],
            &["porthold", "wait", "web", "--timeout", "5s"],
            &["porthold", "exclude", "9000-9010"],
        ];
        for case in cases {
            let args: Vec<OsString> = case.iter().map(OsString::from).collect();
            let whole = Cli::command()
                .try_get_matches_from(&args)
                .and_then(from_matches)
                .map(|(cli, name)| format!("{name} {cli:?}"));
            let small = parse(&args).map(|(cli, name)| format!("{name} {cli:?}"));
            match (&whole, &small) {
                (Ok(w), Ok(s)) => assert_eq!(w, s, "{case:?}"),
                (Err(w), Err(s)) => assert_eq!(w.to_string(), s.to_string(), "{case:?}"),
                _ => panic!("{case:?}: whole tree {whole:?}, one subcommand {small:?}"),
            }
        }
    }

    #[test]
    fn help_and_errors_come_from_the_whole_tree() {
        for case in [
            &["porthold", "run", "--help"][..],
            &["porthold", "reserve", "--no-such-flag"],
            &["porthold", "help", "run"],
            &["porthold", "resrve"],
            &["porthold"],
            &["porthold", "--help"],
            &["porthold", "--version"],
        ] {
            let args: Vec<OsString> = case.iter().map(OsString::from).collect();
            let whole = Cli::command().try_get_matches_from(&args).unwrap_err();
            let small = parse(&args).unwrap_err();
            assert_eq!(small.kind(), whole.kind(), "{case:?}");
            assert_eq!(
                small.render().to_string(),
                whole.render().to_string(),
                "{case:?}"
            );
        }
    }

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
