//! The exclusive lock on a server's state directory.
//!
//! An `flock(LOCK_EX)` on `<dir>/porthold-handoff.lock`, a file that is never
//! unlinked (unlinking would let a second process lock a new inode while the
//! first still holds the old one) and never holds a pid: the kernel drops the
//! lock when the holder dies, so a lock is never stale. `flock` locks belong to
//! the open file description, so a second `acquire` fails in the same process
//! too.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A held data-directory lock; released on drop.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    dir: PathBuf,
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Unlock explicitly rather than rely on close: a child forked by any
        // thread of this process holds a copy of the file description until it
        // execs (O_CLOEXEC closes it only then), and closing our fd would leave
        // the lock held through that copy, so a successor's acquire right after
        // `SealComplete` could fail. LOCK_UN releases the description's lock
        // whoever else still refers to it.
        let _ = self.file.unlock();
    }
}

impl DataDirLock {
    /// The lock file's name inside the state directory.
    pub const FILE_NAME: &'static str = "porthold-handoff.lock";

    fn open(dir: &Path) -> Result<File> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating state directory `{}`", dir.display()), e))?;
        let path = dir.join(Self::FILE_NAME);
        // std opens with O_CLOEXEC, so a child spawned meanwhile never inherits the lock.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening lock file `{}`", path.display()), e))
    }

    /// Takes the lock without waiting.
    ///
    /// # Errors
    /// [`Error::DataDirLocked`] while anyone (this process included) holds it;
    /// [`Error::Io`] when the directory or file cannot be created or opened.
    pub fn acquire(dir: &Path) -> Result<DataDirLock> {
        let file = Self::open(dir)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock {
                file,
                dir: dir.to_path_buf(),
            }),
            Err(TryLockError::WouldBlock) => Err(Error::DataDirLocked {
                dir: dir.to_path_buf(),
            }),
            Err(TryLockError::Error(e)) => Err(Error::io(
                format!("locking `{}`", dir.join(Self::FILE_NAME).display()),
                e,
            )),
        }
    }

    /// Takes the lock, waiting (in the kernel, no polling) while someone holds it.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or locked.
    pub fn acquire_blocking(dir: &Path) -> Result<DataDirLock> {
        let file = Self::open(dir)?;
        file.lock().map_err(|e| {
            Error::io(
                format!("locking `{}`", dir.join(Self::FILE_NAME).display()),
                e,
            )
        })?;
        Ok(DataDirLock {
            file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_acquire_in_the_same_process_fails_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let second = DataDirLock::acquire(dir.path());
        assert!(matches!(second, Err(Error::DataDirLocked { ref dir }) if dir == first.dir()));
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn dropping_releases_the_lock_even_while_a_copy_of_the_file_description_lives() {
        // What a child forked at the wrong moment holds until it execs.
        let dir = tempfile::tempdir().unwrap();
        let lock = DataDirLock::acquire(dir.path()).unwrap();
        let copy = lock.file.try_clone().unwrap();
        drop(lock);
        DataDirLock::acquire(dir.path()).expect("released despite the live copy");
        drop(copy);
    }
}
