//! What every command needs, resolved once from the global flags and the
//! environment: directories, timeouts, output mode.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::GlobalArgs;
use crate::output::{ColorChoice, Style};

/// The resolved global options.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The data dir (registry).
    pub data_dir: PathBuf,
    /// The runtime dir (discovery records, control sockets).
    #[allow(dead_code)] // used by `run` and discovery commands
    pub runtime_dir: PathBuf,
    /// Registry lock wait.
    pub busy_timeout: Duration,
    /// `--json`.
    pub json: bool,
    /// `-q`.
    pub quiet: bool,
    /// `-v` count.
    #[allow(dead_code)] // read by commands that explain themselves
    pub verbose: u8,
    /// `--color`.
    pub color: ColorChoice,
    /// The working directory, absolute.
    pub cwd: PathBuf,
}

impl Ctx {
    /// Resolves the global flags.
    pub fn new(args: &GlobalArgs) -> anyhow::Result<Ctx> {
        let busy_timeout =
            porthold::duration::parse(&args.busy_timeout).context("reading --busy-timeout")?;
        let data_dir = match &args.data_dir {
            Some(dir) => dir.clone(),
            None => directories::BaseDirs::new()
                .map(|dirs| dirs.data_dir().join("porthold"))
                .context(
                    "cannot find the home directory; pass --data-dir or set PORTHOLD_DATA_DIR",
                )?,
        };
        let runtime_dir = match &args.runtime_dir {
            Some(dir) => dir.clone(),
            None => match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
                Some(dir) => PathBuf::from(dir).join("porthold"),
                None => PathBuf::from(format!(
                    "/tmp/porthold-{}",
                    rustix::process::geteuid().as_raw()
                )),
            },
        };
        let cwd = std::env::current_dir().context("reading the working directory")?;
        Ok(Ctx {
            data_dir: absolute(&cwd, data_dir),
            runtime_dir: absolute(&cwd, runtime_dir),
            busy_timeout,
            json: args.json,
            quiet: args.quiet,
            verbose: args.verbose,
            color: args.color,
            cwd,
        })
    }

    /// Prints a warning on stderr unless `-q` (in `--json` mode as a JSON line).
    pub fn warn(&self, message: impl std::fmt::Display) {
        if self.quiet {
            return;
        }
        if self.json {
            eprintln!("{}", serde_json::json!({ "warning": message.to_string() }));
        } else {
            eprintln!(
                "porthold: {} {message}",
                Style::for_stderr(self.color).warning("warning:")
            );
        }
    }

    /// Prints a note on stderr unless `-q`.
    pub fn note(&self, message: impl std::fmt::Display) {
        if self.quiet {
            return;
        }
        if self.json {
            eprintln!("{}", serde_json::json!({ "note": message.to_string() }));
        } else {
            eprintln!("porthold: {message}");
        }
    }
}

fn absolute(cwd: &std::path::Path, path: PathBuf) -> PathBuf {
    porthold::key::normalize_lexically(&cwd.join(path))
}
