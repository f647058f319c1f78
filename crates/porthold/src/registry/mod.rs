//! The port registry: a SQLite file mapping keys to stable ports.
//!
//! Every mutating operation is one `BEGIN IMMEDIATE` transaction that holds
//! the database's write lock from the first read to the commit, so the plan
//! ("is this port free? which port is next?") and its execution see the same
//! state. A check in one transaction and an insert in another is exactly the
//! bug that let two concurrent callers receive the same port (PRODUCT.md P1);
//! `UNIQUE(port)` and `UNIQUE(path, tag)` are the second line of defence.
//!
//! The file lives at `<data-dir>/registry.sqlite3`, mode 0600, in WAL mode.
//! The format is documented in `docs/registry.md`.
//!
//! ```no_run
//! use std::time::Duration;
//! use porthold::key::Key;
//! use porthold::net::{KernelPorts, SystemProbe};
//! use porthold::pool::Pool;
//! use porthold::registry::{Registry, ReserveRequest};
//!
//! let mut registry = Registry::open("/tmp/porthold-data".as_ref(), Duration::from_secs(5))?;
//! let kernel = KernelPorts::read();
//! let (pool, _warnings) = Pool::resolve(None, &kernel)?;
//! let key = Key { path: "/home/me/shop".into(), tag: "web".into() };
//! let outcome = registry.reserve(&ReserveRequest::new(key, pool, kernel), Some(&SystemProbe))?;
//! println!("{}", outcome.reservation.port);
//! # Ok::<(), porthold::Error>(())
//! ```

mod alloc;
mod clean;
mod exclusions;
mod group;
mod inspect;
mod migrate;
mod schema;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior,
    params,
};
use serde::Serialize;

use crate::error::{Error, Holder, Result};
use crate::key::Key;
use crate::net::{KernelPorts, Occupancy, OccupancyProbe};
use crate::pool::Pool;

pub use alloc::MAX_OCCUPIED_SKIPS;
pub use clean::{CleanPolicy, CleanReason, Cleaned, DEFAULT_EXPIRE_AFTER};
pub use exclusions::{ExcludeOutcome, Exclusion};
pub use group::{GroupMember, GroupOutcome, GroupRequest};
pub use inspect::{PortInfo, ScanEntry, port_info, scan};
pub use migrate::{Migrated, ProjectSummary};
pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

/// The registry's file name inside the data directory.
pub const FILE_NAME: &str = "registry.sqlite3";

/// The 16-byte header every SQLite 3 database file starts with.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// One row: a key's port (or a lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    /// The port.
    pub port: u16,
    /// The key's project path.
    pub path: PathBuf,
    /// The key's tag (empty when none).
    pub tag: String,
    /// Optional sticky project label.
    pub project: Option<String>,
    /// Optional sticky task label.
    pub task: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// Last time `reserve` returned this row, Unix milliseconds.
    pub last_used_at_ms: i64,
    /// The owning process of a lease; `None` for an ordinary reservation.
    pub lease_pid: Option<u32>,
}

