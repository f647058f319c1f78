//! The library's error type.
//!
//! Every failure a caller can act on has its own variant, and every variant
//! belongs to one [`ErrorKind`]. The command-line tool maps kinds to exit codes
//! in exactly one place; library users match on variants or kinds.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The broad class of a failure: what a caller (or the CLI's exit code) can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A negative answer: nothing found, an assertion that does not hold.
    NotFound,
    /// Bad input or configuration: an invalid value, a path outside the guard, an I/O failure on a user file.
    Usage,
    /// Something else holds what was asked for: a port, a key, a name.
    Conflict,
    /// The pool has no free port left.
    PoolExhausted,
    /// A lock could not be had in time, or an operation is already running.
    Busy,
    /// The registry (or another persistent file) is unreadable, corrupt or too new.
    Corrupt,
    /// A reload was rolled back; the old generation still serves.
    RolledBack,
    /// A server could not be launched: spawn failure, ready timeout, port stolen.
    Launch,
}

impl ErrorKind {
    /// A stable lower-case name, used in `--json` error objects.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::Usage => "usage",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PoolExhausted => "pool-exhausted",
            ErrorKind::Busy => "busy",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::RolledBack => "rolled-back",
            ErrorKind::Launch => "launch",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds a port that was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holder {
    /// Another key of the registry.
    Reservation {
        /// The holder's project path.
        path: PathBuf,
        /// The holder's tag (empty when none).
        tag: String,
    },
    /// A lease taken by `pick` or `run --no-fds`.
    Lease {
        /// The owning process id.
        pid: u32,
    },
    /// The port is excluded from allocation.
    Excluded,
    /// A process outside the registry listens on the port.
    Listener {
        /// The listener's process id and command, when /proc lets us see them.
        owner: Option<(u32, String)>,
    },
    /// The port cannot be bound by this user (EACCES), e.g. below `ip_unprivileged_port_start`.
    Unusable,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Reservation { path, tag } if tag.is_empty() => {
                write!(f, "reserved by `{}`", path.display())
            }
            Holder::Reservation { path, tag } => {
                write!(f, "reserved by `{}` (tag {tag})", path.display())
            }
            Holder::Lease { pid } => write!(f, "leased to pid {pid}"),
            Holder::Excluded => f.write_str("excluded"),
            Holder::Listener {
                owner: Some((pid, comm)),
            } => {
                write!(f, "in use by pid {pid} ({comm})")
            }
            Holder::Listener { owner: None } => {
                f.write_str("in use by another process (owner unknown)")
            }
            Holder::Unusable => f.write_str("not bindable by this user (permission denied)"),
        }
    }
}

