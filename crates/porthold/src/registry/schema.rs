//! Schema and forward migrations, versioned with `PRAGMA user_version`.
//!
//! Each migration runs inside the `BEGIN IMMEDIATE` transaction that first
//! observes the old version, so any number of processes may open a brand-new
//! registry at once: the first one migrates, the rest re-read the version under
//! the write lock and find nothing to do.
//!
//! A registry written by a newer porthold is refused (never downgraded) unless
//! it declares, in `meta.min_writer_version`, that this version may still write
//! it. Migrations are additive where they can be, and each one records the
//! oldest version that may still write the result.

use rusqlite::{Connection, OptionalExtension};

/// The newest schema version this build knows.
pub const CURRENT_VERSION: i64 = 1;

/// The SQL of each migration; index `i` upgrades version `i` to `i + 1`.
const MIGRATIONS: &[(&str, i64)] = &[(V1, 1)];

/// Version 1: reservations (and leases), never-issued port ranges, release
/// history, exclusions and a small key/value table for schema metadata.
const V1: &str = r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE reservations (
    id               INTEGER PRIMARY KEY,
    port             INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    path             TEXT NOT NULL,
    tag              TEXT NOT NULL DEFAULT '',
    project          TEXT,
    task             TEXT,
    created_at       INTEGER NOT NULL,
    last_used_at     INTEGER NOT NULL,
    lease_pid        INTEGER,
    lease_starttime  INTEGER,
    lease_boot_id    TEXT,
    lease_expires_at INTEGER,
    UNIQUE (port),
    UNIQUE (path, tag)
);
CREATE INDEX reservations_by_last_used ON reservations (last_used_at);

CREATE TABLE fresh_ranges (
    start INTEGER PRIMARY KEY NOT NULL,
    end   INTEGER NOT NULL CHECK (end >= start)
);
INSERT INTO fresh_ranges (start, end) VALUES (1, 65535);

CREATE TABLE released (
    port        INTEGER PRIMARY KEY NOT NULL,
    released_at INTEGER NOT NULL
);
CREATE INDEX released_by_age ON released (released_at, port);

CREATE TABLE exclusions (
    id    INTEGER PRIMARY KEY,
    start INTEGER NOT NULL CHECK (start BETWEEN 1 AND 65535),
    end   INTEGER NOT NULL CHECK (end BETWEEN start AND 65535),
    note  TEXT
);
CREATE INDEX exclusions_by_start ON exclusions (start);
"#;

/// Reads `PRAGMA user_version` and, when it is 0, the names of every schema
/// object (tables, indexes, views, triggers; `None` when there are none).
/// Version and objects come from one statement, so from the same snapshot: a
/// concurrent first migration is seen either wholly or not at all (a version
/// other than 0 needs no objects, and a migration never lowers it).
pub(crate) fn version_and_objects(conn: &Connection) -> rusqlite::Result<(i64, Option<String>)> {
    // The common case, a registry at a known version, needs only the pragma
    // (parsing the statement below costs as much as the rest of the open).
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version != 0 {
        return Ok((version, None));
    }
    conn.query_row(
        "SELECT (SELECT user_version FROM pragma_user_version),
                (SELECT group_concat(name, ', ') FROM
                    (SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
                     ORDER BY name))",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}

/// Reads `meta.min_writer_version` of a registry newer than this build, if it declares one.
pub(crate) fn min_writer_version(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'min_writer_version'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(value.and_then(|v| v.parse().ok()))
}

/// Applies every migration above `from`. Must run inside a write transaction.
pub(crate) fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    for (index, (sql, min_writer)) in MIGRATIONS.iter().enumerate() {
        let target = index as i64 + 1;
        if target <= from {
            continue;
        }
        conn.execute_batch(sql)?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('min_writer_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [min_writer.to_string()],
        )?;
        conn.pragma_update(None, "user_version", target)?;
    }
    Ok(())
}