impl Reservation {
    /// The row's key.
    pub fn key(&self) -> Key {
        Key {
            path: self.path.clone(),
            tag: self.tag.clone(),
        }
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<Reservation> {
        let path: String = row.get("path")?;
        Ok(Reservation {
            port: row.get("port")?,
            path: PathBuf::from(path),
            tag: row.get("tag")?,
            project: row.get("project")?,
            task: row.get("task")?,
            created_at_ms: row.get("created_at")?,
            last_used_at_ms: row.get("last_used_at")?,
            lease_pid: row.get("lease_pid")?,
        })
    }

    fn holder(&self) -> Holder {
        match self.lease_pid {
            Some(pid) => Holder::Lease { pid },
            None => Holder::Reservation {
                path: self.path.clone(),
                tag: self.tag.clone(),
            },
        }
    }
}

const COLUMNS: &str = "port, path, tag, project, task, created_at, last_used_at, lease_pid";

/// What `reserve` should do. Build with [`ReserveRequest::new`] and set fields.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    /// The key to reserve for.
    pub key: Key,
    /// A specific port (`--port`).
    pub port: Option<u16>,
    /// Accept another port when the requested one is taken (`--or-any`).
    pub or_any: bool,
    /// Sticky project label.
    pub project: Option<String>,
    /// Sticky task label.
    pub task: Option<String>,
    /// Allow moving the key to `port`, and changing sticky labels (`--force`).
    pub force: bool,
    /// Move the key to a new free port (`--reassign`).
    pub reassign: bool,
    /// Where new ports come from.
    pub pool: Pool,
    /// The kernel's ranges, to warn about ephemeral ports.
    pub kernel: KernelPorts,
    /// Exclusions from configuration (`[pool] exclude`): a requested `port` in
    /// one is refused like one excluded with `porthold exclude`.
    pub excluded: Vec<crate::net::PortRange>,
}

impl ReserveRequest {
    /// A plain request: the key's existing port or a new one from `pool`.
    pub fn new(key: Key, pool: Pool, kernel: KernelPorts) -> ReserveRequest {
        ReserveRequest {
            key,
            port: None,
            or_any: false,
            project: None,
            task: None,
            force: false,
            reassign: false,
            pool,
            kernel,
            excluded: Vec::new(),
        }
    }
}

/// Something the user should hear about a successful reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReserveNote {
    /// The key's port has a listener right now (kept, not moved).
    InUse {
        /// The port.
        port: u16,
        /// Who listens, when knowable.
        owner: Option<(u32, String)>,
    },
    /// The requested port was taken; `--or-any` gave another.
    FellBack {
        /// The requested port.
        requested: u16,
        /// Who holds it.
        holder: Holder,
    },
    /// The port lies in the kernel's ephemeral range.
    Ephemeral {
        /// The port.
        port: u16,
    },
    /// The key moved from this port (`--force` or `--reassign`).
    Moved {
        /// The old port.
        from: u16,
    },
}

impl std::fmt::Display for ReserveNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReserveNote::InUse {
                port,
                owner: Some((pid, comm)),
            } => write!(
                f,
                "port {port} is in use by pid {pid} ({comm}); keeping the reservation (use --reassign to move the key)"
            ),
            ReserveNote::InUse { port, owner: None } => write!(
                f,
                "port {port} is in use by another process; keeping the reservation (use --reassign to move the key)"
            ),
            ReserveNote::FellBack { requested, holder } => {
                write!(
                    f,
                    "port {requested} is {holder}; --or-any chose another port"
                )
            }
            ReserveNote::Ephemeral { port } => write!(
                f,
                "port {port} lies in the kernel's ephemeral range: an outgoing connection may take it while no server holds it"
            ),
            ReserveNote::Moved { from } => write!(f, "moved from port {from}"),
        }
    }
}

/// The result of [`Registry::reserve`].
#[derive(Debug, Clone)]
pub struct ReserveOutcome {
    /// The key's reservation after the call.
    pub reservation: Reservation,
    /// Whether the row was created by this call.
    pub created: bool,
    /// Things to tell the user on stderr.
    pub notes: Vec<ReserveNote>,
}

/// Which rows `release` removes.
#[derive(Debug, Clone)]
pub enum ReleaseTarget {
    /// One key.
    Key(Key),
    /// Every tag of one path (`--all-tags`).
    AllTags(PathBuf),
    /// Every key at or under a path (`--recursive`), optionally one tag only.
    Recursive {
        /// The root of the tree.
        path: PathBuf,
        /// Only this tag, when given.
        tag: Option<String>,
    },
    /// Whatever holds this port (`--port`).
    Port(u16),
}

/// Which rows `list` returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Rows at or under this path.
    pub path: Option<PathBuf>,
    /// Rows with this project label.
    pub project: Option<String>,
    /// Rows with this tag.
    pub tag: Option<String>,
}

