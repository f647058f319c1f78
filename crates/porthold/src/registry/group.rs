//! Group reservations: every service of a project in one transaction
//! (`porthold reserve-group`, `porthold autoreserve`).
//!
//! All members are planned and written inside a single `BEGIN IMMEDIATE`
//! transaction, and any refusal (a preferred port held by another key, an
//! exhausted pool) returns before the commit, so the transaction rolls back
//! and no row of the group exists afterwards: all or nothing.
//!
//! Members come in three kinds, handled in this order so that fixed wishes
//! are served before anything is allocated around them:
//! 1. a preferred `port`: that port or a conflict (exit 3), like `reserve --port`;
//! 2. an `offset` from a shared base: the members keep a fixed distance
//!    (`web` at base, `api` at base+1...). When some offset member is already
//!    reserved, its port fixes the base; otherwise the pool is searched for the
//!    lowest base at which *every* `base + offset` is in the pool, not
//!    excluded, not reserved and (unless the occupancy check is skipped) free,
//!    preferring blocks of never-issued ports, as single allocation does;
//! 3. plain members: the next free pool port, as `reserve` allocates.
//!
//! Existing reservations of the group's keys are kept (idempotent), exactly
//! as `reserve` keeps them.

use std::path::PathBuf;

use rusqlite::Connection;

use super::alloc::{self, MAX_OCCUPIED_SKIPS};
use super::{
    Registry, ReserveOutcome, ReserveRequest, TxError, db_error, find_by_key, path_text,
    reserve_in_tx,
};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::net::{KernelPorts, Occupancy, OccupancyProbe};
use crate::pool::Pool;

/// One service of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The service's tag.
    pub tag: String,
    /// A preferred fixed port.
    pub port: Option<u16>,
    /// An offset from the group's base port.
    pub offset: Option<u16>,
}

/// What [`Registry::reserve_group`] should do.
#[derive(Debug, Clone)]
pub struct GroupRequest {
    /// The project path shared by every member's key.
    pub path: PathBuf,
    /// The members (tags must be distinct and valid).
    pub members: Vec<GroupMember>,
    /// Sticky project label for every member.
    pub project: Option<String>,
    /// Where new ports come from.
    pub pool: Pool,
    /// The kernel's ranges, to warn about ephemeral ports.
    pub kernel: KernelPorts,
}

/// The result of [`Registry::reserve_group`]: one outcome per member, in request order.
#[derive(Debug, Clone)]
pub struct GroupOutcome {
    /// `(tag, outcome)` in the order of the request.
    pub members: Vec<(String, ReserveOutcome)>,
}

impl GroupRequest {
    /// The group of every `[services.<tag>]` of `config` (the project at
    /// `path`), with the project's name as the sticky label: what
    /// `reserve-group` reserves, and what a run of one service reserves too,
    /// so both agree on every port.
    pub fn for_project(
        config: &crate::config::Config,
        path: &std::path::Path,
        pool: Pool,
        kernel: KernelPorts,
    ) -> GroupRequest {
        GroupRequest {
            path: path.to_path_buf(),
            members: config
                .services
                .values()
                .map(|s| GroupMember {
                    tag: s.tag.clone(),
                    port: s.port,
                    offset: s.offset,
                })
                .collect(),
            project: config.project_name.as_ref().map(|s| s.value.clone()),
            pool,
            kernel,
        }
    }
}

impl Registry {
    /// Reserves every member of a group atomically.
    ///
    /// # Errors
    /// [`Error::PortTaken`] / [`Error::KeyHoldsOtherPort`] / [`Error::StickyLabel`]
    /// (conflicts), [`Error::PoolExhausted`], [`Error::Invalid`] for a bad or
    /// duplicate tag or an offset block that cannot fit, [`Error::Busy`],
    /// [`Error::Corrupt`]. On any error nothing is written.
    pub fn reserve_group(
        &mut self,
        request: &GroupRequest,
        probe: Option<&dyn OccupancyProbe>,
    ) -> Result<GroupOutcome> {
        path_text(&request.path)?;
        let mut seen = std::collections::BTreeSet::new();
        for member in &request.members {
            crate::key::validate_tag(&member.tag)?;
            if !seen.insert(member.tag.as_str()) {
                return Err(Error::invalid(
                    format!("service `{}` appears twice in the group", member.tag),
                    None,
                ));
            }
        }
        self.reserve_group_with(request, probe, None)
            .map(|(outcome, _)| outcome)
    }

