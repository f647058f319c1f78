//! The port registry: a SQLite file mapping keys to stable ports.
//!
//! Every mutating operation is one `BEGIN IMMEDIATE` transaction that holds
//! the database's write lock from the first read to the commit, so the plan
//! ("is this port free? which port is next?") and its execution see the same
//! state. A check in one transaction and an insert in another is exactly the
//! bug that let two concurrent callers receive the same port (PRODUCT.md P1);
//! `UNIQUE(port)` and `UNIQUE(path, tag)` are the second line of defence.
//!
//! The one exception is a `reserve` that finds its key and has nothing to
//! change: it is answered from a read transaction and writes nothing (see
//! [`LAST_USED_REFRESH_INTERVAL`]); a read that finds it must write starts
//! over as an IMMEDIATE transaction, so every decision to write is still
//! made under the write lock.
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
mod lease;
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

use crate::error::{Error, Holder, Result, StorageProblem};
use crate::key::Key;
use crate::net::{KernelPorts, Occupancy, OccupancyProbe};
use crate::pool::Pool;

pub use alloc::MAX_OCCUPIED_SKIPS;
pub use clean::{CleanPolicy, CleanReason, Cleaned, DEFAULT_EXPIRE_AFTER};
pub use exclusions::{ExcludeOutcome, Exclusion};
pub use group::{GroupMember, GroupOutcome, GroupRequest};
pub use inspect::{PortInfo, ScanEntry, port_info, scan};
pub use lease::{
    DEFAULT_LEASE_TTL, DEFAULT_MIN_HOLD, LEASE_PATH_PREFIX, Lease, MAX_PICK_COUNT, OwnerStatus,
    PickOutcome, PickRequest, ReclaimReason, Reclaimed,
};
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
    /// Last time `reserve` returned this row, Unix milliseconds, to within
    /// [`LAST_USED_REFRESH_INTERVAL`] (a fresher value is not rewritten).
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
                "port {port} is in use by pid {pid} ({comm}); keeping the reservation"
            ),
            ReserveNote::InUse { port, owner: None } => write!(
                f,
                "port {port} is in use by another process; keeping the reservation"
            ),
            ReserveNote::FellBack { requested, holder } => {
                write!(f, "port {requested} is {holder}; another port was chosen")
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
    /// `path` with the directories above it resolved: what SQLite opened.
    real: PathBuf,
    busy_timeout: Duration,
    /// Whether a write transaction was started (then `Drop` may checkpoint,
    /// and `synchronous` is set).
    wrote: bool,
}