/// An open registry.
#[derive(Debug)]
pub struct Registry {
    conn: Connection,
    path: PathBuf,
    busy_timeout: Duration,
}

impl Registry {
    /// Opens (creating when needed) the registry in `data_dir`.
    ///
    /// Safe when many processes do it at once on a directory that does not
    /// exist yet: creation, the switch to WAL and migrations are serialised by
    /// SQLite's locks.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a file that is not a SQLite database or cannot be
    /// read, [`Error::NewerSchema`] for a registry this build may not write,
    /// [`Error::Busy`] when locks are not granted within `busy_timeout`,
    /// [`Error::Invalid`] for a data dir on a network file system.
    pub fn open(data_dir: &Path, busy_timeout: Duration) -> Result<Registry> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| Error::io(format!("creating data dir `{}`", data_dir.display()), e))?;
        refuse_network_fs(data_dir)?;
        let path = data_dir.join(FILE_NAME);
        // Create the file ourselves so it is 0600 from its first instant;
        // SQLite gives its -wal and -shm files the same mode.
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| corrupt(&path, format!("cannot open: {e}")))?;
        Self::open_file(path, busy_timeout)
    }

    /// Opens the registry in `data_dir` only if it exists; `Ok(None)` otherwise.
    /// Read-only commands use this so they never create files.
    ///
    /// # Errors
    /// As [`Registry::open`].
    pub fn open_existing(data_dir: &Path, busy_timeout: Duration) -> Result<Option<Registry>> {
        let path = data_dir.join(FILE_NAME);
        match fs::symlink_metadata(&path) {
            Ok(_) => Self::open_file(path, busy_timeout).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(corrupt(&path, format!("cannot stat: {e}"))),
        }
    }

    fn open_file(path: PathBuf, busy_timeout: Duration) -> Result<Registry> {
        check_header(&path)?;
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|e| corrupt(&path, format!("cannot open: {e}")))?;
        let mut registry = Registry {
            conn,
            path,
            busy_timeout,
        };
        registry
            .conn
            .busy_timeout(busy_timeout)
            .map_err(|e| registry.db_error(e))?;
        // In WAL mode, NORMAL keeps every commit atomic and the file consistent
        // across a crash of the process (kill -9); only a power loss may drop
        // the last commits. FULL would add an fsync to every `reserve`.
        registry
            .conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| registry.db_error(e))?;
        registry.prepare()?;
        Ok(registry)
    }

    /// Checks the schema version, switches to WAL and migrates, in that order:
    /// a registry this build must not write is refused before anything could
    /// change its bytes.
    fn prepare(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.busy_timeout;
        let version = self.retry_busy(deadline, schema::user_version)?;
        self.check_version(version)?;
        if version >= schema::CURRENT_VERSION {
            return Ok(());
        }
        let mode: String = self.retry_busy(deadline, |conn| {
            conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
        })?;
        if !mode.eq_ignore_ascii_case("wal") {
            self.retry_busy(deadline, |conn| {
                conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
                    .map(drop)
            })?;
        }
        let path = self.path.clone();
        let tx = self.begin()?;
        // Re-read under the write lock: another process may have migrated
        // between our first look and now.
        let version = schema::user_version(&tx).map_err(|e| db_error(&path, e))?;
        if version < schema::CURRENT_VERSION {
            schema::migrate(&tx, version).map_err(|e| db_error(&path, e))?;
        }
        tx.commit().map_err(|e| db_error(&path, e))
    }

    fn check_version(&self, version: i64) -> Result<()> {
        if version <= schema::CURRENT_VERSION {
            return Ok(());
        }
        let min_writer = schema::min_writer_version(&self.conn).map_err(|e| self.db_error(e))?;
        match min_writer {
            Some(min) if min <= schema::CURRENT_VERSION => Ok(()),
            _ => Err(Error::NewerSchema {
                path: self.path.clone(),
                found: version,
                supported: schema::CURRENT_VERSION,
            }),
        }
    }

    /// Runs `f`, retrying while SQLite reports a lock conflict, until `deadline`.
    /// Some operations (changing the journal mode) fail at once with BUSY
    /// instead of invoking the busy handler.
    fn retry_busy<T>(
        &self,
        deadline: Instant,
        f: impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        loop {
            match f(&self.conn) {
                Ok(value) => return Ok(value),
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(self.db_error(e)),
            }
        }
    }

    /// The registry file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn begin(&mut self) -> Result<Transaction<'_>> {
        let path = self.path.clone();
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error(&path, e))
    }

    fn db_error(&self, e: rusqlite::Error) -> Error {
        db_error(&self.path, e)
    }

    /// Reserves a port for `request.key` (PRODUCT.md §3.1 `reserve`).
    ///
    /// `probe` is `None` to skip the occupancy check.
    ///
    /// # Errors
    /// [`Error::PortTaken`], [`Error::KeyHoldsOtherPort`], [`Error::StickyLabel`]
    /// (conflicts), [`Error::PoolExhausted`], [`Error::Busy`], [`Error::Corrupt`].
    pub fn reserve(
        &mut self,
        request: &ReserveRequest,
        probe: Option<&dyn OccupancyProbe>,
    ) -> Result<ReserveOutcome> {
        let path = self.path.clone();
        let key_path = path_text(&request.key.path)?;
        let tx = self.begin()?;
        let outcome =
            reserve_in_tx(&tx, request, &key_path, probe).map_err(|e| e.into_error(&path))?;
        crate::test_hooks::pause("reserve.before-commit");
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(outcome)
    }

    /// Removes reservations (and leases); returns what was removed.
    ///
    /// # Errors
    /// [`Error::Busy`], [`Error::Corrupt`].
    pub fn release(&mut self, target: &ReleaseTarget) -> Result<Vec<Reservation>> {
        let path = self.path.clone();
        let tx = self.begin()?;
        let removed = release_in_tx(&tx, target).map_err(|e| e.into_error(&path))?;
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(removed)
    }

    /// Lists rows matching `filter`, ordered by port.
    ///
    /// # Errors
    /// [`Error::Busy`], [`Error::Corrupt`].
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Reservation>> {
        let mut sql = format!("SELECT {COLUMNS} FROM reservations WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        if let Some(tree) = &filter.path {
            let tree = path_text(tree)?;
            let (clause, tree_args) = tree_clause(&tree, args.len() + 1);
            sql.push_str(&clause);
            args.extend(tree_args);
        }
        if let Some(project) = &filter.project {
            args.push(project.clone());
            sql.push_str(&format!(" AND project = ?{}", args.len()));
        }
        if let Some(tag) = &filter.tag {
            args.push(tag.clone());
            sql.push_str(&format!(" AND tag = ?{}", args.len()));
        }
        sql.push_str(" ORDER BY port");
        let run = || -> rusqlite::Result<Vec<Reservation>> {
            let mut stmt = self.conn.prepare(&sql)?;
            let rows = stmt.query_map(
                rusqlite::params_from_iter(args.iter()),
                Reservation::from_row,
            )?;
            rows.collect()
        };
        run().map_err(|e| self.db_error(e))
    }

    /// The reservation of one key, if any.
    ///
    /// # Errors
    /// [`Error::Busy`], [`Error::Corrupt`].
    pub fn get(&self, key: &Key) -> Result<Option<Reservation>> {
        let path = path_text(&key.path)?;
        find_by_key(&self.conn, &path, &key.tag).map_err(|e| self.db_error(e))
    }

    /// The underlying connection, for tests and diagnostics (`EXPLAIN QUERY PLAN`).
    #[doc(hidden)]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The SQL statements allocation runs, for plan checks in tests.
    #[doc(hidden)]
    pub fn allocation_queries() -> [&'static str; 3] {
        [
            alloc::FRESH_AT_OR_BELOW,
            alloc::FRESH_ABOVE,
            alloc::RELEASED_OLDEST_FIRST,
        ]
    }
}

