//! Cleanup: `prune` (reservations whose project directory is gone), `expire`
//! (reservations unused for a period) and `autoclean` (both), plus the
//! autoclean that `reserve` runs when the pool is exhausted.
//!
//! Leases are never touched here: a lease belongs to a live or dead process,
//! and its reclaim rule (owner provably dead or TTL expired, and nothing
//! listening) is the lease code's business, not a directory check.
//!
//! A path counts as gone only when `lstat` says it does not exist (`ENOENT`
//! or `ENOTDIR`). Any other failure (permission denied, an I/O error) keeps
//! the reservation: cleanup must never remove a reservation of a project that
//! may still be there.
//!
//! Removed ports go to the release history, so they are handed out again only
//! after every fresher port (the same rule as `release`).
//!
//! # Autoclean inside `reserve`
//!
//! [`Registry::reserve_with_autoclean`] runs the first attempt, the cleanup and
//! the retry inside **one** `BEGIN IMMEDIATE` transaction: the first attempt
//! runs under a savepoint that is rolled back when it reports an exhausted
//! pool, then the cleanup deletes rows, then the retry allocates. Nobody can
//! take the freed ports between cleanup and retry (we hold the write lock
//! throughout), and if the retry still fails, dropping the transaction rolls
//! the cleanup back too, so a failed reserve changes nothing. The cleanup's
//! `lstat` calls run under the write lock; they are local syscalls of the
//! same cost as an occupancy probe, which the allocation already makes there.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use serde::Serialize;

use super::{
    COLUMNS, Registry, Reservation, ReserveOutcome, ReserveRequest, TxError, alloc, db_error,
    path_text, reserve_in_tx,
};
use crate::error::{Error, Result};
use crate::net::OccupancyProbe;

/// How long a reservation may go unused before `autoclean` expires it, by default.
pub const DEFAULT_EXPIRE_AFTER: Duration = Duration::from_secs(30 * 24 * 3600);

/// Which reservations a cleanup removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CleanPolicy {
    /// Remove reservations whose path no longer exists (`prune`).
    pub missing_paths: bool,
    /// Remove reservations not used for this long (`expire --older-than`).
    pub older_than: Option<Duration>,
}

impl CleanPolicy {
    /// `prune`: paths that no longer exist.
    pub fn prune() -> Self {
        CleanPolicy {
            missing_paths: true,
            older_than: None,
        }
    }

    /// `expire --older-than AGE`.
    pub fn expire(age: Duration) -> Self {
        CleanPolicy {
            missing_paths: false,
            older_than: Some(age),
        }
    }

    /// `autoclean`: both.
    pub fn autoclean(age: Duration) -> Self {
        CleanPolicy {
            missing_paths: true,
            older_than: Some(age),
        }
    }
}

/// Why a reservation was (or would be) removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CleanReason {
    /// The project directory does not exist.
    PathMissing,
    /// Not used within the policy's age.
    Expired,
}

impl std::fmt::Display for CleanReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CleanReason::PathMissing => "path missing",
            CleanReason::Expired => "expired",
        })
    }
}

/// A reservation removed by a cleanup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// The row as it was.
    pub reservation: Reservation,
    /// Why it went.
    pub reason: CleanReason,
}

/// Whether `path` provably does not exist.
fn path_is_gone(path: &Path) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(_) => false,
        Err(e) => matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)),
    }
}

