//! Layered configuration (PRODUCT.md §4.4).
//!
//! Layers, later wins: built-in defaults → user config
//! (`~/.config/porthold/config.toml`) → the project's `porthold.toml` →
//! `porthold.local.toml` beside it (untracked overrides) → `PORTHOLD_*`
//! environment variables → command-line flags.
//!
//! The library never reads the environment or XDG directories itself: the
//! caller passes the user-config path, the project directory, the environment
//! (as a list of pairs) and the flag values in [`Sources`]. Everything is
//! validated when it is loaded, so later code can trust it: an unknown key or
//! a bad value is an [`Error::Invalid`] (exit 2) naming the file, the line and
//! the key (`porthold.toml:7: services.web.env: ...`). Environment-variable
//! names given for services must match `[A-Z_][A-Z0-9_]*`, because they end up
//! in output that a shell evaluates (`autoreserve --format export`); checking
//! them here means no unchecked name ever reaches that output.
//!
//! Scalar settings (`pool.range`, `registry.busy_timeout`,
//! `registry.data_dir`, `project.name`) are replaced by a later layer;
//! `pool.exclude` accumulates across layers (an exclusion made by the user
//! config stays excluded in every project); services are merged per tag and
//! field by field (a local file may set only `port` of one service).
//!
//! The file format is documented, with an example a test parses, in
//! `docs/config.md`.

mod layer;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::net::{KernelPorts, PortRange};
use crate::pool::{Pool, PoolWarning};

pub use layer::{
    LayerKind, RESERVED_ENV_NAMES, RESERVED_ENV_PREFIXES, validate_env_name, validate_env_syntax,
    validate_listen, validate_ready,
};

/// The project's tracked configuration file name.
pub const PROJECT_FILE: &str = crate::key::PROJECT_FILE;
/// The project's untracked override file name.
pub const LOCAL_FILE: &str = "porthold.local.toml";
/// The default registry lock wait.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built into porthold.
    Default,
    /// A configuration file, at this line.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line of the value.
        line: usize,
    },
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env(name) => write!(f, "environment {name}"),
            Origin::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Its origin.
    pub origin: Origin,
}

impl<T> Setting<T> {
    fn new(value: T, origin: Origin) -> Self {
        Setting { value, origin }
    }
}

/// One service of a project (`[services.<tag>]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The service's tag (the table name).
    pub tag: String,
    /// A preferred fixed port.
    pub port: Option<u16>,
    /// An offset from the group's base port (mutually exclusive with `port`).
    pub offset: Option<u16>,
    /// The environment variable that receives the port; validated
    /// `[A-Z_][A-Z0-9_]*`. Defaults to the tag upper-cased with `-`/`.`
    /// turned into `_`, plus `_PORT` (`web` → `WEB_PORT`).
    pub env: String,
    /// Listen specs for `porthold run` (`name=tcp://127.0.0.1:0`), validated syntactically.
    pub listen: Vec<String>,
    /// Readiness mode for `porthold run` (`listen`, `notify`, `tcp`, `http:/path`, `cmd:...`, `delay:500ms`).
    pub ready: Option<String>,
    /// Where the service's `port` or `offset` was set, else its table.
    pub origin: Origin,
    /// Where `env` was set; [`Origin::Default`] for the default name.
    pub env_origin: Origin,
    /// Where `listen` was set.
    pub listen_origin: Option<Origin>,
}

impl Service {
    /// The parsed listen specs (already checked when the file loaded).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the spec, which cannot happen for a loaded config.
    pub fn listen_specs(&self) -> Result<Vec<crate::net::listen::ListenSpec>> {
        self.listen
            .iter()
            .map(|s| crate::net::listen::ListenSpec::parse(s))
            .collect()
    }
}