/// An error inside a transaction: either a planned refusal or a database failure.
enum TxError {
    Refused(Error),
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        TxError::Db(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Refused(e)
    }
}

impl TxError {
    fn into_error(self, path: &Path) -> Error {
        match self {
            TxError::Refused(e) => e,
            TxError::Db(e) => db_error(path, e),
        }
    }
}

fn find_by_key(conn: &Connection, path: &str, tag: &str) -> rusqlite::Result<Option<Reservation>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM reservations WHERE path = ?1 AND tag = ?2"),
        params![path, tag],
        Reservation::from_row,
    )
    .optional()
}

fn find_by_port(conn: &Connection, port: u16) -> rusqlite::Result<Option<Reservation>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM reservations WHERE port = ?1"),
        [port],
        Reservation::from_row,
    )
    .optional()
}

/// Why a specific port cannot be given to a key, if it cannot.
fn port_unavailable(
    conn: &Connection,
    port: u16,
    own_key: (&str, &str),
    probe: Option<&dyn OccupancyProbe>,
    config_excluded: &[crate::net::PortRange],
) -> std::result::Result<Option<Holder>, TxError> {
    if let Some(holder) = find_by_port(conn, port)?
        && (holder.path.to_str() != Some(own_key.0) || holder.tag != own_key.1)
    {
        return Ok(Some(holder.holder()));
    }
    if alloc::excluded_by(&alloc::exclusions(conn)?, port).is_some()
        || config_excluded.iter().any(|r| r.contains(port))
    {
        return Ok(Some(Holder::Excluded));
    }
    Ok(match probe.map(|p| (p.probe(port), p)) {
        Some((Occupancy::Busy, p)) => Some(Holder::Listener {
            owner: p.owner(port),
        }),
        Some((Occupancy::Unusable, _)) => Some(Holder::Unusable),
        _ => None,
    })
}