/// Everything that can go wrong in porthold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value given by the user is invalid.
    #[error("{message}")]
    Invalid {
        /// What is wrong, naming the value.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },

    /// An explicit `--path` is unrelated to the working directory.
    #[error(
        "path `{path}` is neither an ancestor nor a descendant of the working directory `{cwd}`"
    )]
    UnrelatedPath {
        /// The explicit path.
        path: PathBuf,
        /// The working directory.
        cwd: PathBuf,
    },

    /// A requested port is held by someone else.
    #[error("port {port} is {holder}")]
    PortTaken {
        /// The requested port.
        port: u16,
        /// Who holds it.
        holder: Holder,
    },

    /// The key already holds another port than the one requested.
    #[error(
        "`{path}`{} already holds port {held}, not {requested}",
        tag_suffix(tag)
    )]
    KeyHoldsOtherPort {
        /// The key's path.
        path: PathBuf,
        /// The key's tag.
        tag: String,
        /// The port the key holds.
        held: u16,
        /// The port that was requested.
        requested: u16,
    },

    /// A sticky label (`project` or `task`) would change.
    #[error("the reservation's {field} is `{current}`; refusing to change it to `{requested}`")]
    StickyLabel {
        /// `project` or `task`.
        field: &'static str,
        /// The stored value.
        current: String,
        /// The requested value.
        requested: String,
    },

    /// An instance name is already running.
    #[error(
        "an instance named `{name}` is already running{}{}",
        holder_suffix(*pid, instance_id),
        keys_suffix(held_by, wanted)
    )]
    NameTaken {
        /// The instance name.
        name: String,
        /// The running launcher's pid, if it could be read.
        pid: Option<u32>,
        /// The running instance id, if it could be read.
        instance_id: Option<String>,
        /// The key the running instance was started for, if it could be read.
        held_by: Option<Box<crate::discovery::Key>>,
        /// The key the caller wanted to run the name for, if it gave one.
        wanted: Option<Box<crate::discovery::Key>>,
    },

    /// No free port is left in the pool.
    #[error("no free port in the pool {pool}{}", skipped_suffix(*skipped_occupied))]
    PoolExhausted {
        /// The pool, as text (`10000-29999`).
        pool: String,
        /// How many occupied candidates were skipped before giving up.
        skipped_occupied: u32,
    },

    /// A lock could not be acquired in time.
    #[error("{what} is busy: {detail}")]
    Busy {
        /// What was busy (`registry /path`, `instance web`).
        what: String,
        /// Why, and for how long we waited.
        detail: String,
    },

    /// The registry file is not a readable database of a known schema.
    #[error("registry `{path}` is unreadable or corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },

    /// The registry was written by a newer porthold that forbids older writers.
    #[error(
        "registry `{path}` has schema version {found}; this porthold supports up to {supported}"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The schema version found.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },

    /// Nothing matched (no live instance, no reservation).
    #[error("{0}")]
    NotFound(String),

    /// A server launch failed.
    #[error("{message}")]
    Launch {
        /// What happened, with the child's status when known.
        message: String,
    },

    /// A server's start (or its end) failed in a way a caller can act on;
    /// the message carries the server's stderr tail.
    #[error(transparent)]
    Start(#[from] Box<crate::supervisor::LaunchError>),

    /// A reload was rolled back.
    #[error("rolled back: {reason}")]
    RolledBack {
        /// Why.
        reason: String,
    },

    /// An I/O error with context.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing (`creating data dir /x`).
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A discovery record (or its lock file) is not trustworthy: a symlink, not
    /// a regular file, owned by another user, unparsable, or of an unknown major schema.
    #[error("discovery record `{path}` rejected: {reason}")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },

    /// The registry is sound as far as anyone knows, but the file system
    /// refuses what porthold needs: it is read-only, full, or not accessible
    /// to this user. Nothing about the registry's content is wrong; the cause
    /// is named so that the fix is obvious and nobody discards a good file.
    #[error("registry `{path}` cannot be used: {problem} ({detail})")]
    RegistryUnavailable {
        /// The registry file.
        path: PathBuf,
        /// What the file system refused.
        problem: StorageProblem,
        /// The operating system's or SQLite's words for it.
        detail: String,
    },

    /// The file is a SQLite database of another program (its schema version
    /// is 0 and it holds tables porthold never creates). It is left untouched.
    #[error(
        "`{path}` is not a porthold registry: it is another SQLite database (tables: {tables})"
    )]
    ForeignDatabase {
        /// The file.
        path: PathBuf,
        /// The tables found, comma-separated.
        tables: String,
    },

    /// A write was refused by one of the registry's uniqueness rules
    /// (`UNIQUE(port)`, `UNIQUE(path, tag)`): the second line of defence
    /// caught a write that would have duplicated a port or key. Nothing was
    /// written; the registry is sound.
    #[error("registry `{path}` refused a write that would break a uniqueness rule: {detail}")]
    ConstraintViolated {
        /// The registry file.
        path: PathBuf,
        /// SQLite's message (which constraint).
        detail: String,
    },

    /// A key that an operation would create already exists (e.g. the target of `migrate`).
    #[error("`{path}`{} is already reserved (port {port})", tag_suffix(tag))]
    KeyExists {
        /// The existing key's path.
        path: PathBuf,
        /// The existing key's tag.
        tag: String,
        /// The port it holds.
        port: u16,
    },

    /// A state directory's handoff lock is held (by another generation, or by
    /// another open of it in this process).
    #[error("state directory `{dir}` is locked by another holder")]
    DataDirLocked {
        /// The state directory.
        dir: PathBuf,
    },

    /// A control or handoff frame could not be decoded, read or written; the
    /// session it belongs to is over.
    #[error(transparent)]
    Frame(#[from] crate::control::frame::FrameError),

    /// A handoff step failed (a protocol violation, a lost peer, a deadline).
    #[error(transparent)]
    Handoff(#[from] crate::handoff::HandoffError),

    /// A Unix socket path does not fit in `sun_path` (107 bytes and a NUL).
    #[error("socket path `{path}` is {len} bytes long; a Unix socket path may have at most {max}")]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The longest path that fits.
        max: usize,
    },

    /// A control-socket peer broke the protocol: a reply with another id or
    /// version, a message that is not a reply, or the server's own protocol error.
    #[error("control protocol error: {reason}")]
    ControlProtocol {
        /// What was wrong.
        reason: String,
    },
}

