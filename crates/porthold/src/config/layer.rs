//! One configuration file: strict parsing (unknown keys are errors) and
//! validation of every value, with the line of the offending key or value.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Origin, Setting};
use crate::error::{Error, Result};
use crate::net::PortRange;
use crate::net::listen::{ListenSpec, validate_listen_specs};
use crate::text::quote_prefix;

/// Which layer a file is: registry settings are refused in project files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// The user config (`~/.config/porthold/config.toml`): every key.
    User,
    /// A project's `porthold.toml` / `porthold.local.toml`: no `[registry]`
    /// settings, so a repository cannot move or fork the user's registry.
    Project,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    pool: Option<RawPool>,
    registry: Option<RawRegistry>,
    project: Option<RawProject>,
    services: Option<BTreeMap<Spanned<String>, RawService>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    range: Option<Spanned<toml::Value>>,
    exclude: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    busy_timeout: Option<Spanned<toml::Value>>,
    data_dir: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    name: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    port: Option<Spanned<toml::Value>>,
    offset: Option<Spanned<toml::Value>>,
    env: Option<Spanned<toml::Value>>,
    listen: Option<Spanned<toml::Value>>,
    ready: Option<Spanned<toml::Value>>,
}

/// A service's fields as one layer sets them, with where each was set.
#[derive(Debug)]
pub(super) struct ServicePatch {
    pub(super) origin: Origin,
    pub(super) port: Option<(u16, Origin)>,
    pub(super) offset: Option<(u16, Origin)>,
    pub(super) env: Option<(String, Origin)>,
    pub(super) listen: Option<(Vec<String>, Origin)>,
    pub(super) ready: Option<String>,
}

/// One file's validated settings.
#[derive(Debug, Default)]
pub(super) struct Layer {
    pub(super) pool: Option<Setting<Vec<PortRange>>>,
    pub(super) exclude: Vec<Setting<PortRange>>,
    pub(super) busy_timeout: Option<Setting<Duration>>,
    pub(super) data_dir: Option<Setting<PathBuf>>,
    pub(super) project_name: Option<Setting<String>>,
    pub(super) services: BTreeMap<String, ServicePatch>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(1, |before| {
        before.bytes().filter(|b| *b == b'\n').count() + 1
    })
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn origin(&self, span: &Range<usize>) -> Origin {
        Origin::File {
            path: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
        }
    }

    /// `file:line: key: message`, exit 2.
    fn error(
        &self,
        span: &Range<usize>,
        key: &str,
        message: String,
        hint: Option<String>,
    ) -> Error {
        Error::invalid(
            format!(
                "{}:{}: {key}: {message}",
                self.path.display(),
                line_of(self.text, span.start)
            ),
            hint,
        )
    }

    fn string(&self, value: &Spanned<toml::Value>, key: &str) -> Result<String> {
        match value.get_ref() {
            toml::Value::String(s) => Ok(s.clone()),
            other => Err(self.error(
                &value.span(),
                key,
                format!("expected a string, found {}", other.type_str()),
                None,
            )),
        }
    }

    fn port(&self, value: &Spanned<toml::Value>, key: &str, allow_zero: bool) -> Result<u16> {
        match value.get_ref() {
            toml::Value::Integer(n) if (i64::from(!allow_zero)..=65535).contains(n) => {
                Ok(*n as u16)
            }
            other => Err(self.error(
                &value.span(),
                key,
                format!(
                    "expected a port number {}-65535, found `{other}`",
                    u8::from(!allow_zero)
                ),
                None,
            )),
        }
    }

    /// A range written as `"A-B"`, `"N"` or an integer.
    fn range_item(&self, value: &toml::Value, span: &Range<usize>, key: &str) -> Result<PortRange> {
        let parsed = match value {
            toml::Value::String(s) => s.parse::<PortRange>().ok(),
            toml::Value::Integer(n) => u16::try_from(*n).ok().and_then(PortRange::single),
            _ => None,
        };
        parsed.ok_or_else(|| {
            self.error(
                span,
                key,
                format!("invalid port range `{value}`"),
                Some("write \"START-END\" (ports 1-65535) or a single port".into()),
            )
        })
    }