fn allocate_or_exhausted(
    conn: &Connection,
    pool: &Pool,
    probe: Option<&dyn OccupancyProbe>,
) -> std::result::Result<u16, TxError> {
    alloc::allocate(conn, pool.ranges(), probe)?.map_err(
        |alloc::AllocFailure::Exhausted { skipped_occupied }| {
            TxError::Refused(Error::PoolExhausted {
                pool: pool.to_string(),
                skipped_occupied,
            })
        },
    )
}

fn reserve_in_tx(
    conn: &Connection,
    request: &ReserveRequest,
    key_path: &str,
    probe: Option<&dyn OccupancyProbe>,
) -> std::result::Result<ReserveOutcome, TxError> {
    let now = crate::time::now_ms();
    let tag = request.key.tag.as_str();
    let mut notes = Vec::new();

    if let Some(existing) = find_by_key(conn, key_path, tag)? {
        check_sticky(
            "project",
            existing.project.as_deref(),
            request.project.as_deref(),
            request.force,
        )?;
        check_sticky(
            "task",
            existing.task.as_deref(),
            request.task.as_deref(),
            request.force,
        )?;
        let mut port = existing.port;
        match request.port {
            Some(requested) if requested != existing.port => {
                if !request.force {
                    return Err(Error::KeyHoldsOtherPort {
                        path: existing.path.clone(),
                        tag: existing.tag.clone(),
                        held: existing.port,
                        requested,
                    }
                    .into());
                }
                if let Some(holder) =
                    port_unavailable(conn, requested, (key_path, tag), probe, &request.excluded)?
                {
                    return Err(Error::PortTaken {
                        port: requested,
                        holder,
                    }
                    .into());
                }
                port = requested;
            }
            _ if request.reassign => port = allocate_or_exhausted(conn, &request.pool, probe)?,
            _ => {
                if let Some(p) = probe
                    && p.probe(existing.port) == Occupancy::Busy
                {
                    notes.push(ReserveNote::InUse {
                        port: existing.port,
                        owner: p.owner(existing.port),
                    });
                }
            }
        }
        if port != existing.port {
            alloc::mark_issued(conn, port)?;
            alloc::mark_released(conn, existing.port, now)?;
            notes.push(ReserveNote::Moved {
                from: existing.port,
            });
        }
        conn.execute(
            "UPDATE reservations SET port = ?1, last_used_at = ?2,
                project = coalesce(?3, project), task = coalesce(?4, task)
             WHERE path = ?5 AND tag = ?6",
            params![port, now, request.project, request.task, key_path, tag],
        )?;
        if request.kernel.is_auto_assignable(port) && port != existing.port {
            notes.push(ReserveNote::Ephemeral { port });
        }
        let reservation = find_by_key(conn, key_path, tag)?
            .ok_or(TxError::Db(rusqlite::Error::QueryReturnedNoRows))?;
        return Ok(ReserveOutcome {
            reservation,
            created: false,
            notes,
        });
    }

    let port = match request.port {
        Some(requested) => {
            match port_unavailable(conn, requested, (key_path, tag), probe, &request.excluded)? {
                None => requested,
                Some(holder) if request.or_any => {
                    notes.push(ReserveNote::FellBack { requested, holder });
                    allocate_or_exhausted(conn, &request.pool, probe)?
                }
                Some(holder) => {
                    return Err(Error::PortTaken {
                        port: requested,
                        holder,
                    }
                    .into());
                }
            }
        }
        None => allocate_or_exhausted(conn, &request.pool, probe)?,
    };
    if request.kernel.is_auto_assignable(port) {
        notes.push(ReserveNote::Ephemeral { port });
    }
    alloc::mark_issued(conn, port)?;
    conn.execute(
        "INSERT INTO reservations (port, path, tag, project, task, created_at, last_used_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        params![port, key_path, tag, request.project, request.task, now],
    )?;
    let reservation = find_by_key(conn, key_path, tag)?
        .ok_or(TxError::Db(rusqlite::Error::QueryReturnedNoRows))?;
    Ok(ReserveOutcome {
        reservation,
        created: true,
        notes,
    })
}

