//! Leases: ports handed out by number (`porthold pick`) to a process, not a
//! project.
//!
//! A lease is a row of the `reservations` table, so `UNIQUE(port)` covers
//! leases and reservations together. Its key is synthetic and can never be a
//! project path (those are absolute, so they start with `/`):
//! path `lease:<boot id>:<pid>:<start time>` of the owner, tag the lease's
//! index among that owner's leases (`0`, `1`, ...). The owner's identity is
//! also stored in the `lease_pid`, `lease_starttime` and `lease_boot_id`
//! columns, and the TTL's end (Unix ms, or NULL for none) in
//! `lease_expires_at`; `created_at` is the handout time.
//!
//! # Reclaim
//!
//! A lease is removed (by someone other than `release --port`) only when all
//! of these hold, checked under the write lock of the `pick` that reclaims it:
//!
//! 1. at least the minimum hold has passed since handout (60 s by default), so
//!    a short-lived shell that ran `pick` for a test cannot make the lease
//!    reclaimable before the test's server has bound it;
//! 2. the owner is provably dead (another boot, no such pid, a zombie, or a
//!    pid whose start time differs from the recorded one: the pid was reused)
//!    **or** the TTL has passed; an owner that cannot be checked (an
//!    unreadable `/proc`) counts as alive, and a stopped (SIGSTOP) owner is
//!    alive;
//! 3. nothing listens on the port: the occupancy probe (a trial bind as a
//!    server binds) says it is free.
//!
//! Reclaimed ports go to the release history like released ones, so they are
//! handed out again only after every fresher port.
//!
//! Every `pick` is one `BEGIN IMMEDIATE` transaction holding reclaim,
//! allocation and the inserts, like `reserve`.

use std::time::Duration;

use rusqlite::{Connection, Row, params};
use serde::Serialize;

use super::{Registry, TxError, alloc, db_error};
use crate::error::{Error, Result};
use crate::identity::{self, ProcessIdentity};
use crate::net::{KernelPorts, Occupancy, OccupancyProbe};
use crate::pool::Pool;

/// The default TTL of a lease (`pick --ttl`).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10 * 60);

/// The default minimum hold: a lease is never reclaimed sooner after handout.
pub const DEFAULT_MIN_HOLD: Duration = Duration::from_secs(60);

/// The most ports one `pick` hands out.
pub const MAX_PICK_COUNT: u16 = 256;

/// Every lease key's path starts with this; no project path can (they are absolute).
pub const LEASE_PATH_PREFIX: &str = "lease:";

/// The SQL condition selecting lease rows, answered from the `UNIQUE(path, tag)`
/// index (`;` is the byte after `:`).
const LEASE_ROWS: &str = "path >= 'lease:' AND path < 'lease;'";

/// The SQL that finds the next lease index of an owner.
const NEXT_INDEX: &str =
    "SELECT coalesce(max(CAST(tag AS INTEGER)) + 1, 0) FROM reservations WHERE path = ?1";

const LEASE_COLUMNS: &str =
    "port, tag, created_at, lease_pid, lease_starttime, lease_boot_id, lease_expires_at";

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The leased port.
    pub port: u16,
    /// The owning process.
    pub owner: ProcessIdentity,
    /// The lease's index among its owner's leases (its key's tag).
    pub index: u32,
    /// Handout time, Unix milliseconds.
    pub created_at_ms: i64,
    /// When the TTL ends, Unix milliseconds; `None` for no TTL.
    pub expires_at_ms: Option<i64>,
}

impl Lease {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Lease> {
        let tag: String = row.get("tag")?;
        let starttime: i64 = row.get("lease_starttime")?;
        Ok(Lease {
            port: row.get("port")?,
            owner: ProcessIdentity {
                pid: row.get("lease_pid")?,
                starttime: u64::try_from(starttime).unwrap_or(0),
                boot_id: row.get("lease_boot_id")?,
            },
            index: tag.parse().unwrap_or(0),
            created_at_ms: row.get("created_at")?,
            expires_at_ms: row.get("lease_expires_at")?,
        })
    }

    /// The key path of leases owned by `owner`.
    pub fn key_path(owner: &ProcessIdentity) -> String {
        format!(
            "{LEASE_PATH_PREFIX}{}:{}:{}",
            owner.boot_id, owner.pid, owner.starttime
        )
    }

    /// What the owner is now.
    pub fn owner_status(&self) -> OwnerStatus {
        owner_status(&self.owner)
    }
}