/// What the file system refused, for [`Error::RegistryUnavailable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageProblem {
    /// The file system is mounted read-only, or the directory or a file is
    /// immutable (`chattr +i`).
    ReadOnly,
    /// No space (or quota) left on the file system.
    DiskFull,
    /// This user may not read or write the registry or its directory.
    PermissionDenied,
    /// Another I/O failure of the operating system.
    Io,
}

impl fmt::Display for StorageProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageProblem::ReadOnly => "its file system or directory is read-only",
            StorageProblem::DiskFull => "no space is left on its file system",
            StorageProblem::PermissionDenied => "permission denied",
            StorageProblem::Io => "an I/O error occurred",
        })
    }
}

fn tag_suffix(tag: &str) -> String {
    if tag.is_empty() {
        String::new()
    } else {
        format!(" (tag {tag})")
    }
}

fn holder_suffix(pid: Option<u32>, instance_id: &Option<String>) -> String {
    match (pid, instance_id) {
        (Some(pid), Some(id)) => format!(" (pid {pid}, instance {id})"),
        (Some(pid), None) => format!(" (pid {pid})"),
        (None, Some(id)) => format!(" (instance {id})"),
        (None, None) => String::new(),
    }
}

fn keys_suffix(
    held_by: &Option<Box<crate::discovery::Key>>,
    wanted: &Option<Box<crate::discovery::Key>>,
) -> String {
    match (held_by, wanted) {
        (Some(held), Some(wanted)) if held != wanted => format!(
            " for key {held}; key {wanted} has the same instance name, so the two cannot run at once"
        ),
        (Some(held), _) => format!(" for key {held}"),
        _ => String::new(),
    }
}