    /// [`reserve_group`](Self::reserve_group), and when the pool is exhausted,
    /// autoclean by `policy` and retry, all in the same IMMEDIATE transaction
    /// (what `reserve` does; see [`Registry::reserve_with_autoclean`]). Returns
    /// what was cleaned, empty when the first attempt succeeded.
    ///
    /// # Errors
    /// As [`reserve_group`](Self::reserve_group); `PoolExhausted` when cleaning
    /// freed nothing or not enough.
    pub fn reserve_group_with_autoclean(
        &mut self,
        request: &GroupRequest,
        probe: Option<&dyn OccupancyProbe>,
        policy: &crate::registry::CleanPolicy,
    ) -> Result<(GroupOutcome, Vec<crate::registry::Cleaned>)> {
        self.reserve_group_with(request, probe, Some(policy))
    }

    fn reserve_group_with(
        &mut self,
        request: &GroupRequest,
        probe: Option<&dyn OccupancyProbe>,
        policy: Option<&crate::registry::CleanPolicy>,
    ) -> Result<(GroupOutcome, Vec<crate::registry::Cleaned>)> {
        let key_path = path_text(&request.path)?;
        let db_path = self.path.clone();
        let tx = self.begin()?;
        let run = || -> std::result::Result<_, TxError> {
            tx.execute_batch("SAVEPOINT first_attempt")?;
            match (group_in_tx(&tx, request, &key_path, probe), policy) {
                (Ok(outcome), _) => {
                    tx.execute_batch("RELEASE first_attempt")?;
                    Ok((outcome, Vec::new()))
                }
                (Err(TxError::Refused(exhausted @ Error::PoolExhausted { .. })), Some(policy)) => {
                    // Undo the members written before the pool ran dry, clean, retry once.
                    tx.execute_batch("ROLLBACK TO first_attempt; RELEASE first_attempt")?;
                    let cleaned = crate::registry::clean::clean_in_tx(
                        &tx,
                        policy,
                        crate::time::now_ms(),
                        false,
                    )?;
                    if cleaned.is_empty() {
                        return Err(TxError::Refused(exhausted));
                    }
                    Ok((group_in_tx(&tx, request, &key_path, probe)?, cleaned))
                }
                (Err(other), _) => Err(other),
            }
        };
        let result = run().map_err(|e| e.into_error(&db_path))?;
        crate::test_hooks::pause("reserve-group.before-commit");
        tx.commit().map_err(|e| db_error(&db_path, e))?;
        Ok(result)
    }
}

fn member_request(request: &GroupRequest, tag: &str, port: Option<u16>) -> ReserveRequest {
    let mut single = ReserveRequest::new(
        Key {
            path: request.path.clone(),
            tag: tag.to_string(),
        },
        request.pool.clone(),
        request.kernel.clone(),
    );
    single.port = port;
    single.project = request.project.clone();
    single
}