    /// A string or an array of ranges.
    fn ranges(&self, value: &Spanned<toml::Value>, key: &str) -> Result<Vec<PortRange>> {
        let span = value.span();
        match value.get_ref() {
            toml::Value::Array(items) => items
                .iter()
                .map(|item| self.range_item(item, &span, key))
                .collect(),
            toml::Value::String(s) => s
                .split(',')
                .map(|part| self.range_item(&toml::Value::String(part.to_string()), &span, key))
                .collect(),
            other => self.range_item(other, &span, key).map(|r| vec![r]),
        }
    }
}

/// Parses and validates one file.
pub(super) fn parse(path: &Path, text: &str, kind: LayerKind) -> Result<Layer> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |span| line_of(text, span.start));
        Error::invalid(
            format!("{}:{line}: {}", path.display(), e.message().trim_end()),
            Some("see docs/config.md for the keys porthold understands".into()),
        )
    })?;
    let cx = Ctx { path, text };
    let mut layer = Layer::default();

    if let Some(pool) = raw.pool {
        if let Some(range) = pool.range {
            let ranges = cx.ranges(&range, "pool.range")?;
            if ranges.is_empty() {
                return Err(cx.error(
                    &range.span(),
                    "pool.range",
                    "the pool is empty".into(),
                    None,
                ));
            }
            layer.pool = Some(Setting::new(ranges, cx.origin(&range.span())));
        }
        if let Some(exclude) = pool.exclude {
            let origin = cx.origin(&exclude.span());
            layer.exclude = cx
                .ranges(&exclude, "pool.exclude")?
                .into_iter()
                .map(|r| Setting::new(r, origin.clone()))
                .collect();
        }
    }
    if let Some(registry) = raw.registry {
        if kind == LayerKind::Project {
            for (key, value) in [
                ("registry.busy_timeout", &registry.busy_timeout),
                ("registry.data_dir", &registry.data_dir),
            ] {
                if let Some(value) = value {
                    return Err(cx.error(
                        &value.span(),
                        key,
                        "registry settings are not allowed in a project file (a repository \
                         must not move or fork your registry)"
                            .into(),
                        Some(
                            "set it in the user config ~/.config/porthold/config.toml, \
                             or with --data-dir / --busy-timeout"
                                .into(),
                        ),
                    ));
                }
            }
        }
        if let Some(timeout) = registry.busy_timeout {
            let text = cx.string(&timeout, "registry.busy_timeout")?;
            let value = crate::duration::parse(&text).map_err(|e| {
                cx.error(
                    &timeout.span(),
                    "registry.busy_timeout",
                    e.to_string(),
                    e.hint(),
                )
            })?;
            layer.busy_timeout = Some(Setting::new(value, cx.origin(&timeout.span())));
        }
        if let Some(dir) = registry.data_dir {
            let text = cx.string(&dir, "registry.data_dir")?;
            if text.is_empty() {
                return Err(cx.error(&dir.span(), "registry.data_dir", "empty path".into(), None));
            }
            // A relative data dir is relative to the file that names it.
            let base = path.parent().unwrap_or(Path::new("/"));
            let value = crate::key::normalize_lexically(&base.join(text));
            layer.data_dir = Some(Setting::new(value, cx.origin(&dir.span())));
        }
    }
    if let Some(project) = raw.project
        && let Some(name) = project.name
    {
        let value = cx.string(&name, "project.name")?;
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(cx.error(
                &name.span(),
                "project.name",
                format!("invalid project name `{}`", quote_prefix(&value)),
                Some("use a non-empty name without control characters".into()),
            ));
        }
        crate::text::validate_label("project name", &value)
            .map_err(|e| cx.error(&name.span(), "project.name", e.to_string(), e.hint()))?;
        layer.project_name = Some(Setting::new(value, cx.origin(&name.span())));
    }
    for (tag, raw) in raw.services.unwrap_or_default() {
        let tag_span = tag.span();
        let tag = tag.into_inner();
        let key = |field: &str| format!("services.{tag}.{field}");
        crate::key::validate_tag(&tag).map_err(|e| {
            cx.error(
                &tag_span,
                &format!("services.{tag}"),
                e.to_string(),
                e.hint(),
            )
        })?;
        let mut patch = ServicePatch {
            origin: cx.origin(&tag_span),
            port: None,
            offset: None,
            env: None,
            listen: None,
            ready: None,
        };
        if let (Some(port), Some(_)) = (&raw.port, &raw.offset) {
            return Err(cx.error(
                &port.span(),
                &format!("services.{tag}"),
                "set either `port` or `offset`, not both".into(),
                None,
            ));
        }
        if let Some(port) = &raw.port {
            patch.port = Some((cx.port(port, &key("port"), false)?, cx.origin(&port.span())));
        }
        if let Some(offset) = &raw.offset {
            patch.offset = Some((
                cx.port(offset, &key("offset"), true)?,
                cx.origin(&offset.span()),
            ));
        }
        if let Some(env) = &raw.env {
            let name = cx.string(env, &key("env"))?;
            validate_env_name(&name)
                .map_err(|e| cx.error(&env.span(), &key("env"), e.to_string(), e.hint()))?;
            patch.env = Some((name, cx.origin(&env.span())));
        }
        if let Some(listen) = &raw.listen {
            let items = match listen.get_ref() {
                toml::Value::Array(items) => items,
                other => {
                    return Err(cx.error(
                        &listen.span(),
                        &key("listen"),
                        format!("expected an array of strings, found {}", other.type_str()),
                        None,
                    ));
                }
            };
            let mut specs = Vec::new();
            for item in items {
                let toml::Value::String(spec) = item else {
                    return Err(cx.error(
                        &listen.span(),
                        &key("listen"),
                        format!("expected a string, found `{item}`"),
                        None,
                    ));
                };
                validate_listen(spec).map_err(|e| {
                    cx.error(&listen.span(), &key("listen"), e.to_string(), e.hint())
                })?;
                specs.push(spec.clone());
            }
            let parsed: Vec<ListenSpec> = specs
                .iter()
                .map(|spec| ListenSpec::parse(spec))
                .collect::<Result<_>>()?;
            validate_listen_specs(&parsed)
                .map_err(|e| cx.error(&listen.span(), &key("listen"), e.to_string(), e.hint()))?;
            patch.listen = Some((specs, cx.origin(&listen.span())));
        }
        if let Some(ready) = &raw.ready {
            let mode = cx.string(ready, &key("ready"))?;
            validate_ready(&mode)
                .map_err(|e| cx.error(&ready.span(), &key("ready"), e.to_string(), e.hint()))?;
            patch.ready = Some(mode);
        }
        layer.services.insert(tag, patch);
    }
    Ok(layer)
}

