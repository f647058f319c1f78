//! The writer side: own a name for a lifetime and publish records atomically.
//!
//! Ownership is an exclusive `flock` on `<name>.lock`, taken before anything is
//! written and held until the publisher is finished or its process dies (the
//! kernel drops a flock when the last fd of its open file description closes,
//! so a SIGKILL frees the name at once). The lock file is never unlinked: a
//! lock on an unlinked inode would let a second owner lock a fresh file of the
//! same name. The fd is `O_CLOEXEC`, so a server spawned with exec never
//! inherits the lock and cannot keep a dead launcher's name taken.
//!
//! A record is replaced by rename, never rewritten in place: readers see the
//! old file or the new one, never a prefix. Nothing is fsynced: the runtime
//! directory is volatile by definition (it does not outlive the boot), so a
//! record only has to be atomic for concurrent readers, which the rename
//! gives, not durable across a power loss.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::names::{ensure_runtime_dir, euid, validate_instance_id, validate_name};
use super::reader::read_record;
use super::record::{Key, Record, SCHEMA_MAJOR, State, schema_major};
use crate::error::{Error, Result};
use crate::identity::{self, ProcessIdentity};

/// How long a new owner waits for a dead instance's leftover processes to die after SIGKILL.
const LEFTOVER_KILL_WAIT: Duration = Duration::from_secs(5);

/// How long [`Publisher::acquire`] retries a busy lock (readers hold a shared lock only for an instant).
pub const DEFAULT_LOCK_RETRY: Duration = Duration::from_millis(200);

/// After losing, how long to wait for the winner to write its name into the lock file.
const OWNER_WAIT: Duration = Duration::from_millis(500);

/// The lock file's content: who holds the name (one JSON line, newline-terminated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// Pid of the process that took the lock.
    pub pid: u32,
    /// Its start time in clock ticks since boot.
    pub starttime: u64,
    /// The boot id when it took the lock.
    pub boot_id: String,
    /// The instance id it is publishing.
    pub instance_id: String,
    /// The key it runs for, when it said (so a loser can name both keys before
    /// any record exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Key>,
}

impl LockOwner {
    /// The identity of the process that took the lock.
    pub fn identity(&self) -> ProcessIdentity {
        ProcessIdentity {
            pid: self.pid,
            starttime: self.starttime,
            boot_id: self.boot_id.clone(),
        }
    }

    /// Parses lock file content; `None` unless it is one complete JSON line
    /// (a reader racing the owner's truncate + write sees an empty or partial
    /// file, which never ends in a newline).
    pub fn parse(content: &[u8]) -> Option<LockOwner> {
        let line = content.strip_suffix(b"\n")?;
        if line.contains(&b'\n') {
            return None;
        }
        serde_json::from_slice(line).ok()
    }
}

pub(crate) fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.lock"))
}

pub(crate) fn record_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Reads the lock file's owner line through an open fd (bounded).
pub(crate) fn read_owner(file: &File) -> Option<LockOwner> {
    let mut buf = Vec::new();
    file.read_at_all(&mut buf).ok()?;
    LockOwner::parse(&buf)
}