/// Finds (and unless `dry_run`, removes) what `policy` selects. Runs inside
/// the caller's write transaction.
pub(super) fn clean_in_tx(
    conn: &Connection,
    policy: &CleanPolicy,
    now_ms: i64,
    dry_run: bool,
) -> rusqlite::Result<Vec<Cleaned>> {
    let rows: Vec<Reservation> = {
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM reservations WHERE lease_pid IS NULL ORDER BY port"
        ))?;
        let rows = stmt.query_map([], Reservation::from_row)?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let cutoff = policy
        .older_than
        .map(|age| now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
    let mut cleaned = Vec::new();
    for row in rows {
        let reason = if policy.missing_paths && path_is_gone(&row.path) {
            Some(CleanReason::PathMissing)
        } else if cutoff.is_some_and(|cutoff| row.last_used_at_ms < cutoff) {
            Some(CleanReason::Expired)
        } else {
            None
        };
        if let Some(reason) = reason {
            cleaned.push(Cleaned {
                reservation: row,
                reason,
            });
        }
    }
    if !dry_run {
        for item in &cleaned {
            let r = &item.reservation;
            let path = r.path.to_str().unwrap_or_default();
            conn.execute(
                "DELETE FROM reservations WHERE path = ?1 AND tag = ?2",
                rusqlite::params![path, r.tag],
            )?;
            alloc::mark_released(conn, r.port, now_ms)?;
        }
    }
    Ok(cleaned)
}

impl Registry {
    /// Removes the reservations `policy` selects (none when `dry_run`, which
    /// only reports them); returns them.
    ///
    /// # Errors
    /// [`Error::Busy`], [`Error::Corrupt`].
    pub fn clean(&mut self, policy: &CleanPolicy, dry_run: bool) -> Result<Vec<Cleaned>> {
        let path = self.path.clone();
        // A dry run only reads: a read transaction takes no write lock, so it
        // answers even while another process holds one.
        let tx = if dry_run {
            self.begin_read()?
        } else {
            self.begin()?
        };
        let cleaned = clean_in_tx(&tx, policy, crate::time::now_ms(), dry_run)
            .map_err(|e| db_error(&path, e))?;
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(cleaned)
    }

    /// [`Registry::reserve`], but when the pool is exhausted, cleans with
    /// `policy` and retries, all in one transaction (see the module docs).
    /// Returns the outcome and what was cleaned (empty when no cleanup ran).
    ///
    /// # Errors
    /// As [`Registry::reserve`]; [`Error::PoolExhausted`] when the cleanup
    /// freed nothing usable (then nothing was removed either).
    pub fn reserve_with_autoclean(
        &mut self,
        request: &ReserveRequest,
        probe: Option<&dyn OccupancyProbe>,
        policy: &CleanPolicy,
    ) -> Result<(ReserveOutcome, Vec<Cleaned>)> {
        let db_path = self.path.clone();
        let key_path = path_text(&request.key.path)?;
        // A key that exists never exhausts the pool: the idempotent case needs
        // no autoclean, and no write.
        if let Some(outcome) = self.reserve_by_reading(request, &key_path, probe)? {
            return Ok((outcome, Vec::new()));
        }
        let tx = self.begin()?;
        let run = || -> std::result::Result<(ReserveOutcome, Vec<Cleaned>), TxError> {
            tx.execute_batch("SAVEPOINT first_attempt")?;
            match reserve_in_tx(&tx, request, &key_path, probe) {
                Ok(outcome) => {
                    tx.execute_batch("RELEASE first_attempt")?;
                    Ok((outcome, Vec::new()))
                }
                Err(TxError::Refused(exhausted @ Error::PoolExhausted { .. })) => {
                    tx.execute_batch("ROLLBACK TO first_attempt; RELEASE first_attempt")?;
                    let cleaned = clean_in_tx(&tx, policy, crate::time::now_ms(), false)?;
                    if cleaned.is_empty() {
                        return Err(TxError::Refused(exhausted));
                    }
                    let outcome = reserve_in_tx(&tx, request, &key_path, probe)?;
                    Ok((outcome, cleaned))
                }
                Err(other) => Err(other),
            }
        };
        let result = run().map_err(|e| e.into_error(&db_path))?;
        crate::test_hooks::pause("reserve.before-commit");
        tx.commit().map_err(|e| db_error(&db_path, e))?;
        Ok(result)
    }
}
