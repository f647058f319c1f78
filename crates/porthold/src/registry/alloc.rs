//! Port allocation inside a write transaction.
//!
//! Preference order (PRODUCT.md §2): ports never handed out first, lowest
//! first; then ports released longest ago. Browsers key cookies and storage by
//! port, so a port released a minute ago must not go to another project while
//! fresher ones exist.
//!
//! "Never handed out" is kept as a table of disjoint ranges (`fresh_ranges`)
//! that starts as `1-65535` and is split whenever a port is issued. Finding the
//! lowest fresh port at or above `p` is then two indexed lookups, whatever the
//! number of reservations: the cost of `reserve` stays flat as the table grows
//! (checked by `EXPLAIN QUERY PLAN` in a test and by the `reserve` benchmark).

use rusqlite::{Connection, OptionalExtension, params};

use crate::net::{Occupancy, OccupancyProbe, PortRange};

/// At most this many occupied candidates are skipped in one call before giving up.
pub const MAX_OCCUPIED_SKIPS: u32 = 64;

/// The SQL that finds the fresh range containing a port (or the nearest below it).
pub(crate) const FRESH_AT_OR_BELOW: &str =
    "SELECT start, end FROM fresh_ranges WHERE start <= ?1 ORDER BY start DESC LIMIT 1";
/// The SQL that finds the next fresh range above a port.
pub(crate) const FRESH_ABOVE: &str =
    "SELECT start, end FROM fresh_ranges WHERE start > ?1 ORDER BY start LIMIT 1";
/// The SQL that lists released ports, longest released first.
///
/// It walks the `released_by_age` index in order and the caller stops at the
/// first acceptable port, so no sort of the whole table happens; filtering by
/// pool range in SQL would make SQLite prefer the primary key and sort.
pub(crate) const RELEASED_OLDEST_FIRST: &str =
    "SELECT port FROM released ORDER BY released_at, port";

/// Why allocation ended without a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AllocFailure {
    /// Every candidate was taken or excluded.
    Exhausted { skipped_occupied: u32 },
}

/// The lowest never-issued port `>= from`.
fn next_fresh(conn: &Connection, from: u16) -> rusqlite::Result<Option<u16>> {
    let containing: Option<u16> = conn
        .query_row(FRESH_AT_OR_BELOW, [from], |row| row.get(1))
        .optional()?;
    if containing.is_some_and(|end| end >= from) {
        return Ok(Some(from));
    }
    conn.query_row(FRESH_ABOVE, [from], |row| row.get(0))
        .optional()
}

/// Whether `port` has never been issued.
pub(crate) fn is_fresh(conn: &Connection, port: u16) -> rusqlite::Result<bool> {
    Ok(next_fresh(conn, port)? == Some(port))
}

/// Removes `port` from the fresh ranges (it is being issued).
pub(crate) fn mark_issued(conn: &Connection, port: u16) -> rusqlite::Result<()> {
    let containing: Option<(u16, u16)> = conn
        .query_row(FRESH_AT_OR_BELOW, [port], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    if let Some((start, end)) = containing
        && end >= port
    {
        conn.execute("DELETE FROM fresh_ranges WHERE start = ?1", [start])?;
        if start < port {
            conn.execute(
                "INSERT INTO fresh_ranges (start, end) VALUES (?1, ?2)",
                params![start, port - 1],
            )?;
        }
        if port < end {
            conn.execute(
                "INSERT INTO fresh_ranges (start, end) VALUES (?1, ?2)",
                params![port + 1, end],
            )?;
        }
    }
    conn.execute("DELETE FROM released WHERE port = ?1", [port])?;
    Ok(())
}

/// Records that `port` was released at `now_ms`.
pub(crate) fn mark_released(conn: &Connection, port: u16, now_ms: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO released (port, released_at) VALUES (?1, ?2)
         ON CONFLICT (port) DO UPDATE SET released_at = excluded.released_at",
        params![port, now_ms],
    )?;
    Ok(())
}

/// Loads the exclusions as sorted, merged ranges (there are few of them).
pub(crate) fn exclusions(conn: &Connection) -> rusqlite::Result<Vec<PortRange>> {
    let mut stmt = conn.prepare_cached("SELECT start, end FROM exclusions")?;
    // A row that cannot be read is an error (corruption must surface), not
    // an exclusion silently skipped.
    let rows = stmt
        .query_map([], |row| Ok((row.get::<_, u16>(0)?, row.get::<_, u16>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let ranges = rows
        .into_iter()
        .filter_map(|(s, e)| PortRange::new(s, e))
        .collect();
    Ok(crate::net::kernel::normalize(ranges))
}

/// The exclusion containing `port`, if any.
pub(crate) fn excluded_by(exclusions: &[PortRange], port: u16) -> Option<PortRange> {
    exclusions.iter().copied().find(|r| r.contains(port))
}

/// Whether `port` is held by a reservation or lease.
pub(crate) fn is_reserved(conn: &Connection, port: u16) -> rusqlite::Result<bool> {
    conn.query_row("SELECT 1 FROM reservations WHERE port = ?1", [port], |_| {
        Ok(())
    })
    .optional()
    .map(|found| found.is_some())
}

/// Finds a free port in `pool` (sorted, disjoint ranges).
///
/// `probe` is `None` when the occupancy check is skipped.
pub(crate) fn allocate(
    conn: &Connection,
    pool: &[PortRange],
    probe: Option<&dyn OccupancyProbe>,
) -> rusqlite::Result<Result<u16, AllocFailure>> {
    let excluded = exclusions(conn)?;
    let mut skipped_occupied = 0u32;
    // Occupied candidates are skipped, up to a bound, so a machine full of
    // foreign listeners gives a clear "exhausted" instead of a long crawl.
    let usable = |port: u16, skipped: &mut u32| -> bool {
        match probe.map(|p| p.probe(port)) {
            None | Some(Occupancy::Free) => true,
            Some(Occupancy::Busy | Occupancy::Unusable) => {
                *skipped += 1;
                false
            }
        }
    };

    for range in pool {
        let mut candidate = range.start;
        while let Some(fresh) = next_fresh(conn, candidate)? {
            if fresh > range.end {
                break;
            }
            if let Some(exclusion) = excluded_by(&excluded, fresh) {
                match exclusion.end.checked_add(1) {
                    Some(next) => candidate = next,
                    None => break,
                }
                continue;
            }
            if !is_reserved(conn, fresh)? && usable(fresh, &mut skipped_occupied) {
                return Ok(Ok(fresh));
            }
            if skipped_occupied >= MAX_OCCUPIED_SKIPS {
                return Ok(Err(AllocFailure::Exhausted { skipped_occupied }));
            }
            match fresh.checked_add(1) {
                Some(next) => candidate = next,
                None => break,
            }
        }
    }

    // No fresh port left: reuse the port released longest ago.
    let mut best: Option<u16> = None;
    {
        let mut stmt = conn.prepare_cached(RELEASED_OLDEST_FIRST)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let port: u16 = row.get(0)?;
            if !pool.iter().any(|r| r.contains(port)) || excluded_by(&excluded, port).is_some() {
                continue;
            }
            if is_reserved(conn, port)? {
                continue;
            }
            if usable(port, &mut skipped_occupied) {
                best = Some(port);
                break;
            }
            if skipped_occupied >= MAX_OCCUPIED_SKIPS {
                break;
            }
        }
    }
    Ok(best.ok_or(AllocFailure::Exhausted { skipped_occupied }))
}
