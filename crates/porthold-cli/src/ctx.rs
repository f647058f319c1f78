//! What every command needs, resolved once from the global flags and the
//! environment: directories, timeouts, output mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use porthold::config::{Config, Overrides, Sources};
use porthold::key::ProjectRoot;

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
    pub verbose: u8,
    /// `--color`.
    pub color: ColorChoice,
    /// The working directory, absolute.
    pub cwd: PathBuf,
    /// The inferred project path of the working directory (nearest trusted
    /// porthold.toml, else git work tree root, else the working directory),
    /// found once by one walk over the ancestors and reused by config
    /// discovery and every key that has no `--path`.
    pub project: ProjectRoot,
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
        let project = porthold::key::discover_project_root(&cwd)?;
        let sources = Sources {
            user_config: user_config_path(),
            project_dir: project.project_file_dir().map(Path::to_path_buf),
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
            None => default_runtime_dir(
                std::env::var_os("XDG_RUNTIME_DIR"),
                rustix::process::geteuid().as_raw(),
            ),
        };
        let ctx = Ctx {
            data_dir: absolute(&cwd, data_dir),
            runtime_dir: absolute(&cwd, runtime_dir),
            busy_timeout,
            json: args.json,
            quiet: args.quiet,
            verbose: args.verbose,
            color: args.color,
            cwd,
            project,
            config,
            sources,
        };
        for (file, owner) in &ctx.project.ignored {
            ctx.warn(porthold::config::untrusted_warning(file, *owner));
        }
        if ctx.verbose > 0 {
            ctx.explain_setup();
        }
        for warning in &ctx.config.warnings {
            ctx.warn(warning);
        }
        Ok(ctx)
    }

    /// The configuration with a project directory other than the working
    /// directory's (`--path P` of the group commands), same other layers.
    pub fn config_for_project(&self, project_dir: &Path) -> anyhow::Result<Config> {
        let mut sources = self.sources.clone();
        sources.project_dir = Some(project_dir.to_path_buf());
        let config = Config::load(&sources)?;
        // The user config's warnings were printed already.
        for warning in config.warnings.iter().skip(self.config.warnings.len()) {
            self.warn(warning);
        }
        Ok(config)
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

    /// Prints a warning on stderr unless `-q` (in `--json` mode as a JSON
    /// line; for humans with control characters escaped).
    pub fn warn(&self, message: impl std::fmt::Display) {
        if self.quiet {
            return;
        }
        let message = message.to_string();
        if self.json {
            eprintln!("{}", serde_json::json!({ "warning": message.to_string() }));
        } else {
            eprintln!(
                "porthold: {} {}",
                Style::for_stderr(self.color).warning("warning:"),
                porthold::text::escape(&message)
            );
        }
    }

    /// With `-v`: one line on stderr about what porthold does (unless `-q`).
    pub fn explain(&self, message: impl std::fmt::Display) {
        if self.verbose == 0 || self.quiet {
            return;
        }
        let message = message.to_string();
        if self.json {
            eprintln!("{}", serde_json::json!({ "verbose": message }));
        } else {
            eprintln!("porthold: [-v] {}", porthold::text::escape(&message));
        }
    }

    /// With `-v`: where the data dir, runtime dir and project come from, and
    /// which configuration files were read.
    fn explain_setup(&self) {
        let data_dir_origin = match &self.config.data_dir {
            Some(setting) => setting.origin.to_string(),
            None => "default".to_string(),
        };
        self.explain(format!(
            "data dir {} ({data_dir_origin})",
            self.data_dir.display()
        ));
        self.explain(format!("runtime dir {}", self.runtime_dir.display()));
        let why = match self.project.source {
            porthold::key::RootSource::ProjectFile => "holds porthold.toml",
            porthold::key::RootSource::GitWorkTree => "root of the git work tree",
            porthold::key::RootSource::WorkingDirectory => "the working directory",
        };
        self.explain(format!("project {} ({why})", self.project.dir.display()));
        if self.config.files.is_empty() {
            self.explain("configuration: no files, built-in defaults");
        }
        for file in &self.config.files {
            self.explain(format!("configuration read: {}", file.display()));
        }
    }

    /// Prints a note on stderr unless `-q` (control characters escaped for humans).
    pub fn note(&self, message: impl std::fmt::Display) {
        if self.quiet {
            return;
        }
        let message = message.to_string();
        if self.json {
            eprintln!("{}", serde_json::json!({ "note": message.to_string() }));
        } else {
            eprintln!("porthold: {}", porthold::text::escape(&message));
        }
    }
}

/// `$XDG_RUNTIME_DIR/porthold`, else `/tmp/porthold-$UID`. The XDG spec
/// makes a relative `XDG_RUNTIME_DIR` invalid: it is ignored, as is an empty one.
fn default_runtime_dir(xdg_runtime_dir: Option<std::ffi::OsString>, uid: u32) -> PathBuf {
    match xdg_runtime_dir.filter(|v| Path::new(v).is_absolute()) {
        Some(dir) => PathBuf::from(dir).join("porthold"),
        None => PathBuf::from(format!("/tmp/porthold-{uid}")),
    }
}

fn absolute(cwd: &std::path::Path, path: PathBuf) -> PathBuf {
    porthold::key::normalize_lexically(&cwd.join(path))
}

/// `$XDG_CONFIG_HOME/porthold/config.toml` (usually `~/.config/porthold/config.toml`).
fn user_config_path() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|dirs| dirs.config_dir().join("porthold").join("config.toml"))
}

/// The `PORTHOLD_*` variables of the environment (non-UTF-8 values are skipped).
fn porthold_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("PORTHOLD_"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_or_empty_xdg_runtime_dir_is_ignored() {
        assert_eq!(
            default_runtime_dir(Some("/run/user/7".into()), 7),
            PathBuf::from("/run/user/7/porthold")
        );
        for ignored in ["run/user/7", "", "./x"] {
            assert_eq!(
                default_runtime_dir(Some(ignored.into()), 7),
                PathBuf::from("/tmp/porthold-7"),
                "{ignored:?}"
            );
        }
        assert_eq!(
            default_runtime_dir(None, 7),
            PathBuf::from("/tmp/porthold-7")
        );
    }

    /// An option that the environment can provide (`PORTHOLD_RUNTIME_DIR`,
    /// `PORTHOLD_COLOR`) is never required, so no usage line lists it as if
    /// it had to be typed.
    #[test]
    fn no_usage_line_lists_an_environment_provided_option_as_required() {
        fn check(command: &clap::Command, path: &str) {
            let mut command = command.clone();
            let usage = command.render_usage().to_string();
            for arg in command.get_arguments() {
                let Some(env) = arg.get_env() else { continue };
                assert!(
                    !arg.is_required_set(),
                    "{path}: --{} ({env:?}) is required",
                    arg.get_id()
                );
                if let Some(long) = arg.get_long() {
                    assert!(
                        !usage.contains(&format!("--{long} ")),
                        "{path}: the usage lists --{long}: {usage}"
                    );
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
        command.build();
        check(&command, "porthold");
    }
}