fn group_in_tx(
    conn: &Connection,
    request: &GroupRequest,
    key_path: &str,
    probe: Option<&dyn OccupancyProbe>,
) -> std::result::Result<GroupOutcome, TxError> {
    let mut done: Vec<(String, ReserveOutcome)> = Vec::new();

    // 1. Preferred ports.
    for member in request.members.iter().filter(|m| m.port.is_some()) {
        let single = member_request(request, &member.tag, member.port);
        done.push((
            member.tag.clone(),
            reserve_in_tx(conn, &single, key_path, probe)?,
        ));
    }

    // 2. Offsets from a shared base.
    let offset_members: Vec<(&str, u16)> = request
        .members
        .iter()
        .filter(|m| m.port.is_none())
        .filter_map(|m| m.offset.map(|o| (m.tag.as_str(), o)))
        .collect();
    if !offset_members.is_empty() {
        let mut base: Option<u16> = None;
        for (tag, offset) in &offset_members {
            if let Some(existing) = find_by_key(conn, key_path, tag)? {
                base = existing.port.checked_sub(*offset);
                if base.is_some() {
                    break;
                }
            }
        }
        let base = match base {
            Some(base) => base,
            None => {
                let offsets: Vec<u16> = offset_members.iter().map(|(_, o)| *o).collect();
                find_base(conn, &request.pool, &offsets, probe)?
            }
        };
        for (tag, offset) in &offset_members {
            let existing = find_by_key(conn, key_path, tag)?;
            let port = match existing {
                Some(_) => None,
                None => Some(base.checked_add(*offset).ok_or_else(|| {
                    Error::invalid(
                        format!(
                            "service `{tag}`: base port {base} + offset {offset} exceeds 65535"
                        ),
                        None,
                    )
                })?),
            };
            let single = member_request(request, tag, port);
            done.push((
                tag.to_string(),
                reserve_in_tx(conn, &single, key_path, probe)?,
            ));
        }
    }

    // 3. Plain members.
    for member in request
        .members
        .iter()
        .filter(|m| m.port.is_none() && m.offset.is_none())
    {
        let single = member_request(request, &member.tag, None);
        done.push((
            member.tag.clone(),
            reserve_in_tx(conn, &single, key_path, probe)?,
        ));
    }

    // Report in the order of the request.
    let mut members = Vec::with_capacity(done.len());
    for member in &request.members {
        if let Some(index) = done.iter().position(|(tag, _)| *tag == member.tag) {
            members.push(done.swap_remove(index));
        }
    }
    Ok(GroupOutcome { members })
}

/// The lowest base such that every `base + offset` is available; never-issued
/// blocks are preferred over blocks that reuse released ports.
fn find_base(
    conn: &Connection,
    pool: &Pool,
    offsets: &[u16],
    probe: Option<&dyn OccupancyProbe>,
) -> std::result::Result<u16, TxError> {
    let excluded = alloc::exclusions(conn)?;
    let max_offset = offsets.iter().copied().max().unwrap_or(0);
    let mut skipped_occupied = 0u32;
    for fresh_only in [true, false] {
        for range in pool.ranges() {
            let Some(last_base) = range.end.checked_sub(max_offset) else {
                continue;
            };
            // Bases below the range start are still possible when the pool
            // has several ranges, but every port must lie in the pool, so
            // starting at the first range start covers them.
            let mut base = range.start;
            while base <= last_base {
                let mut fits = true;
                for offset in offsets {
                    let port = base + offset;
                    let ok = pool.contains(port)
                        && alloc::excluded_by(&excluded, port).is_none()
                        && !alloc::is_reserved(conn, port)?
                        && (!fresh_only || alloc::is_fresh(conn, port)?);
                    if !ok {
                        fits = false;
                        break;
                    }
                }
                if fits && let Some(probe) = probe {
                    for offset in offsets {
                        if probe.probe(base + offset) != Occupancy::Free {
                            skipped_occupied += 1;
                            fits = false;
                            break;
                        }
                    }
                    if skipped_occupied >= MAX_OCCUPIED_SKIPS {
                        return Err(exhausted(pool, skipped_occupied));
                    }
                }
                if fits {
                    return Ok(base);
                }
                match base.checked_add(1) {
                    Some(next) => base = next,
                    None => break,
                }
            }
        }
    }
    Err(exhausted(pool, skipped_occupied))
}

fn exhausted(pool: &Pool, skipped_occupied: u32) -> TxError {
    TxError::Refused(Error::PoolExhausted {
        pool: format!("{pool} (no contiguous block for the group's offsets)"),
        skipped_occupied,
    })
}