/// The effective configuration after all layers.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[pool] range`; `None` means the built-in default pool.
    pub pool: Option<Setting<Vec<PortRange>>>,
    /// `[pool] exclude`, accumulated over all layers.
    pub exclude: Vec<Setting<PortRange>>,
    /// `[registry] busy_timeout`.
    pub busy_timeout: Setting<Duration>,
    /// `[registry] data_dir`; `None` means the caller's default (XDG data dir).
    pub data_dir: Option<Setting<PathBuf>>,
    /// `[project] name`.
    pub project_name: Option<Setting<String>>,
    /// `[services.<tag>]`, by tag.
    pub services: BTreeMap<String, Service>,
    /// The directory holding the project file, when one was read.
    pub project_root: Option<PathBuf>,
    /// The files read, in layer order.
    pub files: Vec<PathBuf>,
    /// Things the user should hear about that did not stop the load: an
    /// ignored project file owned by someone else, an unreadable user config.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pool: None,
            exclude: Vec::new(),
            busy_timeout: Setting::new(DEFAULT_BUSY_TIMEOUT, Origin::Default),
            data_dir: None,
            project_name: None,
            services: BTreeMap::new(),
            project_root: None,
            files: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Values given on the command line; they win over everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--pool A-B[,C-D]`.
    pub pool: Option<String>,
    /// `--busy-timeout DURATION`.
    pub busy_timeout: Option<String>,
    /// `--data-dir DIR` (relative to the working directory, resolved by the caller).
    pub data_dir: Option<PathBuf>,
}

/// What to read. The caller decides every location; nothing is read implicitly.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The user config file; a missing file is skipped.
    pub user_config: Option<PathBuf>,
    /// The project directory holding `porthold.toml` (and maybe
    /// `porthold.local.toml`); missing files are skipped.
    pub project_dir: Option<PathBuf>,
    /// The process environment; only `PORTHOLD_POOL`, `PORTHOLD_EXCLUDE`,
    /// `PORTHOLD_BUSY_TIMEOUT` and `PORTHOLD_DATA_DIR` are read from it.
    pub env: Vec<(String, String)>,
    /// Flag values.
    pub flags: Overrides,
}

impl Config {
    /// Loads every layer of `sources`, in order.
    ///
    /// A project file (`porthold.toml`, `porthold.local.toml`) owned by
    /// another user (not root) is ignored with a warning in
    /// [`Config::warnings`]; a user config that exists but cannot be read is
    /// a warning too. Registry settings in a project file are errors.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming file, line and key for an unknown key or a bad
    /// value (or naming the variable / flag), and for services that collide
    /// (same port, same offset, same environment variable); [`Error::Io`]
    /// when a project file exists but cannot be read.
    pub fn load(sources: &Sources) -> Result<Config> {
        let mut config = Config::default();
        if let Some(user) = &sources.user_config {
            match std::fs::read_to_string(user) {
                Ok(text) => config.apply_text(user, &text, LayerKind::User)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // An unreadable ~/.config (another owner, a file in its
                // place) must not make every command fail.
                Err(e) => config.warnings.push(format!(
                    "ignoring the user config `{}`: {e}",
                    crate::text::escape_path(user)
                )),
            }
        }
        if let Some(dir) = &sources.project_dir {
            for name in [PROJECT_FILE, LOCAL_FILE] {
                let file = dir.join(name);
                match crate::key::file_trust(&file) {
                    crate::key::FileTrust::Missing => {}
                    crate::key::FileTrust::Untrusted(owner) => {
                        config.warnings.push(untrusted_warning(&file, owner));
                    }
                    crate::key::FileTrust::Trusted => {
                        let text = std::fs::read_to_string(&file).map_err(|e| {
                            Error::io(format!("reading `{}`", crate::text::escape_path(&file)), e)
                        })?;
                        config.apply_text(&file, &text, LayerKind::Project)?;
                        config.project_root = Some(dir.clone());
                    }
                }
            }
        }
        config.check_services()?;
        config.apply_env(&sources.env)?;
        config.apply_overrides(&sources.flags)?;
        Ok(config)
    }

    /// Checks one file (`porthold validate FILE`): the defaults plus that file.
    /// A file named `porthold.toml` or `porthold.local.toml` is checked as a
    /// project file (no registry settings), any other as a user config.
    ///
    /// # Errors
    /// As [`Config::load`]; a missing file is an [`Error::Io`].
    pub fn check_file(path: &Path) -> Result<Config> {
        let mut config = Config::default();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading `{}`", crate::text::escape_path(path)), e))?;
        let kind = match path.file_name().and_then(|n| n.to_str()) {
            Some(PROJECT_FILE | LOCAL_FILE) => LayerKind::Project,
            _ => LayerKind::User,
        };
        config.apply_text(path, &text, kind)?;
        config.check_services()?;
        Ok(config)
    }

    /// Rules across services, checked once every file is merged (a local
    /// file may fix what the project file sets): no two services with the
    /// same `port`, the same `offset`, or the same environment variable
    /// (explicitly or by the default mapping: `web-x` and `web_x` are both
    /// `WEB_X_PORT`), since one would silently overwrite the other.
    fn check_services(&self) -> Result<()> {
        let mut ports: BTreeMap<u16, &Service> = BTreeMap::new();
        let mut offsets: BTreeMap<u16, &Service> = BTreeMap::new();
        let mut envs: BTreeMap<&str, &Service> = BTreeMap::new();
        for service in self.services.values() {
            let clash = |first: &Service, what: String, hint: &str| {
                Error::invalid(
                    format!(
                        "{}: services.{}: {what} as services.{} ({})",
                        service.origin, service.tag, first.tag, first.origin
                    ),
                    Some(hint.to_string()),
                )
            };
            if let Some(port) = service.port
                && let Some(first) = ports.insert(port, service)
            {
                return Err(clash(
                    first,
                    format!("the same port {port}"),
                    "give every service its own port",
                ));
            }
            if let Some(offset) = service.offset
                && let Some(first) = offsets.insert(offset, service)
            {
                return Err(clash(
                    first,
                    format!("the same offset {offset}"),
                    "give every service its own offset",
                ));
            }
            if let Some(first) = envs.insert(service.env.as_str(), service) {
                let place = |s: &Service| match &s.env_origin {
                    Origin::Default => format!("services.{} by default", s.tag),
                    origin => format!("services.{}.env at {origin}", s.tag),
                };
                return Err(Error::invalid(
                    format!(
                        "{}: services.{}: the environment variable {} is chosen by {} and by {}",
                        service.origin,
                        service.tag,
                        service.env,
                        place(first),
                        place(service)
                    ),
                    Some(format!(
                        "set a distinct `env = \"NAME\"` in [services.{}]",
                        service.tag
                    )),
                ));
            }
        }
        Ok(())
    }

    /// Warnings about a loaded configuration that are not errors, for
    /// `validate`: a service whose `listen` binds an explicit `:0` gets a
    /// kernel-chosen port, not its reserved one.
    pub fn service_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for service in self.services.values() {
            let Ok(specs) = service.listen_specs() else {
                continue;
            };
            for (text, spec) in service.listen.iter().zip(&specs) {
                if spec.explicit_port() == Some(0) {
                    let origin = service
                        .listen_origin
                        .as_ref()
                        .map_or_else(String::new, |o| format!("{o}: "));
                    warnings.push(format!(
                        "{origin}services.{}.listen: `{}` binds a kernel-chosen port, not the \
                         service's reserved port; leave the port out or write `:{{port}}` to use it",
                        service.tag,
                        crate::text::quote_prefix(text)
                    ));
                }
            }
        }
        warnings
    }

    /// Parses `text` (the contents of `path`) and applies it as one layer.
    pub(crate) fn apply_text(&mut self, path: &Path, text: &str, kind: LayerKind) -> Result<()> {
        let layer = layer::parse(path, text, kind)?;
        self.files.push(path.to_path_buf());
        if let Some(pool) = layer.pool {
            self.pool = Some(pool);
        }
        self.exclude.extend(layer.exclude);
        if let Some(timeout) = layer.busy_timeout {
            self.busy_timeout = timeout;
        }
        if let Some(dir) = layer.data_dir {
            self.data_dir = Some(dir);
        }
        if let Some(name) = layer.project_name {
            self.project_name = Some(name);
        }
        for (tag, patch) in layer.services {
            let service = self.services.entry(tag.clone()).or_insert_with(|| Service {
                tag: tag.clone(),
                port: None,
                offset: None,
                env: String::new(),
                listen: Vec::new(),
                ready: None,
                origin: patch.origin.clone(),
                env_origin: Origin::Default,
                listen_origin: None,
            });
            // `port` and `offset` exclude each other: a layer that sets one clears the other.
            if let Some((port, origin)) = patch.port {
                service.port = Some(port);
                service.offset = None;
                service.origin = origin;
            }
            if let Some((offset, origin)) = patch.offset {
                service.offset = Some(offset);
                service.port = None;
                service.origin = origin;
            }
            if let Some((env, origin)) = patch.env {
                service.env = env;
                service.env_origin = origin;
            }
            if let Some((listen, origin)) = patch.listen {
                service.listen = listen;
                service.listen_origin = Some(origin);
            }
            if let Some(ready) = patch.ready {
                service.ready = Some(ready);
            }
        }
        for service in self.services.values_mut() {
            if service.env.is_empty() {
                service.env = layer::default_env_name(&service.tag).map_err(|e| {
                    Error::invalid(
                        format!("{}: services.{}: {e}", path.display(), service.tag),
                        Some(format!(
                            "set `env = \"NAME\"` in [services.{}]",
                            service.tag
                        )),
                    )
                })?;
            }
        }
        Ok(())
    }

    fn apply_env(&mut self, env: &[(String, String)]) -> Result<()> {
        for (name, value) in env {
            let origin = Origin::Env(name.clone());
            let context = |e: Error| in_context(&format!("environment variable {name}"), e);
            match name.as_str() {
                "PORTHOLD_POOL" => {
                    self.pool = Some(Setting::new(
                        crate::pool::parse_pool(value).map_err(context)?,
                        origin,
                    ));
                }
                "PORTHOLD_EXCLUDE" => {
                    for part in value.split(',').filter(|p| !p.trim().is_empty()) {
                        let range: PortRange = part.parse().map_err(context)?;
                        self.exclude.push(Setting::new(range, origin.clone()));
                    }
                }
                "PORTHOLD_BUSY_TIMEOUT" => {
                    self.busy_timeout =
                        Setting::new(crate::duration::parse(value).map_err(context)?, origin);
                }
                "PORTHOLD_DATA_DIR" if !value.is_empty() => {
                    self.data_dir = Some(Setting::new(PathBuf::from(value), origin));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Applies flag values on top of everything loaded so far.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the flag.
    pub fn apply_overrides(&mut self, flags: &Overrides) -> Result<()> {
        if let Some(pool) = &flags.pool {
            self.pool = Some(Setting::new(
                crate::pool::parse_pool(pool).map_err(|e| in_context("--pool", e))?,
                Origin::Flag("--pool".into()),
            ));
        }
        if let Some(timeout) = &flags.busy_timeout {
            self.busy_timeout = Setting::new(
                crate::duration::parse(timeout).map_err(|e| in_context("--busy-timeout", e))?,
                Origin::Flag("--busy-timeout".into()),
            );
        }
        if let Some(dir) = &flags.data_dir {
            self.data_dir = Some(Setting::new(dir.clone(), Origin::Flag("--data-dir".into())));
        }
        Ok(())
    }

    /// The exclusions as plain ranges.
    pub fn excluded_ranges(&self) -> Vec<PortRange> {
        self.exclude.iter().map(|s| s.value).collect()
    }

    /// The effective pool: the configured or default pool (see
    /// [`Pool::resolve`]) minus `[pool] exclude`.
    ///
    /// # Errors
    /// [`Error::Invalid`] when nothing is left.
    pub fn pool(&self, kernel: &KernelPorts) -> Result<(Pool, Vec<PoolWarning>)> {
        let (pool, warnings) = Pool::resolve(self.pool.as_ref().map(|s| s.value.clone()), kernel)?;
        if self.exclude.is_empty() {
            return Ok((pool, warnings));
        }
        let mut ranges = pool.ranges().to_vec();
        for exclusion in &self.exclude {
            ranges = ranges
                .iter()
                .flat_map(|r| r.subtract(&exclusion.value))
                .collect();
        }
        if ranges.is_empty() {
            return Err(Error::invalid(
                format!("the pool {pool} is entirely excluded by [pool] exclude"),
                Some("remove exclusions or widen the pool".into()),
            ));
        }
        Ok((Pool::new(ranges)?, warnings))
    }
}

/// The default data directory, as `porthold` resolves it when neither
/// `PORTHOLD_DATA_DIR` nor the user config's `[registry] data_dir` sets one:
/// `$XDG_DATA_HOME/porthold` when that is absolute (the XDG spec makes a
/// relative one invalid), else `$HOME/.local/share/porthold`; `None` without
/// a home. The values are passed in: the library reads no environment.
pub fn default_data_dir(
    xdg_data_home: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    xdg_dir(xdg_data_home, home, ".local/share").map(|dir| dir.join("porthold"))
}

/// The user config file: `$XDG_CONFIG_HOME/porthold/config.toml` when that is
/// absolute, else `$HOME/.config/porthold/config.toml`; `None` without a home.
pub fn default_user_config(
    xdg_config_home: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    xdg_dir(xdg_config_home, home, ".config").map(|dir| dir.join("porthold").join("config.toml"))
}

fn xdg_dir(
    xdg: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
    fallback: &str,
) -> Option<PathBuf> {
    match xdg.map(Path::new).filter(|dir| dir.is_absolute()) {
        Some(dir) => Some(dir.to_path_buf()),
        None => home
            .map(Path::new)
            .filter(|home| home.is_absolute())
            .map(|home| home.join(fallback)),
    }
}

/// The warning for a project file that another user owns.
pub fn untrusted_warning(file: &Path, owner: u32) -> String {
    format!(
        "ignoring `{}`: it is owned by uid {owner}, not by you or root (a project file \
         configures your ports and commands; `chown` it if it is yours)",
        crate::text::escape_path(file)
    )
}

/// Checks that the data dir, when it exists, is a directory owned by the
/// current user and not writable by group or others (`0755` is fine): anyone
/// who can write there can replace the registry and hand out its ports.
///
/// # Errors
/// [`Error::Invalid`] naming the directory, with a `chown`/`chmod` hint.
pub fn check_data_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::io(
                format!(
                    "inspecting the data dir `{}`",
                    crate::text::escape_path(dir)
                ),
                e,
            ));
        }
    };
    let shown = crate::text::escape_path(dir);
    if !meta.is_dir() {
        return Err(Error::invalid(
            format!("the data dir `{shown}` is not a directory"),
            Some(
                "point the data dir (PORTHOLD_DATA_DIR) at a directory, or move that file away"
                    .into(),
            ),
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::invalid(
            format!(
                "the data dir `{shown}` is owned by uid {}, not by you (uid {me})",
                meta.uid()
            ),
            Some(format!(
                "use a data dir of your own (PORTHOLD_DATA_DIR), or `chown {me} '{shown}'`"
            )),
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(Error::invalid(
            format!("the data dir `{shown}` is writable by group or others (mode {mode:04o})"),
            Some(format!("run `chmod go-w '{shown}'`")),
        ));
    }
    Ok(())
}

/// Prefixes an [`Error::Invalid`] message with where the value came from.
fn in_context(context: &str, e: Error) -> Error {
    match e {
        Error::Invalid { message, hint } => Error::Invalid {
            message: format!("{context}: {message}"),
            hint,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests;

/// The commented `porthold.toml` that `porthold init --config` writes. It is
/// valid as written (a test loads it), with every optional key shown.
pub const TEMPLATE: &str = r#"# porthold project file. Reference: docs/config.md
# `porthold autoreserve --format export` reserves every service below in one
# transaction and prints WEB_PORT=... lines for `eval`.

[project]
# A sticky label stored with every reservation of this project.
# name = "my-project"

[pool]
# Where new ports come from (a range, or a list of ranges).
# range = "10000-29999"
# Ports never handed out (e.g. a local database). Accumulates across layers.
# exclude = [5432, "6379-6380"]

# Registry settings (`[registry] data_dir`, `busy_timeout`) belong in the user
# config ~/.config/porthold/config.toml: a project file may not set them.

# One table per service; the table name is the tag.
[services.web]
# Offsets keep services a fixed distance apart: web at base, api at base+1.
offset = 0
env = "WEB_PORT"
# For `porthold run`: `{port}` (or no port) is this service's reserved port;
# `:0` would be a kernel-chosen port instead.
# listen = ["web=tcp://127.0.0.1:{port}"]
# ready = "http:/health"               # listen, notify, tcp, http:/path, cmd:..., delay:500ms

# [services.api]
# offset = 1
# Or a preferred fixed port (exit 3 if another key holds it):
# port = 8080
# env = "API_PORT"
"#;
