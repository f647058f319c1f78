//! The reader side: decide whether a name has a live instance, without ever
//! changing anything.
//!
//! The order of checks matters:
//! 1. The lock probe. A reader opens `<name>.lock` read-only (never creating
//!    it) and tries `flock(LOCK_SH | LOCK_NB)`. If that succeeds, nobody holds
//!    `LOCK_EX`, so no owner is alive; the shared lock is dropped at once. This
//!    is correct across pid namespaces and immune to pid reuse, because it asks
//!    the kernel about the open file, not about a number.
//! 2. The record is opened with `O_NOFOLLOW` and must be a regular file owned
//!    by our effective uid; it is then parsed (unknown major schema rejected).
//! 3. If the lock file names another instance than the record, the record is a
//!    previous owner's leftover that the new owner has not replaced yet.
//! 4. The record's (pid, start time, boot id) must be a live process. A held
//!    lock with a dead or recycled pid means the lock leaked into another
//!    process (e.g. a fork that kept the fd), and the instance is not alive.
//!    When the record was written in another pid namespace, its pid means
//!    nothing here and the lock alone decides.
//!
//! Readers never delete, create or modify files: only whoever takes the lock
//! may remove a stale record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::names::{euid, validate_name};
use super::publisher::{LockOwner, lock_path, read_owner, record_path};
use super::record::{Key, MAX_RECORD_BYTES, Record, State};
use crate::error::{Error, Result};
use crate::identity::{self, ProcessIdentity};

/// Interval between polls in [`wait`].
const WAIT_POLL: Duration = Duration::from_millis(10);

/// What a reader concluded about a name, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Liveness {
    /// The lock is held and the record's process is alive.
    Alive,
    /// The lock is held and the record was written in another pid namespace,
    /// where its pid cannot be checked from here; alive by the lock alone.
    AliveInOtherPidNamespace,
    /// The lock is held but no record exists yet (the owner is starting, or finishing).
    Starting,
    /// Neither a held lock nor a record: nothing runs under this name.
    Absent,
    /// A record exists but nobody holds the lock: its owner died.
    StaleLockFree,
    /// The lock is held but the record's pid does not exist (or is a zombie, or from another boot).
    StaleProcessGone,
    /// The lock is held but the record's pid now belongs to another process.
    StalePidRecycled,
    /// The lock is held by a newer instance that has not replaced the old record yet.
    StaleOtherInstance,
}

impl Liveness {
    /// Whether this counts as a live instance.
    pub fn is_alive(self) -> bool {
        matches!(self, Liveness::Alive | Liveness::AliveInOtherPidNamespace)
    }

    /// A short human explanation.
    pub fn describe(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::AliveInOtherPidNamespace => {
                "alive (lock held; pid is in another pid namespace)"
            }
            Liveness::Starting => "starting: lock held, no record yet",
            Liveness::Absent => "absent: no lock holder, no record",
            Liveness::StaleLockFree => "stale: lock free",
            Liveness::StaleProcessGone => "stale: process gone",
            Liveness::StalePidRecycled => "stale: pid recycled",
            Liveness::StaleOtherInstance => "stale: lock held by another instance",
        }
    }
}

impl std::fmt::Display for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// The full result of probing a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The name probed.
    pub name: String,
    /// The verdict.
    pub liveness: Liveness,
    /// The record, when the lock was held and a record could be read.
    pub record: Option<Record>,
    /// The lock file's owner line, when the lock was held and the line was complete.
    pub owner: Option<LockOwner>,
}

/// A record of a live instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRecord {
    /// The record as read.
    pub record: Record,
    /// [`Liveness::Alive`] or [`Liveness::AliveInOtherPidNamespace`].
    pub liveness: Liveness,
    /// The record file.
    pub path: PathBuf,
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    // O_NONBLOCK: opening a planted FIFO must not hang the reader.
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
}

fn check_owned_regular(file: &File, path: &Path, what: &str) -> Result<fs::Metadata> {
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("inspecting `{}`", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::BadRecord {
            path: path.to_path_buf(),
            reason: format!("the {what} is not a regular file"),
        });
    }
    let me = euid();
    if meta.uid() != me {
        return Err(Error::BadRecord {
            path: path.to_path_buf(),
            reason: format!("the {what} is owned by uid {}, not by uid {me}", meta.uid()),
        });
    }
    Ok(meta)
}