/// Whether a lease's owner still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnerStatus {
    /// The recorded process runs (possibly stopped), or cannot be checked.
    Alive,
    /// No process has the pid (or it is a zombie), or the boot changed.
    Dead,
    /// A process has the pid, but with another start time: the pid was reused.
    Replaced,
}

impl OwnerStatus {
    /// Whether the owner is provably gone.
    pub fn is_gone(self) -> bool {
        !matches!(self, OwnerStatus::Alive)
    }
}

fn owner_status(owner: &ProcessIdentity) -> OwnerStatus {
    match identity::boot_id() {
        Ok(boot) if boot != owner.boot_id => return OwnerStatus::Dead,
        Ok(_) => {}
        Err(_) => return OwnerStatus::Alive,
    }
    match ProcessIdentity::of(owner.pid) {
        Ok(None) => OwnerStatus::Dead,
        Ok(Some(now)) if now.starttime != owner.starttime => OwnerStatus::Replaced,
        Ok(Some(_)) | Err(_) => OwnerStatus::Alive,
    }
}

/// Why a lease was reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReclaimReason {
    /// The owner exited (or the machine rebooted).
    OwnerDead,
    /// The owner's pid now names another process.
    OwnerReplaced,
    /// The TTL passed while nothing listened on the port.
    Expired,
}

impl std::fmt::Display for ReclaimReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReclaimReason::OwnerDead => "its owner exited",
            ReclaimReason::OwnerReplaced => "its owner's pid now names another process",
            ReclaimReason::Expired => "its TTL passed and nothing listened on it",
        })
    }
}

/// A lease removed by reclaim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reclaimed {
    /// The lease as it was.
    pub lease: Lease,
    /// Why it went.
    pub reason: ReclaimReason,
}

/// What `pick` should do.
#[derive(Debug, Clone)]
pub struct PickRequest {
    /// The owner of the new leases.
    pub owner: ProcessIdentity,
    /// How many ports.
    pub count: u16,
    /// The TTL; `None` for none (reclaimed only when the owner is gone).
    pub ttl: Option<Duration>,
    /// Leases younger than this are never reclaimed.
    pub min_hold: Duration,
    /// Where the ports come from; its part in the kernel's ephemeral range is left out.
    pub pool: Pool,
    /// The kernel's ranges.
    pub kernel: KernelPorts,
}

impl PickRequest {
    /// One port for `owner` from `pool`, with the default TTL and minimum hold.
    pub fn new(owner: ProcessIdentity, pool: Pool, kernel: KernelPorts) -> PickRequest {
        PickRequest {
            owner,
            count: 1,
            ttl: Some(DEFAULT_LEASE_TTL),
            min_hold: DEFAULT_MIN_HOLD,
            pool,
            kernel,
        }
    }
}

/// The result of [`Registry::pick`].
#[derive(Debug, Clone)]
pub struct PickOutcome {
    /// The new leases, in handout order.
    pub leases: Vec<Lease>,
    /// Leases reclaimed on the way (reported, A11).
    pub reclaimed: Vec<Reclaimed>,
}

impl Registry {
    /// Leases `request.count` free ports to `request.owner` (PRODUCT.md §3.2
    /// `pick`), after reclaiming leases that may be reclaimed. All or nothing:
    /// one `BEGIN IMMEDIATE` transaction.
    ///
    /// # Errors
    /// [`Error::PoolExhausted`], [`Error::Invalid`] (a pool entirely in the
    /// ephemeral range, a count of 0), [`Error::Busy`], [`Error::Corrupt`].
    pub fn pick(
        &mut self,
        request: &PickRequest,
        probe: &dyn OccupancyProbe,
    ) -> Result<PickOutcome> {
        if request.count == 0 || request.count > MAX_PICK_COUNT {
            return Err(Error::invalid(
                format!(
                    "cannot pick {} ports: the count must be 1 to {MAX_PICK_COUNT}",
                    request.count
                ),
                None,
            ));
        }
        let safe = request.kernel.safe_part(request.pool.ranges());
        if safe.is_empty() {
            return Err(Error::invalid(
                format!(
                    "the pool {} lies entirely inside the kernel's ephemeral range {}",
                    request.pool, request.kernel.ephemeral
                ),
                Some("leases never come from the ephemeral range: choose a pool outside it".into()),
            ));
        }
        let path = self.path.clone();
        let tx = self.begin()?;
        let outcome = pick_in_tx(&tx, request, &safe, probe).map_err(|e| e.into_error(&path))?;
        crate::test_hooks::pause("pick.before-commit");
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(outcome)
    }

