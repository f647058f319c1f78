//! Looking at ports from both sides: what listens (from `/proc`, via
//! [`crate::net::owner::bound_sockets`]) and what the registry says
//! (`porthold scan`, `porthold port-info`), plus the registry's own health
//! check (`porthold assert-data-dir --validate`).
//!
//! A listener whose owning process cannot be seen (another user's process,
//! `/proc/<pid>/fd` unreadable) is still reported, with an unknown owner: the
//! socket tables list every socket of the network namespace. `scan
//! --autoexclude` turns unreserved listeners into exclusions in one
//! transaction, so ports that other software owns are never handed out.

use std::collections::BTreeSet;

use super::exclusions::{self, Exclusion};
use super::{Registry, Reservation, db_error, find_by_port};
use crate::error::Result;
use crate::net::owner::{Proto, SocketEntry, bound_sockets};
use crate::net::{Occupancy, OccupancyProbe, PortRange};

/// One listening socket found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEntry {
    /// The socket (protocol, address, port, uid, owner).
    pub socket: SocketEntry,
    /// The reservation holding the port, if any.
    pub reservation: Option<Reservation>,
    /// Whether an exclusion covers the port.
    pub excluded: bool,
}

/// Everything known about one port ([`port_info`]).
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// The port.
    pub port: u16,
    /// The reservation or lease holding it.
    pub reservation: Option<Reservation>,
    /// Exclusions covering it.
    pub exclusions: Vec<Exclusion>,
    /// A trial bind's answer right now (TCP).
    pub occupancy: Occupancy,
    /// TCP listeners and bound UDP sockets on the port, with owners where readable.
    pub sockets: Vec<SocketEntry>,
}

/// TCP listeners and bound UDP sockets with ports in `range`, marked with
/// the registry's view; sorted by port, protocol, address. `registry` is
/// `None` when there is no registry yet (nothing is reserved then).
///
/// # Errors
/// [`crate::Error::Busy`], [`crate::Error::Corrupt`].
pub fn scan(registry: Option<&Registry>, range: PortRange) -> Result<Vec<ScanEntry>> {
    let excluded = match registry {
        Some(r) => r.exclusions()?,
        None => Vec::new(),
    };
    let mut entries = Vec::new();
    for socket in bound_sockets()
        .into_iter()
        .filter(|s| range.contains(s.port))
    {
        let reservation = match registry {
            Some(r) => find_by_port(&r.conn, socket.port).map_err(|e| r.db_error(e))?,
            None => None,
        };
        entries.push(ScanEntry {
            excluded: excluded.iter().any(|x| x.range().contains(socket.port)),
            reservation,
            socket,
        });
    }
    entries.sort_by(|a, b| {
        (a.socket.port, proto_rank(a.socket.proto), a.socket.addr).cmp(&(
            b.socket.port,
            proto_rank(b.socket.proto),
            b.socket.addr,
        ))
    });
    Ok(entries)
}

fn proto_rank(proto: Proto) -> u8 {
    match proto {
        Proto::Tcp => 0,
        Proto::Udp => 1,
    }
}

/// Reservation, exclusions, occupancy and owners of one port.
///
/// # Errors
/// [`crate::Error::Busy`], [`crate::Error::Corrupt`].
pub fn port_info(
    registry: Option<&Registry>,
    port: u16,
    probe: &dyn OccupancyProbe,
) -> Result<PortInfo> {
    let (reservation, exclusions) = match registry {
        Some(r) => (
            find_by_port(&r.conn, port).map_err(|e| r.db_error(e))?,
            r.exclusions()?
                .into_iter()
                .filter(|x| x.range().contains(port))
                .collect(),
        ),
        None => (None, Vec::new()),
    };
    let mut sockets: Vec<SocketEntry> = bound_sockets()
        .into_iter()
        .filter(|s| s.port == port)
        .collect();
    sockets.sort_by_key(|s| (proto_rank(s.proto), s.addr));
    Ok(PortInfo {
        port,
        reservation,
        exclusions,
        occupancy: probe.probe(port),
        sockets,
    })
}

impl Registry {
    /// The reservation or lease holding `port`, if any.
    ///
    /// # Errors
    /// [`crate::Error::Busy`], [`crate::Error::Corrupt`].
    pub fn by_port(&self, port: u16) -> Result<Option<Reservation>> {
        find_by_port(&self.conn, port).map_err(|e| self.db_error(e))
    }

    /// Excludes the ports of the unreserved, not yet excluded entries of a
    /// scan, in one transaction; returns the ports newly excluded.
    ///
    /// # Errors
    /// [`crate::Error::Busy`], [`crate::Error::Corrupt`].
    pub fn autoexclude(&mut self, entries: &[ScanEntry]) -> Result<Vec<u16>> {
        let mut wanted: Vec<(PortRange, Option<String>)> = Vec::new();
        let mut seen = BTreeSet::new();
        for entry in entries {
            let port = entry.socket.port;
            if entry.reservation.is_some() || entry.excluded || !seen.insert(port) {
                continue;
            }
            let Some(range) = PortRange::single(port) else {
                continue;
            };
            let note = match &entry.socket.owner {
                Some(owner) => format!("scan: pid {} ({})", owner.pid, owner.comm),
                None => "scan: owner unknown".to_string(),
            };
            wanted.push((range, Some(note)));
        }
        let path = self.path.clone();
        let tx = self.begin()?;
        let run = || -> rusqlite::Result<Vec<u16>> {
            let mut added = Vec::new();
            for (range, note) in &wanted {
                // A port reserved between the scan and now stays reservable.
                if find_by_port(&tx, range.start)?.is_some() {
                    continue;
                }
                if exclusions::add_in(&tx, &[(*range, note.clone())])? > 0 {
                    added.push(range.start);
                }
            }
            Ok(added)
        };
        let added = run().map_err(|e| db_error(&path, e))?;
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(added)
    }

    /// SQLite's `PRAGMA integrity_check` (every page, and every index
    /// compared with its table; `quick_check` skips the latter and misses a
    /// damaged port index): an empty list when the file is sound, otherwise
    /// the problems it reports (at most 20).
    ///
    /// # Errors
    /// [`crate::Error::Busy`], [`crate::Error::Corrupt`] when the damage
    /// stops the check itself.
    pub fn check_integrity(&self) -> Result<Vec<String>> {
        super::integrity_problems(&self.conn).map_err(|e| self.db_error(e))
    }
}