impl Registry {
    /// Opens (creating when needed) the registry in `data_dir`.
    ///
    /// Safe when many processes do it at once on a directory that does not
    /// exist yet: creation, the switch to WAL and migrations are serialised by
    /// SQLite's locks.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a file that is not a sound SQLite database (or
    /// is a symlink), [`Error::ForeignDatabase`] for another program's SQLite
    /// database (left untouched), [`Error::RegistryUnavailable`] when the file
    /// system refuses (read-only, full, permission denied),
    /// [`Error::NewerSchema`] for a registry this build may not write,
    /// [`Error::Busy`] when locks are not granted within `busy_timeout`,
    /// [`Error::Invalid`] for a data dir on a network file system.
    pub fn open(data_dir: &Path, busy_timeout: Duration) -> Result<Registry> {
        let path = data_dir.join(FILE_NAME);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|e| storage_error(&path, "creating the data dir", &e))?;
        refuse_network_fs(data_dir)?;
        let real = real_path(data_dir, &path)?;
        // Create the file ourselves so it is 0600 from its first instant;
        // SQLite gives its -wal and -shm files the same mode. O_NOFOLLOW: a
        // symlink in place of the registry itself is refused (the directories
        // above it may be symlinks; `real` has them resolved).
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&real)
            .map_err(|e| open_error(&path, &e))?;
        Self::open_file(path, real, busy_timeout)
    }

    /// Opens the registry in `data_dir` only if it exists; `Ok(None)` otherwise.
    /// Read-only commands use this so they never create files.
    ///
    /// # Errors
    /// As [`Registry::open`].
    pub fn open_existing(data_dir: &Path, busy_timeout: Duration) -> Result<Option<Registry>> {
        let path = data_dir.join(FILE_NAME);
        match fs::symlink_metadata(&path) {
            Ok(_) => {
                let real = real_path(data_dir, &path)?;
                Self::open_file(path, real, busy_timeout).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(open_error(&path, &e)),
        }
    }

    /// `path` is the registry as the user named it (for messages), `real` the
    /// same file with every symlinked directory above it resolved. SQLite
    /// opens `real` with `SQLITE_OPEN_NOFOLLOW`, which refuses a symlink in
    /// *any* component of the name it is given: on the resolved name that
    /// leaves only the registry file itself (and its -wal and -shm, checked
    /// here too), so a data dir reached through a symlinked `$HOME` works.
    fn open_file(path: PathBuf, real: PathBuf, busy_timeout: Duration) -> Result<Registry> {
        check_header(&path, &real)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = real.clone().into_os_string();
            side.push(suffix);
            if fs::symlink_metadata(&side).is_ok_and(|m| !m.is_file()) {
                let mut shown = path.clone().into_os_string();
                shown.push(suffix);
                return Err(corrupt(
                    &PathBuf::from(shown),
                    "not a regular file (porthold never follows a symlink here)".into(),
                ));
            }
        }
        let conn = Connection::open_with_flags(
            &real,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|e| db_error(&path, e))?;
        let mut registry = Registry {
            conn,
            path,
            real,
            busy_timeout,
            wrote: false,
        };
        registry
            .conn
            .busy_timeout(busy_timeout)
            .map_err(|e| registry.db_error(e))?;
        // Keep -wal and -shm between processes: without this every process
        // creates both files (fsyncing the directory), and the last one out
        // checkpoints (two fsyncs) and unlinks them, so even a read costs two
        // creates and two unlinks. Closing does not checkpoint either; a
        // process that wrote checkpoints and empties the WAL when it is
        // longer than WAL_TRUNCATE_BYTES (see `Drop`), so most writes cost no
        // fsync and the next process's WAL recovery reads at most that much.
        // A read-only session then writes nothing but the -shm index
        // (docs/registry.md, "Files").
        let mut persist: std::ffi::c_int = 1;
        registry
            .conn
            .file_control(
                Some(rusqlite::MAIN_DB),
                rusqlite::FileControl::PersistWal(&mut persist),
            )
            .map_err(|e| registry.db_error(e))?;
        registry
            .conn
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )
            .map_err(|e| registry.db_error(e))?;
        registry.prepare()?;
        Ok(registry)
    }

    /// Checks the schema version, switches to WAL and migrates, in that order:
    /// a registry this build must not write is refused before anything could
    /// change its bytes.
    fn prepare(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.busy_timeout;
        let (version, foreign) = self.retry_busy(deadline, schema::version_and_objects)?;
        self.check_version(version)?;
        if version >= schema::CURRENT_VERSION {
            return Ok(());
        }
        // Version 0 with objects in it is some other program's database:
        // refuse before the switch to WAL, which would rewrite its header.
        self.refuse_foreign(version, foreign)?;
        self.prepare_to_write()?;
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
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error(&path, e))?;
        // Re-read under the write lock: another process may have migrated
        // between our first look and now.
        let (version, foreign) =
            schema::version_and_objects(&tx).map_err(|e| db_error(&path, e))?;
        if version == 0
            && let Some(tables) = foreign
        {
            return Err(Error::ForeignDatabase { path, tables });
        }
        if version < schema::CURRENT_VERSION {
            schema::migrate(&tx, version).map_err(|e| db_error(&path, e))?;
        }
        tx.commit().map_err(|e| db_error(&path, e))
    }

    fn refuse_foreign(&self, version: i64, objects: Option<String>) -> Result<()> {
        match objects {
            Some(tables) if version == 0 => Err(Error::ForeignDatabase {
                path: self.path.clone(),
                tables,
            }),
            _ => Ok(()),
        }
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

    /// Whether `data_dir` holds something that can be a registry: a regular
    /// file (not a symlink) that starts with the SQLite header. Reads 16
    /// bytes and opens nothing else; `assert-data-dir` without `--validate`.
    pub fn exists_in(data_dir: &Path) -> bool {
        let Ok(mut file) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(data_dir.join(FILE_NAME))
        else {
            return false;
        };
        let mut header = [0u8; 16];
        file.metadata().is_ok_and(|m| m.is_file())
            && file.read_exact(&mut header).is_ok()
            && &header == SQLITE_HEADER
    }

    /// The registry file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a write: `BEGIN IMMEDIATE`, then, when the last full check is
    /// older than [`INTEGRITY_CHECK_INTERVAL`], `PRAGMA integrity_check`
    /// under the write lock. A damaged index (which SQLite reports only when
    /// a lookup happens to trip over it, and which can make `UNIQUE(port)`
    /// miss a duplicate) is refused before anything is written.
    fn begin(&mut self) -> Result<Transaction<'_>> {
        let path = self.path.clone();
        self.prepare_to_write()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| db_error(&path, e))?;
        scheduled_integrity_check(&tx, &path)?;
        Ok(tx)
    }

    /// Before the first write of this connection: `synchronous = NORMAL`.
    /// In WAL mode, NORMAL keeps every commit atomic and the file consistent
    /// across a crash of the process (kill -9); only a power loss may drop
    /// the last commits. FULL would add an fsync to every `reserve`. Only
    /// commits and checkpoints sync, so a connection that only reads (an
    /// idempotent `reserve`) never runs the pragma.
    fn prepare_to_write(&mut self) -> Result<()> {
        if !self.wrote {
            self.conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| db_error(&self.path, e))?;
            self.wrote = true;
        }
        Ok(())
    }

    /// Starts a read (`BEGIN DEFERRED`): one consistent snapshot, no write
    /// lock, so it never waits for writers and writers never wait for it.
    fn begin_read(&mut self) -> Result<Transaction<'_>> {
        let path = self.path.clone();
        self.conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
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
        if let Some(outcome) = self.reserve_by_reading(request, &key_path, probe)? {
            return Ok(outcome);
        }
        let tx = self.begin()?;
        let outcome =
            reserve_in_tx(&tx, request, &key_path, probe).map_err(|e| e.into_error(&path))?;
        crate::test_hooks::pause("reserve.before-commit");
        tx.commit().map_err(|e| db_error(&path, e))?;
        Ok(outcome)
    }

    /// The idempotent `reserve`: the key exists, nothing was asked that would
    /// change it, and its last-used time is fresher than
    /// [`LAST_USED_REFRESH_INTERVAL`]. Answered from a read transaction, so it
    /// takes no write lock and writes nothing. `Ok(None)` means a write is
    /// needed; the caller then starts over in an IMMEDIATE transaction (a
    /// read transaction cannot safely become a write one: SQLite answers the
    /// upgrade with `SQLITE_BUSY_SNAPSHOT` when another process committed in
    /// between, and the busy handler does not retry that).
    pub(crate) fn reserve_by_reading(
        &mut self,
        request: &ReserveRequest,
        key_path: &str,
        probe: Option<&dyn OccupancyProbe>,
    ) -> Result<Option<ReserveOutcome>> {
        // One statement: SQLite runs it in its own read transaction, on one
        // snapshot, with no write lock (an explicit BEGIN/COMMIT around it
        // would add two statements and nothing else).
        let existing =
            find_by_key(&self.conn, key_path, &request.key.tag).map_err(|e| self.db_error(e))?;
        let Some(existing) = existing else {
            return Ok(None);
        };
        if !answers_without_write(&existing, request, crate::time::now_ms()) {
            return Ok(None);
        }
        let mut notes = Vec::new();
        if let Some(p) = probe
            && p.probe(existing.port) == Occupancy::Busy
        {
            notes.push(ReserveNote::InUse {
                port: existing.port,
                owner: p.owner(existing.port),
            });
        }
        Ok(Some(ReserveOutcome {
            reservation: existing,
            created: false,
            notes,
        }))
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

    /// Lists reservations (never leases: see [`Registry::leases`]) matching
    /// `filter`, ordered by port.
    ///
    /// # Errors
    /// [`Error::Busy`], [`Error::Corrupt`].
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Reservation>> {
        let mut sql = format!("SELECT {COLUMNS} FROM reservations WHERE lease_pid IS NULL");
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

/// A process that wrote checkpoints the WAL into the database and truncates
/// it to 0 bytes, when closing the registry finds it longer than this (32
/// pages, about six new reservations). Small, so that each new process's WAL recovery (it reads the
/// whole WAL: recovery forgets what was checkpointed, so a WAL that is only
/// checkpointed, never emptied, would be copied again by every checkpoint)
/// stays cheap; large enough that most writes cost no fsync.
const WAL_TRUNCATE_BYTES: u64 = 32 * 4096;

impl Registry {
    /// Ends the session of a process that is about to exit: a registry that
    /// was only read is not closed (no free of SQLite's caches and schema,
    /// no unmapping: the exit does all of it at once, and releases the
    /// locks, as when a reader is killed); one that wrote is dropped as
    /// usual, so its WAL is checkpointed when long.
    pub fn finish_before_exit(self) {
        if self.wrote {
            drop(self);
        } else {
            std::mem::forget(self);
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if !self.wrote {
            return;
        }
        let mut wal = self.real.clone().into_os_string();
        wal.push("-wal");
        if fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_TRUNCATE_BYTES) {
            // Never wait here: when another process reads or writes, the
            // checkpoint is skipped and the next writer to close tries again.
            // A kill during it is safe (SQLite's checkpoint is crash-safe).
            let _ = self.conn.busy_timeout(Duration::ZERO);
            let _ = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
}

/// `reserve` refreshes a key's last-used time only when it is older than
/// this, so that asking again for a port already held writes nothing.
/// `expire` and `autoclean` count in days (30 by default): an hour of
/// imprecision cannot change what they remove in practice.
pub const LAST_USED_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// How often a write runs the full `PRAGMA integrity_check` first (recorded
/// in `meta.integrity_checked_at`). It reads the whole file (about 1 ms for
/// 2,000 rows), so once a day keeps `reserve` fast on average.
pub const INTEGRITY_CHECK_INTERVAL: Duration = Duration::from_secs(24 * 3600);

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `request` would leave `existing` exactly as it is.
fn answers_without_write(existing: &Reservation, request: &ReserveRequest, now_ms: i64) -> bool {
    let unchanged = |current: &Option<String>, requested: &Option<String>| {
        requested.is_none() || requested == current
    };
    let age = now_ms.saturating_sub(existing.last_used_at_ms);
    !request.reassign
        && request.port.is_none_or(|p| p == existing.port)
        && unchanged(&existing.project, &request.project)
        && unchanged(&existing.task, &request.task)
        && (0..millis(LAST_USED_REFRESH_INTERVAL)).contains(&age)
}

/// Runs `PRAGMA integrity_check` when the last one is older than
/// [`INTEGRITY_CHECK_INTERVAL`] (or in the future: a clock set back), inside
/// the caller's write transaction, and records when it passed.
fn scheduled_integrity_check(conn: &Connection, path: &Path) -> Result<()> {
    let now = crate::time::now_ms();
    let last: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'integrity_checked_at'",
            [],
            |row| row.get::<_, String>(0),
        )
        .optional()
        .map_err(|e| db_error(path, e))?
        .and_then(|v| v.parse().ok());
    if last.is_some_and(|t| (0..millis(INTEGRITY_CHECK_INTERVAL)).contains(&(now - t))) {
        return Ok(());
    }
    let problems = integrity_problems(conn).map_err(|e| db_error(path, e))?;
    if !problems.is_empty() {
        return Err(corrupt(
            path,
            format!("integrity check failed: {}", problems.join("; ")),
        ));
    }
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('integrity_checked_at', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [now.to_string()],
    )
    .map_err(|e| db_error(path, e))?;
    Ok(())
}

/// `PRAGMA integrity_check` (not `quick_check`, which does not compare
/// indexes with their tables and says `ok` on a damaged port index): an
/// empty list when the file is sound, else SQLite's findings (at most 20).
pub(crate) fn integrity_problems(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA integrity_check(20)")?;
    let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
    let lines = rows.collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(lines.into_iter().filter(|l| l != "ok").collect())
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

/// `SQLITE_CANTOPEN_SYMLINK`: `SQLITE_OPEN_NOFOLLOW` met a symlink.
const SQLITE_CANTOPEN_SYMLINK: std::ffi::c_int = 14 | (6 << 8);

/// Maps a SQLite failure to the error a user can act on. Only what says the
/// file is not a sound registry is `Corrupt`; a file system that refuses
/// (read-only, full, not ours) is `RegistryUnavailable` naming the cause, and
/// a uniqueness rule that caught a write is `ConstraintViolated`.
fn db_error(path: &Path, e: rusqlite::Error) -> Error {
    let detail = e.to_string();
    let unavailable = |problem| Error::RegistryUnavailable {
        path: path.to_path_buf(),
        problem,
        detail: detail.clone(),
    };
    if let rusqlite::Error::SqliteFailure(failure, _) = &e
        && failure.extended_code == SQLITE_CANTOPEN_SYMLINK
    {
        return corrupt(
            path,
            "a symlink (porthold never follows one in place of the registry)".into(),
        );
    }
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy {
            what: format!("registry `{}`", path.display()),
            detail: "another porthold held the write lock for longer than the busy timeout".into(),
        },
        Some(ErrorCode::NotADatabase) => corrupt(path, "not a SQLite database".into()),
        Some(ErrorCode::DatabaseCorrupt) => corrupt(path, format!("database corrupt: {e}")),
        Some(ErrorCode::ConstraintViolation) => Error::ConstraintViolated {
            path: path.to_path_buf(),
            detail,
        },
        Some(ErrorCode::DiskFull) => unavailable(StorageProblem::DiskFull),
        Some(ErrorCode::ReadOnly) => {
            unavailable(diagnose_storage(path).unwrap_or(StorageProblem::ReadOnly))
        }
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed,
        ) => unavailable(diagnose_storage(path).unwrap_or(StorageProblem::Io)),
        _ => corrupt(path, detail),
    }
}

/// An I/O failure of porthold's own file operations on the registry.
fn storage_error(path: &Path, doing: &str, e: &std::io::Error) -> Error {
    let problem = match e.raw_os_error() {
        Some(libc::EROFS | libc::EPERM) => StorageProblem::ReadOnly,
        Some(libc::EACCES) => StorageProblem::PermissionDenied,
        Some(libc::ENOSPC | libc::EDQUOT) => StorageProblem::DiskFull,
        _ => diagnose_storage(path).unwrap_or(StorageProblem::Io),
    };
    // The io::Error's own text would repeat the problem ("permission denied
    // (Permission denied (os error 13))"): name the step and the errno only.
    let detail = match e.raw_os_error() {
        Some(code) => format!("{doing}: os error {code}"),
        None => format!("{doing}: {e}"),
    };
    Error::RegistryUnavailable {
        path: path.to_path_buf(),
        problem,
        detail,
    }
}

/// Opening the registry file failed.
fn open_error(path: &Path, e: &std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => corrupt(
            path,
            "a symlink (porthold never follows one in place of the registry)".into(),
        ),
        _ => storage_error(path, "opening the registry", e),
    }
}

/// After SQLite reported an I/O-ish failure without saying why, asks the
/// file system: a read-only mount, an immutable file or directory, a
/// permission this user lacks, or no space left. `None` when nothing is
/// visibly wrong.
fn diagnose_storage(path: &Path) -> Option<StorageProblem> {
    use rustix::fs::{Access, AtFlags, CWD, IFlags, StatVfsMountFlags};
    let dir = path.parent()?;
    let vfs = rustix::fs::statvfs(dir).ok();
    if vfs
        .as_ref()
        .is_some_and(|v| v.f_flag.contains(StatVfsMountFlags::RDONLY))
    {
        return Some(StorageProblem::ReadOnly);
    }
    let side = |suffix: &str| {
        let mut p = path.as_os_str().to_os_string();
        p.push(suffix);
        PathBuf::from(p)
    };
    let files = [path.to_path_buf(), side("-wal"), side("-shm")];
    let existing: Vec<&PathBuf> = files.iter().filter(|p| p.exists()).collect();
    let mut immutable = false;
    for p in std::iter::once(&dir.to_path_buf()).chain(existing.iter().copied()) {
        if let Ok(file) = fs::File::open(p)
            && rustix::fs::ioctl_getflags(&file)
                .is_ok_and(|f| f.intersects(IFlags::IMMUTABLE | IFlags::APPEND))
        {
            immutable = true;
        }
    }
    if immutable {
        return Some(StorageProblem::ReadOnly);
    }
    let checks = std::iter::once((dir, Access::WRITE_OK | Access::EXEC_OK)).chain(
        existing
            .iter()
            .map(|p| (p.as_path(), Access::READ_OK | Access::WRITE_OK)),
    );
    for (p, mode) in checks {
        match rustix::fs::accessat(CWD, p, mode, AtFlags::EACCESS) {
            Err(rustix::io::Errno::ROFS | rustix::io::Errno::PERM) => {
                return Some(StorageProblem::ReadOnly);
            }
            Err(rustix::io::Errno::ACCESS) => return Some(StorageProblem::PermissionDenied),
            _ => {}
        }
    }
    if let Some(v) = vfs {
        // Root may use the blocks reserved for it; others only f_bavail.
        let blocks = if rustix::process::geteuid().is_root() {
            v.f_bfree
        } else {
            v.f_bavail
        };
        if blocks.saturating_mul(v.f_frsize) < 64 * 1024 || v.f_favail == 0 {
            return Some(StorageProblem::DiskFull);
        }
    }
    None
}

/// Refuses to touch a file that is neither empty nor a SQLite database, so
/// that nothing (not even SQLite's recovery) writes to it.
fn check_header(path: &Path, real: &Path) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(real)
        .map_err(|e| open_error(path, &e))?;
    let meta = file
        .metadata()
        .map_err(|e| storage_error(path, "reading the registry's metadata", &e))?;
    if !meta.is_file() {
        return Err(corrupt(path, "not a regular file".into()));
    }
    if meta.size() == 0 {
        return Ok(());
    }
    let mut header = [0u8; 16];
    match file.read_exact(&mut header) {
        Ok(()) if &header == SQLITE_HEADER => Ok(()),
        Ok(()) => Err(corrupt(path, "not a SQLite database (bad header)".into())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(corrupt(path, "not a SQLite database (bad header)".into()))
        }
        Err(e) => Err(storage_error(path, "reading the registry", &e)),
    }
}