    /// The SQL statements that find lease rows, for plan checks in tests.
    #[doc(hidden)]
    pub fn lease_queries() -> [String; 2] {
        [
            format!("SELECT {LEASE_COLUMNS} FROM reservations WHERE {LEASE_ROWS}"),
            NEXT_INDEX.to_string(),
        ]
    }

    /// Every lease, ordered by port.
    ///
    /// # Errors
    /// [`Error::Busy`], [`Error::Corrupt`].
    pub fn leases(&self) -> Result<Vec<Lease>> {
        let run = || -> rusqlite::Result<Vec<Lease>> {
            let mut stmt = self.conn.prepare(&format!(
                "SELECT {LEASE_COLUMNS} FROM reservations WHERE {LEASE_ROWS} ORDER BY port"
            ))?;
            let rows = stmt.query_map([], Lease::from_row)?;
            rows.collect()
        };
        run().map_err(|e| self.db_error(e))
    }
}

fn pick_in_tx(
    conn: &Connection,
    request: &PickRequest,
    safe: &[crate::net::PortRange],
    probe: &dyn OccupancyProbe,
) -> std::result::Result<PickOutcome, TxError> {
    let now = crate::time::now_ms();
    let reclaimed = reclaim_in_tx(conn, probe, request.min_hold, now)?;
    let key_path = Lease::key_path(&request.owner);
    let first_index: u32 = conn.query_row(NEXT_INDEX, [&key_path], |row| row.get(0))?;
    let expires_at = request
        .ttl
        .map(|ttl| now.saturating_add(super::millis(ttl)));
    let mut leases = Vec::with_capacity(usize::from(request.count));
    for i in 0..u32::from(request.count) {
        let port = alloc::allocate(conn, safe, Some(probe))?.map_err(
            |alloc::AllocFailure::Exhausted { skipped_occupied }| {
                TxError::Refused(Error::PoolExhausted {
                    pool: request.pool.to_string(),
                    skipped_occupied,
                })
            },
        )?;
        alloc::mark_issued(conn, port)?;
        let index = first_index + i;
        conn.execute(
            "INSERT INTO reservations (port, path, tag, created_at, last_used_at,
                 lease_pid, lease_starttime, lease_boot_id, lease_expires_at)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8)",
            params![
                port,
                key_path,
                index.to_string(),
                now,
                request.owner.pid,
                i64::try_from(request.owner.starttime).unwrap_or(i64::MAX),
                request.owner.boot_id,
                expires_at,
            ],
        )?;
        leases.push(Lease {
            port,
            owner: request.owner.clone(),
            index,
            created_at_ms: now,
            expires_at_ms: expires_at,
        });
    }
    Ok(PickOutcome { leases, reclaimed })
}

/// Removes every lease that may be reclaimed (see the module docs).
fn reclaim_in_tx(
    conn: &Connection,
    probe: &dyn OccupancyProbe,
    min_hold: Duration,
    now: i64,
) -> std::result::Result<Vec<Reclaimed>, TxError> {
    let leases: Vec<Lease> = {
        let [sql, _] = Registry::lease_queries();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], Lease::from_row)?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut reclaimed = Vec::new();
    for lease in leases {
        let Some(reason) = reclaim_reason(&lease, probe, min_hold, now) else {
            continue;
        };
        conn.execute("DELETE FROM reservations WHERE port = ?1", [lease.port])?;
        alloc::mark_released(conn, lease.port, now)?;
        reclaimed.push(Reclaimed { lease, reason });
    }
    Ok(reclaimed)
}

/// Why `lease` may be reclaimed now, or `None` to keep it.
fn reclaim_reason(
    lease: &Lease,
    probe: &dyn OccupancyProbe,
    min_hold: Duration,
    now: i64,
) -> Option<ReclaimReason> {
    if now.saturating_sub(lease.created_at_ms) < super::millis(min_hold) {
        return None;
    }
    let reason = match lease.owner_status() {
        OwnerStatus::Dead => ReclaimReason::OwnerDead,
        OwnerStatus::Replaced => ReclaimReason::OwnerReplaced,
        OwnerStatus::Alive if lease.expires_at_ms.is_some_and(|t| now >= t) => {
            ReclaimReason::Expired
        }
        OwnerStatus::Alive => return None,
    };
    // Something listens (or the port cannot be bound): keep it.
    (probe.probe(lease.port) == Occupancy::Free).then_some(reason)
}
