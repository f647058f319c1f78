//! Moving reservations when a project moves (`porthold migrate`), and the
//! per-project summary (`porthold list-projects`).
//!
//! A migration is one `BEGIN IMMEDIATE` transaction: every selected key moves
//! or none does. Selection is component-aware: `--from /a/b` selects `/a/b`
//! (every tag) and, with `recursive`, `/a/b/...`; never `/a/bc`. The new path
//! replaces the `from` prefix with `to`, which is injective, so moved keys
//! cannot collide with each other; a moved key that would land on a key that
//! stays is a conflict ([`Error::KeyExists`]) and nothing moves. Ports,
//! labels and times are kept: the project keeps its ports across the move.
//!
//! Rows are moved in two passes (first to a unique placeholder path, then to
//! the final one) because SQLite checks `UNIQUE(path, tag)` row by row during
//! an `UPDATE`: moving `/a` to `/a/x` recursively would otherwise trip over
//! an intermediate state even though the final state is fine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::params;
use serde::Serialize;

use super::{
    COLUMNS, ListFilter, Registry, Reservation, TxError, db_error, find_by_key, path_text,
    tree_clause,
};
use crate::error::{Error, Result};

/// One key moved by [`Registry::migrate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The reservation before the move.
    pub before: Reservation,
    /// Its new path.
    pub new_path: PathBuf,
}

/// One project path of the registry and its keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectSummary {
    /// The project path.
    pub path: PathBuf,
    /// Project labels of its keys (usually one).
    pub projects: Vec<String>,
    /// Its tags (`""` for the untagged key), in port order.
    pub tags: Vec<String>,
    /// Its ports, ascending.
    pub ports: Vec<u16>,
    /// The most recent use of any of its keys, Unix milliseconds.
    pub last_used_at_ms: i64,
    /// Whether the path exists now (a `prune` would remove it otherwise).
    pub exists: bool,
}

fn new_path_for(path: &Path, from: &Path, to: &Path) -> Option<PathBuf> {
    let rest = path.strip_prefix(from).ok()?;
    Some(if rest.as_os_str().is_empty() {
        to.to_path_buf()
    } else {
        to.join(rest)
    })
}

impl Registry {
    /// Moves the keys of `from` (and with `recursive`, of every path under
    /// it) to `to`, atomically. Both paths must be absolute and normalised.
    ///
    /// # Errors
    /// [`Error::KeyExists`] when a moved key would land on an existing key
    /// (nothing moves), [`Error::Invalid`] for relative or non-UTF-8 paths,
    /// [`Error::Busy`], [`Error::Corrupt`].
    pub fn migrate(&mut self, from: &Path, to: &Path, recursive: bool) -> Result<Vec<Migrated>> {
        for p in [from, to] {
            if !p.is_absolute() {
                return Err(Error::invalid(
                    format!("`{}` is not an absolute path", p.display()),
                    None,
                ));
            }
        }
        let from_text = path_text(from)?;
        path_text(to)?;
        if from == to {
            return Ok(Vec::new());
        }
        let db_path = self.path.clone();
        let tx = self.begin()?;
        let run = || -> std::result::Result<Vec<Migrated>, TxError> {
            let (condition, args) = if recursive {
                let (clause, args) = tree_clause(&from_text, 1);
                (format!("1 = 1{clause}"), args)
            } else {
                ("path = ?1".to_string(), vec![from_text.clone()])
            };
            let rows: Vec<(i64, Reservation)> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT id, {COLUMNS} FROM reservations WHERE {condition} ORDER BY port"
                ))?;
                let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |row| {
                    Ok((row.get("id")?, Reservation::from_row(row)?))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut moves = Vec::with_capacity(rows.len());
            let moved_ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
            for (id, row) in rows {
                let new_path = new_path_for(&row.path, from, to).ok_or_else(|| {
                    Error::invalid(
                        format!("`{}` is not under `{}`", row.path.display(), from.display()),
                        None,
                    )
                })?;
                let new_text = path_text(&new_path)?;
                if let Some(existing) = find_by_key(&tx, &new_text, &row.tag)? {
                    let existing_id: i64 = tx.query_row(
                        "SELECT id FROM reservations WHERE path = ?1 AND tag = ?2",
                        params![new_text, row.tag],
                        |r| r.get(0),
                    )?;
                    if !moved_ids.contains(&existing_id) {
                        return Err(Error::KeyExists {
                            path: existing.path,
                            tag: existing.tag,
                            port: existing.port,
                        }
                        .into());
                    }
                }
                moves.push((
                    id,
                    new_text,
                    Migrated {
                        before: row,
                        new_path,
                    },
                ));
            }
            // Pass 1: placeholder paths no real path can equal (they are relative).
            for (id, _, _) in &moves {
                tx.execute(
                    "UPDATE reservations SET path = ?1 WHERE id = ?2",
                    params![format!("porthold-migrating/{id}"), id],
                )?;
            }
            // Pass 2: the final paths.
            for (id, new_text, _) in &moves {
                tx.execute(
                    "UPDATE reservations SET path = ?1 WHERE id = ?2",
                    params![new_text, id],
                )?;
            }
            Ok(moves.into_iter().map(|(_, _, m)| m).collect())
        };
        let moved = run().map_err(|e| e.into_error(&db_path))?;
        tx.commit().map_err(|e| db_error(&db_path, e))?;
        Ok(moved)
    }

    /// Every project path with its keys, ordered by path.
    ///
    /// # Errors
    /// [`Error::Busy`], [`Error::Corrupt`].
    pub fn projects(&self) -> Result<Vec<ProjectSummary>> {
        let rows = self.list(&ListFilter::default())?;
        let mut by_path: BTreeMap<PathBuf, ProjectSummary> = BTreeMap::new();
        for row in rows.into_iter().filter(|r| r.lease_pid.is_none()) {
            let entry = by_path
                .entry(row.path.clone())
                .or_insert_with(|| ProjectSummary {
                    exists: std::fs::symlink_metadata(&row.path).is_ok(),
                    path: row.path.clone(),
                    projects: Vec::new(),
                    tags: Vec::new(),
                    ports: Vec::new(),
                    last_used_at_ms: 0,
                });
            if let Some(project) = row.project
                && !entry.projects.contains(&project)
            {
                entry.projects.push(project);
            }
            entry.tags.push(row.tag);
            entry.ports.push(row.port);
            entry.last_used_at_ms = entry.last_used_at_ms.max(row.last_used_at_ms);
        }
        Ok(by_path.into_values().collect())
    }
}