/// Whether `name` is one of our temp files for `stem` (`<stem>.json.<16 hex>.tmp`).
fn is_temp_of(file_name: &str, stem: &str) -> bool {
    file_name
        .strip_prefix(stem)
        .and_then(|r| r.strip_prefix(".json."))
        .and_then(|r| r.strip_suffix(".tmp"))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The owner of an instance name: holds `<name>.lock` and writes `<name>.json`.
///
/// Dropping it (or [`finish`](Publisher::finish)) deletes the record and then
/// releases the lock.
#[derive(Debug)]
pub struct Publisher {
    dir: PathBuf,
    name: String,
    instance_id: String,
    /// The key this name is owned for, when the caller said.
    key: Option<Key>,
    /// The locked lock file; `None` once released.
    lock: Option<File>,
    last: Option<Record>,
    temp_counter: u32,
    /// How many processes a dead previous owner had left that we killed.
    leftovers_ended: usize,
}

impl Publisher {
    /// Takes ownership of `name` in `runtime_dir` for `instance_id`, retrying a
    /// busy lock for [`DEFAULT_LOCK_RETRY`].
    ///
    /// See [`acquire_with_retry`](Publisher::acquire_with_retry).
    ///
    /// # Errors
    /// As [`acquire_with_retry`](Publisher::acquire_with_retry).
    pub fn acquire(runtime_dir: &Path, name: &str, instance_id: &str) -> Result<Publisher> {
        Publisher::acquire_with_retry(runtime_dir, name, instance_id, DEFAULT_LOCK_RETRY)
    }

    /// Takes ownership of `name`: ensures the runtime directory, opens or
    /// creates `<name>.lock` (0600, `O_NOFOLLOW`, `O_CLOEXEC`), takes
    /// `flock(LOCK_EX | LOCK_NB)` retrying for up to `retry`, checks that the
    /// locked inode is still the one at the path, writes our pid and instance
    /// id into the lock file, and removes a stale `<name>.json` (and temp
    /// files) left by a previous owner that died. Before that, when the stale
    /// record names its server's process group (`pgid`), every process left in
    /// that group that started after the dead instance did is SIGKILLed
    /// (identity-checked, same boot, our uid), so its ports are free again.
    ///
    /// # Errors
    /// - [`Error::NameTaken`] when another process holds the name, with its pid and
    ///   instance id when the lock file names a live process.
    /// - [`Error::Busy`] when only shared (reader) locks held it for the whole retry.
    /// - [`Error::Invalid`] for a bad name, id or runtime directory;
    ///   [`Error::BadRecord`] when the lock file is a symlink or not ours.
    /// - [`Error::Io`] for other failures.
    pub fn acquire_with_retry(
        runtime_dir: &Path,
        name: &str,
        instance_id: &str,
        retry: Duration,
    ) -> Result<Publisher> {
        Publisher::acquire_inner(runtime_dir, name, instance_id, None, retry)
    }

    /// As [`acquire_with_retry`](Publisher::acquire_with_retry), for an
    /// instance of `key`: the key goes into the lock file's owner line, and
    /// when another process holds the name, [`Error::NameTaken`] names the
    /// holder's key (from its owner line or record) next to `key`, so two keys
    /// that meet one name are reported as such.
    ///
    /// # Errors
    /// As [`acquire_with_retry`](Publisher::acquire_with_retry).
    pub fn acquire_for_key(
        runtime_dir: &Path,
        name: &str,
        instance_id: &str,
        key: &Key,
        retry: Duration,
    ) -> Result<Publisher> {
        Publisher::acquire_inner(runtime_dir, name, instance_id, Some(key), retry)
    }

    fn acquire_inner(
        runtime_dir: &Path,
        name: &str,
        instance_id: &str,
        key: Option<&Key>,
        retry: Duration,
    ) -> Result<Publisher> {
        validate_name(name)?;
        validate_instance_id(instance_id)?;
        ensure_runtime_dir(runtime_dir)?;
        let path = lock_path(runtime_dir, name);
        let deadline = Instant::now() + retry;
        // Replacing the lock file under us can only be tampering, but we still
        // re-open and re-lock a few times rather than own an orphaned inode.
        for _ in 0..8 {
            let (lock, held) = open_lock_for_writing(&path)?;
            if !lock_exclusive_until(&lock, deadline, &path)? {
                return Err(name_taken_or_busy(
                    &lock,
                    name,
                    &path,
                    &record_path(runtime_dir, name),
                    key,
                ));
            }
            // The inode we locked is still the one at the path (dev and ino of
            // an open file never change, so the open's fstat still answers).
            // Its length now, under the lock, is the last owner's line.
            let previous_len = match fs::symlink_metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => now.len(),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("inspecting `{}`", path.display()), e)),
            };
            let mut publisher = Publisher {
                dir: runtime_dir.to_path_buf(),
                name: name.to_string(),
                instance_id: instance_id.to_string(),
                key: key.cloned(),
                lock: Some(lock),
                last: None,
                temp_counter: 0,
                leftovers_ended: 0,
            };
            publisher.write_owner(previous_len)?;
            let record_seen = publisher.end_leftover_processes();
            publisher.remove_leftovers(record_seen)?;
            return Ok(publisher);
        }
        Err(Error::Busy {
            what: format!("instance `{name}`"),
            detail: format!("the lock file `{}` keeps being replaced", path.display()),
        })
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instance id this publisher owns the name for.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Path of the record file (`<runtime-dir>/<name>.json`).
    pub fn record_path(&self) -> PathBuf {
        record_path(&self.dir, &self.name)
    }

    /// Path of the lock file (`<runtime-dir>/<name>.lock`).
    pub fn lock_path(&self) -> PathBuf {
        lock_path(&self.dir, &self.name)
    }

    /// The last record published, if any.
    pub fn record(&self) -> Option<&Record> {
        self.last.as_ref()
    }

    /// Publishes `record` atomically: a temp file in the same directory
    /// (0600, `O_EXCL`, `O_NOFOLLOW`, `O_CLOEXEC`) is written and swapped with
    /// the previous `<name>.json` (`RENAME_EXCHANGE`; the previous record is
    /// then unlinked), or renamed to it when there is none. Readers see the
    /// old record or the new one, never a prefix. Nothing is fsynced (see the
    /// module docs).
    ///
    /// # Errors
    /// [`Error::Invalid`] when the record's name or instance id is not this
    /// publisher's, or its schema major is not [`SCHEMA_MAJOR`];
    /// [`Error::Io`] on write failures (the previous record, if any, stays intact).
    pub fn publish(&mut self, record: &Record) -> Result<()> {
        if record.name != self.name || record.instance_id != self.instance_id {
            return Err(Error::invalid(
                format!(
                    "record for `{}` (instance {}) given to the publisher of `{}` (instance {})",
                    record.name, record.instance_id, self.name, self.instance_id
                ),
                None,
            ));
        }
        if schema_major(&record.schema) != Some(SCHEMA_MAJOR) {
            return Err(Error::invalid(
                format!("cannot publish schema `{}`", record.schema),
                None,
            ));
        }
        if self.lock.is_none() {
            return Err(Error::invalid(
                format!("publisher of `{}` is already finished", self.name),
                None,
            ));
        }
        let bytes = record.to_json()?;
        self.write_atomically(&bytes)?;
        self.last = Some(record.clone());
        Ok(())
    }

    /// Re-publishes the last record with a new state.
    ///
    /// # Errors
    /// [`Error::Invalid`] when nothing was published yet; otherwise as [`publish`](Publisher::publish).
    pub fn set_state(&mut self, state: State) -> Result<()> {
        let mut record = self.last.clone().ok_or_else(|| {
            Error::invalid(format!("no record of `{}` published yet", self.name), None)
        })?;
        record.state = state;
        self.publish(&record)
    }

    /// Ends ownership cleanly: deletes the record, then releases the lock.
    /// The lock file stays, with the owner line of this process (which
    /// readers ignore once it has exited).
    ///
    /// Callers that want readers to see `stopping` first call
    /// [`set_state`](Publisher::set_state) before this.
    ///
    /// # Errors
    /// [`Error::Io`] when the record cannot be deleted; the lock is released anyway.
    pub fn finish(mut self) -> Result<()> {
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        let Some(lock) = self.lock.take() else {
            return Ok(());
        };
        let path = self.record_path();
        let removed = match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing `{}`", path.display()), e)),
        };
        // Our owner line stays: once we have exited it names a process that is
        // not alive, which every reader checks (`name_taken_or_busy` waits for
        // the live holder's line), and the next owner writes over it.
        // Unlock explicitly: a fork of ours that kept this open file description
        // must not keep the name taken after we finished.
        let _ = lock.unlock();
        drop(lock);
        removed
    }

    /// Writes our owner line over the last one (`previous_len` bytes long).
    fn write_owner(&mut self, previous_len: u64) -> Result<()> {
        let me = ProcessIdentity::current()?;
        let owner = LockOwner {
            pid: me.pid,
            starttime: me.starttime,
            boot_id: me.boot_id,
            instance_id: self.instance_id.clone(),
            key: self.key.clone(),
        };
        let mut line = serde_json::to_vec(&owner)
            .map_err(|e| Error::invalid(format!("cannot serialize lock owner: {e}"), None))?;
        line.push(b'\n');
        let path = self.lock_path();
        let lock = self
            .lock
            .as_ref()
            .ok_or_else(|| Error::invalid("publisher already finished", None))?;
        // Written over the previous owner's line (which names an ended
        // process: readers ignore it), then cut to length if that one was
        // longer: on ext4 a truncate before the write would free the block
        // and the write allocate it again, on every start.
        let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
        lock.write_all_at(&line, 0)
            .and_then(|()| {
                if previous_len > len {
                    lock.set_len(len)
                } else {
                    Ok(())
                }
            })
            .map_err(|e| Error::io(format!("writing owner into `{}`", path.display()), e))
    }

    /// Under the lock, a previous owner's record names what may be left of its
    /// server: a launcher killed by SIGKILL never ended its tree, and the
    /// parent-death signal reaches only the direct child. SIGKILL every member
    /// of the recorded process group that started after that instance did
    /// (same boot, our uid), and wait for them to go, so the port is free
    /// before the new owner binds.
    ///
    /// Best effort: a leftover that cannot be killed still holds its port, and
    /// the new owner's bind then reports that conflict.
    ///
    /// Returns false only when there is no record at all (nothing to remove).
    fn end_leftover_processes(&mut self) -> bool {
        let stale = match read_record(&self.record_path()) {
            Ok(Some(stale)) => stale,
            Ok(None) => return false,
            Err(_) => return true,
        };
        self.end_processes_of(&stale);
        true
    }

    fn end_processes_of(&mut self, stale: &Record) {
        let groups = stale.process_groups();
        let Ok(boot) = identity::boot_id() else {
            return;
        };
        if groups.is_empty() {
            return;
        }
        if stale.boot_id != boot || stale.uid != euid() {
            return;
        }
        // Another pid namespace's group ids mean nothing here.
        if stale
            .pidns
            .zip(identity::current_pid_namespace())
            .is_some_and(|(theirs, ours)| theirs != ours)
        {
            return;
        }
        // Never our own group (a record naming it can only be forged or confused).
        let own_group = rustix::process::getpgrp().as_raw_nonzero().get() as u32;
        let me = std::process::id();
        let leftovers: Vec<_> = groups
            .into_iter()
            .filter(|&pgid| pgid != own_group)
            .flat_map(|pgid| identity::group_members_since(pgid, stale.starttime, euid()))
            .filter(|p| p.pid != me)
            .collect();
        self.leftovers_ended = identity::kill_all(&leftovers, LEFTOVER_KILL_WAIT).unwrap_or(0);
    }

    /// How many leftover processes of a previous owner (killed by SIGKILL
    /// before it could end its server's tree) were ended when the name was
    /// taken. See [`acquire_with_retry`](Publisher::acquire_with_retry).
    pub fn leftovers_ended(&self) -> usize {
        self.leftovers_ended
    }

    /// Under the lock, anything named after us is a previous owner's leftover
    /// (`record_seen`: the record, unless reading it just found none; only
    /// the lock holder creates one).
    fn remove_leftovers(&mut self, record_seen: bool) -> Result<()> {
        let record = self.record_path();
        match if record_seen {
            fs::remove_file(&record)
        } else {
            Ok(())
        } {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    format!("removing stale record `{}`", record.display()),
                    e,
                ));
            }
        }
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("listing `{}`", self.dir.display()), e))?;
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            if let Some(n) = file_name.to_str()
                && is_temp_of(n, &self.name)
            {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(format!("removing stale temp file `{n}`"), e)),
                }
            }
        }
        Ok(())
    }

    fn write_atomically(&mut self, bytes: &[u8]) -> Result<()> {
        let target = self.record_path();
        let (temp_path, mut temp) = loop {
            self.temp_counter = self.temp_counter.wrapping_add(1);
            let temp_name = format!(
                "{}.json.{:08x}{:08x}.tmp",
                self.name,
                std::process::id(),
                self.temp_counter
            );
            let temp_path = self.dir.join(temp_name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&temp_path)
            {
                Ok(f) => break (temp_path, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("creating `{}`", temp_path.display()), e)),
            }
        };
        let written = temp
            .write_all(bytes)
            .and_then(|()| replace_or_rename(&temp_path, &target));
        match written {
            Ok(Replaced::Exchanged) => {
                // The temp name now holds the previous record; a failure here
                // leaves a temp file, which the next owner removes.
                let _ = fs::remove_file(&temp_path);
                Ok(())
            }
            Ok(Replaced::Renamed) => Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&temp_path);
                Err(Error::io(format!("publishing `{}`", target.display()), e))
            }
        }
    }
}