/// Environment variable names a service's `env` or `run --port-env` may not
/// choose: the shell, the dynamic loader or an interpreter reads them at
/// startup (setting `PATH` or `BASH_ENV` to a port number breaks or hijacks
/// the child), or porthold sets them itself. Names with a prefix from
/// [`RESERVED_ENV_PREFIXES`] are refused too. This is the one list; it is
/// documented in docs/config.md.
pub const RESERVED_ENV_NAMES: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "IFS",
    "ENV",
    "BASH_ENV",
    "CDPATH",
    "GLOBIGNORE",
    "SHELLOPTS",
    "BASHOPTS",
    "PS0",
    "PS1",
    "PS2",
    "PS3",
    "PS4",
    "PROMPT_COMMAND",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "NODE_OPTIONS",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "GCONV_PATH",
    // Socket activation and readiness, set by `porthold run`.
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
];

/// Prefixes of reserved names: the dynamic loaders' `LD_*` and `DYLD_*`, and
/// `PORTHOLD_*`, which porthold sets itself (`PORTHOLD_PROJECT_PATH` in
/// `autoreserve` output, `PORTHOLD_INSTANCE_ID` in `run`).
pub const RESERVED_ENV_PREFIXES: &[&str] = &["LD_", "DYLD_", "PORTHOLD_"];