fn symlink_error(path: &Path, what: &str) -> Error {
    Error::BadRecord {
        path: path.to_path_buf(),
        reason: format!("the {what} is a symbolic link"),
    }
}

/// Probes `name` in `runtime_dir` and explains the verdict. Changes nothing on disk.
///
/// # Errors
/// [`Error::Invalid`] for a bad name; [`Error::BadRecord`] when the lock is
/// held and the record (or the lock file) is a symlink, not a regular file,
/// owned by another uid, unparsable or of an unknown major schema;
/// [`Error::Io`] for other failures.
pub fn probe(runtime_dir: &Path, name: &str) -> Result<Probe> {
    validate_name(name)?;
    let lock_file = lock_path(runtime_dir, name);
    let record_file = record_path(runtime_dir, name);
    let verdict = |liveness, record, owner| Probe {
        name: name.to_string(),
        liveness,
        record,
        owner,
    };
    let record_exists = || fs::symlink_metadata(&record_file).is_ok();

    let lock = match open_nofollow(&lock_file) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let liveness = if record_exists() {
                Liveness::StaleLockFree
            } else {
                Liveness::Absent
            };
            return Ok(verdict(liveness, None, None));
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(symlink_error(&lock_file, "lock file"));
        }
        Err(e) => return Err(Error::io(format!("opening `{}`", lock_file.display()), e)),
    };
    check_owned_regular(&lock, &lock_file, "lock file")?;
    match lock.try_lock_shared() {
        Ok(()) => {
            // Nobody holds LOCK_EX. Release at once: a publisher may be retrying.
            let _ = lock.unlock();
            drop(lock);
            let liveness = if record_exists() {
                Liveness::StaleLockFree
            } else {
                Liveness::Absent
            };
            return Ok(verdict(liveness, None, None));
        }
        Err(fs::TryLockError::WouldBlock) => {}
        Err(fs::TryLockError::Error(e)) => {
            return Err(Error::io(
                format!("probing lock `{}`", lock_file.display()),
                e,
            ));
        }
    }
    let owner = read_owner(&lock);
    drop(lock);

    let record = match read_record(&record_file)? {
        Some(r) => r,
        None => return Ok(verdict(Liveness::Starting, None, owner)),
    };
    if record.name != name {
        return Err(Error::BadRecord {
            path: record_file,
            reason: format!("the record names instance `{}`", record.name),
        });
    }
    if let Some(o) = &owner
        && o.instance_id != record.instance_id
    {
        return Ok(verdict(Liveness::StaleOtherInstance, Some(record), owner));
    }
    let liveness = match (record.pidns, identity::current_pid_namespace()) {
        (Some(theirs), Some(ours)) if theirs != ours => Liveness::AliveInOtherPidNamespace,
        _ => identity_liveness(&record.identity())?,
    };
    Ok(verdict(liveness, Some(record), owner))
}

fn identity_liveness(recorded: &ProcessIdentity) -> Result<Liveness> {
    Ok(match ProcessIdentity::of(recorded.pid)? {
        None => Liveness::StaleProcessGone,
        Some(now) if now.same_as(recorded) => Liveness::Alive,
        Some(now) if now.boot_id != recorded.boot_id => Liveness::StaleProcessGone,
        Some(_) => Liveness::StalePidRecycled,
    })
}

/// Reads and parses a record file; `Ok(None)` when it does not exist.
pub(super) fn read_record(path: &Path) -> Result<Option<Record>> {
    let file = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(symlink_error(path, "record"));
        }
        Err(e) => return Err(Error::io(format!("opening `{}`", path.display()), e)),
    };
    let meta = check_owned_regular(&file, path, "record")?;
    if meta.len() > MAX_RECORD_BYTES {
        return Err(Error::BadRecord {
            path: path.to_path_buf(),
            reason: format!(
                "the record is {} bytes, more than the {MAX_RECORD_BYTES} allowed",
                meta.len()
            ),
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_RECORD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("reading `{}`", path.display()), e))?;
    Record::from_json(&bytes, path).map(Some)
}

/// The live instance named `name`, or `None` when there is none (absent,
/// starting without a record yet, or stale). Changes nothing on disk.
///
/// # Errors
/// As [`probe`].
pub fn lookup(runtime_dir: &Path, name: &str) -> Result<Option<LiveRecord>> {
    let p = probe(runtime_dir, name)?;
    Ok(match p.record {
        Some(record) if p.liveness.is_alive() => Some(LiveRecord {
            record,
            liveness: p.liveness,
            path: record_path(runtime_dir, name),
        }),
        _ => None,
    })
}

