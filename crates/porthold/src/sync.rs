//! Locking that survives a panicking thread.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking it even if a thread panicked while holding it. Every
/// mutex of this crate guards data written whole (a value swapped in, bytes
/// appended and trimmed), so a poisoned one still holds a consistent value,
/// and a supervisor must keep supervising after one of its threads failed.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