/// Checks only the shape of an environment variable name: `[A-Z_][A-Z0-9_]*`.
///
/// Names end up unquoted in shell code (`export NAME='value'`), so anything
/// else (lower case is allowed by shells but refused here for one simple rule)
/// could inject commands. Use [`validate_env_name`] for a name a user chooses.
///
/// # Errors
/// [`Error::Invalid`] naming the value.
pub fn validate_env_syntax(name: &str) -> Result<&str> {
    let mut bytes = name.bytes();
    let ok = matches!(bytes.next(), Some(b'A'..=b'Z' | b'_'))
        && bytes.all(|b| matches!(b, b'A'..=b'Z' | b'0'..=b'9' | b'_'));
    if ok {
        Ok(name)
    } else {
        Err(Error::invalid(
            format!("invalid environment variable name `{}`", quote_prefix(name)),
            Some(
                "use upper-case letters, digits and `_`, not starting with a digit (e.g. WEB_PORT)"
                    .into(),
            ),
        ))
    }
}

/// Checks an environment variable name that a user chose for a port
/// (`services.<tag>.env`, `run --port-env`): the shape of
/// [`validate_env_syntax`], and not one of [`RESERVED_ENV_NAMES`] or
/// [`RESERVED_ENV_PREFIXES`].
///
/// # Errors
/// [`Error::Invalid`] naming the variable.
pub fn validate_env_name(name: &str) -> Result<&str> {
    validate_env_syntax(name)?;
    let reserved = RESERVED_ENV_NAMES.contains(&name)
        || RESERVED_ENV_PREFIXES.iter().any(|p| name.starts_with(p));
    if reserved {
        return Err(Error::invalid(
            format!(
                "the environment variable {name} is reserved: the shell, the loader or porthold itself interprets it"
            ),
            Some("choose a name of your own, e.g. WEB_PORT (see docs/config.md for the reserved names)".into()),
        ));
    }
    Ok(name)
}

/// The default variable name of a tag: `web-ui` → `WEB_UI_PORT`.
pub(super) fn default_env_name(tag: &str) -> Result<String> {
    let name: String = tag
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect::<String>()
        + "_PORT";
    validate_env_name(&name)?;
    Ok(name)
}

/// Checks a listen spec for `porthold run` exactly as `run` parses it
/// ([`ListenSpec::parse`]): `[NAME=]tcp://HOST[:PORT|:{port}]`, `udp://…` or
/// `unix:///path`, with an optional `?query`.
///
/// # Errors
/// [`Error::Invalid`] naming the spec.
pub fn validate_listen(spec: &str) -> Result<&str> {
    ListenSpec::parse(spec).map(|_| spec)
}

/// Checks a readiness mode for `porthold run`: `listen`, `notify`, `tcp`,
/// `http:/path`, `cmd:COMMAND` or `delay:DURATION`.
///
/// # Errors
/// [`Error::Invalid`] naming the mode.
pub fn validate_ready(mode: &str) -> Result<&str> {
    let bad = || {
        Error::invalid(
            format!("invalid readiness mode `{}`", quote_prefix(mode)),
            Some("use listen, notify, tcp, http:/path, cmd:COMMAND or delay:500ms".into()),
        )
    };
    match mode.split_once(':') {
        None if matches!(mode, "listen" | "notify" | "tcp") => Ok(mode),
        Some(("http", path)) if path.starts_with('/') => Ok(mode),
        Some(("cmd", command)) if !command.trim().is_empty() => Ok(mode),
        Some(("delay", duration)) => crate::duration::parse(duration).map(|_| mode),
        _ => Err(bad()),
    }
}
