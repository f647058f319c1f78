//! Discovery records: how programs find a running instance, race-free.
//!
//! Each instance owns a name in a runtime directory (0700, ours alone) through
//! two files:
//! - `<name>.lock`: created once and never unlinked; the owner holds
//!   `flock(LOCK_EX)` on it for its whole lifetime and writes its pid, start
//!   time, boot id and instance id into it (so a loser can name the winner
//!   before any record exists).
//! - `<name>.json`: the [`Record`], replaced atomically (temp file, then
//!   rename) so a reader never sees half a file. Nothing is fsynced: the
//!   runtime directory does not outlive the boot, so a record need not survive
//!   a power loss.
//!
//! Liveness is decided by the lock first and the recorded process identity
//! second (see [`probe`]); `kill(pid, 0)` is never used, so a recycled pid
//! never makes a dead owner look alive and a stopped (SIGSTOP) owner is still
//! alive. Readers never delete anything: a stale record is removed only by the
//! next [`Publisher`], under the lock. Records carry an instance id, so a
//! launcher can [`wait`] for *its* server and never for a leftover.
//!
//! The on-disk format and protocol, for readers in other languages, is in
//! `docs/discovery.md`.
//!
//! ```no_run
//! use porthold::discovery::{self, Key, Listener, Proto, Publisher, Record, State};
//! use std::path::Path;
//! use std::time::Duration;
//!
//! # fn main() -> porthold::Result<()> {
//! let dir = Path::new("/run/user/1000/porthold");
//! let name = discovery::default_name(Path::new("/home/ann/shop"), "web");
//! let id = discovery::new_instance_id()?;
//! let mut publisher = Publisher::acquire(dir, &name, &id)?;
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
//! let addr = listener.local_addr().expect("local address");
//! let key = Key { path: "/home/ann/shop".into(), tag: "web".into() };
//! let mut record = Record::new(&name, &id, key, vec![Listener::inet("web", Proto::Tcp, addr)])?;
//! record.state = State::Ready;
//! publisher.publish(&record)?;
//!
//! // Elsewhere: find it.
//! let live = discovery::wait(dir, &name, Some(&id), true, Duration::from_secs(5))?;
//! println!("{}", live.record.url("http").unwrap_or_default());
//! publisher.finish()?; // deletes the record, then releases the lock
//! # Ok(())
//! # }
//! ```

mod names;
mod publisher;
mod reader;
mod record;
mod sha256;
mod stop;

pub(crate) use names::random_bytes;
pub use names::{
    MAX_INSTANCE_ID_LEN, MAX_NAME_LEN, NAME_HASH_HEX_DIGITS, default_name, ensure_runtime_dir,
    key_hash, new_instance_id, validate_instance_id, validate_name,
};
pub use publisher::{DEFAULT_LOCK_RETRY, LockOwner, Publisher};
pub use reader::{
    Listing, LiveRecord, Liveness, Probe, list, list_with_rejections, lookup, probe, wait,
    wait_for_key,
};
pub use record::{
    EventOutcome, Family, GenerationCause, GenerationEntry, GenerationEvent, GenerationState, Key,
    Listener, MAX_EVENTS, Proto, Record, SCHEMA, SCHEMA_MAJOR, State,
};
pub use stop::{
    ASSUMED_DRAIN_TIMEOUT, STOP_TIMEOUT_MARGIN, StopOutcome, default_stop_timeout, kill_instance,
    stop,
};