fn check_sticky(
    field: &'static str,
    current: Option<&str>,
    requested: Option<&str>,
    force: bool,
) -> Result<()> {
    match (current, requested) {
        (Some(current), Some(requested)) if current != requested && !force => {
            Err(Error::StickyLabel {
                field,
                current: current.to_string(),
                requested: requested.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// The SQL condition for "path is `tree` or lies under it", component-aware:
/// `/a/b` matches `/a/b` and `/a/b/c`, never `/a/bc`. Uses a range on the
/// text (`'/a/b/' <= path < '/a/b0'`, `'0'` being the byte after `'/'`), which
/// SQLite can answer from the `UNIQUE(path, tag)` index.
fn tree_clause(tree: &str, first_arg: usize) -> (String, Vec<String>) {
    if tree == "/" {
        return (String::new(), Vec::new());
    }
    let base = tree.trim_end_matches('/');
    (
        format!(
            " AND (path = ?{a} OR (path >= ?{b} AND path < ?{c}))",
            a = first_arg,
            b = first_arg + 1,
            c = first_arg + 2
        ),
        vec![base.to_string(), format!("{base}/"), format!("{base}0")],
    )
}

fn release_in_tx(
    conn: &Connection,
    target: &ReleaseTarget,
) -> std::result::Result<Vec<Reservation>, TxError> {
    let (condition, args): (String, Vec<String>) = match target {
        ReleaseTarget::Key(key) => (
            "path = ?1 AND tag = ?2".into(),
            vec![path_text(&key.path)?, key.tag.clone()],
        ),
        ReleaseTarget::AllTags(path) => ("path = ?1".into(), vec![path_text(path)?]),
        ReleaseTarget::Recursive { path, tag } => {
            let (clause, mut args) = tree_clause(&path_text(path)?, 1);
            let mut condition = format!("1 = 1{clause}");
            if let Some(tag) = tag {
                args.push(tag.clone());
                condition.push_str(&format!(" AND tag = ?{}", args.len()));
            }
            (condition, args)
        }
        ReleaseTarget::Port(port) => ("port = ?1".into(), vec![port.to_string()]),
    };
    let removed: Vec<Reservation> = {
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM reservations WHERE {condition} ORDER BY port"
        ))?;
        let rows = stmt.query_map(
            rusqlite::params_from_iter(args.iter()),
            Reservation::from_row,
        )?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    conn.execute(
        &format!("DELETE FROM reservations WHERE {condition}"),
        rusqlite::params_from_iter(args.iter()),
    )?;
    let now = crate::time::now_ms();
    for row in &removed {
        alloc::mark_released(conn, row.port, now)?;
    }
    Ok(removed)
}

/// Paths are stored as UTF-8 text so that the registry stays readable by any tool.
fn path_text(path: &Path) -> Result<String> {
    path.to_str().map(str::to_string).ok_or_else(|| {
        Error::invalid(
            format!("path `{}` is not valid UTF-8", path.display()),
            Some("porthold stores project paths as UTF-8 text; rename the directory".into()),
        )
    })
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn corrupt(path: &Path, reason: String) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

/// Maps a SQLite failure to the error a user can act on.
fn db_error(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy {
            what: format!("registry `{}`", path.display()),
            detail: "another porthold held the write lock for longer than --busy-timeout".into(),
        },
        Some(ErrorCode::NotADatabase) => corrupt(path, "not a SQLite database".into()),
        Some(ErrorCode::DatabaseCorrupt) => corrupt(path, format!("database corrupt: {e}")),
        _ => corrupt(path, e.to_string()),
    }
}

/// Refuses to touch a file that is neither empty nor a SQLite database, so
/// that nothing (not even SQLite's recovery) writes to it.
fn check_header(path: &Path) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| corrupt(path, format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| corrupt(path, format!("cannot stat: {e}")))?;
    if !meta.is_file() {
        return Err(corrupt(path, "not a regular file".into()));
    }
    if meta.size() == 0 {
        return Ok(());
    }
    let mut header = [0u8; 16];
    match file.read_exact(&mut header) {
        Ok(()) if &header == SQLITE_HEADER => Ok(()),
        Ok(()) | Err(_) => Err(corrupt(path, "not a SQLite database (bad header)".into())),
    }
}

/// SQLite's locking and WAL need a local file system; NFS and SMB break both.
fn refuse_network_fs(dir: &Path) -> Result<()> {
    const NFS_SUPER_MAGIC: u64 = 0x6969;
    const SMB_SUPER_MAGIC: u64 = 0x517B;
    const CIFS_MAGIC_NUMBER: u64 = 0xFF53_4D42;
    const SMB2_MAGIC_NUMBER: u64 = 0xFE53_4D42;
    let Ok(stat) = rustix::fs::statfs(dir) else {
        return Ok(());
    };
    #[allow(clippy::unnecessary_cast)]
    let fs_type = stat.f_type as u64;
    if [
        NFS_SUPER_MAGIC,
        SMB_SUPER_MAGIC,
        CIFS_MAGIC_NUMBER,
        SMB2_MAGIC_NUMBER,
    ]
    .contains(&fs_type)
    {
        return Err(Error::invalid(
            format!("data dir `{}` is on a network file system", dir.display()),
            Some("SQLite locks and WAL are unreliable there; point --data-dir (PORTHOLD_DATA_DIR) at a local disk".into()),
        ));
    }
    Ok(())
}
