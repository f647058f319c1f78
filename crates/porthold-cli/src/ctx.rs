//! What every command needs, resolved once from the global flags and the
//! environment: directories, timeouts, output mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use porthold::config::{Config, Overrides, Sources};

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
    /// The layered configuration of the working directory's project.
    pub config: Config,
    /// Where `config` came from, to reload it for another project directory.
    pub sources: Sources,
}

impl Ctx {
    /// Resolves the global flags and loads the layered configuration
    /// (user config, the project's `porthold.toml` and `porthold.local.toml`,
    /// `PORTHOLD_*` variables, flags).
    pub fn new(args: &GlobalArgs) -> anyhow::Result<Ctx> {
        let cwd = std::env::current_dir().context("reading the working directory")?;
        let sources = Sources {
            user_config: user_config_path(),
            project_dir: project_dir_of(&cwd),
            env: porthold_env(),
            flags: Overrides {
                pool: None,
                busy_timeout: args.busy_timeout.clone(),
                data_dir: args.data_dir.clone(),
            },
        };
        let config = Config::load(&sources)?;
        let busy_timeout = config.busy_timeout.value;
        let data_dir = match &config.data_dir {
            Some(dir) => dir.value.clone(),
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
        Ok(Ctx {
            data_dir: absolute(&cwd, data_dir),
            runtime_dir: absolute(&cwd, runtime_dir),
            busy_timeout,
            json: args.json,
            quiet: args.quiet,
            verbose: args.verbose,
            color: args.color,
            cwd,
            config,
            sources,
        })
    }

    /// The configuration with a project directory other than the working
    /// directory's (`--path P` of the group commands), same other layers.
    pub fn config_for_project(&self, project_dir: &Path) -> anyhow::Result<Config> {
        let mut sources = self.sources.clone();
        sources.project_dir = Some(project_dir.to_path_buf());
        Ok(Config::load(&sources)?)
    }

    /// The effective pool for a command's `--pool` flag (which wins over
    /// every configured layer), with its warnings printed.
    pub fn pool(
        &self,
        config: &Config,
        flag: Option<&str>,
        kernel: &porthold::net::KernelPorts,
    ) -> anyhow::Result<porthold::pool::Pool> {
        let mut config = config.clone();
        config.apply_overrides(&Overrides {
            pool: flag.map(str::to_string),
            ..Overrides::default()
        })?;
        let (pool, warnings) = config.pool(kernel)?;
        for warning in warnings {
            self.warn(warning);
        }
        Ok(pool)
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

/// `$XDG_CONFIG_HOME/porthold/config.toml` (usually `~/.config/porthold/config.toml`).
fn user_config_path() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|dirs| dirs.config_dir().join("porthold").join("config.toml"))
}

/// The nearest ancestor of `cwd` holding `porthold.toml`.
fn project_dir_of(cwd: &Path) -> Option<PathBuf> {
    let canonical = cwd.canonicalize().ok()?;
    porthold::key::find_project_root(&canonical)
}

/// The `PORTHOLD_*` variables of the environment (non-UTF-8 values are skipped).
fn porthold_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("PORTHOLD_"))
        .collect()
}
