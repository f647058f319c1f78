//! Exclusions: ports and ranges the registry never hands out (`porthold exclude`).
//!
//! Rows of the `exclusions` table may overlap (each `exclude` call adds one
//! row, keeping its note); allocation merges them when it reads them, so
//! overlap never changes behaviour, and `--compact` merges the rows
//! themselves. Removing a range trims or splits every row it touches, so
//! `exclude 100-200` followed by `exclude --remove 150` leaves `100-149` and
//! `151-200`. An exclusion does not evict an existing reservation inside it;
//! it only stops new allocations (and explicit `--port` requests) there.
//! Every change is one `BEGIN IMMEDIATE` transaction.

use rusqlite::{Connection, params};
use serde::Serialize;

use super::{COLUMNS, Registry, Reservation, TxError, db_error};
use crate::error::Result;
use crate::net::PortRange;

/// One row of the exclusions table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exclusion {
    /// First excluded port.
    pub start: u16,
    /// Last excluded port (inclusive).
    pub end: u16,
    /// Why (free text; `scan --autoexclude` records the listener).
    pub note: Option<String>,
}

impl Exclusion {
    /// The excluded ports as a range.
    pub fn range(&self) -> PortRange {
        PortRange {
            start: self.start,
            end: self.end,
        }
    }
}

/// What [`Registry::exclude`] did.
#[derive(Debug, Clone)]
pub struct ExcludeOutcome {
    /// Whether a row was added (false when an identical range was already excluded).
    pub added: bool,
    /// Reservations inside the range: they keep their ports.
    pub reserved_inside: Vec<Reservation>,
}

pub(super) fn list_in(conn: &Connection) -> rusqlite::Result<Vec<Exclusion>> {
    let mut stmt =
        conn.prepare("SELECT start, end, note FROM exclusions ORDER BY start, end, id")?;
    let rows = stmt.query_map([], |row| {
        Ok(Exclusion {
            start: row.get(0)?,
            end: row.get(1)?,
            note: row.get(2)?,
        })
    })?;
    rows.collect()
}

/// Adds exclusions inside an open transaction; returns how many were new.
pub(super) fn add_in(
    conn: &Connection,
    ranges: &[(PortRange, Option<String>)],
) -> rusqlite::Result<usize> {
    let mut added = 0;
    for (range, note) in ranges {
        let exists = conn
            .query_row(
                "SELECT 1 FROM exclusions WHERE start = ?1 AND end = ?2",
                params![range.start, range.end],
                |_| Ok(()),
            )
            .is_ok();
        if !exists {
            conn.execute(
                "INSERT INTO exclusions (start, end, note) VALUES (?1, ?2, ?3)",
                params![range.start, range.end, note],
            )?;
            added += 1;
        }
    }
    Ok(added)
}

fn reserved_inside(conn: &Connection, range: PortRange) -> rusqlite::Result<Vec<Reservation>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM reservations WHERE port BETWEEN ?1 AND ?2 ORDER BY port"
    ))?;
    let rows = stmt.query_map(params![range.start, range.end], Reservation::from_row)?;
    rows.collect()
}

impl Registry {
    /// The exclusions, ordered by start.
    ///
    /// # Errors
    /// [`crate::Error::Busy`], [`crate::Error::Corrupt`].
    pub fn exclusions(&self) -> Result<Vec<Exclusion>> {
        list_in(&self.conn).map_err(|e| self.db_error(e))
    }

    /// Excludes `range` from allocation.
    ///
    /// # Errors
    /// [`crate::Error::Busy`], [`crate::Error::Corrupt`].
    pub fn exclude(&mut self, range: PortRange, note: Option<&str>) -> Result<ExcludeOutcome> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let run = || -> rusqlite::Result<ExcludeOutcome> {
            let added = add_in(&tx, &[(range, note.map(str::to_string))])? > 0;
            Ok(ExcludeOutcome {
                added,
                reserved_inside: reserved_inside(&tx, range)?,
            })
        };
        let outcome = run().map_err(|e| db_error(&path, e))?;
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(outcome)
    }

    /// Removes `range` from every exclusion (trimming or splitting rows);
    /// returns the rows that were changed or deleted, as they were before.
    ///
    /// # Errors
    /// [`crate::Error::Busy`], [`crate::Error::Corrupt`].
    pub fn unexclude(&mut self, range: PortRange) -> Result<Vec<Exclusion>> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let run = || -> std::result::Result<Vec<Exclusion>, TxError> {
            let touched: Vec<(i64, Exclusion)> = {
                let mut stmt = tx.prepare(
                    "SELECT id, start, end, note FROM exclusions
                     WHERE start <= ?2 AND end >= ?1 ORDER BY start, id",
                )?;
                let rows = stmt.query_map(params![range.start, range.end], |row| {
                    Ok((
                        row.get(0)?,
                        Exclusion {
                            start: row.get(1)?,
                            end: row.get(2)?,
                            note: row.get(3)?,
                        },
                    ))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for (id, row) in &touched {
                tx.execute("DELETE FROM exclusions WHERE id = ?1", [id])?;
                for rest in row.range().subtract(&range) {
                    tx.execute(
                        "INSERT INTO exclusions (start, end, note) VALUES (?1, ?2, ?3)",
                        params![rest.start, rest.end, row.note],
                    )?;
                }
            }
            Ok(touched.into_iter().map(|(_, row)| row).collect())
        };
        let removed = run().map_err(|e| e.into_error(&path))?;
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(removed)
    }

    /// Merges overlapping and adjacent exclusions into single rows (their
    /// notes joined with `; `); returns the rows after compaction.
    ///
    /// # Errors
    /// [`crate::Error::Busy`], [`crate::Error::Corrupt`].
    pub fn compact_exclusions(&mut self) -> Result<Vec<Exclusion>> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let run = || -> rusqlite::Result<Vec<Exclusion>> {
            let rows = list_in(&tx)?;
            let mut merged: Vec<Exclusion> = Vec::new();
            for row in rows {
                match merged.last_mut() {
                    Some(last) if u32::from(row.start) <= u32::from(last.end) + 1 => {
                        last.end = last.end.max(row.end);
                        if let Some(note) = row.note
                            && last.note.as_deref() != Some(note.as_str())
                        {
                            last.note = Some(match last.note.take() {
                                Some(prev) => format!("{prev}; {note}"),
                                None => note,
                            });
                        }
                    }
                    _ => merged.push(row),
                }
            }
            tx.execute("DELETE FROM exclusions", [])?;
            for row in &merged {
                tx.execute(
                    "INSERT INTO exclusions (start, end, note) VALUES (?1, ?2, ?3)",
                    params![row.start, row.end, row.note],
                )?;
            }
            Ok(merged)
        };
        let merged = run().map_err(|e| db_error(&path, e))?;
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(merged)
    }
}