/// How [`replace_or_rename`] put the new record in place.
enum Replaced {
    /// Swapped with the previous record, which is now at the temp path.
    Exchanged,
    /// Renamed over the target (there was none, or swapping is unsupported).
    Renamed,
}

/// Puts `temp` at `target` atomically: readers of `target` see the old file
/// or the new one, never neither and never a prefix.
///
/// A record that exists is swapped with the new one (`renameat2`
/// `RENAME_EXCHANGE`) rather than renamed over: ext4 (with its default
/// `auto_da_alloc`) treats a rename over an existing file as a replace and
/// starts writeback of the new file at once, which costs a fraction of a
/// millisecond to milliseconds per publish. Swapped files stay in the page
/// cache and are unlinked before they ever reach the disk. Without a record
/// to swap with, or on a file system that cannot swap, it is a plain rename.
fn replace_or_rename(temp: &Path, target: &Path) -> io::Result<Replaced> {
    match rustix::fs::renameat_with(
        rustix::fs::CWD,
        temp,
        rustix::fs::CWD,
        target,
        rustix::fs::RenameFlags::EXCHANGE,
    ) {
        Ok(()) => return Ok(Replaced::Exchanged),
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
        Err(e) => return Err(e.into()),
    }
    fs::rename(temp, target).map(|()| Replaced::Renamed)
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

fn open_lock_for_writing(path: &Path) -> Result<(File, fs::Metadata)> {
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Error::BadRecord {
                    path: path.to_path_buf(),
                    reason: "the lock file is a symbolic link".into(),
                }
            } else {
                Error::io(format!("opening lock file `{}`", path.display()), e)
            }
        })?;
    let meta = lock
        .metadata()
        .map_err(|e| Error::io(format!("inspecting `{}`", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::BadRecord {
            path: path.to_path_buf(),
            reason: "the lock file is not a regular file".into(),
        });
    }
    if meta.uid() != euid() {
        return Err(Error::BadRecord {
            path: path.to_path_buf(),
            reason: format!(
                "the lock file is owned by uid {}, not {}",
                meta.uid(),
                euid()
            ),
        });
    }
    Ok((lock, meta))
}