fn skipped_suffix(skipped: u32) -> String {
    if skipped == 0 {
        String::new()
    } else {
        format!(" ({skipped} occupied ports skipped)")
    }
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } | Error::UnrelatedPath { .. } | Error::Io { .. } => {
                ErrorKind::Usage
            }
            Error::PortTaken { .. }
            | Error::KeyHoldsOtherPort { .. }
            | Error::StickyLabel { .. }
            | Error::NameTaken { .. }
            | Error::KeyExists { .. } => ErrorKind::Conflict,
            Error::PoolExhausted { .. } => ErrorKind::PoolExhausted,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Corrupt { .. } | Error::NewerSchema { .. } => ErrorKind::Corrupt,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Launch { .. } | Error::Start(_) => ErrorKind::Launch,
            Error::RolledBack { .. } => ErrorKind::RolledBack,
            Error::BadRecord { .. } => ErrorKind::Corrupt,
            Error::DataDirLocked { .. } => ErrorKind::Busy,
            Error::Frame(_) => ErrorKind::Corrupt,
            Error::Handoff(e) => e.kind(),
            Error::RegistryUnavailable { .. } | Error::ForeignDatabase { .. } => ErrorKind::Corrupt,
            Error::ConstraintViolated { .. } => ErrorKind::Conflict,
            Error::SocketPathTooLong { .. } => ErrorKind::Usage,
            Error::ControlProtocol { .. } => ErrorKind::Corrupt,
        }
    }

    /// A suggestion for the user, when there is one.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Invalid { hint, .. } => hint.clone(),
            Error::UnrelatedPath { .. } => {
                Some("give a path inside the working directory's tree, or confirm that one".into())
            }
            Error::PortTaken { holder: Holder::Excluded, .. } => {
                Some("pick another port, or remove the exclusion".into())
            }
            Error::PortTaken { .. } => {
                Some("pick a different port, or accept another one".into())
            }
            Error::KeyHoldsOtherPort { .. } => {
                Some("release the key first, or ask for the port it holds".into())
            }
            Error::StickyLabel { .. } => Some("labels are sticky: changing one must be forced".into()),
            Error::NameTaken { .. } => {
                Some("stop the running instance first, or choose another name".into())
            }
            Error::PoolExhausted { .. } => Some(
                "release unused reservations (`porthold list`, `porthold release`) or widen the pool (`[pool] range`, PORTHOLD_POOL)".into(),
            ),
            Error::Busy { .. } => Some("retry, or wait longer".into()),
            Error::Corrupt { path, .. }
                if path
                    .to_str()
                    .is_some_and(|p| p.ends_with("-wal") || p.ends_with("-shm")) =>
            {
                Some(format!(
                    "remove `{}` (porthold never follows a symlink there); the registry itself was not touched",
                    path.display()
                ))
            }
            Error::Corrupt { path, reason } if reason.starts_with("a symlink") => Some(format!(
                "replace the symlink `{}` with the file it points to (porthold never follows one there); nothing was touched",
                path.display()
            )),
            Error::Corrupt { path, .. } => Some(format!(
                "move `{}` aside (it is left untouched) and run `porthold init` to start an empty registry",
                path.display()
            )),
            Error::NewerSchema { .. } => {
                Some("upgrade porthold; an older binary never downgrades a registry".into())
            }
            Error::NotFound(_)
            | Error::Launch { .. }
            | Error::Start(_)
            | Error::RolledBack { .. } => None,
            Error::Io { .. } => None,
            Error::BadRecord { path, .. } => Some(format!(
                "porthold never follows symlinks or trusts another user's files in its runtime directory; \
                 inspect `{}` and remove it if no instance of yours owns it",
                path.display()
            )),
            Error::KeyExists { .. } => {
                Some("release that key first, or migrate to another path".into())
            }
            Error::DataDirLocked { .. } => Some(
                "another generation of this server still runs on that state directory; stop it first".into(),
            ),
            Error::Frame(_) | Error::Handoff(_) => None,
            Error::RegistryUnavailable { path, problem, .. } => {
                let dir = path.parent().unwrap_or(path).display();
                Some(match problem {
                    StorageProblem::ReadOnly => format!(
                        "the registry is intact; make `{dir}` writable again (remount its file system read-write, or `chattr -i` the directory and files) and retry"
                    ),
                    StorageProblem::DiskFull => format!(
                        "the registry is intact (the failed change was rolled back); free space on the file system holding `{dir}` and retry"
                    ),
                    StorageProblem::PermissionDenied => format!(
                        "the registry is intact; run porthold as the user who owns `{dir}`, or fix the ownership and permissions of the directory and its files"
                    ),
                    StorageProblem::Io => format!(
                        "check the disk holding `{dir}` (dmesg) and retry; keep the registry file, nothing says its content is damaged"
                    ),
                })
            }
            Error::ForeignDatabase { path, .. } => Some(format!(
                "porthold left `{}` untouched; point the data dir (PORTHOLD_DATA_DIR) at another directory, or move the file aside and run `porthold init`",
                path.display()
            )),
            Error::ConstraintViolated { .. } => Some(
                "another porthold changed the same key or port at the same moment; nothing was written, retry".into(),
            ),
            Error::SocketPathTooLong { .. } => {
                Some("use a shorter runtime directory or instance name".into())
            }
            Error::ControlProtocol { .. } => None,
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(message: impl Into<String>, hint: impl Into<Option<String>>) -> Self {
        Error::Invalid {
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library serves Rust callers too: its hints name no command-line
    /// flag (the CLI adds those, per command, where the command has them).
    #[test]
    fn library_hints_name_no_command_line_flag() {
        let p = || PathBuf::from("/srv/shop");
        let errors = vec![
            Error::UnrelatedPath {
                path: p(),
                cwd: p(),
            },
            Error::PortTaken {
                port: 10000,
                holder: Holder::Reservation {
                    path: p(),
                    tag: "web".into(),
                },
            },
            Error::PortTaken {
                port: 10000,
                holder: Holder::Excluded,
            },
            Error::KeyHoldsOtherPort {
                path: p(),
                tag: String::new(),
                held: 1,
                requested: 2,
            },
            Error::StickyLabel {
                field: "project",
                current: "a".into(),
                requested: "b".into(),
            },
            Error::NameTaken {
                name: "shop".into(),
                pid: Some(1),
                instance_id: None,
                held_by: None,
                wanted: None,
            },
            Error::PoolExhausted {
                pool: "10000-10001".into(),
                skipped_occupied: 0,
            },
            Error::Busy {
                what: "registry /x".into(),
                detail: "waited".into(),
            },
            Error::Corrupt {
                path: p(),
                reason: "bad header".into(),
            },
            Error::NewerSchema {
                path: p(),
                found: 9,
                supported: 1,
            },
            Error::RegistryUnavailable {
                path: p(),
                problem: StorageProblem::DiskFull,
                detail: "full".into(),
            },
            Error::ForeignDatabase {
                path: p(),
                tables: "t".into(),
            },
            Error::ConstraintViolated {
                path: p(),
                detail: "UNIQUE".into(),
            },
            Error::KeyExists {
                path: p(),
                tag: String::new(),
                port: 1,
            },
            Error::BadRecord {
                path: p(),
                reason: "symlink".into(),
            },
            Error::DataDirLocked { dir: p() },
        ];
        for error in errors {
            if let Some(hint) = error.hint() {
                let flag = hint
                    .split(|c: char| c.is_whitespace() || matches!(c, '(' | '`' | ','))
                    .find(|word| word.starts_with("--"));
                assert!(flag.is_none(), "{error:?} hints {flag:?}: {hint}");
            }
        }
    }
}