/// The registry's path with every symlinked directory above it resolved
/// (the file itself is not resolved: a symlink there is refused).
fn real_path(data_dir: &Path, path: &Path) -> Result<PathBuf> {
    let dir = fs::canonicalize(data_dir)
        .map_err(|e| storage_error(path, "resolving the data dir", &e))?;
    Ok(dir.join(FILE_NAME))
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
            Some("SQLite locks and WAL are unreliable there; point the data dir (PORTHOLD_DATA_DIR) at a local disk".into()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uniqueness_violation_is_a_conflict_never_corruption() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (port INTEGER UNIQUE); INSERT INTO t VALUES (1);")
            .unwrap();
        let e = conn.execute("INSERT INTO t VALUES (1)", []).unwrap_err();
        let mapped = db_error(Path::new("/x/registry.sqlite3"), e);
        assert!(
            matches!(mapped, Error::ConstraintViolated { .. }),
            "{mapped:?}"
        );
        assert_eq!(mapped.kind(), crate::ErrorKind::Conflict);
        assert!(!mapped.to_string().contains("corrupt"), "{mapped}");
    }

    /// `synchronous = NORMAL` (1) is set before a connection's first write,
    /// on the creating open and on a later open alike; a connection that only
    /// answered an idempotent reserve never ran the pragma (SQLite's default
    /// for it is FULL, 2).
    #[test]
    fn writes_run_with_synchronous_normal_and_reads_skip_the_pragma() {
        use crate::key::Key;
        use crate::net::{KernelPorts, PortRange};
        let synchronous = |registry: &Registry| -> i64 {
            registry
                .connection()
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let request = ReserveRequest::new(
            Key {
                path: "/p".into(),
                tag: String::new(),
            },
            crate::pool::Pool::new(vec![PortRange::new(24000, 24099).unwrap()]).unwrap(),
            KernelPorts {
                ephemeral: PortRange::new(32768, 60999).unwrap(),
                reserved: vec![],
            },
        );
        let timeout = Duration::from_secs(5);
        let mut created = Registry::open(dir.path(), timeout).unwrap();
        assert_eq!(synchronous(&created), 1, "the migration wrote");
        let port = created.reserve(&request, None).unwrap().reservation.port;
        drop(created);
        let mut reader = Registry::open(dir.path(), timeout).unwrap();
        let again = reader.reserve(&request, None).unwrap();
        assert_eq!((again.reservation.port, again.created), (port, false));
        assert_eq!(synchronous(&reader), 2, "an idempotent reserve only read");
        drop(reader);
        let mut writer = Registry::open(dir.path(), timeout).unwrap();
        writer
            .release(&ReleaseTarget::Key(request.key.clone()))
            .unwrap();
        assert_eq!(synchronous(&writer), 1, "the release wrote");
    }

    /// A reader that ends with `finish_before_exit` leaves the registry to
    /// the next connections as a closed one would: they read, write and
    /// release (here in the same process, where the leaked connection still
    /// exists); a writer that ends so is dropped, its WAL checkpointed.
    #[test]
    fn a_registry_finished_before_exit_is_left_usable() {
        use crate::key::Key;
        use crate::net::{KernelPorts, PortRange};
        let dir = tempfile::tempdir().unwrap();
        let request = |path: &str| {
            ReserveRequest::new(
                Key {
                    path: path.into(),
                    tag: String::new(),
                },
                crate::pool::Pool::new(vec![PortRange::new(24000, 24099).unwrap()]).unwrap(),
                KernelPorts {
                    ephemeral: PortRange::new(32768, 60999).unwrap(),
                    reserved: vec![],
                },
            )
        };
        let timeout = Duration::from_secs(5);
        let mut writer = Registry::open(dir.path(), timeout).unwrap();
        let port = writer
            .reserve(&request("/a"), None)
            .unwrap()
            .reservation
            .port;
        writer.finish_before_exit();
        for _ in 0..3 {
            let mut reader = Registry::open(dir.path(), timeout).unwrap();
            let again = reader.reserve(&request("/a"), None).unwrap();
            assert_eq!((again.reservation.port, again.created), (port, false));
            reader.finish_before_exit();
        }
        let mut next = Registry::open(dir.path(), Duration::from_millis(200)).unwrap();
        let other = next.reserve(&request("/b"), None).unwrap();
        assert!(other.created);
        assert_ne!(other.reservation.port, port);
        let removed = next
            .release(&ReleaseTarget::Key(request("/a").key.clone()))
            .unwrap();
        assert_eq!(removed.len(), 1);
    }

    #[test]
    fn storage_errors_name_the_errno_once() {
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        let mapped = storage_error(Path::new("/x/registry.sqlite3"), "opening the registry", &e);
        let text = mapped.to_string();
        assert_eq!(
            text.to_lowercase().matches("permission denied").count(),
            1,
            "{text}"
        );
        assert!(matches!(
            mapped,
            Error::RegistryUnavailable {
                problem: StorageProblem::PermissionDenied,
                ..
            }
        ));
    }
}