/// Tries `LOCK_EX | LOCK_NB` until it succeeds (true) or `deadline` passes (false).
fn lock_exclusive_until(lock: &File, deadline: Instant, path: &Path) -> Result<bool> {
    let mut pause = Duration::from_millis(1);
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(true),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking `{}`", path.display()), e));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// We did not get the lock: name the holder if the lock file names a live process.
fn name_taken_or_busy(
    lock: &File,
    name: &str,
    path: &Path,
    record: &Path,
    wanted: Option<&Key>,
) -> Error {
    // If a shared lock is possible, nobody holds LOCK_EX: only readers were in the way.
    if lock.try_lock_shared().is_ok() {
        let _ = lock.unlock();
        return Error::Busy {
            what: format!("instance `{name}`"),
            detail: format!(
                "readers kept `{}` locked for the whole retry period",
                path.display()
            ),
        };
    }
    // The winner writes its owner line right after locking; give it a moment.
    let deadline = Instant::now() + OWNER_WAIT;
    loop {
        let owner = read_owner(lock).filter(|o| o.identity().is_alive());
        if let Some(owner) = owner {
            // An owner line without a key (a library publisher that did not
            // say): the holder's record, if it is the holder's, names it.
            let held_by = owner.key.clone().or_else(|| {
                read_record(record)
                    .ok()
                    .flatten()
                    .filter(|r| r.instance_id == owner.instance_id)
                    .map(|r| r.key)
            });
            return Error::NameTaken {
                name: name.to_string(),
                pid: Some(owner.pid),
                instance_id: Some(owner.instance_id),
                held_by: held_by.map(Box::new),
                wanted: wanted.cloned().map(Box::new),
            };
        }
        if Instant::now() >= deadline {
            return Error::NameTaken {
                name: name.to_string(),
                pid: None,
                instance_id: None,
                held_by: None,
                wanted: wanted.cloned().map(Box::new),
            };
        }
        thread::sleep(Duration::from_millis(5));
    }
}

trait ReadAtAll {
    fn read_at_all(&self, buf: &mut Vec<u8>) -> io::Result<()>;
}

impl ReadAtAll for File {
    /// Reads up to 4 KiB from offset 0 without moving the file position.
    fn read_at_all(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.read_at(&mut chunk, 0)?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn owner_lines_must_be_complete() {
        let owner = LockOwner {
            pid: 7,
            starttime: 9,
            boot_id: "b".into(),
            instance_id: "i".into(),
            key: None,
        };
        let mut line = serde_json::to_vec(&owner).unwrap();
        assert_eq!(LockOwner::parse(&line), None, "no newline yet");
        line.push(b'\n');
        assert_eq!(LockOwner::parse(&line), Some(owner));
        assert_eq!(LockOwner::parse(b""), None);
        assert_eq!(LockOwner::parse(b"{\"pid\":7\n"), None);
    }

    /// Reading the leftover record finds none, or one that cannot be read:
    /// only the first skips the unlink, so a garbled record never outlives a
    /// new owner (and its owner line stays whole when it was longer).
    #[test]
    fn taking_a_name_removes_a_leftover_record_even_an_unreadable_one() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("run");
        let record = record_path(&runtime, "svc");
        let lock = lock_path(&runtime, "svc");
        let first = Publisher::acquire_with_retry(&runtime, "svc", "aaaa", Duration::ZERO).unwrap();
        drop(first);
        for leftover in [&b"{ not json"[..], b"", &[0xff; 64][..]] {
            fs::write(&record, leftover).unwrap();
            fs::set_permissions(&record, fs::Permissions::from_mode(0o600)).unwrap();
            fs::write(&lock, [b'x'; 400]).unwrap();
            let publisher =
                Publisher::acquire_with_retry(&runtime, "svc", "bbbb", Duration::ZERO).unwrap();
            assert!(!record.exists(), "leftover {leftover:?} was not removed");
            let line = fs::read(&lock).unwrap();
            assert!(
                LockOwner::parse(&line).is_some_and(|o| o.instance_id == "bbbb"),
                "owner line {:?}",
                String::from_utf8_lossy(&line)
            );
            drop(publisher);
        }
        // No record at all: taking the name still works and leaves none.
        let publisher =
            Publisher::acquire_with_retry(&runtime, "svc", "cccc", Duration::ZERO).unwrap();
        assert!(!record.exists());
        drop(publisher);
    }

    #[test]
    fn temp_names_are_matched_exactly() {
        assert!(is_temp_of("a.json.0123456789abcdef.tmp", "a"));
        assert!(!is_temp_of("a.json.json.0123456789abcdef.tmp", "a"));
        assert!(is_temp_of("a.json.json.0123456789abcdef.tmp", "a.json"));
        assert!(!is_temp_of("a.json.0123.tmp", "a"));
        assert!(!is_temp_of("a.json", "a"));
        assert!(!is_temp_of("ab.json.0123456789abcdef.tmp", "a"));
    }
}