/// All live instances in `runtime_dir`, sorted by name (for `ps`).
///
/// Files that are not `<valid name>.json` are ignored, and so are records
/// [`lookup`] rejects as untrustworthy ([`Error::BadRecord`]): one planted file
/// must not hide every other instance. A missing directory is an empty list.
///
/// # Errors
/// [`Error::Io`] when the directory cannot be listed or a lookup fails for
/// another reason than a bad record.
pub fn list(runtime_dir: &Path) -> Result<Vec<LiveRecord>> {
    list_with_rejections(runtime_dir).map(|listing| listing.live)
}

/// What [`list_with_rejections`] found.
#[derive(Debug)]
pub struct Listing {
    /// The live instances, sorted by name.
    pub live: Vec<LiveRecord>,
    /// The records that were refused as untrustworthy, each with why
    /// ([`Error::BadRecord`]), for a warning.
    pub rejected: Vec<Error>,
}

/// As [`list`], but also returns the records it refused and why.
///
/// # Errors
/// As [`list`].
pub fn list_with_rejections(runtime_dir: &Path) -> Result<Listing> {
    let entries = match fs::read_dir(runtime_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Listing {
                live: Vec::new(),
                rejected: Vec::new(),
            });
        }
        Err(e) => return Err(Error::io(format!("listing `{}`", runtime_dir.display()), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::io(format!("listing `{}`", runtime_dir.display()), e))?;
        if let Some(stem) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
            && validate_name(stem).is_ok()
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    let mut live = Vec::new();
    let mut rejected = Vec::new();
    for name in names {
        match lookup(runtime_dir, &name) {
            Ok(Some(r)) => live.push(r),
            Ok(None) => {}
            Err(e @ Error::BadRecord { .. }) => rejected.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(Listing { live, rejected })
}

/// Polls (every 10 ms) until `name` has a live record — with `instance_id`
/// when given, and in state `ready` when `want_ready` — and returns it.
///
/// A leftover record of another instance id never satisfies a wait for a
/// specific id.
///
/// # Errors
/// [`Error::NotFound`] on timeout; [`Error::BadRecord`], [`Error::Invalid`] or
/// [`Error::Io`] as [`probe`] (returned at once: they do not fix themselves).
pub fn wait(
    runtime_dir: &Path,
    name: &str,
    instance_id: Option<&str>,
    want_ready: bool,
    timeout: Duration,
) -> Result<LiveRecord> {
    wait_for_key(runtime_dir, name, None, instance_id, want_ready, timeout)
}

/// As [`wait`], and when `key` is given, only a record published for that
/// key (path and tag, see [`Record::is_for`]) satisfies the wait: another
/// key's instance under the same name is waited past, never returned.
///
/// # Errors
/// As [`wait`].
pub fn wait_for_key(
    runtime_dir: &Path,
    name: &str,
    key: Option<&Key>,
    instance_id: Option<&str>,
    want_ready: bool,
    timeout: Duration,
) -> Result<LiveRecord> {
    let deadline = Instant::now() + timeout;
    loop {
        let p = probe(runtime_dir, name)?;
        let last = p.liveness;
        if let Some(record) = p.record
            && p.liveness.is_alive()
            && instance_id.is_none_or(|id| record.instance_id == id)
            && key.is_none_or(|k| record.is_for(k))
            && (!want_ready || matches!(record.state, State::Ready | State::Reloading))
        {
            return Ok(LiveRecord {
                record,
                liveness: p.liveness,
                path: record_path(runtime_dir, name),
            });
        }
        let now = Instant::now();
        if now >= deadline {
            let which = instance_id
                .map(|id| format!(" (instance {id})"))
                .unwrap_or_default();
            let what = if want_ready { "ready" } else { "live" };
            let for_key = key.map(|k| format!(" for key {k}")).unwrap_or_default();
            return Err(Error::NotFound(format!(
                "no {what} instance `{name}`{which}{for_key} within {}; last seen: {last}",
                crate::duration::format(timeout)
            )));
        }
        thread::sleep(WAIT_POLL.min(deadline - now));
    }
}
